//! The parameters as people read them, made from [`super::table`]: `docs/parameters.md`
//! (`cargo xtask docs` writes it; a test checks that the committed file is what the table
//! makes) and the word list of `ocidd --help`.

use super::table::{Command, PARAMETERS, Parameter, Value};
use crate::error::Failure;

/// Where the generated page lives, from the repository's root.
pub const PARAMETERS_PAGE: &str = "docs/parameters.md";

/// `docs/parameters.md`.
pub fn markdown() -> String {
    let mut page = String::from(
        "<!-- Made by `cargo xtask docs` from src/cmdline/table.rs; edit the table, not this. -->\n\
         # Parameters\n\n\
         Every parameter ocidd takes. An install reads the same parameters as kernel words \
         (`oci.tag=…` on the kernel command line, or `ocidd WORD…` at a shell) and as the \
         flags of `ocidd install`; a word and its flag take the same values. Words are \
         matched with `-` and `_` alike, as the kernel does; unknown words in ocidd's \
         namespaces (`oci.`, `dd.`, `ocidd.`) are refused as typos, other words are \
         ignored. A site overlay's `/etc/ocidd/cmdline` gives default words that the kernel's \
         override by name. A switch is the word alone (or `=1`, `=0`), or the flag alone. \
         Given twice, a parameter that takes one value refuses a different second one; a \
         list (repeatable) adds each value once.\n",
    );
    let sections = [
        (
            Command::Install,
            "Installing",
            "Kernel words at boot, `ocidd WORD…` at a shell, and the flags of `ocidd install`.",
        ),
        (Command::Init, "Booting", "Kernel words only `/init` reads."),
        (
            Command::Push,
            "`ocidd push [FLAGS] FILE REGISTRY/REPOSITORY:TAG`",
            "Compresses a raw disk image (a file or a block device) while uploading it.",
        ),
        (
            Command::Overlay,
            "`ocidd overlay --output PATH SRC=DEST…`",
            "Writes a site overlay: an initramfs of a site's files, loaded after the main one.",
        ),
        (
            Command::Uki,
            "`ocidd uki --linux KERNEL --initrd FILE… --output PATH [WORD…]`",
            "Writes a unified kernel image: systemd's stub with the kernel, the initrds and the words as its command line, one EFI binary that UEFI HTTP Boot fetches and starts.",
        ),
        (
            Command::Iso,
            "`ocidd iso customize --output PATH BASE.iso [WORD…] [--overlay FILE] [--layout DIR]`",
            "Writes a copy of ocidd's boot ISO (`cargo xtask iso`) with a node's words on GRUB's kernel line and a site overlay, in the areas the ISO reserves for them (1024 bytes of words, 1 MiB of overlay), and with `--layout` an OCI image layout appended for installs with no network: no rebuild, the same inputs give the same bytes. `ocidd iso show ISO` prints what an ISO carries.",
        ),
    ];
    for (command, title, about) in sections {
        page += &format!("\n## {title}\n\n{about}\n\n");
        page +=
            "| word | flag | value | default | what it does |\n| --- | --- | --- | --- | --- |\n";
        for p in PARAMETERS.iter().filter(|p| p.takes(command)) {
            page += &row(p);
        }
    }
    page += "\n## Exit codes\n\n| code | meaning |\n| --- | --- |\n";
    page += "| 0 | done: installed (and verified), pushed, written |\n";
    page += "| 1 | an error no stage classified: a bug to report |\n";
    for failure in Failure::ALL {
        page += &format!("| {} | {} |\n", failure.exit_code(), failure.meaning());
    }
    page +=
        "| 128+N | stopped by signal N (SIGTERM: 143); the console says what the target holds |\n";
    page
}

fn row(p: &Parameter) -> String {
    let code = |text: String| format!("`{text}`");
    let word = p.word.map(|w| code(w.to_string())).unwrap_or_default();
    let mut flag = p.flag.map(|f| code(format!("--{f}"))).unwrap_or_default();
    for alias in p.aliases {
        flag += &format!(", `--{alias}`");
    }
    if let Some(short) = p.short {
        flag += &format!(", `-{short}`");
    }
    let value = match p.value {
        Value::Switch => "switch".to_string(),
        Value::Text(what) => code(what.to_string()),
    };
    let value = if p.repeatable {
        format!("{value}, repeatable")
    } else {
        value
    };
    let default = p.default.map(|d| d()).unwrap_or_default();
    format!(
        "| {word} | {flag} | {} | {} | {} e.g. `{}` |\n",
        value.replace('|', "\\|"),
        default.replace('|', "\\|"),
        p.help.replace('|', "\\|"),
        p.example.replace('|', "\\|")
    )
}

/// The kernel words an install and `/init` read, for `ocidd --help`.
pub fn word_list() -> String {
    PARAMETERS
        .iter()
        .filter(|p| p.takes(Command::Install) || p.takes(Command::Init))
        .filter_map(|p| {
            let word = p.word?;
            let repeat = if p.repeatable { " (repeatable)" } else { "" };
            Some(match p.value {
                Value::Switch => format!("{word}{repeat}"),
                Value::Text(what) => format!("{word}={what}{repeat}"),
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed page is the table's: run `cargo xtask docs` after changing the table.
    #[test]
    fn the_committed_parameters_page_is_the_tables() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(PARAMETERS_PAGE);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == markdown(),
            "{} differs from what src/cmdline/table.rs makes: run `cargo xtask docs`",
            path.display()
        );
    }

    #[test]
    fn every_word_and_flag_is_on_the_page() {
        let page = markdown();
        for p in PARAMETERS {
            if let Some(word) = p.word {
                assert!(page.contains(&format!("`{word}`")), "{word}");
            }
            if let Some(flag) = p.flag {
                assert!(page.contains(&format!("`--{flag}`")), "--{flag}");
            }
        }
    }
}
