//! The end-to-end demo: a sample GPT + ext4 disk image is pushed to a local registry, a VM
//! PXE-style boots the built kernel + initramfs and installs it onto its (larger) disk, and
//! the disk is checked as an operator would: a valid GPT with its backup at the disk's end,
//! the partition's bytes those of the image's, and `/etc/hostname` read back from the ext4.
//! `cargo xtask test` runs the same path after building the boot files.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util::{LocalRegistry, exec, output, root};
use crate::{deps, image, pxe};

/// What the sample image's ext4 holds in /etc/hostname, read back from the VM's disk.
const HOSTNAME: &str = "installed-by-ocidd";
/// The VM's disk: larger than the 64 MiB image, so the GPT's backup moves to its end.
const DISK_MIB: u64 = 96;

/// `cargo xtask demo`: builds the amd64 boot files, then [`boot_and_check`].
pub fn run() -> Result<()> {
    deps::ensure_packages(deps::PACKAGES)?;
    let out = root().join("out");
    pxe::build(&pxe::Options::generic(pxe::Arch::Amd64, out.clone(), false))?;
    boot_and_check(&out)
}

/// Pushes the sample image with the ocidd the boot files hold, boots a VM from the boot files
/// in `out` that installs it, and checks the VM's disk.
pub fn boot_and_check(out: &Path) -> Result<()> {
    let started = Instant::now();
    let ocidd = pxe::ocidd_binary(pxe::Arch::Amd64);
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

    // A machine with an empty disk PXE-boots the kernel and initramfs; inside QEMU's user
    // network the host's loopback is 10.0.2.2.
    let disk = work.join("vm-disk.img");
    fs::File::create(&disk)?.set_len(DISK_MIB << 20)?;
    let append = format!(
        "console=ttyS0 oci.tag=10.0.2.2:{}/demo/disk:v1 oci.allow_no_tls dd.of=/dev/vda dd.bs=1M",
        registry.port
    );
    eprintln!("demo: booting a VM (QEMU, software emulation) with: {append}");
    let booted = Instant::now();
    exec(
        Command::new("timeout")
            .arg("600")
            .arg("qemu-system-x86_64")
            .args([
                "-machine",
                "q35",
                "-accel",
                "tcg",
                "-m",
                "1024",
                "-smp",
                "2",
                "-no-reboot",
            ])
            .args([
                "-display", "none", "-vga", "none", "-monitor", "none", "-serial", "stdio",
            ])
            .arg("-kernel")
            .arg(out.join("vmlinuz-amd64"))
            .arg("-initrd")
            .arg(out.join("initramfs-amd64.img"))
            .arg("-append")
            .arg(&append)
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .args([
                "-netdev",
                "user,id=net0",
                "-device",
                "virtio-net-pci,netdev=net0",
            ])
            .stdin(Stdio::null()),
    )?;
    let seconds = booted.elapsed().as_secs_f64();
    let hostname = check_disk(&disk, &image, &work)?;
    eprintln!(
        "demo: OK: the VM installed itself and rebooted in {seconds:.1} s; its {DISK_MIB} MiB disk has a valid GPT with the backup at its end, the image's partition byte for byte, and /etc/hostname {hostname:?} ({:.1} s in all)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Checks the VM's disk as an operator would; returns the hostname read from its ext4.
fn check_disk(disk: &Path, image: &Path, work: &Path) -> Result<String> {
    let verify = output(Command::new("sgdisk").arg("-v").arg(disk))?;
    if !verify.contains("No problems found") {
        bail!("demo: the VM's disk has no valid GPT (sgdisk -v):\n{verify}");
    }
    // The backup header is the disk's last sector, not the image's.
    let bytes = fs::read(disk)?;
    if !bytes[bytes.len() - 512..].starts_with(b"EFI PART") {
        bail!("demo: the VM's disk has no GPT backup header in its last sector");
    }
    let (start, sectors) = first_partition(image)?;
    if first_partition(disk)? != (start, sectors) {
        bail!("demo: the VM's disk does not have the image's partition");
    }
    let partition = work.join("partition.img");
    for (from, to) in [
        (image, work.join("image-partition.img")),
        (disk, partition.clone()),
    ] {
        exec(
            Command::new("dd")
                .arg(format!("if={}", from.display()))
                .arg(format!("of={}", to.display()))
                .args(["bs=512", "status=none"])
                .arg(format!("skip={start}"))
                .arg(format!("count={sectors}")),
        )?;
    }
    if fs::read(&partition)? != fs::read(work.join("image-partition.img"))? {
        bail!("demo: the partition on the VM's disk differs from the image's");
    }
    let hostname = output(
        Command::new("debugfs")
            .args(["-R", "cat /etc/hostname"])
            .arg(&partition),
    )?;
    let hostname = hostname.trim().to_string();
    if hostname != HOSTNAME {
        bail!("demo: /etc/hostname on the VM's disk is {hostname:?}, not {HOSTNAME:?}");
    }
    Ok(hostname)
}

/// The first partition's start and length, in 512-byte sectors, as sfdisk reads the table.
fn first_partition(disk: &Path) -> Result<(u64, u64)> {
    let json = output(Command::new("sfdisk").arg("--json").arg(disk))?;
    let table: serde_json::Value = serde_json::from_str(&json).context("reading sfdisk's JSON")?;
    let partition = &table["partitiontable"]["partitions"][0];
    match (partition["start"].as_u64(), partition["size"].as_u64()) {
        (Some(start), Some(size)) => Ok((start, size)),
        _ => bail!("demo: {} has no partition", disk.display()),
    }
}

/// A 64 MiB GPT disk whose ext4 partition holds /etc/hostname and files from /usr/share/doc.
fn make_sample_image(image: &Path, work: &Path) -> Result<()> {
    let root_dir = work.join("rootfs");
    fs::create_dir_all(root_dir.join("etc"))?;
    fs::write(root_dir.join("etc/hostname"), format!("{HOSTNAME}\n"))?;
    image::copy_files(
        Path::new("/usr/share/doc"),
        &root_dir.join("doc"),
        &mut (32 << 20),
    )?;
    image::gpt_ext4(image, 64, &root_dir)
}
