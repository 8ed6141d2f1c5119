//! `ocidd push` against registries that refuse it, fail, die or stop answering, and files
//! that change under it: a push that fails exits non-zero within its retry budget, says why
//! in one line, and leaves no tag behind; a failure that passes is ridden out.

mod common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::proxy::{Action, Proxy};
use common::*;

/// Longer than any push here may take, retries included: only a hang gets near it.
const HANG: Duration = Duration::from_secs(180);

/// Runs `ocidd push ARGS FILE REFERENCE`, killing it if it has not ended within [`HANG`].
fn push_run(args: &[&str], file: &Path, reference: &str) -> Run {
    let mut child = ocidd()
        .arg("push")
        .args(args)
        .arg(file)
        .arg(reference)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running ocidd push");
    let started = Instant::now();
    while child.try_wait().expect("waiting for ocidd push").is_none() {
        if started.elapsed() > HANG {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collecting ocidd push");
            panic!(
                "ocidd push {args:?} hung (killed after {} s):\n{}",
                HANG.as_secs(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    Run::from(child.wait_with_output().expect("collecting ocidd push"))
}

/// Asserts a failed push: `code`, one error line holding `message`, no pushed lines.
fn assert_push_failed(run: &Run, code: i32, message: &str) {
    run.assert_failed(code, message);
    assert!(
        !run.stderr.contains("ocidd: pushed") && !run.stdout.contains("manifest "),
        "claims a push:\n{}\n{}",
        run.stdout,
        run.stderr
    );
}

/// Whether the registry has a manifest at `tag` of `repo`.
fn has_tag(registry: &Registry, repo: &str, tag: &str) -> bool {
    registry
        .client()
        .get(format!("{}/v2/{repo}/manifests/{tag}", registry.url()))
        .header("Accept", OCI_MANIFEST)
        .send()
        .expect("asking the registry")
        .status()
        .is_success()
}

/// Whether `request` is a PATCH of an upload.
fn is_patch(request: &common::proxy::Request) -> bool {
    request.method == "PATCH" && request.path.contains("/blobs/uploads/")
}

/// A registry that demands credentials refuses the push at once, with or without chunks,
/// with none given or wrong ones: exit 3 and why, never a hang.
#[test]
fn refused_credentials_fail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, certificate, key) = certificates(dir.path());
    let users = htpasswd(dir.path(), "operator", "s3cr3t");
    let registry = Registry::start_with_htpasswd(&certificate, &key, &users);
    let image = write_file(dir.path(), "disk.raw", &image_bytes(12 * MIB, 90));
    let wrong = write_file(
        dir.path(),
        "wrong.json",
        docker_config(&registry.host(), "operator:guess").as_bytes(),
    );
    let right = write_file(
        dir.path(),
        "right.json",
        docker_config(&registry.host(), "operator:s3cr3t").as_bytes(),
    );
    let ca = ca.to_str().unwrap();
    let reference = format!("{}/disks/guarded:v1", registry.host());
    for chunks in ["4M", "0"] {
        let run = push_run(&["--ca", ca, "--chunk-size", chunks], &image, &reference);
        assert_push_failed(&run, 3, "no credentials were given");
        let auth = wrong.to_str().unwrap();
        let run = push_run(
            &["--ca", ca, "--chunk-size", chunks, "--auth", auth],
            &image,
            &reference,
        );
        assert_push_failed(&run, 3, "refused the credentials given");
        assert!(!run.stderr.contains("guess"), "{}", run.stderr);
        assert!(!has_tag_with_auth(&registry, "v1"), "a tag was left");
    }
    let auth = right.to_str().unwrap();
    let run = push_run(&["--ca", ca, "--auth", auth], &image, &reference);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// Whether the htpasswd registry has `disks/guarded:TAG`, asked with the right credentials.
fn has_tag_with_auth(registry: &Registry, tag: &str) -> bool {
    registry
        .client()
        .get(format!(
            "{}/v2/disks/guarded/manifests/{tag}",
            registry.url()
        ))
        .basic_auth("operator", Some("s3cr3t"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .expect("asking the registry")
        .status()
        .is_success()
}

/// A registry that drops the connection mid-upload, or answers 503, once: the push starts
/// the upload again from the image's first byte and succeeds, and the image installs.
#[test]
fn a_failure_mid_push_is_retried_from_the_start() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(16 * MIB, 91);
    let file = write_file(dir.path(), "disk.raw", &image);
    for (name, failure) in [
        ("dropped", Action::Close),
        (
            "busy",
            Action::Respond {
                status: 503,
                headers: vec![],
                body: b"busy".to_vec(),
            },
        ),
    ] {
        let patches = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&patches);
        let proxy = Proxy::start(registry.port, move |request| {
            if is_patch(request) && counter.fetch_add(1, Ordering::SeqCst) == 3 {
                return failure.clone();
            }
            Action::forward()
        });
        let reference = format!("{}/disks/retried:{name}", proxy.host());
        let run = push_run(&["--plain-http", "--retries", "2"], &file, &reference);
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        assert!(
            run.stderr.contains("retrying in") && run.stderr.contains("uploading the image"),
            "{name}: {}",
            run.stderr
        );
        let target = target_file(dir.path(), "t.img", 16 * MIB);
        install_tag(
            &format!("{}/disks/retried:{name}", registry.host()),
            &target,
            &[],
        )
        .assert_installed();
        assert!(fs::read(&target).unwrap() == image, "{name}: not the image");
    }
}

/// A registry that keeps failing (503 to every upload, or the connection dropped on every
/// PATCH) is given up on after `--retries`, with exit 3 and the last reason; `--retries 0`
/// gives up at the first failure.
#[test]
fn a_registry_that_stays_down_is_given_up_after_the_retries() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "disk.raw", &image_bytes(8 * MIB, 92));
    let busy = Proxy::start(registry.port, |request| {
        if request.method == "POST" && request.path.contains("/blobs/uploads/") {
            return Action::Respond {
                status: 503,
                headers: vec![],
                body: br#"{"errors":[{"code":"UNAVAILABLE","message":"down for maintenance"}]}"#
                    .to_vec(),
            };
        }
        Action::forward()
    });
    let run = push_run(
        &["--plain-http", "--retries", "2"],
        &file,
        &format!("{}/disks/down:v1", busy.host()),
    );
    assert_push_failed(&run, 3, "gave up after 2 retries");
    assert!(
        run.stderr.contains("down for maintenance"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("retrying in").count(),
        2,
        "{}",
        run.stderr
    );

    let dying = Proxy::start(registry.port, |request| {
        if is_patch(request) {
            return Action::Close;
        }
        Action::forward()
    });
    for chunks in ["4M", "0"] {
        let run = push_run(
            &["--plain-http", "--retries", "0", "--chunk-size", chunks],
            &file,
            &format!("{}/disks/down:v1", dying.host()),
        );
        assert_push_failed(&run, 3, "uploading the image");
        assert!(!run.stderr.contains("retrying"), "{}", run.stderr);
    }
    assert!(!has_tag(&registry, "disks/down", "v1"));
}

/// A registry that takes an upload's request and never answers is given up on after
/// `--stall-timeout` seconds for each try.
#[test]
fn a_registry_that_stops_answering_is_given_up_after_the_stall_timeout() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "disk.raw", &image_bytes(8 * MIB, 93));
    let silent = Proxy::start(registry.port, |request| {
        if is_patch(request) {
            return Action::Hang(Duration::from_secs(120));
        }
        Action::forward()
    });
    let run = push_run(
        &["--plain-http", "--retries", "1", "--stall-timeout", "2"],
        &file,
        &format!("{}/disks/silent:v1", silent.host()),
    );
    assert_push_failed(&run, 3, "sent nothing for 2 s");
    assert!(
        run.stderr.contains("gave up after 1 retries"),
        "{}",
        run.stderr
    );
}

