//! The disk images the field already has, made by their own producers (xz, the ORAS Python
//! SDK, tar and skopeo, an index in Ironic's shape, an earlier ocidd), install; and what
//! ocidd pushes, Ironic's own code reads. docs/image-conventions.md describes each shape.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::python::run_script;
use common::*;

/// A 24 MiB image with a GPT, text and noise, and its bytes.
fn disk(dir: &Path, seed: u64) -> (std::path::PathBuf, Vec<u8>) {
    let path = write_file(dir, "disk.img", &image_bytes(24 * MIB, seed));
    gpt_label(&path);
    let image = fs::read(&path).unwrap();
    (path, image)
}

/// The target holds the image, but for the GPT's backup moved to the end of the larger
/// disk (the primary header and the protective MBR's size changed), and its GPT is
/// consistent.
fn assert_holds(target: &Path, image: &[u8]) {
    let held = read_prefix(target, image.len());
    assert!(
        held[..446 + 12] == image[..446 + 12],
        "the boot code differs"
    );
    assert!(
        held[1024..] == image[1024..],
        "the target differs from the image"
    );
    assert_gpt_consistent(target);
}

fn tool(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program}: {e} (cargo xtask deps installs it)");
        });
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn xz_images_install_whether_in_many_blocks_or_one() {
    let dir = tempfile::tempdir().unwrap();
    let (path, image) = disk(dir.path(), 91);
    let registry = Registry::start();
    let host = registry.host();
    let cases = [
        (
            "blocks",
            "application/octet-stream+xz",
            "-T2 --block-size=4MiB",
        ),
        ("single", "application/x-xz", "-T1"),
    ];
    for (tag, media_type, options) in cases {
        let packed = dir.path().join(format!("{tag}.xz"));
        let script = format!(
            "xz -1 {options} -c {} > {}",
            path.display(),
            packed.display()
        );
        tool("sh", &["-c", &script]);
        let xz = fs::read(&packed).unwrap();
        registry.put_image("disks/xz", tag, &[(media_type, &xz)]);
        let target = target_file(dir.path(), &format!("{tag}.target"), 32 * MIB);
        let run = install_tag(&format!("{host}/disks/xz:{tag}"), &target, &[]);
        run.assert_installed();
        assert!(run.stderr.contains(", xz)"), "{}", run.stderr);
        assert_holds(&target, &image);

        // A corrupted block: the digest, checked before the tables are written, says so.
        let mut corrupt = xz.clone();
        let middle = corrupt.len() / 2;
        corrupt[middle] ^= 0x40;
        registry.put_image("disks/xz", &format!("{tag}-bad"), &[(media_type, &corrupt)]);
        let run = install_tag(&format!("{host}/disks/xz:{tag}-bad"), &target, &[]);
        run.assert_failed(4, "corrupt");
        assert_no_table_left(&run, &target);

        // oci.blob: told xz by its magic.
        let digest = sha256(&xz);
        let target = target_file(dir.path(), &format!("{tag}.blob"), 32 * MIB);
        install_blob(&format!("{host}/disks/xz@{digest}"), &target).assert_installed();
        assert_holds(&target, &image);
    }
}

/// KubeVirt's proposal VEP 256: untarred disk layers, named; of two, the first installs and
/// the install says so.
#[test]
fn kubevirt_disk_layers_install_the_first_named_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (_, image) = disk(dir.path(), 98);
    let registry = Registry::start();
    let root = zstd::encode_all(image.as_slice(), 3).unwrap();
    let data = zstd::encode_all(&[0u8; 4096][..], 3).unwrap();
    let layer = |blob: &[u8], name: &str| {
        format!(
            r#"{{"mediaType":"application/vnd.kubevirt.disk.raw+zstd","digest":"{}","size":{},"annotations":{{"io.kubevirt.disk.name":"{name}","io.kubevirt.disk.size":"{}"}}}}"#,
            registry.put_blob("kubevirt/vm", blob),
            blob.len(),
            image.len()
        )
    };
    let config = registry.put_blob("kubevirt/vm", b"{}");
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config}","size":2}},"layers":[{},{}]}}"#,
        layer(&root, "rootdisk"),
        layer(&data, "datadisk")
    );
    registry.put_manifest("kubevirt/vm", "v1", OCI_MANIFEST, &manifest);
    let target = target_file(dir.path(), "disk.target", 32 * MIB);
    let run = install_tag(&format!("{}/kubevirt/vm:v1", registry.host()), &target, &[]);
    run.assert_installed();
    assert!(
        run.stderr
            .contains("the manifest has 2 disks; installing the first, rootdisk, not datadisk"),
        "{}",
        run.stderr
    );
    assert_holds(&target, &image);
}

