//! Build, demo and test tasks for ocidd: `cargo xtask <task>`.

mod bench;
mod demo;
mod deps;
mod dist;
mod fuzz;
mod image;
mod initramfs;
mod iso;
mod pxe;
mod util;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "ocidd's build, demo and test tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the Debian packages and Rust components the tasks and tests need
    Deps,
    /// Write docs/parameters.md from the parameter table (src/cmdline/table.rs)
    Docs,
    /// Write the release artifacts to dist/: static ocidd and the boot files for amd64 and
    /// arm64, a README with the boot snippets, SHA256SUMS
    Dist {
        /// Output directory
        #[arg(long, default_value = "dist")]
        out: PathBuf,
        /// Also push them as one OCI artifact (a layer per file, titled by its name)
        #[arg(long, value_name = "REGISTRY/REPOSITORY:TAG")]
        push: Option<String>,
        /// Plain HTTP to the registry pushed to
        #[arg(long)]
        plain_http: bool,
    },
    /// Run every fuzz target for a short time from its seeds (CI runs this)
    Fuzz {
        /// Seconds per target
        #[arg(long, default_value_t = fuzz::CI_SECONDS)]
        seconds: u64,
    },
    /// Build the boot files, push a sample disk image to a local registry, boot a VM that
    /// installs it, and check the VM's disk
    Demo,
    /// Build the PXE boot files: out/vmlinuz-ARCH and out/initramfs-ARCH.img
    Pxe {
        #[arg(long, value_enum, default_value = "amd64")]
        arch: pxe::Arch,
        /// Debian kernel: generic (real hardware and VMs) or cloud (VMs only, smaller)
        #[arg(long, value_enum, default_value = "generic")]
        flavour: pxe::Flavour,
        /// More kernel modules for the initramfs, by name (comma-separated or repeated)
        #[arg(long = "module", value_delimiter = ',')]
        modules: Vec<String>,
        /// A /lib/firmware tree to take the firmware the modules name from (NICs such as
        /// bnx2, bnx2x and some tg3, r8169, qede need it); none is included otherwise
        #[arg(long, value_name = "DIR")]
        firmware: Option<PathBuf>,
        /// Output directory
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Build the initramfs a second time, staged from scratch, and check that the bytes
        /// are the same
        #[arg(long)]
        check_reproducible: bool,
    },
    /// Build the amd64 boot files, then out/ocidd-amd64.iso: one hybrid ISO that boots as a CD
    /// and as a USB stick, under BIOS and UEFI (Debian's signed shim and GRUB for Secure Boot)
    Iso {
        /// Output directory
        #[arg(long, default_value = "out")]
        out: PathBuf,
    },
    /// Install what the tests need, build the amd64 and arm64 boot files, boot the demo, then
    /// run formatting, lint and all tests (what CI runs)
    Test {
        /// Only formatting, lint, unit tests and the integration tests that need no VM (the
        /// registry-backed ones): a few minutes, for every commit
        #[arg(long)]
        quick: bool,
    },
    /// Time installs against the original pipeline (realistic and random images, plain gzip,
    /// chunked gzip and zstd, into a file and a loop device) and print medians and ratios
    Bench {
        /// Size of the realistic GPT + ext4 image in MiB
        #[arg(long, default_value_t = 2048)]
        size: u64,
        /// Size of the random-data image in MiB
        #[arg(long, default_value_t = 512)]
        random: u64,
        /// Interleaved rounds per case
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Another ocidd binary (an earlier build) to time in the same rounds, case by case,
        /// so that a change's speed is compared within one run
        #[arg(long, value_name = "BINARY")]
        baseline: Option<PathBuf>,
        /// Only the ocidd cases whose label contains this ("chunked → file", "zstd")
        #[arg(long, value_name = "TEXT")]
        only: Option<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Deps => deps::install(),
        Task::Dist {
            out,
            push,
            plain_http,
        } => dist::run(&dist::Options {
            out: util::in_root(out),
            push,
            plain_http,
        }),
        Task::Docs => {
            let page = util::root().join(ocidd::cmdline::docs::PARAMETERS_PAGE);
            if let Some(dir) = page.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&page, ocidd::cmdline::docs::markdown())?;
            eprintln!("docs: wrote {}", page.display());
            Ok(())
        }
        Task::Demo => demo::run(),
        Task::Fuzz { seconds } => fuzz::run(seconds),
        Task::Iso { out } => iso::build(&util::in_root(out)),
        Task::Pxe {
            arch,
            flavour,
            modules,
            firmware,
            out,
            check_reproducible,
        } => {
            let out = util::in_root(out);
            pxe::build(&pxe::Options {
                arch,
                flavour,
                extra_modules: modules,
                firmware,
                out,
                check_reproducible,
            })
        }
        Task::Bench {
            size,
            random,
            rounds,
            baseline,
            only,
        } => bench::run(&bench::Options {
            size_mib: size,
            random_mib: random,
            rounds,
            baseline,
            only,
        }),
        Task::Test { quick: true } => {
            deps::install()?;
            lint()?;
            let mut args = vec![
                "test".to_string(),
                "--workspace".into(),
                "--lib".into(),
                "--bins".into(),
            ];
            for name in util::test_files()? {
                // The boot_* files boot QEMU.
                if !name.starts_with("boot_") {
                    args.extend(["--test".to_string(), name]);
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            util::cargo(&args)
        }
        Task::Test { quick: false } => {
            deps::install()?;
            for arch in [pxe::Arch::Amd64, pxe::Arch::Arm64] {
                pxe::build(&pxe::Options::generic(arch, util::root().join("out"), true))?;
            }
            iso::pack(&util::root().join("out"))?;
            // The README's first command, after the build: it must keep working.
            demo::boot_and_check(&util::root().join("out"))?;
            dist::check()?;
            lint()?;
            fuzz::run(fuzz::CI_SECONDS)?;
            util::cargo(&["test", "--workspace"])
        }
    }
}

/// `cargo fmt --check` and clippy with warnings as errors, as both test tiers run them.
fn lint() -> Result<()> {
    util::cargo(&["fmt", "--all", "--", "--check"])?;
    util::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])
}
