//! The machine's disks as sysfs describes them: at boot there is no udev, so ocidd reads what
//! udev would (size, model, vendor, serial, WWN, rotational, transport, SCSI address), makes
//! the names udev would link under /dev/disk/by-id and /dev/disk/by-path, and shows them all in
//! one table: for `ocidd disks`, the prompt, and every error about which disk to write.
//! [`hints`] chooses a disk by what it is.

pub mod hints;
pub mod identity;

use std::fs;
use std::path::{Component, Path, PathBuf};

use identity::{Designator, ata_identity, designators, unit_serial, wwn_of_naa};

/// A disk, with everything a hint can match and the names udev would give it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disk {
    /// The kernel's name (`sda`, `nvme0n1`).
    pub name: String,
    pub size: u64,
    pub rotational: Option<bool>,
    /// How it is attached: nvme, sata, sas, scsi, virtio, usb, mmc.
    pub tran: Option<&'static str>,
    pub model: Option<String>,
    pub vendor: Option<String>,
    /// Its serial numbers, the one shown first (a SCSI disk has its unit serial number and
    /// the short form udev derives from its identifier); a hint may match any.
    pub serials: Vec<String>,
    pub wwn: Option<String>,
    pub wwn_with_extension: Option<String>,
    pub wwn_vendor_extension: Option<String>,
    /// The SCSI address, `host:channel:target:lun`.
    pub hctl: Option<String>,
    /// Names under /dev/disk/by-id.
    pub by_id: Vec<String>,
    /// Names under /dev/disk/by-path, the current form first.
    pub by_path: Vec<String>,
}

impl Disk {
    /// `/dev/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }

    /// The serial number to show.
    pub fn serial(&self) -> Option<&str> {
        self.serials.first().map(String::as_str)
    }

    /// The by-path name hints match, as Ironic's agent has it (`/dev/disk/by-path/…`).
    pub fn by_path(&self) -> Option<String> {
        self.by_path
            .first()
            .map(|name| format!("/dev/disk/by-path/{name}"))
    }

    /// Whether `path` names this disk: `/dev/sda` (or `sda`), or a name udev would link
    /// under /dev/disk/by-id or /dev/disk/by-path.
    pub fn is_named(&self, path: &Path) -> bool {
        let text = path.to_string_lossy();
        if let Some(id) = text.strip_prefix("/dev/disk/by-id/") {
            return self.by_id.iter().any(|name| name == id);
        }
        if let Some(by_path) = text.strip_prefix("/dev/disk/by-path/") {
            return self.by_path.iter().any(|name| name == by_path);
        }
        text.strip_prefix("/dev/").unwrap_or(&text) == self.name
    }

    /// The disk as lines of the table: `NAME=VALUE` pairs, each of which works as a
    /// `dd.match=` word.
    fn lines(&self) -> Vec<String> {
        // As a dd.match= word takes it back: what a kernel word cannot carry as it is ('"',
        // and '|' which separates alternatives, '%', controls) as %XX, and in quotes when
        // it has spaces.
        let quoted = |value: &str| {
            let escaped: String = value
                .chars()
                .map(|c| match c {
                    '"' | '|' | '%' => format!("%{:02X}", c as u32),
                    c if c.is_control() && (c as u32) < 0x80 => format!("%{:02X}", c as u32),
                    c => c.to_string(),
                })
                .collect();
            if escaped.contains(char::is_whitespace) {
                format!("\"{escaped}\"")
            } else {
                escaped
            }
        };
        let mut first = vec![format!("size={}", size_text(self.size))];
        let add = |line: &mut Vec<String>, name: &str, value: Option<&str>| {
            if let Some(value) = value {
                line.push(format!("{name}={}", quoted(value)));
            }
        };
        add(&mut first, "tran", self.tran);
        add(
            &mut first,
            "rotational",
            self.rotational.map(|r| if r { "1" } else { "0" }),
        );
        add(&mut first, "vendor", self.vendor.as_deref());
        add(&mut first, "model", self.model.as_deref());
        add(&mut first, "serial", self.serial());
        let mut second = Vec::new();
        add(&mut second, "wwn", self.wwn.as_deref());
        if self.wwn_with_extension != self.wwn {
            add(
                &mut second,
                "wwn_with_extension",
                self.wwn_with_extension.as_deref(),
            );
        }
        add(&mut second, "hctl", self.hctl.as_deref());
        add(&mut second, "by_path", self.by_path().as_deref());
        let mut lines = vec![format!("{:<14} {}", self.path().display(), first.join(" "))];
        if !second.is_empty() {
            lines.push(format!("{:<14} {}", "", second.join(" ")));
        }
        for id in &self.by_id {
            lines.push(format!("{:<14} /dev/disk/by-id/{id}", ""));
        }
        lines
    }
}

