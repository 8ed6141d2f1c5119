//! Every bad input: its exit code, its one-line message, no claim of success, and no partition
//! table left on the target where writing had begun (untouched where it had not).

mod common;

use std::fs;
use std::path::Path;

use common::proxy::{Action, Forward, Proxy};
use common::*;

const HEX: &str = "243786d4bef167ff79122d052ded386cbac007e71bdb9e15d6ffbf31b6dbe54d";

#[test]
fn bad_parameters_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_file(dir.path(), "t.img", MIB);
    let of = format!("dd.of={}", target.display());
    let not_pem = write_file(dir.path(), "not-a-ca.pem", b"not a certificate\n");
    let not_pem_word = format!("oci.ca={}", not_pem.display());
    let not_pem_message = format!(
        "the CA file {} holds no PEM certificates",
        not_pem.display()
    );
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "oci.tag=r.example/d:v1",
                &format!("oci.blob=r.example/d@sha256:{HEX}"),
                &of,
                "dd.bs=1M",
            ],
            "oci.tag and oci.blob (--tag, --blob) are mutually exclusive",
        ),
        (
            &["oci.tag=r.example/D::v1", &of, "dd.bs=1M"],
            "invalid oci.tag",
        ),
        (&["oci.tag=", &of, "dd.bs=1M"], "oci.tag= is empty"),
        (
            &["oci.blob=r.example/d:v1", &of, "dd.bs=1M"],
            "has no digest",
        ),
        (
            &["oci.blob=r.example/d@sha256:abc", &of, "dd.bs=1M"],
            "invalid oci.blob",
        ),
        (
            &[
                &format!("oci.blob=r.example/d@sha256:{}", "A".repeat(64)),
                &of,
                "dd.bs=1M",
            ],
            "64 lowercase hex digits",
        ),
        (
            &[
                "oci.blob=r.example/d@md5:0123456789abcdef0123456789abcdef",
                &of,
                "dd.bs=1M",
            ],
            "invalid oci.blob",
        ),
        (&["oci.tag=r.example/d:v1", &of, "dd.bs=0"], "invalid dd.bs"),
        (&["oci.tag=r.example/d:v1", &of, "dd.bs=lots"], "not a size"),
        (
            &["oci.tag=r.example/d:v1", &of, "dd.bs=1T"],
            "invalid dd.bs",
        ),
        (&["oci.tag=r.example/d:v1", &of], "missing dd.bs (--bs)"),
        (
            &["oci.tag=r.example/d:v1", "dd.bs=1M"],
            "missing dd.of or dd.match (--target or --match)",
        ),
        (
            &[&of, "dd.bs=1M"],
            "missing oci.tag or oci.blob (--tag or --blob)",
        ),
        (
            &["oci.tga=r.example/d:v1", &of, "dd.bs=1M"],
            "unknown parameter oci.tga",
        ),
        (
            &[
                "oci.tag=r.example/d:v1",
                &of,
                "dd.of=/dev/other",
                "dd.bs=1M",
            ],
            "dd.of is given twice",
        ),
        (
            &[
                "oci.tag=r.example/d:v1",
                &of,
                "dd.bs=1M",
                "oci.platform=amd64",
            ],
            "invalid oci.platform",
        ),
        (
            &[
                "oci.tag=r.example/d:v1",
                &of,
                "dd.bs=1M",
                "oci.ca=/nonexistent/ca.pem",
            ],
            "reading the CA file /nonexistent/ca.pem",
        ),
        (
            &["oci.tag=r.example/d:v1", &of, "dd.bs=1M", &not_pem_word],
            &not_pem_message,
        ),
        (
            &["oci.tag=r.example/d:v1", &of, "dd.bs=1M", "wait"],
            "no terminal",
        ),
        (
            &["oci.tag=r.example/d:v1", "dd.match=colour=red", "dd.bs=1M"],
            "invalid dd.match: \"colour=red\" does not start with a hint name",
        ),
        (
            &["oci.tag=r.example/d:v1", "dd.match=size>=400", "dd.bs=1M"],
            "needs a unit (400G, 1T, 512M)",
        ),
        (
            &["oci.tag=r.example/d:v1", "dd.hints=b64:!!!", "dd.bs=1M"],
            "invalid dd.hints: not valid base64",
        ),
        (
            &[
                "oci.tag=r.example/d:v1",
                "dd.match=tran=nvme",
                "dd.pick=middle",
                "dd.bs=1M",
            ],
            "invalid dd.pick",
        ),
    ];
    for (words, message) in cases {
        let run = install_words(words);
        run.assert_failed(2, message);
        assert_untouched(&target);
    }
    // Flags are checked too.
    let run = Run::from(ocidd().args(["install", "--bs", "0"]).output().unwrap());
    assert_eq!(run.code, 2, "{}", run.stderr);
}

