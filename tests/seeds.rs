//! Each machine's identity after the image: a config drive (`ocidd.configdrive=`) or a NoCloud
//! seed from parts (`ocidd.nocloud=`) lands in a new partition at the disk's end, on GPT and
//! MBR images, from a stream and from chunks; the tables verify (`sgdisk -v`, `sfdisk -V`),
//! and cloud-init's tools (blkid, isoinfo, mtools) read it back. What cannot work is refused
//! before anything is written, and a seed's contents never reach the console.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::files::FileServer;
use common::*;

/// A secret the seeds carry, which no output may show.
const SECRET: &str = "s3cret-root-password";

/// A config drive as Ironic's users make one: ISO9660 labelled `label`, with the OpenStack
/// layout's meta_data.json.
fn config_drive_iso(dir: &Path, label: &str) -> PathBuf {
    let tree = dir.join(format!("tree-{label}"));
    fs::create_dir_all(tree.join("openstack/latest")).unwrap();
    fs::write(
        tree.join("openstack/latest/meta_data.json"),
        format!(r#"{{"uuid": "node-1", "hostname": "node-1", "admin_pass": "{SECRET}"}}"#),
    )
    .unwrap();
    let iso = dir.join(format!("{label}.iso"));
    run_tool(
        "genisoimage",
        &[
            "-quiet",
            "-R",
            "-J",
            "-V",
            label,
            "-o",
            iso.to_str().unwrap(),
            tree.to_str().unwrap(),
        ],
    );
    iso
}

/// An image of `size` bytes with one partition from 1 MiB, under an MBR or a GPT.
fn disk_image(dir: &Path, name: &str, size: usize, table: &str) -> PathBuf {
    let path = write_file(dir, name, &image_bytes(size, 61));
    let mut sfdisk = Command::new("sfdisk")
        .arg("--quiet")
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("running sfdisk");
    use std::io::Write;
    let script = match table {
        "gpt" => "label: gpt\nstart=2048, size=8192, type=linux, name=root\n".to_string(),
        "dos" => "label: dos\nstart=2048, size=8192, type=83\n".to_string(),
        // Four primaries: no entry is left.
        _ => "label: dos\nstart=2048, size=2048, type=83\nsize=2048, type=83\nsize=2048, type=83\nsize=2048, type=83\n".to_string(),
    };
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk failed");
    path
}

/// The partitions of the disk image at `path`: (number, start, size) in bytes, and type.
fn partitions(path: &Path) -> Vec<(u64, u64, String)> {
    let json = run_tool("sfdisk", &["--json", path.to_str().unwrap()]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap() * 512,
                p["size"].as_u64().unwrap() * 512,
                p["type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The bytes of the last partition of `disk`, as a file.
fn last_partition(disk: &Path, dir: &Path) -> (PathBuf, (u64, u64, String)) {
    let last = partitions(disk).pop().expect("no partitions");
    let data = fs::read(disk).unwrap();
    let part = write_file(
        dir,
        "partition.img",
        &data[last.0 as usize..(last.0 + last.1) as usize],
    );
    (part, last)
}

fn label_of(path: &Path) -> String {
    run_tool(
        "blkid",
        &["-p", "-o", "value", "-s", "LABEL", path.to_str().unwrap()],
    )
    .trim()
    .to_string()
}

fn assert_secret_kept(run: &Run) {
    assert!(
        !run.stderr.contains(SECRET) && !run.stdout.contains(SECRET),
        "a seed's contents reached the console:\n{}",
        run.stderr
    );
}

#[test]
fn a_config_drive_lands_in_a_new_gpt_partition_at_the_disk_end() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    fs::create_dir(&served).unwrap();
    let iso = config_drive_iso(dir.path(), "config-2");
    fs::write(served.join("node-1.iso.gz"), gzip(&fs::read(&iso).unwrap())).unwrap();
    let server = FileServer::start(&served);
    let url = format!(
        "ocidd.configdrive=http://127.0.0.1:{}/node-1.iso.gz",
        server.port
    );
    let source = disk_image(dir.path(), "gpt.raw", 8 * MIB, "gpt");
    let image = fs::read(&source).unwrap();
    for (tag, chunk_size) in [("stream", "0"), ("chunked", "1M")] {
        let reference = format!("{}/disks/gpt:{tag}", registry.host());
        push_with(&source, &reference, &["--chunk-size", chunk_size]);
        let target = target_file(dir.path(), "disk.img", 100 * MIB);
        let run = install_tag(&reference, &target, &[&url]);
        run.assert_installed();
        assert!(
            run.stderr
                .contains("ISO9660 config drive labelled config-2")
                && run.stderr.contains("written into partition 2 of"),
            "{tag}: {}",
            run.stderr
        );
        assert_secret_kept(&run);
        let verify = run_tool("sgdisk", &["-v", target.to_str().unwrap()]);
        assert!(verify.contains("No problems found"), "{tag}: {verify}");
        // The image's own partition is as it was; the new one ends at the disk's end.
        let on_disk = fs::read(&target).unwrap();
        assert!(on_disk[MIB..image.len() - MIB] == image[MIB..image.len() - MIB]);
        let (part, (start, size, kind)) = last_partition(&target, dir.path());
        assert_eq!(kind, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "{tag}");
        assert!(size >= 64 * MIB as u64, "{tag}: {size}");
        assert!(start + size > 99 * MIB as u64, "{tag}: {start} {size}");
        assert_eq!(label_of(&part), "config-2");
        let listing = run_tool("isoinfo", &["-R", "-f", "-i", part.to_str().unwrap()]);
        assert!(
            listing.contains("/openstack/latest/meta_data.json"),
            "{listing}"
        );
    }
    // An empty file grows by the seed's room.
    let reference = format!("{}/disks/gpt:stream", registry.host());
    let grown = write_file(dir.path(), "grown.img", b"");
    install_tag(&reference, &grown, &[&url]).assert_installed();
    let verify = run_tool("sgdisk", &["-v", grown.to_str().unwrap()]);
    assert!(verify.contains("No problems found"), "{verify}");
    let (part, _) = last_partition(&grown, dir.path());
    assert_eq!(label_of(&part), "config-2");
}

#[test]
fn a_nocloud_seed_is_built_from_its_parts_on_an_mbr_disk() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served/nocloud/node-7");
    fs::create_dir_all(&served).unwrap();
    let user_data = format!("#cloud-config\nhostname: node-7\npassword: {SECRET}\n");
    fs::write(served.join("user-data"), &user_data).unwrap();
    fs::write(served.join("meta-data"), "instance-id: node-7\n").unwrap();
    fs::write(
        served.join("network-config"),
        "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n",
    )
    .unwrap();
    let server = FileServer::start(&dir.path().join("served"));
    let source = disk_image(dir.path(), "mbr.raw", 8 * MIB, "dos");
    let reference = format!("{}/disks/mbr:v1", registry.host());
    push(&source, &reference, "zstd");
    let target = target_file(dir.path(), "disk.img", 100 * MIB);
    let word = format!(
        "ocidd.nocloud=http://127.0.0.1:{}/nocloud/node-7/",
        server.port
    );
    let run = install_tag(&reference, &target, &[&word]);
    run.assert_installed();
    assert_secret_kept(&run);
    assert!(
        run.stderr.contains("FAT seed labelled CIDATA")
            && run.stderr.contains("partition 2 of")
            && run.stderr.contains("MBR"),
        "{}",
        run.stderr
    );
    let check = run_tool("sfdisk", &["-V", target.to_str().unwrap()]);
    assert!(check.contains("No errors detected"), "{check}");
    let (part, (start, size, kind)) = last_partition(&target, dir.path());
    assert_eq!(kind, "83");
    assert_eq!(start + size, 100 * MIB as u64);
    assert_eq!(label_of(&part).to_ascii_uppercase(), "CIDATA");
    let listing = run_tool("mdir", &["-b", "-i", part.to_str().unwrap(), "::"]);
    for name in ["user-data", "meta-data", "network-config"] {
        assert!(listing.contains(name), "{name} missing: {listing}");
    }
    assert!(!listing.contains("vendor-data"), "{listing}");
    let copied = run_tool("mtype", &["-i", part.to_str().unwrap(), "::user-data"]);
    assert_eq!(copied, user_data);
}

#[test]
fn what_cannot_take_a_seed_is_refused_before_anything_is_written() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    fs::create_dir(&served).unwrap();
    let good = config_drive_iso(dir.path(), "config-2");
    fs::copy(&good, served.join("good.iso")).unwrap();
    let other = config_drive_iso(dir.path(), "backup");
    fs::copy(&other, served.join("other.iso")).unwrap();
    // Over 64 MiB: a FAT file system of 65 MiB.
    let big = served.join("big.img");
    fs::write(&big, vec![0u8; 65 * MIB]).unwrap();
    run_tool("mkfs.vfat", &["-n", "CIDATA", big.to_str().unwrap()]);
    let server = FileServer::start(&served);
    let url = |name: &str| format!("ocidd.configdrive=http://127.0.0.1:{}/{name}", server.port);
    let gpt = disk_image(dir.path(), "gpt.raw", 8 * MIB, "gpt");
    let gpt_ref = format!("{}/disks/gpt:v1", registry.host());
    push(&gpt, &gpt_ref, "gzip");
    let four = disk_image(dir.path(), "four.raw", 8 * MIB, "four");
    let four_ref = format!("{}/disks/four:v1", registry.host());
    push(&four, &four_ref, "gzip");
    let cases: [(&str, String, i32, &str); 5] = [
        (&four_ref, url("good.iso"), 4, "four primary partitions"),
        (&gpt_ref, url("big.img"), 2, "larger than 64 MiB"),
        (&gpt_ref, url("other.iso"), 2, "is labelled \"backup\""),
        (&gpt_ref, url("missing.iso"), 3, "HTTP 404 Not Found"),
        (
            &gpt_ref,
            format!("ocidd.nocloud=http://127.0.0.1:{}/nothing/", server.port),
            3,
            "needs meta-data and user-data",
        ),
    ];
    for (reference, word, code, message) in cases {
        let target = target_file(dir.path(), "disk.img", 100 * MIB);
        let run = install_tag(reference, &target, &[&word]);
        run.assert_failed(code, message);
        assert!(
            run.stderr.contains("ocidd.configdrive") || run.stderr.contains("ocidd.nocloud"),
            "the error does not name the word: {}",
            run.stderr
        );
        assert_untouched(&target);
        assert_secret_kept(&run);
    }
    // A disk with no room after the image.
    let target = target_file(dir.path(), "small.img", 40 * MIB);
    let run = install_tag(&gpt_ref, &target, &[&url("good.iso")]);
    run.assert_failed(5, "no room for the seed's partition");
    assert_untouched(&target);
}
