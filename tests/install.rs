//! Installs from a real registry into files and loop devices, compared byte for byte.

mod common;

use std::fs;
use std::process::Command;

use common::*;

fn assert_holds(path: &std::path::Path, image: &[u8]) {
    let data = read_prefix(path, image.len());
    assert!(data == image, "{} does not hold the image", path.display());
}

#[test]
fn tag_install_of_each_compression_into_files() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    // Chunks of 1 MiB: a few of them, some all zeros, the last one short.
    let mut image = image_bytes(5 * MIB + 12345, 1);
    image[2 * MIB..3 * MIB + 100].fill(0);
    let source = write_file(dir.path(), "disk.raw", &image);
    for (compression, chunk_size) in [
        ("gzip", "0"),
        ("gzip", "1M"),
        ("zstd", "0"),
        ("zstd", "1M"),
        ("none", "0"),
        ("none", "1M"),
    ] {
        let reference = format!("{}/disks/{compression}:c{chunk_size}", registry.host());
        push_with(
            &source,
            &reference,
            &["--compression", compression, "--chunk-size", chunk_size],
        );

        // A sized file keeps its size; the image lands at its start.
        let sized = target_file(dir.path(), "sized.img", 7 * MIB);
        let run = install_tag(&reference, &sized, &[]);
        run.assert_installed();
        assert_eq!(
            run.stderr.contains(", chunked)"),
            chunk_size != "0",
            "{}",
            run.stderr
        );
        assert_holds(&sized, &image);
        let rest = fs::read(&sized).unwrap();
        assert_eq!(rest.len(), 7 * MIB);
        // Past the image: what was there, but for the last MiB, cleared with the old tables.
        assert!(rest[image.len()..6 * MIB].iter().all(|&b| b == 0xAA));
        assert!(rest[6 * MIB..].iter().all(|&b| b == 0));

        // An empty file grows to the image.
        let empty = write_file(dir.path(), "empty.img", b"");
        install_tag(&reference, &empty, &[]).assert_installed();
        assert!(
            fs::read(&empty).unwrap() == image,
            "{compression} {chunk_size}"
        );
    }
}

#[test]
fn blob_install_detects_the_compression() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(2 * MIB + 777, 2);
    let blobs = [
        ("gzip", gzip(&image)),
        ("zstd", zstd::encode_all(&image[..], 3).unwrap()),
        ("none", image.clone()),
    ];
    for (name, blob) in blobs {
        let digest = registry.put_blob("disks/blob", &blob);
        let target = write_file(dir.path(), &format!("{name}.img"), b"");
        let run = install_blob(&format!("{}/disks/blob@{digest}", registry.host()), &target);
        run.assert_installed();
        assert!(run.stdout.contains(&digest), "{}", run.stdout);
        assert_eq!(fs::read(&target).unwrap(), image, "{name}");
    }
}

#[test]
fn multi_member_gzip_and_pigz_output() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(3 * MIB, 3);
    let mut members = gzip(&image[..MIB]);
    members.extend(gzip(&image[MIB..2 * MIB + 5]));
    members.extend(gzip(&image[2 * MIB + 5..]));
    let reference = format!("{}/disks/members:v1", registry.host());
    registry.put_image("disks/members", "v1", &[(GZIP, &members)]);
    let target = write_file(dir.path(), "members.img", b"");
    install_tag(&reference, &target, &[]).assert_installed();
    assert_eq!(fs::read(&target).unwrap(), image);

    let source = write_file(dir.path(), "disk.raw", &image);
    let pigz = Command::new("pigz")
        .args(["-c", "-p", "2", "-b", "128"])
        .arg(&source)
        .output()
        .expect("running pigz (apt-get install pigz; .ci/run does)");
    assert!(pigz.status.success());
    registry.put_image("disks/pigz", "v1", &[(GZIP, &pigz.stdout)]);
    let target = write_file(dir.path(), "pigz.img", b"");
    install_tag(&format!("{}/disks/pigz:v1", registry.host()), &target, &[]).assert_installed();
    assert_eq!(fs::read(&target).unwrap(), image);
}

