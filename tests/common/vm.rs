//! Booting the built kernel + initramfs in QEMU (TCG: KVM does not work on these machines),
//! with a virtio disk and NIC, the console on a pipe.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The boot files `cargo xtask pxe --arch ARCH` writes.
pub fn boot_files(arch: &str) -> (PathBuf, PathBuf) {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("out");
    let kernel = out.join(format!("vmlinuz-{arch}"));
    let initramfs = out.join(format!("initramfs-{arch}.img"));
    assert!(
        kernel.exists() && initramfs.exists(),
        "no boot files in {}: run `cargo xtask pxe --arch {arch}` (cargo xtask test does)",
        out.display()
    );
    (kernel, initramfs)
}

/// The hybrid ISO `cargo xtask iso` writes.
pub fn boot_iso() -> PathBuf {
    let iso = Path::new(env!("CARGO_MANIFEST_DIR")).join("out/ocidd-amd64.iso");
    assert!(
        iso.exists(),
        "no {}: run `cargo xtask iso` (cargo xtask test does)",
        iso.display()
    );
    iso
}

/// Copies the Secure Boot loaders `cargo xtask pxe --arch ARCH` writes beside the boot files
/// (Debian's signed shim, and the signed network GRUB it loads) into a TFTP root.
pub fn copy_signed_loaders(arch: &str, root: &Path) {
    let (kernel, _) = boot_files(arch);
    let out = kernel.parent().unwrap();
    let efi = if arch == "arm64" { "aa64" } else { "x64" };
    for name in [format!("shim{efi}.efi"), format!("grub{efi}.efi")] {
        std::fs::copy(out.join(&name), root.join(&name))
            .unwrap_or_else(|e| panic!("{name} (cargo xtask pxe --arch {arch} makes it): {e}"));
    }
}

/// OVMF's variable store as Debian ships it: no boot entries yet.
pub const FRESH_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The same with Secure Boot on and Microsoft's keys enrolled.
pub const SECURE_BOOT_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// The UEFI firmware for `arch` (OVMF, or AAVMF on arm64), its Secure Boot build with
/// Microsoft's keys when `secure`: the code and the variable store a fresh machine starts with.
fn uefi_files(arch: &str, secure: bool) -> (&'static str, &'static str) {
    match (arch, secure) {
        ("amd64", false) => ("/usr/share/OVMF/OVMF_CODE_4M.fd", FRESH_VARS),
        ("amd64", true) => ("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", SECURE_BOOT_VARS),
        // AAVMF has one build: its Secure Boot is on when the keys are enrolled.
        ("arm64", false) => (
            "/usr/share/AAVMF/AAVMF_CODE.fd",
            "/usr/share/AAVMF/AAVMF_VARS.fd",
        ),
        ("arm64", true) => (
            "/usr/share/AAVMF/AAVMF_CODE.ms.fd",
            "/usr/share/AAVMF/AAVMF_VARS.ms.fd",
        ),
        (other, _) => panic!("no UEFI firmware for {other}"),
    }
}

/// Adds UEFI firmware for `arch` to `command` (its Secure Boot build when `secure`, with SMM
/// so that its variables are protected), with `options`' kept variable store or a fresh copy;
/// the directory that holds the copy.
fn uefi(command: &mut Command, arch: &str, secure: bool, options: &Options) -> tempfile::TempDir {
    if secure && arch == "amd64" {
        command
            .args(["-machine", "smm=on"])
            .args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
    }
    let (code, fresh_vars) = uefi_files(arch, secure);
    let dir = tempfile::tempdir().unwrap();
    let vars = match &options.vars {
        Some(kept) => kept.clone(),
        None => {
            let fresh = dir.path().join("VARS.fd");
            std::fs::copy(fresh_vars, &fresh).expect(
                "UEFI firmware (apt-get install ovmf qemu-efi-aarch64; cargo xtask test does)",
            );
            fresh
        }
    };
    command
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={code}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()));
    dir
}

/// One VM at a time, in every test file: two TCG guests on 2 cores have starved one until
/// its kernel stalled. Test files run one after another; the tests in one file take turns here.
static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