/// A file cut short while it is pushed is refused (exit 5), and the tag is not pushed: the
/// image would claim the first size and hold what was read.
#[test]
fn a_file_that_shrinks_during_the_push_is_refused() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    // Noise does not compress: each MiB read is a MiB to upload, so the reader cannot get
    // far ahead of the upload.
    let noise: Vec<u8> = {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        (0..96 * MIB)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    for chunks in ["4M", "0"] {
        let file = write_file(dir.path(), "disk.raw", &noise);
        let patches = Arc::new(AtomicUsize::new(0));
        let (counter, cut) = (Arc::clone(&patches), file.clone());
        let proxy = Proxy::start(registry.port, move |request| {
            if is_patch(request) && counter.fetch_add(1, Ordering::SeqCst) == 4 {
                let file = fs::OpenOptions::new().write(true).open(&cut).unwrap();
                file.set_len(10 * MIB as u64).unwrap();
            }
            Action::forward()
        });
        let run = push_run(
            &["--plain-http", "--chunk-size", chunks],
            &file,
            &format!("{}/disks/shrunk:v1", proxy.host()),
        );
        assert_push_failed(&run, 5, "the file shrank while it was read");
        assert!(!has_tag(&registry, "disks/shrunk", "v1"), "{chunks}");
    }
}

/// What `oras pull` saves the layer as says that it is compressed, so that nobody writes
/// gzip onto a disk: the title carries `.gz` or `.zst`, and nothing for a raw layer.
#[test]
fn the_title_says_the_compression() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "disk.img", &image_bytes(MIB, 94));
    for (compression, title) in [
        ("gzip", "disk.img.gz"),
        ("zstd", "disk.img.zst"),
        ("none", "disk.img"),
    ] {
        let reference = format!("{}/disks/titled:{compression}", registry.host());
        push(&file, &reference, compression);
        let manifest: serde_json::Value = registry
            .client()
            .get(format!(
                "{}/v2/disks/titled/manifests/{compression}",
                registry.url()
            ))
            .header("Accept", OCI_MANIFEST)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            manifest["layers"][0]["annotations"]["org.opencontainers.image.title"], title,
            "{manifest}"
        );
    }
}

/// A directory, a missing file, an empty file and a FIFO are all refused alike: exit 2,
/// before anything is uploaded.
#[test]
fn files_that_cannot_be_pushed_exit_2() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("{}/disks/nothing:v1", registry.host());
    let empty = write_file(dir.path(), "empty.raw", b"");
    let fifo = dir.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for (file, message) in [
        (dir.path().to_path_buf(), "is a directory"),
        (dir.path().join("missing.raw"), "opening"),
        (empty, "is empty"),
        (fifo, "neither a file nor a block device"),
    ] {
        let run = push_run(&["--plain-http"], &file, &reference);
        assert_push_failed(&run, 2, message);
    }
    assert!(!has_tag(&registry, "disks/nothing", "v1"));
}