#[test]
fn image_index_selects_the_platform() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let amd64 = image_bytes(MIB + 100, 4);
    let arm64 = image_bytes(MIB + 200, 5);
    for (index_type, manifest_type) in [(OCI_INDEX, OCI_MANIFEST), (DOCKER_LIST, DOCKER_MANIFEST)] {
        let mut entries = Vec::new();
        for (arch, image) in [("amd64", &amd64), ("arm64", &arm64)] {
            let body =
                registry.image_manifest("disks/multi", manifest_type, &[(GZIP, &gzip(image))], "");
            let digest = registry.put_manifest("disks/multi", arch, manifest_type, &body);
            entries.push((arch, manifest_type, digest, body.len()));
        }
        registry.put_index("disks/multi", "latest", index_type, &entries);
        let reference = format!("{}/disks/multi:latest", registry.host());

        let native = if cfg!(target_arch = "aarch64") {
            &arm64
        } else {
            &amd64
        };
        let target = write_file(dir.path(), "native.img", b"");
        install_tag(&reference, &target, &[]).assert_installed();
        assert_eq!(&fs::read(&target).unwrap(), native, "{index_type}");

        let target = write_file(dir.path(), "arm.img", b"");
        install_tag(&reference, &target, &["oci.platform=linux/arm64"]).assert_installed();
        assert_eq!(fs::read(&target).unwrap(), arm64, "{index_type}");
    }
}

/// `ocidd push --platform` into one tag, the way operators build a multi-arch install tag.
#[test]
fn push_for_a_platform_builds_the_index_installs_select_from() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("{}/disks/fleet:v1", registry.host());
    // Pushes `image` for `platform`; its messages must say each of `says` (and "replaced"
    // only when one of them does).
    let push_for = |image: &[u8], name: &str, platform: &str, says: &[&str]| {
        let source = write_file(dir.path(), name, image);
        let run = Run::from(
            ocidd()
                .args(["push", "--plain-http", "--platform", platform])
                .arg(&source)
                .arg(&reference)
                .output()
                .expect("running ocidd push"),
        );
        assert_eq!(run.code, 0, "push failed:\n{}", run.stderr);
        assert!(run.stdout.contains("\nindex sha256:"), "{}", run.stdout);
        for said in says {
            assert!(
                run.stderr.contains(said),
                "not {said:?} in:\n{}",
                run.stderr
            );
        }
        let replaces = says.iter().any(|s| s.starts_with("replaced"));
        assert_eq!(run.stderr.contains("replaced"), replaces, "{}", run.stderr);
    };
    let installed = |extra: &[&str]| -> Vec<u8> {
        let target = write_file(dir.path(), "out.img", b"");
        install_tag(&reference, &target, extra).assert_installed();
        fs::read(&target).unwrap()
    };

    // A single-platform image at the tag first: a platform push replaces it, and says so.
    let plain = write_file(dir.path(), "plain.raw", &image_bytes(MIB / 2, 40));
    push(&plain, &reference, "gzip");
    let amd64 = image_bytes(MIB + 100, 41);
    push_for(
        &amd64,
        "amd64.raw",
        "linux/amd64",
        &[
            "replaced the single-platform image sha256:",
            "image index for linux/amd64\n",
        ],
    );
    let arm64 = image_bytes(MIB + 200, 42);
    push_for(
        &arm64,
        "arm64.raw",
        "linux/arm64",
        &["image index for linux/amd64, linux/arm64\n"],
    );
    assert_eq!(installed(&["oci.platform=linux/arm64"]), arm64);
    assert_eq!(installed(&["oci.platform=linux/amd64"]), amd64);

    // A new build for one platform replaces only that entry.
    let amd64_v2 = image_bytes(MIB + 300, 43);
    push_for(
        &amd64_v2,
        "amd64-v2.raw",
        "linux/amd64",
        &[
            "replaced the linux/amd64 entry sha256:",
            "image index for linux/arm64, linux/amd64\n",
        ],
    );
    let native = if cfg!(target_arch = "aarch64") {
        &arm64
    } else {
        &amd64_v2
    };
    assert_eq!(&installed(&[]), native);
    assert_eq!(installed(&["oci.platform=linux/arm64"]), arm64);

    // A platform the index lacks: the error lists what it has.
    let target = write_file(dir.path(), "none.img", b"");
    install_tag(&reference, &target, &["oci.platform=linux/riscv64"])
        .assert_failed(4, "has: linux/arm64, linux/amd64");
}

#[test]
fn install_subcommand_flags_work_like_the_kernel_words() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(MIB / 2, 6);
    let source = write_file(dir.path(), "disk.raw", &image);
    let reference = format!("{}/disks/flags:v1", registry.host());
    push(&source, &reference, "gzip");
    let target = write_file(dir.path(), "out.img", b"");
    let run = Run::from(
        ocidd()
            .args([
                "install",
                "--plain-http",
                "--tag",
                &reference,
                "--bs",
                "4k",
                "--target",
            ])
            .arg(&target)
            .output()
            .unwrap(),
    );
    run.assert_installed();
    assert_eq!(fs::read(&target).unwrap(), image);

    let help = Run::from(ocidd().arg("--help").output().unwrap());
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("push") && help.stdout.contains("install"));
    let version = Run::from(ocidd().arg("--version").output().unwrap());
    assert!(version.stdout.starts_with("ocidd "), "{}", version.stdout);
}

