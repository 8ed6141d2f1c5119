//! Reinstalling only what changed (`dd.delta`): v1 on the target, then v2 with a few MiB
//! changed, through a byte-counting proxy in front of the real registry; the chunk index's
//! chaining values and image hash (version 3), what happens when they do not add up, when
//! the target changes under the install, and older indexes (versions 1 and 2).

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use common::proxy::{Action, Proxy};
use common::*;

const CHUNK_INDEX: &str = "application/vnd.ocidd.chunk-index.v1+json";

/// A 32 MiB image whose MiBs 26 to 28 are zeros (free space), and the same with `changed`
/// MiB rewritten (1 MiB chunks).
fn versions(changed: &[usize]) -> (Vec<u8>, Vec<u8>) {
    let mut v1 = image_bytes(32 * MIB, 41);
    v1[26 * MIB..29 * MIB].fill(0);
    let mut v2 = v1.clone();
    let noise = image_bytes(MIB, 42);
    for &mib in changed {
        // Not all of the MiB: a package update changes parts of blocks.
        v2[mib * MIB + 4096..mib * MIB + MIB / 2].copy_from_slice(&noise[4096..MIB / 2]);
    }
    (v1, v2)
}

struct Setup {
    registry: Registry,
    link: Proxy,
    dir: tempfile::TempDir,
    v1: Vec<u8>,
    v2: Vec<u8>,
    /// The v2 blob's size.
    blob: u64,
}

impl Setup {
    fn new(changed: &[usize]) -> Setup {
        let registry = Registry::start();
        let link = Proxy::start(registry.port, |_| Action::forward());
        let dir = tempfile::tempdir().unwrap();
        let (v1, v2) = versions(changed);
        let args = ["--compression", "zstd", "--chunk-size", "1M"];
        for (tag, image) in [("v1", &v1), ("v2", &v2)] {
            let file = write_file(dir.path(), &format!("{tag}.img"), image);
            push_with(
                &file,
                &format!("{}/delta/disk:{tag}", registry.host()),
                &args,
            );
        }
        let manifest = manifest(&registry, "v2");
        let layer = manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let blob = fs::metadata(registry.blob_path(&layer)).unwrap().len();
        Setup {
            registry,
            link,
            dir,
            v1,
            v2,
            blob,
        }
    }

    fn reference(&self, tag: &str) -> String {
        format!("{}/delta/disk:{tag}", self.link.host())
    }

    /// A 48 MiB target (a disk larger than the image) holding v1.
    fn target_with_v1(&self) -> std::path::PathBuf {
        let target = target_file(self.dir.path(), "disk.img", 48 * MIB);
        install_tag(&self.reference("v1"), &target, &["dd.bs=1M"]).assert_installed();
        assert_eq!(read_prefix(&target, self.v1.len()), self.v1);
        target
    }

    /// v2's BLAKE3 hash, as `b3sum` prints it, with the `blake3:` prefix.
    fn b3sum(&self) -> String {
        format!("blake3:{}", blake3::hash(&self.v2).to_hex())
    }

    /// Installs `tag` onto `target` with `words`; returns the run and the blob bytes fetched.
    fn install(&self, tag: &str, target: &Path, words: &[&str]) -> (Run, u64) {
        let before = self.link.blob_bytes();
        let run = install_tag(&self.reference(tag), target, words);
        (run, self.link.blob_bytes() - before)
    }
}

fn manifest(registry: &Registry, tag: &str) -> serde_json::Value {
    registry
        .client()
        .get(format!("{}/v2/delta/disk/manifests/{tag}", registry.url()))
        .header("accept", OCI_MANIFEST)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// Pushes a copy of `tag` as `new_tag` whose chunk index `edit` changed.
fn with_index_edited(
    registry: &Registry,
    tag: &str,
    new_tag: &str,
    edit: impl Fn(&mut serde_json::Value),
) {
    let mut manifest = manifest(registry, tag);
    // ocidd push puts the chunk index in the manifest's config.
    let layer = &mut manifest["config"];
    assert_eq!(layer["mediaType"], CHUNK_INDEX);
    let digest = layer["digest"].as_str().unwrap().to_string();
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(registry.blob_path(&digest)).unwrap()).unwrap();
    edit(&mut index);
    let body = serde_json::to_vec(&index).unwrap();
    let new_digest = registry.put_blob("delta/disk", &body);
    layer["digest"] = new_digest.into();
    layer["size"] = body.len().into();
    registry.put_manifest(
        "delta/disk",
        new_tag,
        OCI_MANIFEST,
        &serde_json::to_string(&manifest).unwrap(),
    );
}

