//! What a seed URL's placeholders stand for on this machine, read from sysfs and procfs.

use std::fs;
use std::path::Path;

use anyhow::{Result, anyhow};

use crate::cmdline::seed::Placeholder;
use crate::error::{Failure, classified};

/// The value of `placeholder` here, for the word `word`; an error names what the machine
/// lacks.
pub fn value(placeholder: Placeholder, word: &str) -> Result<String> {
    let found = match placeholder {
        Placeholder::Mac => mac(),
        Placeholder::Uuid => dmi("product_uuid").map(|uuid| uuid.to_ascii_lowercase()),
        Placeholder::Serial => dmi("product_serial"),
    };
    found.ok_or_else(|| {
        let what = match placeholder {
            Placeholder::Mac => "a network interface with a MAC address",
            Placeholder::Uuid => "a DMI system UUID (/sys/class/dmi/id/product_uuid)",
            Placeholder::Serial => "a DMI serial number (/sys/class/dmi/id/product_serial)",
        };
        classified(
            Failure::Usage,
            anyhow!(
                "{word}= names {}, but this machine has no {what}",
                placeholder.name()
            ),
        )
    })
}

/// A DMI attribute, unless it is empty or a vendor's filler.
fn dmi(name: &str) -> Option<String> {
    let text = fs::read_to_string(Path::new("/sys/class/dmi/id").join(name)).ok()?;
    let text = text.trim();
    let filler = [
        "",
        "None",
        "Not Specified",
        "To Be Filled By O.E.M.",
        "Default string",
    ];
    (!filler.contains(&text)).then(|| text.to_string())
}

/// The MAC of the interface the default route leaves by (IPv4, then IPv6), else of the
/// first network device by name: the one a provisioning system knows the machine by.
fn mac() -> Option<String> {
    let interface = default_route_interface().or_else(first_device)?;
    let address =
        fs::read_to_string(Path::new("/sys/class/net").join(interface).join("address")).ok()?;
    let address = address.trim();
    (!address.is_empty() && address != "00:00:00:00:00:00").then(|| address.to_string())
}

fn default_route_interface() -> Option<String> {
    let ipv4 = fs::read_to_string("/proc/net/route").unwrap_or_default();
    let from_ipv4 = ipv4.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"00000000") && fields.get(7) == Some(&"00000000"))
            .then(|| fields[0].to_string())
    });
    from_ipv4.or_else(|| {
        let ipv6 = fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
        ipv6.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let default = fields.first().is_some_and(|d| d.bytes().all(|b| b == b'0'))
                && fields.get(1) == Some(&"00");
            let interface = fields.get(9).copied().filter(|i| *i != "lo")?;
            default.then(|| interface.to_string())
        })
    })
}

/// The first interface by name that is a device (not loopback, a bridge or a tunnel).
fn first_device() -> Option<String> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .filter(|entry| entry.path().join("device").exists())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().next()
}
