//! A GPT's backup moved to the end of a disk larger than the image, as `sgdisk -e` does (and
//! Ironic's agent after every image). An image carries its backup header and entries in its
//! own last sectors; on a larger disk those are somewhere in the middle, and the kernel warns
//! ("Alternate GPT header not at the end of the disk") and tools call the disk inconsistent.
//!
//! Written by hand: the change is a few fields and two CRCs in a held-back buffer, and the
//! crates that read GPTs (gpt, gptman) want a whole disk as a file to work on.

/// Where a GPT header starts (`EFI PART`) and the fields this module touches, by offset.
const SIGNATURE: &[u8; 8] = b"EFI PART";
const HEADER_SIZE: usize = 12;
const HEADER_CRC: usize = 16;
const MY_LBA: usize = 24;
const ALTERNATE_LBA: usize = 32;
const LAST_USABLE_LBA: usize = 48;
const ENTRIES_LBA: usize = 72;
const ENTRY_COUNT: usize = 80;
const ENTRY_SIZE: usize = 84;
const ENTRIES_CRC: usize = 88;
/// The protective MBR's first partition entry, and its type for "GPT follows".
const MBR_ENTRY: usize = 446;
const MBR_PROTECTIVE: u8 = 0xEE;

/// The backup entries and header, and where on the disk they go.
#[derive(Debug, PartialEq, Eq)]
pub struct Backup {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// With `start` the image's first bytes as held back (protective MBR, primary header and
/// entries), for a disk of `disk_size` bytes in sectors of `sector` bytes: points the primary
/// header at a backup in the disk's last sectors (alternate LBA, last usable LBA, CRC; and the
/// protective MBR's size), and returns that backup to write. `None` when `start` holds no
/// valid GPT (the image is left alone) or its backup is already at the disk's end.
pub fn move_backup_to_end(
    start: &mut [u8],
    sector: usize,
    image_size: u64,
    disk_size: u64,
) -> Option<Backup> {
    let found = Header::read(start, sector)?;
    let header_size = found.size;
    let entries_len = found.entries_len();
    let entries = &start[found.entries_range()];
    let header = &start[sector..2 * sector];
    let sector_u64 = sector as u64;
    let disk_last = (disk_size / sector_u64).checked_sub(1)?;
    let alternate = u64_at(header, ALTERNATE_LBA);
    // Nothing to move: the backup is at the disk's end, or the image does not end before it.
    if alternate == disk_last || image_size >= disk_size {
        return None;
    }
    let entries_sectors = entries_len.div_ceil(sector) as u64;
    let backup_entries_lba = disk_last.checked_sub(entries_sectors)?;
    // A header may say anything: the backup must come after the primary's entries.
    let primary_entries_end = found.entries_lba.checked_add(entries_sectors)?;
    if backup_entries_lba <= primary_entries_end {
        return None;
    }
    let last_usable = backup_entries_lba - 1;
    let entries = entries.to_vec();

    // The primary: its backup is now at the disk's last sector, and partitions may use the
    // space up to the backup entries.
    let primary = &mut start[sector..sector + header_size];
    put_u64(primary, ALTERNATE_LBA, disk_last);
    put_u64(primary, LAST_USABLE_LBA, last_usable);
    let crc = crc_of_header(primary, header_size);
    put_u32(primary, HEADER_CRC, crc);

    let mut backup_header = primary.to_vec();
    put_u64(&mut backup_header, MY_LBA, disk_last);
    put_u64(&mut backup_header, ALTERNATE_LBA, 1);
    put_u64(&mut backup_header, ENTRIES_LBA, backup_entries_lba);
    let crc = crc_of_header(&backup_header, header_size);
    put_u32(&mut backup_header, HEADER_CRC, crc);

    // A protective MBR covers the whole disk (or as much as 32 bits can say).
    if start.len() >= 512
        && start[510..512] == [0x55, 0xAA]
        && start[MBR_ENTRY + 4] == MBR_PROTECTIVE
    {
        let sectors = u32::try_from(disk_last).unwrap_or(u32::MAX);
        put_u32(&mut start[MBR_ENTRY..MBR_ENTRY + 16], 12, sectors);
    }

    let mut bytes = vec![0u8; (entries_sectors as usize + 1) * sector];
    bytes[..entries.len()].copy_from_slice(&entries);
    let at = entries_sectors as usize * sector;
    bytes[at..at + header_size].copy_from_slice(&backup_header);
    Some(Backup {
        offset: backup_entries_lba * sector_u64,
        bytes,
    })
}

/// A primary GPT header that verifies (its CRC and its entries'), in a table's first
/// sectors.
pub struct Header {
    /// How many bytes the header's CRC covers.
    pub size: usize,
    pub entries_lba: u64,
    pub entry_count: usize,
    pub entry_size: usize,
    /// Where the entries are in `start`.
    entries: std::ops::Range<usize>,
}

impl Header {
    /// The primary header in `start` (the protective MBR, header and entries), for sectors of
    /// `sector` bytes; `None` where there is no GPT that verifies.
    pub fn read(start: &[u8], sector: usize) -> Option<Header> {
        let header = start.get(sector..2 * sector)?;
        if &header[..8] != SIGNATURE || u64_at(header, MY_LBA) != 1 {
            return None;
        }
        let size = u32_at(header, HEADER_SIZE) as usize;
        if !(92..=sector).contains(&size)
            || crc_of_header(header, size) != u32_at(header, HEADER_CRC)
        {
            return None;
        }
        let found = Header::locate(start, sector, size)?;
        // Entries in the MBR's or the header's own sector would change with them.
        if found.entries_len() == 0
            || found.entries_lba < 2
            || found.entry_size < 128
            || crc32fast::hash(&start[found.entries_range()]) != u32_at(header, ENTRIES_CRC)
        {
            return None;
        }
        Some(found)
    }