/// A size as `dd.match=size` takes it back: exact when it is whole in a unit.
fn size_text(size: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if size >= 1 << shift {
            let whole = size >> shift;
            return if whole << shift == size {
                format!("{whole}{unit}")
            } else {
                format!("{:.2}{unit}", size as f64 / (1u64 << shift) as f64)
            };
        }
    }
    size.to_string()
}

/// The table of `disks`, for the operator: a heading and each disk's lines.
pub fn table(disks: &[Disk]) -> Vec<String> {
    if disks.is_empty() {
        return vec!["no disks found in /sys/block".to_string()];
    }
    let mut lines = vec!["disks here (each NAME=VALUE works as a dd.match= word):".to_string()];
    for disk in disks {
        lines.extend(disk.lines().into_iter().map(|line| format!("  {line}")));
    }
    lines
}

/// The machine's disks: whole disks with a size, without loop, RAM, optical and virtual
/// devices, ordered by name.
pub fn list() -> Vec<Disk> {
    list_under(Path::new("/"))
}

/// The disks of the system whose sysfs is at `root/sys` (a captured tree in the tests).
pub fn list_under(root: &Path) -> Vec<Disk> {
    const SKIP: &[&str] = &["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"];
    let sys = root.join("sys");
    let Ok(entries) = fs::read_dir(sys.join("block")) else {
        return Vec::new();
    };
    let mut disks: Vec<Disk> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            if SKIP.iter().any(|prefix| name.starts_with(prefix)) {
                return None;
            }
            read_disk(&sys, &name)
        })
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    disks
}

/// A sysfs attribute, without its newline; `None` when absent or empty.
fn attribute(dir: &Path, name: &str) -> Option<String> {
    let value = fs::read_to_string(dir.join(name)).ok()?;
    let value = value.trim_end_matches('\n');
    (!value.trim().is_empty()).then(|| value.to_string())
}

/// An attribute, trimmed.
fn trimmed(dir: &Path, name: &str) -> Option<String> {
    attribute(dir, name).map(|v| v.trim().to_string())
}

fn read_disk(sys: &Path, name: &str) -> Option<Disk> {
    let block = fs::canonicalize(sys.join("block").join(name)).ok()?;
    let sectors: u64 = trimmed(&block, "size")?.parse().ok()?;
    if sectors == 0 {
        return None;
    }
    let devices = fs::canonicalize(sys.join("devices")).ok()?;
    // The device path below /sys/devices, as names.
    let chain: Vec<String> = block
        .strip_prefix(&devices)
        .ok()?
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_string_lossy().to_string()),
            _ => None,
        })
        .collect();
    let mut disk = Disk {
        name: name.to_string(),
        size: sectors * 512,
        rotational: trimmed(&block, "queue/rotational").map(|r| r == "1"),
        ..Disk::default()
    };
    let pci = chain.iter().rev().find(|c| is_pci_address(c)).cloned();
    if name.starts_with("nvme") {
        read_nvme(&mut disk, &block, pci.as_deref());
    } else if name.starts_with("vd") {
        disk.tran = Some("virtio");
        if let Some(serial) = trimmed(&block, "serial") {
            disk.by_id.push(format!("virtio-{}", udev_name(&serial)));
            disk.serials.push(serial);
        }
        if let Some(pci) = &pci {
            disk.by_path = vec![format!("pci-{pci}"), format!("virtio-pci-{pci}")];
        }
    } else if name.starts_with("mmcblk") {
        disk.tran = Some("mmc");
        let device = block.join("device");
        disk.model = trimmed(&device, "name");
        if let Some(serial) = trimmed(&device, "serial") {
            if let Some(model) = &disk.model {
                disk.by_id
                    .push(format!("mmc-{}_{}", udev_name(model), udev_name(&serial)));
            }
            disk.serials.push(serial);
        }
    } else if let Ok(device) = fs::canonicalize(block.join("device"))
        && device.join("scsi_device").exists()
    {
        read_scsi(&mut disk, &device, &chain, pci.as_deref(), sys);
    }
    Some(disk)
}

