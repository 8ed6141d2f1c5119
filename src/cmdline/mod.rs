//! The parameters, as the words of a kernel command line carry them (`oci.tag=…`, `dd.of=…`,
//! `wait`): the install's, and those only `/init` reads (`ocidd.after=`, `ip=`); and the value
//! parsers shared with the command-line flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use crate::disks::hints::Selection;
use crate::error::{Classify, Failure};
use crate::fail;
use crate::reference::{ImageSource, Platform};
use crate::registry::mirror::Mirror;
use crate::retry::{Backoff, DEFAULT_RETRIES};

pub mod docs;
pub mod flags;
pub mod network;
pub mod seed;
pub mod table;

pub use table::{Command, DEFAULT_STUB, Given, Parameter, PushParams, Refusal, UkiParams, Value};

/// The largest `dd.bs` accepted: one block is held in memory per stage.
pub const MAX_BLOCK_SIZE: u64 = 16 << 20;

/// Registry access settings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Plain HTTP is allowed (`oci.allow_no_tls`); otherwise HTTPS with verified certificates.
    pub allow_no_tls: bool,
    /// An extra CA bundle (PEM) to trust (`oci.ca=`).
    pub ca: Option<PathBuf>,
    /// A docker `config.json` with credentials (`oci.auth=`).
    pub auth: Option<PathBuf>,
    /// The platform to select from an image index (`oci.platform=`); default: this machine's.
    pub platform: Option<Platform>,
    /// Retries of a failing request or download (`oci.retries=`).
    pub retries: Option<u32>,
    /// How long a download may receive nothing before it is resumed (`oci.stall_timeout=`).
    pub stall_timeout: Option<Duration>,
    /// Mirrors to try, in order, before the registry (`oci.mirror=`, repeatable).
    pub mirrors: Vec<Mirror>,
    /// Whether mirrors may resolve tags too (`oci.mirror_resolve`); else only the registry does.
    pub mirror_resolve: bool,
    /// An OCI image layout asked first, tags too (`oci.layout=`).
    pub layout: Option<crate::registry::layout::LayoutSource>,
    /// The HTTP proxy for everything (`oci.proxy=`); else the environment's, if any.
    pub proxy: Option<String>,
    /// Hosts reached without the proxy (`oci.no_proxy=`, as `NO_PROXY` lists them).
    pub no_proxy: Option<String>,
}

/// The default of `oci.stall_timeout`.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

impl RegistryOptions {
    pub fn backoff(&self) -> Backoff {
        Backoff::with_retries(self.retries.unwrap_or(DEFAULT_RETRIES))
    }

    pub fn stall_timeout(&self) -> Duration {
        self.stall_timeout.unwrap_or(DEFAULT_STALL_TIMEOUT)
    }
}

/// Which signatures an install by tag requires (`oci.verify.key=`, `oci.verify=`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Keys any one of which may sign: PEM files, or `b64:` DER inline (checked when read).
    pub keys: Vec<String>,
    /// `oci.verify=warn`: an image without a valid signature is installed, loudly.
    pub warn_only: bool,
}

/// Where the install reports its progress (`ocidd.report=`, …).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReportOptions {
    /// Receivers the events are POSTed to (`ocidd.report=`, repeatable).
    pub urls: Vec<String>,
    /// How often progress is sent (`ocidd.report_interval=`).
    pub interval: Option<Duration>,
    /// A file holding a bearer token for the receivers (`ocidd.report_token=`).
    pub token: Option<PathBuf>,
    /// Print the events as JSON lines on stdout (`ocidd install --json`).
    pub json_lines: bool,
}

/// The default of `ocidd.report_interval`.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(10);

impl ReportOptions {
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(DEFAULT_REPORT_INTERVAL)
    }
}

