//! The GPT surgery on an image's held first sectors: reading the entries, moving the backup
//! to the disk's end, adding the seed's partition, resealing. An image is untrusted, and its
//! CRCs prove nothing (anyone can compute them), so the target seals what it is given first:
//! the code behind the CRC checks is what gets fuzzed. Never a panic; a backup always lies
//! inside the disk.
//!
//! Input: a byte choosing 512- or 4096-byte sectors and whether to seal, the image's size and
//! the disk's (8 bytes each, little-endian), then the sectors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ocidd::install::{gpt, seed_partition};

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let sector = if data[0] & 1 == 0 { 512 } else { 4096 };
    let seal = data[0] & 2 == 0;
    let number = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap_or([0; 8]));
    let (image_size, disk_size) = (number(1), number(9));
    let mut start = data[17..].to_vec();
    if seal && start.len() >= 2 * sector {
        start[sector..sector + 8].copy_from_slice(b"EFI PART");
        start[sector + 24..sector + 32].copy_from_slice(&1u64.to_le_bytes());
        gpt::Header::reseal(&mut start, sector, 0);
    }

    let _ = gpt::entries(&start, sector);
    let mut moved = start.clone();
    if let Some(backup) = gpt::move_backup_to_end(&mut moved, sector, image_size, disk_size) {
        let end = backup.offset.checked_add(backup.bytes.len() as u64);
        assert!(end.is_some_and(|end| end <= disk_size), "a backup past the disk's end");
        assert!(gpt::Header::read(&moved, sector).is_some(), "the moved GPT does not verify");
    }
    let mut seeded = start.clone();
    if let Ok(placement) = seed_partition::add(&mut seeded, sector, image_size, disk_size) {
        let end = placement.offset.checked_add(placement.length);
        assert!(end.is_some_and(|end| end <= disk_size), "a seed past the disk's end");
    }
});
