//! The installed disk's UEFI boot entry, written once the image verified, as Ironic's agent
//! writes one: the loader is found on the image's EFI system partition (the vendor's
//! `BOOTX64.CSV` first, as shim's fallback reads it, then `shimx64.efi`, `grubx64.efi`, then
//! the removable path), a `Boot####` entry names it by the partition's GUID and bounds, the
//! entries for this disk's old partitions go, and the others stay.
//!
//! By default (`ocidd.boot_order=next`) the new entry is `BootNext` and goes last in
//! `BootOrder`: the next boot starts the installed system once, and the network entry the
//! provisioning system put first stays first, so a machine it wants to re-install or clean
//! comes back to it. `disk` puts the entry first instead.

use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};

use super::gpt;
use super::target::Target;
use crate::cmdline::BootOrder;
use crate::efi::load_option::{self, LoadOption, Partition, Signature};
use crate::efi::variables::{EFIVARFS, Variables, boot_name};
use crate::error::{Classify, Failure};
use crate::say;

/// `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`, the EFI system partition's type, as a GPT stores it.
const ESP_TYPE: [u8; 16] = [
    0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B,
];
/// How much of the disk's start holds its tables.
const TABLES: usize = 1 << 20;
/// UEFI's name for this machine's architecture in loader file names.
#[cfg(target_arch = "aarch64")]
const ARCH: &str = "AA64";
#[cfg(not(target_arch = "aarch64"))]
const ARCH: &str = "X64";

/// What was written.
#[derive(Debug, PartialEq, Eq)]
pub struct Written {
    /// `Boot0004`.
    pub name: String,
    pub description: String,
    /// `\EFI\debian\shimx64.efi`.
    pub path: String,
    pub partition: u32,
    /// The entries removed: they named this disk's old partitions.
    pub removed: Vec<String>,
    pub order: BootOrder,
}

impl Written {
    pub fn describe(&self, target: &str) -> String {
        let removed = match self.removed.len() {
            0 => String::new(),
            _ => format!(
                "; removed {} (the disk's old partitions)",
                self.removed.join(", ")
            ),
        };
        let how = match self.order {
            BootOrder::Disk => "first in BootOrder",
            _ => "BootNext; BootOrder's first entry stays first",
        };
        format!(
            "boot entry {} \"{}\" written for {} on partition {} of {target} ({how}){removed}",
            self.name, self.description, self.path, self.partition
        )
    }
}

/// The firmware's variables, where this install writes a boot entry: told to, onto a disk
/// (not a file), on a machine booted by UEFI with efivarfs mounted.
pub fn variables_for(target: &Target, order: BootOrder) -> Option<Variables> {
    let efi = Path::new("/sys/firmware/efi");
    if order == BootOrder::Keep || !target.is_block_device() || !efi.exists() {
        return None;
    }
    let root = Path::new(EFIVARFS);
    let mounted = std::fs::read_dir(root).is_ok_and(|mut list| list.next().is_some());
    if !mounted {
        say!("ocidd: no boot entry will be written: efivarfs is not mounted at {EFIVARFS}");
        return None;
    }
    Some(Variables::at(root))
}

/// The partitions and disk the target's table names now: what an entry for this disk names.
/// Read before the install, they are the old partitions whose entries are removed after it.
pub fn signatures(target: &Target) -> HashSet<Signature> {
    let mut start = vec![0u8; TABLES];
    let Ok(n) = target.read_at(&mut start, 0) else {
        return HashSet::new();
    };
    start.truncate(n);
    let mut found: HashSet<Signature> = gpt::entries(&start, target.sector_size())
        .unwrap_or_default()
        .into_iter()
        .map(|e| Signature::Guid(e.guid))
        .collect();
    if start.len() >= 512 && start[510..512] == [0x55, 0xAA] {
        let id = u32::from_le_bytes([start[440], start[441], start[442], start[443]]);
        if id != 0 {
            found.insert(Signature::Mbr(id));
        }
    }
    found
}

/// What the boot entry step did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Written(Written),
    /// No entry: why (the image names no loader).
    Skipped(String),
}

