//! ocidd as the initramfs's `/init`: mount the kernel's file systems, read the parameters from
//! /proc/cmdline, load the hardware's modules, bring the network up, install, then reboot (or
//! power off, or give a shell). On failure: say why, and start an emergency shell.
//!
//! As PID 1 it must never exit or panic: panics are caught, children are reaped, and every
//! path ends in a reboot, a power-off or a shell.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::mount::{MountFlags, mount};
use rustix::system::RebootCommand;

use crate::boot::console::{Mirror, active_consoles};
use crate::boot::kexec;
use crate::boot::modules::{ModuleIndex, load_for_hardware};
use crate::boot::network::{configure, handoff};
use crate::cmdline::{
    After, BootOrder, DEFAULTS_FILE, Params, Words, parse_words, read_defaults, shown_name,
    split_kernel_cmdline, text_words, with_defaults,
};
use crate::disks::{self, hints::Selection};
use crate::progress::Display;
use crate::{say, say_inline};

const PATH: &str = "/bin:/sbin:/usr/bin:/usr/sbin";
const SHELL: &str = "/bin/sh";

/// The copying of our output to every console, when the kernel has several.
static MIRROR: OnceLock<Mirror> = OnceLock::new();

/// Whether this process is the init of an initramfs.
pub fn is_init() -> bool {
    rustix::process::getpid().is_init()
        || std::env::args_os()
            .next()
            .is_some_and(|arg0| Path::new(&arg0).file_name() == Some("init".as_ref()))
}

/// Runs the install as init. Never returns.
pub fn run() -> ! {
    std::panic::set_hook(Box::new(|info| {
        say!("ocidd: internal error: {info}");
    }));
    mount_kernel_filesystems();
    // Only as the real PID 1: a test that runs us as `init` must not write to the host's
    // consoles.
    if rustix::process::getpid().is_init() {
        match Mirror::start() {
            Ok(Some(mirror)) => {
                let _ = MIRROR.set(mirror);
            }
            Ok(None) => {}
            Err(e) => say!("ocidd: writing to /dev/console only: {e:#}"),
        }
    }
    match std::panic::catch_unwind(boot) {
        Ok(Ok(done)) => finish(done),
        Ok(Err(e)) => {
            say!("ocidd: error: {e:#}");
            emergency_shell()
        }
        Err(_) => emergency_shell(),
    }
}

/// What /init does once the install succeeded: `after`, in `delay`, onto `target`.
struct Done {
    after: After,
    delay: Duration,
    target: String,
    modules: Option<ModuleIndex>,
}

fn boot() -> Result<Done> {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    say!(
        "ocidd {} (init, kernel {release})",
        env!("CARGO_PKG_VERSION")
    );
    let cmdline = fs::read("/proc/cmdline").context("reading /proc/cmdline")?;
    let words = with_site_defaults(split_kernel_cmdline(&cmdline))?;
    let Words {
        install: mut params,
        boot,
    } = parse_words(&text_words(&words)?)?;
    fs::create_dir_all(BOOT_STATE).ok();
    apply_boot_defaults(&mut params);
    let after = boot.after.unwrap_or(After::Reboot);
    let delay = boot.reboot_delay();

    let modules = Path::new("/lib/modules").join(&release);
    let index = ModuleIndex::read(&modules);
    match &index {
        Ok(index) => {
            let mut loaded = load_for_hardware(index);
            let network = &boot.network;
            for (needed, module) in [
                (!network.bonds.is_empty(), "bonding"),
                (!network.vlans.is_empty(), "8021q"),
                (needs_efivarfs_module(), "efivarfs"),
            ] {
                if needed {
                    loaded.extend(crate::boot::modules::load(index, module)?);
                }
            }
            say!(
                "ocidd: loaded {} modules: {}",
                loaded.len(),
                loaded.join(" ")
            );
        }
        Err(e) => say!("ocidd: not loading modules: {e:#}"),
    }

    mount_efivarfs();

    let network = configure(&boot.network)?;
    if let Some(network) = &network {
        crate::report::event::note_addresses(network.addresses());
    }
    if params.seed.copy_network {
        let Some(network) = &network else {
            anyhow::bail!("ocidd.copy_network: ip=off configured no network to copy");
        };
        let config = handoff::for_network(network, &boot.network)?;
        // Kept for a retry from the emergency shell, which has no network of its own to copy.
        if let Err(e) = fs::write(Path::new(BOOT_STATE).join(NETWORK_CONFIG), &config) {
            say!("ocidd: note: keeping the network-config for a retry: {e}");
        }
        params.seed.network_config = Some(config);
        let names: Vec<&str> = network
            .interfaces
            .iter()
            .map(|i| i.interface.as_str())
            .collect();
        say!(
            "ocidd: the seed's network-config (version 2) is the network of {} (ocidd.copy_network)",
            names.join(", ")
        );
    }

    wait_for_disks(params.target.as_deref(), &params.selection);
    // Plain lines: a serial console is a terminal, but often one that is logged (BMC, SOL).
    let display = Display::Lines(crate::install::PROGRESS_INTERVAL);
    let summary = crate::install::run_with(params, display)?;
    crate::install::print_summary(&summary);
    Ok(Done {
        after,
        delay,
        target: summary.target,
        modules: index.ok(),
    })
}

