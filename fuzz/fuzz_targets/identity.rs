//! What a disk says of itself in sysfs: SCSI VPD pages 0x80 and 0x83, ATA IDENTIFY data in
//! page 0x89, and NAA names. A disk's firmware writes these: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ocidd::disks::identity;

fuzz_target!(|data: &[u8]| {
    let _ = identity::designators(data);
    let _ = identity::unit_serial(data);
    let _ = identity::ata_identity(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = identity::wwn_of_naa(text);
    }
});