fn read_nvme(disk: &mut Disk, block: &Path, pci: Option<&str>) {
    disk.tran = Some("nvme");
    // Without multipathing the namespace sits below its controller (…/nvme/nvme0/nvme0n1);
    // with it, below the subsystem, which links its controllers.
    let parent = block.parent().unwrap_or(block);
    let controller = if parent.parent().and_then(Path::file_name) == Some("nvme".as_ref()) {
        Some(parent.to_path_buf())
    } else {
        fs::read_dir(parent).ok().and_then(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("nvme"))
                .filter_map(|e| fs::canonicalize(e.path()).ok())
                .find(|c| c.join("serial").exists())
        })
    };
    let controller = controller.unwrap_or_else(|| parent.to_path_buf());
    disk.model = trimmed(&controller, "model");
    let nsid = trimmed(block, "nsid");
    if let Some(serial) = trimmed(&controller, "serial") {
        if let Some(model) = &disk.model {
            let id = format!("{}_{}", udev_name(model), udev_name(&serial));
            if let Some(nsid) = &nsid {
                disk.by_id.push(format!("nvme-{id}_{nsid}"));
            }
            disk.by_id.push(format!("nvme-{id}"));
        }
        disk.serials.push(serial);
    }
    if let Some(wwid) = trimmed(block, "wwid") {
        disk.by_id.push(format!("nvme-{}", udev_name(&wwid)));
        disk.wwn = Some(wwid);
    }
    // The controller's PCI address, whichever path the namespace has.
    let pci = controller
        .ancestors()
        .filter_map(|a| a.file_name())
        .map(|n| n.to_string_lossy().to_string())
        .find(|n| is_pci_address(n))
        .or(pci.map(str::to_string));
    if let (Some(pci), Some(nsid)) = (pci, nsid) {
        disk.by_path.push(format!("pci-{pci}-nvme-{nsid}"));
    }
}

