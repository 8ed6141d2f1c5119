//! The `ocidd` command: installs (kernel words or `install` flags), pushes, and runs as the
//! initramfs's `/init`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use ocidd::chunks::{DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use ocidd::cmdline::{
    DEFAULT_REPORT_INTERVAL, DEFAULT_STALL_TIMEOUT, Params, RegistryOptions, ReportOptions,
    VerifyOptions, parse_block_size, parse_http_url, parse_retries, parse_seconds, parse_words,
    text_words,
};
use ocidd::compression::Compression;
use ocidd::disks::hints::{Hint, Pick, Selection, parse_ironic, parse_match};
use ocidd::error::{Failure, failure_of};
use ocidd::push::{DEFAULT_GZIP_LEVEL, DEFAULT_ZSTD_LEVEL, GZIP_LEVELS, ZSTD_LEVELS};
use ocidd::reference::{ImageSource, Platform, parse_blob, parse_tag};
use ocidd::registry::mirror::Mirror;
use ocidd::retry::DEFAULT_RETRIES;
use ocidd::{boot, disks, install, overlay, push};
use ocidd::{out, say};

#[derive(Parser)]
#[command(
    version,
    about = "Install a raw disk image from an OCI registry onto a disk",
    long_about = "Install a raw disk image from an OCI registry onto a disk.\n\n\
        With no subcommand, the arguments are read as kernel command-line words, so that \
        `ocidd $(cat /proc/cmdline)` works: oci.tag=REF | oci.blob=REF@DIGEST, dd.of=DISK, \
        dd.match=NAME=VALUE (repeatable), dd.hints=b64:JSON, dd.pick=smallest|largest, \
        dd.bs=SIZE, dd.delta, oci.allow_no_tls, wait, oci.ca=PATH, oci.auth=PATH, oci.platform=OS/ARCH, \
        oci.keep_on_error, oci.retries=N, oci.stall_timeout=SECONDS, oci.mirror=HOST[/PREFIX] \
        (repeatable), oci.mirror_resolve, oci.proxy=URL, oci.no_proxy=LIST, ocidd.report=URL \
        (repeatable), ocidd.report_interval=SECONDS, ocidd.report_token=PATH, oci.verify.key=PATH|b64:KEY \
        (repeatable), oci.verify=warn. Other words are \
        ignored. Default words come from /etc/ocidd/cmdline (a site overlay's); the words given \
        override them. As /init (PID 1) it also reads ocidd.after=reboot|poweroff|shell and ip=.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Kernel command-line words (oci.tag=…, dd.of=…, dd.bs=…, …)
    #[arg(value_name = "WORD")]
    words: Vec<OsString>,
}

#[derive(Subcommand)]
enum Command {
    /// Install an image onto a disk (the flags mirror the kernel words)
    Install(Box<InstallArgs>),
    /// Compress a raw image and push it to a registry as a single-layer image
    Push(Box<PushArgs>),
    /// List this machine's disks with what hints can match and the names udev would give
    /// them (read from sysfs, so also where there is no udev)
    Disks,
    /// Write a site overlay: an initramfs of SRC=DEST files that boot loaders load after the
    /// main one. Its /etc/ocidd/cmdline holds the site's default words; files under
    /// /etc/ocidd/ get mode 0600
    Overlay(OverlayArgs),
}

#[derive(Args)]
struct OverlayArgs {
    /// The overlay to write (a gzip'd newc cpio)
    #[arg(long, short, value_name = "PATH")]
    output: PathBuf,
    /// A local file and where it goes, e.g. ca.pem=/etc/ocidd/ca.pem
    #[arg(value_name = "SRC=DEST", required = true)]
    files: Vec<overlay::OverlayFile>,
}

