//! The PXE environment end to end: the built kernel + initramfs boot in QEMU with nothing but
//! `oci.*`/`dd.*` on the kernel command line (no `ip=`), install from the real registry on
//! the host (10.0.2.2 from inside), and reboot; failures end in the emergency shell.

mod common;

use std::fs;
use std::time::Duration;

use common::vm::Vm;
use common::*;

const BOOT_LIMIT: Duration = Duration::from_secs(300);

/// A GPT disk image with one partition whose contents are not all zeros.
fn gpt_image(size: usize) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpt.img");
    fs::write(&path, image_bytes(size, 60)).unwrap();
    gpt_label(&path);
    fs::read(&path).unwrap()
}

fn disk(dir: &std::path::Path, fill: u8) -> std::path::PathBuf {
    let path = dir.join("vm-disk.img");
    fs::write(&path, vec![fill; 64 * MIB]).unwrap();
    path
}

/// The kernel line: `words`, the disk, and no countdown before the reboot (one test keeps
/// it, to see it).
fn append(words: &str) -> String {
    let delay = if words.contains("ocidd.reboot_delay") {
        ""
    } else {
        " ocidd.reboot_delay=0"
    };
    format!("console=ttyS0 {words} dd.of=/dev/vda dd.bs=1M{delay}")
}

#[test]
fn installs_by_tag_and_reboots() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = gpt_image(32 * MIB);
    let source = write_file(dir.path(), "disk.raw", &image);
    push(&source, &format!("{}/disks/vm:v1", registry.host()), "gzip");
    let disk = disk(dir.path(), 0);
    let mut vm = Vm::boot(
        "amd64",
        &disk,
        &append(&format!(
            "oci.tag=10.0.2.2:{}/disks/vm:v1 oci.allow_no_tls",
            registry.port
        )),
    );
    let seconds = vm.wait_exit(BOOT_LIMIT);
    let console = vm.console();
    assert!(console.contains("ocidd: installed 32.00 MiB"), "{console}");
    assert!(console.contains("(DHCP from 10.0.2.2"), "{console}");
    assert!(console.contains("reboot: Restarting system"), "{console}");
    // The kernel re-read the partition table after the install.
    let writing_at = console.find("ocidd: writing onto /dev/vda").unwrap();
    assert!(console[writing_at..].contains("vda: vda1"), "{console}");
    // The image, with its GPT's backup moved to the end of the larger disk.
    let on_disk = read_prefix(&disk, image.len());
    assert!(
        on_disk[1024..] == image[1024..],
        "the disk does not hold the image"
    );
    assert_gpt_consistent(&disk);
    eprintln!("boot to reboot: {seconds:.1} s");
}

/// Also: the static form of `ip=` instead of DHCP (QEMU's user network is 10.0.2.0/24), and
/// two consoles, as in the README's iPXE example: /dev/console is the last one named (tty0
/// here, a screen nobody reads), and ocidd's messages reach the serial line (which the test
/// reads) too.
#[test]
fn installs_by_blob_with_a_static_address() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(8 * MIB, 61);
    let digest = registry.put_blob("disks/vm", &zstd::encode_all(&image[..], 3).unwrap());
    let disk = disk(dir.path(), 0xAA);
    let mut vm = Vm::boot(
        "amd64",
        &disk,
        &append(&format!(
            "oci.blob=10.0.2.2:{}/disks/vm@{digest} oci.allow_no_tls \
             ip=10.0.2.77::10.0.2.2:255.255.255.0::eth0:off:10.0.2.3 console=tty0 \
             ocidd.reboot_delay=5",
            registry.port
        )),
    );
    vm.wait_exit(BOOT_LIMIT);
    let console = vm.console();
    assert!(console.contains("console [tty0] enabled"), "{console}");
    assert!(console.contains("ocidd: installed 8.00 MiB"), "{console}");
    assert!(
        console.contains("eth0: 10.0.2.77/24 (static, from ip=)")
            && console.contains("eth0: default via 10.0.2.2"),
        "{console}"
    );
    assert!(!console.contains("DHCP"), "{console}");
    // The last line before the reboot, through the copier.
    let ours = vm.ocidd_output();
    assert!(ours.contains("ocidd: rebooting in 5 4 3 2 1\n"), "{ours}");
    assert!(read_prefix(&disk, image.len()) == image);
}

/// With a screen console named first (so ocidd's output goes through the copier) and the
/// serial line last: the shell still has the serial line as its terminal.
#[test]
fn unknown_tag_ends_in_the_emergency_shell() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let disk = disk(dir.path(), 0);
    let mut vm = Vm::boot(
        "amd64",
        &disk,
        &format!(
            "console=tty0 {}",
            append(&format!(
                "oci.tag=10.0.2.2:{}/disks/vm:missing oci.allow_no_tls",
                registry.port
            ))
        ),
    );
    vm.wait_for("starting an emergency shell", BOOT_LIMIT);
    let console = vm.console();
    assert!(
        console.contains("ocidd: error:") && console.contains("MANIFEST_UNKNOWN"),
        "{console}"
    );
    // The shell answers; Ctrl-C stops what it runs (it has the serial line as its
    // controlling terminal); leaving it reboots.
    vm.type_text("echo shell-$((6 * 7))\n");
    vm.wait_for("shell-42", Duration::from_secs(60));
    vm.type_text("sleep 1000\n");
    std::thread::sleep(Duration::from_secs(2));
    vm.type_text("\u{3}");
    vm.type_text("echo interrupted-$((6 * 7))\n");
    vm.wait_for("interrupted-42", Duration::from_secs(60));
    vm.type_text("exit\n");
    vm.wait_exit(Duration::from_secs(60));
    assert!(!vm.console().contains("ocidd: installed"));
    assert!(
        read_prefix(&disk, MIB).iter().all(|&b| b == 0),
        "first MiB not zero"
    );
}

