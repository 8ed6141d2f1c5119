//! The end-to-end demo: a sample GPT + ext4 disk image goes through a local registry into a
//! file, and the file is compared with the image.

use std::fs;
use std::process::Command;

use anyhow::{Result, bail};

use crate::deps;
use crate::util::{LocalRegistry, cargo, exec, root};

pub fn run() -> Result<()> {
    deps::ensure_packages(deps::PACKAGES)?;
    cargo(&["build", "--release", "--package", "ocidd"])?;
    let ocidd = root().join("target/release/ocidd");
    let work = root().join("target/demo");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;

    let image = work.join("sample-disk.img");
    make_sample_image(&image, &work)?;
    let registry = LocalRegistry::start(&work.join("registry"))?;
    let reference = format!("127.0.0.1:{}/demo/disk:v1", registry.port);
    eprintln!("demo: pushing {} to {reference}", image.display());
    exec(
        Command::new(&ocidd)
            .args(["push", "--plain-http"])
            .arg(&image)
            .arg(&reference),
    )?;

    let target = work.join("target-disk.img");
    fs::File::create(&target)?.set_len(96 << 20)?;
    eprintln!("demo: installing {reference} onto {}", target.display());
    exec(
        Command::new(&ocidd)
            .arg(format!("oci.tag={reference}"))
            .arg("oci.allow_no_tls")
            .arg(format!("dd.of={}", target.display()))
            .arg("dd.bs=1M"),
    )?;

    let size = fs::metadata(&image)?.len();
    let same = Command::new("cmp")
        .arg("-n")
        .arg(size.to_string())
        .arg(&image)
        .arg(&target)
        .status()?
        .success();
    if !same {
        bail!("demo: the target does not hold the image");
    }
    eprintln!(
        "demo: OK: {} holds the {size}-byte image byte for byte",
        target.display()
    );
    Ok(())
}

/// Copies regular files from `from` into `to` until `budget` bytes are used up.
fn copy_files(from: &std::path::Path, to: &std::path::Path, budget: &mut u64) -> Result<()> {
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

/// A 64 MiB GPT disk whose ext4 partition holds files from /usr/share/doc.
fn make_sample_image(image: &std::path::Path, work: &std::path::Path) -> Result<()> {
    let root_dir = work.join("rootfs");
    fs::create_dir_all(root_dir.join("etc"))?;
    fs::write(root_dir.join("etc/hostname"), "installed-by-ocidd\n")?;
    copy_files(
        std::path::Path::new("/usr/share/doc"),
        &root_dir.join("doc"),
        &mut (32 << 20),
    )?;
    fs::File::create(image)?.set_len(64 << 20)?;
    let mut sfdisk = Command::new("sfdisk")
        .arg("--quiet")
        .arg(image)
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(b"label: gpt\nstart=2048, type=linux, name=root\n")?;
    if !sfdisk.wait()?.success() {
        bail!("sfdisk failed");
    }
    exec(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "offset=1048576", "-L", "root", "-d"])
            .arg(&root_dir)
            .arg(image)
            .arg("60M"),
    )
}
