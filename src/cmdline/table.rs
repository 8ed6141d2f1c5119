//! Every parameter ocidd takes, each defined once: its kernel word and its flag, what its
//! value is, which commands take it, its default, what it does, and how it is recorded. The
//! kernel-word parser ([`super::parse_words`]), the flags of `ocidd install`, `push` and
//! `overlay` ([`super::flags`]), `--help` and `docs/parameters.md` ([`super::docs`]) are all
//! made from [`PARAMETERS`], so a word and its flag take the same values the same way.

use std::path::PathBuf;
use std::time::Duration;

use crate::chunks::{DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use crate::compression::{
    Compression, DEFAULT_GZIP_LEVEL, DEFAULT_ZSTD_LEVEL, GZIP_LEVELS, ZSTD_LEVELS,
};
use crate::disks::hints::{parse_ironic, parse_match};
use crate::reference::{ImageSource, parse_blob, parse_tag};
use crate::retry::DEFAULT_RETRIES;

use super::{
    BootParams, DEFAULT_REBOOT_DELAY, DEFAULT_REPORT_INTERVAL, DEFAULT_STALL_TIMEOUT, Params,
    network, parse_block_size, parse_http_url, parse_retries, parse_seconds, parse_size, seed,
};

/// What takes a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// An install: the kernel's words at boot, `ocidd WORD…` at a shell, `ocidd install`.
    Install,
    /// What only `/init` reads from the kernel's words.
    Init,
    /// `ocidd push`.
    Push,
    /// `ocidd overlay`.
    Overlay,
    /// `ocidd uki`.
    Uki,
    /// `ocidd iso customize`.
    Iso,
}

/// A parameter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// None: the word alone (or `=1`, `=0`), the flag alone.
    Switch,
    /// A value, shown as this (`PATH`, `SIZE`).
    Text(&'static str),
}

/// Why a value was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a value of this parameter: why.
    Invalid(String),
    /// Given before with another value, and the parameter takes one.
    Twice,
}

impl From<String> for Refusal {
    fn from(why: String) -> Self {
        Refusal::Invalid(why)
    }
}

/// Records a parameter's value (`None` for a switch given alone) in what was given.
pub type Setter = fn(&mut Given, Option<&str>) -> Result<(), Refusal>;

/// One parameter.
pub struct Parameter {
    /// Its kernel word (`oci.tag`), if it has one.
    pub word: Option<&'static str>,
    /// Its flag without the dashes (`tag`), if it has one.
    pub flag: Option<&'static str>,
    /// Other names of the flag (`of` for `target`).
    pub aliases: &'static [&'static str],
    /// A one-letter flag (`o` for `output`).
    pub short: Option<char>,
    pub value: Value,
    /// May be given more than once, each adding to a list.
    pub repeatable: bool,
    pub commands: &'static [Command],
    /// What it is when not given, for the docs.
    pub default: Option<fn() -> String>,
    /// What it does, one sentence or two.
    pub help: &'static str,
    /// A word or flag as one would write it.
    pub example: &'static str,
    pub set: Setter,
}

impl Parameter {
    /// How errors and the docs name it: its word, else its flag.
    pub fn name(&self) -> String {
        match (self.word, self.flag) {
            (Some(word), _) => word.to_string(),
            (None, Some(flag)) => format!("--{flag}"),
            (None, None) => String::new(),
        }
    }

    pub fn takes(&self, command: Command) -> bool {
        self.commands.contains(&command)
    }
}

/// What `ocidd push` is told besides the registry's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushParams {
    pub compression: Compression,
    /// `None`: the format's default.
    pub level: Option<i32>,
    /// `None`: one plain stream, no chunk index.
    pub chunk_size: Option<u64>,
    pub platform: Option<crate::reference::Platform>,
    pub sign_key: Option<PathBuf>,
}

impl Default for PushParams {
    fn default() -> Self {
        PushParams {
            compression: Compression::Gzip,
            level: None,
            chunk_size: Some(DEFAULT_CHUNK_SIZE),
            platform: None,
            sign_key: None,
        }
    }
}

/// What `ocidd uki` is told besides its words.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UkiParams {
    pub linux: Option<PathBuf>,
    /// In the order given: the kernel unpacks them one after the other.
    pub initrds: Vec<PathBuf>,
    /// `None`: [`DEFAULT_STUB`].
    pub stub: Option<PathBuf>,
}

/// Where Debian's `systemd-boot-efi` puts systemd's stub for amd64.
pub const DEFAULT_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// Everything that was given, as the setters record it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Given {
    pub install: Params,
    pub boot: BootParams,
    pub push: PushParams,
    pub uki: UkiParams,
    /// `ocidd overlay --output`, `ocidd uki --output`, `ocidd iso customize --output`.
    pub output: Option<PathBuf>,
    /// `ocidd iso customize --overlay`.
    pub iso_overlay: Option<PathBuf>,
    /// `ocidd iso customize --layout`.
    pub iso_layout: Option<PathBuf>,
    tag: Option<ImageSource>,
    blob: Option<ImageSource>,
    /// `oci.verify=`: warn (true) or enforce.
    verify_warn: Option<bool>,
}

