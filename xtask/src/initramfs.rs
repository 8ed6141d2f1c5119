//! A reproducible initramfs: a newc cpio archive of a staging tree plus device nodes, with
//! sorted entries, uid/gid 0 and one fixed mtime, compressed with zstd.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use cpio::newc::{Builder, ModeFileType};

/// One entry of the archive.
enum Entry {
    Directory { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDevice { major: u32, minor: u32, mode: u32 },
}

/// The archive's content, keyed (and so sorted) by path.
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    /// Adds everything under `root`, named relative to it.
    pub fn add_tree(&mut self, root: &Path) -> Result<()> {
        self.add_dir(root, root)
    }

    fn add_dir(&mut self, root: &Path, dir: &Path) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            let name = path
                .strip_prefix(root)?
                .to_str()
                .context("non-UTF-8 path in the initramfs tree")?
                .to_string();
            let metadata = fs::symlink_metadata(&path)?;
            let mode = metadata.permissions().mode() & 0o7777;
            let kind = metadata.file_type();
            if kind.is_symlink() {
                let target = fs::read_link(&path)?;
                let target = target.to_str().context("non-UTF-8 symlink")?.to_string();
                self.entries.insert(name, Entry::Symlink { target });
            } else if kind.is_dir() {
                self.entries.insert(name, Entry::Directory { mode });
                self.add_dir(root, &path)?;
            } else if kind.is_file() {
                let data = fs::read(&path)?;
                self.entries.insert(name, Entry::File { mode, data });
            } else {
                bail!(
                    "{} is neither a file, a directory nor a symlink",
                    path.display()
                );
            }
        }
        Ok(())
    }

    pub fn add_char_device(&mut self, name: &str, major: u32, minor: u32, mode: u32) {
        self.entries
            .insert(name.to_string(), Entry::CharDevice { major, minor, mode });
    }

    /// Writes the newc archive with every mtime set to `mtime`.
    pub fn write(&self, mut out: impl Write, mtime: u32) -> Result<()> {
        for (ino, (name, entry)) in (1u32..).zip(&self.entries) {
            let builder = Builder::new(name).ino(ino).uid(0).gid(0).mtime(mtime);
            let (builder, data): (Builder, &[u8]) = match entry {
                Entry::Directory { mode } => (
                    builder
                        .mode(*mode)
                        .nlink(2)
                        .set_mode_file_type(ModeFileType::Directory),
                    &[],
                ),
                Entry::File { mode, data } => (
                    builder
                        .mode(*mode)
                        .set_mode_file_type(ModeFileType::Regular),
                    data,
                ),
                Entry::Symlink { target } => (
                    builder
                        .mode(0o777)
                        .set_mode_file_type(ModeFileType::Symlink),
                    target.as_bytes(),
                ),
                Entry::CharDevice { major, minor, mode } => (
                    builder
                        .mode(*mode)
                        .rdev_major(*major)
                        .rdev_minor(*minor)
                        .set_mode_file_type(ModeFileType::Char),
                    &[],
                ),
            };
            let size = u32::try_from(data.len()).context("file too large for cpio")?;
            let mut writer = builder.write(&mut out, size);
            writer.write_all(data)?;
            writer.finish()?;
        }
        cpio::newc::trailer(&mut out)?;
        Ok(())
    }
}

/// Writes `archive` zstd-compressed (single-threaded, so the bytes depend only on the input).
pub fn write_compressed(archive: &Archive, path: &Path, mtime: u32) -> Result<u64> {
    let mut raw = Vec::new();
    archive.write(&mut raw, mtime)?;
    let compressed = zstd::encode_all(&raw[..], 19).context("compressing the initramfs")?;
    fs::write(path, &compressed).with_context(|| format!("writing {}", path.display()))?;
    Ok(compressed.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_sorted_and_stable() {
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::write(dir.join("init"), b"#!/bin/sh\n").unwrap();
        fs::write(dir.join("bin/b"), b"b").unwrap();
        std::os::unix::fs::symlink("b", dir.join("bin/a")).unwrap();
        let mut archive = Archive::default();
        archive.add_tree(&dir).unwrap();
        archive.add_char_device("dev/console", 5, 1, 0o600);
        let (mut first, mut second) = (Vec::new(), Vec::new());
        archive.write(&mut first, 1).unwrap();
        archive.write(&mut second, 1).unwrap();
        assert_eq!(first, second);
        let names: Vec<String> = {
            let mut names = Vec::new();
            let mut rest: &[u8] = &first;
            loop {
                let reader = cpio::NewcReader::new(rest).unwrap();
                if reader.entry().is_trailer() {
                    break;
                }
                names.push(reader.entry().name().to_string());
                rest = reader.finish().unwrap();
            }
            names
        };
        assert_eq!(names, ["bin", "bin/a", "bin/b", "dev/console", "init"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