/// Everything an install can be told. Unset values are asked for, or are an error.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Params {
    pub source: Option<ImageSource>,
    pub target: Option<PathBuf>,
    /// What the target disk must be (`dd.match=`, `dd.hints=`, `dd.pick=`).
    pub selection: Selection,
    pub block_size: Option<usize>,
    pub registry: RegistryOptions,
    /// Ask for confirmation before writing.
    pub wait: bool,
    /// Leave the target as it is when an install fails after writing began.
    pub keep_on_error: bool,
    /// Status reports.
    pub report: ReportOptions,
    /// Signatures required.
    pub verify: VerifyOptions,
    /// Fetch and write only the chunks the target does not hold already (`dd.delta`).
    pub delta: bool,
    /// The machine's config drive or NoCloud seed, written after the image.
    pub seed: seed::SeedOptions,
    /// What the install does to UEFI's boot entries (`ocidd.boot_order=`); unset: /init's
    /// default is [`BootOrder::Next`], `ocidd install`'s [`BootOrder::Keep`].
    pub boot_order: Option<BootOrder>,
}

/// What only `/init` reads from the command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// What to do after a successful install (`ocidd.after=`).
    pub after: Option<After>,
    /// The network words: `ip=`, `vlan=`, `bond=`, `BOOTIF=` and the rest.
    pub network: network::NetworkWords,
    /// How long to count down before rebooting or powering off (`ocidd.reboot_delay=`).
    pub reboot_delay: Option<Duration>,
}

/// The default of `ocidd.reboot_delay`: time to read the console's last lines.
pub const DEFAULT_REBOOT_DELAY: Duration = Duration::from_secs(5);

impl BootParams {
    pub fn reboot_delay(&self) -> Duration {
        self.reboot_delay.unwrap_or(DEFAULT_REBOOT_DELAY)
    }
}

/// The words of a command line, read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Words {
    pub install: Params,
    pub boot: BootParams,
}

/// What `/init` does once the install succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Reboot,
    Poweroff,
    Shell,
    /// Start the installed system's kernel with kexec, without the firmware.
    Kexec,
}

impl std::str::FromStr for After {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reboot" => Ok(After::Reboot),
            "poweroff" => Ok(After::Poweroff),
            "shell" => Ok(After::Shell),
            "kexec" => Ok(After::Kexec),
            _ => Err(format!(
                "{s:?} is not one of reboot, poweroff, shell, kexec"
            )),
        }
    }
}

/// What the install does to UEFI's boot entries once the image verified
/// (`ocidd.boot_order=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootOrder {
    /// Writes the disk's entry and boots it next, once: the network stays first, so the
    /// provisioning system still owns the order.
    Next,
    /// Writes the disk's entry first in `BootOrder`.
    Disk,
    /// Changes no variable.
    Keep,
}

impl std::str::FromStr for BootOrder {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "next" => Ok(BootOrder::Next),
            "disk" => Ok(BootOrder::Disk),
            "keep" => Ok(BootOrder::Keep),
            _ => Err(format!("{s:?} is not one of next, disk, keep")),
        }
    }
}

