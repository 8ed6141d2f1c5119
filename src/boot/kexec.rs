//! `ocidd.after=kexec`: start the installed system's kernel straight from this one, without
//! the firmware's POST (minutes on many servers). The installed disk's partitions are
//! mounted read-only (vfat, ext4, xfs); the kernel to start is the default Boot Loader
//! Specification entry (`loader/entries/*.conf`), else the default entry of a plain
//! `grub.cfg`, else the newest unified kernel image in `\EFI\Linux` (its kernel, initrd and
//! command line are sections of one PE file, taken apart here). It is loaded with `kexec_file_load`, which under Secure Boot's lockdown takes
//! only a signed kernel; when it is refused, or nothing is found, ocidd says why and the
//! machine reboots through its firmware as it would have.
//!
//! The boot loaders' formats are read by hand: no crate reads BLS entries or grub.cfg, and
//! only their plainest form is taken (no GRUB variables, scripts or `search`). A UKI is read
//! with `object`.

use std::ffi::CString;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::efi::uki;
use anyhow::{Context, Result, bail};
use rustix::mount::{MountFlags, UnmountFlags, mount, unmount};

/// Where the installed file systems are mounted, each under its partition's name.
const MOUNTS: &str = "/run/ocidd/installed";
/// The file systems tried, in order.
const FILE_SYSTEMS: [&str; 3] = ["vfat", "ext4", "xfs"];
/// `KEXEC_FILE_NO_INITRAMFS`.
const NO_INITRAMFS: libc::c_ulong = 0x4;
/// `kexec_file_load`'s number: musl's libc does not name it on every architecture.
#[cfg(target_arch = "x86_64")]
const SYS_KEXEC_FILE_LOAD: libc::c_long = 320;
#[cfg(target_arch = "aarch64")]
const SYS_KEXEC_FILE_LOAD: libc::c_long = 294;

/// What a boot loader's configuration says to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Paths as the configuration writes them, from its file system's root.
    pub kernel: String,
    pub initrds: Vec<String>,
    pub options: String,
}

/// What finds a boot loader's default entry under a file system's root, and its file.
type Reader = fn(&Path) -> Option<(Entry, String)>;

/// A kernel found on the installed disk, ready to load.
#[derive(Debug)]
pub struct Found {
    pub kernel: PathBuf,
    pub initrds: Vec<PathBuf>,
    pub options: String,
    /// What it is, for the console: `/vmlinuz from /EFI/debian/grub.cfg on /dev/vda1`, or
    /// `the kernel in /EFI/Linux/debian.efi on /dev/vda1`.
    pub description: String,
}

/// Mounts `disk`'s partitions and finds the kernel its boot loader would start. The mounts
/// stay until [`load_and_start`] or [`unmount_all`].
pub fn find(disk: &Path) -> Result<Found> {
    // A /dev/disk/by-id name is a link to the kernel's.
    let disk = &fs::canonicalize(disk).unwrap_or_else(|_| disk.to_path_buf());
    let name = disk
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} names no disk", disk.display()))?;
    let mut partitions: Vec<String> = fs::read_dir(Path::new("/sys/class/block").join(name))
        .with_context(|| format!("{} is not a disk the kernel knows", disk.display()))?
        .flatten()
        .filter(|e| e.path().join("partition").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    partitions.sort_by_key(|p| (p.len(), p.clone()));
    let mut mounted = Vec::new();
    for partition in &partitions {
        let at = Path::new(MOUNTS).join(partition);
        fs::create_dir_all(&at).ok();
        let device = Path::new("/dev").join(partition);
        let ok = FILE_SYSTEMS
            .iter()
            .any(|fs| mount(&device, &at, *fs, MountFlags::RDONLY, None).is_ok());
        if ok {
            mounted.push((device, at));
        }
    }
    if mounted.is_empty() {
        bail!(
            "none of {}'s partitions mounts as vfat, ext4 or xfs",
            disk.display()
        );
    }
    // Every partition's BLS entries before any grub.cfg: BLS is what the loader reads first.
    let readers: [Reader; 2] = [bls_default, grub_default];
    for read in readers {
        for (device, root) in &mounted {
            if let Some((entry, file)) = read(root) {
                let source = format!("{file} on {}", device.display());
                return resolve(entry, &mounted, root, &source);
            }
        }
    }
    for (device, root) in &mounted {
        if let Some(file) = newest_uki(root) {
            let source = format!("{file} on {}", device.display());
            return unpack_uki(&root.join(&file[1..]), &source);
        }
    }
    bail!(
        "no loader/entries/*.conf, grub.cfg with a linux line, or EFI/Linux/*.efi on {}'s partitions",
        disk.display()
    )
}

