//! What file system a config drive holds, and its label: cloud-init finds a config drive by
//! its label (`config-2` for the OpenStack layout, `cidata` for NoCloud), so one without it
//! is never read.

use std::io::Cursor;

/// The file systems a config drive may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSystem {
    Iso9660,
    Fat,
}

impl FileSystem {
    pub fn name(self) -> &'static str {
        match self {
            FileSystem::Iso9660 => "ISO9660",
            FileSystem::Fat => "FAT",
        }
    }
}

/// The labels cloud-init looks for (compared without case, as blkid's users do).
pub const LABELS: [&str; 2] = ["config-2", "cidata"];

/// Where ISO9660's primary volume descriptor is (sector 16 of 2048 bytes), and its volume
/// identifier within it.
const ISO_DESCRIPTOR: usize = 16 * 2048;
const ISO_VOLUME_ID: std::ops::Range<usize> = 40..72;

/// The file system `image` holds and its label, if it is ISO9660 or FAT.
pub fn identify(image: &[u8]) -> Option<(FileSystem, String)> {
    iso9660_label(image)
        .map(|label| (FileSystem::Iso9660, label))
        .or_else(|| fat_label(image).map(|label| (FileSystem::Fat, label)))
}

/// Whether `label` is one cloud-init reads.
pub fn is_seed_label(label: &str) -> bool {
    LABELS.iter().any(|l| l.eq_ignore_ascii_case(label))
}

/// Read by hand: the volume identifier is one fixed field of the descriptor, and no
/// well-kept crate reads ISO9660 from memory.
fn iso9660_label(image: &[u8]) -> Option<String> {
    let descriptor = image.get(ISO_DESCRIPTOR..ISO_DESCRIPTOR + 2048)?;
    if descriptor[0] != 1 || &descriptor[1..6] != b"CD001" {
        return None;
    }
    let label = String::from_utf8_lossy(&descriptor[ISO_VOLUME_ID]);
    Some(label.trim_end_matches([' ', '\0']).to_string())
}

/// The label of the FAT boot sector, as the fatfs crate reads it (the label in the root
/// directory wins where there is one, as blkid takes it).
fn fat_label(image: &[u8]) -> Option<String> {
    let fs = fatfs::FileSystem::new(Cursor::new(image.to_vec()), fatfs::FsOptions::new()).ok()?;
    let label = match fs.read_volume_label_from_root_dir() {
        Ok(Some(label)) => label,
        _ => fs.volume_label(),
    };
    Some(label.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_iso9660_label_is_read() {
        let mut image = vec![0u8; ISO_DESCRIPTOR + 2048];
        image[ISO_DESCRIPTOR] = 1;
        image[ISO_DESCRIPTOR + 1..ISO_DESCRIPTOR + 6].copy_from_slice(b"CD001");
        let mut id = [b' '; 32];
        id[..8].copy_from_slice(b"config-2");
        image[ISO_DESCRIPTOR + 40..ISO_DESCRIPTOR + 72].copy_from_slice(&id);
        assert_eq!(
            identify(&image),
            Some((FileSystem::Iso9660, "config-2".to_string()))
        );
        assert!(is_seed_label("CONFIG-2"));
        assert!(!is_seed_label("config-3"));
    }

    #[test]
    fn what_is_neither_is_not_identified() {
        assert_eq!(identify(&[0u8; 65536]), None);
        assert_eq!(identify(b"short"), None);
    }
}
