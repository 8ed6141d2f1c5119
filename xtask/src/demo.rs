//! The end-to-end demo: a sample GPT + ext4 disk image is pushed to a local registry, a VM
//! PXE-style boots the built kernel + initramfs and installs it onto its disk, and the disk
//! is compared with the image.

use std::fs;
use std::process::Command;

use anyhow::{Result, bail};

use std::time::Instant;

use crate::util::{LocalRegistry, cargo, exec, root};
use crate::{deps, image, pxe};

pub fn run() -> Result<()> {
    deps::ensure_packages(deps::PACKAGES)?;
    let out = root().join("out");
    pxe::build(&pxe::Options {
        arch: pxe::Arch::Amd64,
        flavour: pxe::Flavour::Generic,
        extra_modules: Vec::new(),
        firmware: None,
        out: out.clone(),
        check_reproducible: false,
    })?;
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

    // A machine with an empty 96 MiB disk PXE-boots the kernel and initramfs; inside QEMU's
    // user network the host's loopback is 10.0.2.2.
    let disk = work.join("vm-disk.img");
    fs::File::create(&disk)?.set_len(96 << 20)?;
    let append = format!(
        "console=ttyS0 oci.tag=10.0.2.2:{}/demo/disk:v1 oci.allow_no_tls dd.of=/dev/vda dd.bs=1M",
        registry.port
    );
    eprintln!("demo: booting a VM (QEMU, software emulation) with: {append}");
    let started = Instant::now();
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
            .stdin(std::process::Stdio::null()),
    )?;
    let seconds = started.elapsed().as_secs_f64();

    let size = fs::metadata(&image)?.len();
    let same = Command::new("cmp")
        .arg("-n")
        .arg(size.to_string())
        .arg(&image)
        .arg(&disk)
        .status()?
        .success();
    if !same {
        bail!("demo: the VM's disk does not hold the image");
    }
    eprintln!(
        "demo: OK: the VM installed itself and rebooted in {seconds:.1} s; its disk holds the {size}-byte image byte for byte"
    );
    Ok(())
}

/// A 64 MiB GPT disk whose ext4 partition holds files from /usr/share/doc.
fn make_sample_image(image: &std::path::Path, work: &std::path::Path) -> Result<()> {
    let root_dir = work.join("rootfs");
    fs::create_dir_all(root_dir.join("etc"))?;
    fs::write(root_dir.join("etc/hostname"), "installed-by-ocidd\n")?;
    image::copy_files(
        std::path::Path::new("/usr/share/doc"),
        &root_dir.join("doc"),
        &mut (32 << 20),
    )?;
    image::gpt_ext4(image, 64, &root_dir)
}
