//! `cargo xtask pxe`: the PXE boot files. A Debian kernel (downloaded as a package), and an
//! initramfs whose /init is a static ocidd, with the kernel modules for disks and NICs,
//! busybox for the emergency shell, and the CA bundle. Beside them, Debian's signed shim and
//! network GRUB, for booting them under Secure Boot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::deps;
use crate::initramfs::{Archive, write_compressed};
use crate::util::{exec, output, root};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    fn rust_target(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-musl",
            Arch::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Environment for building ocidd (and its C parts) for this target.
    fn build_env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Arch::Amd64 => vec![("CC_x86_64_unknown_linux_musl", "musl-gcc")],
            Arch::Arm64 => vec![
                ("CC_aarch64_unknown_linux_musl", "aarch64-linux-gnu-gcc"),
                ("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld"),
            ],
        }
    }

    /// Debian packages the build needs on the host.
    fn host_packages(self) -> Vec<&'static str> {
        let mut packages = vec![
            "busybox-static",
            "ca-certificates",
            "kmod",
            "xz-utils",
            "zstd",
        ];
        match self {
            Arch::Amd64 => packages.push("musl-tools"),
            Arch::Arm64 => packages.extend(["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"]),
        }
        packages
    }
}

/// Which of Debian's kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavour {
    /// `linux-image-ARCH`: real hardware (AHCI, e1000 and friends) and VMs.
    Generic,
    /// `linux-image-cloud-ARCH`: VMs only, smaller.
    Cloud,
}

/// Modules for disks and NICs that go into the initramfs by default (those the kernel has;
/// their dependencies come along). /init loads the ones the hardware asks for.
pub const DEFAULT_MODULES: &[&str] = &[
    // Virtual machines: virtio, VMware, Hyper-V, Xen, AWS.
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "vmw_pvscsi",
    "vmxnet3",
    "hv_vmbus",
    "hv_storvsc",
    "hv_netvsc",
    "xen_blkfront",
    "xen_netfront",
    "ena",
    // Networks as data centres wire them: bond= and vlan=.
    "bonding",
    "8021q",
    // UEFI's variables, for the installed disk's boot entry; and the installed system's ESP
    // and seed file systems (FAT, ISO9660), as /init and the tests read them.
    "efivarfs",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "isofs",
    // The installed root and boot file systems ocidd.after=kexec reads its kernel from.
    "ext4",
    "xfs",
    // Disks: NVMe, SATA/AHCI, SCSI/SAS RAID controllers, SD/eMMC, USB storage.
    "nvme",
    "ahci",
    "ata_piix",
    "sd_mod",
    "megaraid_sas",
    "mpt3sas",
    "hpsa",
    "smartpqi",
    "aacraid",
    "mmc_block",
    "sdhci_pci",
    "sdhci_acpi",
    "usb_storage",
    "uas",
    // CD drives, as virtual media shows: the boot ISO can carry the image.
    "sr_mod",
    "xhci_pci",
    "ehci_pci",
    // NICs: Intel, Broadcom, Mellanox, Realtek, QLogic, Emulex, Aquantia, Solarflare, Chelsio,
    // Cisco, and USB Ethernet.
    "e1000",
    "e1000e",
    "igb",
    "igc",
    "ixgbe",
    "ixgbevf",
    "i40e",
    "iavf",
    "ice",
    "tg3",
    "bnx2",
    "bnx2x",
    "bnxt_en",
    "mlx4_en",
    "mlx5_core",
    "r8169",
    "qede",
    "be2net",
    "atlantic",
    "sfc",
    "cxgb4",
    "enic",
    "cdc_ether",
    "r8152",
    "ax88179_178a",
];

pub struct Options {
    pub arch: Arch,
    pub flavour: Flavour,
    pub extra_modules: Vec<String>,
    /// Where to take the firmware the modules name from (a /lib/firmware tree).
    pub firmware: Option<PathBuf>,
    pub out: PathBuf,
    /// Stage and archive the initramfs a second time, from scratch, and check that the two
    /// files are byte-identical.
    pub check_reproducible: bool,
}

impl Options {
    /// The boot files a release, the demo and the tests use: the generic kernel, the default
    /// modules, no firmware.
    pub fn generic(arch: Arch, out: PathBuf, check_reproducible: bool) -> Options {
        Options {
            arch,
            flavour: Flavour::Generic,
            extra_modules: Vec::new(),
            firmware: None,
            out,
            check_reproducible,
        }
    }
}

