//! What a new user and an attacker found: hostile registry text, broken output streams,
//! mislabelled layers, shared targets, odd references and command lines, full file systems.

mod common;

use std::process::Stdio;

use common::proxy::{Action, Proxy};
use common::*;

/// A 403 whose message holds terminal escapes: they reach the console escaped, and ocidd's
/// own error line is intact.
#[test]
fn registry_text_cannot_drive_the_terminal() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let hostile = "\u{1b}]0;PWNED\u{7}\u{1b}[2J\u{1b}[31mfake: installed OK\r \u{202e}txt.exe";
    let body = format!(r#"{{"errors":[{{"code":"DENIED","message":"{}"}}]}}"#, {
        // As JSON escapes, which the registry's JSON decoder turns back into control bytes.
        hostile
            .chars()
            .map(|c| {
                if c.is_control() {
                    format!("\\u{:04x}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
    });
    let proxy = Proxy::start(registry.port, move |_| Action::Respond {
        status: 403,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.clone().into_bytes(),
    });
    let target = target_file(dir.path(), "t.img", MIB);
    let run = install_tag(&format!("{}/disks/x:v1", proxy.host()), &target, &[]);
    run.assert_failed(3, "DENIED");
    for (name, text) in [("stderr", &run.stderr), ("stdout", &run.stdout)] {
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{name} holds control characters: {text:?}"
        );
    }
    assert!(
        run.stderr.contains("\\u{1b}]0;PWNED\\u{7}"),
        "{}",
        run.stderr
    );
    // Bidirectional controls, which reorder what a line seems to say, are escaped too.
    assert!(
        run.stderr.contains("\\u{202e}txt.exe") && !run.stderr.contains('\u{202e}'),
        "{}",
        run.stderr
    );
    assert_untouched(&target);
}

/// stdout and stderr whose readers went away: the install goes on and succeeds; nothing
/// panics (exit 101) on a broken pipe.
#[test]
fn output_that_nobody_reads_does_not_change_the_outcome() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(8 * MIB, 30);
    let source = write_file(dir.path(), "disk.raw", &image);
    let reference = format!("{}/disks/quiet:v1", registry.host());
    // Push, with its results on a stdout nobody reads.
    let mut push = ocidd()
        .args(["push", "--plain-http"])
        .arg(&source)
        .arg(&reference)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(push.stdout.take());
    drop(push.stderr.take());
    assert_eq!(push.wait().unwrap().code(), Some(0), "push");
    for words in [vec![], vec!["oci.stall_timeout=1"]] {
        let target = write_file(dir.path(), "out.img", b"");
        let mut install = ocidd()
            .arg(format!("oci.tag={reference}"))
            .args(["oci.allow_no_tls", "dd.bs=64k"])
            .arg(format!("dd.of={}", target.display()))
            .args(words)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(install.stdout.take());
        drop(install.stderr.take());
        assert_eq!(install.wait().unwrap().code(), Some(0), "install");
        assert!(read_prefix(&target, image.len()) == image);
    }
    // A failure keeps its exit status too.
    let mut failing = ocidd()
        .arg(format!("oci.tag={}/disks/quiet:nope", registry.host()))
        .args(["oci.allow_no_tls", "dd.bs=64k", "dd.of=/dev/null"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(failing.stdout.take());
    drop(failing.stderr.take());
    assert_eq!(failing.wait().unwrap().code(), Some(5));
}

/// gzip or zstd data in a layer labelled uncompressed (`oras push disk.img.gz` with the
/// default type) is refused before anything is written, with the media type to use.
#[test]
fn compressed_data_labelled_uncompressed_is_refused() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(2 * MIB, 31);
    let target = target_file(dir.path(), "t.img", 4 * MIB);
    let compressed = [
        ("gzip", gzip(&image), "application/octet-stream+gzip"),
        (
            "zstd",
            zstd::encode_all(&image[..], 3).unwrap(),
            "application/octet-stream+zstd",
        ),
    ];
    for (name, blob, hint) in compressed {
        registry.put_image("disks/labelled", name, &[(RAW, &blob)]);
        install_tag(
            &format!("{}/disks/labelled:{name}", registry.host()),
            &target,
            &[],
        )
        .assert_failed(
            4,
            &format!("holds {name} data; push it with the media type {hint}"),
        );
        assert_untouched(&target);
    }
}

/// Two installs onto one file: the second is refused while the first runs, and the file ends
/// holding the first's image; a file that backs a loop device is refused like a mounted disk.
#[test]
fn a_file_target_is_exclusive() {
    use common::proxy::Forward;
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(8 * MIB, 32);
    let source = write_file(dir.path(), "disk.raw", &image);
    push_with(
        &source,
        &format!("{}/disks/one:v1", registry.host()),
        &["--chunk-size", "0"],
    );
    // Slow blob downloads, so that the first install is still running.
    let proxy = Proxy::start(registry.port, |request| {
        if request.is_blob() {
            Action::Forward(Forward {
                throttle: Some(2 * MIB as u64),
                ..Forward::default()
            })
        } else {
            Action::forward()
        }
    });
    let target = target_file(dir.path(), "shared.img", 16 * MIB);
    let reference = format!("{}/disks/one:v1", proxy.host());
    let first = ocidd()
        .arg(format!("oci.tag={reference}"))
        .args(["oci.allow_no_tls", "dd.bs=64k"])
        .arg(format!("dd.of={}", target.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while proxy.blob_bytes() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first install did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    install_tag(&reference, &target, &[]).assert_failed(5, "another process holds its lock");
    Run::from(first.wait_with_output().unwrap()).assert_installed();
    assert!(read_prefix(&target, image.len()) == image);

    let device = LoopDevice::new(dir.path(), 16 * MIB);
    install_tag(
        &format!("{}/disks/one:v1", registry.host()),
        &device.backing,
        &[],
    )
    .assert_failed(5, &format!("it backs {}", device.device.display()));
}

/// A GPT image onto a larger target: the backup header and entries end up in the target's
/// last sectors (`sgdisk -v` finds no problem), from a stream and from chunks; an image
/// without a GPT is written as it is.
#[test]
fn the_gpt_backup_moves_to_the_end_of_a_larger_target() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let gpt = write_file(dir.path(), "gpt.raw", &image_bytes(20 * MIB, 33));
    gpt_label(&gpt);
    let image = std::fs::read(&gpt).unwrap();
    for (tag, chunk_size) in [("stream", "0"), ("chunked", "1M")] {
        let reference = format!("{}/disks/gpt:{tag}", registry.host());
        push_with(&gpt, &reference, &["--chunk-size", chunk_size]);
        let target = target_file(dir.path(), "disk.img", 48 * MIB);
        install_tag(&reference, &target, &[]).assert_installed();
        assert_gpt_consistent(&target);
        let on_disk = std::fs::read(&target).unwrap();
        assert!(on_disk[1024..image.len()] == image[1024..], "{tag}");
        // An empty file grows to the image: its backup is at its end already.
        let grown = write_file(dir.path(), "grown.img", b"");
        install_tag(&reference, &grown, &[]).assert_installed();
        assert!(std::fs::read(&grown).unwrap() == image, "{tag}");
    }
    let plain = image_bytes(4 * MIB, 34);
    let source = write_file(dir.path(), "plain.raw", &plain);
    let reference = format!("{}/disks/gpt:plain", registry.host());
    push(&source, &reference, "zstd");
    let target = target_file(dir.path(), "plain.img", 16 * MIB);
    install_tag(&reference, &target, &[]).assert_installed();
    assert!(read_prefix(&target, plain.len()) == plain);
}

/// A file that grows on a file system without room for the image is refused before anything
/// is written; when the size shows only while writing, the failure says so and the file is
/// emptied again.
#[test]
fn a_full_file_system_is_refused_before_writing() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(12 * MIB, 35);
    let source = write_file(dir.path(), "disk.raw", &image);
    let reference = format!("{}/disks/big:v1", registry.host());
    let (_, layer) = push_with(&source, &reference, &["--chunk-size", "0"]);
    let chunked = format!("{}/disks/big:chunked", registry.host());
    push_with(&source, &chunked, &[]);
    // 32 MiB with 2 MiB of data: it fits as a sparse file, in chunks or as one stream.
    let mut sparse = vec![0u8; 32 * MIB];
    sparse[..2 * MIB].copy_from_slice(&image[..2 * MIB]);
    let sparse_source = write_file(dir.path(), "sparse.raw", &sparse);
    let sparse_chunked = format!("{}/disks/sparse:chunked", registry.host());
    let sparse_stream = format!("{}/disks/sparse:stream", registry.host());
    push_with(&sparse_source, &sparse_chunked, &[]);
    push_with(&sparse_source, &sparse_stream, &["--chunk-size", "0"]);
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&small)
        .status()
        .expect("running mount (needs root)");
    assert!(mounted.success(), "mounting a tmpfs");
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&small);
    let target = write_file(&small, "out.img", b"");
    install_tag(&chunked, &target, &[])
        .assert_failed(5, "does not fit on the file system of the target");
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 0);
    for sparse_reference in [&sparse_chunked, &sparse_stream] {
        install_tag(sparse_reference, &target, &[]).assert_installed();
        assert!(
            std::fs::read(&target).unwrap() == sparse,
            "{sparse_reference}"
        );
        std::fs::write(&target, b"").unwrap();
    }
    // Without a chunk index, what the image needs shows when writing: the file is empty
    // again.
    let run = install_tag(&reference, &target, &[]);
    run.assert_failed(5, "No space left on device");
    assert!(run.stderr.contains("is empty again"), "{}", run.stderr);
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 0);
    // By blob digest the size is unknown until the end: the write fails, and the file is
    // empty again rather than a partial image that claims a failed wipe.
    let run = install_blob(&format!("{}/disks/big@{layer}", registry.host()), &target);
    run.assert_failed(5, "No space left on device");
    assert!(run.stderr.contains("is empty again"), "{}", run.stderr);
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 0);
}