#[test]
fn corrupted_blob_leaves_the_disk_unbootable() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let source = write_file(dir.path(), "disk.raw", &gpt_image(16 * MIB));
    let (_, layer) = push(
        &source,
        &format!("{}/disks/vm:bad", registry.host()),
        "gzip",
    );
    let stored = registry.blob_path(&layer);
    let mut data = fs::read(&stored).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0x01;
    fs::write(&stored, data).unwrap();
    let disk = disk(dir.path(), 0xAA);
    let mut vm = Vm::boot(
        "amd64",
        &disk,
        &append(&format!(
            "oci.tag=10.0.2.2:{}/disks/vm:bad oci.allow_no_tls",
            registry.port
        )),
    );
    vm.wait_for("starting an emergency shell", BOOT_LIMIT);
    let console = vm.console();
    assert!(console.contains("blob digest mismatch"), "{console}");
    assert!(
        console.contains("/dev/vda has no partition table"),
        "{console}"
    );
    drop(vm);
    let data = fs::read(&disk).unwrap();
    assert!(data[..MIB].iter().all(|&b| b == 0), "first MiB not zeroed");
    assert!(
        data[data.len() - MIB..].iter().all(|&b| b == 0),
        "last MiB not zeroed"
    );
}

/// The VM's power is cut (QEMU killed) in the middle of an install onto a disk that held a GPT
/// disk: the disk holds neither the old tables nor half of the new ones.
#[test]
fn power_cut_mid_install_leaves_no_partition_table() {
    use common::proxy::{Action, Forward, Proxy};
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = gpt_image(32 * MIB);
    let source = write_file(dir.path(), "disk.raw", &image);
    push(
        &source,
        &format!("{}/disks/vm:slow", registry.host()),
        "gzip",
    );
    // Slow enough that the install is caught writing.
    let proxy = Proxy::start(registry.port, |request| {
        if request.is_blob() {
            Action::Forward(Forward {
                throttle: Some(MIB as u64),
                ..Forward::default()
            })
        } else {
            Action::forward()
        }
    });
    let disk = disk(dir.path(), 0x55);
    gpt_label(&disk);
    let old = fs::read(&disk).unwrap();
    let mut vm = Vm::boot(
        "amd64",
        &disk,
        &append(&format!(
            "oci.tag=10.0.2.2:{}/disks/vm:slow oci.allow_no_tls",
            proxy.port
        )),
    );
    vm.wait_for("ocidd: writing onto /dev/vda", BOOT_LIMIT);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while proxy.blob_bytes() < 6 * MIB as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the download did not go on"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(vm); // kill -9: the power cut
    let data = fs::read(&disk).unwrap();
    assert!(data != old, "nothing was written: the cut came too early");
    assert!(data[..MIB].iter().all(|&b| b == 0), "first MiB not zeroed");
    assert!(
        data[data.len() - MIB..].iter().all(|&b| b == 0),
        "last MiB not zeroed: the old backup GPT is there"
    );
}

/// Signed images only, at boot: the key inline on the kernel line (`oci.verify.key=b64:…`),
/// the image signed by `ocidd push --sign-key` with a key openssl made.
#[test]
fn installs_a_signed_image_with_the_key_on_the_kernel_line() {
    use base64::Engine;
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (private, _) = key_pair(dir.path(), "k");
    let der = openssl(
        dir.path(),
        &["ec", "-in", "k.key", "-pubout", "-outform", "DER"],
    );
    let key = format!(
        "b64:{}",
        base64::engine::general_purpose::STANDARD.encode(der)
    );
    let image = gpt_image(16 * MIB);
    let source = write_file(dir.path(), "disk.raw", &image);
    let reference = format!("{}/disks/signed:v1", registry.host());
    push_with(
        &source,
        &reference,
        &["--sign-key", private.to_str().unwrap()],
    );
    let disk = disk(dir.path(), 0);
    let mut vm = Vm::boot(
        "amd64",
        &disk,
        &append(&format!(
            "oci.tag=10.0.2.2:{}/disks/signed:v1 oci.allow_no_tls oci.verify.key={key}",
            registry.port
        )),
    );
    vm.wait_exit(BOOT_LIMIT);
    let console = vm.console();
    assert!(
        console.contains("ocidd: signature verified: ") && console.contains("inline key sha256:"),
        "{console}"
    );
    assert!(console.contains("ocidd: installed 16.00 MiB"), "{console}");
    let on_disk = read_prefix(&disk, image.len());
    assert!(
        on_disk[1024..] == image[1024..],
        "the disk does not hold the image"
    );
}
