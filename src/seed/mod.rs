//! Each machine's identity after the image: its config drive (`ocidd.configdrive=`) or a
//! NoCloud seed built from parts (`ocidd.nocloud=`), fetched and checked before anything is
//! written, and written by the install into a partition of its own at the disk's end
//! ([`crate::install::seed_partition`]). Seeds carry passwords, keys and tokens: their
//! contents are never printed, and their URLs are shown without credentials or query.

pub mod label;
pub mod machine;
pub mod nocloud;

use std::io::Read;

use anyhow::{Context, Result, anyhow};
use indicatif::HumanBytes;
use reqwest::StatusCode;
use reqwest::blocking::Client;

use crate::cmdline::RegistryOptions;
use crate::cmdline::seed::{SeedOptions, SeedSource, UrlTemplate};
use crate::error::{Classify, Failure, classified};
use crate::fail;
use crate::registry::Registry;
use crate::registry::blob::read_small_blob;
use crate::registry::client::{
    http_client, is_transient_status, status_line, transient_network_error,
};
use crate::report::sender::shown_url;
use crate::retry::{Attempt, Transient, with_retries};
use label::FileSystem;

/// The largest seed: what Ironic's agent takes, and the partition it gets.
pub const MAX_SEED_SIZE: u64 = 64 << 20;

/// A seed, fetched and checked, ready to write.
pub struct Seed {
    /// The file system image.
    pub bytes: Vec<u8>,
    pub file_system: FileSystem,
    /// Its label as found (`config-2`, `cidata`, `CIDATA`).
    pub label: String,
    /// Where it came from, for the console: the word and a URL without secrets.
    pub origin: String,
    /// The word that asked for it.
    pub word: &'static str,
}

impl Seed {
    /// One line for the console and the report; never the contents.
    pub fn describe(&self) -> String {
        format!(
            "{} {} labelled {} ({}, from {})",
            self.file_system.name(),
            if self.label.eq_ignore_ascii_case("config-2") {
                "config drive"
            } else {
                "seed"
            },
            self.label,
            HumanBytes(self.bytes.len() as u64),
            self.origin
        )
    }
}

/// The seed the words ask for, fetched and checked. `None` when none was asked for.
pub fn prepare(options: &SeedOptions, registry: &RegistryOptions) -> Result<Option<Seed>> {
    if let Some(source) = &options.config_drive {
        return config_drive(source, registry).map(Some);
    }
    let Some(template) = &options.nocloud else {
        return Ok(None);
    };
    if options.copy_network && options.network_config.is_none() {
        fail!(
            Failure::Usage,
            "ocidd.copy_network: no network from /init to copy (it hands on the network it configured at boot, and only there)"
        );
    }
    nocloud_seed(template, options.network_config.as_deref(), registry).map(Some)
}

const CONFIG_DRIVE: &str = "ocidd.configdrive";
const NOCLOUD: &str = "ocidd.nocloud";

fn config_drive(source: &SeedSource, registry: &RegistryOptions) -> Result<Seed> {
    let (bytes, origin) = match source {
        SeedSource::Url(template) => {
            let url = fill(template, CONFIG_DRIVE)?;
            let client = client_for(&url, CONFIG_DRIVE, registry)?;
            let bytes = get(&client, &url, registry)
                .with_context(|| format!("{CONFIG_DRIVE}: fetching {}", shown_url(&url)))?
                .ok_or_else(|| {
                    classified(
                        Failure::Registry,
                        anyhow!(
                            "{CONFIG_DRIVE}: fetching {}: HTTP 404 Not Found",
                            shown_url(&url)
                        ),
                    )
                })?;
            (bytes, shown_url(&url))
        }
        SeedSource::Blob(blob) => {
            let reference = blob.reference();
            let digest = blob
                .blob()
                .ok_or_else(|| anyhow!("{CONFIG_DRIVE}: {blob} names no blob digest"))?;
            let registry = Registry::new(reference, registry)?;
            let bytes = read_small_blob(&registry, digest, None, MAX_SEED_SIZE)
                .with_context(|| format!("{CONFIG_DRIVE}: fetching {blob}"))?;
            (bytes, blob.to_string())
        }
    };
    let bytes = gunzip_if_gzip(bytes, CONFIG_DRIVE)?;
    let Some((file_system, label)) = label::identify(&bytes) else {
        fail!(
            Failure::Usage,
            "{CONFIG_DRIVE}: {origin} is neither an ISO9660 nor a FAT file system (a config drive image, optionally gzip'd)"
        );
    };
    if !label::is_seed_label(&label) {
        fail!(
            Failure::Usage,
            "{CONFIG_DRIVE}: {origin} is labelled {label:?}; cloud-init reads only config-2 or cidata"
        );
    }
    Ok(Seed {
        bytes,
        file_system,
        label,
        origin: format!("{CONFIG_DRIVE}={origin}"),
        word: CONFIG_DRIVE,
    })
}

/// The parts of a NoCloud seed: whether each must be there.
const NOCLOUD_PARTS: [(&str, bool); 4] = [
    ("meta-data", true),
    ("user-data", true),
    ("network-config", false),
    ("vendor-data", false),
];