#[derive(Args)]
struct RegistryArgs {
    /// Allow plain HTTP to the registry (oci.allow_no_tls)
    #[arg(long, alias = "allow-no-tls")]
    plain_http: bool,
    /// Extra CA certificates to trust, PEM (oci.ca)
    #[arg(long, value_name = "PATH")]
    ca: Option<PathBuf>,
    /// Docker config.json with credentials (oci.auth); default: $DOCKER_CONFIG or ~/.docker
    #[arg(long, value_name = "PATH")]
    auth: Option<PathBuf>,
    #[arg(long, value_name = "COUNT", value_parser = parse_retries, help = format!(
        "Retries of a failing request or download, with backoff (oci.retries) [default: {DEFAULT_RETRIES}]"
    ))]
    retries: Option<u32>,
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, help = format!(
        "Seconds without data before a download is resumed (oci.stall_timeout) [default: {}]",
        DEFAULT_STALL_TIMEOUT.as_secs()
    ))]
    stall_timeout: Option<Duration>,
}

#[derive(Args)]
struct InstallArgs {
    /// Image to install: REGISTRY/REPOSITORY:TAG (oci.tag)
    #[arg(long, value_name = "REF", value_parser = parse_tag, conflicts_with = "blob")]
    tag: Option<ImageSource>,
    /// Blob to install: REGISTRY/REPOSITORY@sha256:HEX (oci.blob)
    #[arg(long, value_name = "REF", value_parser = parse_blob)]
    blob: Option<ImageSource>,
    /// Disk (or existing file) to write to (dd.of); a /dev/disk/by-id or by-path name is
    /// resolved as udev would, also where there is no udev
    #[arg(long, value_name = "PATH", alias = "of")]
    target: Option<PathBuf>,
    /// A hint the target disk must match, NAME=VALUE (dd.match): serial, wwn, model,
    /// vendor, size, rotational, tran, hctl, by_path, name; also !=, ~ (contains), >=, <=,
    /// >, < for size, and | between alternatives. Repeatable: all must match
    #[arg(long = "match", value_name = "HINT", value_parser = parse_match)]
    hints: Vec<Hint>,
    /// Ironic root device hints as base64 JSON, b64:… (dd.hints)
    #[arg(long = "hints", value_name = "b64:JSON", value_parser = parse_ironic_hints)]
    ironic_hints: Option<IronicHints>,
    /// Of several disks that match, take the smallest or the largest (dd.pick)
    #[arg(long, value_name = "smallest|largest")]
    pick: Option<Pick>,
    /// Write block size, with dd's suffixes: 512, 64k, 1M, 4M (dd.bs)
    #[arg(long, value_name = "SIZE", value_parser = parse_block_size)]
    bs: Option<usize>,
    /// Platform to choose from an image index (oci.platform); default: this machine's
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<Platform>,
    /// Ask for confirmation before writing (wait)
    #[arg(long, alias = "wait")]
    confirm: bool,
    /// On failure, leave the target as it is instead of zeroing its first MiB
    /// (oci.keep_on_error)
    #[arg(long)]
    keep_on_error: bool,
    #[command(flatten)]
    registry: RegistryArgs,
    /// A mirror to try before the registry for what a digest names, HOST[:PORT][/PREFIX]
    /// (oci.mirror); repeatable, tried in order
    #[arg(long = "mirror", value_name = "HOST[/PREFIX]")]
    mirrors: Vec<Mirror>,
    /// Let the mirrors resolve the tag too (oci.mirror_resolve)
    #[arg(long)]
    mirror_resolve: bool,
    /// HTTP proxy for everything, http://HOST:PORT (oci.proxy); default: $HTTPS_PROXY etc.
    #[arg(long, value_name = "URL", value_parser = parse_http_url)]
    proxy: Option<String>,
    /// Hosts to reach without --proxy, comma-separated as NO_PROXY (oci.no_proxy)
    #[arg(long, value_name = "LIST", requires = "proxy")]
    no_proxy: Option<String>,
    /// POST status events as JSON to this URL (ocidd.report); repeatable
    #[arg(long = "report", value_name = "URL", value_parser = parse_http_url)]
    reports: Vec<String>,
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, help = format!(
        "Seconds between progress reports (ocidd.report_interval) [default: {}]",
        DEFAULT_REPORT_INTERVAL.as_secs()
    ))]
    report_interval: Option<Duration>,
    /// A file holding a bearer token for the report receivers (ocidd.report_token)
    #[arg(long, value_name = "PATH")]
    report_token: Option<PathBuf>,
    /// Print the status events as JSON lines on stdout (the final line goes to stderr)
    #[arg(long)]
    json: bool,
    /// Install by tag only if a cosign signature by this key covers it: a PEM public key
    /// file, or b64:DER (oci.verify.key); repeatable, any one may sign
    #[arg(long = "verify-key", value_name = "PATH|b64:KEY", value_parser = parse_verify_key)]
    verify_keys: Vec<String>,
    /// Fetch and write only the chunks the target does not hold already; a chunked image
    /// pushed by this ocidd (dd.delta)
    #[arg(long)]
    delta: bool,
    /// warn: install an image whose signature does not verify, saying so (oci.verify)
    #[arg(long, value_name = "MODE", requires = "verify_keys")]
    verify: Option<VerifyMode>,
}

