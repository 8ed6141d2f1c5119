//! One status event as receivers get it: the field names of curtin's reporting events (which
//! MAAS consumes), plus which machine, image and disk it is about and how many bytes moved.

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The phases of an install, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Choose the target disk and open it (first: a wrong disk fails without the network).
    SelectDisk,
    /// Find the image (the manifest, the platform's entry, the chunk index) and check that
    /// it fits onto the disk.
    Resolve,
    /// Fetch, decompress and write the image, but for its first and last MiB.
    Write,
    /// The blob matched its digest.
    Verify,
    /// Write the held-back first and last MiB, sync, reread the partition table.
    Finalize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Start,
    Progress,
    Finish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Outcome {
    Success,
    Fail,
}

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub origin: &'static str,
    pub event_type: EventType,
    pub name: Phase,
    pub description: String,
    /// Seconds since the epoch, fractional, as curtin sends it.
    pub timestamp: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Outcome>,
    /// The exit status ocidd ends with (on `finish`; 0 for success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub node: Node,
    pub image: Image,
    pub disk: Disk,
    pub bytes_fetched: u64,
    pub bytes_written: u64,
    /// The compressed bytes to fetch, when known.
    pub bytes_total: Option<u64>,
    /// With `dd.delta`: chunks in the image, reused from the target (and their bytes),
    /// fetched, zeroed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<crate::progress::DeltaCounts>,
}

/// Which machine this is: what the firmware says (DMI) and its network interfaces' MACs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Node {
    pub product_uuid: Option<String>,
    pub product_serial: Option<String>,
    pub sys_vendor: Option<String>,
    pub product_name: Option<String>,
    pub macs: Vec<String>,
    /// The addresses /init configured (`ADDR/PREFIX`), IPv4 and IPv6.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// The addresses /init configured, for every event after.
static ADDRESSES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Records the addresses /init configured, once.
pub fn note_addresses(addresses: Vec<String>) {
    let _ = ADDRESSES.set(addresses);
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Image {
    pub reference: Option<String>,
    /// The digest of the manifest the reference resolved to (what a signature or a pin names).
    pub digest: Option<String>,
    /// The digest of the disk-image blob.
    pub blob: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Disk {
    pub path: Option<String>,
    pub serial: Option<String>,
    pub size: Option<u64>,
}

/// Now, in seconds since the epoch.
pub fn timestamp() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Node {
    /// This machine, from sysfs.
    pub fn this_machine() -> Node {
        Node::under(Path::new("/sys"))
    }

    /// The machine a sysfs tree at `sys` describes.
    pub fn under(sys: &Path) -> Node {
        let dmi = |name: &str| {
            fs::read_to_string(sys.join("class/dmi/id").join(name))
                .ok()
                .map(|text| text.trim().to_string())
                .filter(|text| !text.is_empty())
        };
        Node {
            product_uuid: dmi("product_uuid"),
            product_serial: dmi("product_serial"),
            sys_vendor: dmi("sys_vendor"),
            product_name: dmi("product_name"),
            macs: macs(&sys.join("class/net")),
            addresses: ADDRESSES.get().cloned().unwrap_or_default(),
        }
    }
}

/// The MAC addresses of the network interfaces under `class_net`, sorted by interface name,
/// leaving out loopback and interfaces without one.
fn macs(class_net: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(class_net) else {
        return Vec::new();
    };
    let mut interfaces: Vec<(String, String)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mac = fs::read_to_string(entry.path().join("address")).ok()?;
            let mac = mac.trim().to_ascii_lowercase();
            // Loopback, tunnels and the like have no address of their own.
            let real = mac.len() == 17 && mac != "00:00:00:00:00:00";
            real.then_some((name, mac))
        })
        .collect();
    interfaces.sort();
    let mut macs: Vec<String> = interfaces.into_iter().map(|(_, mac)| mac).collect();
    macs.dedup();
    macs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dmi_and_macs_from_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        let dmi = sys.path().join("class/dmi/id");
        fs::create_dir_all(&dmi).unwrap();
        fs::write(dmi.join("product_uuid"), "4c4c4544-0042\n").unwrap();
        fs::write(dmi.join("sys_vendor"), "QEMU\n").unwrap();
        fs::write(dmi.join("product_serial"), "\n").unwrap();
        for (name, mac) in [
            ("lo", "00:00:00:00:00:00"),
            ("eth1", "52:54:00:AA:BB:02"),
            ("eth0", "52:54:00:aa:bb:01"),
            ("sit0", "00:00:00:00"),
        ] {
            let dir = sys.path().join("class/net").join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
        }
        let node = Node::under(sys.path());
        assert_eq!(node.product_uuid.as_deref(), Some("4c4c4544-0042"));
        assert_eq!(node.sys_vendor.as_deref(), Some("QEMU"));
        assert_eq!(node.product_serial, None);
        assert_eq!(node.product_name, None);
        assert_eq!(node.macs, ["52:54:00:aa:bb:01", "52:54:00:aa:bb:02"]);
    }

    #[test]
    fn events_carry_curtins_field_names() {
        let event = Event {
            origin: "ocidd",
            event_type: EventType::Finish,
            name: Phase::SelectDisk,
            description: "choosing the disk".into(),
            timestamp: 1.5,
            result: Some(Outcome::Fail),
            exit_code: Some(5),
            error: Some("no disk matched".into()),
            node: Node::default(),
            image: Image::default(),
            disk: Disk::default(),
            bytes_fetched: 0,
            bytes_written: 0,
            bytes_total: None,
            chunks: None,
        };
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(json["origin"], "ocidd");
        assert_eq!(json["event_type"], "finish");
        assert_eq!(json["name"], "select-disk");
        assert_eq!(json["result"], "FAIL");
        assert_eq!(json["exit_code"], 5);
        assert_eq!(json["timestamp"], 1.5);
        assert!(json["node"]["macs"].is_array());
        let start = Event {
            event_type: EventType::Start,
            result: None,
            exit_code: None,
            error: None,
            ..event
        };
        let json: serde_json::Value = serde_json::to_value(&start).unwrap();
        assert!(json.get("result").is_none() && json.get("exit_code").is_none());
    }
}