    /// The header's fields, with a header of `size` bytes, if its entries lie inside `start`.
    fn locate(start: &[u8], sector: usize, size: usize) -> Option<Header> {
        let header = start.get(sector..2 * sector)?;
        let entries_lba = u64_at(header, ENTRIES_LBA);
        let entry_count = u32_at(header, ENTRY_COUNT) as usize;
        let entry_size = u32_at(header, ENTRY_SIZE) as usize;
        let at = usize::try_from(entries_lba).ok()?.checked_mul(sector)?;
        let end = at.checked_add(entry_count.checked_mul(entry_size)?)?;
        (end <= start.len()).then_some(Header {
            size,
            entries_lba,
            entry_count,
            entry_size,
            entries: at..end,
        })
    }

    /// How many bytes the entries take.
    pub fn entries_len(&self) -> usize {
        self.entries.len()
    }

    /// Where the entries are in the table's first sectors (always inside them).
    pub fn entries_range(&self) -> std::ops::Range<usize> {
        self.entries.clone()
    }

    /// After the entries in `start` changed: their CRC and the header's again, with the last
    /// usable sector at least `last_used`.
    pub fn reseal(start: &mut [u8], sector: usize, last_used: u64) {
        let Some(found) = Header::read_unchecked(start, sector) else {
            return;
        };
        let entries_crc = crc32fast::hash(&start[found.entries_range()]);
        let header = &mut start[sector..sector + found.size];
        if u64_at(header, LAST_USABLE_LBA) < last_used {
            put_u64(header, LAST_USABLE_LBA, last_used);
        }
        put_u32(header, ENTRIES_CRC, entries_crc);
        let crc = crc_of_header(header, found.size);
        put_u32(header, HEADER_CRC, crc);
    }

