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
    let hostile = "\u{1b}]0;PWNED\u{7}\u{1b}[2J\u{1b}[31mfake: installed OK\r";
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
