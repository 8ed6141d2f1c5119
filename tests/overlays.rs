//! `ocidd overlay`: what it refuses before any machine boots the overlay, and how it writes
//! it (private, whole or not at all).

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `ocidd overlay --output OUT FILES…`, killed if it has not ended in a minute (a
/// source that blocks would hang it).
fn overlay(output: &Path, files: &[String]) -> Run {
    let mut child = ocidd()
        .args(["overlay", "--output"])
        .arg(output)
        .args(files)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running ocidd overlay");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("ocidd overlay {files:?} hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Run::from(child.wait_with_output().unwrap())
}

/// The entries of a gzip'd newc archive: (name, mode).
fn entries(path: &Path) -> Vec<(String, u32)> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(path).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    let mut found = Vec::new();
    let mut rest: &[u8] = &raw;
    loop {
        let reader = cpio::NewcReader::new(rest).unwrap();
        if reader.entry().is_trailer() {
            return found;
        }
        found.push((reader.entry().name().to_string(), reader.entry().mode()));
        rest = reader.finish().unwrap();
    }
}

/// Exit 2, and one error line (ocidd's, or the argument parser's) holding `message`.
fn assert_refused(run: &Run, message: &str) {
    let error_line =
        |l: &str| l.starts_with("ocidd: error: ") || l.starts_with("error: invalid value");
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .lines()
            .any(|l| error_line(l) && l.contains(message)),
        "no error line with {message:?}:\n{}",
        run.stderr
    );
    assert!(!run.stdout.contains("wrote"), "{}", run.stdout);
}

/// The overlay is 0600, a failure leaves an earlier one as it was, and no partial file is
/// left behind, also on a file system too small for it.
#[test]
fn the_overlay_is_private_and_written_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let words = write_file(dir.path(), "words", b"oci.retries=3\n");
    let out = dir.path().join("site.img");
    let run = overlay(&out, &[format!("{}=/etc/ocidd/cmdline", words.display())]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A small tmpfs: a good overlay fits, a larger one does not, and the good one stays.
    let small = dir.path().join("small");
    fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mounting a tmpfs (the tests run as root)"
    );
    let unmount = Unmount(small.clone());
    let target = small.join("site.img");
    let run = overlay(
        &target,
        &[format!("{}=/etc/ocidd/cmdline", words.display())],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let good = fs::read(&target).unwrap();
    let noise: Vec<u8> = image_bytes(2 * MIB, 70)
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ (i as u8).wrapping_mul(31))
        .collect();
    let big = write_file(dir.path(), "big.bin", &noise);
    let run = overlay(
        &target,
        &[
            format!("{}=/etc/ocidd/cmdline", words.display()),
            format!("{}=/usr/share/big.bin", big.display()),
        ],
    );
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert_eq!(
        fs::read(&target).unwrap(),
        good,
        "the earlier overlay changed"
    );
    let left: Vec<_> = fs::read_dir(&small).unwrap().collect();
    assert_eq!(left.len(), 1, "files left behind: {left:?}");
    drop(unmount);
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        // Lazily: a child that another test forked meanwhile may hold a descriptor until it
        // execs.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `/./` and other unplain destinations are refused, so that the cmdline check and the
/// "given twice" check cannot be stepped around.
#[test]
fn destinations_must_be_plain_paths() {
    let dir = tempfile::tempdir().unwrap();
    let words = write_file(dir.path(), "words", b"oci.mirorr=typo:5000\n");
    let out = dir.path().join("site.img");
    for dest in [
        "/etc/ocidd/./cmdline",
        "/etc/./ocidd/cmdline",
        "/./etc/ocidd/cmdline",
        "/etc/ocidd/cmdline/.",
    ] {
        let run = overlay(&out, &[format!("{}={dest}", words.display())]);
        assert_refused(&run, "not a plain path");
    }
    let run = overlay(&out, &[format!("{}=/etc/ocidd/cmdline", words.display())]);
    assert_refused(&run, "unknown parameter oci.mirorr");
    assert!(!out.exists());
}