    /// The header's fields without checking its CRCs (which the caller is about to fix).
    fn read_unchecked(start: &[u8], sector: usize) -> Option<Header> {
        let header = start.get(sector..2 * sector)?;
        let size = (u32_at(header, HEADER_SIZE) as usize).clamp(92, sector);
        Header::locate(start, sector, size)
    }
}

/// A used entry of a GPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1 for the table's first entry.
    pub number: u32,
    /// The type and unique GUIDs, as the table stores them (mixed-endian).
    pub type_guid: [u8; 16],
    pub guid: [u8; 16],
    pub first_lba: u64,
    pub last_lba: u64,
}

/// The used entries of the GPT in `start`; `None` where there is no GPT that verifies.
pub fn entries(start: &[u8], sector: usize) -> Option<Vec<Entry>> {
    let header = Header::read(start, sector)?;
    let entries = &start[header.entries_range()];
    let used = entries
        .chunks_exact(header.entry_size)
        .enumerate()
        .filter(|(_, entry)| entry[..16].iter().any(|&b| b != 0))
        .filter_map(|(i, entry)| {
            Some(Entry {
                number: u32::try_from(i + 1).ok()?,
                type_guid: entry[..16].try_into().ok()?,
                guid: entry[16..32].try_into().ok()?,
                first_lba: u64_at(entry, 32),
                last_lba: u64_at(entry, 40),
            })
        })
        .collect();
    Some(used)
}

/// A header's CRC-32: over its first `size` bytes, with the CRC field read as zero.
fn crc_of_header(header: &[u8], size: usize) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..HEADER_CRC]);
    hasher.update(&[0; 4]);
    hasher.update(&header[HEADER_CRC + 4..size]);
    hasher.finalize()
}

pub(super) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut field = [0u8; 4];
    field.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(field)
}