/// Splits a kernel command line into words the way the kernel does: at (ASCII) whitespace
/// outside double quotes, with the quotes removed. The line is bytes: words that are not
/// ours need not be UTF-8 (see [`text_words`]).
pub fn split_kernel_cmdline(line: &[u8]) -> Vec<Vec<u8>> {
    let mut words = Vec::new();
    let mut word = Vec::new();
    let mut in_word = false;
    let mut in_quote = false;
    for &b in line {
        match b {
            b'"' => {
                in_quote = !in_quote;
                in_word = true;
            }
            b if b.is_ascii_whitespace() && !in_quote => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            b => {
                word.push(b);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Where a site overlay puts its default words (see [`with_defaults`]).
pub const DEFAULTS_FILE: &str = "/etc/ocidd/cmdline";

/// The default words in `path`: words as on a kernel command line, on any number of lines;
/// lines starting with `#` are comments. No file is no defaults.
pub fn read_defaults(path: &Path) -> Result<Vec<Vec<u8>>> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(anyhow::anyhow!("reading {}: {e}", path.display()))
                .classify(Failure::Usage);
        }
    };
    Ok(split_defaults(&text))
}

/// The words of a defaults file's text (see [`read_defaults`]): a word that begins with `#`
/// begins a comment, to the end of its line.
pub fn split_defaults(text: &[u8]) -> Vec<Vec<u8>> {
    text.split(|&b| b == b'\n')
        .flat_map(|line| {
            split_kernel_cmdline(line)
                .into_iter()
                .take_while(|word| !word.starts_with(b"#"))
        })
        .collect()
}

/// The longest word name an error or the console repeats whole.
const MAX_SHOWN_NAME: usize = 40;

/// A word's name as the console may show it: ocidd's own (`oci.`, `dd.`, `ocidd.`, `wait`,
/// `ip`), normalized ('-' as '_'), printable ASCII and short; `None` for any other word.
pub fn shown_name(word: &[u8]) -> Option<String> {
    let name = word_name(word);
    let printable = name.iter().all(|b| b.is_ascii_graphic());
    (is_ours(word) && printable && name.len() <= MAX_SHOWN_NAME)
        .then(|| String::from_utf8_lossy(&name).into_owned())
}

/// `name` for an error line: as it is when short, else cut (a junk word can be megabytes).
pub fn bounded_name(name: &str) -> String {
    match name.char_indices().nth(MAX_SHOWN_NAME) {
        Some((cut, _)) => format!("{}… ({} bytes)", &name[..cut], name.len()),
        None => name.to_string(),
    }
}

/// The default words that `words` does not override, then `words`. A word overrides the
/// defaults of the same name (all of them, for a repeatable one: `oci.mirror=` on the kernel
/// line replaces the site's list); `oci.tag` and `oci.blob` override each other.
pub fn with_defaults(defaults: Vec<Vec<u8>>, words: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let given: Vec<Vec<u8>> = words.iter().map(|w| override_key(w)).collect();
    defaults
        .into_iter()
        .filter(|d| !given.contains(&override_key(d)))
        .chain(words)
        .collect()
}

/// A word's name as the kernel compares it ('-' and '_' alike), with the two ways of naming
/// the image as one.
fn override_key(word: &[u8]) -> Vec<u8> {
    let name = word_name(word);
    if name == b"oci.blob" {
        b"oci.tag".to_vec()
    } else {
        name
    }
}

/// The words as text. A word that is not UTF-8 is dropped like any other word that is not
/// ours (`console=tty\xff`), unless it is in our namespaces, where it is an error.
pub fn text_words<W: AsRef<[u8]>>(words: &[W]) -> Result<Vec<String>> {
    let mut text = Vec::with_capacity(words.len());
    for word in words {
        let word = word.as_ref();
        match std::str::from_utf8(word) {
            Ok(word) => text.push(word.to_string()),
            Err(_) if is_ours(word) => fail!(
                Failure::Usage,
                "{} is not valid UTF-8",
                bounded_name(&String::from_utf8_lossy(word))
            ),
            Err(_) => {}
        }
    }
    Ok(text)
}

/// A word's name, before `=`, with '-' read as '_' as the kernel does.
fn word_name(word: &[u8]) -> Vec<u8> {
    let name = word.split(|&b| b == b'=').next().unwrap_or(word);
    name.iter()
        .map(|&b| if b == b'-' { b'_' } else { b })
        .collect()
}

/// The network words /init reads with dracut's meaning (see [`network`]).
const NETWORK_WORDS: [&[u8]; 7] = [
    b"ip",
    b"vlan",
    b"bond",
    b"ifname",
    b"BOOTIF",
    b"rd.route",
    b"nameserver",
];

/// Whether a word's name is one of ocidd's, or a network word /init reads.
fn is_ours(word: &[u8]) -> bool {
    let name = word_name(word);
    [&b"oci."[..], b"dd.", b"ocidd."]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || name == b"wait"
        || NETWORK_WORDS.contains(&name.as_slice())
}

/// Parses the words of a kernel command line (or the same words given as arguments), as
/// [`table::PARAMETERS`] defines them, for an install and for `/init`. Words that are not
/// ours (`console=`, `BOOT_IMAGE=`, `quiet`) are ignored; an unknown word in our namespaces
/// (`oci.`, `dd.`, `ocidd.`) is an error, since it is most likely a typo.
pub fn parse_words<S: AsRef<str>>(words: &[S]) -> Result<Words> {
    let mut given = Given::default();
    for word in words {
        let word = word.as_ref();
        let (raw_name, value) = match word.split_once('=') {
            Some((name, value)) => (name, Some(unquote(value))),
            None => (word, None),
        };
        // The kernel treats '-' and '_' alike in parameter names; so do we.
        let name = raw_name.replace('-', "_");
        let parameter = match table::by_word(&name) {
            Some(p) if p.takes(Command::Install) || p.takes(Command::Init) => p,
            _ if is_ours(word.as_bytes()) => fail!(
                Failure::Usage,
                "unknown parameter {}",
                bounded_name(raw_name)
            ),
            _ => continue,
        };
        if let Value::Text(what) = parameter.value {
            match value {
                None => fail!(
                    Failure::Usage,
                    "{raw_name} needs a value ({raw_name}={what})"
                ),
                Some("") => fail!(
                    Failure::Usage,
                    "{raw_name}= is empty (expected {raw_name}={what})"
                ),
                Some(_) => {}
            }
        }
        record(&mut given, parameter, value, raw_name)?;
    }
    let given = given
        .finish()
        .map_err(|e| crate::error::classified(Failure::Usage, anyhow::anyhow!(e)))?;
    Ok(Words {
        install: given.install,
        boot: given.boot,
    })
}

/// Records `value` for `parameter`, which was given as `name` (a word, or `--flag`): an
/// error that names it if the value is not taken.
pub(crate) fn record(
    given: &mut Given,
    parameter: &Parameter,
    value: Option<&str>,
    name: &str,
) -> Result<()> {
    (parameter.set)(given, value).map_err(|refusal| {
        let message = match refusal {
            Refusal::Invalid(why) => format!("invalid {name}: {why}"),
            Refusal::Twice => format!("{name} is given twice, with different values"),
        };
        crate::error::classified(Failure::Usage, anyhow::anyhow!(message))
    })
}

/// Removes one pair of double quotes around a value, as left by a shell's word splitting of
/// `$(cat /proc/cmdline)`.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// Parses `oci.proxy` and `ocidd.report`: an `http://` or `https://` URL with a host (a
/// proxy's may carry credentials). The error says why not without repeating the text: it may
/// hold a password.
pub fn parse_http_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("not an http:// or https:// URL".to_string());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_string());
    }
    Ok(text.to_string())
}