#[test]
fn pushed_images_are_plain_gzip_that_gunzip_reads() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(2 * MIB, 7);
    let source = write_file(dir.path(), "disk.raw", &image);
    let (_, layer) = push(
        &source,
        &format!("{}/disks/plain:v1", registry.host()),
        "gzip",
    );
    // What the original pipeline does: fetch the blob, gunzip it.
    let blob = reqwest::blocking::get(format!("{}/v2/disks/plain/blobs/{layer}", registry.url()))
        .unwrap()
        .bytes()
        .unwrap();
    let gunzip = write_file(dir.path(), "blob.gz", &blob);
    let output = Command::new("gzip")
        .arg("-dc")
        .arg(&gunzip)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(output.stdout, image);

    // The manifest says what the image is.
    let manifest: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("{}/v2/disks/plain/manifests/v1", registry.url()))
        .header("accept", OCI_MANIFEST)
        .send()
        .unwrap()
        .json()
        .unwrap();
    // One layer, the disk, as Ironic and oras read artifacts; the chunk index is the config.
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    let layer_json = &manifest["layers"][0];
    assert_eq!(layer_json["mediaType"], GZIP);
    assert_eq!(layer_json["digest"], layer.as_str());
    assert_eq!(
        layer_json["annotations"]["ocidd.image.size"],
        image.len().to_string()
    );
    assert_eq!(
        layer_json["annotations"]["ocidd.image.digest"],
        sha256(&image)
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.ocidd.chunk-index.v1+json"
    );
}

#[test]
fn loop_device_installs_by_tag_and_by_blob() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(3 * MIB, 8);
    let source = write_file(dir.path(), "disk.raw", &image);
    let reference = format!("{}/disks/loop:v1", registry.host());
    let (_, layer) = push(&source, &reference, "zstd");
    let device = LoopDevice::new(dir.path(), 8 * MIB);
    install_tag(&reference, &device.device, &[]).assert_installed();
    assert_eq!(device.read(image.len()), image);

    let other = image_bytes(2 * MIB, 9);
    let digest = registry.put_blob("disks/loop", &gzip(&other));
    install_blob(
        &format!("{}/disks/loop@{digest}", registry.host()),
        &device.device,
    )
    .assert_installed();
    assert_eq!(device.read(other.len()), other);
    assert_ne!(layer, digest);
}

/// A GPT disk with an ext4 partition populated from a directory, as a real image is made.
fn realistic_image(dir: &std::path::Path) -> Vec<u8> {
    let disk = dir.join("gpt.img");
    let root = dir.join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hostname"), "installed-by-ocidd\n").unwrap();
    fs::write(root.join("data.bin"), image_bytes(6 * MIB, 10)).unwrap();
    fs::File::create(&disk)
        .unwrap()
        .set_len(48 * MIB as u64)
        .unwrap();
    gpt_label(&disk);
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "offset=1048576", "-L", "root", "-d"])
        .arg(&root)
        .arg(&disk)
        .arg("40M")
        .status()
        .expect("running mkfs.ext4 (e2fsprogs)");
    assert!(mkfs.success());
    fs::read(&disk).unwrap()
}

#[test]
fn realistic_gpt_ext4_image_onto_a_loop_device() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = realistic_image(dir.path());
    let source = write_file(dir.path(), "gpt.raw", &image);
    let reference = format!("{}/disks/gpt:v1", registry.host());
    push(&source, &reference, "gzip");
    let device = LoopDevice::new(dir.path(), 64 * MIB);
    let run = install_tag(&reference, &device.device, &["dd.bs=1M"]);
    run.assert_installed();
    // The image, but for the GPT's backup moved to the end of the larger disk: the primary
    // header (LBA 1) and the protective MBR's size changed; the entries did not.
    let on_disk = device.read(image.len());
    assert!(on_disk[..446 + 12] == image[..446 + 12]);
    assert!(
        on_disk[1024..] == image[1024..],
        "loop device does not hold the image"
    );
    assert_gpt_consistent(&device.device);

    // The partition table was re-read without complaint (whether partitions show depends on
    // the kernel: the QEMU boot test checks that), and the file system checks clean.
    assert!(!run.stderr.contains("partition table"), "{}", run.stderr);
    let partition = Command::new("losetup")
        .args([
            "--find",
            "--show",
            "--offset",
            "1048576",
            "--sizelimit",
            "41943040",
        ])
        .arg(&device.device)
        .output()
        .unwrap();
    assert!(partition.status.success());
    let partition = String::from_utf8_lossy(&partition.stdout)
        .trim()
        .to_string();
    let fsck = Command::new("e2fsck")
        .args(["-f", "-n", &partition])
        .output()
        .unwrap();
    let _ = Command::new("losetup").args(["-d", &partition]).status();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}
