//! The `ocidd` command: installs (kernel words or `install` flags), pushes, and runs as the
//! initramfs's `/init`. The flags come from the one table of parameters (`cmdline::table`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, value_parser};

use ocidd::cmdline::{Command, Given, Params, docs, flags, parse_words, text_words};
use ocidd::error::{Failure, failure_of};
use ocidd::fail;
use ocidd::reference::{ImageSource, parse_tag};
use ocidd::{boot, disks, efi, install, iso, overlay, push};
use ocidd::{out, say};

fn cli() -> clap::Command {
    clap::Command::new("ocidd")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Install a raw disk image from an OCI registry onto a disk")
        .long_about(format!(
            "Install a raw disk image from an OCI registry onto a disk.\n\n\
             With no subcommand, the arguments are read as kernel command-line words, so that \
             `ocidd $(cat /proc/cmdline)` works: {}. Other words are ignored. Default words \
             come from /etc/ocidd/cmdline (a site overlay's); the words given override them. \
             docs/parameters.md lists every word and flag.",
            docs::word_list()
        ))
        .args_conflicts_with_subcommands(true)
        .arg(
            Arg::new("words")
                .value_name("WORD")
                .help("Kernel command-line words (oci.tag=…, dd.of=…, dd.bs=…, …)")
                .num_args(0..)
                .value_parser(value_parser!(OsString)),
        )
        .subcommand(
            clap::Command::new("install")
                .about("Install an image onto a disk (the flags mirror the kernel words)")
                .args(flags::args(Command::Install)),
        )
        .subcommand(
            clap::Command::new("push")
                .about("Compress a raw image and push it to a registry as a single-layer image")
                .args(flags::args(Command::Push))
                .arg(
                    Arg::new("file")
                        .value_name("FILE")
                        .help("The raw disk image (a file or a block device)")
                        .required(true)
                        .value_parser(value_parser!(PathBuf)),
                )
                .arg(
                    Arg::new("reference")
                        .value_name("REGISTRY/REPOSITORY:TAG")
                        .help("Where to push it")
                        .required(true)
                        .value_parser(parse_tag),
                ),
        )
        .subcommand(clap::Command::new("disks").about(
            "List this machine's disks with what hints can match and the names udev would \
             give them (read from sysfs, so also where there is no udev)",
        ))
        .subcommand(
            clap::Command::new("overlay")
                .about(
                    "Write a site overlay: an initramfs of SRC=DEST files that boot loaders load \
                     after the main one. Its /etc/ocidd/cmdline holds the site's default words; \
                     files under /etc/ocidd/ get mode 0600",
                )
                .args(flags::args(Command::Overlay))
                .arg(
                    Arg::new("files")
                        .value_name("SRC=DEST")
                        .help("A local file and where it goes, e.g. ca.pem=/etc/ocidd/ca.pem")
                        .required(true)
                        .action(ArgAction::Append)
                        .value_parser(value_parser!(overlay::OverlayFile)),
                ),
        )
        .subcommand(
            clap::Command::new("uki")
                .about(
                    "Write a unified kernel image: systemd's EFI stub with the kernel, the \
                     initrds and the words as its command line, one EFI binary for UEFI HTTP Boot",
                )
                .args(flags::args(Command::Uki))
                .arg(
                    Arg::new("words")
                        .value_name("WORD")
                        .help("The kernel's command line, word by word (oci.tag=…, console=…)")
                        .num_args(0..)
                        .last(false),
                ),
        )
        .subcommand(
            clap::Command::new("iso")
                .about("Give a node its own copy of ocidd's boot ISO, or show what an ISO carries")
                .subcommand_required(true)
                .subcommand(
                    clap::Command::new("customize")
                        .about(
                            "Write a copy of the boot ISO (cargo xtask iso) with kernel words \
                             and a site overlay in its embed areas, and an image layout after \
                             it for installs with no network, for virtual media or a USB \
                             stick; the same inputs give the same bytes",
                        )
                        .args(flags::args(Command::Iso))
                        .arg(
                            Arg::new("base")
                                .value_name("BASE.iso")
                                .help("The boot ISO to copy (not changed)")
                                .required(true)
                                .value_parser(value_parser!(PathBuf)),
                        )
                        .arg(
                            Arg::new("words")
                                .value_name("WORD")
                                .help("Kernel words for this node (oci.tag=…, ip=…), each as GRUB passes it: no spaces, quotes or backslashes")
                                .num_args(0..),
                        ),
                )
                .subcommand(
                    clap::Command::new("show")
                        .about("Print the words and the overlay an ISO carries")
                        .arg(
                            Arg::new("iso")
                                .value_name("ISO")
                                .required(true)
                                .value_parser(value_parser!(PathBuf)),
                        ),
                ),
        )
}