/// The unified kernel image systemd-boot would start first among `root`'s `EFI/Linux/*.efi`:
/// the newest by version order.
fn newest_uki(root: &Path) -> Option<String> {
    let dir = ["EFI/Linux", "efi/linux", "EFI/LINUX"]
        .into_iter()
        .find(|d| root.join(d).is_dir())?;
    let mut names: Vec<String> = fs::read_dir(root.join(dir))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.to_ascii_lowercase().ends_with(".efi"))
        .collect();
    names.sort_by(|a, b| version_order(a, b));
    Some(format!("/{dir}/{}", names.last()?))
}

/// Where a UKI's sections are copied: kexec_file_load takes files, not ranges of one.
const UNPACKED: &str = "/run/ocidd/uki";

/// Copies `uki`'s `.linux`, `.ucode` and `.initrd` sections out beside [`UNPACKED`] and takes
/// its `.cmdline`. The microcode goes before the initrd, as systemd's stub puts it.
fn unpack_uki(uki: &Path, source: &str) -> Result<Found> {
    let sections = uki_sections(uki).with_context(|| format!("reading {source}"))?;
    let mut file = File::open(uki).with_context(|| format!("opening {source}"))?;
    fs::create_dir_all(UNPACKED).context("unpacking the UKI")?;
    let mut take = |name: &str| -> Result<Option<PathBuf>> {
        let Some(&(offset, size)) = sections.get(name) else {
            return Ok(None);
        };
        let out = Path::new(UNPACKED).join(name.trim_start_matches('.'));
        copy_range(&mut file, offset, size, &out)
            .with_context(|| format!("copying {source}'s {name} section"))?;
        Ok(Some(out))
    };
    let kernel = take(uki::LINUX)?.with_context(|| format!("{source} has no .linux section"))?;
    let initrds = [take(uki::UCODE)?, take(uki::INITRD)?]
        .into_iter()
        .flatten()
        .collect();
    let options = match sections.get(uki::CMDLINE) {
        Some(&(offset, size)) => {
            let mut bytes = Vec::new();
            read_range(&mut file, offset, size.min(64 * 1024), &mut bytes)
                .with_context(|| format!("reading {source}'s .cmdline section"))?;
            cmdline_text(&bytes)
        }
        None => String::new(),
    };
    Ok(Found {
        kernel,
        initrds,
        options,
        description: format!("the kernel in {source}"),
    })
}

/// Each section's (file offset, size) by name: the first of each name, as the stub takes it.
fn uki_sections(uki: &Path) -> Result<std::collections::HashMap<String, (u64, u64)>> {
    use object::{Object, ObjectSection};
    let file = File::open(uki)?;
    let cache = object::ReadCache::new(file);
    let pe = object::File::parse(&cache).context("not a PE file")?;
    let mut sections = std::collections::HashMap::new();
    for section in pe.sections() {
        let (Ok(name), Some(range)) = (section.name(), section.file_range()) else {
            continue;
        };
        sections.entry(name.to_string()).or_insert(range);
    }
    Ok(sections)
}

fn copy_range(file: &mut File, offset: u64, size: u64, out: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    let mut output = File::create(out)?;
    let copied = std::io::copy(&mut file.take(size), &mut output)?;
    if copied != size {
        bail!("the file ends inside it");
    }
    Ok(())
}

fn read_range(file: &mut File, offset: u64, size: u64, into: &mut Vec<u8>) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.take(size).read_to_end(into)?;
    Ok(())
}

/// A `.cmdline` section's text: it ends at its first NUL (the section is padded) and may end
/// in a newline.
fn cmdline_text(bytes: &[u8]) -> String {
    let text = bytes.split(|&b| b == 0).next().unwrap_or(&[]);
    String::from_utf8_lossy(text).trim().to_string()
}