/// Writes the entry for the loader on the installed disk `target`, whose table named
/// `before` until the install. An image without a loader to name is skipped (a BIOS image,
/// say); variables the firmware refuses are an error.
pub fn write(
    target: &Target,
    before: &HashSet<Signature>,
    order: BootOrder,
    variables: &Variables,
) -> Result<Outcome> {
    let sector = target.sector_size();
    let mut start = vec![0u8; TABLES];
    let n = target
        .read_at(&mut start, 0)
        .context("reading the installed tables")
        .classify(Failure::Target)?;
    start.truncate(n);
    let skip = |why: String| Ok(Outcome::Skipped(why));
    let Some(entries) = gpt::entries(&start, sector) else {
        return skip("the image has no GPT, so no EFI system partition".to_string());
    };
    let Some(esp) = entries.iter().find(|e| e.type_guid == ESP_TYPE) else {
        return skip("the image's GPT has no EFI system partition".to_string());
    };
    let size_lba = esp.last_lba.saturating_sub(esp.first_lba) + 1;
    let slice = PartitionSlice {
        target,
        offset: esp.first_lba * sector as u64,
        len: size_lba * sector as u64,
        at: 0,
    };
    let loader = match find_loader(slice) {
        Ok(Some(loader)) => loader,
        Ok(None) => {
            let arch = ARCH.to_lowercase();
            return skip(format!(
                "its EFI system partition holds no \\EFI\\*\\BOOT{ARCH}.CSV, shim{arch}.efi, grub{arch}.efi or \\EFI\\BOOT\\BOOT{ARCH}.EFI"
            ));
        }
        Err(e) => return skip(format!("its EFI system partition cannot be read: {e}")),
    };
    let option = LoadOption {
        description: loader.label,
        partition: Partition {
            number: esp.number,
            start_lba: esp.first_lba,
            size_lba,
            signature: Signature::Guid(esp.guid),
        },
        path: loader.path,
        optional_data: loader.options,
    };
    let mut ours = before.clone();
    ours.extend(entries.iter().map(|e| Signature::Guid(e.guid)));
    let written = apply(variables, &option, &ours, order)
        .context("the image is installed, but its UEFI boot entry could not be written")
        .classify(Failure::Target)?;
    Ok(Outcome::Written(written))
}

/// Writes `option` in place of the entries that name a partition in `ours` (the first of
/// them keeps its number), and sets the order as `order` says.
fn apply(
    variables: &Variables,
    option: &LoadOption,
    ours: &HashSet<Signature>,
    order: BootOrder,
) -> io::Result<Written> {
    let numbers = variables.boot_entries()?;
    let mut stale = Vec::new();
    for &number in &numbers {
        let Some(value) = variables.get(&boot_name(number))? else {
            continue;
        };
        if let Some((_, partitions)) = load_option::decode(&value)
            && partitions.iter().any(|p| ours.contains(&p.signature))
        {
            stale.push(number);
        }
    }
    let number = match stale.first() {
        Some(&first) => first,
        None => (0..=u16::MAX)
            .find(|n| !numbers.contains(n))
            .ok_or_else(|| io::Error::other("every Boot#### number is taken"))?,
    };
    variables.set(&boot_name(number), &option.encode())?;
    let removed: Vec<u16> = stale.iter().copied().filter(|&n| n != number).collect();
    for &old in &removed {
        variables.remove(&boot_name(old))?;
    }

    let current = variables
        .get("BootOrder")?
        .map(|v| load_option::decode_numbers(&v))
        .unwrap_or_default();
    let mut boot_order: Vec<u16> = current
        .iter()
        .copied()
        .filter(|n| !removed.contains(n) && *n != number)
        .collect();
    match order {
        BootOrder::Disk => boot_order.insert(0, number),
        _ => boot_order.push(number),
    }
    if boot_order != current {
        variables.set("BootOrder", &load_option::encode_numbers(&boot_order))?;
    }
    match order {
        BootOrder::Disk => {
            let next = variables.get("BootNext")?;
            if next.is_some_and(|v| {
                load_option::decode_numbers(&v)
                    .first()
                    .is_some_and(|n| removed.contains(n))
            }) {
                variables.remove("BootNext")?;
            }
        }
        _ => variables.set("BootNext", &load_option::encode_numbers(&[number]))?,
    }
    Ok(Written {
        name: boot_name(number),
        description: option.description.clone(),
        path: option.path.clone(),
        partition: option.partition.number,
        removed: removed.into_iter().map(boot_name).collect(),
        order,
    })
}

/// The loader to boot and what to call it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Loader {
    path: String,
    label: String,
    options: Vec<u8>,
}