/// A file the default words name is checked as the install will read it: each of these
/// would pass here and fail at every boot.
#[test]
fn files_the_words_name_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("site.img");
    let (ca, ..) = certificates(dir.path());
    openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-out",
            "rsa.key",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
        ],
    );
    openssl(
        dir.path(),
        &["pkey", "-in", "rsa.key", "-pubout", "-out", "rsa.pub"],
    );
    let (_, ec) = key_pair(dir.path(), "ec");
    let good_auth = write_file(
        dir.path(),
        "auth.json",
        docker_config("r.example", "u:p").as_bytes(),
    );
    let token = write_file(dir.path(), "token", b"s3cret\n");
    let words = write_file(
        dir.path(),
        "words",
        b"oci.ca=/etc/ocidd/ca.pem oci.auth=/etc/ocidd/auth.json oci.verify.key=/etc/ocidd/k.pub ocidd.report=https://r.example/e ocidd.report_token=/etc/ocidd/token\n",
    );
    let files = |ca: &Path, auth: &Path, key: &Path, token: &Path| {
        vec![
            format!("{}=/etc/ocidd/cmdline", words.display()),
            format!("{}=/etc/ocidd/ca.pem", ca.display()),
            format!("{}=/etc/ocidd/auth.json", auth.display()),
            format!("{}=/etc/ocidd/k.pub", key.display()),
            format!("{}=/etc/ocidd/token", token.display()),
        ]
    };
    let run = overlay(&out, &files(&ca, &good_auth, &ec, &token));
    assert_eq!(run.code, 0, "{}", run.stderr);

    let not_pem = write_file(dir.path(), "ca.txt", b"this is not a certificate\n");
    let rsa = dir.path().join("rsa.pub");
    let bad_auth = write_file(dir.path(), "bad.json", b"{\"auths\": {\"r.example\": ");
    let helper = write_file(dir.path(), "helper.json", br#"{"credsStore":"desktop"}"#);
    let empty = write_file(dir.path(), "empty", b"  \n");
    for (set, message) in [
        (
            files(&not_pem, &good_auth, &ec, &token),
            "holds no PEM certificates",
        ),
        (
            files(&ca, &good_auth, &rsa, &token),
            "is not a PEM ECDSA P-256 public key",
        ),
        (files(&ca, &bad_auth, &ec, &token), "not JSON"),
        (files(&ca, &helper, &ec, &token), "credential helper"),
        (files(&ca, &good_auth, &ec, &empty), "is empty"),
    ] {
        let run = overlay(&out, &set);
        assert_refused(&run, message);
        assert!(
            run.stderr.contains("/etc/ocidd/cmdline names"),
            "{}",
            run.stderr
        );
    }
}

/// Sources that are not regular files are refused before they are read: /dev/zero would
/// never end, and a FIFO would wait for a writer.
#[test]
fn sources_that_are_not_files_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("site.img");
    let fifo = dir.path().join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for source in [Path::new("/dev/zero"), &fifo] {
        let run = overlay(&out, &[format!("{}=/etc/x", source.display())]);
        assert_refused(&run, "is not a regular file");
    }
}

/// A private source stays private outside /etc/ocidd too; a readable one is 0644, and
/// everything under /etc/ocidd is 0600.
#[test]
fn modes_follow_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("site.img");
    let secret = write_file(dir.path(), "secret", b"x");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let open = write_file(dir.path(), "open", b"y");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    let run = overlay(
        &out,
        &[
            format!("{}=/root/.ssh/key", secret.display()),
            format!("{}=/usr/share/open", open.display()),
            format!("{}=/etc/ocidd/open", open.display()),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let modes: Vec<(String, u32)> = entries(&out)
        .into_iter()
        .filter(|(_, mode)| mode & 0o170000 == 0o100000)
        .map(|(name, mode)| (name, mode & 0o777))
        .collect();
    assert_eq!(
        modes,
        [
            ("etc/ocidd/open".to_string(), 0o600),
            ("root/.ssh/key".to_string(), 0o600),
            ("usr/share/open".to_string(), 0o644),
        ]
    );
}