/// A registry at an IPv6 literal, `[::1]:PORT`, from push to install.
#[test]
fn an_ipv6_literal_registry() {
    let registry = Registry::start_ipv6();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(2 * MIB, 36);
    let source = write_file(dir.path(), "disk.raw", &image);
    let reference = format!("{}/disks/six:v1", registry.host());
    assert!(reference.starts_with("[::1]:"), "{reference}");
    push(&source, &reference, "gzip");
    let target = write_file(dir.path(), "out.img", b"");
    let run = install_tag(&reference, &target, &[]);
    run.assert_installed();
    assert!(run.stdout.contains("[::1]") || run.stderr.contains("[::1]:"));
    assert!(std::fs::read(&target).unwrap() == image);
}

/// A reference without a registry says that it means Docker Hub, and a host that does not
/// resolve is named.
#[test]
fn implied_docker_hub_and_unresolvable_hosts_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_file(dir.path(), "t.img", MIB);
    let run = install_tag("disks/base:v1", &target, &["oci.retries=0"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "no registry was named, so the image is docker.io/disks/base:v1 (Docker Hub)"
        ),
        "{}",
        run.stderr
    );
    install_tag(
        "registry.ocidd-test.invalid/disks/base:v1",
        &target,
        &["oci.retries=0"],
    )
    .assert_failed(3, "cannot resolve registry.ocidd-test.invalid");
    assert_untouched(&target);
}