/// What /init leaves for a retry of its words from the emergency shell (`ocidd $(cat
/// /proc/cmdline)`), so that the retry installs as /init would have.
const BOOT_STATE: &str = "/run/ocidd";
/// The network-config `ocidd.copy_network` made, under [`BOOT_STATE`].
const NETWORK_CONFIG: &str = "network-config";

/// How an install from the boot's words differs from `ocidd install`'s: a machine that
/// boots us boots its disk next, once (the boot entry), and `ocidd.copy_network` hands on
/// the network /init configured.
fn apply_boot_defaults(params: &mut Params) {
    params.boot_order.get_or_insert(BootOrder::Next);
    if params.seed.copy_network && params.seed.network_config.is_none() {
        params.seed.network_config =
            fs::read_to_string(Path::new(BOOT_STATE).join(NETWORK_CONFIG)).ok();
    }
}

/// For the words form run from /init's emergency shell: the boot's defaults, as
/// [`apply_boot_defaults`] gives them. Elsewhere (a workstation), nothing changes.
pub fn as_booted(params: &mut Params) {
    if is_init_environment() {
        apply_boot_defaults(params);
    }
}

/// Whether /init of this initramfs ran on this machine (it made [`BOOT_STATE`]).
fn is_init_environment() -> bool {
    Path::new(BOOT_STATE).is_dir() && Path::new("/init").exists()
}

/// The site's default words (from an overlay's [`DEFAULTS_FILE`]) that the kernel's do not
/// override, then the kernel's. Says which names came from the site, not their values: a
/// proxy URL may hold a password.
pub fn with_site_defaults(words: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
    let defaults = read_defaults(Path::new(DEFAULTS_FILE))?;
    let words = with_defaults(defaults.clone(), words);
    // Only ocidd's own names, each once: the file may hold anything, of any length.
    let mut used: Vec<String> = Vec::new();
    for name in defaults
        .iter()
        .filter(|d| words.contains(d))
        .filter_map(|d| shown_name(d))
    {
        if !used.contains(&name) {
            used.push(name);
        }
    }
    if !used.is_empty() {
        say!(
            "ocidd: site defaults from {DEFAULTS_FILE}: {}",
            used.join(" ")
        );
    }
    Ok(words)
}

/// Mounts proc, sys, dev, run and tmp; what is already mounted stays.
fn mount_kernel_filesystems() {
    let mounts: [(&str, &str, &str, MountFlags); 6] = [
        (
            "proc",
            "/proc",
            "proc",
            MountFlags::NOSUID | MountFlags::NOEXEC | MountFlags::NODEV,
        ),
        (
            "sysfs",
            "/sys",
            "sysfs",
            MountFlags::NOSUID | MountFlags::NOEXEC | MountFlags::NODEV,
        ),
        ("devtmpfs", "/dev", "devtmpfs", MountFlags::NOSUID),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MountFlags::NOSUID | MountFlags::NOEXEC,
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
        ),
    ];
    for (source, target, kind, flags) in mounts {
        let _ = fs::create_dir_all(target);
        match mount(source, target, kind, flags, None) {
            Ok(()) | Err(rustix::io::Errno::BUSY) => {}
            Err(e) => say!("ocidd: mounting {target}: {e}"),
        }
    }
}