#[derive(Clone, Copy, ValueEnum)]
enum VerifyMode {
    Enforce,
    Warn,
}

/// `--verify-key`: an inline key is checked now; a file when the install reads it.
fn parse_verify_key(text: &str) -> Result<String, String> {
    if text.starts_with("b64:") {
        ocidd::signature::keys::parse_inline(text)?;
    }
    Ok(text.to_string())
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressionArg {
    Gzip,
    Zstd,
    None,
}

#[derive(Args)]
struct PushArgs {
    /// Compression of the pushed layer
    #[arg(long, value_enum, default_value = "gzip")]
    compression: CompressionArg,
    #[arg(long, help = format!(
        "Compression level (gzip {}-{}, default {DEFAULT_GZIP_LEVEL}; zstd {}-{}, default {DEFAULT_ZSTD_LEVEL})",
        GZIP_LEVELS.start(), GZIP_LEVELS.end(), ZSTD_LEVELS.start(), ZSTD_LEVELS.end()
    ))]
    level: Option<i32>,
    /// Compress in independent chunks of this size, on all cores, with a chunk index layer
    /// that lets installs decompress in parallel and skip zero chunks; 0 for one plain stream
    #[arg(long, value_name = "SIZE", value_parser = parse_chunk_size,
        default_value_t = ChunkSize(Some(DEFAULT_CHUNK_SIZE)))]
    chunk_size: ChunkSize,
    /// Push as this platform's image (OS/ARCH[/VARIANT], e.g. linux/arm64) in an image index
    /// at the tag, keeping the entries for other platforms
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<Platform>,
    /// Sign what the tag names with this unencrypted PEM ECDSA P-256 private key, as cosign
    /// does (its legacy layout, at tag sha256-HEX.sig)
    #[arg(long, value_name = "KEY.pem")]
    sign_key: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// The raw disk image (a file or a block device)
    file: PathBuf,
    /// Where to push it: REGISTRY/REPOSITORY:TAG
    #[arg(value_parser = parse_tag)]
    reference: ImageSource,
}

/// `--hints`: Ironic's hints, several in one value.
#[derive(Clone)]
struct IronicHints(Vec<Hint>);

fn parse_ironic_hints(text: &str) -> Result<IronicHints, String> {
    parse_ironic(text).map(IronicHints)
}

/// `--chunk-size`: `None` for one stream.
#[derive(Clone, Copy)]
struct ChunkSize(Option<u64>);

/// As `--chunk-size` takes it back.
impl std::fmt::Display for ChunkSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => write!(f, "0"),
            Some(n) if n.is_multiple_of(1 << 20) => write!(f, "{}M", n >> 20),
            Some(n) => write!(f, "{}k", n >> 10),
        }
    }
}