pub struct Vm {
    /// Held while the VM runs (dropped after it is killed).
    _turn: std::sync::MutexGuard<'static, ()>,
    child: Child,
    stdin: Option<ChildStdin>,
    console: Arc<Mutex<String>>,
    started: Instant,
    /// UEFI's writable variable store, kept while the VM runs.
    _scratch: Option<tempfile::TempDir>,
    /// QEMU's monitor socket, when [`Options::monitor`] asked for one.
    monitor: Option<PathBuf>,
}

/// What a VM has besides its disks.
#[derive(Default)]
pub struct Options {
    /// The NICs, as QEMU netdevs (`dgram,…` from a [`super::lab::Switch`]), each with its
    /// MAC; none: one NIC on QEMU's user network.
    pub nics: Vec<(String, String)>,
    /// No NIC at all (`-nic none`), as a machine with no network.
    pub no_nic: bool,
    /// More QEMU arguments (`-rtc base=2005-01-01`).
    pub extra: Vec<String>,
    /// A monitor socket, for [`Vm::monitor`] (`set_link net1 off`).
    pub monitor: bool,
    /// The initramfs for [`Boot::Kernel`] instead of the built one (the built one with a
    /// site overlay after it).
    pub initrd: Option<PathBuf>,
    /// UEFI's variable store for [`Firmware::Uefi`], kept across boots (else a fresh copy).
    pub vars: Option<PathBuf>,
    /// The guest reboots in place (else a reboot ends QEMU): the firmware then boots what
    /// the variables say, as a real machine does.
    pub reboot: bool,
}

/// How the VM gets its kernel.
pub enum Boot<'a> {
    /// QEMU loads the boot files itself (`-kernel`, `-initrd`, `-append`).
    Kernel { append: &'a str },
    /// The firmware's network boot (QEMU's iPXE ROM): DHCP hands out `bootfile`, a URL or a
    /// file under `tftp`.
    Network {
        firmware: Firmware,
        bootfile: &'a str,
        tftp: Option<&'a Path>,
    },
    /// The firmware boots `iso` from removable media, as a BMC's virtual media attaches it
    /// or as a USB stick.
    Media {
        firmware: Firmware,
        iso: &'a Path,
        medium: Medium,
    },
}

/// What an ISO is attached as.
#[derive(Clone, Copy)]
pub enum Medium {
    /// A SATA CD-ROM drive, as virtual media shows.
    Cd,
    /// A USB stick on an xHCI controller.
    Usb,
}

#[derive(Clone, Copy)]
pub enum Firmware {
    /// SeaBIOS.
    Bios,
    /// OVMF (Debian's `ovmf`); on arm64 AAVMF (`qemu-efi-aarch64`) and its own PXE.
    Uefi,
    /// OVMF's or AAVMF's Secure Boot build with Microsoft's keys enrolled, as servers ship,
    /// and the firmware's own PXE: iPXE's ROM hands shim a wrong file size for what shim
    /// fetches next.
    SecureBoot,
    /// OVMF with its own network stack instead of QEMU's iPXE ROM: PXE over IPv4 and IPv6,
    /// then UEFI HTTP Boot, which DHCP answers with a URL when asked as an `HTTPClient`.
    HttpBoot,
}

/// What the disk is attached to, so that it shows as /dev/vda, /dev/sda or /dev/nvme0n1.
#[derive(Clone, Copy)]
pub enum Bus {
    Virtio,
    Sata,
    Nvme,
}

impl Vm {
    /// Boots `arch` ("amd64" or "arm64") with `disk` as its virtio disk and `append` as the
    /// kernel command line.
    pub fn boot(arch: &str, disk: &Path, append: &str) -> Vm {
        Vm::start(arch, disk, Bus::Virtio, Boot::Kernel { append })
    }

    /// Boots `arch` as `boot` says, with `disk` on `bus`.
    pub fn start(arch: &str, disk: &Path, bus: Bus, boot: Boot) -> Vm {
        let device = match bus {
            Bus::Virtio => "virtio-blk-pci",
            Bus::Sata => "ide-hd,bus=ide.0",
            Bus::Nvme => "nvme,serial=ocidd-test",
        };
        Vm::start_with_disks(arch, &[], &[(disk, device)], boot)
    }