/// Under `ocidd install` flags, messages do not send the operator to kernel words alone.
#[test]
fn messages_under_flags_name_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let broken = write_file(dir.path(), "broken.json", b"{not json");
    let target = target_file(dir.path(), "t.img", MIB);
    let target = target.display().to_string();
    let install = |args: &[&str]| Run::from(ocidd().arg("install").args(args).output().unwrap());
    let cases: [(&[&str], i32, &str); 3] = [
        (
            &[
                "--tag",
                "r.example/d:v1",
                "--target",
                "/dev/ocidd-test-missing",
                "--bs",
                "1M",
            ],
            5,
            "the target /dev/ocidd-test-missing does not exist",
        ),
        (
            &["--tag", "r.example/d:v1", "--target", "/dev/null"],
            2,
            "missing dd.bs (--bs)",
        ),
        (
            &[
                "--tag",
                "r.example/d:v1",
                "--target",
                &target,
                "--bs",
                "1M",
                "--auth",
                &broken.display().to_string(),
            ],
            2,
            "the credentials file",
        ),
    ];
    for (args, code, message) in cases {
        let run = install(args);
        run.assert_failed(code, message);
        assert!(!run.stderr.contains("dd.of="), "{}", run.stderr);
        assert!(!run.stderr.contains("oci.auth="), "{}", run.stderr);
    }
}

#[test]
fn missing_and_unusable_targets_exit_5() {
    let dir = tempfile::tempdir().unwrap();
    let run = install_words(&[
        "oci.tag=r.example/d:v1",
        "dd.of=/dev/ocidd-test-missing",
        "dd.bs=1M",
    ]);
    run.assert_failed(
        5,
        "the target /dev/ocidd-test-missing does not exist; nothing was written",
    );
    // With the table of this machine's disks, from /sys/block.
    for line in ocidd::disks::table(&ocidd::disks::list()) {
        assert!(run.stderr.contains(&line), "{line}\n{}", run.stderr);
    }
    assert!(
        !std::path::Path::new("/dev/ocidd-test-missing").exists(),
        "created a file in /dev"
    );
    let of = format!("dd.of={}", dir.path().display());
    install_words(&["oci.tag=r.example/d:v1", &of, "dd.bs=1M"])
        .assert_failed(5, "neither a block device nor a regular file");
    // Hints that no disk here matches: nothing is written, and the table says what there is.
    let run = install_words(&[
        "oci.tag=r.example/d:v1",
        "dd.match=serial=ocidd-no-such-serial",
        "dd.bs=1M",
    ]);
    run.assert_failed(5, "no disk matches the hints serial=ocidd-no-such-serial");
    assert!(run.stderr.contains("disks here"), "{}", run.stderr);
}

#[test]
fn mounted_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let device = LoopDevice::new(dir.path(), 16 * MIB);
    let mkfs = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&device.device)
        .status()
        .unwrap();
    assert!(mkfs.success());
    let mount_point = dir.path().join("mnt");
    fs::create_dir(&mount_point).unwrap();
    let mounted = std::process::Command::new("mount")
        .arg(&device.device)
        .arg(&mount_point)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount failed");
    let run = install_words(&[
        "oci.tag=r.example/d:v1",
        &format!("dd.of={}", device.device.display()),
        "dd.bs=1M",
    ]);
    let _ = std::process::Command::new("umount")
        .arg(&mount_point)
        .status();
    run.assert_failed(5, "is mounted on");
}