/// Looks on the FAT file system in `slice` for the loader, in the order the module names.
fn find_loader<T: Read + Write + Seek>(slice: T) -> io::Result<Option<Loader>> {
    let fs = fatfs::FileSystem::new(slice, fatfs::FsOptions::new())?;
    let Ok(efi) = fs.root_dir().open_dir("EFI") else {
        return Ok(None);
    };
    let mut vendors: Vec<String> = efi
        .iter()
        .flatten()
        .filter(|e| e.is_dir())
        .map(|e| e.file_name())
        .filter(|n| n != "." && n != ".." && !n.eq_ignore_ascii_case("BOOT"))
        .collect();
    vendors.sort();
    let arch = ARCH.to_lowercase();
    for vendor in &vendors {
        let Ok(mut file) = efi.open_file(&format!("{vendor}/BOOT{ARCH}.CSV")) else {
            continue;
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        if let Some(loader) = read_csv(&bytes, vendor) {
            return Ok(Some(loader));
        }
    }
    for name in [format!("shim{arch}.efi"), format!("grub{arch}.efi")] {
        for vendor in &vendors {
            if efi.open_file(&format!("{vendor}/{name}")).is_ok() {
                return Ok(Some(Loader {
                    path: format!("\\EFI\\{vendor}\\{name}"),
                    label: vendor.clone(),
                    options: Vec::new(),
                }));
            }
        }
    }
    let removable = format!("BOOT/BOOT{ARCH}.EFI");
    Ok(efi.open_file(&removable).is_ok().then(|| Loader {
        path: format!("\\EFI\\BOOT\\BOOT{ARCH}.EFI"),
        label: "installed disk".to_string(),
        options: Vec::new(),
    }))
}

/// The first line of a `BOOTX64.CSV`: `file,label,options,comment`. Shim reads it as UCS-2
/// little-endian, with or without a byte-order mark (Debian's has none); one without a NUL
/// byte is read as UTF-8, as a hand-written one may be.
fn read_csv(bytes: &[u8], vendor: &str) -> Option<Loader> {
    let bytes = bytes.strip_prefix(&[0xFF, 0xFE]).unwrap_or(bytes);
    let text = if bytes.contains(&0) {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    };
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    if line.contains(char::is_control) {
        return None;
    }
    let mut fields = line.split(',').map(str::trim);
    let file = fields
        .next()
        .filter(|f| !f.is_empty() && !f.contains(['\\', '/']))?;
    let label = fields
        .next()
        .filter(|l| !l.is_empty())
        .unwrap_or(vendor)
        .to_string();
    // Shim's fallback passes the options as UCS-2 without a terminator.
    let options = fields
        .next()
        .unwrap_or("")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    Some(Loader {
        path: format!("\\EFI\\{vendor}\\{file}"),
        label,
        options,
    })
}

/// A partition of the target, read-only, as the FAT crate reads a disk.
struct PartitionSlice<'a> {
    target: &'a Target,
    offset: u64,
    len: u64,
    at: u64,
}