/// Builds `OUT/vmlinuz-ARCH` and `OUT/initramfs-ARCH.img`.
pub fn build(options: &Options) -> Result<()> {
    let arch = options.arch;
    if arch == Arch::Arm64 {
        deps::enable_foreign_arch("arm64")?;
    }
    deps::ensure_packages(&arch.host_packages())?;
    exec(Command::new("rustup").args(["target", "add", arch.rust_target()]))?;

    let ocidd = build_ocidd(arch)?;
    let work = root().join("target/pxe").join(arch.name());
    let kernel = fetch_kernel(arch, options.flavour, &download_dir(arch))?;
    let busybox = fetch_busybox(arch, &download_dir(arch))?;

    let stage = work.join("initramfs");
    stage_tree(&stage, &ocidd, &busybox, &kernel, options)?;
    let mtime = source_date_epoch()?;
    fs::create_dir_all(&options.out)?;
    let image = options.out.join(format!("initramfs-{}.img", arch.name()));
    let size = write_archive(&stage, &image, mtime)?;
    if options.check_reproducible {
        let again = work.join("initramfs-again.img");
        stage_tree(&stage, &ocidd, &busybox, &kernel, options)?;
        write_archive(&stage, &again, mtime)?;
        if fs::read(&image)? != fs::read(&again)? {
            bail!(
                "two builds of the {} initramfs differ: {} and {}",
                arch.name(),
                image.display(),
                again.display()
            );
        }
        fs::remove_file(&again)?;
        eprintln!(
            "pxe: a second build of the {} initramfs, staged from scratch, is byte-identical",
            arch.name()
        );
    }
    let vmlinuz = options.out.join(format!("vmlinuz-{}", arch.name()));
    fs::copy(&kernel.vmlinuz, &vmlinuz)?;
    let signed = signed_loaders(arch, &download_dir(arch), &options.out)?;
    eprintln!(
        "pxe: {} ({} KiB, kernel {}) and {} ({} KiB, mtime {mtime})",
        vmlinuz.display(),
        fs::metadata(&vmlinuz)?.len() >> 10,
        kernel.release,
        image.display(),
        size >> 10
    );
    eprintln!(
        "pxe: {} and the GRUB it loads (Debian's signed ones, for Secure Boot)",
        signed.display()
    );
    Ok(())
}

/// `OUT/shimx64.efi` (`shimaa64.efi`): Debian's signed shim, the file DHCP names under Secure
/// Boot; and `OUT/grubx64.efi`, Debian's signed network GRUB, under the name shim loads from
/// beside itself. That GRUB reads `grub/grub.cfg` from the server it was loaded from: its
/// built-in prefix is `/grub`. Returns the shim's path.
fn signed_loaders(arch: Arch, download: &Path, out: &Path) -> Result<PathBuf> {
    let (efi, grub_package) = match arch {
        Arch::Amd64 => ("x64", "grub-efi-amd64-signed"),
        Arch::Arm64 => ("aa64", "grub-efi-arm64-signed"),
    };
    let grub_dir = match arch {
        Arch::Amd64 => "x86_64-efi-signed",
        Arch::Arm64 => "arm64-efi-signed",
    };
    let shim = fetch_package(&format!("shim-signed:{}", arch.name()), download)?;
    let grub = fetch_package(&format!("{grub_package}:{}", arch.name()), download)?;
    let loader = out.join(format!("shim{efi}.efi"));
    fs::copy(
        shim.join(format!("usr/lib/shim/shim{efi}.efi.signed")),
        &loader,
    )
    .context("the shim-signed package has no signed shim")?;
    fs::copy(
        grub.join(format!("usr/lib/grub/{grub_dir}/grubnet{efi}.efi.signed")),
        out.join(format!("grub{efi}.efi")),
    )
    .with_context(|| format!("{grub_package} has no signed network GRUB"))?;
    Ok(loader)
}

/// Where the Debian packages for `arch`'s boot files are downloaded and unpacked.
pub fn download_dir(arch: Arch) -> PathBuf {
    root().join("target/pxe").join(arch.name()).join("download")
}

/// Builds the archive of `stage` into `image`; returns its size.
fn write_archive(stage: &Path, image: &Path, mtime: u32) -> Result<u64> {
    let mut archive = Archive::default();
    archive.add_tree(stage)?;
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    archive.add_char_device("dev/console", 5, 1, 0o600);
    archive.add_char_device("dev/null", 1, 3, 0o666);
    write_compressed(&archive, image, mtime)
}

