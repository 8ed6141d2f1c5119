//! `EFI_LOAD_OPTION`, the value of a `Boot####` variable (UEFI 2.10, 3.1.3), and the two
//! device-path nodes an entry for a disk's loader needs: a hard drive's partition and a file
//! on it (10.3.5.1, 10.3.5.4).
//!
//! Written by hand: a load option is a few little-endian fields and UCS-2 strings, and the
//! crates that model them (efivar, efibootmgr bindings) bring a registry of their own or C
//! libraries an initramfs does not have.

/// `LOAD_OPTION_ACTIVE`: the firmware may boot it.
const ACTIVE: u32 = 0x0000_0001;
/// Device path node types and subtypes.
const MEDIA: u8 = 0x04;
const HARD_DRIVE: u8 = 0x01;
const FILE_PATH: u8 = 0x04;
const END: u8 = 0x7F;
const END_ENTIRE: u8 = 0xFF;
/// A hard drive node's length, and its partition format and signature type for a GPT.
const HARD_DRIVE_LEN: usize = 42;
const FORMAT_GPT: u8 = 0x02;
const SIGNATURE_GUID: u8 = 0x02;
const FORMAT_MBR: u8 = 0x01;
const SIGNATURE_MBR: u8 = 0x01;

/// A partition as a hard drive node names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1 for the first entry of the table.
    pub number: u32,
    pub start_lba: u64,
    pub size_lba: u64,
    pub signature: Signature,
}

/// What identifies a partition's disk or the partition itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signature {
    /// A GPT partition's unique GUID, as the table stores it.
    Guid([u8; 16]),
    /// An MBR disk's 32-bit signature.
    Mbr(u32),
}

/// A boot entry: what the firmware shows, the file it starts, and what it passes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOption {
    pub description: String,
    pub partition: Partition,
    /// `\EFI\debian\shimx64.efi`.
    pub path: String,
    /// Passed to the loader (shim takes its second stage's name and arguments here).
    pub optional_data: Vec<u8>,
}

impl LoadOption {
    /// The variable's value, without the attributes efivarfs puts before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut path = Vec::new();
        path.extend_from_slice(&[MEDIA, HARD_DRIVE]);
        path.extend_from_slice(&(HARD_DRIVE_LEN as u16).to_le_bytes());
        path.extend_from_slice(&self.partition.number.to_le_bytes());
        path.extend_from_slice(&self.partition.start_lba.to_le_bytes());
        path.extend_from_slice(&self.partition.size_lba.to_le_bytes());
        let (signature, format, kind) = match self.partition.signature {
            Signature::Guid(guid) => (guid, FORMAT_GPT, SIGNATURE_GUID),
            Signature::Mbr(id) => {
                let mut bytes = [0u8; 16];
                bytes[..4].copy_from_slice(&id.to_le_bytes());
                (bytes, FORMAT_MBR, SIGNATURE_MBR)
            }
        };
        path.extend_from_slice(&signature);
        path.extend_from_slice(&[format, kind]);
        let file = ucs2(&self.path);
        path.extend_from_slice(&[MEDIA, FILE_PATH]);
        path.extend_from_slice(&((4 + file.len()) as u16).to_le_bytes());
        path.extend_from_slice(&file);
        path.extend_from_slice(&[END, END_ENTIRE, 4, 0]);

        let mut out = Vec::new();
        out.extend_from_slice(&ACTIVE.to_le_bytes());
        out.extend_from_slice(&(path.len() as u16).to_le_bytes());
        out.extend_from_slice(&ucs2(&self.description));
        out.extend_from_slice(&path);
        out.extend_from_slice(&self.optional_data);
        out
    }
}

