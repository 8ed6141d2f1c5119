//! The seed's partition: a new entry in the image's partition table, in the disk's last
//! 64 MiB, for the config drive or NoCloud seed ([`crate::seed`]), as Ironic's agent adds
//! one. On a GPT, an entry of the Linux file system type with a fresh GUID (the backup table
//! is made from the primary afterwards, [`super::gpt`]); on an MBR, a primary partition,
//! ending at 2 TiB at most (the most 32-bit sector numbers reach).
//!
//! Written by hand, on the held-back first MiB, for the reason [`super::gpt`] gives.

use anyhow::{Result, anyhow};

use super::gpt;
use crate::error::{Failure, classified};

/// The room the seed's partition takes at the disk's end, at least.
pub const SEED_ROOM: u64 = 64 << 20;
/// Partitions start on MiB boundaries, as partitioning tools place them.
const ALIGNMENT: u64 = 1 << 20;

/// The Linux file system data type, as a GPT entry stores it (mixed-endian
/// 0FC63DAF-8483-4772-8E79-3D69D8477DE4).
const LINUX_FILESYSTEM: [u8; 16] = [
    0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4,
];
const MBR_ENTRIES: usize = 446;
const MBR_LINUX: u8 = 0x83;

/// The size a target file that grows from empty takes for an image of `image_size` bytes and
/// a seed: the image in whole MiBs, the seed's room, and a MiB for a GPT's backup.
pub fn disk_size_for(image_size: u64) -> u64 {
    image_size.next_multiple_of(ALIGNMENT) + SEED_ROOM + ALIGNMENT
}

/// Where the seed's partition went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Its number, as the kernel names it (`/dev/sda3`).
    pub number: usize,
    /// Its first byte on the disk, and its length.
    pub offset: u64,
    pub length: u64,
    pub table: &'static str,
}

/// Adds the seed's partition to the table in `start` (the image's held first MiB) for a disk
/// of `disk_size` bytes in sectors of `sector` bytes, after an image of `image_size` bytes.
/// Refuses an image without a table, a table with no free entry, and a disk with no room
/// after the image's partitions.
pub fn add(start: &mut [u8], sector: usize, image_size: u64, disk_size: u64) -> Result<Placement> {
    if gpt::Header::read(start, sector).is_some() {
        return add_to_gpt(start, sector, image_size, disk_size);
    }
    if start.len() >= 512 && start[510..512] == [0x55, 0xAA] {
        if start[MBR_ENTRIES + 4] == 0xEE {
            return Err(refusal(
                Failure::Verification,
                "the image's protective MBR announces a GPT that does not verify",
            ));
        }
        return add_to_mbr(start, sector, image_size, disk_size);
    }
    Err(refusal(
        Failure::Verification,
        "the image has no partition table (neither GPT nor MBR) to add the seed's partition to",
    ))
}

fn refusal(failure: Failure, why: &str) -> anyhow::Error {
    classified(failure, anyhow!("{why}"))
}

/// The first sector at or after the image and its partitions where a partition of at
/// least [`SEED_ROOM`] ending at sector `end` (exclusive) starts, MiB-aligned.
fn seed_start(end: u64, sector: u64, image_size: u64, partitions_end: u64) -> Result<(u64, u64)> {
    let per_mib = ALIGNMENT / sector;
    let room = SEED_ROOM / sector;
    let start = end
        .checked_sub(room)
        .map(|s| s / per_mib * per_mib)
        .filter(|&s| s >= image_size.div_ceil(sector) && s >= partitions_end)
        .ok_or_else(|| {
            refusal(
                Failure::Target,
                &format!(
                    "no room for the seed's partition: the image and its partitions leave less than {} MiB at the disk's end",
                    SEED_ROOM >> 20
                ),
            )
        })?;
    Ok((start, end))
}