impl Read for PartitionSlice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.at);
        let want = (buf.len() as u64).min(left) as usize;
        let n = self
            .target
            .read_at(&mut buf[..want], self.offset + self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl Write for PartitionSlice<'_> {
    /// The ESP is only read: the verified image is not changed after the fact.
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the EFI system partition is read only",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for PartitionSlice<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let at = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::Current(by) => self.at.checked_add_signed(by),
            SeekFrom::End(by) => self.len.checked_add_signed(by),
        };
        self.at = at.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn option(guid: u8) -> LoadOption {
        LoadOption {
            description: "debian".to_string(),
            partition: Partition {
                number: 1,
                start_lba: 2048,
                size_lba: 4096,
                signature: Signature::Guid([guid; 16]),
            },
            path: r"\EFI\debian\shimx64.efi".to_string(),
            optional_data: Vec::new(),
        }
    }

    /// OVMF's entries: the network first, then the shell, as a fresh vars store has them.
    fn firmware() -> (tempfile::TempDir, Variables) {
        let dir = tempfile::tempdir().unwrap();
        let variables = Variables::at(dir.path());
        variables.set("Boot0000", b"not a load option").unwrap();
        variables.set("Boot0001", b"\x01\0\0").unwrap();
        variables
            .set("BootOrder", &load_option::encode_numbers(&[1, 0]))
            .unwrap();
        (dir, variables)
    }

    fn numbers(variables: &Variables, name: &str) -> Vec<u16> {
        load_option::decode_numbers(&variables.get(name).unwrap().unwrap_or_default())
    }

    #[test]
    fn the_default_boots_the_disk_next_and_keeps_the_network_first() {
        let (_dir, variables) = firmware();
        let ours = HashSet::from([Signature::Guid([7; 16])]);
        let written = apply(&variables, &option(7), &ours, BootOrder::Next).unwrap();
        assert_eq!(written.name, "Boot0002");
        assert!(written.removed.is_empty());
        assert_eq!(numbers(&variables, "BootOrder"), [1, 0, 2]);
        assert_eq!(numbers(&variables, "BootNext"), [2]);
        assert_eq!(
            variables.get("Boot0002").unwrap().unwrap(),
            option(7).encode()
        );
    }

    #[test]
    fn a_second_install_replaces_the_entries_for_the_disk_old_partitions() {
        let (_dir, variables) = firmware();
        // An entry for an earlier image's ESP, one for this image's, and another disk's.
        variables.set("Boot0004", &option(3).encode()).unwrap();
        variables.set("Boot0005", &option(7).encode()).unwrap();
        variables.set("Boot0006", &option(9).encode()).unwrap();
        variables
            .set("BootOrder", &load_option::encode_numbers(&[1, 4, 0, 5, 6]))
            .unwrap();
        variables
            .set("BootNext", &load_option::encode_numbers(&[5]))
            .unwrap();
        let ours = HashSet::from([Signature::Guid([3; 16]), Signature::Guid([7; 16])]);
        let written = apply(&variables, &option(7), &ours, BootOrder::Disk).unwrap();
        assert_eq!(written.name, "Boot0004");
        assert_eq!(written.removed, ["Boot0005"]);
        assert_eq!(variables.boot_entries().unwrap(), [0, 1, 4, 6]);
        assert_eq!(numbers(&variables, "BootOrder"), [4, 1, 0, 6]);
        assert_eq!(variables.get("BootNext").unwrap(), None);
        // Again: nothing more changes.
        apply(&variables, &option(7), &ours, BootOrder::Disk).unwrap();
        assert_eq!(variables.boot_entries().unwrap(), [0, 1, 4, 6]);
        assert_eq!(numbers(&variables, "BootOrder"), [4, 1, 0, 6]);
    }

    /// A FAT file system holding `files`, as an ESP does.
    fn esp(files: &[(&str, &[u8])]) -> Cursor<Vec<u8>> {
        let mut disk = Cursor::new(vec![0u8; 4 << 20]);
        fatfs::format_volume(&mut disk, fatfs::FormatVolumeOptions::new()).unwrap();
        {
            let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).unwrap();
            for (path, data) in files {
                let mut dir = fs.root_dir();
                let parts: Vec<&str> = path.split('/').collect();
                for part in &parts[..parts.len() - 1] {
                    dir = dir
                        .open_dir(part)
                        .or_else(|_| dir.create_dir(part))
                        .unwrap();
                }
                let mut file = dir.create_file(parts[parts.len() - 1]).unwrap();
                file.write_all(data).unwrap();
            }
        }
        disk.set_position(0);
        disk
    }

    fn utf16_with_bom(text: &str) -> Vec<u8> {
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        bytes
    }

    #[test]
    fn a_csv_is_read_in_ucs2_with_or_without_its_mark_or_in_utf8() {
        let line = "shimx64.efi,debian,,This is the boot entry for debian\n";
        let ucs2: Vec<u8> = line.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let expected = Loader {
            path: "\\EFI\\debian\\shimx64.efi".to_string(),
            label: "debian".to_string(),
            options: Vec::new(),
        };
        // Debian's shim-signed ships it as UCS-2 without a byte-order mark.
        assert_eq!(read_csv(&ucs2, "debian"), Some(expected.clone()));
        assert_eq!(
            read_csv(&utf16_with_bom(line), "debian"),
            Some(expected.clone())
        );
        assert_eq!(read_csv(line.as_bytes(), "debian"), Some(expected));
        assert_eq!(read_csv(b"shim\x01.efi,x", "debian"), None);
        assert_eq!(read_csv(b"..\\shim.efi,x", "debian"), None);
    }

    #[test]
    fn the_vendor_csv_comes_first_then_shim_then_grub_then_the_removable_path() {
        let arch = ARCH.to_lowercase();
        let csv = utf16_with_bom(&format!(
            "shim{arch}.efi,Debian GNU/Linux,\\grub{arch}.efi quiet,This is the boot entry for debian\r\n"
        ));
        let shim = format!("EFI/debian/shim{arch}.efi");
        let grub = format!("EFI/fedora/grub{arch}.efi");
        let removable = format!("EFI/BOOT/BOOT{ARCH}.EFI");
        let csv_name = format!("EFI/debian/BOOT{ARCH}.CSV");
        let found = find_loader(esp(&[
            (&removable, b"x"),
            (&grub, b"x"),
            (&shim, b"x"),
            (&csv_name, &csv),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(found.path, format!("\\EFI\\debian\\shim{arch}.efi"));
        assert_eq!(found.label, "Debian GNU/Linux");
        assert_eq!(
            found.options,
            format!("\\grub{arch}.efi quiet")
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<u8>>()
        );
        let found = find_loader(esp(&[(&removable, b"x"), (&grub, b"x"), (&shim, b"x")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.path.as_str(), found.label.as_str()),
            (&*format!("\\EFI\\debian\\shim{arch}.efi"), "debian")
        );
        let found = find_loader(esp(&[(&removable, b"x"), (&grub, b"x")]))
            .unwrap()
            .unwrap();
        assert_eq!(found.path, format!("\\EFI\\fedora\\grub{arch}.efi"));
        let found = find_loader(esp(&[(&removable, b"x")])).unwrap().unwrap();
        assert_eq!(found.path, format!("\\EFI\\BOOT\\BOOT{ARCH}.EFI"));
        assert_eq!(find_loader(esp(&[("README", b"x")])).unwrap(), None);
        assert!(find_loader(Cursor::new(vec![0u8; 1 << 20])).is_err());
    }
}
