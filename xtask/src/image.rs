//! Sample disk images for the demo and the benchmark: a GPT disk whose one ext4 partition is
//! populated from a directory, as real images are made.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::util::exec;

/// Copies regular files from `from` into `to` until `budget` bytes are used up.
pub fn copy_files(from: &Path, to: &Path, budget: &mut u64) -> Result<()> {
    fs::create_dir_all(to)?;
    let mut entries: Vec<_> = fs::read_dir(from)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            copy_files(&path, &to.join(entry.file_name()), budget)?;
        } else if kind.is_file() {
            let len = entry.metadata()?.len();
            if len > *budget {
                return Ok(());
            }
            fs::copy(&path, to.join(entry.file_name()))?;
            *budget -= len;
        }
    }
    Ok(())
}

/// Writes `image`: `size_mib` MiB, a GPT label, one partition from 1 MiB holding an ext4 file
/// system (labelled root) made from `rootfs`.
pub fn gpt_ext4(image: &Path, size_mib: u64, rootfs: &Path) -> Result<()> {
    fs::File::create(image)?.set_len(size_mib << 20)?;
    let mut sfdisk = Command::new("sfdisk")
        .arg("--quiet")
        .arg(image)
        .stdin(Stdio::piped())
        .spawn()
        .context("running sfdisk")?;
    sfdisk
        .stdin
        .take()
        .context("sfdisk's stdin")?
        .write_all(b"label: gpt\nstart=2048, type=linux, name=root\n")?;
    if !sfdisk.wait()?.success() {
        bail!("sfdisk failed");
    }
    // The file system ends before the backup GPT at the end of the disk.
    exec(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "offset=1048576", "-L", "root", "-d"])
            .arg(rootfs)
            .arg(image)
            .arg(format!("{}M", size_mib - 2)),
    )
}