/// The entry's files: from its own file system, else with `boot/` before them (a root file
/// system whose /boot is a directory), else from another partition (a separate /boot).
fn resolve(
    entry: Entry,
    mounted: &[(PathBuf, PathBuf)],
    root: &Path,
    source: &str,
) -> Result<Found> {
    let locate = |path: &str| -> Result<PathBuf> {
        let relative = path.trim_start_matches('/');
        let roots = std::iter::once(root).chain(mounted.iter().map(|(_, r)| r.as_path()));
        for base in roots {
            for candidate in [base.join(relative), base.join("boot").join(relative)] {
                if candidate.is_file() {
                    return Ok(candidate);
                }
            }
        }
        bail!("{source} names {path}, which is on none of the disk's partitions")
    };
    Ok(Found {
        kernel: locate(&entry.kernel)?,
        initrds: entry
            .initrds
            .iter()
            .map(|i| locate(i))
            .collect::<Result<_>>()?,
        description: format!("{} from {source}", entry.kernel),
        options: entry.options,
    })
}

/// Loads the kernel with `kexec_file_load`, unmounts the installed file systems, and starts
/// it. Returns only on failure.
pub fn load_and_start(found: &Found) -> Result<()> {
    let kernel =
        File::open(&found.kernel).with_context(|| format!("opening {}", found.kernel.display()))?;
    // kexec_file_load takes one initrd: several are concatenated, as boot loaders do.
    let initrd = match found.initrds.as_slice() {
        [] => None,
        [one] => Some(File::open(one).with_context(|| format!("opening {}", one.display()))?),
        many => {
            let joined = Path::new("/run/ocidd/kexec-initrd");
            let mut out = File::create(joined).context("joining the initrds")?;
            for part in many {
                let mut input =
                    File::open(part).with_context(|| format!("opening {}", part.display()))?;
                std::io::copy(&mut input, &mut out).context("joining the initrds")?;
            }
            Some(File::open(joined).context("joining the initrds")?)
        }
    };
    let cmdline =
        CString::new(found.options.as_str()).context("the kernel's options hold a NUL byte")?;
    let flags = if initrd.is_none() { NO_INITRAMFS } else { 0 };
    // SAFETY: kexec_file_load reads two open descriptors (or -1 with NO_INITRAMFS) and
    // `cmdline`'s bytes up to the length given, which includes its NUL; all outlive the call.
    let result = unsafe {
        libc::syscall(
            SYS_KEXEC_FILE_LOAD,
            kernel.as_raw_fd(),
            initrd.as_ref().map_or(-1, |f| f.as_raw_fd()),
            cmdline.as_bytes_with_nul().len() as libc::c_ulong,
            cmdline.as_ptr(),
            flags,
        )
    };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        unmount_all();
        return Err(match error.raw_os_error() {
            // ENODATA: no signature at all; the others: one the kernel does not trust.
            Some(
                libc::ENODATA | libc::ENOKEY | libc::EKEYREJECTED | libc::EPERM | libc::EBADMSG,
            ) => {
                anyhow::anyhow!(
                    "{} is not signed with a key this kernel trusts ({error}), and Secure Boot's lockdown loads no other",
                    found.description
                )
            }
            _ => anyhow::anyhow!("loading {}: {error}", found.description),
        });
    }
    unmount_all();
    rustix::fs::sync();
    rustix::system::reboot(rustix::system::RebootCommand::Kexec).context("starting it")?;
    Ok(())
}

/// Unmounts what [`find`] mounted.
pub fn unmount_all() {
    if let Ok(entries) = fs::read_dir(MOUNTS) {
        for entry in entries.flatten() {
            let _ = unmount(entry.path(), UnmountFlags::empty());
        }
    }
}

/// The default Boot Loader Specification entry under `root`: `loader/entries/*.conf` (or
/// `boot/loader/entries`), the one `loader/loader.conf`'s `default` names, else the newest
/// by name as systemd-boot sorts them.
fn bls_default(root: &Path) -> Option<(Entry, String)> {
    for dir in ["loader", "boot/loader"] {
        let Ok(list) = fs::read_dir(root.join(dir).join("entries")) else {
            continue;
        };
        let mut names: Vec<String> = list
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".conf"))
            .collect();
        let wanted = fs::read_to_string(root.join(dir).join("loader.conf"))
            .ok()
            .and_then(|text| loader_default(&text));
        let chosen = choose_entry(&mut names, wanted.as_deref())?;
        let path = format!("/{dir}/entries/{chosen}");
        let text = fs::read_to_string(root.join(&path[1..])).ok()?;
        if let Some(entry) = parse_bls(&text) {
            return Some((entry, path));
        }
    }
    None
}