/// Whether the machine booted by UEFI and the kernel cannot mount efivarfs yet (Debian builds
/// it as a module).
fn needs_efivarfs_module() -> bool {
    Path::new("/sys/firmware/efi").exists()
        && !fs::read_to_string("/proc/filesystems").is_ok_and(|list| list.contains("efivarfs"))
}

/// UEFI's variables, for the boot entry the install writes ([`crate::efi`]).
fn mount_efivarfs() {
    if !Path::new("/sys/firmware/efi").exists() {
        return;
    }
    let target = crate::efi::variables::EFIVARFS;
    match mount(
        "efivarfs",
        target,
        "efivarfs",
        MountFlags::NOSUID | MountFlags::NOEXEC | MountFlags::NODEV,
        None,
    ) {
        Ok(()) | Err(rustix::io::Errno::BUSY) => {}
        Err(e) => {
            say!("ocidd: mounting {target}: {e}; no boot entry can be written");
            return;
        }
    }
    if crate::efi::variables::Variables::at(Path::new(target)).secure_boot() {
        say!(
            "ocidd: Secure Boot is on; kernel lockdown: {} (only signed modules and kernels load)",
            lockdown()
        );
    }
}

/// The kernel's lockdown mode, the bracketed word of `/sys/kernel/security/lockdown`.
fn lockdown() -> String {
    let _ = mount(
        "securityfs",
        "/sys/kernel/security",
        "securityfs",
        MountFlags::NOSUID | MountFlags::NOEXEC | MountFlags::NODEV,
        None,
    );
    fs::read_to_string("/sys/kernel/security/lockdown")
        .ok()
        .and_then(|text| {
            let (_, rest) = text.split_once('[')?;
            Some(rest.split_once(']')?.0.to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Disks appear a moment after their driver loaded, and SATA and SCSI disks one by one:
/// waits (up to 30 s) until the target is there, or one disk matches the hints, and, when hints choose it, until no disk
/// has appeared for 2 s (a second match may be on its way). The install then says what is
/// wrong, if anything still is.
fn wait_for_disks(target: Option<&Path>, selection: &Selection) {
    let hinted = !selection.hints.is_empty();
    if target.is_none_or(|t| !t.starts_with("/dev")) && !hinted {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut said = false;
    let mut seen: Vec<String> = Vec::new();
    let mut settled_since = Instant::now();
    loop {
        let disks = disks::list();
        let names: Vec<String> = disks.iter().map(|d| d.name.clone()).collect();
        if names != seen {
            seen = names;
            settled_since = Instant::now();
        }
        // A named target only has to be there: whether it matches is the install's to say.
        let chosen = match target {
            Some(target) => {
                disks.iter().any(|d| d.is_named(target))
                    || (target.exists() && !target.starts_with("/dev/disk"))
            }
            None => selection.choose(&disks, None).is_ok(),
        };
        let settled = !hinted || settled_since.elapsed() >= Duration::from_secs(2);
        if (chosen && settled) || Instant::now() >= deadline {
            return;
        }
        if !said {
            match target {
                Some(target) => say!("ocidd: waiting for {}", target.display()),
                None => say!("ocidd: waiting for the disks to settle"),
            }
            said = true;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn finish(done: Done) -> ! {
    let Done {
        after,
        delay,
        target,
        modules,
    } = done;
    match after {
        After::Kexec => {
            if let Err(e) = kexec_into(&target, modules.as_ref()) {
                say!("ocidd: no kexec: {e:#}; rebooting through the firmware");
            }
            restart(RebootCommand::Restart)
        }
        After::Reboot | After::Poweroff => {
            let (what, command) = match after {
                After::Poweroff => ("powering off", RebootCommand::PowerOff),
                _ => ("rebooting", RebootCommand::Restart),
            };
            if delay.is_zero() {
                say!("ocidd: {what}");
            } else {
                say_inline!("ocidd: {what} in");
                for left in (1..=delay.as_secs()).rev() {
                    say_inline!(" {left}");
                    let _ = std::io::stderr().flush();
                    thread::sleep(Duration::from_secs(1));
                }
                say!();
            }
            restart(command)
        }
        After::Shell => {
            say!("ocidd: install done; starting a shell (ocidd.after=shell); exit reboots");
            shell();
            restart(RebootCommand::Restart)
        }
    }
}

/// Starts the kernel installed on `target` (ocidd.after=kexec); returns only on failure.
fn kexec_into(target: &str, modules: Option<&ModuleIndex>) -> Result<()> {
    if let Some(index) = modules {
        for module in ["vfat", "nls_cp437", "nls_ascii", "nls_utf8", "ext4", "xfs"] {
            let _ = crate::boot::modules::load(index, module);
        }
    }
    let found = kexec::find(Path::new(target))?;
    say!(
        "ocidd: starting {} with kexec (ocidd.after=kexec)",
        found.description
    );
    if let Some(mirror) = MIRROR.get() {
        mirror.drain();
    }
    kexec::load_and_start(&found)
}

fn emergency_shell() -> ! {
    say!(
        "ocidd: starting an emergency shell; `ocidd $(cat /proc/cmdline)` retries the install, `exit` reboots"
    );
    shell();
    restart(RebootCommand::Restart)
}

/// Runs a shell on the console and waits for it, reaping every other child on the way.
fn shell() {
    let mut command = Command::new(SHELL);
    // The shell talks to the terminal, not to the copier; what we said comes out first.
    if let Some(mirror) = MIRROR.get() {
        mirror.drain();
        if let (Ok(out), Ok(err)) = (mirror.console().try_clone(), mirror.console().try_clone()) {
            command.stdout(Stdio::from(out)).stderr(Stdio::from(err));
        }
    }
    // With the console's terminal as its controlling terminal, in a session of its own (as
    // busybox's cttyhack does), Ctrl-C reaches what the shell runs: a hung retry can be
    // stopped. /dev/console itself cannot be a controlling terminal.
    if let Some(terminal) = console_terminal()
        && let (Ok(input), Ok(output), Ok(errors)) = (
            terminal.try_clone(),
            terminal.try_clone(),
            terminal.try_clone(),
        )
    {
        command
            .stdin(Stdio::from(input))
            .stdout(Stdio::from(output))
            .stderr(Stdio::from(errors));
        // SAFETY: the closure runs in the child between fork and exec, where only
        // async-signal-safe calls are allowed: setsid and ioctl are plain system calls, and
        // nothing here allocates or takes a lock.
        unsafe {
            command.pre_exec(|| {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
                Ok(())
            });
        }
    }
    let child = command
        .env("PATH", PATH)
        .env("HOME", "/")
        .env("PS1", "(ocidd) # ")
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(e) => {
            say!("ocidd: cannot start {SHELL}: {e}");
            return;
        }
    };
    let shell_pid = child.id();
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((pid, _))) if pid.as_raw_nonzero().get() as u32 == shell_pid => return,
            Ok(_) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
    }
}

/// The terminal device behind /dev/console: the last console the kernel lists (`ttyS0`;
/// `tty0` stands for the virtual terminal in front), opened without becoming ours.
fn console_terminal() -> Option<File> {
    let listed = fs::read_to_string("/sys/class/tty/console/active").ok()?;
    let mut name = active_consoles(&listed).pop()?;
    if name == "tty0" {
        name = fs::read_to_string("/sys/class/tty/tty0/active")
            .ok()?
            .trim()
            .to_string();
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(Path::new("/dev").join(name))
        .ok()
}

/// Syncs and reboots or powers off. When not PID 1 (a test run as `init`), exits instead.
fn restart(command: RebootCommand) -> ! {
    if let Some(mirror) = MIRROR.get() {
        mirror.drain();
    }
    rustix::fs::sync();
    if !rustix::process::getpid().is_init() {
        std::process::exit(0);
    }
    if let Err(e) = rustix::system::reboot(command) {
        say!("ocidd: reboot failed: {e}");
    }
    // PID 1 must not exit: the kernel would panic.
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
