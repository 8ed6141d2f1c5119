//! The flags of `ocidd install`, `push` and `overlay`, made from [`super::table`]: each
//! parameter a command takes becomes its flag, with the table's help, and what was given is
//! recorded by the same setters as the kernel words.

use anyhow::Result;
use clap::{Arg, ArgAction, ArgMatches};

use super::table::{Command, Given, PARAMETERS, Value};
use super::{Failure, record};

/// The flags `command` takes.
pub fn args(command: Command) -> Vec<Arg> {
    PARAMETERS
        .iter()
        .filter(|p| p.takes(command))
        .filter_map(|p| {
            let flag = p.flag?;
            let mut help = p.help.to_string();
            if let Some(word) = p.word {
                help += &format!(" ({word})");
            }
            if let Some(default) = p.default {
                help += &format!(" [default: {}]", default());
            }
            let mut arg = Arg::new(flag).long(flag).help(help);
            for alias in p.aliases {
                arg = arg.alias(*alias);
            }
            if let Some(short) = p.short {
                arg = arg.short(short);
            }
            // Every flag may be given again, as every word may: the setters decide, the same
            // way for both (the same value twice is harmless; a list grows).
            arg = match p.value {
                // Overriding itself: given again, it is still given once.
                Value::Switch => arg.action(ArgAction::SetTrue).overrides_with(flag),
                Value::Text(name) => arg.value_name(name).action(ArgAction::Append),
            };
            Some(arg)
        })
        .collect()
}

/// What the flags of `command` in `matches` give, with the rules between them applied.
pub fn given(matches: &ArgMatches, command: Command) -> Result<Given> {
    let mut given = Given::default();
    for parameter in PARAMETERS.iter().filter(|p| p.takes(command)) {
        let Some(flag) = parameter.flag else {
            continue;
        };
        let name = format!("--{flag}");
        match parameter.value {
            Value::Switch => {
                if matches.get_flag(flag) {
                    record(&mut given, parameter, None, &name)?;
                }
            }
            Value::Text(what) => {
                for value in matches.get_many::<String>(flag).into_iter().flatten() {
                    if value.is_empty() {
                        return Err(crate::error::classified(
                            Failure::Usage,
                            anyhow::anyhow!("{name} is empty (expected {name} {what})"),
                        ));
                    }
                    record(&mut given, parameter, Some(value), &name)?;
                }
            }
        }
    }
    given
        .finish()
        .map_err(|e| crate::error::classified(Failure::Usage, anyhow::anyhow!(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::parse_words;

    fn from_flags(args: &[&str]) -> Result<Given> {
        let command = clap::Command::new("install").args(super::args(Command::Install));
        let matches = command
            .try_get_matches_from(std::iter::once("install").chain(args.iter().copied()))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        given(&matches, Command::Install)
    }

    /// The flags and the words are one definition: the same values give the same
    /// parameters, and the same mistakes the same refusals.
    #[test]
    fn flags_and_words_take_the_same_values_the_same_way() {
        let flags = from_flags(&[
            "--tag",
            "r.example/d:v1",
            "--mirror",
            "m.example:5000",
            "--mirror",
            "m.example:5000",
            "--verify-key",
            "/k.pub",
            "--verify-key",
            "/k.pub",
            "--retries",
            "3",
            "--retries",
            "3",
            "--plain-http",
            "--bs",
            "1M",
            "--match",
            "size>=1G",
        ])
        .unwrap();
        let words = parse_words(&[
            "oci.tag=r.example/d:v1",
            "oci.mirror=m.example:5000",
            "oci.mirror=m.example:5000",
            "oci.verify.key=/k.pub",
            "oci.verify.key=/k.pub",
            "oci.retries=3",
            "oci.retries=3",
            "oci.allow_no_tls",
            "dd.bs=1M",
            "dd.match=size>=1G",
        ])
        .unwrap();
        assert_eq!(flags.install, words.install);
        assert_eq!(flags.install.registry.mirrors.len(), 1);
        assert_eq!(flags.install.verify.keys.len(), 1);

        for (args, word_list, says) in [
            (
                &["--no-proxy", "x"][..],
                &["oci.no_proxy=x"][..],
                "is given without oci.proxy",
            ),
            (
                &["--retries", "3", "--retries", "4"],
                &["oci.retries=3", "oci.retries=4"],
                "is given twice",
            ),
            (&["--verify", "warn"], &["oci.verify=warn"], "needs a key"),
            (
                &["--bs", "0"],
                &["dd.bs=0"],
                "the block size must be at least 1 byte",
            ),
        ] {
            let flag_error = format!("{:#}", from_flags(args).unwrap_err());
            let word_error = format!("{:#}", parse_words(word_list).unwrap_err());
            assert!(flag_error.contains(says), "{flag_error}");
            assert!(word_error.contains(says), "{word_error}");
        }
        assert!(
            format!("{:#}", from_flags(&["--tag", ""]).unwrap_err()).contains("--tag is empty")
        );
    }
}