/// `default` in a `loader.conf`.
fn loader_default(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("default"))
        .map(str::trim)
        .find(|v| !v.is_empty())
        .map(str::to_string)
}

/// The entry `wanted` names (a name, with or without `.conf`, or a `*` pattern), else the
/// last by version order (what systemd-boot starts first).
fn choose_entry(names: &mut [String], wanted: Option<&str>) -> Option<String> {
    names.sort_by(|a, b| version_order(a, b));
    if let Some(wanted) = wanted {
        let matches = |name: &str| {
            let stem = name.trim_end_matches(".conf");
            match wanted.split_once('*') {
                Some((head, tail)) => {
                    name.len() >= head.len() + tail.len()
                        && name.starts_with(head)
                        && (name.ends_with(tail) || stem.ends_with(tail))
                }
                None => name == wanted || stem == wanted,
            }
        };
        if let Some(found) = names.iter().rev().find(|n| matches(n)) {
            return Some(found.clone());
        }
    }
    names.last().cloned()
}

/// Names compared with their digit runs as numbers: `6.10` after `6.9`.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits > 0 {
                out.push((rest[..digits].parse().unwrap_or(u64::MAX), String::new()));
                rest = &rest[digits..];
            } else {
                let text =
                    rest.len() - rest.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
                out.push((0, rest[..text].to_string()));
                rest = &rest[text..];
            }
        }
        out
    }
    parts(a).cmp(&parts(b))
}

/// A BLS type 1 entry: `linux`, `initrd` (repeatable) and `options` (repeatable, joined).
fn parse_bls(text: &str) -> Option<Entry> {
    let mut kernel = None;
    let mut initrds = Vec::new();
    let mut options = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let value = value.trim();
        match key {
            "linux" => kernel = Some(value.to_string()),
            "initrd" => initrds.extend(value.split_whitespace().map(str::to_string)),
            "options" => options.push(value.to_string()),
            _ => {}
        }
    }
    Some(Entry {
        kernel: kernel.filter(|k| !k.is_empty())?,
        initrds,
        options: options.join(" "),
    })
}

