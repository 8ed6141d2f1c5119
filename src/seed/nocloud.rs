//! A NoCloud seed built from its parts: a FAT file system labelled `CIDATA` holding
//! `user-data`, `meta-data` and, where given, `network-config` and `vendor-data`, which
//! cloud-init reads as its NoCloud data source.

use std::io::{Cursor, Write};

use anyhow::{Context, Result};

/// The label cloud-init looks for, as FAT stores it (11 bytes, space-padded).
const LABEL: [u8; 11] = *b"CIDATA     ";
/// Room for the file system's own structures besides the files.
const OVERHEAD: u64 = 1 << 20;

/// The file system image holding `files` (name, contents) in its root directory.
pub fn build(files: &[(&str, Vec<u8>)]) -> Result<Vec<u8>> {
    let data: u64 = files.iter().map(|(_, bytes)| bytes.len() as u64).sum();
    // Whole MiBs, with room for FAT's tables and a partly used cluster per file.
    let size = (data + data / 8 + OVERHEAD).div_ceil(1 << 20) << 20;
    let mut image = Cursor::new(vec![0u8; size as usize]);
    fatfs::format_volume(
        &mut image,
        fatfs::FormatVolumeOptions::new().volume_label(LABEL),
    )
    .context("formatting the NoCloud seed")?;
    {
        let fs = fatfs::FileSystem::new(&mut image, fatfs::FsOptions::new())
            .context("opening the NoCloud seed")?;
        for (name, bytes) in files {
            let root = fs.root_dir();
            let mut file = root
                .create_file(name)
                .with_context(|| format!("creating {name} in the NoCloud seed"))?;
            file.truncate()
                .and_then(|()| file.write_all(bytes))
                .and_then(|()| file.flush())
                .with_context(|| format!("writing {name} into the NoCloud seed"))?;
        }
        fs.unmount().context("closing the NoCloud seed")?;
    }
    Ok(image.into_inner())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::seed::label::{FileSystem, identify};

    #[test]
    fn the_seed_holds_its_files_under_its_label() {
        let files = [
            ("meta-data", b"instance-id: node-1\n".to_vec()),
            ("user-data", b"#cloud-config\nhostname: node-1\n".to_vec()),
        ];
        let image = build(&files).unwrap();
        assert_eq!(image.len(), 2 << 20);
        assert_eq!(
            identify(&image),
            Some((FileSystem::Fat, "CIDATA".to_string()))
        );
        let fs = fatfs::FileSystem::new(Cursor::new(image), fatfs::FsOptions::new()).unwrap();
        let mut text = String::new();
        fs.root_dir()
            .open_file("user-data")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "#cloud-config\nhostname: node-1\n");
    }
}