impl Given {
    /// The rules between parameters, once all are given: `oci.tag` or `oci.blob`, not both;
    /// `oci.verify` needs a key; `oci.no_proxy` needs `oci.proxy`.
    pub fn finish(mut self) -> Result<Given, String> {
        self.install.source = match (self.tag.take(), self.blob.take()) {
            (Some(_), Some(_)) => {
                return Err(
                    "oci.tag and oci.blob (--tag, --blob) are mutually exclusive: give one of them"
                        .to_string(),
                );
            }
            (tag, blob) => tag.or(blob),
        };
        if self.verify_warn.is_some() && self.install.verify.keys.is_empty() {
            return Err(
                "oci.verify= (--verify) needs a key to verify with (oci.verify.key=, --verify-key)"
                    .to_string(),
            );
        }
        self.install.verify.warn_only = self.verify_warn == Some(true);
        self.boot.network.check()?;
        self.install.seed.check()?;
        if self.install.registry.no_proxy.is_some() && self.install.registry.proxy.is_none() {
            return Err(
                "oci.no_proxy= (--no-proxy) is given without oci.proxy= (--proxy); at a shell, set NO_PROXY instead"
                    .to_string(),
            );
        }
        Ok(self)
    }
}

/// Sets `slot` once; the same value again is harmless.
fn once<T: PartialEq>(slot: &mut Option<T>, value: T) -> Result<(), Refusal> {
    match slot {
        Some(existing) if *existing != value => Err(Refusal::Twice),
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// A switch: alone, or `=1`/`=0` (and yes/no, true/false, on/off).
fn switch(value: Option<&str>) -> Result<bool, Refusal> {
    match value {
        None | Some("1" | "y" | "yes" | "true" | "on") => Ok(true),
        Some("0" | "n" | "no" | "false" | "off") => Ok(false),
        Some(other) => Err(Refusal::Invalid(format!(
            "{other:?} (expected the word alone, or =1 or =0)"
        ))),
    }
}

/// A valued parameter's value (the parsers give one: a missing value is refused before).
fn text(value: Option<&str>) -> Result<&str, Refusal> {
    value.ok_or_else(|| Refusal::Invalid("it needs a value".to_string()))
}

/// Adds `value` to `list` unless it is there already (a setter's last step).
fn add<T: PartialEq>(list: &mut Vec<T>, value: T) -> Result<(), Refusal> {
    if !list.contains(&value) {
        list.push(value);
    }
    Ok(())
}

/// `--chunk-size`: 0 for one stream, else a power of two, so that each chunk is a subtree of
/// the image's BLAKE3 tree (see `chunks::tree`).
fn parse_chunk_size(text: &str) -> Result<Option<u64>, String> {
    match parse_size(text)? {
        0 => Ok(None),
        n if (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&n) && n.is_power_of_two() => Ok(Some(n)),
        _ => Err(format!(
            "{text:?} is not a chunk size: 0, or a power of two from {}k to {}M (64k, 128k, … 4M, … 64M)",
            MIN_CHUNK_SIZE >> 10,
            MAX_CHUNK_SIZE >> 20
        )),
    }
}

const INSTALL: &[Command] = &[Command::Install];
const INSTALL_AND_PUSH: &[Command] = &[Command::Install, Command::Push];
const INIT: &[Command] = &[Command::Init];
const PUSH: &[Command] = &[Command::Push];
const UKI: &[Command] = &[Command::Uki];

/// A parameter with what most have: no aliases, no short flag, one value, no default.
const BASE: Parameter = Parameter {
    word: None,
    flag: None,
    aliases: &[],
    short: None,
    value: Value::Switch,
    repeatable: false,
    commands: INSTALL,
    default: None,
    help: "",
    example: "",
    set: |_, _| Ok(()),
};

/// Every parameter, in the order the docs list them.
pub static PARAMETERS: &[Parameter] = &[
    Parameter {
        word: Some("oci.tag"),
        flag: Some("tag"),
        value: Value::Text("REGISTRY/REPOSITORY:TAG"),
        help: "The image to install, by tag (or manifest digest). Its manifest must have exactly one disk-image layer: application/octet-stream+gzip, +zstd or plain application/octet-stream (gzip or zstd data under the plain type is refused, naming the type to use). An image index chooses this machine's platform. Without a registry host the image is on Docker Hub (ocidd says so); IPv6 literals go in brackets ([2001:db8::1]:5000/disks/base:v1). Asked for on a terminal when missing.",
        example: "oci.tag=registry.example.com/disks/base:v1",
        set: |g, v| once(&mut g.tag, parse_tag(text(v)?)?),
        ..BASE
    },
    Parameter {
        word: Some("oci.blob"),
        flag: Some("blob"),
        value: Value::Text("REGISTRY/REPOSITORY@sha256:HEX"),
        help: "The image to install, as a blob named by its digest; its compression is detected from its first bytes. Instead of oci.tag.",
        example: "oci.blob=registry.example.com/disks/base@sha256:…",
        set: |g, v| once(&mut g.blob, parse_blob(text(v)?)?),
        ..BASE
    },
    Parameter {
        word: Some("dd.of"),
        flag: Some("target"),
        aliases: &["of"],
        value: Value::Text("PATH"),
        help: "The target: a block device, or an existing regular file (an empty file grows to the image; a sized one is treated like a disk of that size). /dev/disk/by-id and by-path names are resolved as udev would, also where there is no udev. A device that does not appear within 30 s at boot is an error that lists the machine's disks. Asked for on a terminal when missing (after a list of the disks).",
        example: "dd.of=/dev/sda",
        set: |g, v| once(&mut g.install.target, PathBuf::from(text(v)?)),
        ..BASE
    },
    Parameter {
        word: Some("dd.match"),
        flag: Some("match"),
        value: Value::Text("NAME=VALUE"),
        repeatable: true,
        help: "A hint the target disk must match: serial, wwn, model, vendor, size, rotational, tran, hctl, by_path, name; = != ~ (contains), >= <= > < for size, | between alternatives, %XX for a byte a word cannot carry. All must match; without dd.of, the one matching disk is the target.",
        example: "dd.match=serial=S6CSNA0R",
        set: |g, v| {
            g.install.selection.hints.push(parse_match(text(v)?)?);
            Ok(())
        },
        ..BASE
    },
    Parameter {
        word: Some("dd.hints"),
        flag: Some("hints"),
        value: Value::Text("b64:JSON"),
        repeatable: true,
        help: "Ironic's root device hints, as base64 JSON.",
        example: "dd.hints=b64:eyJzaXplIjogIj49IDQwMCJ9",
        set: |g, v| {
            g.install.selection.hints.extend(parse_ironic(text(v)?)?);
            Ok(())
        },
        ..BASE
    },
    Parameter {
        word: Some("dd.pick"),
        flag: Some("pick"),
        value: Value::Text("smallest|largest"),
        help: "Of several disks that match, take the smallest or the largest (else several are an error).",
        example: "dd.pick=smallest",
        set: |g, v| once(&mut g.install.selection.pick, text(v)?.parse()?),
        ..BASE
    },
    Parameter {
        word: Some("dd.bs"),
        flag: Some("bs"),
        value: Value::Text("SIZE"),
        help: "The write block size, with dd's suffixes (c w b k K kB M MB G GB, KiB MiB: 512, 64k, 1M, 4M), 1 byte to 16 MiB. Asked for on a terminal when missing.",
        example: "dd.bs=4M",
        set: |g, v| once(&mut g.install.block_size, parse_block_size(text(v)?)?),
        ..BASE
    },
    Parameter {
        word: Some("dd.delta"),
        flag: Some("delta"),
        help: "Fetch and write only the chunks the target does not hold already (an image with a version 3 chunk index).",
        example: "dd.delta",
        set: |g, v| {
            g.install.delta = switch(v)?;
            Ok(())
        },
        ..BASE
    },
    Parameter {
        word: Some("wait"),
        flag: Some("confirm"),
        aliases: &["wait"],
        help: "Ask for confirmation (yes) on the console before writing.",
        example: "wait",
        set: |g, v| {
            g.install.wait = switch(v)?;
            Ok(())
        },
        ..BASE
    },
    Parameter {
        word: Some("oci.keep_on_error"),
        flag: Some("keep-on-error"),
        help: "When an install fails after writing began, leave the partial image as it is (its old tables are gone all the same) instead of clearing its first and last MiB again.",
        example: "oci.keep_on_error",
        set: |g, v| {
            g.install.keep_on_error = switch(v)?;
            Ok(())
        },
        ..BASE
    },
    Parameter {
        word: Some("oci.allow_no_tls"),
        flag: Some("plain-http"),
        aliases: &["allow-no-tls"],
        commands: INSTALL_AND_PUSH,
        help: "Allow plain HTTP to the registry, mirrors and token services, and credentials over it (like oras' --plain-http). Without it, HTTPS with verified certificates only, redirects included.",
        example: "oci.allow_no_tls",
        set: |g, v| {
            g.install.registry.allow_no_tls = switch(v)?;
            Ok(())
        },
        ..BASE
    },
    Parameter {
        word: Some("oci.ca"),
        flag: Some("ca"),
        value: Value::Text("PATH"),
        commands: INSTALL_AND_PUSH,
        help: "Extra CA certificates (PEM) to trust, besides the system's.",
        example: "oci.ca=/etc/ocidd/ca.pem",
        set: |g, v| once(&mut g.install.registry.ca, PathBuf::from(text(v)?)),
        ..BASE
    },
    Parameter {
        word: Some("oci.auth"),
        flag: Some("auth"),
        value: Value::Text("PATH"),
        commands: INSTALL_AND_PUSH,
        default: Some(|| "$DOCKER_CONFIG/config.json or ~/.docker/config.json".to_string()),
        help: "A docker config.json with credentials, never printed. They go to the registry (Basic) and to the token service its Bearer challenge names (which may be another host), only over HTTPS unless oci.allow_no_tls; redirects (blob downloads often go to object storage) never carry them.",
        example: "oci.auth=/etc/ocidd/auth.json",
        set: |g, v| once(&mut g.install.registry.auth, PathBuf::from(text(v)?)),
        ..BASE
    },
    Parameter {
        word: Some("oci.platform"),
        flag: Some("platform"),
        value: Value::Text("OS/ARCH[/VARIANT]"),
        default: Some(|| "this machine's".to_string()),
        help: "The platform to choose from an image index.",
        example: "oci.platform=linux/arm64",
        set: |g, v| once(&mut g.install.registry.platform, text(v)?.parse()?),
        ..BASE
    },
    Parameter {
        word: Some("oci.retries"),
        flag: Some("retries"),
        value: Value::Text("COUNT"),
        commands: INSTALL_AND_PUSH,
        default: Some(|| DEFAULT_RETRIES.to_string()),
        help: "How often a request that fails in a way that may pass (no connection, no answer, 408, 429, 5xx but 501) or a broken download is tried again, with jittered exponential backoff (1 s doubling to 16 s; Retry-After is honoured); the default rides out an outage of over a minute. 0 to 1000.",
        example: "oci.retries=30",
        set: |g, v| once(&mut g.install.registry.retries, parse_retries(text(v)?)?),
        ..BASE
    },
    Parameter {
        word: Some("oci.stall_timeout"),
        flag: Some("stall-timeout"),
        value: Value::Text("SECONDS"),
        commands: INSTALL_AND_PUSH,
        default: Some(|| format!("{} s", DEFAULT_STALL_TIMEOUT.as_secs())),
        help: "Seconds without a byte before a download counts as stalled and is resumed where it broke, or a request is tried again (1 to 3600).",
        example: "oci.stall_timeout=60",
        set: |g, v| {
            once(
                &mut g.install.registry.stall_timeout,
                parse_seconds(text(v)?)?,
            )
        },
        ..BASE
    },
    Parameter {
        word: Some("oci.mirror"),
        flag: Some("mirror"),
        value: Value::Text("HOST[:PORT][/PREFIX]"),
        repeatable: true,
        help: "A mirror to try before the registry for what a digest names, tried in order; http:// for a plain-HTTP one (which needs oci.allow_no_tls). The prefix is repository path components; credentials come from oci.auth's entry for the mirror's host, never from the value.",
        example: "oci.mirror=cache.example.com:5000",
        set: |g, v| add(&mut g.install.registry.mirrors, text(v)?.parse()?),
        ..BASE
    },
    Parameter {
        word: Some("oci.layout"),
        flag: Some("layout"),
        value: Value::Text("DIR|medium"),
        help: "An OCI image layout (a directory as skopeo copy … oci:DIR:TAG writes one; medium: the one ocidd iso customize --layout put on the boot ISO, found on whichever disk or CD carries it) to take the image from before the mirrors and the registry, its tags too; what it lacks is asked of them. Everything is checked as from a registry.",
        example: "oci.layout=medium",
        set: |g, v| once(&mut g.install.registry.layout, text(v)?.parse()?),
        ..BASE
    },
    Parameter {
        word: Some("oci.mirror_resolve"),
        flag: Some("mirror-resolve"),
        help: "Let the mirrors resolve the tag too; else only the registry does.",
        example: "oci.mirror_resolve",
        set: |g, v| {
            g.install.registry.mirror_resolve = switch(v)?;
            Ok(())
        },
        ..BASE
    },
    Parameter {
        word: Some("oci.proxy"),
        flag: Some("proxy"),
        value: Value::Text("URL"),
        default: Some(|| "the environment's (HTTPS_PROXY, …) at a shell; none at boot".to_string()),
        help: "An HTTP proxy for everything, http://[USER:PASSWORD@]HOST:PORT; its password is never printed.",
        example: "oci.proxy=http://proxy.example.com:3128",
        set: |g, v| once(&mut g.install.registry.proxy, parse_http_url(text(v)?)?),
        ..BASE
    },
    Parameter {
        word: Some("oci.no_proxy"),
        flag: Some("no-proxy"),
        value: Value::Text("LIST"),
        help: "Hosts reached without oci.proxy, comma-separated as NO_PROXY lists them (.domain, 10.0.0.0/8, host:port).",
        example: "oci.no_proxy=.lan,10.0.0.0/8",
        set: |g, v| {
            let list = text(v)?;
            crate::registry::proxy::NoProxy::parse(list)?;
            once(&mut g.install.registry.no_proxy, list.to_string())
        },
        ..BASE
    },
    Parameter {
        word: Some("ocidd.report"),
        flag: Some("report"),
        value: Value::Text("URL"),
        repeatable: true,
        help: "POST a JSON status event per phase, and progress, to this URL.",
        example: "ocidd.report=https://provisioning.example.com/ocidd",
        set: |g, v| add(&mut g.install.report.urls, parse_http_url(text(v)?)?),
        ..BASE
    },
    Parameter {
        word: Some("ocidd.report_interval"),
        flag: Some("report-interval"),
        value: Value::Text("SECONDS"),
        default: Some(|| format!("{} s", DEFAULT_REPORT_INTERVAL.as_secs())),
        help: "Seconds between progress reports.",
        example: "ocidd.report_interval=30",
        set: |g, v| once(&mut g.install.report.interval, parse_seconds(text(v)?)?),
        ..BASE
    },
    Parameter {
        word: Some("ocidd.report_token"),
        flag: Some("report-token"),
        value: Value::Text("PATH"),
        help: "A file holding a bearer token for the report receivers (over plain HTTP only with oci.allow_no_tls).",
        example: "ocidd.report_token=/etc/ocidd/report-token",
        set: |g, v| once(&mut g.install.report.token, PathBuf::from(text(v)?)),
        ..BASE
    },
    Parameter {
        flag: Some("json"),
        help: "Print the status events as JSON lines on stdout (the final line goes to stderr).",
        example: "--json",
        set: |g, v| {
            g.install.report.json_lines = switch(v)?;
            Ok(())
        },
        ..BASE
    },
    Parameter {
        word: Some("oci.verify.key"),
        flag: Some("verify-key"),
        value: Value::Text("PATH|b64:KEY"),
        repeatable: true,
        help: "Install by tag only if a cosign signature by this key covers it: a PEM P-256 public key file, or b64: and its DER. Any one of several may sign.",
        example: "oci.verify.key=/etc/ocidd/cosign.pub",
        set: |g, v| {
            let key = text(v)?;
            if key.starts_with("b64:") {
                crate::signature::keys::parse_inline(key)?;
            }
            add(&mut g.install.verify.keys, key.to_string())
        },
        ..BASE
    },
    Parameter {
        word: Some("oci.verify"),
        flag: Some("verify"),
        value: Value::Text("warn|enforce"),
        default: Some(|| "enforce".to_string()),
        help: "warn: install an image whose signature does not verify, saying so; needs oci.verify.key.",
        example: "oci.verify=warn",
        set: |g, v| {
            let warn = match text(v)? {
                "warn" => true,
                "enforce" => false,
                other => return Err(format!("{other:?} is not warn or enforce").into()),
            };
            once(&mut g.verify_warn, warn)
        },
        ..BASE
    },
    Parameter {
        word: Some("ocidd.configdrive"),
        flag: Some("configdrive"),
        value: Value::Text("URL|REGISTRY/REPOSITORY@sha256:HEX"),
        help: "A config drive for this machine, written after the image verified into a new partition at the disk's end (GPT or MBR), as Ironic's agent writes one: an ISO9660 or FAT image labelled config-2 or cidata, optionally gzip'd, at most 64 MiB. An http(s) URL may name the machine with {mac}, {uuid} (DMI) and {serial}; or a blob by digest. Fetched and checked before anything is written; its contents are never printed.",
        example: "ocidd.configdrive=http://10.0.0.1/configdrives/{mac}.iso",
        set: |g, v| {
            once(
                &mut g.install.seed.config_drive,
                seed::SeedSource::parse(text(v)?)?,
            )
        },
        ..BASE
    },
    Parameter {
        word: Some("ocidd.nocloud"),
        flag: Some("nocloud"),
        value: Value::Text("URL"),
        help: "A NoCloud seed for this machine from its parts: URL/user-data and URL/meta-data, and URL/network-config and URL/vendor-data where they exist, in a FAT file system labelled CIDATA, written as ocidd.configdrive writes one. The URL may name the machine with {mac}, {uuid} and {serial}.",
        example: "ocidd.nocloud=http://10.0.0.1/nocloud/{mac}/",
        set: |g, v| {
            once(
                &mut g.install.seed.nocloud,
                seed::UrlTemplate::parse(text(v)?)?,
            )
        },
        ..BASE
    },
    Parameter {
        word: Some("ocidd.copy_network"),
        commands: INIT,
        help: "Write the network /init configured (each interface matched by its MAC, bonds, VLANs, static addresses and routes, DHCP where it came by DHCP, the nameservers given) as NoCloud network-config version 2 into the ocidd.nocloud seed, for cloud-init on the installed system. Needs ocidd.nocloud; refused with ocidd.configdrive, whose image it cannot edit, and when the seed's source serves a network-config of its own.",
        example: "ocidd.copy_network",
        set: |g, v| {
            g.install.seed.copy_network = switch(v)?;
            Ok(())
        },
        ..BASE
    },
    Parameter {
        word: Some("ocidd.boot_order"),
        flag: Some("boot-order"),
        value: Value::Text("next|disk|keep"),
        default: Some(|| "next at boot; keep for ocidd install".to_string()),
        help: "On a machine booted by UEFI, once the image verified: next writes a Boot#### entry for the installed disk's loader (its ESP's BOOTX64.CSV as shim's fallback reads it, else shimx64.efi, grubx64.efi, or the removable path), removes the entries for the disk's old partitions, and sets BootNext to it, leaving BootOrder's first entry (the network) first; disk also puts it first in BootOrder; keep changes no variable.",
        example: "ocidd.boot_order=disk",
        set: |g, v| once(&mut g.install.boot_order, text(v)?.parse()?),
        ..BASE
    },
    Parameter {
        word: Some("ocidd.after"),
        value: Value::Text("reboot|poweroff|shell|kexec"),
        commands: INIT,
        default: Some(|| "reboot".to_string()),
        help: "What /init does once the install succeeded. kexec starts the installed system's kernel without the firmware's POST: the default loader/entries/*.conf entry on the installed disk (vfat, ext4 or xfs), else the default entry of a plain grub.cfg; a kernel that is not found or is refused (Secure Boot's lockdown takes only signed ones) is said, and the machine reboots through its firmware.",
        example: "ocidd.after=poweroff",
        set: |g, v| once(&mut g.boot.after, text(v)?.parse()?),
        ..BASE
    },
    Parameter {
        word: Some("ocidd.reboot_delay"),
        value: Value::Text("SECONDS"),
        commands: INIT,
        default: Some(|| format!("{} s", DEFAULT_REBOOT_DELAY.as_secs())),
        help: "How long /init counts down before rebooting or powering off (0 to 3600).",
        example: "ocidd.reboot_delay=0",
        set: |g, v| {
            let text = text(v)?;
            let delay = match text {
                "0" | "0s" => Duration::ZERO,
                other => parse_seconds(other)?,
            };
            once(&mut g.boot.reboot_delay, delay)
        },
        ..BASE
    },
    Parameter {
        word: Some("ip"),
        value: Value::Text(
            "dhcp|dhcp6|auto6|either6|off|IFACE:METHOD[:MTU[:MAC]]|ADDR::GW:MASK:HOST:IFACE:none[:DNS0[:DNS1]]",
        ),
        repeatable: true,
        commands: INIT,
        default: Some(|| {
            "DHCPv4 and IPv6 (router advertisements, DHCPv6) on every interface with a link; the first to get an address wins".to_string()
        }),
        help: "How /init brings an interface up, as dracut reads ip=: DHCP, DHCPv6, SLAAC (auto6), SLAAC or DHCPv6 (either6), none, or a static address (IPv6 in brackets, the mask as a prefix length). Give one per interface; one that names an interface is used even when BOOTIF= names another.",
        example: "ip=[2001:db8::10]::[2001:db8::1]:64::eth0:none",
        set: |g, v| {
            g.boot.network.ip.push(network::parse_ip(text(v)?)?);
            Ok(())
        },
        ..BASE
    },
    Parameter {
        word: Some("vlan"),
        value: Value::Text("NAME:PARENT"),
        repeatable: true,
        commands: INIT,
        help: "A tagged VLAN on an interface or a bond; its id is the name's number (eth0.100, vlan100). With no ip= that names an interface, the VLAN is configured instead of its parent.",
        example: "vlan=vlan100:bond0",
        set: |g, v| add(&mut g.boot.network.vlans, network::parse_vlan(text(v)?)?),
        ..BASE
    },
    Parameter {
        word: Some("bond"),
        value: Value::Text("NAME[:SLAVES[:OPTIONS[:MTU]]]"),
        repeatable: true,
        commands: INIT,
        help: "A bond of the comma-separated slaves (eth0,eth1 if none), with the bonding driver's options by their names (mode=802.3ad,miimon=100,lacp_rate=fast; balance-rr if no mode).",
        example: "bond=bond0:eth0,eth1:mode=802.3ad,miimon=100,lacp_rate=fast",
        set: |g, v| add(&mut g.boot.network.bonds, network::parse_bond(text(v)?)?),
        ..BASE
    },
    Parameter {
        word: Some("ifname"),
        value: Value::Text("NAME:MAC"),
        repeatable: true,
        commands: INIT,
        help: "Name the interface with this MAC address, before anything else uses names.",
        example: "ifname=lan0:52:54:00:12:34:56",
        set: |g, v| {
            add(
                &mut g.boot.network.ifnames,
                network::parse_ifname(text(v)?)?,
            )
        },
        ..BASE
    },
    Parameter {
        word: Some("BOOTIF"),
        value: Value::Text("01-MAC"),
        commands: INIT,
        help: "The NIC the machine booted from, as PXELINUX's IPAPPEND 2 and iPXE's BOOTIF=01-${net0/mac:hexhyp} write it: only it (or the bond or VLAN over it) is configured, unless ip= names another interface.",
        example: "BOOTIF=01-52-54-00-12-34-56",
        set: |g, v| once(&mut g.boot.network.bootif, network::parse_bootif(text(v)?)?),
        ..BASE
    },
    Parameter {
        word: Some("rd.route"),
        value: Value::Text("NET/PREFIX:GATEWAY[:IFACE]"),
        repeatable: true,
        commands: INIT,
        help: "A static route, added once the network is up (IPv6 in brackets).",
        example: "rd.route=10.10.0.0/16:10.0.0.1",
        set: |g, v| add(&mut g.boot.network.routes, network::parse_route(text(v)?)?),
        ..BASE
    },
    Parameter {
        word: Some("nameserver"),
        value: Value::Text("IP"),
        repeatable: true,
        commands: INIT,
        help: "A DNS server, used before those DHCP or router advertisements name.",
        example: "nameserver=2001:db8::53",
        set: |g, v| {
            add(
                &mut g.boot.network.nameservers,
                network::parse_nameserver(text(v)?)?,
            )
        },
        ..BASE
    },
    Parameter {
        word: Some("ocidd.ntp"),
        value: Value::Text("HOST"),
        repeatable: true,
        commands: INIT,
        default: Some(|| "the NTP servers DHCP names (option 42, DHCPv6 option 56)".to_string()),
        help: "An NTP server to set the clock from before the first HTTPS request, when the clock is off by more than a few seconds (a dead RTC battery, a factory date).",
        example: "ocidd.ntp=10.0.0.1",
        set: |g, v| {
            add(
                &mut g.boot.network.ntp,
                network::parse_ntp_server(text(v)?)?,
            )
        },
        ..BASE
    },
    Parameter {
        word: Some("ocidd.net_timeout"),
        value: Value::Text("SECONDS"),
        commands: INIT,
        default: Some(|| {
            format!(
                "{} s",
                crate::cmdline::network::DEFAULT_NET_TIMEOUT.as_secs()
            )
        }),
        help: "How long /init tries to get an address, on all the interfaces it configures, before it gives up and says what happened on each.",
        example: "ocidd.net_timeout=30",
        set: |g, v| once(&mut g.boot.network.timeout, parse_seconds(text(v)?)?),
        ..BASE
    },
    Parameter {
        flag: Some("compression"),
        value: Value::Text("gzip|zstd|none"),
        commands: PUSH,
        default: Some(|| "gzip".to_string()),
        help: "The pushed layer's compression.",
        example: "--compression zstd",
        set: |g, v| {
            g.push.compression = match text(v)? {
                "gzip" => Compression::Gzip,
                "zstd" => Compression::Zstd,
                "none" => Compression::None,
                other => return Err(format!("{other:?} is not gzip, zstd or none").into()),
            };
            Ok(())
        },
        ..BASE
    },
    Parameter {
        flag: Some("level"),
        value: Value::Text("N"),
        commands: PUSH,
        default: Some(|| {
            format!(
                "gzip {DEFAULT_GZIP_LEVEL} ({}-{}), zstd {DEFAULT_ZSTD_LEVEL} ({}-{})",
                GZIP_LEVELS.start(),
                GZIP_LEVELS.end(),
                ZSTD_LEVELS.start(),
                ZSTD_LEVELS.end()
            )
        }),
        help: "The compression level.",
        example: "--level 19",
        set: |g, v| {
            // Which levels are valid depends on --compression: push checks that.
            let text = text(v)?;
            let level = text
                .parse::<i32>()
                .map_err(|_| format!("{text:?} is not a number"))?;
            once(&mut g.push.level, level)
        },
        ..BASE
    },
    Parameter {
        flag: Some("chunk-size"),
        value: Value::Text("SIZE"),
        commands: PUSH,
        default: Some(|| format!("{}M", DEFAULT_CHUNK_SIZE >> 20)),
        help: "Compress in independent chunks of this size (a power of two from 64k to 64M), on all cores, with a chunk index that lets installs fetch and decompress in parallel, skip zero chunks, and use dd.delta; 0 for one plain stream.",
        example: "--chunk-size 16M",
        set: |g, v| {
            g.push.chunk_size = parse_chunk_size(text(v)?)?;
            Ok(())
        },
        ..BASE
    },
    Parameter {
        flag: Some("platform"),
        value: Value::Text("OS/ARCH[/VARIANT]"),
        commands: PUSH,
        help: "Push as this platform's image in an image index at the tag, keeping the other platforms' entries.",
        example: "--platform linux/arm64",
        set: |g, v| once(&mut g.push.platform, text(v)?.parse()?),
        ..BASE
    },
    Parameter {
        flag: Some("sign-key"),
        value: Value::Text("KEY.pem"),
        commands: PUSH,
        help: "Sign what the tag names with this unencrypted PEM P-256 private key, in cosign's legacy layout.",
        example: "--sign-key site.key",
        set: |g, v| once(&mut g.push.sign_key, PathBuf::from(text(v)?)),
        ..BASE
    },
    Parameter {
        flag: Some("output"),
        short: Some('o'),
        value: Value::Text("PATH"),
        commands: &[Command::Overlay, Command::Uki, Command::Iso],
        help: "The file to write: the overlay (a gzip'd newc cpio, mode 0600), the UKI, or the node's ISO.",
        example: "--output site.img",
        set: |g, v| once(&mut g.output, PathBuf::from(text(v)?)),
        ..BASE
    },
    Parameter {
        flag: Some("linux"),
        value: Value::Text("KERNEL"),
        commands: UKI,
        help: "The kernel (an EFI binary: Debian's amd64 vmlinuz).",
        example: "--linux out/vmlinuz-amd64",
        set: |g, v| once(&mut g.uki.linux, PathBuf::from(text(v)?)),
        ..BASE
    },
    Parameter {
        flag: Some("initrd"),
        value: Value::Text("FILE"),
        repeatable: true,
        commands: UKI,
        help: "An initramfs, in the order given (the boot files' initramfs, then a site overlay).",
        example: "--initrd out/initramfs-amd64.img --initrd site.img",
        set: |g, v| add(&mut g.uki.initrds, PathBuf::from(text(v)?)),
        ..BASE
    },
    Parameter {
        flag: Some("stub"),
        value: Value::Text("FILE"),
        commands: UKI,
        default: Some(|| DEFAULT_STUB.to_string()),
        help: "systemd's EFI stub (Debian's systemd-boot-efi), which starts the kernel with the initrds and the words.",
        example: "--stub /usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        set: |g, v| once(&mut g.uki.stub, PathBuf::from(text(v)?)),
        ..BASE
    },
    Parameter {
        flag: Some("overlay"),
        value: Value::Text("FILE"),
        commands: &[Command::Iso],
        help: "A site overlay (`ocidd overlay` writes one, at most 1 MiB) for the ISO's overlay area; GRUB loads it after the initramfs.",
        example: "--overlay site.img",
        set: |g, v| once(&mut g.iso_overlay, PathBuf::from(text(v)?)),
        ..BASE
    },
    Parameter {
        flag: Some("layout"),
        value: Value::Text("DIR"),
        commands: &[Command::Iso],
        help: "An OCI image layout (skopeo copy docker://REF oci:DIR:TAG writes one) to append to the copy, so that it installs with no network: oci.layout=medium is added to the words unless an oci.layout word is given.",
        example: "--layout image/",
        set: |g, v| once(&mut g.iso_layout, PathBuf::from(text(v)?)),
        ..BASE
    },
];

/// The parameter whose kernel word is `name` ('-' read as '_').
pub fn by_word(name: &str) -> Option<&'static Parameter> {
    PARAMETERS.iter().find(|p| p.word == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_command() {
        for command in [
            Command::Install,
            Command::Init,
            Command::Push,
            Command::Overlay,
            Command::Uki,
            Command::Iso,
        ] {
            let mut names: Vec<String> = Vec::new();
            for p in PARAMETERS.iter().filter(|p| p.takes(command)) {
                let flags = p.flag.into_iter().chain(p.aliases.iter().copied());
                for name in p
                    .word
                    .map(str::to_string)
                    .into_iter()
                    .chain(flags.map(|f| format!("--{f}")))
                {
                    assert!(!names.contains(&name), "{name} twice for {command:?}");
                    names.push(name);
                }
            }
        }
        for p in PARAMETERS {
            assert!(!p.help.is_empty() && !p.example.is_empty(), "{}", p.name());
            if let Some(word) = p.word {
                assert!(!word.contains('-'), "{word}: words are written with '_'");
            }
        }
    }
}
