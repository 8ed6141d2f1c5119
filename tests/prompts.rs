//! Asking for missing parameters on a terminal (a pty from util-linux `script`).

mod common;

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

/// Runs ocidd with `words` on a pty, typing `answers`.
fn on_terminal(words: &str, answers: &str) -> Run {
    let command = format!("{} {words}", env!("CARGO_BIN_EXE_ocidd"));
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("HOME", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running script (util-linux)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answers.as_bytes())
        .unwrap();
    Run::from(child.wait_with_output().unwrap())
}

#[test]
fn asks_for_what_is_missing() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(MIB + 4321, 50);
    let digest = registry.put_blob("disks/ask", &gzip(&image));
    let target = write_file(dir.path(), "out.img", b"");
    // Empty tag, so a blob; a target; a bad block size, then the default; then "yes".
    let answers = format!(
        "\n{}/disks/ask@{digest}\n{}\n0\n\nyes\n",
        registry.host(),
        target.display()
    );
    let run = on_terminal("oci.allow_no_tls wait", &answers);
    // On a pty, everything arrives on stdout.
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("Image tag (oci.tag"), "{}", run.stdout);
    assert!(run.stdout.contains("disks here"), "{}", run.stdout);
    assert!(
        run.stdout.contains("is zero"),
        "bad block size not refused: {}",
        run.stdout
    );
    assert!(run.stdout.contains("Type yes"), "{}", run.stdout);
    assert!(run.stdout.contains("ocidd: installed"), "{}", run.stdout);
    assert!(fs::read(&target).unwrap() == image);
}

#[test]
fn anything_but_yes_writes_nothing() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let digest = registry.put_blob("disks/ask", &gzip(&image_bytes(MIB, 51)));
    let target = target_file(dir.path(), "t.img", 2 * MIB);
    let words = format!(
        "oci.blob={}/disks/ask@{digest} oci.allow_no_tls dd.of={} dd.bs=1M wait",
        registry.host(),
        target.display()
    );
    let run = on_terminal(&words, "no\n");
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stdout.contains("not confirmed"), "{}", run.stdout);
    assert!(!run.stdout.contains("ocidd: installed"));
    // Nothing says it is writing before the answer.
    assert!(!run.stdout.contains("writing onto"), "{}", run.stdout);
    assert_untouched(&target);
}
