//! Python clients we did not write, from PyPI: the ORAS Python SDK (what `oras push` writes
//! with no media type) and Ironic (its OCI image service, reading what ocidd pushes). One
//! virtual environment under target/, made once and reused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// What is installed, pinned so that a new release cannot change what the tests prove.
/// Ironic 39 reads OCI images (Debian's package predates that).
const REQUIREMENTS: &[&str] = &["oras==0.2.43", "ironic==39.0.0"];

static MADE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The virtual environment's python, made (with `python3 -m venv`, then pip) on first use.
pub fn python() -> PathBuf {
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(python) = made.as_ref() {
        return python.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-python");
    let python = root.join("bin/python");
    let stamp = root.join(format!("installed {}", REQUIREMENTS.join(" ")));
    if !stamp.exists() {
        let _ = std::fs::remove_dir_all(&root);
        run(Command::new("python3").args(["-m", "venv"]).arg(&root));
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(REQUIREMENTS));
        std::fs::write(&stamp, b"").unwrap();
    }
    *made = Some(python.clone());
    python
}

/// Runs `script` with the environment's python and `args`; its stdout.
pub fn run_script(script: &str, args: &[&str]) -> String {
    let output = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("running python");
    assert!(
        output.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e} (python3-venv is in cargo xtask deps)"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