#[test]
fn registry_side_failures() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let target = target_file(dir.path(), "t.img", 4 * MIB);
    let image = image_bytes(MIB, 20);
    let source = write_file(dir.path(), "disk.raw", &image);
    push(&source, &format!("{}/disks/ok:v1", registry.host()), "gzip");

    install_tag(&format!("{}/disks/ok:nope", registry.host()), &target, &[])
        .assert_failed(3, "MANIFEST_UNKNOWN");
    install_tag(&format!("{}/disks/none:v1", registry.host()), &target, &[])
        .assert_failed(3, "404");
    install_blob(
        &format!("{}/disks/ok@sha256:{HEX}", registry.host()),
        &target,
    )
    .assert_failed(3, "BLOB_UNKNOWN");
    // Nothing listens there.
    let closed = free_port();
    let run = install_tag(
        &format!("127.0.0.1:{closed}/disks/ok:v1"),
        &target,
        &["oci.retries=1"],
    );
    run.assert_failed(3, "Connection refused");
    assert!(
        run.stderr.contains("gave up after 1 retries"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("ocidd: retrying in "), "{}", run.stderr);
    // TLS required (no oci.allow_no_tls) but the registry is plain HTTP.
    let of = format!("dd.of={}", target.display());
    install_words(&[
        &format!("oci.tag={}/disks/ok:v1", registry.host()),
        &of,
        "dd.bs=1M",
    ])
    .assert_failed(3, "oci.allow_no_tls");
    assert_untouched(&target);
}

#[test]
fn manifests_without_exactly_one_image_layer_exit_4() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let target = target_file(dir.path(), "t.img", 4 * MIB);
    let blob = gzip(&image_bytes(MIB, 21));
    registry.put_image("disks/bad", "empty", &[]);
    registry.put_image("disks/bad", "two", &[(GZIP, &blob), (ZSTD, &blob)]);
    registry.put_image(
        "disks/bad",
        "wasm",
        &[("application/vnd.wasm.content.layer.v1+wasm", &blob)],
    );
    let host = registry.host();
    install_tag(&format!("{host}/disks/bad:empty"), &target, &[])
        .assert_failed(4, "exactly one disk-image layer");
    install_tag(&format!("{host}/disks/bad:two"), &target, &[]).assert_failed(4, "but has 2");
    install_tag(&format!("{host}/disks/bad:wasm"), &target, &[])
        .assert_failed(4, "layers: application/vnd.wasm.content.layer.v1+wasm (");

    // An index without this platform lists the ones it has.
    let body = registry.image_manifest("disks/bad", OCI_MANIFEST, &[(GZIP, &blob)], "");
    let digest = registry.put_manifest("disks/bad", "s390x", OCI_MANIFEST, &body);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":{},"platform":{{"architecture":"s390x","os":"linux"}}}}]}}"#,
        body.len()
    );
    registry.put_manifest("disks/bad", "index", OCI_INDEX, &index);
    install_tag(&format!("{host}/disks/bad:index"), &target, &[])
        .assert_failed(4, "it has: linux/s390x");
    assert_untouched(&target);
}

#[test]
fn manifest_that_is_not_json_exits_4() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let target = target_file(dir.path(), "t.img", 4 * MIB);
    let source = write_file(dir.path(), "disk.raw", &image_bytes(MIB, 22));
    push(
        &source,
        &format!("{}/disks/html:v1", registry.host()),
        "gzip",
    );
    // A real registry will not store a manifest that is not JSON; a proxy in front can serve
    // one, like a captive portal or a misconfigured front end does.
    let proxy = Proxy::start(registry.port, |request| {
        if request.path.contains("/manifests/") {
            Action::Forward(Forward {
                replace_body: Some(b"<html>502 Bad Gateway</html>".to_vec()),
                ..Forward::default()
            })
        } else {
            Action::forward()
        }
    });
    install_tag(&format!("{}/disks/html:v1", proxy.host()), &target, &[])
        .assert_failed(4, "the manifest is not valid JSON");
    assert_untouched(&target);
}

#[test]
fn digest_mismatch_wipes_the_target() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(10 * MIB, 23);
    let source = write_file(dir.path(), "disk.raw", &image);
    // As one stream (read in order) and in chunks (read in parallel).
    for (tag, chunk_size) in [("stream", "0"), ("chunked", "4M")] {
        let reference = format!("{}/disks/corrupted:{tag}", registry.host());
        let (_, layer) = push_with(
            &source,
            &reference,
            &["--compression", "gzip", "--chunk-size", chunk_size],
        );
        // Flip bits of the stored blob: in the gzip header's mtime (decodes fine, digest
        // differs), then near the end (corrupt deflate data and a wrong digest).
        let stored = registry.blob_path(&layer);
        let original = fs::read(&stored).unwrap();
        for offset in [5, original.len() - 100_000] {
            let mut corrupted = original.clone();
            corrupted[offset] ^= 0x55;
            fs::write(&stored, &corrupted).unwrap();
            let target = target_file(dir.path(), "t.img", 12 * MIB);
            let run = install_tag(&reference, &target, &[]);
            run.assert_failed(4, "blob digest mismatch");
            assert_no_table_left(&run, &target);
        }
    }
}