/// Parses `oci.retries`: 0 to 1000.
pub fn parse_retries(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if n <= 1000 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a number of retries from 0 to 1000"
        )),
    }
}

/// Parses a duration in whole seconds (`30` or `30s`), from 1 s to 1 h.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let digits = text.strip_suffix('s').unwrap_or(text);
    match digits.parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "{text:?} is not a number of seconds from 1 to 3600"
        )),
    }
}

/// Parses a size the way dd does: a number with an optional suffix (c, w, b, k/K, kB, M, MB,
/// G, GB, and the KiB/MiB/GiB spellings).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let bad = || format!("{text:?} is not a size (expected e.g. 512, 64k, 1M, 4M)");
    if digits.is_empty() {
        return Err(bad());
    }
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let multiplier: u64 = match suffix {
        "" | "c" => 1,
        "w" => 2,
        "b" => 512,
        "k" | "K" | "KiB" => 1 << 10,
        "kB" | "KB" => 1000,
        "m" | "M" | "MiB" => 1 << 20,
        "MB" => 1000 * 1000,
        "g" | "G" | "GiB" => 1 << 30,
        "GB" => 1000 * 1000 * 1000,
        "t" | "T" | "TiB" => 1 << 40,
        "TB" => 1000 * 1000 * 1000 * 1000,
        _ => return Err(bad()),
    };
    number.checked_mul(multiplier).ok_or_else(bad)
}