/// `SOURCE_DATE_EPOCH`, or the time of the last commit.
pub fn source_date_epoch() -> Result<u32> {
    if let Ok(value) = std::env::var("SOURCE_DATE_EPOCH") {
        return value
            .trim()
            .parse()
            .context("SOURCE_DATE_EPOCH is not a number");
    }
    let time = output(
        Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(root()),
    )
    .unwrap_or_default();
    Ok(time.trim().parse().unwrap_or(0))
}

fn build_ocidd(arch: Arch) -> Result<PathBuf> {
    let mut command = Command::new(env!("CARGO"));
    command
        .args([
            "build",
            "--release",
            "--package",
            "ocidd",
            "--target",
            arch.rust_target(),
        ])
        .current_dir(root());
    for (key, value) in arch.build_env() {
        command.env(key, value);
    }
    exec(&mut command)?;
    Ok(ocidd_binary(arch))
}

/// The static ocidd that the boot files for `arch` hold, once built.
pub fn ocidd_binary(arch: Arch) -> PathBuf {
    root()
        .join("target")
        .join(arch.rust_target())
        .join("release/ocidd")
}

/// A Debian kernel, unpacked.
struct Kernel {
    release: String,
    vmlinuz: PathBuf,
    /// `.../lib/modules/RELEASE`
    modules: PathBuf,
}

/// Downloads a Debian package (resolving a metapackage to the package it depends on) into
/// `dir` and unpacks it; returns the unpack directory.
pub fn fetch_package(package: &str, dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let unpacked = dir.join(package.replace(':', "_"));
    if unpacked.join(".done").exists() {
        return Ok(unpacked);
    }
    // apt-get download drops privileges to _apt, which must be able to write here.
    let _ = Command::new("chmod").arg("777").arg(dir).status();
    exec(
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(dir),
    )?;
    let name = package.split(':').next().unwrap_or(package);
    let deb = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}_")) && n.ends_with(".deb"))
        })
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    let _ = fs::remove_dir_all(&unpacked);
    exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    fs::write(unpacked.join(".done"), "")?;
    Ok(unpacked)
}

fn fetch_kernel(arch: Arch, flavour: Flavour, dir: &Path) -> Result<Kernel> {
    let meta = match flavour {
        Flavour::Generic => format!("linux-image-{}", arch.name()),
        Flavour::Cloud => format!("linux-image-cloud-{}", arch.name()),
    };
    let meta = format!("{meta}:{}", arch.name());
    // The metapackage depends on the versioned image package.
    let depends = output(Command::new("apt-cache").args(["depends", &meta]))?;
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|p| p.trim_matches(['<', '>']).to_string())
        .find(|p| p.starts_with("linux-image-"))
        .with_context(|| format!("{meta} depends on no linux-image package"))?;
    let package = if package.contains(':') {
        package
    } else {
        format!("{package}:{}", arch.name())
    };
    let unpacked = fetch_package(&package, dir)?;
    let modules_root = unpacked.join("lib/modules");
    let release = fs::read_dir(&modules_root)?
        .flatten()
        .next()
        .context("the kernel package has no modules")?
        .file_name()
        .to_string_lossy()
        .into_owned();
    let vmlinuz = unpacked.join("boot").join(format!("vmlinuz-{release}"));
    let modules = modules_root.join(&release);
    // The package ships no modules.dep: generate it for the whole tree.
    if !modules.join("modules.dep").exists() {
        exec(
            Command::new("depmod")
                .arg("-b")
                .arg(&unpacked)
                .arg(&release),
        )?;
    }
    Ok(Kernel {
        release,
        vmlinuz,
        modules,
    })
}

fn fetch_busybox(arch: Arch, dir: &Path) -> Result<PathBuf> {
    if arch == Arch::Amd64 && Path::new("/bin/busybox").exists() {
        return Ok(PathBuf::from("/bin/busybox"));
    }
    let unpacked = fetch_package(&format!("busybox-static:{}", arch.name()), dir)?;
    Ok(unpacked.join("bin/busybox"))
}