#[test]
fn bad_compressed_data_wipes_the_target() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(3 * MIB, 24);
    let good = gzip(&image);
    let truncated = good[..good.len() * 3 / 4].to_vec();
    let mut corrupt = good.clone();
    let n = corrupt.len();
    corrupt[n - 6] ^= 0xff; // the CRC32 trailer
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"trailing garbage after the image");
    let zstd_good = zstd::encode_all(&image[..], 3).unwrap();
    let zstd_truncated = zstd_good[..zstd_good.len() - 100].to_vec();
    let cases: &[(&str, &str, &[u8], &str)] = &[
        ("truncated", GZIP, &truncated, "the gzip data is corrupt"),
        ("crc", GZIP, &corrupt, "the gzip data is corrupt"),
        (
            "trailing",
            GZIP,
            &trailing,
            "32 bytes of data after the end of the gzip image",
        ),
        (
            "ztruncated",
            ZSTD,
            &zstd_truncated,
            "the zstd data is corrupt",
        ),
    ];
    for (tag, media_type, blob, message) in cases {
        registry.put_image("disks/broken", tag, &[(media_type, blob)]);
        let target = target_file(dir.path(), "t.img", 4 * MIB);
        let run = install_tag(
            &format!("{}/disks/broken:{tag}", registry.host()),
            &target,
            &[],
        );
        run.assert_failed(4, message);
        assert_no_table_left(&run, &target);
    }
    // Data that is not gzip at all fails before anything is written.
    registry.put_image("disks/broken", "notgzip", &[(GZIP, &image)]);
    let target = target_file(dir.path(), "t.img", 4 * MIB);
    install_tag(
        &format!("{}/disks/broken:notgzip", registry.host()),
        &target,
        &[],
    )
    .assert_failed(4, "nothing was written to");
    assert_untouched(&target);

    // The same by blob digest.
    let digest = registry.put_blob("disks/broken", &trailing);
    let target = target_file(dir.path(), "t.img", 4 * MIB);
    let run = install_blob(
        &format!("{}/disks/broken@{digest}", registry.host()),
        &target,
    );
    run.assert_failed(4, "32 bytes of data after the end of the gzip image");
    assert_no_table_left(&run, &target);

    // oci.keep_on_error leaves the partial image alone (its old tables were cleared when
    // writing began).
    let target = target_file(dir.path(), "t.img", 4 * MIB);
    let run = install_tag(
        &format!("{}/disks/broken:crc", registry.host()),
        &target,
        &["oci.keep_on_error"],
    );
    run.assert_failed(4, "left as it is");
    assert_start_zeroed(&target);
    assert!(read_prefix(&target, 2 * MIB)[MIB..] == image[MIB..2 * MIB]);
}

#[test]
fn image_larger_than_the_target_exits_5() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(6 * MIB, 25);
    let source = write_file(dir.path(), "disk.raw", &image);
    let reference = format!("{}/disks/big:v1", registry.host());
    let (_, layer) = push(&source, &reference, "gzip");

    // The manifest says how large the image is: refused before writing.
    let target = target_file(dir.path(), "small.img", 5 * MIB);
    install_tag(&reference, &target, &[]).assert_failed(5, "is larger than the target");
    assert_untouched(&target);

    // By blob digest the size shows only while writing: stopped at the end, then wiped.
    let size = 5 * MIB + MIB / 2;
    let target = target_file(dir.path(), "small.img", size);
    let run = install_blob(&format!("{}/disks/big@{layer}", registry.host()), &target);
    run.assert_failed(5, "nothing was written past its end");
    assert!(
        run.stderr.contains("has no partition table"),
        "{}",
        run.stderr
    );
    assert_no_table_left(&run, &target);
    assert_eq!(fs::metadata(&target).unwrap().len(), size as u64);

    // The same onto a loop device.
    let device = LoopDevice::new(dir.path(), size);
    install_blob(
        &format!("{}/disks/big@{layer}", registry.host()),
        &device.device,
    )
    .assert_failed(5, "larger than");
    assert!(device.read(MIB).iter().all(|&b| b == 0));
}