/// What an existing entry points at: its description and the partitions its device path
/// names (none for a network or firmware entry). `None` when the value is not a load option.
pub fn decode(value: &[u8]) -> Option<(String, Vec<Partition>)> {
    let path_len = usize::from(u16::from_le_bytes(value.get(4..6)?.try_into().ok()?));
    let mut at = 6;
    let mut description = Vec::new();
    loop {
        let unit = u16::from_le_bytes(value.get(at..at + 2)?.try_into().ok()?);
        at += 2;
        if unit == 0 {
            break;
        }
        description.push(unit);
    }
    let path = value.get(at..at.checked_add(path_len)?)?;
    let mut partitions = Vec::new();
    let mut node = path;
    while node.len() >= 4 {
        let (kind, subtype) = (node[0], node[1]);
        let len = usize::from(u16::from_le_bytes([node[2], node[3]]));
        if len < 4 || len > node.len() || kind == END {
            break;
        }
        if (kind, subtype, len) == (MEDIA, HARD_DRIVE, HARD_DRIVE_LEN) {
            let field = &node[4..len];
            let number = u32::from_le_bytes(field[0..4].try_into().ok()?);
            let start_lba = u64::from_le_bytes(field[4..12].try_into().ok()?);
            let size_lba = u64::from_le_bytes(field[12..20].try_into().ok()?);
            let signature: [u8; 16] = field[20..36].try_into().ok()?;
            let signature = match field[37] {
                SIGNATURE_GUID => Some(Signature::Guid(signature)),
                SIGNATURE_MBR => Some(Signature::Mbr(u32::from_le_bytes(
                    signature[..4].try_into().ok()?,
                ))),
                _ => None,
            };
            if let Some(signature) = signature {
                partitions.push(Partition {
                    number,
                    start_lba,
                    size_lba,
                    signature,
                });
            }
        }
        node = &node[len..];
    }
    Some((String::from_utf16_lossy(&description), partitions))
}

/// `BootOrder` and `BootNext`: entry numbers, little-endian.
pub fn encode_numbers(numbers: &[u16]) -> Vec<u8> {
    numbers.iter().flat_map(|n| n.to_le_bytes()).collect()
}

pub fn decode_numbers(value: &[u8]) -> Vec<u16> {
    value
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .collect()
}

/// `text` as NUL-terminated UCS-2, as UEFI's strings are.
pub fn ucs2(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option() -> LoadOption {
        LoadOption {
            description: "debian".to_string(),
            partition: Partition {
                number: 1,
                start_lba: 2048,
                size_lba: 204800,
                signature: Signature::Guid(*b"0123456789abcdef"),
            },
            path: r"\EFI\debian\shimx64.efi".to_string(),
            optional_data: Vec::new(),
        }
    }

    #[test]
    fn an_entry_reads_back_as_written() {
        let encoded = option().encode();
        let (description, partitions) = decode(&encoded).unwrap();
        assert_eq!(description, "debian");
        assert_eq!(partitions, vec![option().partition]);
    }

    #[test]
    fn an_entry_is_laid_out_as_efibootmgr_writes_one() {
        let encoded = option().encode();
        // Attributes, the path's length (42 + 4 + 2 * 24 + 4), "debian\0" in UCS-2.
        assert_eq!(&encoded[..4], &[1, 0, 0, 0]);
        assert_eq!(u16::from_le_bytes([encoded[4], encoded[5]]), 98);
        assert_eq!(&encoded[6..20], &ucs2("debian")[..]);
        // The hard drive node: media, hard drive, 42 bytes, partition 1 from LBA 2048.
        assert_eq!(&encoded[20..24], &[4, 1, 42, 0]);
        assert_eq!(&encoded[24..28], &[1, 0, 0, 0]);
        assert_eq!(&encoded[60..62], &[2, 2]);
        // The file node, then the end.
        assert_eq!(&encoded[62..66], &[4, 4, 52, 0]);
        assert_eq!(&encoded[encoded.len() - 4..], &[0x7F, 0xFF, 4, 0]);
    }

    #[test]
    fn a_network_entry_names_no_partition_and_junk_is_no_entry() {
        // OVMF's "UEFI PXEv4": a MAC node, an IPv4 node, the end.
        let mut value = vec![1, 0, 0, 0];
        let path = [
            vec![3, 11, 37, 0],
            vec![0; 33],
            vec![3, 12, 27, 0],
            vec![0; 23],
            vec![0x7F, 0xFF, 4, 0],
        ]
        .concat();
        value.extend_from_slice(&(path.len() as u16).to_le_bytes());
        value.extend_from_slice(&ucs2("UEFI PXEv4"));
        value.extend_from_slice(&path);
        assert_eq!(decode(&value), Some(("UEFI PXEv4".to_string(), Vec::new())));
        assert_eq!(decode(&[1, 0, 0]), None);
        assert_eq!(decode(&[1, 0, 0, 0, 200, 0, 65, 0, 0, 0]), None);
    }

    #[test]
    fn numbers_are_little_endian_pairs() {
        assert_eq!(encode_numbers(&[1, 0x1234]), vec![1, 0, 0x34, 0x12]);
        assert_eq!(decode_numbers(&[1, 0, 0x34, 0x12, 9]), vec![1, 0x1234]);
    }
}