fn add_to_gpt(
    start: &mut [u8],
    sector: usize,
    image_size: u64,
    disk_size: u64,
) -> Result<Placement> {
    let header = gpt::Header::read(start, sector).ok_or_else(|| anyhow!("the GPT vanished"))?;
    let entries = header.entries_range();
    let entry_size = header.entry_size;
    let mut free = None;
    let mut partitions_end = 0u64;
    for (i, entry) in start[entries.clone()].chunks_exact(entry_size).enumerate() {
        if entry[..16].iter().all(|&b| b == 0) {
            free.get_or_insert(i);
        } else {
            // A last sector the image made up (u64::MAX) still leaves no room after it.
            partitions_end = partitions_end.max(gpt::u64_at(entry, 40).saturating_add(1));
        }
    }
    let free = free.ok_or_else(|| {
        refusal(
            Failure::Verification,
            "the image's GPT has no free entry for the seed's partition",
        )
    })?;
    let sector_u64 = sector as u64;
    // The backup entries and header take the disk's last sectors.
    let end = (disk_size / sector_u64)
        .checked_sub(1 + header.entries_len().div_ceil(sector) as u64)
        .ok_or_else(|| anyhow!("the disk is too small for a GPT"))?;
    let (first, end) = seed_start(end, sector_u64, image_size, partitions_end)?;
    let at = entries.start + free * entry_size;
    let entry = &mut start[at..at + entry_size];
    entry.fill(0);
    entry[..16].copy_from_slice(&LINUX_FILESYSTEM);
    entry[16..32].copy_from_slice(&fresh_guid()?);
    entry[32..40].copy_from_slice(&first.to_le_bytes());
    entry[40..48].copy_from_slice(&(end - 1).to_le_bytes());
    for (i, unit) in "seed".encode_utf16().enumerate() {
        entry[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
    }
    gpt::Header::reseal(start, sector, end - 1);
    Ok(Placement {
        number: free + 1,
        offset: first * sector_u64,
        length: (end - first) * sector_u64,
        table: "GPT",
    })
}

fn add_to_mbr(
    start: &mut [u8],
    sector: usize,
    image_size: u64,
    disk_size: u64,
) -> Result<Placement> {
    let sector_u64 = sector as u64;
    let mut free = None;
    let mut partitions_end = 0u64;
    for i in 0..4 {
        let entry = &start[MBR_ENTRIES + 16 * i..MBR_ENTRIES + 16 * (i + 1)];
        if entry[4] == 0 {
            free.get_or_insert(i);
        } else {
            let first = u64::from(gpt::u32_at(entry, 8));
            let length = u64::from(gpt::u32_at(entry, 12));
            // An extended partition's extent covers its logical ones.
            partitions_end = partitions_end.max(first + length);
        }
    }
    let free = free.ok_or_else(|| {
        refusal(
            Failure::Verification,
            "the image's MBR has four primary partitions: there is no entry for the seed's partition",
        )
    })?;
    // An MBR counts sectors in 32 bits: past 2 TiB (of 512-byte sectors) it cannot reach.
    let end = (disk_size / sector_u64).min(1 << 32);
    let (first, end) = seed_start(end, sector_u64, image_size, partitions_end)?;
    let entry = &mut start[MBR_ENTRIES + 16 * free..MBR_ENTRIES + 16 * (free + 1)];
    entry.fill(0);
    // CHS fields say "use the LBA ones", as tools write them past the first 8 GiB.
    entry[1..4].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    entry[4] = MBR_LINUX;
    entry[5..8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    entry[8..12].copy_from_slice(&(first as u32).to_le_bytes());
    entry[12..16].copy_from_slice(&((end - first) as u32).to_le_bytes());
    Ok(Placement {
        number: free + 1,
        offset: first * sector_u64,
        length: (end - first) * sector_u64,
        table: "MBR",
    })
}

/// A random (version 4) GUID, as a GPT stores it.
fn fresh_guid() -> Result<[u8; 16]> {
    let mut guid = [0u8; 16];
    let mut filled = 0;
    while filled < guid.len() {
        match rustix::rand::getrandom(&mut guid[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(anyhow!("making the seed partition's GUID: {e}")),
        }
    }
    guid[7] = (guid[7] & 0x0F) | 0x40;
    guid[8] = (guid[8] & 0x3F) | 0x80;
    Ok(guid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// An MBR's first MiB with `count` Linux partitions of 1 MiB from 1 MiB on.
    fn mbr(count: usize) -> Vec<u8> {
        let mut start = vec![0u8; MIB as usize];
        start[510] = 0x55;
        start[511] = 0xAA;
        for i in 0..count {
            let entry = &mut start[MBR_ENTRIES + 16 * i..MBR_ENTRIES + 16 * (i + 1)];
            entry[4] = MBR_LINUX;
            entry[8..12].copy_from_slice(&(2048 * (i as u32 + 1)).to_le_bytes());
            entry[12..16].copy_from_slice(&2048u32.to_le_bytes());
        }
        start
    }

    #[test]
    fn on_a_disk_over_2_tib_the_mbr_partition_ends_at_2_tib() {
        let mut start = mbr(1);
        let placement = add(&mut start, 512, 8 * MIB, 3 << 40).unwrap();
        assert_eq!(placement.number, 2);
        assert_eq!(placement.offset + placement.length, 2 << 40);
        assert_eq!(placement.length, SEED_ROOM);
        let entry = &start[MBR_ENTRIES + 16..MBR_ENTRIES + 32];
        assert_eq!(entry[4], MBR_LINUX);
        assert_eq!(
            u64::from(gpt::u32_at(entry, 8)) + u64::from(gpt::u32_at(entry, 12)),
            1 << 32
        );
    }

    #[test]
    fn what_has_no_room_or_no_entry_is_refused() {
        let mut four = mbr(4);
        let error = add(&mut four, 512, 8 * MIB, 100 * MIB).unwrap_err();
        assert!(format!("{error}").contains("four primary partitions"));
        let mut one = mbr(1);
        let error = add(&mut one, 512, 8 * MIB, 70 * MIB).unwrap_err();
        assert!(format!("{error}").contains("no room"));
        // A partition reaching into the disk's last 64 MiB leaves no room either.
        let mut late = mbr(1);
        late[MBR_ENTRIES + 12..MBR_ENTRIES + 16].copy_from_slice(&(80 * 2048u32).to_le_bytes());
        assert!(
            add(&mut late, 512, 8 * MIB, 128 * MIB)
                .is_err_and(|e| format!("{e}").contains("no room"))
        );
        let mut nothing = vec![0u8; MIB as usize];
        let error = add(&mut nothing, 512, 8 * MIB, 100 * MIB).unwrap_err();
        assert!(format!("{error}").contains("no partition table"));
    }
}