fn main() -> ExitCode {
    if boot::is_init() {
        boot::run();
    }
    let matches = cli().get_matches();
    if matches!(matches.subcommand(), Some(("install", _)) | None) {
        install::interrupt::watch();
    }
    let result = match matches.subcommand() {
        Some(("install", args)) => {
            flags::given(args, Command::Install).and_then(|given| install(given.install))
        }
        Some(("push", args)) => push(args),
        Some(("overlay", args)) => write_overlay(args),
        Some(("uki", args)) => write_uki(args),
        Some(("iso", args)) => match args.subcommand() {
            Some(("customize", args)) => customize_iso(args),
            Some(("show", args)) => show_iso(args),
            _ => Ok(()),
        },
        Some(("disks", _)) => {
            for line in disks::table(&disks::list()) {
                out!("{line}");
            }
            Ok(())
        }
        _ => {
            // The words form is what the emergency shell suggests (`ocidd $(cat
            // /proc/cmdline)`): the site's defaults apply as they did at boot.
            let words: Vec<Vec<u8>> = matches
                .get_many::<OsString>("words")
                .into_iter()
                .flatten()
                .map(|w| w.as_bytes().to_vec())
                .collect();
            boot::init::with_site_defaults(words)
                .and_then(|words| text_words(&words))
                .and_then(|words| parse_words(&words))
                .and_then(|mut words| {
                    boot::init::as_booted(&mut words.install);
                    install(words.install)
                })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("ocidd: error: {e:#}");
            ExitCode::from(failure_of(&e).map_or(1, Failure::exit_code))
        }
    }
}

fn install(params: Params) -> anyhow::Result<()> {
    let summary = install::run(params)?;
    install::print_summary(&summary);
    Ok(())
}

fn write_overlay(args: &ArgMatches) -> anyhow::Result<()> {
    let given: Given = flags::given(args, Command::Overlay)?;
    let Some(output) = given.output else {
        fail!(Failure::Usage, "ocidd overlay needs --output PATH");
    };
    let files: Vec<overlay::OverlayFile> = args
        .get_many::<overlay::OverlayFile>("files")
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let written = overlay::write(&files, &output)?;
    for path in &written.missing {
        say!(
            "ocidd: note: the default words name {path}, which this overlay does not carry; it must be in the main initramfs"
        );
    }
    out!(
        "ocidd: wrote {} ({} file{}, {} bytes); load it after the main initramfs",
        output.display(),
        written.files,
        if written.files == 1 { "" } else { "s" },
        written.bytes
    );
    Ok(())
}

/// The WORD arguments of `uki` and `iso customize`, in order.
fn word_args(args: &ArgMatches) -> Vec<String> {
    args.get_many::<String>("words")
        .into_iter()
        .flatten()
        .cloned()
        .collect()
}

fn write_uki(args: &ArgMatches) -> anyhow::Result<()> {
    let given: Given = flags::given(args, Command::Uki)?;
    let Some(output) = given.output else {
        fail!(Failure::Usage, "ocidd uki needs --output PATH");
    };
    let words = word_args(args);
    let written = efi::uki::write(&given.uki, &words, &output)?;
    // The words are not shown: they may hold a proxy's password.
    out!(
        "ocidd: wrote {} ({} bytes: kernel {} bytes, {} initrd{} {} bytes, {} word{})",
        output.display(),
        written.bytes,
        written.kernel_bytes,
        written.initrds,
        if written.initrds == 1 { "" } else { "s" },
        written.initrd_bytes,
        written.words,
        if written.words == 1 { "" } else { "s" }
    );
    Ok(())
}