/// A loop device without partition scanning has no partition table to re-read: no note
/// about failing to.
#[test]
fn no_partition_table_note_for_a_disk_without_partitions() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(2 * MIB, 37);
    let source = write_file(dir.path(), "disk.raw", &image);
    let reference = format!("{}/disks/plain:v1", registry.host());
    push(&source, &reference, "gzip");
    let device = LoopDevice::without_partitions(dir.path(), 8 * MIB);
    let run = install_tag(&reference, &device.device, &[]);
    run.assert_installed();
    assert!(!run.stderr.contains("partition table"), "{}", run.stderr);
    assert!(device.read(image.len()) == image);
}

/// A word that is not ocidd's and not UTF-8 is ignored like any foreign word; one of ocidd's
/// that is not UTF-8 is a parameter error.
#[test]
fn words_that_are_not_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(MIB, 38);
    let source = write_file(dir.path(), "disk.raw", &image);
    let reference = format!("{}/disks/bytes:v1", registry.host());
    push(&source, &reference, "gzip");
    let target = write_file(dir.path(), "out.img", b"");
    let run = Run::from(
        ocidd()
            .arg(OsStr::from_bytes(b"console=tty\xff"))
            .arg(format!("oci.tag={reference}"))
            .args(["oci.allow_no_tls", "dd.bs=1M"])
            .arg(format!("dd.of={}", target.display()))
            .output()
            .unwrap(),
    );
    run.assert_installed();
    let run = Run::from(
        ocidd()
            .arg(format!("oci.tag={reference}"))
            .arg(OsStr::from_bytes(b"dd.of=/dev/sd\xff"))
            .output()
            .unwrap(),
    );
    run.assert_failed(2, "is not valid UTF-8");
}

/// `ocidd disks` prints the table of this machine's disks.
#[test]
fn the_disks_command_prints_the_table() {
    let run = Run::from(ocidd().arg("disks").output().unwrap());
    assert_eq!(run.code, 0, "{}", run.stderr);
    for line in ocidd::disks::table(&ocidd::disks::list()) {
        assert!(run.stdout.contains(&line), "{line}\n{}", run.stdout);
    }
}