/// The seed from the parts at `template`, with `network_config` (what `ocidd.copy_network`
/// made) as its `network-config`.
fn nocloud_seed(
    template: &UrlTemplate,
    network_config: Option<&str>,
    registry: &RegistryOptions,
) -> Result<Seed> {
    let base = fill(template, NOCLOUD)?;
    let client = client_for(&base, NOCLOUD, registry)?;
    let mut files = Vec::new();
    let mut total = 0u64;
    for (name, required) in NOCLOUD_PARTS {
        let url = format!("{}/{name}", base.trim_end_matches('/'));
        let shown = shown_url(&url);
        let part =
            get(&client, &url, registry).with_context(|| format!("{NOCLOUD}: fetching {shown}"))?;
        let part = match (part, required) {
            (Some(bytes), _) => bytes,
            (None, false) => continue,
            (None, true) => fail!(
                Failure::Registry,
                "{NOCLOUD}: fetching {shown}: HTTP 404 Not Found (a NoCloud seed needs meta-data and user-data)"
            ),
        };
        if name == "network-config" && network_config.is_some() {
            fail!(
                Failure::Usage,
                "{NOCLOUD}: {shown} is served, and ocidd.copy_network writes a network-config too: serve none, or drop ocidd.copy_network"
            );
        }
        total += part.len() as u64;
        files.push((name, part));
    }
    if let Some(config) = network_config {
        total += config.len() as u64;
        files.push(("network-config", config.as_bytes().to_vec()));
    }
    let bytes = nocloud::build(&files).classify(Failure::Usage)?;
    if bytes.len() as u64 > MAX_SEED_SIZE {
        fail!(
            Failure::Usage,
            "{NOCLOUD}: the seed's parts ({total} bytes) do not fit in a seed of {} MiB",
            MAX_SEED_SIZE >> 20
        );
    }
    Ok(Seed {
        bytes,
        file_system: FileSystem::Fat,
        label: "CIDATA".to_string(),
        origin: format!("{NOCLOUD}={}", shown_url(&base)),
        word: NOCLOUD,
    })
}

/// The template with this machine's values in it.
fn fill(template: &UrlTemplate, word: &str) -> Result<String> {
    let mut values = Vec::new();
    for placeholder in template.placeholders() {
        values.push((placeholder, machine::value(placeholder, word)?));
    }
    template
        .fill(|wanted| {
            values
                .iter()
                .find(|(p, _)| *p == wanted)
                .map(|(_, value)| value.clone())
                .ok_or_else(|| format!("no value for {}", wanted.name()))
        })
        .map_err(|e| anyhow!("{word}: {e}"))
}

/// A client for `url`: plain HTTP only where `oci.allow_no_tls` allows it, since seeds
/// carry secrets.
fn client_for(url: &str, word: &str, registry: &RegistryOptions) -> Result<Client> {
    if url.starts_with("http://") && !registry.allow_no_tls {
        fail!(
            Failure::Usage,
            "{word}={} is plain HTTP, and a seed carries secrets: serve it over https, or allow plain HTTP with oci.allow_no_tls",
            shown_url(url)
        );
    }
    http_client(registry)
}

/// GETs `url` whole (at most [`MAX_SEED_SIZE`] bytes), retrying what may pass; `None` for
/// 404. What the server says is never printed: its status is.
fn get(client: &Client, url: &str, registry: &RegistryOptions) -> Result<Option<Vec<u8>>> {
    let shown = shown_url(url);
    with_retries(&registry.backoff(), &format!("fetching {shown}"), || {
        let response = client.get(url).send().map_err(transient_network_error)?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if is_transient_status(status) {
            return Err(Attempt::Transient(Transient {
                reason: status_line(status),
                retry_after: None,
            }));
        }
        if !status.is_success() {
            return Err(Attempt::Permanent(classified(
                Failure::Registry,
                anyhow!("{}", status_line(status)),
            )));
        }
        if response.content_length().is_some_and(|n| n > MAX_SEED_SIZE) {
            return Err(Attempt::Permanent(too_large()));
        }
        let mut body = Vec::new();
        response
            .take(MAX_SEED_SIZE + 1)
            .read_to_end(&mut body)
            .map_err(|e| {
                Attempt::Transient(Transient {
                    reason: format!("reading the answer: {e}"),
                    retry_after: None,
                })
            })?;
        if body.len() as u64 > MAX_SEED_SIZE {
            return Err(Attempt::Permanent(too_large()));
        }
        Ok(Some(body))
    })
}

fn too_large() -> anyhow::Error {
    classified(
        Failure::Usage,
        anyhow!("it is larger than {} MiB", MAX_SEED_SIZE >> 20),
    )
}

/// The bytes, gunzipped if they are gzip (at most [`MAX_SEED_SIZE`] bytes either way).
fn gunzip_if_gzip(bytes: Vec<u8>, word: &str) -> Result<Vec<u8>> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes.as_slice())
        .take(MAX_SEED_SIZE + 1)
        .read_to_end(&mut out)
        .map_err(|e| anyhow!("{word}: the gzip'd config drive does not decompress: {e}"))
        .classify(Failure::Usage)?;
    if out.len() as u64 > MAX_SEED_SIZE {
        fail!(
            Failure::Usage,
            "{word}: the config drive is larger than {} MiB once gunzipped",
            MAX_SEED_SIZE >> 20
        );
    }
    Ok(out)
}