#[test]
fn what_the_oras_python_sdk_pushes_with_no_media_type_installs() {
    let dir = tempfile::tempdir().unwrap();
    let (path, image) = disk(dir.path(), 92);
    tool("zstd", &["-q", "-3", &path.display().to_string()]);
    let registry = Registry::start();
    let host = registry.host();
    // As `oras push REF disk.img` does: the file, the default layer type, its title.
    let script = "import sys, os, oras.client\n\
        os.chdir(sys.argv[1])\n\
        c = oras.client.OrasClient(insecure=True)\n\
        c.push(files=[sys.argv[2]], target=sys.argv[3], quiet=True)\n";
    let dir_text = dir.path().display().to_string();
    for (file, tag) in [("disk.img", "raw"), ("disk.img.zst", "zst")] {
        let reference = format!("{host}/disks/oras:{tag}");
        run_script(script, &[&dir_text, file, &reference]);
        let manifest = registry
            .client()
            .get(format!("{}/v2/disks/oras/manifests/{tag}", registry.url()))
            .header("accept", OCI_MANIFEST)
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(
            manifest.contains(r#""mediaType": "application/vnd.oci.image.layer.v1.tar""#)
                || manifest.contains(r#""mediaType":"application/vnd.oci.image.layer.v1.tar""#),
            "{manifest}"
        );
        let target = target_file(dir.path(), &format!("{tag}.target"), 32 * MIB);
        let run = install_tag(&reference, &target, &[]);
        run.assert_installed();
        assert!(run.stderr.contains("told by its content"), "{}", run.stderr);
        assert_holds(&target, &image);
    }
}

/// A containerDisk as KubeVirt's docs make one (`ADD disk.img /disk/`, owned by qemu, uid
/// 107), built with tar and gzip into an OCI layout and copied to the registry by skopeo.
#[test]
fn a_container_disk_copied_by_skopeo_installs() {
    let dir = tempfile::tempdir().unwrap();
    let (path, image) = disk(dir.path(), 93);
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("disk")).unwrap();
    fs::rename(&path, root.join("disk/downloaded.img")).unwrap();
    let tar = dir.path().join("layer.tar");
    tool(
        "tar",
        &[
            "--owner=107",
            "--group=107",
            "--numeric-owner",
            "--sort=name",
            "-C",
            &root.display().to_string(),
            "-cf",
            &tar.display().to_string(),
            "disk",
        ],
    );
    let diff_id = sha256(&fs::read(&tar).unwrap());
    tool("gzip", &["-n", "-6", &tar.display().to_string()]);
    let layer = fs::read(dir.path().join("layer.tar.gz")).unwrap();

    let layout = dir.path().join("layout");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let digest = sha256(data);
        fs::write(blobs.join(digest.trim_start_matches("sha256:")), data).unwrap();
        digest
    };
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    let config_digest = put(config.as_bytes());
    let layer_digest = put(&layer);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let manifest_digest = put(manifest.as_bytes());
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{manifest_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();

    let registry = Registry::start();
    let reference = format!("{}/kubevirt/disk:v1", registry.host());
    tool(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{reference}"),
        ],
    );
    let target = target_file(dir.path(), "disk.target", 32 * MIB);
    let run = install_tag(&reference, &target, &[]);
    run.assert_installed();
    assert_holds(&target, &image);
}