/// Every module in `wanted` that the kernel has, with its hard and soft dependencies.
fn module_closure(modules: &Path, wanted: &[String]) -> Result<BTreeSet<PathBuf>> {
    let name_of = |path: &str| {
        let file = path.rsplit('/').next().unwrap_or(path);
        file.split(".ko").next().unwrap_or(file).replace('-', "_")
    };
    let dep = fs::read_to_string(modules.join("modules.dep"))?;
    let mut files: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in dep.lines() {
        if let Some((module, deps)) = line.split_once(':') {
            let deps = deps.split_whitespace().map(name_of).collect();
            files.insert(name_of(module), (module.to_string(), deps));
        }
    }
    let softdep = fs::read_to_string(modules.join("modules.softdep")).unwrap_or_default();
    let mut soft: HashMap<String, Vec<String>> = HashMap::new();
    for line in softdep.lines() {
        let mut words = line.split_whitespace();
        if let (Some("softdep"), Some(module)) = (words.next(), words.next()) {
            let names = words.filter(|w| !w.ends_with(':')).map(name_of).collect();
            soft.insert(name_of(module), names);
        }
    }
    let mut chosen = BTreeSet::new();
    let mut todo: Vec<String> = wanted.iter().map(|m| m.replace('-', "_")).collect();
    let mut missing = Vec::new();
    let mut seen = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        match files.get(&name) {
            Some((file, deps)) => {
                chosen.insert(PathBuf::from(file));
                todo.extend(deps.iter().cloned());
                todo.extend(soft.get(&name).cloned().unwrap_or_default());
            }
            None if wanted.iter().any(|w| w.replace('-', "_") == name) => missing.push(name),
            None => {}
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "pxe: not in this kernel (built in, or absent): {}",
            missing.join(" ")
        );
    }
    Ok(chosen)
}

fn stage_tree(
    stage: &Path,
    ocidd: &Path,
    busybox: &Path,
    kernel: &Kernel,
    options: &Options,
) -> Result<()> {
    let _ = fs::remove_dir_all(stage);
    for dir in [
        "bin",
        "sbin",
        "dev",
        "etc/ssl/certs",
        "proc",
        "sys",
        "run",
        "tmp",
        "root",
    ] {
        fs::create_dir_all(stage.join(dir))?;
    }
    copy(ocidd, &stage.join("init"), 0o755)?;
    std::os::unix::fs::symlink("/init", stage.join("bin/ocidd"))?;
    copy(busybox, &stage.join("bin/busybox"), 0o755)?;
    // The applets busybox-static has (the host's busybox lists the same set for any arch).
    let applets = output(Command::new("/bin/busybox").arg("--list-full"))?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        let link = stage.join(applet);
        if applet.ends_with("/busybox") || applet == "sbin/init" || link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)?;
    }
    copy(
        Path::new("/etc/ssl/certs/ca-certificates.crt"),
        &stage.join("etc/ssl/certs/ca-certificates.crt"),
        0o644,
    )?;

    let mut wanted: Vec<String> = DEFAULT_MODULES.iter().map(|m| m.to_string()).collect();
    wanted.extend(options.extra_modules.iter().cloned());
    let chosen = module_closure(&kernel.modules, &wanted)?;
    let modules_dir = stage.join("lib/modules").join(&kernel.release);
    for file in &chosen {
        let source = kernel.modules.join(file);
        let name = file.to_string_lossy();
        // Store modules uncompressed: the initramfs is compressed as a whole, and /init then
        // needs no decompressor.
        let (plain, decompress) = match name.rsplit_once(".ko.") {
            Some((stem, "xz")) => (format!("{stem}.ko"), Some("xz")),
            Some((stem, "zst")) => (format!("{stem}.ko"), Some("zstd")),
            _ => (name.to_string(), None),
        };
        let target = modules_dir.join(plain);
        fs::create_dir_all(target.parent().context("module path")?)?;
        match decompress {
            None => copy(&source, &target, 0o644)?,
            Some(tool) => {
                let data = Command::new(tool).arg("-dc").arg(&source).output()?;
                if !data.status.success() {
                    bail!("decompressing {}", source.display());
                }
                fs::write(&target, data.stdout)?;
            }
        }
    }
    for file in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        if kernel.modules.join(file).exists() {
            copy(&kernel.modules.join(file), &modules_dir.join(file), 0o644)?;
        }
    }
    exec(
        Command::new("depmod")
            .arg("-b")
            .arg(stage)
            .arg(&kernel.release),
    )?;
    // depmod's binary indexes are for kmod; /init reads the text files.
    for entry in fs::read_dir(&modules_dir)?.flatten() {
        if entry.file_name().to_string_lossy().ends_with(".bin") {
            fs::remove_file(entry.path())?;
        }
    }
    eprintln!("pxe: {} kernel modules in the initramfs", chosen.len());
    let staged: Vec<PathBuf> = chosen
        .iter()
        .map(|file| {
            let name = file.to_string_lossy();
            let plain = name.split(".ko").next().unwrap_or(&name).to_string() + ".ko";
            modules_dir.join(plain)
        })
        .collect();
    stage_firmware(stage, &staged, options.firmware.as_deref())
}