    /// Boots `arch` as `boot` says, with `controllers` (QEMU devices such as
    /// `virtio-scsi-pci,id=scsi0`) and each disk file on its device (`nvme,serial=…`;
    /// `drive=` is added).
    pub fn start_with_disks(
        arch: &str,
        controllers: &[&str],
        disks: &[(&Path, &str)],
        boot: Boot,
    ) -> Vm {
        Vm::start_with(arch, controllers, disks, boot, Options::default())
    }

    /// Boots as [`Vm::start_with_disks`] does, with `options`' NICs and arguments.
    pub fn start_with(
        arch: &str,
        controllers: &[&str],
        disks: &[(&Path, &str)],
        boot: Boot,
        options: Options,
    ) -> Vm {
        // A test that failed while holding it poisons it; the next one may still run.
        let turn = ONE_VM_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut command = match arch {
            "amd64" => {
                let mut c = Command::new("qemu-system-x86_64");
                c.args(["-machine", "q35"]);
                c
            }
            "arm64" => {
                let mut c = Command::new("qemu-system-aarch64");
                c.args(["-machine", "virt", "-cpu", "cortex-a57"]);
                c
            }
            other => panic!("no VM for {other}"),
        };
        command
            .args(["-accel", "tcg", "-m", "1024", "-smp", "2"])
            .args(["-display", "none", "-vga", "none", "-serial", "stdio"]);
        let mut scratch = None;
        let mut monitor = None;
        if options.monitor {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("monitor.sock");
            command
                .arg("-monitor")
                .arg(format!("unix:{},server=on,wait=off", path.display()));
            monitor = Some(path);
            scratch = Some(dir);
        } else {
            command.args(["-monitor", "none"]);
        }
        if !options.reboot {
            command.arg("-no-reboot");
        }
        command.args(&options.extra);
        let mut netdev = "user,id=net0".to_string();
        let nic = "virtio-net-pci,netdev=net0";
        // The NICs' option ROM: QEMU's iPXE, or none for the firmware's own network stack.
        let mut rom = "";
        match boot {
            Boot::Kernel { append } => {
                let (kernel, built) = boot_files(arch);
                let initramfs = options.initrd.clone().unwrap_or(built);
                command
                    .arg("-kernel")
                    .arg(&kernel)
                    .arg("-initrd")
                    .arg(&initramfs)
                    .arg("-append")
                    .arg(append);
            }
            Boot::Network {
                firmware,
                bootfile,
                tftp,
            } => {
                netdev += &format!(",bootfile={bootfile}");
                if let Some(tftp) = tftp {
                    netdev += &format!(",tftp={}", tftp.display());
                }
                if let Firmware::Uefi | Firmware::SecureBoot | Firmware::HttpBoot = firmware {
                    let secure = matches!(firmware, Firmware::SecureBoot);
                    if secure || arch == "arm64" || matches!(firmware, Firmware::HttpBoot) {
                        rom = ",romfile=";
                    }
                    scratch = Some(uefi(&mut command, arch, secure, &options));
                } else {
                    assert_eq!(arch, "amd64", "SeaBIOS boots only amd64");
                }
                if arch == "amd64" {
                    command.args(["-boot", "n"]);
                }
            }
            Boot::Media {
                firmware,
                iso,
                medium,
            } => {
                if let Firmware::Uefi | Firmware::SecureBoot = firmware {
                    let secure = matches!(firmware, Firmware::SecureBoot);
                    scratch = Some(uefi(&mut command, arch, secure, &options));
                }
                let drive = format!(
                    "file={},format=raw,if=none,id=medium,readonly=on",
                    iso.display()
                );
                let device = match medium {
                    Medium::Cd => "ide-cd,drive=medium,bus=ide.1,bootindex=0",
                    Medium::Usb => "usb-storage,drive=medium,bootindex=0",
                };
                if matches!(medium, Medium::Usb) {
                    command.args(["-device", "qemu-xhci"]);
                }
                command.args(["-drive", &drive, "-device", device]);
            }
        }
        for controller in controllers {
            command.args(["-device", controller]);
        }
        for (i, (disk, device)) in disks.iter().enumerate() {
            command
                .arg("-drive")
                .arg(format!(
                    "file={},format=raw,if=none,id=disk{i}",
                    disk.display()
                ))
                .arg("-device")
                .arg(format!("{device},drive=disk{i}"));
        }
        if options.no_nic {
            command.args(["-nic", "none"]);
        } else if options.nics.is_empty() {
            command.args(["-netdev", &netdev, "-device", &format!("{nic}{rom}")]);
        }
        for (i, (netdev, mac)) in options.nics.iter().enumerate() {
            command
                .arg("-netdev")
                .arg(format!("{netdev},id=net{i}"))
                .arg("-device")
                // A speed, as real NICs report one: an 802.3ad bond takes no slave without.
                .arg(format!(
                    "virtio-net-pci,netdev=net{i},mac={mac},speed=10000,duplex=full{rom}"
                ));
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .expect("starting QEMU (apt-get install qemu-system-x86 qemu-system-arm; cargo xtask test does)");
        let console = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let console = Arc::clone(&console);
            thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = Vec::new();
                while reader
                    .read_until(b'\n', &mut line)
                    .map(|n| n > 0)
                    .unwrap_or(false)
                {
                    console
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&line));
                    line.clear();
                }
            });
        }
        let stdin = child.stdin.take();
        Vm {
            _turn: turn,
            child,
            stdin,
            console,
            started: Instant::now(),
            _scratch: scratch,
            monitor,
        }
    }

    /// Gives QEMU's monitor one command (`set_link net1 off`); what it answered.
    pub fn monitor(&mut self, command: &str) -> String {
        use std::io::Read;
        let path = self
            .monitor
            .as_ref()
            .expect("a VM started with Options::monitor");
        let mut stream = std::os::unix::net::UnixStream::connect(path).expect("QEMU's monitor");
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        stream.write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buffer) {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    pub fn console(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    /// What ocidd wrote to the console: without the kernel's messages (`[    4.326668] …`
    /// lines, which can land in the middle of one of ours) and with plain newlines.
    pub fn ocidd_output(&self) -> String {
        let console = self.console().replace("\r\n", "\n");
        let mut out = String::new();
        let mut rest = console.as_str();
        while let Some(start) = rest.find('[') {
            let stamp = rest[start + 1..]
                .find(']')
                .map(|end| &rest[start + 1..start + 1 + end])
                .filter(|s| {
                    s.contains('.') && s.trim().bytes().all(|b| b.is_ascii_digit() || b == b'.')
                });
            out.push_str(&rest[..start]);
            rest = match stamp {
                // A kernel message: up to and including its newline.
                Some(_) => rest[start..]
                    .find('\n')
                    .map_or("", |n| &rest[start + n + 1..]),
                None => {
                    out.push('[');
                    &rest[start + 1..]
                }
            };
        }
        out.push_str(rest);
        out
    }

    /// Waits until the console shows `text`; panics with the console after `limit`.
    pub fn wait_for(&mut self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.console().contains(text) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "QEMU exited ({status}) before showing {text:?}:\n{}",
                    self.console()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} on the console after {limit:?}:\n{}",
                self.console()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types on the serial console.
    pub fn type_text(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("console input");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for QEMU to exit (with -no-reboot, a reboot exits); returns the seconds since boot.
    pub fn wait_exit(&mut self, limit: Duration) -> f64 {
        self.wait_exit_unless(limit, &[])
    }

    /// [`Vm::wait_exit`], but panics at once when the console shows one of `stuck` (an
    /// emergency shell, a prompt): the guest would wait there until `limit`.
    pub fn wait_exit_unless(&mut self, limit: Duration, stuck: &[&str]) -> f64 {
        let deadline = Instant::now() + limit;
        loop {
            let console = self.console();
            if let Some(text) = stuck.iter().find(|t| console.contains(**t)) {
                panic!("the guest is stuck at {text:?}:\n{console}");
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "QEMU failed ({status}):\n{}",
                    self.console()
                );
                // Let the reader threads drain the pipes.
                thread::sleep(Duration::from_millis(200));
                return self.started.elapsed().as_secs_f64();
            }
            assert!(
                Instant::now() < deadline,
                "QEMU still running after {limit:?}:\n{}",
                self.console()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