/// An index as Ironic's and Metal3's users push them: `x86_64` entries told apart by
/// `disktype`, and a bootc container image for amd64 next to them.
#[test]
fn an_index_in_ironics_shape_installs_its_raw_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (_, image) = disk(dir.path(), 94);
    let registry = Registry::start();
    let repo = "disks/ironic";
    let zst = zstd::encode_all(image.as_slice(), 3).unwrap();
    let raw = registry.image_manifest(repo, OCI_MANIFEST, &[("application/zstd", &zst)], "");
    let raw_digest = registry.put_manifest(repo, "raw", OCI_MANIFEST, &raw);
    // Never fetched: the raw entry comes first.
    let qcow2 = registry.image_manifest(repo, OCI_MANIFEST, &[(RAW, b"QFI\xfb")], "");
    let qcow2_digest = registry.put_manifest(repo, "qcow2", OCI_MANIFEST, &qcow2);
    let bootc = bootc_manifest(&registry, repo);
    let bootc_digest = registry.put_manifest(repo, "bootc", OCI_MANIFEST, &bootc);
    let entry = |digest: &str, size: usize, arch: &str, disktype: Option<&str>| {
        let annotations = disktype
            .map(|d| format!(r#","annotations":{{"disktype":"{d}"}}"#))
            .unwrap_or_default();
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":{size},"platform":{{"architecture":"{arch}","os":"linux"}}{annotations}}}"#
        )
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{},{}]}}"#,
        entry(&bootc_digest, bootc.len(), "amd64", None),
        entry(&qcow2_digest, qcow2.len(), "x86_64", Some("qcow2")),
        entry(&raw_digest, raw.len(), "x86_64", Some("raw")),
    );
    registry.put_manifest(repo, "v1", OCI_INDEX, &index);
    let target = target_file(dir.path(), "disk.target", 32 * MIB);
    let reference = format!("{}/{repo}:v1", registry.host());
    let run = install_tag(&reference, &target, &["oci.platform=linux/amd64"]);
    run.assert_installed();
    assert!(
        run.stderr
            .contains("3 entries for linux/amd64; installing linux/x86_64 (disktype raw)"),
        "{}",
        run.stderr
    );
    assert_holds(&target, &image);

    // Without disktypes, the container image is passed over, saying so.
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{}]}}"#,
        entry(&bootc_digest, bootc.len(), "amd64", None),
        entry(&raw_digest, raw.len(), "x86_64", None),
    );
    registry.put_manifest(repo, "v2", OCI_INDEX, &index);
    let reference = format!("{}/{repo}:v2", registry.host());
    let run = install_tag(&reference, &target, &["oci.platform=linux/amd64"]);
    run.assert_installed();
    assert!(
        run.stderr.contains("skipping the index entry linux/amd64")
            && run.stderr.contains("is a container image (2 layers"),
        "{}",
        run.stderr
    );
    // And a tag naming the container image itself is refused, saying what it is.
    let reference = format!("{}/{repo}:bootc", registry.host());
    install_tag(&reference, &target, &[]).assert_failed(4, "is a container image (2 layers");
}

/// A container image's manifest: a container configuration and two tar layers.
fn bootc_manifest(registry: &Registry, repo: &str) -> String {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = registry.put_blob(repo, config);
    let layers: Vec<String> = [b"usr".as_slice(), b"etc".as_slice()]
        .iter()
        .map(|data| {
            let blob = gzip(data);
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}"#,
                registry.put_blob(repo, &blob),
                blob.len()
            )
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        layers.join(",")
    )
}

/// What ocidd pushed before the chunk index moved into the config (the fixture's README
/// says how it was made): both tags install, chunked, from the layout and from a registry.
#[test]
fn an_image_an_earlier_ocidd_pushed_still_installs_chunked() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/ocidd-0.1");
    let layer = fixture
        .join("blobs/sha256/dbb24ab6397819a772fd22f1ff0c1c9447cccae1881a2b46bb262a705b470ce1");
    let mut image = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::MultiGzDecoder::new(fs::File::open(layer).unwrap()),
        &mut image,
    )
    .unwrap();
    assert_eq!(
        sha256(&image),
        "sha256:c6a2d966abb8223b5cb4e5e5c12499c293b52df626ab3381c67a6e2f13342eae"
    );
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start();
    let layout_word = format!("oci.layout={}", fixture.display());
    // skopeo copies the manifest byte for byte; the index (which skopeo would rewrite) is
    // put as it is.
    tool(
        "skopeo",
        &[
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:chunked", fixture.display()),
            &format!("docker://{}/fixture/old:chunked", registry.host()),
        ],
    );
    let index = fs::read_to_string(
        fixture
            .join("blobs/sha256/e7cc637684cd2ccb5ed0bcce414224d9e33b451c8707b05fe2b66fafc6a4d700"),
    )
    .unwrap();
    registry.put_manifest("fixture/old", "index", OCI_INDEX, &index);
    for tag in ["chunked", "index"] {
        let reference = format!("{}/fixture/old:{tag}", registry.host());
        for extra in [vec![], vec![layout_word.as_str()]] {
            let target = target_file(dir.path(), "disk.target", 8 * MIB);
            let run = install_tag(&reference, &target, &extra);
            run.assert_installed();
            assert!(run.stderr.contains(", gzip, chunked)"), "{}", run.stderr);
            assert_holds(&target, &image);
        }
    }
}