#[test]
fn push_bad_inputs_exit_2_and_push_nothing() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = write_file(dir.path(), "disk.raw", &image_bytes(MIB, 80));
    let empty = write_file(dir.path(), "empty.raw", b"");
    let missing = dir.path().join("missing.raw");
    let reference = format!("{}/disks/pushed:v1", registry.host());
    let push_run = |args: &[&str], file: &std::path::Path| {
        Run::from(
            ocidd()
                .args(["push", "--plain-http"])
                .args(args)
                .arg(file)
                .arg(&reference)
                .output()
                .unwrap(),
        )
    };
    let not_pem = write_file(dir.path(), "not-a-ca.pem", b"not a certificate\n");
    let not_pem_message = format!(
        "the CA file {} holds no PEM certificates",
        not_pem.display()
    );
    let cases: [(&[&str], &std::path::Path, &str); 6] = [
        (&[], &missing, "opening"),
        (
            &["--ca", &not_pem.display().to_string()],
            &image,
            &not_pem_message,
        ),
        (&[], &empty, "is empty"),
        (
            &["--level", "15"],
            &image,
            "--level 15 is not a gzip level (1-9)",
        ),
        (
            &["--compression", "zstd", "--level", "0"],
            &image,
            "--level 0 is not a zstd level (1-22)",
        ),
        (
            &["--compression", "none", "--level", "3"],
            &image,
            "--level does not apply to --compression none",
        ),
    ];
    for (args, file, message) in cases {
        push_run(args, file).assert_failed(2, message);
    }
    // Flag values clap checks (its message comes with a usage hint).
    for (args, message) in [
        (["--chunk-size", "3k"], "\"3k\" is not a chunk size"),
        (["--platform", "linux"], "\"linux\" is not a platform"),
    ] {
        let run = push_run(&args, &image);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains(message), "{}", run.stderr);
    }
    // Nothing reached the tag.
    let target = write_file(dir.path(), "out.img", b"");
    install_tag(&reference, &target, &[]).assert_failed(3, "MANIFEST_UNKNOWN");
}

#[test]
fn uki_bad_inputs_exit_2_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Any EFI binary stands in for the kernel: systemd's stub itself.
    let kernel = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub".to_string();
    let initrd = write_file(dir.path(), "initrd.img", b"070701")
        .display()
        .to_string();
    let not_efi = write_file(dir.path(), "Image.gz", b"\x1f\x8b not a PE")
        .display()
        .to_string();
    let output = dir.path().join("node.efi");
    let out = output.display().to_string();
    let made = Run::from(
        ocidd()
            .args(["uki", "--linux", &kernel, "--initrd", &initrd, "-o", &out])
            .output()
            .unwrap(),
    );
    assert_eq!(made.code, 0, "{}", made.stderr);
    let uki = output.display().to_string();
    let missing = dir.path().join("missing").display().to_string();
    let other = dir.path().join("other.efi").display().to_string();
    let cases: [(Vec<&str>, String); 7] = [
        (
            vec!["--initrd", &initrd, "-o", &other],
            "ocidd uki needs --linux KERNEL".into(),
        ),
        (
            vec!["--linux", &kernel, "-o", &other],
            "ocidd uki needs --initrd FILE".into(),
        ),
        (
            vec!["--linux", &kernel, "--initrd", &initrd],
            "ocidd uki needs --output PATH".into(),
        ),
        (
            vec!["--linux", &not_efi, "--initrd", &initrd, "-o", &other],
            format!("--linux {not_efi} is not an EFI binary"),
        ),
        (
            vec!["--linux", &missing, "--initrd", &initrd, "-o", &other],
            format!("reading --linux {missing}"),
        ),
        (
            vec![
                "--linux", &kernel, "--initrd", &initrd, "--stub", &uki, "-o", &other,
            ],
            format!("--stub {uki}: it has a .osrel section already: it is a UKI, not a stub"),
        ),
        (
            vec![
                "--linux",
                &kernel,
                "--initrd",
                &initrd,
                "-o",
                &other,
                "dd.bs=4M",
                "oci.tga=x",
            ],
            "unknown parameter oci.tga".into(),
        ),
    ];
    for (args, message) in cases {
        Run::from(ocidd().arg("uki").args(&args).output().unwrap()).assert_failed(2, &message);
        assert!(!Path::new(&other).exists(), "{args:?} wrote {other}");
    }
}