#[test]
fn a_delta_reinstall_fetches_only_what_changed() {
    // 3 of 32 chunks changed; the first and last MiB are always fetched and written.
    let s = Setup::new(&[5, 12, 20]);
    let target = s.target_with_v1();
    let (run, fetched) = s.install("v2", &target, &["dd.delta"]);
    run.assert_installed();
    assert_eq!(read_prefix(&target, s.v2.len()), s.v2);
    assert!(
        run.stderr
            .contains("dd.delta: the target holds 27 of 32 chunks"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("dd.delta reused 27 of 32 chunks")
            && run
                .stdout
                .contains(&format!("image {} verified", s.b3sum())),
        "{}",
        run.stdout
    );
    let share = fetched as f64 / s.blob as f64;
    println!("delta-table: 5 of 32 chunks to fetch: {share:.3} of the blob fetched");
    // 5 of 32 chunks are 16 % of the image; they are noise, so a little more of the blob.
    assert!(share < 0.25, "{fetched} of {} bytes fetched", s.blob);

    // Again: everything but the held-back MiBs is there now.
    let (run, fetched) = s.install("v2", &target, &["dd.delta"]);
    run.assert_installed();
    assert_eq!(read_prefix(&target, s.v2.len()), s.v2);
    assert!(
        run.stderr.contains("holds 30 of 32 chunks"),
        "{}",
        run.stderr
    );
    assert!((fetched as f64) < 0.1 * s.blob as f64, "{fetched}");
}

#[test]
fn a_target_written_since_ends_equal_to_the_image() {
    let s = Setup::new(&[7]);
    let target = s.target_with_v1();
    // A booted system wrote to its disk: 2 MiB over chunks 15 and 16, and a byte in 25.
    let mut file = fs::OpenOptions::new().write(true).open(&target).unwrap();
    file.seek(SeekFrom::Start(15 * MIB as u64 + 100)).unwrap();
    file.write_all(&vec![0xEE; 2 * MIB]).unwrap();
    file.seek(SeekFrom::Start(25 * MIB as u64 + 77)).unwrap();
    file.write_all(&[0x01]).unwrap();
    // And into free space, a zero chunk of the image.
    file.seek(SeekFrom::Start(27 * MIB as u64 + 5000)).unwrap();
    file.write_all(b"log line").unwrap();
    drop(file);
    let receiver = common::receiver::Receiver::start();
    let report = format!("ocidd.report={}", receiver.url());
    let (run, _) = s.install("v2", &target, &["dd.delta", &report]);
    run.assert_installed();
    assert_eq!(read_prefix(&target, s.v2.len()), s.v2);
    // The report says what was reused.
    let events = receiver.events();
    let last = events.last().unwrap();
    assert_eq!(last["result"], "SUCCESS");
    assert_eq!(last["chunks"]["total"], 32);
    assert_eq!(last["chunks"]["reused"], 24);
    assert_eq!(last["chunks"]["fetched"], 7);
    assert_eq!(last["chunks"]["zeroed"], 1);
    assert_eq!(last["chunks"]["reused_bytes"], 24 * MIB as u64);
    // Changed: chunk 7; written since: 15, 16, 17, 25, and 27 (zeroed, not fetched); held:
    // 0 and 31.
    assert!(
        run.stderr
            .contains("holds 24 of 32 chunks (24.00 MiB) already; fetching 7"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("zeroing 1"), "{}", run.stderr);
}

#[test]
fn a_blank_disk_with_delta_installs_in_full() {
    let s = Setup::new(&[3]);
    let dir = tempfile::tempdir().unwrap();
    let device = LoopDevice::without_partitions(dir.path(), 40 * MIB);
    // A new disk: zeros.
    fs::write(&device.device, vec![0u8; 40 * MIB]).unwrap();
    let (run, fetched) = s.install("v2", &device.device, &["dd.delta", "dd.bs=1M"]);
    run.assert_installed();
    assert_eq!(device.read(s.v2.len()), s.v2);
    // The zero chunks (26 to 28) the blank disk holds are not fetched; the rest is.
    let index_zero = run
        .stderr
        .lines()
        .find(|l| l.contains("dd.delta: the target holds"))
        .unwrap()
        .to_string();
    println!(
        "delta-table: blank disk: {index_zero}; {fetched} of {} bytes",
        s.blob
    );
    assert!(fetched as f64 > 0.9 * s.blob as f64, "{fetched}");
    assert!(index_zero.contains("holds 3 of 32 chunks"), "{index_zero}");
    assert!(
        run.stdout
            .contains(&format!("image {} verified", s.b3sum())),
        "{}",
        run.stdout
    );
}

/// An index whose chaining value for a chunk names other data than the blob holds, with
/// the image hash left as it was: its chunks do not add up to the image, so it is refused
/// before anything is written, with dd.delta too, even onto a target that holds that other
/// data (which would otherwise be reused).
#[test]
fn an_index_whose_chunks_do_not_add_up_to_the_image_is_refused() {
    let s = Setup::new(&[9]);
    let other = image_bytes(MIB, 44);
    let cv = {
        use blake3::hazmat::HasherExt;
        hex::encode(
            blake3::Hasher::new()
                .set_input_offset(MIB as u64)
                .update(&other)
                .finalize_non_root(),
        )
    };
    with_index_edited(&s.registry, "v2", "tampered", |index| {
        index["chunks"][1]["cv"] = cv.clone().into();
    });
    let target = target_file(s.dir.path(), "full.img", 48 * MIB);
    let run = install_tag(&s.reference("tampered"), &target, &["dd.bs=1M"]);
    run.assert_failed(4, "the chunk index's chunks add up to blake3:");
    assert_untouched(&target);
    // With dd.delta, onto v1 with that other data where chunk 1 goes.
    let target = s.target_with_v1();
    let mut file = fs::OpenOptions::new().write(true).open(&target).unwrap();
    file.seek(SeekFrom::Start(MIB as u64)).unwrap();
    file.write_all(&other).unwrap();
    drop(file);
    let before = fs::read(&target).unwrap();
    let (run, _) = s.install("tampered", &target, &["dd.delta"]);
    run.assert_failed(4, &format!("not to the image {}", s.b3sum()));
    assert_eq!(fs::read(&target).unwrap(), before, "the target was written");
}

/// A chunk the read pass found on the target, changed there while the rest was fetched: the
/// install fails (exit 5) instead of committing an image the target does not hold, and
/// leaves no partition table.
#[test]
fn a_target_that_changes_during_the_fetch_is_not_committed() {
    let s = Setup::new(&[7]);
    let target = s.target_with_v1();
    // The first range of the image's blob is asked for after the read pass (the chunk index
    // is fetched whole, before): change chunk 20 then, and send the blob slowly.
    let changed = std::sync::atomic::AtomicBool::new(false);
    let path = target.clone();
    let slow = Proxy::start(s.registry.port, move |request| {
        let ranged = request.is_blob() && request.header("range").is_some();
        if ranged && !changed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let mut file = fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.seek(SeekFrom::Start(20 * MIB as u64 + 333)).unwrap();
            file.write_all(b"written while ocidd fetched").unwrap();
            file.sync_all().unwrap();
        }
        Action::Forward(common::proxy::Forward {
            throttle: request.is_blob().then_some(4 * MIB as u64),
            ..common::proxy::Forward::default()
        })
    });
    let run = install_tag(
        &format!("{}/delta/disk:v2", slow.host()),
        &target,
        &["dd.delta"],
    );
    run.assert_failed(5, "the target changed during the install: chunk 20");
    assert_no_table_left(&run, &target);
}

/// A version 2 index (SHA-256 per chunk, no image hash) still installs, each chunk checked
/// against its digest; dd.delta says that it cannot use it and installs the whole image.
#[test]
fn version_2_indexes_install_whole_and_their_chunks_are_checked() {
    use sha2::Digest as _;
    let s = Setup::new(&[2]);
    let digests: Vec<String> =
        s.v2.chunks(MIB)
            .map(|chunk| format!("sha256:{}", hex::encode(sha2::Sha256::digest(chunk))))
            .collect();
    let as_v2 = |index: &mut serde_json::Value, tamper: bool| {
        let object = index.as_object_mut().unwrap();
        object.insert("version".into(), 2.into());
        object.remove("imageDigest");
        for (i, chunk) in object["chunks"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .enumerate()
        {
            let chunk = chunk.as_object_mut().unwrap();
            chunk.remove("cv");
            if !chunk.contains_key("zero") {
                let digest = if tamper && i == 9 {
                    &digests[10]
                } else {
                    &digests[i]
                };
                chunk.insert("digest".into(), digest.clone().into());
            }
        }
    };
    with_index_edited(&s.registry, "v2", "v2-index", |index| as_v2(index, false));
    with_index_edited(&s.registry, "v2", "v2-tampered", |index| as_v2(index, true));
    let target = s.target_with_v1();
    let (run, fetched) = s.install("v2-index", &target, &["dd.delta"]);
    run.assert_installed();
    assert_eq!(read_prefix(&target, s.v2.len()), s.v2);
    assert!(
        run.stderr.contains("the chunk index is version 2"),
        "{}",
        run.stderr
    );
    assert!(fetched >= s.blob, "{fetched}");
    let target = target_file(s.dir.path(), "full.img", 48 * MIB);
    let run = install_tag(&s.reference("v2-tampered"), &target, &["dd.bs=1M"]);
    run.assert_failed(4, "chunk 9 does not match its digest in the chunk index");
    assert_no_table_left(&run, &target);
}

#[test]
fn version_1_indexes_keep_working_and_delta_says_it_cannot_use_them() {
    let s = Setup::new(&[2]);
    with_index_edited(&s.registry, "v2", "old-index", |index| {
        let object = index.as_object_mut().unwrap();
        object.remove("version");
        object.remove("imageDigest");
        for chunk in object["chunks"].as_array_mut().unwrap() {
            chunk.as_object_mut().unwrap().remove("cv");
        }
    });
    let target = s.target_with_v1();
    let (run, fetched) = s.install("old-index", &target, &["dd.delta"]);
    run.assert_installed();
    assert_eq!(read_prefix(&target, s.v2.len()), s.v2);
    assert!(
        run.stderr.contains("the chunk index has no chunk digests"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("verified"), "{}", run.stdout);
    // The whole blob, and the (small) chunk index.
    assert!(
        fetched >= s.blob && fetched < s.blob + (64 << 10),
        "{fetched}"
    );
}

#[test]
fn a_source_that_ignores_ranges_is_read_past_the_chunks_not_wanted() {
    let s = Setup::new(&[4, 17]);
    let target = s.target_with_v1();
    // What a cold pull-through cache does: the whole blob for every range.
    let whole = Proxy::start(s.registry.port, |request| {
        Action::Forward(common::proxy::Forward {
            strip_range: request.is_blob(),
            ..common::proxy::Forward::default()
        })
    });
    let reference = format!("{}/delta/disk:v2", whole.host());
    let run = install_tag(&reference, &target, &["dd.delta"]);
    run.assert_installed();
    assert_eq!(read_prefix(&target, s.v2.len()), s.v2);
    assert!(
        run.stderr.contains("reading it as one stream"),
        "{}",
        run.stderr
    );
    // One stream of the blob, not one per range.
    assert!(
        whole.blob_bytes() < s.blob + s.blob / 2,
        "{}",
        whole.blob_bytes()
    );
}

#[test]
fn delta_with_an_image_not_pushed_in_chunks_installs_it_whole() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(4 * MIB, 43);
    let file = write_file(dir.path(), "plain.img", &image);
    let reference = format!("{}/delta/plain:v1", registry.host());
    push_with(
        &file,
        &reference,
        &["--compression", "gzip", "--chunk-size", "0"],
    );
    let target = target_file(dir.path(), "t.img", 8 * MIB);
    let run = install_tag(&reference, &target, &["dd.delta"]);
    run.assert_installed();
    assert!(
        run.stderr
            .contains("dd.delta needs an image pushed in chunks"),
        "{}",
        run.stderr
    );
    assert_eq!(read_prefix(&target, image.len()), image);
}
