//! The arm64 PXE environment, booted in `qemu-system-aarch64 -M virt -cpu cortex-a57` (TCG,
//! direct kernel boot) with a virtio disk and NIC, installing an xz image in blocks (liblzma's
//! threaded decoder, built for aarch64 musl); and one multi-arch image index installing the
//! matching chunked image on an amd64 and an arm64 machine.

mod common;

use std::fs;
use std::time::Duration;

use common::vm::Vm;
use common::*;

const BOOT_LIMIT: Duration = Duration::from_secs(300);

fn disk(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    fs::write(&path, vec![0xAAu8; 64 * MIB]).unwrap();
    path
}

#[test]
fn arm64_installs_by_tag_and_reboots() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(24 * MIB, 90);
    let source = write_file(dir.path(), "disk.raw", &image);
    let packed = dir.path().join("disk.raw.xz");
    let xz = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "xz -1 -T2 --block-size=2MiB -c {} > {}",
            source.display(),
            packed.display()
        ))
        .status()
        .expect("xz (xz-utils)");
    assert!(xz.success());
    registry.put_image(
        "disks/arm",
        "v1",
        &[("application/octet-stream+xz", &fs::read(&packed).unwrap())],
    );
    let disk = disk(dir.path(), "arm64.img");
    let mut vm = Vm::boot(
        "arm64",
        &disk,
        &format!(
            "console=ttyAMA0 oci.tag=10.0.2.2:{}/disks/arm:v1 oci.allow_no_tls dd.of=/dev/vda dd.bs=1M ocidd.reboot_delay=0",
            registry.port
        ),
    );
    let seconds = vm.wait_exit(BOOT_LIMIT);
    let console = vm.console();
    assert!(
        console.contains("kernel 6.") && console.contains("-arm64"),
        "{console}"
    );
    assert!(console.contains(", xz)"), "{console}");
    assert!(console.contains("ocidd: installed 24.00 MiB"), "{console}");
    assert!(console.contains("reboot: Restarting system"), "{console}");
    assert!(
        read_prefix(&disk, image.len()) == image,
        "the disk does not hold the image"
    );
    eprintln!("arm64 boot to reboot: {seconds:.1} s");
}

#[test]
fn a_multi_arch_index_installs_the_matching_image_on_each() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let amd64 = image_bytes(4 * MIB, 91);
    let arm64 = image_bytes(4 * MIB, 92);
    let amd64_file = write_file(dir.path(), "amd64.raw", &amd64);
    let arm64_file = write_file(dir.path(), "arm64.raw", &arm64);
    registry.push_multiarch(
        "disks/multi",
        "v1",
        &[("amd64", &amd64_file), ("arm64", &arm64_file)],
    );
    let words = |console: &str| {
        format!(
            "console={console} oci.tag=10.0.2.2:{}/disks/multi:v1 oci.allow_no_tls dd.of=/dev/vda dd.bs=1M ocidd.reboot_delay=0",
            registry.port
        )
    };
    let amd64_disk = disk(dir.path(), "amd64-disk.img");
    let arm64_disk = disk(dir.path(), "arm64-disk.img");
    // One after the other: one VM at a time.
    Vm::boot("amd64", &amd64_disk, &words("ttyS0")).wait_exit(BOOT_LIMIT);
    Vm::boot("arm64", &arm64_disk, &words("ttyAMA0")).wait_exit(BOOT_LIMIT);
    assert!(
        read_prefix(&amd64_disk, amd64.len()) == amd64,
        "amd64 got the wrong image"
    );
    assert!(
        read_prefix(&arm64_disk, arm64.len()) == arm64,
        "arm64 got the wrong image"
    );
}
