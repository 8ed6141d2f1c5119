//! What identifies a disk, read from the pages sysfs keeps of it: the SCSI VPD pages 0x80
//! (unit serial number) and 0x83 (device identification: NAA WWNs, vendor ids), and, for ATA
//! disks, page 0x89 (ATA information), which holds the drive's whole IDENTIFY DEVICE data: the
//! full model and serial and the WWN that udev's `ata_id` reads with a pass-through command.

/// A designator of VPD page 0x83 that names the logical unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Designator {
    /// SPC's designator type: 0 vendor specific, 1 T10 vendor id, 2 EUI-64, 3 NAA.
    pub kind: u8,
    /// The identifier: hex for binary designators, text for ASCII ones.
    pub id: String,
}

/// The logical unit's designators from VPD page 0x83, in page order.
pub fn designators(page: &[u8]) -> Vec<Designator> {
    let mut found = Vec::new();
    if page.len() < 4 || page[1] != 0x83 {
        return found;
    }
    let end = (4 + usize::from(u16::from_be_bytes([page[2], page[3]]))).min(page.len());
    let mut at = 4;
    while at + 4 <= end {
        let code_set = page[at] & 0x0f;
        let association = (page[at + 1] >> 4) & 0x03;
        let kind = page[at + 1] & 0x0f;
        let length = usize::from(page[at + 3]);
        let Some(data) = page.get(at + 4..at + 4 + length) else {
            break;
        };
        // Only what names the logical unit itself, not its port or target.
        if association == 0 {
            let id = match code_set {
                1 => hex(data),
                _ => String::from_utf8_lossy(data)
                    .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                    .to_string(),
            };
            if !id.is_empty() {
                found.push(Designator { kind, id });
            }
        }
        at += 4 + length;
    }
    found
}

/// The unit serial number of VPD page 0x80.
pub fn unit_serial(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x80 {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([page[2], page[3]]));
    let data = page.get(4..(4 + length).min(page.len()))?;
    text(data)
}

/// What an ATA drive says of itself in IDENTIFY DEVICE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AtaIdentity {
    pub model: Option<String>,
    pub serial: Option<String>,
    /// The world wide name, `0x` and 16 hex digits.
    pub wwn: Option<String>,
    /// Whether the medium spins (`Some(false)` for solid state).
    pub rotational: Option<bool>,
}

/// Reads the IDENTIFY DEVICE data that VPD page 0x89 carries from byte 60.
pub fn ata_identity(page: &[u8]) -> Option<AtaIdentity> {
    if page.len() < 60 + 512 || page[1] != 0x89 {
        return None;
    }
    let identify = &page[60..60 + 512];
    // ATA strings are 16-bit words, each with its two characters swapped.
    let string = |first_word: usize, words: usize| -> Option<String> {
        let mut bytes = Vec::with_capacity(words * 2);
        for word in identify[first_word * 2..(first_word + words) * 2].chunks(2) {
            bytes.extend([word[1], word[0]]);
        }
        text(&bytes)
    };
    let word = |n: usize| u16::from_le_bytes([identify[n * 2], identify[n * 2 + 1]]);
    let wwn = (108..112).fold(0u64, |wwn, n| (wwn << 16) | u64::from(word(n)));
    // Word 217: 1 for a non-rotating medium, a speed in rpm for a disk, 0 if not reported.
    let rotational = match word(217) {
        0 | 0xffff => None,
        1 => Some(false),
        _ => Some(true),
    };
    Some(AtaIdentity {
        model: string(27, 20),
        serial: string(10, 10),
        wwn: (wwn != 0).then(|| format!("0x{wwn:016x}")),
        rotational,
    })
}

/// A WWN as udev writes it: `0x` and the NAA identifier's first 16 hex digits, the vendor
/// extension (the rest of a 32-digit NAA 6 identifier), and the two together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wwn {
    pub wwn: String,
    pub with_extension: String,
    pub vendor_extension: Option<String>,
}

/// The WWN of an NAA identifier in hex (`5000c500a1b2c3d4`, or 32 digits).
pub fn wwn_of_naa(naa: &str) -> Option<Wwn> {
    let naa = naa.to_ascii_lowercase();
    if !(naa.len() == 16 || naa.len() == 32) || !naa.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(Wwn {
        wwn: format!("0x{}", &naa[..16]),
        with_extension: format!("0x{naa}"),
        vendor_extension: (naa.len() == 32).then(|| format!("0x{}", &naa[16..])),
    })
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Printable text, trimmed; `None` when nothing is left.
fn text(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vpd_pages() {
        // A NAA designator (binary), a vendor-specific one (ASCII), and one for the target
        // port (association 1), which does not name the unit.
        let page = [
            0x00, 0x83, 0x00, 0x1f, //
            0x01, 0x03, 0x00, 0x08, 0x50, 0x00, 0xc5, 0x00, 0xa1, 0xb2, 0xc3, 0xd4, //
            0x02, 0x00, 0x00, 0x03, b'd', b'1', b'0', //
            0x01, 0x13, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        assert_eq!(
            designators(&page),
            [
                Designator {
                    kind: 3,
                    id: "5000c500a1b2c3d4".into()
                },
                Designator {
                    kind: 0,
                    id: "d10".into()
                }
            ]
        );
        assert_eq!(designators(&page[..10]), []);
        let serial = [
            0x00, 0x80, 0x00, 0x08, b' ', b'a', b'b', b'c', b' ', b' ', 0, 0,
        ];
        assert_eq!(unit_serial(&serial).as_deref(), Some("abc"));
        assert_eq!(unit_serial(&[0, 0x80, 0, 2, b' ', b' ']), None);
    }

    #[test]
    fn wwns_from_naa() {
        let short = wwn_of_naa("5000C500A1B2C3D4").unwrap();
        assert_eq!(short.wwn, "0x5000c500a1b2c3d4");
        assert_eq!(short.with_extension, "0x5000c500a1b2c3d4");
        assert_eq!(short.vendor_extension, None);
        let long = wwn_of_naa("600508b1001c5d8e0000000000001234").unwrap();
        assert_eq!(long.wwn, "0x600508b1001c5d8e");
        assert_eq!(long.vendor_extension.as_deref(), Some("0x0000000000001234"));
        assert_eq!(wwn_of_naa("t10.ATA"), None);
    }
}
