//! `cargo xtask fuzz`: every target under fuzz/ for a short time each, from its seeds, as CI
//! runs them. cargo-fuzz is installed from crates.io when missing. The machine's one
//! toolchain is stable, so the targets build without a sanitizer (`--sanitizer none`, which
//! needs no `-Z` flag); a panic, an overflow (debug assertions are on) or an abort still
//! fails the run, and what failed is left in fuzz/artifacts/.

use std::fs;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{exec, root};

/// Seconds per target in CI (`cargo xtask test`) and by default.
pub const CI_SECONDS: u64 = 20;

pub fn run(seconds: u64) -> Result<()> {
    ensure_cargo_fuzz()?;
    let fuzz = root().join("fuzz");
    let targets = targets()?;
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["fuzz", "build", "--sanitizer", "none"])
        .current_dir(&fuzz);
    exec(&mut build)?;
    let corpus_root = root().join("target/fuzz-corpus");
    for target in &targets {
        // A scratch corpus per run: what libFuzzer finds is not committed, the seeds are.
        let corpus = corpus_root.join(target);
        let _ = fs::remove_dir_all(&corpus);
        fs::create_dir_all(&corpus)?;
        let seeds = fuzz.join("seeds").join(target);
        let mut command = Command::new(env!("CARGO"));
        command
            .args(["fuzz", "run", "--sanitizer", "none", target])
            .arg(&corpus)
            .args(seeds.is_dir().then_some(&seeds))
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=1024",
            ])
            .current_dir(&fuzz);
        eprintln!("fuzz: {target} for {seconds} s");
        exec(&mut command).with_context(|| {
            format!("fuzz target {target} failed; its input is under fuzz/artifacts/{target}/")
        })?;
    }
    eprintln!("fuzz: {} targets ran clean", targets.len());
    Ok(())
}

/// The targets fuzz/fuzz_targets/ holds, by name.
fn targets() -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(root().join("fuzz/fuzz_targets"))?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".rs")?.to_string())
        })
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no fuzz targets under fuzz/fuzz_targets");
    }
    Ok(names)
}

fn ensure_cargo_fuzz() -> Result<()> {
    let found = Command::new(env!("CARGO"))
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        exec(Command::new(env!("CARGO")).args(["install", "--locked", "cargo-fuzz"]))?;
    }
    Ok(())
}