/// Copies the firmware files that the staged modules name (modinfo's `firmware=`) from
/// `source`, a /lib/firmware tree, to the initramfs's /lib/firmware, where the kernel loads
/// them from by itself (no udev needed). Debian's main archive has no firmware, so none is
/// included unless the operator gives a tree (e.g. with firmware-bnx2 etc. installed).
fn stage_firmware(stage: &Path, modules: &[PathBuf], source: Option<&Path>) -> Result<()> {
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for module in modules {
        let names = output(Command::new("modinfo").args(["-F", "firmware"]).arg(module))?;
        let names: Vec<String> = names
            .lines()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect();
        if !names.is_empty() {
            let name = module
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            wanted.insert(name, names);
        }
    }
    let Some(source) = source else {
        if !wanted.is_empty() {
            eprintln!(
                "pxe: no firmware included; these modules can use some: {} (add it with --firmware DIR)",
                wanted.keys().cloned().collect::<Vec<_>>().join(" ")
            );
        }
        return Ok(());
    };
    let (copied, without) = copy_firmware(&wanted, source, &stage.join("lib/firmware"))?;
    eprintln!(
        "pxe: {copied} firmware files from {}{}",
        source.display(),
        if without.is_empty() {
            String::new()
        } else {
            format!("; none there for {}", without.join(" "))
        }
    );
    Ok(())
}

/// Copies each firmware file `wanted` names (per module) that `source` has, as it is or
/// compressed (.xz, .zst: the kernel decompresses those), into `to`. Returns how many were
/// copied and the modules none of whose files were found.
fn copy_firmware(
    wanted: &BTreeMap<String, Vec<String>>,
    source: &Path,
    to: &Path,
) -> Result<(usize, Vec<String>)> {
    if !source.is_dir() {
        bail!("--firmware {}: not a directory", source.display());
    }
    let mut copied = BTreeSet::new();
    let mut without = Vec::new();
    for (module, names) in wanted {
        let mut found = false;
        for name in names {
            // Names come from the kernel's own modules, but stay inside the tree regardless.
            if name.split('/').any(|part| part == ".." || part.is_empty()) {
                continue;
            }
            for file in [name.clone(), format!("{name}.xz"), format!("{name}.zst")] {
                let from = source.join(&file);
                if from.is_file() {
                    found = true;
                    if copied.insert(file.clone()) {
                        let target = to.join(&file);
                        fs::create_dir_all(target.parent().context("firmware path")?)?;
                        copy(&from, &target, 0o644)?;
                    }
                }
            }
        }
        if !found {
            without.push(module.clone());
        }
    }
    Ok((copied.len(), without))
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_firmware_modules_name_that_the_tree_has() {
        let dir = std::env::temp_dir().join(format!("xtask-firmware-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (source, to) = (dir.join("lib-firmware"), dir.join("stage/lib/firmware"));
        fs::create_dir_all(source.join("bnx2")).unwrap();
        fs::write(source.join("bnx2/bnx2-mips-09-6.2.1b.fw"), b"mips").unwrap();
        fs::write(source.join("tigon3.bin.zst"), b"zst").unwrap();
        fs::write(source.join("secret"), b"outside").unwrap();
        let wanted = BTreeMap::from([
            (
                "bnx2".to_string(),
                vec![
                    "bnx2/bnx2-mips-09-6.2.1b.fw".to_string(),
                    "bnx2/bnx2-rv2p-09-6.0.17.fw".to_string(),
                ],
            ),
            ("tg3".to_string(), vec!["tigon3.bin".to_string()]),
            (
                "qede".to_string(),
                vec!["qed/qed_init_values.bin".to_string()],
            ),
            (
                "evil".to_string(),
                vec!["../lib-firmware/secret".to_string()],
            ),
        ]);
        let (copied, without) = copy_firmware(&wanted, &source, &to).unwrap();
        assert_eq!(copied, 2);
        assert_eq!(without, ["evil", "qede"]);
        assert_eq!(
            fs::read(to.join("bnx2/bnx2-mips-09-6.2.1b.fw")).unwrap(),
            b"mips"
        );
        assert_eq!(fs::read(to.join("tigon3.bin.zst")).unwrap(), b"zst");
        assert!(copy_firmware(&wanted, &dir.join("missing"), &to).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
