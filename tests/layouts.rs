//! `oci.layout=DIR`: an install from an OCI image layout that a tool we did not write
//! (skopeo) copied from the registry, with the registry gone: the same checks, the chunked
//! path, and what the layout lacks asked of the registry.

mod common;

use std::fs;

use common::*;

#[test]
fn an_install_takes_the_image_from_a_layout_with_the_registry_gone() {
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(24 * MIB, 81);
    let source = write_file(dir.path(), "base.raw", &image);
    let mut registry = Registry::start();
    let reference = format!("{}/disks/base:v1", registry.host());
    push(&source, &reference, "zstd");
    let layout = dir.path().join("layout");
    copy_to_layout(&reference, &layout, "v1");
    registry.stop();

    let target = target_file(dir.path(), "disk.img", 32 * MIB);
    let layout_word = format!("oci.layout={}", layout.display());
    let run = install_tag(&reference, &target, &[&layout_word, "oci.retries=0"]);
    run.assert_installed();
    assert!(
        run.stderr
            .contains(&format!("manifest v1 from layout {}", layout.display())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("chunk"), "{}", run.stderr);
    assert!(read_prefix(&target, image.len()) == image);
}

#[test]
fn what_the_layout_lacks_comes_from_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start();
    let old = write_file(dir.path(), "old.raw", &image_bytes(4 * MIB, 82));
    push(&old, &format!("{}/disks/base:v0", registry.host()), "gzip");
    let layout = dir.path().join("layout");
    copy_to_layout(&format!("{}/disks/base:v0", registry.host()), &layout, "v0");
    let image = image_bytes(4 * MIB, 83);
    let new = write_file(dir.path(), "new.raw", &image);
    let reference = format!("{}/disks/base:v1", registry.host());
    push(&new, &reference, "gzip");

    let target = target_file(dir.path(), "disk.img", 8 * MIB);
    let layout_word = format!("oci.layout={}", layout.display());
    let run = install_tag(&reference, &target, &[&layout_word]);
    run.assert_installed();
    assert!(read_prefix(&target, image.len()) == image);
}

#[test]
fn a_directory_that_is_not_a_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_file(dir.path(), "disk.img", MIB);
    let layout_word = format!("oci.layout={}", dir.path().display());
    let run = install_tag("127.0.0.1:1/disks/base:v1", &target, &[&layout_word]);
    run.assert_failed(2, "not an OCI image layout");
    assert_untouched(&target);
}

#[test]
fn a_layout_blob_that_does_not_match_its_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(4 * MIB, 84);
    let source = write_file(dir.path(), "base.raw", &image);
    let mut registry = Registry::start();
    let reference = format!("{}/disks/base:v1", registry.host());
    let (_, layer) = push(&source, &reference, "gzip");
    let layout = dir.path().join("layout");
    copy_to_layout(&reference, &layout, "v1");
    registry.stop();
    let hex = layer.trim_start_matches("sha256:");
    let blob = layout.join("blobs/sha256").join(hex);
    let mut bytes = fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&blob, bytes).unwrap();

    let target = target_file(dir.path(), "disk.img", 8 * MIB);
    let layout_word = format!("oci.layout={}", layout.display());
    let run = install_tag(&reference, &target, &[&layout_word, "oci.retries=0"]);
    run.assert_failed(4, "blob digest mismatch");
}

#[test]
fn oci_layout_medium_with_no_medium_is_refused_after_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_file(dir.path(), "disk.img", MIB);
    let run = install_tag("127.0.0.1:1/disks/base:v1", &target, &["oci.layout=medium"]);
    run.assert_failed(2, "oci.layout=medium: no disk or CD carries a boot ISO");
    assert_untouched(&target);
}