/// Ironic's OCI image service (from PyPI) chooses the artifact and downloads its blob with
/// the digest checked, as a conductor does for its agent.
const IRONIC_IDENTIFY: &str = r#"
import json, sys
from ironic.conf import CONF
from ironic.common import image_service
CONF([], project="ironic")
CONF.set_override("permit_fallback_to_http_transport", True, group="oci")
service = image_service.OciImageService()
found = service.identify_specific_image(sys.argv[1], cpu_arch="x86_64")
with open(sys.argv[2], "wb") as out:
    service.download(found["oci_image_manifest_url"], out)
found["verified"] = service.transfer_verified_checksum
print(json.dumps(found))
"#;

#[test]
fn ironic_reads_what_ocidd_pushes_plain_and_as_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let (path, image) = disk(dir.path(), 95);
    let registry = Registry::start();
    for (tag, args, disk_format) in [
        (
            "chunked",
            vec!["--compression", "zstd"],
            serde_json::Value::Null,
        ),
        ("index", vec!["--platform", "linux/amd64"], "raw".into()),
    ] {
        let reference = format!("{}/disks/ironic:{tag}", registry.host());
        let (_, layer) = push_with(&path, &reference, &args);
        let blob = dir.path().join(format!("{tag}.blob"));
        let found = run_script(
            IRONIC_IDENTIFY,
            &[&format!("oci://{reference}"), &blob.display().to_string()],
        );
        let found: serde_json::Value = serde_json::from_str(found.trim()).unwrap();
        assert_eq!(
            found["image_checksum"],
            layer.trim_start_matches("sha256:"),
            "{found}"
        );
        assert_eq!(found["verified"], layer.as_str(), "{found}");
        assert_eq!(found["image_disk_format"], disk_format, "{found}");
        let compression = if tag == "chunked" { "zstd" } else { "gzip" };
        assert_eq!(found["image_compression_type"], compression, "{found}");
        let downloaded = fs::read(&blob).unwrap();
        assert_eq!(sha256(&downloaded), layer);
        let unpacked = match compression {
            "zstd" => zstd::decode_all(downloaded.as_slice()).unwrap(),
            _ => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(
                    &mut flate2::read::MultiGzDecoder::new(downloaded.as_slice()),
                    &mut out,
                )
                .unwrap();
                out
            }
        };
        assert!(
            unpacked == image,
            "{tag}: the blob Ironic chose is not the image"
        );
    }

    // What ocidd pushed before (two layers), Ironic passes over: why the index moved.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/ocidd-0.1");
    let reference = format!("{}/fixture/old:chunked", registry.host());
    tool(
        "skopeo",
        &[
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:chunked", fixture.display()),
            &format!("docker://{reference}"),
        ],
    );
    let script = IRONIC_IDENTIFY.replace(
        "with open",
        "print(json.dumps(found))\nsys.exit(0)\nwith open",
    );
    let found = run_script(&script, &[&format!("oci://{reference}"), "/dev/null"]);
    assert_eq!(found.trim(), "{}", "Ironic read the two-layer manifest");
}

/// A disk with a hole of 8 MiB (whole qcow2 clusters that are never allocated).
fn disk_with_hole(dir: &Path, seed: u64) -> (std::path::PathBuf, Vec<u8>) {
    let mut image = image_bytes(24 * MIB, seed);
    image[8 * MIB..16 * MIB].fill(0);
    let path = write_file(dir, "disk.img", &image);
    gpt_label(&path);
    let image = fs::read(&path).unwrap();
    (path, image)
}