pub(super) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut field = [0u8; 8];
    field.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(field)
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTOR: usize = 512;

    /// The first MiB of an image of `sectors` sectors with a GPT as `sgdisk` writes it: a
    /// protective MBR, the primary header at LBA 1, 128 entries of 128 bytes from LBA 2, one
    /// partition.
    fn image_start(sectors: u64) -> Vec<u8> {
        let mut start = vec![0u8; 1 << 20];
        start[510] = 0x55;
        start[511] = 0xAA;
        start[MBR_ENTRY + 4] = MBR_PROTECTIVE;
        put_u32(&mut start[MBR_ENTRY..], 8, 1);
        put_u32(&mut start[MBR_ENTRY..], 12, (sectors - 1) as u32);
        let entries_at = 2 * SECTOR;
        start[entries_at..entries_at + 16].copy_from_slice(&[7u8; 16]); // type GUID
        put_u64(&mut start[entries_at..], 32, 2048);
        put_u64(&mut start[entries_at..], 40, sectors - 34);
        let entries_crc = crc32fast::hash(&start[entries_at..entries_at + 128 * 128]);
        let header = &mut start[SECTOR..2 * SECTOR];
        header[..8].copy_from_slice(SIGNATURE);
        put_u32(header, 8, 0x0001_0000);
        put_u32(header, HEADER_SIZE, 92);
        put_u64(header, MY_LBA, 1);
        put_u64(header, ALTERNATE_LBA, sectors - 1);
        put_u64(header, 40, 34);
        put_u64(header, LAST_USABLE_LBA, sectors - 34);
        put_u64(header, ENTRIES_LBA, 2);
        put_u32(header, ENTRY_COUNT, 128);
        put_u32(header, ENTRY_SIZE, 128);
        put_u32(header, ENTRIES_CRC, entries_crc);
        let crc = crc_of_header(header, 92);
        put_u32(header, HEADER_CRC, crc);
        start
    }

    #[test]
    fn the_backup_moves_to_the_disk_end() {
        let image_sectors = 65536; // 32 MiB
        let disk_sectors = 131072; // 64 MiB
        let mut start = image_start(image_sectors);
        let entries = start[2 * SECTOR..2 * SECTOR + 16384].to_vec();
        let backup =
            move_backup_to_end(&mut start, SECTOR, image_sectors * 512, disk_sectors * 512)
                .unwrap();
        let primary = &start[SECTOR..2 * SECTOR];
        assert_eq!(u64_at(primary, ALTERNATE_LBA), disk_sectors - 1);
        assert_eq!(u64_at(primary, LAST_USABLE_LBA), disk_sectors - 34);
        assert_eq!(crc_of_header(primary, 92), u32_at(primary, HEADER_CRC));
        assert_eq!(u32_at(&start[MBR_ENTRY..], 12), (disk_sectors - 1) as u32);
        // 32 sectors of entries, then the header, ending at the disk's last sector.
        assert_eq!(backup.offset, (disk_sectors - 33) * 512);
        assert_eq!(backup.bytes.len(), 33 * SECTOR);
        assert_eq!(&backup.bytes[..16384], &entries[..]);
        let header = &backup.bytes[32 * SECTOR..];
        assert_eq!(&header[..8], SIGNATURE);
        assert_eq!(u64_at(header, MY_LBA), disk_sectors - 1);
        assert_eq!(u64_at(header, ALTERNATE_LBA), 1);
        assert_eq!(u64_at(header, ENTRIES_LBA), disk_sectors - 33);
        assert_eq!(crc_of_header(header, 92), u32_at(header, HEADER_CRC));
    }

    #[test]
    fn what_is_not_a_valid_gpt_is_left_alone() {
        let image = 65536 * 512;
        let disk = 131072 * 512;
        // No GPT at all (an MBR disk, a file system image).
        let mut plain = vec![0u8; 1 << 20];
        assert_eq!(move_backup_to_end(&mut plain, SECTOR, image, disk), None);
        // A header whose CRC is wrong, or entries whose CRC is wrong.
        for corrupt in [SECTOR + 60, 2 * SECTOR + 100] {
            let mut start = image_start(65536);
            start[corrupt] ^= 1;
            let before = start.clone();
            assert_eq!(move_backup_to_end(&mut start, SECTOR, image, disk), None);
            assert!(start == before, "changed what it refused");
        }
        // Already at the disk's end: the image fills the disk.
        let mut start = image_start(65536);
        assert_eq!(move_backup_to_end(&mut start, SECTOR, image, image), None);
        // A 4096-byte-sector disk does not find a 512-byte-sector GPT.
        let mut start = image_start(65536);
        assert_eq!(move_backup_to_end(&mut start, 4096, image, disk), None);
    }

    #[test]
    fn entries_over_the_mbr_or_the_header_do_not_verify() {
        for lba in [0u64, 1] {
            let mut start = image_start(1 << 16);
            put_u64(&mut start[SECTOR..], ENTRIES_LBA, lba);
            Header::reseal(&mut start, SECTOR, 0);
            assert!(Header::read_unchecked(&start, SECTOR).is_some());
            assert!(
                Header::read(&start, SECTOR).is_none(),
                "entries at LBA {lba}"
            );
        }
    }

    #[test]
    fn a_backup_that_would_cover_the_primary_entries_is_not_written() {
        // 40 sectors: the 32 sectors of backup entries would start at LBA 7, inside the
        // primary's (2 to 33).
        let mut start = image_start(1 << 16);
        assert_eq!(
            move_backup_to_end(&mut start, SECTOR, 10 * 512, 40 * 512),
            None
        );
    }

    #[test]
    fn a_partition_said_to_end_at_the_last_possible_sector_leaves_no_room_for_a_seed() {
        let mut start = image_start(1 << 16);
        put_u64(&mut start[2 * SECTOR..], 40, u64::MAX);
        Header::reseal(&mut start, SECTOR, 0);
        let error =
            crate::install::seed_partition::add(&mut start, SECTOR, 8 << 20, 1 << 30).unwrap_err();
        assert!(format!("{error}").contains("no room"), "{error}");
    }
}