fn read_scsi(disk: &mut Disk, device: &Path, chain: &[String], pci: Option<&str>, sys: &Path) {
    let hctl = device
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let parts: Vec<u32> = hctl.split(':').filter_map(|n| n.parse().ok()).collect();
    disk.hctl = Some(hctl.clone());
    // The raw INQUIRY fields (vendor 8, model 16 characters) and their trimmed forms.
    let raw_vendor = attribute(device, "vendor").unwrap_or_default();
    let raw_model = attribute(device, "model").unwrap_or_default();
    disk.vendor = Some(raw_vendor.trim().to_string()).filter(|v| !v.is_empty());
    disk.model = Some(raw_model.trim().to_string()).filter(|m| !m.is_empty());
    let page80 = fs::read(device.join("vpd_pg80"))
        .ok()
        .and_then(|p| unit_serial(&p));
    let page83 = fs::read(device.join("vpd_pg83"))
        .map(|p| designators(&p))
        .unwrap_or_default();
    let naa = page83
        .iter()
        .filter(|d| d.kind == 3)
        .max_by_key(|d| d.id.len());
    if let Some(wwn) = naa.and_then(|d| wwn_of_naa(&d.id)) {
        disk.wwn = Some(wwn.wwn);
        disk.wwn_with_extension = Some(wwn.with_extension);
        disk.wwn_vendor_extension = wwn.vendor_extension;
    }
    let position = |prefix: &str| chain.iter().position(|c| c.starts_with(prefix));
    if let Some(port) = chain.iter().find_map(|c| ata_port(c)) {
        // libata: udev's ata_id reads IDENTIFY DEVICE, which page 0x89 carries.
        disk.tran = Some("sata");
        let ata = fs::read(device.join("vpd_pg89"))
            .ok()
            .and_then(|p| ata_identity(&p))
            .unwrap_or_default();
        let model = ata.model.or(disk.model.clone());
        let serial = ata.serial.or(page80);
        if let Some(model) = &model {
            let id = match &serial {
                Some(serial) => format!("{}_{}", udev_name(model), udev_name(serial)),
                None => udev_name(model),
            };
            disk.by_id.push(format!("ata-{id}"));
        }
        if let Some(wwn) = ata.wwn {
            disk.wwn = Some(wwn.clone());
            disk.wwn_with_extension = Some(wwn);
            disk.wwn_vendor_extension = None;
        }
        if let Some(wwn) = &disk.wwn_with_extension {
            disk.by_id.push(format!("wwn-{wwn}"));
        }
        disk.model = model;
        disk.serials.extend(serial);
        if let Some(pci) = pci {
            disk.by_path = vec![
                format!("pci-{pci}-ata-{port}.0"),
                format!("pci-{pci}-ata-{port}"),
            ];
        }
    } else if let Some(at) = position("usb").filter(|&at| is_usb_bus(&chain[at])) {
        // usb-storage: udev's usb_id names it by INQUIRY and the USB serial number.
        disk.tran = Some("usb");
        let interface = chain.iter().skip(at + 1).find(|c| c.contains(':'));
        let usb_device = interface.and_then(|i| i.split(':').next());
        let usb_serial = usb_device.and_then(|d| {
            let dir = sys.join("devices").join(chain[..=at].join("/"));
            let dir = chain[at + 1..]
                .iter()
                .take_while(|c| c.as_str() != d)
                .fold(dir, |dir, c| dir.join(c))
                .join(d);
            trimmed(&dir, "serial")
        });
        let mut id = format!("{}_{}", udev_name(&raw_vendor), udev_name(&raw_model));
        if let Some(serial) = &usb_serial {
            id = format!("{id}_{}", udev_name(serial));
        }
        if let [_, _, target, lun] = parts[..] {
            disk.by_id.push(format!("usb-{id}-{target}:{lun}"));
        }
        disk.serials.extend(usb_serial.or(page80));
        if let (Some(pci), Some(interface), [_, channel, target, lun]) =
            (pci, interface, &parts[..])
        {
            let port = interface
                .split_once('-')
                .map_or(interface.as_str(), |(_, p)| p);
            disk.by_path = vec![format!(
                "pci-{pci}-usb-0:{port}-scsi-0:{channel}:{target}:{lun}"
            )];
        }
    } else {
        let sas = position("end_device-");
        disk.tran = Some(if sas.is_some() { "sas" } else { "scsi" });
        // scsi_id's identifier: the best designator of page 0x83, else the unit serial.
        let id = scsi_id(&page83, &raw_vendor, &raw_model, page80.as_deref());
        if let Some((serial, short)) = &id {
            disk.by_id.push(format!("scsi-{serial}"));
            disk.serials.extend(page80.clone());
            if !disk.serials.contains(short) {
                disk.serials.push(short.clone());
            }
        } else {
            disk.serials.extend(page80);
        }
        if let Some(wwn) = &disk.wwn_with_extension {
            disk.by_id.push(format!("wwn-{wwn}"));
        }
        disk.by_path = match (pci, sas, &parts[..]) {
            (Some(pci), Some(at), [_, _, _, lun]) => {
                let end_device = sys.join("devices").join(chain[..=at].join("/"));
                let phy = fs::read_dir(end_device.join("sas_device"))
                    .ok()
                    .and_then(|mut entries| entries.next())
                    .and_then(Result::ok)
                    .and_then(|entry| trimmed(&entry.path(), "phy_identifier"));
                phy.map(|phy| vec![format!("pci-{pci}-sas-phy{phy}-lun-{lun}")])
                    .unwrap_or_default()
            }
            (Some(pci), None, [host, channel, target, lun]) => {
                // Hosts are numbered from the first one on the same controller.
                let base = lowest_host(sys, chain, *host);
                vec![format!(
                    "pci-{pci}-scsi-{}:{channel}:{target}:{lun}",
                    host - base
                )]
            }
            _ => Vec::new(),
        };
    }
}