/// Parses `dd.bs`: a size from 1 byte to [`MAX_BLOCK_SIZE`].
pub fn parse_block_size(text: &str) -> Result<usize, String> {
    match parse_size(text)? {
        0 => Err(format!(
            "{text:?} is zero; the block size must be at least 1 byte"
        )),
        n if n > MAX_BLOCK_SIZE => Err(format!(
            "{text:?} is larger than the maximum of {}M",
            MAX_BLOCK_SIZE >> 20
        )),
        n => Ok(n as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::failure_of;

    fn parse(line: &str) -> Result<Params> {
        let words = text_words(&split_kernel_cmdline(line.as_bytes()))?;
        parse_words(&words).map(|words| words.install)
    }

    fn error(line: &str) -> String {
        let e = parse(line).unwrap_err();
        assert_eq!(failure_of(&e), Some(Failure::Usage), "{e:#}");
        format!("{e:#}")
    }

    #[test]
    fn splits_like_the_kernel() {
        assert_eq!(
            split_kernel_cmdline(b"  a=1 b=\"x y\" \"c=d e\"  f\n"),
            [&b"a=1"[..], b"b=x y", b"c=d e", b"f"]
        );
        assert!(split_kernel_cmdline(b"   ").is_empty());
    }

    #[test]
    fn words_that_are_not_utf8_are_ignored_unless_ours() {
        let line = b"console=tty\xff oci.tag=r.example/d:v1 \xfe\xfe quiet";
        let words = text_words(&split_kernel_cmdline(line)).unwrap();
        assert_eq!(words, ["oci.tag=r.example/d:v1", "quiet"]);
        for ours in [
            &b"dd.of=/dev/sd\xff"[..],
            b"oci.auth=\xff",
            b"wait=\xff",
            b"oci.allow-no-tls=\xff",
        ] {
            let e = text_words(&[ours]).unwrap_err();
            assert!(format!("{e:#}").contains("is not valid UTF-8"), "{e:#}");
        }
    }

    #[test]
    fn reads_the_original_words_and_ignores_others() {
        let p = parse(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 quiet oci.tag=10.0.2.2:5000/disk:v1 \
             oci.allow_no_tls dd.of=/dev/vda dd.bs=64k wait ip=dhcp",
        )
        .unwrap();
        assert_eq!(p.source.unwrap().to_string(), "10.0.2.2:5000/disk:v1");
        assert!(p.registry.allow_no_tls);
        assert_eq!(p.target, Some(PathBuf::from("/dev/vda")));
        assert_eq!(p.block_size, Some(65536));
        assert!(p.wait);
        assert!(!p.keep_on_error);
        let boot = parse_words(&["ip=dhcp", "ocidd.after=poweroff"])
            .unwrap()
            .boot;
        assert_eq!(boot.network.ip[0].method, network::Method::Dhcp);
        assert_eq!(boot.after, Some(After::Poweroff));
    }

    #[test]
    fn nothing_given_is_all_missing() {
        let p = parse("console=ttyS0").unwrap();
        assert_eq!(p, Params::default());
    }

    #[test]
    fn dashes_and_quotes() {
        let p = parse_words(&[
            "oci.allow-no-tls=1",
            "dd.of=\"/dev/sda\"",
            "oci.keep-on-error",
        ])
        .unwrap()
        .install;
        assert!(p.registry.allow_no_tls);
        assert!(p.keep_on_error);
        assert_eq!(p.target, Some(PathBuf::from("/dev/sda")));
        assert!(!parse("oci.allow_no_tls=0").unwrap().registry.allow_no_tls);
    }

    #[test]
    fn bad_words() {
        let blob = format!("r.example/d@sha256:{}", "a".repeat(64));
        assert!(
            error(&format!("oci.tag=r.example/d:v1 oci.blob={blob}"))
                .contains("mutually exclusive")
        );
        assert!(error("dd.of").contains("dd.of needs a value"));
        assert!(error("dd.of=").contains("dd.of= is empty"));
        assert!(error("dd.bs=0").contains("invalid dd.bs"));
        assert!(error("dd.bs=12q").contains("not a size"));
        assert!(error("dd.bs=1G").contains("larger than the maximum"));
        assert!(error("oci.tga=x").contains("unknown parameter oci.tga"));
        assert!(error("oci.tag=NOT/valid").contains("invalid oci.tag"));
        assert!(error("oci.blob=r.example/d:v1").contains("has no digest"));
        assert!(error("dd.of=/dev/sda dd.of=/dev/sdb").contains("given twice"));
        assert!(error("wait=maybe").contains("invalid wait"));
        assert!(error("ocidd.after=dance").contains("invalid ocidd.after"));
        assert!(error("oci.platform=linux").contains("invalid oci.platform"));
        assert!(error("oci.retries=-1").contains("invalid oci.retries"));
        assert!(error("oci.retries=5000").contains("invalid oci.retries"));
        assert!(error("oci.stall_timeout=0").contains("invalid oci.stall_timeout"));
        assert!(error("oci.stall_timeout=soon").contains("invalid oci.stall_timeout"));
        let p = parse("oci.retries=3 oci.stall_timeout=5s").unwrap();
        assert_eq!(p.registry.retries, Some(3));
        assert_eq!(p.registry.stall_timeout, Some(Duration::from_secs(5)));
        // The same value twice is harmless.
        assert!(parse("dd.of=/dev/sda dd.of=/dev/sda").is_ok());
    }

    #[test]
    fn fleet_words() {
        let p = parse(
            "oci.mirror=cache.lan:5000 oci.mirror=http://10.0.0.9/hub oci.mirror=cache.lan:5000 \
             oci.mirror_resolve oci.proxy=http://u:secret@proxy.lan:3128 oci.no_proxy=.lan,10.0.0.0/8 \
             ocidd.report=https://maas.lan/events ocidd.report=http://10.0.0.1:9/r \
             ocidd.report_interval=2 ocidd.report_token=/etc/ocidd/token",
        )
        .unwrap();
        let mirrors: Vec<String> = p.registry.mirrors.iter().map(|m| m.to_string()).collect();
        assert_eq!(mirrors, ["cache.lan:5000", "http://10.0.0.9/hub"]);
        assert!(p.registry.mirror_resolve);
        assert_eq!(
            p.registry.proxy.as_deref(),
            Some("http://u:secret@proxy.lan:3128")
        );
        assert_eq!(p.registry.no_proxy.as_deref(), Some(".lan,10.0.0.0/8"));
        assert_eq!(
            p.report.urls,
            ["https://maas.lan/events", "http://10.0.0.1:9/r"]
        );
        assert_eq!(p.report.interval(), Duration::from_secs(2));
        assert_eq!(p.report.token, Some(PathBuf::from("/etc/ocidd/token")));
        assert_eq!(
            parse("").unwrap().report.interval(),
            DEFAULT_REPORT_INTERVAL
        );
    }

    #[test]
    fn bad_fleet_words() {
        assert!(error("oci.mirror=").contains("oci.mirror= is empty"));
        assert!(error("oci.mirror=ftp://x").contains("invalid oci.mirror"));
        assert!(error("oci.proxy=proxy.lan:3128").contains("invalid oci.proxy"));
        assert!(error("oci.proxy=socks5://p:1").contains("not an http:// or https:// URL"));
        assert!(error("ocidd.report=maas.lan/x").contains("invalid ocidd.report"));
        assert!(error("ocidd.report_interval=0").contains("invalid ocidd.report_interval"));
        assert!(error("ocidd.reprot=http://x").contains("unknown parameter ocidd.reprot"));
        assert!(error("oci.verify=warn").contains("needs a key"));
        assert!(error("oci.verify.key=b64:xyz").contains("invalid oci.verify.key"));
        let key = "b64:MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE";
        assert!(error(&format!("oci.verify.key={key}")).contains("not an ECDSA P-256"));
        assert!(error("oci.verify.key=/k.pub oci.verify=maybe").contains("is not warn or enforce"));
        let p = parse("oci.verify.key=/a.pub oci.verify.key=/b.pub oci.verify=warn").unwrap();
        assert_eq!(p.verify.keys, ["/a.pub", "/b.pub"]);
        assert!(p.verify.warn_only);
        // A password in a bad proxy URL is not repeated on the console.
        let e = error("oci.proxy=ftp://u:hunter2@p:1");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn kernel_words_override_the_site_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cmdline");
        std::fs::write(
            &file,
            "# site defaults\n oci.mirror=a:5000 oci.mirror=b:5000\noci.ca=/etc/ocidd/ca.pem \
             oci.tag=r.example/d:site \"ocidd.report=http://x/a\"\n  # oci.auth=/nope\n",
        )
        .unwrap();
        let defaults = read_defaults(&file).unwrap();
        assert_eq!(defaults.len(), 5);
        let kernel = split_kernel_cmdline(
            format!(
                "console=ttyS0 oci.blob=r.example/d@sha256:{} oci.mirror=c:5000",
                "a".repeat(64)
            )
            .as_bytes(),
        );
        let words = text_words(&with_defaults(defaults, kernel)).unwrap();
        let p = parse_words(&words).unwrap().install;
        assert!(p.source.unwrap().blob().is_some());
        let mirrors: Vec<String> = p.registry.mirrors.iter().map(|m| m.to_string()).collect();
        assert_eq!(mirrors, ["c:5000"]);
        assert_eq!(p.registry.ca, Some(PathBuf::from("/etc/ocidd/ca.pem")));
        assert_eq!(p.report.urls, ["http://x/a"]);
        assert_eq!(p.registry.auth, None);
        assert!(read_defaults(&dir.path().join("none")).unwrap().is_empty());
    }

    #[test]
    fn defaults_comments_and_shown_names() {
        let words = split_defaults(b"oci.retries=3 # the rest: oci.tag=x\n#oci.ca=/y\n dd.bs=1M\n");
        assert_eq!(words, [&b"oci.retries=3"[..], b"dd.bs=1M"]);
        assert_eq!(
            shown_name(b"oci.mirror=a:5000").as_deref(),
            Some("oci.mirror")
        );
        assert_eq!(
            shown_name(b"oci.allow-no-tls").as_deref(),
            Some("oci.allow_no_tls")
        );
        assert_eq!(shown_name(b"console=ttyS0"), None);
        assert_eq!(shown_name(b"oci.\xff=1"), None);
        assert_eq!(shown_name(&[b'd', b'd', b'.'].repeat(100)), None);
        let junk = format!("oci.{}", "x".repeat(5 << 20));
        let e = error(&junk);
        assert!(e.len() < 200, "{}", e.len());
    }

    #[test]
    fn sizes() {
        for (text, size) in [
            ("512", 512),
            ("1c", 1),
            ("2w", 4),
            ("1b", 512),
            ("64k", 65536),
            ("64K", 65536),
            ("1kB", 1000),
            ("1M", 1 << 20),
            ("4MiB", 4 << 20),
            ("1MB", 1_000_000),
            ("1G", 1 << 30),
        ] {
            assert_eq!(parse_size(text), Ok(size), "{text}");
        }
        for text in [
            "",
            "k",
            "1.5M",
            "-1",
            "1 M",
            "99999999999999999999",
            "18446744073709551615G",
        ] {
            assert!(parse_size(text).is_err(), "{text}");
        }
        assert_eq!(parse_block_size("16M"), Ok(16 << 20));
        assert!(parse_block_size("0k").is_err());
    }
}
