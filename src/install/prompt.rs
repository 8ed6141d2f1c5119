//! Asking the operator for what the command line left out, when there is someone to ask.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};

use crate::cmdline::seed::SeedOptions;
use crate::cmdline::{BootOrder, Params, RegistryOptions, VerifyOptions, parse_block_size};
use crate::disks::{self, hints::Selection};
use crate::error::{Classify, Failure};
use crate::fail;
use crate::reference::{ImageSource, parse_blob, parse_tag};
use crate::{say, say_inline};

/// The block size offered when asking for one.
const DEFAULT_BLOCK_SIZE: &str = "1M";

/// The install's settings, complete.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallOptions {
    pub source: ImageSource,
    /// The target named, if any; [`choose_target`] checks it against `selection`, or picks one.
    pub target: Option<PathBuf>,
    pub selection: Selection,
    pub block_size: usize,
    pub registry: RegistryOptions,
    pub wait: bool,
    pub keep_on_error: bool,
    pub verify: VerifyOptions,
    /// `dd.delta`: fetch and write only the chunks the target does not hold.
    pub delta: bool,
    /// The machine's config drive or NoCloud seed.
    pub seed: SeedOptions,
    /// What to do to UEFI's boot entries.
    pub boot_order: BootOrder,
}

/// Fills in what `params` lacks by asking on the terminal; without a terminal, names what is
/// missing in the error.
pub fn complete(params: Params) -> Result<InstallOptions> {
    let interactive = io::stdin().is_terminal();
    if !interactive {
        let mut missing = Vec::new();
        if params.source.is_none() {
            missing.push("oci.tag or oci.blob (--tag or --blob)");
        }
        if params.target.is_none() && params.selection.hints.is_empty() {
            missing.push("dd.of or dd.match (--target or --match)");
        }
        if params.block_size.is_none() {
            missing.push("dd.bs (--bs)");
        }
        if params.wait {
            fail!(
                Failure::Usage,
                "confirmation (wait, --confirm) is required but there is no terminal to ask on"
            );
        }
        if !missing.is_empty() {
            fail!(
                Failure::Usage,
                "missing {} (and no terminal to ask on)",
                missing.join(", ")
            );
        }
    }
    let source = match params.source {
        Some(source) => source,
        None => ask_source()?,
    };
    let target = match (params.target, params.selection.hints.is_empty()) {
        (None, true) => Some(ask_target()?),
        (target, _) => target,
    };
    let block_size = match params.block_size {
        Some(block_size) => block_size,
        None => ask(
            &format!("Block size (dd.bs) [{DEFAULT_BLOCK_SIZE}]: "),
            |answer| {
                parse_block_size(if answer.is_empty() {
                    DEFAULT_BLOCK_SIZE
                } else {
                    answer
                })
            },
        )?,
    };
    Ok(InstallOptions {
        source,
        target,
        selection: params.selection,
        block_size,
        registry: params.registry,
        wait: params.wait,
        keep_on_error: params.keep_on_error,
        verify: params.verify,
        delta: params.delta,
        seed: params.seed,
        boot_order: params.boot_order.unwrap_or(BootOrder::Keep),
    })
}

/// Asks for `yes` before the target is overwritten.
pub fn confirm(what: &str) -> Result<()> {
    if !io::stdin().is_terminal() {
        fail!(
            Failure::Usage,
            "confirmation (wait, --confirm) is required but there is no terminal to ask on"
        );
    }
    let answer = read_answer(&format!(
        "Write {what}? Everything on it will be lost. Type yes to continue: "
    ))?;
    if answer != "yes" {
        fail!(
            Failure::Usage,
            "not confirmed (answer was {answer:?}); nothing was written"
        );
    }
    Ok(())
}

fn ask_source() -> Result<ImageSource> {
    let tag = ask(
        "Image tag (oci.tag, REGISTRY/REPOSITORY:TAG), or empty to give a blob: ",
        |answer| {
            if answer.is_empty() {
                Ok(None)
            } else {
                parse_tag(answer).map(Some)
            }
        },
    )?;
    match tag {
        Some(tag) => Ok(tag),
        None => ask(
            "Blob (oci.blob, REGISTRY/REPOSITORY@sha256:HEX): ",
            parse_blob,
        ),
    }
}

/// The target: the disk the hints choose, or `target` resolved (a disk's name, or a
/// /dev/disk/by-id or by-path name as udev would make it) and checked against them; with the
/// disk it is, if it is one. Without one, the table of the machine's disks goes with the
/// error, so that the operator can see which values to give.
pub fn choose_target(
    selection: &Selection,
    target: Option<&Path>,
) -> Result<(PathBuf, Option<disks::Disk>)> {
    let disks = disks::list();
    let path = selection.choose(&disks, target).map_err(|refusal| {
        for line in disks::table(&disks) {
            say!("ocidd: {line}");
        }
        crate::error::classified(Failure::Target, anyhow!(refusal.0))
    })?;
    let disk = disks.into_iter().find(|d| d.path() == path);
    Ok((path, disk))
}

fn ask_target() -> Result<PathBuf> {
    for line in disks::table(&disks::list()) {
        say!("{line}");
    }
    ask("Target disk (dd.of): ", |answer| {
        if answer.is_empty() {
            Err("a target is needed".to_string())
        } else {
            Ok(PathBuf::from(answer))
        }
    })
}

/// Asks until `parse` accepts the answer.
fn ask<T>(question: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<T> {
    loop {
        let answer = read_answer(question)?;
        match parse(&answer) {
            Ok(value) => return Ok(value),
            Err(e) => say!("  {e}"),
        }
    }
}

fn read_answer(question: &str) -> Result<String> {
    say_inline!("{question}");
    let _ = io::stderr().flush();
    let mut line = String::new();
    let n = io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| anyhow!("reading the answer: {e}"))
        .classify(Failure::Usage)?;
    if n == 0 {
        fail!(Failure::Usage, "no answer (end of input)");
    }
    Ok(line.trim().to_string())
}
