//! Build, demo and test tasks for ocidd: `cargo xtask <task>`.

mod demo;
mod deps;
mod util;

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
    /// Push a sample disk image to a local registry and install it into a file
    Demo,
    /// Install what the tests need, then run formatting, lint and all tests
    Test,
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Deps => deps::install(),
        Task::Demo => demo::run(),
        Task::Test => {
            deps::install()?;
            util::cargo(&["fmt", "--all", "--", "--check"])?;
            util::cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            util::cargo(&["test", "--workspace"])
        }
    }
}