/// udev's `ID_SERIAL` and `ID_SERIAL_SHORT` as scsi_id makes them: the first designator by
/// kind (NAA, EUI-64, T10, vendor specific; the type's digit first), or the unit serial
/// number behind an `S`.
fn scsi_id(
    page83: &[Designator],
    vendor: &str,
    model: &str,
    page80: Option<&str>,
) -> Option<(String, String)> {
    for kind in [3, 2, 1, 0] {
        let Some(designator) = page83.iter().find(|d| d.kind == kind) else {
            continue;
        };
        let serial = match kind {
            // Vendor-specific identifiers are unique only with the vendor and model.
            0 => format!(
                "0{}",
                udev_name(&format!("{vendor}{model}{}", designator.id))
            ),
            _ => format!("{kind}{}", udev_name(&designator.id)),
        };
        return Some((serial, udev_name(&designator.id)));
    }
    let page80 = page80?;
    Some((
        format!("S{}", udev_name(&format!("{vendor}{model}{page80}"))),
        udev_name(page80),
    ))
}

/// The lowest `hostN` number among the SCSI hosts on the controller of `host`.
fn lowest_host(sys: &Path, chain: &[String], host: u32) -> u32 {
    let Some(at) = chain.iter().position(|c| c == &format!("host{host}")) else {
        return host;
    };
    let parent = sys.join("devices").join(chain[..at].join("/"));
    fs::read_dir(parent)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix("host")
                        .and_then(|n| n.parse().ok())
                })
                .min()
                .unwrap_or(host)
        })
        .unwrap_or(host)
}