fn customize_iso(args: &ArgMatches) -> anyhow::Result<()> {
    let given: Given = flags::given(args, Command::Iso)?;
    let Some(output) = given.output else {
        fail!(Failure::Usage, "ocidd iso customize needs --output PATH");
    };
    let Some(base) = args.get_one::<PathBuf>("base") else {
        fail!(Failure::Usage, "ocidd iso customize needs BASE.iso");
    };
    let words = word_args(args);
    let written = iso::customize(
        base,
        &output,
        &words,
        given.iso_overlay.as_deref(),
        given.iso_layout.as_deref(),
    )?;
    let layout = written
        .layout_bytes
        .map(|bytes| format!("; image layout {bytes} bytes"))
        .unwrap_or_default();
    // The words are not shown: they may hold a proxy's password (`ocidd iso show` does).
    out!(
        "ocidd: wrote {} ({} word{}, {} of {} bytes; overlay {} of {} bytes, {} file{}{layout})",
        output.display(),
        written.words,
        if written.words == 1 { "" } else { "s" },
        written.words_bytes,
        iso::WORDS_AREA,
        written.overlay_bytes,
        iso::OVERLAY_AREA,
        written.overlay_files,
        if written.overlay_files == 1 { "" } else { "s" }
    );
    Ok(())
}

fn show_iso(args: &ArgMatches) -> anyhow::Result<()> {
    let Some(path) = args.get_one::<PathBuf>("iso") else {
        fail!(Failure::Usage, "ocidd iso show needs ISO");
    };
    let carried = iso::show(path)?;
    out!(
        "words ({} of {} bytes):{}",
        carried.words_bytes,
        iso::WORDS_AREA,
        carried
            .words
            .iter()
            .map(|w| format!(" {w}"))
            .collect::<String>()
    );
    match &carried.overlay {
        None => out!("overlay: none"),
        Some((bytes, files)) => out!(
            "overlay ({bytes} of {} bytes):{}",
            iso::OVERLAY_AREA,
            files.iter().map(|f| format!(" {f}")).collect::<String>()
        ),
    }
    if let Some(bytes) = carried.layout_bytes {
        out!("image layout: {bytes} bytes (oci.layout=medium)");
    }
    Ok(())
}

fn push(args: &ArgMatches) -> anyhow::Result<()> {
    let given = flags::given(args, Command::Push)?;
    let (Some(file), Some(reference)) = (
        args.get_one::<PathBuf>("file"),
        args.get_one::<ImageSource>("reference"),
    ) else {
        fail!(
            Failure::Usage,
            "ocidd push needs FILE and REGISTRY/REPOSITORY:TAG"
        );
    };
    let options = push::PushOptions {
        file: file.clone(),
        reference: reference.reference().clone(),
        compression: given.push.compression,
        level: given.push.level,
        chunk_size: given.push.chunk_size,
        platform: given.push.platform,
        registry: given.install.registry,
        sign_key: given.push.sign_key,
    };
    let pushed = push::run(&options)?;
    say!(
        "ocidd: pushed {} ({} image, {} bytes; {} layer, {} bytes)",
        options.reference,
        pushed.image_digest,
        pushed.image_size,
        options.compression,
        pushed.layer_size
    );
    out!("manifest {}", pushed.manifest_digest);
    out!("layer {}", pushed.layer_digest);
    if let Some(index) = &pushed.index_digest {
        out!("chunk-index {index}");
    }
    if let Some(update) = &pushed.image_index {
        if let Some(replaced) = &update.replaced {
            say!("ocidd: replaced {replaced} at {}", options.reference);
        }
        say!(
            "ocidd: {} now holds an image index for {}",
            options.reference,
            update.platforms.join(", ")
        );
        out!("index {}", update.digest);
    }
    for tag in &pushed.signatures {
        out!("signature {tag}");
    }
    Ok(())
}