/// The grub.cfg files where distributions put them, under `root`.
fn grub_default(root: &Path) -> Option<(Entry, String)> {
    let mut files: Vec<String> = [
        "boot/grub/grub.cfg",
        "grub/grub.cfg",
        "boot/grub2/grub.cfg",
        "grub2/grub.cfg",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    if let Ok(vendors) = fs::read_dir(root.join("EFI")) {
        let mut more: Vec<String> = vendors
            .flatten()
            .map(|e| format!("EFI/{}/grub.cfg", e.file_name().to_string_lossy()))
            .collect();
        more.sort();
        files.extend(more);
    }
    files.into_iter().find_map(|file| {
        let text = fs::read_to_string(root.join(&file)).ok()?;
        Some((parse_grub(&text)?, format!("/{file}")))
    })
}

/// The default entry of a plain grub.cfg: `set default=N` (a number; else 0) among its
/// `menuentry` blocks, or its top-level `linux` and `initrd` lines when it has none. An entry
/// whose paths hold a GRUB variable is not taken.
fn parse_grub(text: &str) -> Option<Entry> {
    let mut default = 0usize;
    let mut entries: Vec<Entry> = Vec::new();
    let mut top = Entry {
        kernel: String::new(),
        initrds: Vec::new(),
        options: String::new(),
    };
    let mut current: Option<Entry> = None;
    let mut depth = 0usize;
    for line in text.lines() {
        let line = line.trim();
        if let Some(value) = line.strip_prefix("set default=") {
            default = value.trim_matches(['"', '\'']).parse().unwrap_or(0);
            continue;
        }
        if line.starts_with("menuentry ") || line.starts_with("submenu ") {
            if depth == 0 && line.starts_with("menuentry ") {
                current = Some(Entry {
                    kernel: String::new(),
                    initrds: Vec::new(),
                    options: String::new(),
                });
            }
            depth += line.matches('{').count();
            continue;
        }
        if line == "}" {
            depth = depth.saturating_sub(1);
            if depth == 0
                && let Some(entry) = current.take()
            {
                entries.push(entry);
            }
            continue;
        }
        let entry = match current.as_mut() {
            Some(entry) => entry,
            None if depth == 0 => &mut top,
            None => continue,
        };
        let mut words = line.split_whitespace();
        match words.next() {
            Some("linux" | "linuxefi" | "linux16") => {
                entry.kernel = words.next().unwrap_or("").to_string();
                entry.options = words.collect::<Vec<_>>().join(" ");
            }
            Some("initrd" | "initrdefi" | "initrd16") => {
                entry.initrds = words.map(str::to_string).collect();
            }
            _ => {}
        }
    }
    let chosen = if entries.is_empty() {
        top
    } else {
        entries.into_iter().nth(default)?
    };
    let plain = |p: &str| !p.contains('$') && !p.starts_with('(');
    (!chosen.kernel.is_empty() && plain(&chosen.kernel) && chosen.initrds.iter().all(|i| plain(i)))
        .then_some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cmdline_section_ends_at_its_padding() {
        assert_eq!(
            cmdline_text(b"root=/dev/vda2 ro quiet\n\0\0\0"),
            "root=/dev/vda2 ro quiet"
        );
        assert_eq!(cmdline_text(b""), "");
    }

    #[test]
    fn a_bls_entry_gives_its_kernel_initrds_and_options() {
        let entry = parse_bls(
            "title Fedora Linux (6.8.5)\nversion 6.8.5\nlinux /vmlinuz-6.8.5\ninitrd /initramfs-6.8.5.img\noptions root=UUID=1234 ro\noptions quiet\n",
        )
        .unwrap();
        assert_eq!(
            entry,
            Entry {
                kernel: "/vmlinuz-6.8.5".into(),
                initrds: vec!["/initramfs-6.8.5.img".into()],
                options: "root=UUID=1234 ro quiet".into(),
            }
        );
        assert_eq!(parse_bls("title nothing to boot\n"), None);
    }

    #[test]
    fn the_default_entry_is_the_named_one_else_the_newest() {
        let mut names: Vec<String> = ["a-6.9.conf", "a-6.10.conf", "a-6.1.conf", "rescue.conf"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            choose_entry(&mut names, None).as_deref(),
            Some("rescue.conf")
        );
        assert_eq!(
            choose_entry(&mut names, Some("a-*")).as_deref(),
            Some("a-6.10.conf")
        );
        assert_eq!(
            choose_entry(&mut names, Some("a-6.9")).as_deref(),
            Some("a-6.9.conf")
        );
        assert_eq!(
            loader_default("timeout 3\ndefault a-*\n").as_deref(),
            Some("a-*")
        );
    }

    #[test]
    fn a_plain_grub_cfg_gives_its_default_entry() {
        let text = "set default=\"1\"\nmenuentry 'Debian' {\n\tlinux /vmlinuz-6.1 root=/dev/vda2 ro\n\tinitrd /initrd.img-6.1\n}\nmenuentry 'Debian (old)' {\n\tlinux /vmlinuz-6.0 root=/dev/vda2 ro single\n\tinitrd /initrd.img-6.0\n}\n";
        let entry = parse_grub(text).unwrap();
        assert_eq!(entry.kernel, "/vmlinuz-6.0");
        assert_eq!(entry.options, "root=/dev/vda2 ro single");
        assert_eq!(entry.initrds, vec!["/initrd.img-6.0".to_string()]);
        let top = parse_grub("linux /vmlinuz console=ttyS0\ninitrd /initrd.img\nboot\n").unwrap();
        assert_eq!(top.kernel, "/vmlinuz");
        assert_eq!(top.options, "console=ttyS0");
        assert_eq!(
            parse_grub("menuentry 'x' {\n linux $prefix/vmlinuz\n}\n"),
            None
        );
        assert_eq!(parse_grub("search --label root\n"), None);
    }
}