/// udev's names: whitespace runs become one `_`, trimmed; characters outside
/// `0-9A-Za-z#+-.:=@_` become `_`.
pub fn udev_name(text: &str) -> String {
    let mut name = String::new();
    let mut in_space = false;
    for c in text.trim().chars() {
        if c.is_whitespace() {
            if !in_space {
                name.push('_');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        name.push(if c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) {
            c
        } else {
            '_'
        });
    }
    name
}

fn is_pci_address(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && name
            .bytes()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// The port number of a libata port directory (`ata3` → 3).
fn ata_port(name: &str) -> Option<u32> {
    name.strip_prefix("ata")?.parse().ok()
}

/// Whether a directory is a USB bus (`usb2`).
fn is_usb_bus(name: &str) -> bool {
    name.strip_prefix("usb")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs/qemu-q35")
    }

    /// udev's properties per disk, as `udevadm info` printed them in the captured VM.
    fn udev() -> BTreeMap<String, BTreeMap<String, String>> {
        let text = fs::read_to_string(fixture().join("udev.txt")).unwrap();
        let mut disks = BTreeMap::new();
        let mut current: Option<(String, BTreeMap<String, String>)> = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("UDEV-BEGIN ") {
                current = Some((name.to_string(), BTreeMap::new()));
            } else if line == "UDEV-END" {
                if let Some((name, properties)) = current.take() {
                    disks.insert(name, properties);
                }
            } else if let (Some((_, properties)), Some((key, value))) =
                (current.as_mut(), line.split_once('='))
            {
                properties.insert(key.to_string(), value.to_string());
            }
        }
        disks
    }

    #[test]
    fn names_are_those_udev_links() {
        let disks = list_under(&fixture());
        let udev = udev();
        assert_eq!(disks.len(), udev.len());
        for disk in &disks {
            let properties = &udev[&disk.name];
            let mut expected: Vec<String> = properties["DEVLINKS"]
                .split(' ')
                .filter(|l| !l.contains("/by-diskseq/"))
                .map(str::to_string)
                .collect();
            expected.sort();
            let mut ours: Vec<String> = disk
                .by_id
                .iter()
                .map(|n| format!("/dev/disk/by-id/{n}"))
                .chain(
                    disk.by_path
                        .iter()
                        .map(|n| format!("/dev/disk/by-path/{n}")),
                )
                .collect();
            ours.sort();
            assert_eq!(ours, expected, "{}", disk.name);
            if let Some(path) = properties.get("ID_PATH") {
                assert_eq!(disk.by_path.first(), Some(path), "{}", disk.name);
            }
        }
    }

    #[test]
    fn attributes_are_those_udev_reads() {
        let disks = list_under(&fixture());
        let udev = udev();
        for disk in &disks {
            let properties = &udev[&disk.name];
            if let Some(wwn) = properties.get("ID_WWN") {
                assert_eq!(disk.wwn.as_ref(), Some(wwn), "{}", disk.name);
            }
            if let Some(wwn) = properties.get("ID_WWN_WITH_EXTENSION") {
                assert_eq!(disk.wwn_with_extension.as_ref(), Some(wwn), "{}", disk.name);
            }
            if let Some(short) = properties.get("ID_SERIAL_SHORT") {
                assert!(
                    disk.serials.contains(short),
                    "{}: {:?}",
                    disk.name,
                    disk.serials
                );
            }
            if let Some(serial) = properties.get("ID_SCSI_SERIAL") {
                assert_eq!(disk.serial(), Some(serial.as_str()), "{}", disk.name);
            }
            if let Some(model) = properties.get("ID_MODEL") {
                let ours = disk.model.as_deref().map(udev_name);
                assert_eq!(ours, Some(udev_name(model)), "{}", disk.name);
            }
        }
        let by_name = |name: &str| disks.iter().find(|d| d.name == name).unwrap();
        let tran: Vec<(&str, &str)> = disks
            .iter()
            .map(|d| (d.name.as_str(), d.tran.unwrap_or("-")))
            .collect();
        assert_eq!(
            tran,
            [
                ("mmcblk0", "mmc"),
                ("nvme0n1", "nvme"),
                ("nvme1n1", "nvme"),
                ("sda", "scsi"),
                ("sdb", "scsi"),
                ("sdc", "sata"),
                ("sdd", "sata"),
                ("sde", "sas"),
                ("sdf", "usb"),
                ("vda", "virtio"),
                ("vdb", "virtio"),
            ]
        );
        // The ATA model comes whole from IDENTIFY; SCSI's INQUIRY cuts it at 16.
        assert_eq!(
            by_name("sdc").model.as_deref(),
            Some("Samsung SSD 870 EVO 1TB")
        );
        assert_eq!(by_name("sdc").vendor.as_deref(), Some("ATA"));
        assert_eq!(by_name("sdc").rotational, Some(false));
        assert_eq!(by_name("sdb").hctl.as_deref(), Some("0:0:0:0"));
        assert_eq!(by_name("sdb").serial(), Some("scsi-serial-1"));
        assert_eq!(by_name("vda").serial(), Some("virtio-disk-1"));
        assert_eq!(by_name("vdb").serials, Vec::<String>::new());
        assert_eq!(by_name("nvme0n1").serial(), Some("nvme-serial-1"));
        assert_eq!(by_name("mmcblk0").serial(), Some("0xdeadbeef"));
        assert_eq!(by_name("vda").size, 256 << 20);
        assert_eq!(by_name("sda").serial(), Some("d10"));
    }

    #[test]
    fn names_resolve_to_their_disk() {
        let disks = list_under(&fixture());
        let named = |path: &str| {
            disks
                .iter()
                .filter(|d| d.is_named(Path::new(path)))
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(named("/dev/sdc"), ["sdc"]);
        assert_eq!(named("sdc"), ["sdc"]);
        assert_eq!(named("/dev/disk/by-id/wwn-0x5000c50015ea71ac"), ["sdc"]);
        assert_eq!(
            named("/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_nvme-serial-2"),
            ["nvme1n1"]
        );
        assert_eq!(named("/dev/disk/by-path/pci-0000:00:02.0"), ["vda"]);
        assert!(named("/dev/disk/by-id/ata-missing").is_empty());
    }

    #[test]
    fn the_table_shows_each_disk_as_match_words() {
        let disks = list_under(&fixture());
        let table = table(&disks).join("\n");
        assert!(table.contains("/dev/sdc       size=1.25G tran=sata rotational=0 vendor=ATA model=\"Samsung SSD 870 EVO 1TB\" serial=sata-serial-1"), "{table}");
        assert!(table.contains("wwn=0x5000c50015ea71ac hctl=3:0:0:0 by_path=/dev/disk/by-path/pci-0000:00:1f.2-ata-3.0"), "{table}");
        assert!(
            table.contains("/dev/disk/by-id/ata-Samsung_SSD_870_EVO_1TB_sata-serial-1"),
            "{table}"
        );
        assert_eq!(size_text(1536 << 20), "1.50G");
        assert_eq!(size_text(64 << 20), "64M");
    }

    /// A value with quotes, '|' or '%' is printed so that the word pasted onto a kernel
    /// command line matches the disk again.
    #[test]
    fn values_that_a_kernel_word_cannot_carry_as_they_are() {
        let mut disk = list_under(&fixture()).remove(0);
        disk.model = Some("Fast \"Pro\" 50% | x".to_string());
        let line = disk.lines().remove(0);
        assert!(
            line.contains(r#"model="Fast %22Pro%22 50%25 %7C x""#),
            "{line}"
        );
        let start = line.find("model=").unwrap();
        let end = start
            + line[start..]
                .find("\" ")
                .map_or(line.len() - start, |i| i + 1);
        let word = format!("dd.match={}", &line[start..end]);
        let words = crate::cmdline::split_kernel_cmdline(word.as_bytes());
        assert_eq!(words.len(), 1, "{words:?}");
        let value = String::from_utf8(words[0].clone()).unwrap();
        let hint = hints::parse_match(value.strip_prefix("dd.match=").unwrap()).unwrap();
        assert!(hint.matches(&disk), "{value}");
    }

    /// An NVMe namespace with native multipathing (below its subsystem, which links the
    /// controller) and an EUI-64.
    #[test]
    fn nvme_behind_a_subsystem_with_an_eui() {
        use std::os::unix::fs::symlink;
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys");
        let subsystem = sys.join("devices/virtual/nvme-subsystem/nvme-subsys0");
        let namespace = subsystem.join("nvme0n1");
        let controller = sys.join("devices/pci0000:00/0000:00:04.0/nvme/nvme0");
        for dir in [
            namespace.join("queue"),
            controller.clone(),
            sys.join("block"),
        ] {
            fs::create_dir_all(dir).unwrap();
        }
        for (file, text) in [
            (namespace.join("size"), "2097152\n"),
            (namespace.join("nsid"), "1\n"),
            (namespace.join("wwid"), "eui.0011223344556677\n"),
            (namespace.join("queue/rotational"), "0\n"),
            (
                controller.join("model"),
                "Samsung SSD 980 PRO 1TB                 \n",
            ),
            (controller.join("serial"), "S5GXNX0T123456A     \n"),
        ] {
            fs::write(file, text).unwrap();
        }
        symlink(
            "../../../pci0000:00/0000:00:04.0/nvme/nvme0",
            subsystem.join("nvme0"),
        )
        .unwrap();
        symlink(
            "../devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1",
            sys.join("block/nvme0n1"),
        )
        .unwrap();
        let disks = list_under(root.path());
        let [disk] = &disks[..] else {
            panic!("{disks:?}")
        };
        assert_eq!(disk.size, 1 << 30);
        assert_eq!(disk.serial(), Some("S5GXNX0T123456A"));
        assert_eq!(disk.model.as_deref(), Some("Samsung SSD 980 PRO 1TB"));
        assert_eq!(disk.wwn.as_deref(), Some("eui.0011223344556677"));
        assert_eq!(
            disk.by_id,
            [
                "nvme-Samsung_SSD_980_PRO_1TB_S5GXNX0T123456A_1",
                "nvme-Samsung_SSD_980_PRO_1TB_S5GXNX0T123456A",
                "nvme-eui.0011223344556677"
            ]
        );
        assert_eq!(disk.by_path, ["pci-0000:00:04.0-nvme-1"]);
    }

    #[test]
    fn udev_names() {
        assert_eq!(udev_name("  QEMU NVMe Ctrl   "), "QEMU_NVMe_Ctrl");
        assert_eq!(udev_name("QEMU!"), "QEMU_");
        assert_eq!(udev_name("a/b\\c"), "a_b_c");
    }
}