#[test]
fn qcow2_from_qemu_img_installs_plain_compressed_and_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let (path, image) = disk_with_hole(dir.path(), 96);
    let registry = Registry::start();
    let host = registry.host();
    let source = path.display().to_string();
    let cases: [(&str, &[&str], &str); 3] = [
        ("plain", &[], "application/vnd.oci.image.layer.v1.tar"),
        ("deflate", &["-c"], "application/zstd"),
        (
            "zstd",
            &["-c", "-o", "compression_type=zstd"],
            "application/vnd.oci.image.layer.v1.tar",
        ),
    ];
    for (tag, options, media_type) in cases {
        let qcow2 = dir.path().join(format!("{tag}.qcow2"));
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
        args.extend_from_slice(options);
        args.extend([source.as_str(), qcow2.to_str().unwrap()]);
        tool("qemu-img", &args);
        let mut blob = fs::read(&qcow2).unwrap();
        if media_type == "application/zstd" {
            blob = zstd::encode_all(blob.as_slice(), 3).unwrap();
        }
        registry.put_image("disks/qcow2", tag, &[(media_type, &blob)]);
        let target = target_file(dir.path(), &format!("{tag}.target"), 32 * MIB);
        let run = install_tag(&format!("{host}/disks/qcow2:{tag}"), &target, &[]);
        run.assert_installed();
        assert!(
            run.stderr.contains(&format!("({} bytes)", image.len()))
                || run.stdout.contains(&format!("({} bytes)", image.len())),
            "{tag}: not the image's size:\n{}{}",
            run.stdout,
            run.stderr
        );
        assert_holds(&target, &image);
    }

    // qcow2 has no checksums (deflate neither): the layer's digest is what catches a
    // corrupted cluster, before the tables are written.
    let qcow2 = fs::read(dir.path().join("deflate.qcow2")).unwrap();
    let layer_type = "application/vnd.oci.image.layer.v1.tar";
    registry.put_image("disks/qcow2", "corrupt", &[(layer_type, &qcow2)]);
    let mut corrupt = qcow2.clone();
    let at = qcow2.len() / 2;
    for byte in &mut corrupt[at..at + 64] {
        *byte ^= 0x5a;
    }
    fs::write(registry.blob_path(&sha256(&qcow2)), &corrupt).unwrap();
    let target = target_file(dir.path(), "corrupt.target", 32 * MIB);
    let run = install_tag(&format!("{host}/disks/qcow2:corrupt"), &target, &[]);
    run.assert_failed(4, "digest");
    assert_no_table_left(&run, &target);

    // A file cut short says which of the image's clusters it lacks.
    let cut = &qcow2[..qcow2.len() / 2];
    registry.put_image("disks/qcow2", "cut", &[(layer_type, cut)]);
    let run = install_tag(&format!("{host}/disks/qcow2:cut"), &target, &[]);
    run.assert_failed(
        4,
        "the qcow2 file ends before the data of the image's cluster",
    );
    assert_no_table_left(&run, &target);
}

#[test]
fn qcow2_that_needs_more_than_its_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = disk_with_hole(dir.path(), 97);
    let registry = Registry::start();
    let host = registry.host();
    let base = dir.path().join("base.qcow2");
    tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            path.to_str().unwrap(),
            base.to_str().unwrap(),
        ],
    );
    let overlay = dir.path().join("overlay.qcow2");
    tool(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            overlay.to_str().unwrap(),
        ],
    );
    let cases = [
        ("backing", overlay.clone(), "has a backing file"),
        (
            "extended",
            dir.path().join("extended.qcow2"),
            "extended L2 entries",
        ),
        ("encrypted", dir.path().join("encrypted.qcow2"), "encrypted"),
    ];
    tool(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on",
            cases[1].1.to_str().unwrap(),
            "16M",
        ],
    );
    // Encryption, as its header says (crypt_method 1): qemu-img's LUKS creation times
    // PBKDF rounds, which fails on a loaded machine.
    let mut encrypted = fs::read(&base).unwrap();
    encrypted[32..36].copy_from_slice(&1u32.to_be_bytes());
    fs::write(&cases[2].1, encrypted).unwrap();
    for (tag, file, says) in cases {
        let blob = fs::read(&file).unwrap();
        registry.put_image(
            "disks/qcow2",
            tag,
            &[("application/vnd.oci.image.layer.v1.tar", &blob)],
        );
        let target = target_file(dir.path(), "target", 32 * MIB);
        install_tag(&format!("{host}/disks/qcow2:{tag}"), &target, &[]).assert_failed(4, says);
        assert_untouched(&target);
    }
    // The header's size: a disk too small is refused before anything is written.
    let blob = fs::read(&base).unwrap();
    registry.put_image(
        "disks/qcow2",
        "big",
        &[("application/vnd.oci.image.layer.v1.tar", &blob)],
    );
    let target = target_file(dir.path(), "small", 16 * MIB);
    install_tag(&format!("{host}/disks/qcow2:big"), &target, &[])
        .assert_failed(5, "is larger than the target");
    assert_untouched(&target);
}