fn parse_chunk_size(text: &str) -> Result<ChunkSize, String> {
    match ocidd::cmdline::parse_size(text)? {
        0 => Ok(ChunkSize(None)),
        // A power of two, so that each chunk is a subtree of the image's BLAKE3 tree.
        n if (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&n) && n.is_power_of_two() => {
            Ok(ChunkSize(Some(n)))
        }
        _ => Err(format!(
            "{text:?} is not a chunk size: 0, or a power of two from {}k to {}M (64k, 128k, … 4M, … 64M)",
            MIN_CHUNK_SIZE >> 10,
            MAX_CHUNK_SIZE >> 20
        )),
    }
}

impl RegistryArgs {
    fn options(self, platform: Option<Platform>) -> RegistryOptions {
        RegistryOptions {
            allow_no_tls: self.plain_http,
            ca: self.ca,
            auth: self.auth,
            platform,
            retries: self.retries,
            stall_timeout: self.stall_timeout,
            ..RegistryOptions::default()
        }
    }
}

impl InstallArgs {
    fn params(self) -> Params {
        let mut hints = self.hints;
        hints.extend(self.ironic_hints.map(|h| h.0).unwrap_or_default());
        Params {
            source: self.tag.or(self.blob),
            target: self.target,
            selection: Selection {
                hints,
                pick: self.pick,
            },
            block_size: self.bs,
            registry: RegistryOptions {
                mirrors: self.mirrors,
                mirror_resolve: self.mirror_resolve,
                proxy: self.proxy,
                no_proxy: self.no_proxy,
                ..self.registry.options(self.platform)
            },
            wait: self.confirm,
            keep_on_error: self.keep_on_error,
            report: ReportOptions {
                urls: self.reports,
                interval: self.report_interval,
                token: self.report_token,
                json_lines: self.json,
            },
            delta: self.delta,
            verify: VerifyOptions {
                keys: self.verify_keys,
                warn_only: matches!(self.verify, Some(VerifyMode::Warn)),
            },
        }
    }
}

fn main() -> ExitCode {
    if boot::is_init() {
        boot::run();
    }
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::Install(_)) | None) {
        install::interrupt::watch();
    }
    let result = match cli.command {
        Some(Command::Install(args)) => install(args.params()),
        Some(Command::Push(args)) => push(*args),
        Some(Command::Overlay(args)) => write_overlay(&args),
        Some(Command::Disks) => {
            for line in disks::table(&disks::list()) {
                out!("{line}");
            }
            Ok(())
        }
        None => {
            // The words form is what the emergency shell suggests (`ocidd $(cat
            // /proc/cmdline)`): the site's defaults apply as they did at boot.
            let words: Vec<Vec<u8>> = cli.words.iter().map(|w| w.as_bytes().to_vec()).collect();
            boot::init::with_site_defaults(words)
                .and_then(|words| text_words(&words))
                .and_then(|words| parse_words(&words))
                .and_then(|words| install(words.install))
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

fn write_overlay(args: &OverlayArgs) -> anyhow::Result<()> {
    let written = overlay::write(&args.files, &args.output)?;
    for path in &written.missing {
        say!(
            "ocidd: note: the default words name {path}, which this overlay does not carry; it must be in the main initramfs"
        );
    }
    out!(
        "ocidd: wrote {} ({} file{}, {} bytes); load it after the main initramfs",
        args.output.display(),
        written.files,
        if written.files == 1 { "" } else { "s" },
        written.bytes
    );
    Ok(())
}

fn push(args: PushArgs) -> anyhow::Result<()> {
    let options = push::PushOptions {
        file: args.file,
        reference: args.reference.reference().clone(),
        compression: match args.compression {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::None => Compression::None,
        },
        level: args.level,
        chunk_size: args.chunk_size.0,
        platform: args.platform,
        registry: args.registry.options(None),
        sign_key: args.sign_key,
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
