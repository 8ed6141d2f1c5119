//! The registry's pull protocol: authentication, manifests (and image indexes), and blob GETs.
//!
//! Written on reqwest rather than with oci-client's pull functions because installing needs
//! what those hide: the response headers of a blob GET (Content-Range for resuming,
//! Retry-After), a cap on the manifest size before it is read, and plain error messages.
//! oci-client is still used for pushing (see `push`).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use oci_spec::distribution::Reference;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderValue,
    RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use serde::Deserialize;

use crate::chunks::MEDIA_TYPE_CHUNK_INDEX;
use crate::cmdline::RegistryOptions;
use crate::digest::Digest;
use crate::error::{Classify, Failure, classified};
use crate::fail;
use crate::install::decompress::{Compression, MEDIA_TYPE_GZIP, MEDIA_TYPE_RAW, MEDIA_TYPE_ZSTD};
use crate::reference::Platform;
use crate::retry::{Attempt, Backoff, Transient, parse_retry_after, with_retries};

/// Manifests larger than this are refused before they are read.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// Annotation on an image layer: the size of the uncompressed image in bytes.
pub const ANNOTATION_IMAGE_SIZE: &str = "ocidd.image.size";
/// Annotation on an image layer: the digest of the uncompressed image.
pub const ANNOTATION_IMAGE_DIGEST: &str = "ocidd.image.digest";

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The blob holding the disk image, as a manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayer {
    pub digest: Digest,
    pub size: u64,
    pub compression: Compression,
    /// The uncompressed size, when the layer is annotated with it.
    pub image_size: Option<u64>,
    /// The chunk index layer (digest, size), when the image was pushed in chunks.
    pub chunk_index: Option<(Digest, u64)>,
}

/// What a manifest leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// An image manifest: its disk-image layer.
    Layer(ImageLayer),
    /// An image index: the manifest to fetch for the platform.
    Manifest(Digest),
}

/// Reads a manifest (image manifest or index, OCI or Docker schema 2): the disk-image layer
/// of an image manifest, or the entry of an index that matches `platform`. `content_type` is
/// the response's, used when the manifest does not say its media type.
pub fn interpret_manifest(
    body: &[u8],
    content_type: Option<&str>,
    platform: &Platform,
) -> Result<Resolved> {
    match manifest_kind(body, content_type)? {
        ManifestKind::Image => image_layer(body).map(Resolved::Layer),
        ManifestKind::Index => {
            let index: ImageIndex = serde_json::from_slice(body)
                .context("the image index is malformed")
                .classify(Failure::Verification)?;
            let entry = select_platform(&index, platform)?;
            let digest = entry
                .digest()
                .to_string()
                .parse()
                .context("the image index entry's digest")
                .classify(Failure::Verification)?;
            Ok(Resolved::Manifest(digest))
        }
    }
}

/// A blob GET that the registry answered with 200 or 206.
pub struct BlobResponse {
    pub body: Response,
    /// Bytes at the body's start that come before the offset asked for: a server that ignored
    /// the range (200) or began it early sends bytes the reader already has.
    pub skip: u64,
    /// The blob's total size, when the response says.
    pub total_size: Option<u64>,
}

#[derive(Clone)]
pub(crate) enum Credentials {
    Basic { username: String, password: String },
    IdentityToken(String),
}

// Credentials never appear in logs or errors, even in debug output.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

/// A connection to one repository of one registry.
pub struct Registry {
    http: Client,
    /// `https://HOST/v2/REPOSITORY`
    base: String,
    repository: String,
    credentials: Option<Credentials>,
    authorization: Mutex<Option<HeaderValue>>,
    backoff: Backoff,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct ManifestHead {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    manifests: Option<serde_json::Value>,
}

/// Builds the HTTP client all registry traffic goes through.
pub fn http_client(options: &RegistryOptions) -> Result<Client> {
    install_crypto_provider();
    let mut builder = Client::builder()
        .user_agent(concat!("ocidd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        // Applies to each read of a body too, so a stalled download is noticed.
        .timeout(options.stall_timeout())
        // Redirects (blob GETs often go to object storage) are followed; reqwest drops the
        // Authorization header when a redirect leaves the registry's host.
        .redirect(reqwest::redirect::Policy::limited(10))
        // Without oci.allow_no_tls even a redirect must not downgrade to plain HTTP.
        .https_only(!options.allow_no_tls);
    if let Some(path) = &options.ca {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading oci.ca={}", path.display()))
            .classify(Failure::Usage)?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| anyhow!("oci.ca={}: no PEM certificates in the file", path.display()))
            .classify(Failure::Usage)?;
        builder = builder.tls_certs_merge(certificates);
    }
    builder
        .build()
        .context("setting up HTTP client")
        .classify(Failure::Usage)
}

/// Selects ring as rustls's cryptography once per process.
pub fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Registry {
    pub fn new(reference: &Reference, options: &RegistryOptions, http: Client) -> Result<Self> {
        let scheme = if options.allow_no_tls {
            "http"
        } else {
            "https"
        };
        let host = reference.resolve_registry();
        let credentials = lookup_credentials(reference.registry(), options.auth.as_deref())?;
        Ok(Registry {
            http,
            base: format!("{scheme}://{host}/v2/{}", reference.repository()),
            repository: reference.repository().to_string(),
            credentials,
            authorization: Mutex::new(None),
            backoff: options.backoff(),
        })
    }

    /// Resolves a tag (or manifest digest) to the disk-image layer of its manifest, choosing
    /// `platform` from an image index.
    pub fn resolve(&self, reference: &Reference, platform: &Platform) -> Result<ImageLayer> {
        let name = match (reference.tag(), reference.digest()) {
            (_, Some(digest)) => digest,
            (Some(tag), None) => tag,
            (None, None) => "latest",
        };
        let pinned = reference.digest().map(str::parse::<Digest>).transpose()?;
        let (body, media_type) = self.fetch_manifest(name, pinned.as_ref())?;
        match interpret_manifest(&body, media_type.as_deref(), platform)? {
            Resolved::Layer(layer) => Ok(layer),
            Resolved::Manifest(digest) => {
                let (body, media_type) = self.fetch_manifest(&digest.to_string(), Some(&digest))?;
                match interpret_manifest(&body, media_type.as_deref(), platform)? {
                    Resolved::Layer(layer) => Ok(layer),
                    Resolved::Manifest(_) => fail!(
                        Failure::Verification,
                        "the image index entry for {platform} is another index; nested indexes are not supported"
                    ),
                }
            }
        }
    }

    fn fetch_manifest(
        &self,
        name: &str,
        pinned: Option<&Digest>,
    ) -> Result<(Vec<u8>, Option<String>)> {
        let url = format!("{}/manifests/{name}", self.base);
        let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_str(&accept)?);
        let response = self.get(&url, &headers, &format!("fetching manifest {name}"))?;
        if !response.status().is_success() {
            return Err(registry_error(response).context(format!("fetching manifest {name}")));
        }
        let declared = header_u64(response.headers(), CONTENT_LENGTH);
        if declared.is_some_and(|n| n > MAX_MANIFEST_SIZE) {
            fail!(
                Failure::Verification,
                "manifest {name} is larger than the {} MiB limit",
                MAX_MANIFEST_SIZE >> 20
            );
        }
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let mut body = Vec::new();
        response
            .take(MAX_MANIFEST_SIZE + 1)
            .read_to_end(&mut body)
            .with_context(|| format!("reading manifest {name}"))
            .classify(Failure::Registry)?;
        if body.len() as u64 > MAX_MANIFEST_SIZE {
            fail!(
                Failure::Verification,
                "manifest {name} is larger than the {} MiB limit",
                MAX_MANIFEST_SIZE >> 20
            );
        }
        if let Some(expected) = pinned {
            let digest = Digest::of(expected.algorithm(), &body);
            if digest != *expected {
                fail!(
                    Failure::Verification,
                    "manifest digest mismatch: expected {expected}, the registry sent {digest}"
                );
            }
        }
        Ok((body, media_type))
    }

    /// Starts a GET of a blob from `offset` (to its end, or to `end` exclusive), with a
    /// Range header unless it is the whole blob, following redirects anew each time (their
    /// signed URLs expire).
    pub fn fetch_blob(
        &self,
        digest: &Digest,
        offset: u64,
        end: Option<u64>,
    ) -> Result<BlobResponse> {
        let url = format!("{}/blobs/{digest}", self.base);
        let mut headers = HeaderMap::new();
        let range = match end {
            Some(end) => Some(format!("bytes={offset}-{}", end.saturating_sub(1))),
            None if offset > 0 => Some(format!("bytes={offset}-")),
            None => None,
        };
        if let Some(range) = range {
            headers.insert(RANGE, HeaderValue::from_str(&range)?);
        }
        let response = self.get(&url, &headers, "fetching the blob")?;
        match response.status() {
            StatusCode::OK => Ok(BlobResponse {
                total_size: header_u64(response.headers(), CONTENT_LENGTH),
                skip: offset,
                body: response,
            }),
            StatusCode::PARTIAL_CONTENT => {
                let range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                let Some((start, total_size)) = range else {
                    fail!(
                        Failure::Registry,
                        "fetching the blob: the registry's partial answer has no usable Content-Range ({:?})",
                        response.headers().get(CONTENT_RANGE)
                    )
                };
                // Bytes missing in between cannot be made up.
                if start > offset {
                    fail!(
                        Failure::Registry,
                        "the registry answered a request for the blob from byte {offset} with bytes from {start}"
                    );
                }
                Ok(BlobResponse {
                    body: response,
                    skip: offset - start,
                    total_size,
                })
            }
            // docker-registry's 416 carries a wrong Content-Length: never read its body.
            StatusCode::RANGE_NOT_SATISFIABLE => fail!(
                Failure::Registry,
                "fetching the blob: the registry cannot serve it from byte {offset} (HTTP 416)"
            ),
            _ => Err(registry_error(response).context("fetching the blob")),
        }
    }

    /// How failing requests and broken downloads are retried.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Sends a GET, authenticating when the registry asks for it, and retrying connection
    /// failures and answers that may pass (408, 429, 5xx) with backoff.
    fn get(&self, url: &str, headers: &HeaderMap, what: &str) -> Result<Response> {
        with_retries(&self.backoff, what, || {
            let request = || self.authorized(self.http.get(url).headers(headers.clone()));
            let mut response = request().send().map_err(transient_network_error)?;
            if response.status() == StatusCode::UNAUTHORIZED {
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if let Some(challenge) = challenge
                    && self.authenticate(&challenge)?
                {
                    response = request().send().map_err(transient_network_error)?;
                }
            }
            check_transient(response)
        })
    }

    fn authorized(&self, request: RequestBuilder) -> RequestBuilder {
        let authorization = self
            .authorization
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        match authorization {
            Some(value) => request.header(AUTHORIZATION, value),
            None => request,
        }
    }

    /// Answers a `WWW-Authenticate` challenge; false when there is nothing to answer it with.
    fn authenticate(&self, challenge: &str) -> Result<bool> {
        let challenges = http_auth::parse_challenges(challenge)
            .map_err(|e| anyhow!("the registry sent a malformed WWW-Authenticate header: {e}"))
            .classify(Failure::Registry)?;
        let param = |c: &http_auth::ChallengeRef, name: &str| {
            c.params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_unescaped())
        };
        let value = if let Some(bearer) = challenges
            .iter()
            .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        {
            let realm = param(bearer, "realm")
                .ok_or_else(|| anyhow!("the registry's Bearer challenge has no realm"))
                .classify(Failure::Registry)?;
            let service = param(bearer, "service");
            let token = self.fetch_token(&realm, service.as_deref())?;
            format!("Bearer {token}")
        } else if challenges
            .iter()
            .any(|c| c.scheme.eq_ignore_ascii_case("basic"))
        {
            match &self.credentials {
                Some(Credentials::Basic { username, password }) => {
                    format!(
                        "Basic {}",
                        http_auth::basic::encode_credentials(username, password)
                    )
                }
                _ => return Ok(false),
            }
        } else {
            return Ok(false);
        };
        let mut value = HeaderValue::from_str(&value)
            .context("the registry's token is not a valid header value")
            .classify(Failure::Registry)?;
        value.set_sensitive(true);
        *self
            .authorization
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(value);
        Ok(true)
    }

    /// Gets a pull token from the realm a Bearer challenge named (anonymously when there are no
    /// credentials, as ghcr.io, Docker Hub and quay.io allow for public images).
    fn fetch_token(&self, realm: &str, service: Option<&str>) -> Result<String> {
        let scope = format!("repository:{}:pull", self.repository);
        let mut url = url::Url::parse(realm)
            .with_context(|| format!("the registry's token realm {realm:?} is not a URL"))
            .classify(Failure::Registry)?;
        let request = match &self.credentials {
            Some(Credentials::IdentityToken(refresh)) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", refresh)
                    .append_pair("client_id", "ocidd")
                    .append_pair("scope", &scope);
                if let Some(service) = service {
                    form.append_pair("service", service);
                }
                self.http
                    .post(url)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.finish())
            }
            credentials => {
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = service {
                        query.append_pair("service", service);
                    }
                    query.append_pair("scope", &scope);
                }
                let request = self.http.get(url);
                match credentials {
                    Some(Credentials::Basic { username, password }) => {
                        request.basic_auth(username, Some(password))
                    }
                    _ => request,
                }
            }
        };
        let response = with_retries(&self.backoff, "getting a registry token", || {
            let request = request
                .try_clone()
                .ok_or_else(|| anyhow!("the token request cannot be repeated"))?;
            check_transient(request.send().map_err(transient_network_error)?)
        })?;
        if !response.status().is_success() {
            return Err(registry_error(response).context("getting a registry token"));
        }
        let token: TokenResponse = response
            .json()
            .context("getting a registry token: the answer is not a token")
            .classify(Failure::Registry)?;
        token
            .token
            .or(token.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("getting a registry token: the answer holds no token"))
            .classify(Failure::Registry)
    }
}

/// Finds credentials for `registry` in `auth_file` (oci.auth=), or in the docker config of the
/// environment (`DOCKER_CONFIG`, `~/.docker/config.json`), with its credential helpers.
pub(crate) fn lookup_credentials(
    registry: &str,
    auth_file: Option<&Path>,
) -> Result<Option<Credentials>> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    // Docker Hub's credentials are stored under its legacy address.
    let keys: &[&str] = if registry == "docker.io" {
        &[
            "https://index.docker.io/v1/",
            "docker.io",
            "index.docker.io",
        ]
    } else {
        &[registry]
    };
    for key in keys {
        let found = match auth_file {
            Some(path) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("reading oci.auth={}", path.display()))
                    .classify(Failure::Usage)?;
                docker_credential::get_credential_from_reader(file, key)
            }
            None => docker_credential::get_credential(key),
        };
        match found {
            Ok(DockerCredential::UsernamePassword(username, password)) => {
                return Ok(Some(Credentials::Basic { username, password }));
            }
            Ok(DockerCredential::IdentityToken(token)) => {
                return Ok(Some(Credentials::IdentityToken(token)));
            }
            Err(E::NoCredentialConfigured | E::ConfigNotFound) => continue,
            // Without an explicit file, a broken environment config is not our business.
            Err(_) if auth_file.is_none() => continue,
            Err(e) => fail!(
                Failure::Usage,
                "oci.auth={}: cannot read credentials for {registry}: {e:?}",
                auth_file
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            ),
        }
    }
    Ok(None)
}

#[derive(Debug)]
enum ManifestKind {
    Image,
    Index,
}

fn manifest_kind(body: &[u8], content_type: Option<&str>) -> Result<ManifestKind> {
    let head: ManifestHead = serde_json::from_slice(body)
        .map_err(|e| anyhow!("the manifest is not valid JSON: {e}"))
        .classify(Failure::Verification)?;
    let media_type = head.media_type.as_deref().or(content_type);
    match media_type {
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => Ok(ManifestKind::Image),
        Some(OCI_INDEX | DOCKER_LIST) => Ok(ManifestKind::Index),
        Some(t) if DOCKER_SCHEMA1.contains(&t) || head.schema_version == Some(1) => fail!(
            Failure::Verification,
            "the manifest is a Docker schema 1 manifest, which is not supported"
        ),
        // OCI allows leaving mediaType out; the shape tells then.
        _ if head.media_type.is_none() && head.schema_version == Some(2) => {
            Ok(match head.manifests {
                Some(_) => ManifestKind::Index,
                None => ManifestKind::Image,
            })
        }
        Some(t) => fail!(
            Failure::Verification,
            "the manifest has media type {t}, which is neither an image manifest nor an image index"
        ),
        None => fail!(
            Failure::Verification,
            "the manifest has no media type and no schemaVersion 2"
        ),
    }
}

/// An index entry's platform as people write it (`linux/arm64/v8`), or what it is without one.
pub fn entry_platform(entry: &Descriptor) -> String {
    match entry.platform() {
        Some(p) => match p.variant() {
            Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
            None => format!("{}/{}", p.os(), p.architecture()),
        },
        None => format!("(no platform: {})", entry.digest()),
    }
}

fn select_platform<'a>(index: &'a ImageIndex, wanted: &Platform) -> Result<&'a Descriptor> {
    let matches = |d: &&Descriptor| {
        d.platform().as_ref().is_some_and(|p| {
            p.os().to_string() == wanted.os
                && p.architecture().to_string() == wanted.architecture
                && (wanted.variant.is_none() || p.variant() == &wanted.variant)
        })
    };
    if let Some(entry) = index.manifests().iter().find(matches) {
        return Ok(entry);
    }
    let available: Vec<String> = index.manifests().iter().map(entry_platform).collect();
    fail!(
        Failure::Verification,
        "the image index has no entry for {wanted}; it has: {} (choose one with oci.platform=)",
        if available.is_empty() {
            "nothing".to_string()
        } else {
            available.join(", ")
        }
    )
}

fn image_layer(body: &[u8]) -> Result<ImageLayer> {
    let manifest: ImageManifest = serde_json::from_slice(body)
        .context("the image manifest is malformed")
        .classify(Failure::Verification)?;
    let images: Vec<(&Descriptor, Compression)> = manifest
        .layers()
        .iter()
        .filter_map(|l| Compression::from_media_type(l.media_type().as_ref()).map(|c| (l, c)))
        .collect();
    let [(layer, compression)] = images.as_slice() else {
        let present: Vec<String> = manifest
            .layers()
            .iter()
            .map(|l| format!("{} ({} bytes)", l.media_type(), l.size()))
            .collect();
        let present = if present.is_empty() {
            "no layers".to_string()
        } else {
            format!("layers: {}", present.join(", "))
        };
        fail!(
            Failure::Verification,
            "the manifest must have exactly one disk-image layer ({MEDIA_TYPE_GZIP}, {MEDIA_TYPE_ZSTD} or {MEDIA_TYPE_RAW}) but has {}; {present}",
            images.len()
        )
    };
    let digest: Digest = layer
        .digest()
        .to_string()
        .parse()
        .context("the image layer's digest")
        .classify(Failure::Verification)?;
    let annotations = layer.annotations().clone().unwrap_or_default();
    let image_size = annotation_u64(&annotations, ANNOTATION_IMAGE_SIZE)?;
    let indexes: Vec<&Descriptor> = manifest
        .layers()
        .iter()
        .filter(|l| l.media_type().as_ref() == MEDIA_TYPE_CHUNK_INDEX)
        .collect();
    let chunk_index = match indexes.as_slice() {
        [] => None,
        [index] => Some((
            index
                .digest()
                .to_string()
                .parse::<Digest>()
                .context("the chunk index layer's digest")
                .classify(Failure::Verification)?,
            index.size(),
        )),
        _ => fail!(
            Failure::Verification,
            "the manifest has {} chunk index layers; at most one is allowed",
            indexes.len()
        ),
    };
    if *compression == Compression::None && image_size.is_some_and(|n| n != layer.size()) {
        fail!(
            Failure::Verification,
            "the uncompressed layer's size ({}) differs from its {ANNOTATION_IMAGE_SIZE} annotation",
            layer.size()
        );
    }
    Ok(ImageLayer {
        digest,
        size: layer.size(),
        compression: *compression,
        image_size: image_size.or((*compression == Compression::None).then_some(layer.size())),
        chunk_index,
    })
}

fn annotation_u64(annotations: &HashMap<String, String>, key: &str) -> Result<Option<u64>> {
    annotations
        .get(key)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| anyhow!("the layer annotation {key}={v:?} is not a number"))
                .classify(Failure::Verification)
        })
        .transpose()
}

fn header_u64(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`) into the start and the total.
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let range = value.trim().strip_prefix("bytes ")?;
    let (span, total) = range.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// A transport error as the retry loop sees it: worth another try, unless TLS failed (a
/// certificate that does not verify, or a server that does not speak TLS: trying again will
/// not change that).
fn transient_network_error(error: reqwest::Error) -> Attempt {
    if is_tls_error(&error) {
        return Attempt::Permanent(network_error(error));
    }
    Attempt::Transient(Transient {
        reason: short_reason(&error),
        retry_after: None,
    })
}

fn is_tls_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if current.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // io::Error's source() skips the error it wraps.
        if let Some(inner) = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && is_tls_error(inner)
        {
            return true;
        }
        cause = current.source();
    }
    false
}

/// The innermost cause of a transport error ("Connection refused (os error 111)").
pub fn short_reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if text.contains("InvalidContentType") {
        return "the registry does not speak TLS (for a plain-HTTP registry, add oci.allow_no_tls)"
            .into();
    }
    text
}

/// Passes on a response, unless its status says trying again may help (408, 429, 5xx).
fn check_transient(response: Response) -> Result<Response, Attempt> {
    let status = response.status();
    let transient = status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error();
    if !transient {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let message = format!("{:#}", registry_error(response));
    Err(Attempt::Transient(Transient {
        reason: message
            .strip_prefix("registry answered ")
            .unwrap_or(&message)
            .to_string(),
        retry_after,
    }))
}

/// Turns a transport error into a registry failure, without the URL (which can carry a
/// redirect target's signed query).
pub fn network_error(error: reqwest::Error) -> anyhow::Error {
    let error = anyhow::Error::from(error.without_url());
    // rustls's complaint when a plain-HTTP server answers a TLS handshake.
    let error = if format!("{error:#}").contains("InvalidContentType") {
        error.context(
            "the registry does not speak TLS (for a plain-HTTP registry, add oci.allow_no_tls)",
        )
    } else {
        error
    };
    classified(Failure::Registry, error)
}

/// The registry's answer to a failed request as one line: status and its error message.
fn registry_error(response: Response) -> anyhow::Error {
    let status = response.status();
    let mut body = Vec::new();
    let _ = response.take(64 << 10).read_to_end(&mut body);
    let detail = serde_json::from_slice::<ErrorEnvelope>(&body)
        .ok()
        .map(|envelope| {
            envelope
                .errors
                .iter()
                .map(|e| match (&e.code, &e.message) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(s), None) | (None, Some(s)) => s.clone(),
                    (None, None) => String::new(),
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|d| !d.is_empty())
        .or_else(|| {
            let text = String::from_utf8_lossy(&body);
            let line = text.lines().next().unwrap_or("").trim();
            (!line.is_empty() && line.len() < 200).then(|| line.to_string())
        });
    let status_text = format!(
        "HTTP {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let message = match detail {
        Some(detail) => format!("registry answered {}: {detail}", status_text.trim()),
        None => format!("registry answered {}", status_text.trim()),
    };
    let message = if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        format!("{message} (credentials can be given with oci.auth=)")
    } else {
        message
    };
    classified(Failure::Registry, anyhow!(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(layers: &str) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},
            "layers":[{layers}]}}"#
        )
        .into_bytes()
    }

    fn layer(media_type: &str, annotations: &str) -> String {
        format!(
            r#"{{"mediaType":"{media_type}","digest":"sha256:{}","size":1234{annotations}}}"#,
            "ab".repeat(32)
        )
    }

    #[test]
    fn finds_the_one_image_layer() {
        let body = manifest(
            &[
                layer(
                    MEDIA_TYPE_GZIP,
                    r#","annotations":{"ocidd.image.size":"4096"}"#,
                ),
                layer("application/vnd.ocidd.other", ""),
            ]
            .join(","),
        );
        let l = image_layer(&body).unwrap();
        assert_eq!(l.compression, Compression::Gzip);
        assert_eq!(l.size, 1234);
        assert_eq!(l.image_size, Some(4096));
        let raw = image_layer(&manifest(&layer(MEDIA_TYPE_RAW, ""))).unwrap();
        assert_eq!(raw.image_size, Some(1234));
    }

    #[test]
    fn refuses_zero_or_two_image_layers() {
        let e = image_layer(&manifest("")).unwrap_err();
        assert!(format!("{e:#}").contains("has 0; no layers"), "{e:#}");
        let tar = layer("application/vnd.oci.image.layer.v1.tar+gzip", "");
        let e = image_layer(&manifest(&tar)).unwrap_err();
        assert!(
            format!("{e:#}")
                .contains("layers: application/vnd.oci.image.layer.v1.tar+gzip (1234 bytes)"),
            "{e:#}"
        );
        let two = [layer(MEDIA_TYPE_GZIP, ""), layer(MEDIA_TYPE_ZSTD, "")].join(",");
        let e = image_layer(&manifest(&two)).unwrap_err();
        assert!(format!("{e:#}").contains("but has 2"), "{e:#}");
        let bad = layer(
            MEDIA_TYPE_GZIP,
            r#","annotations":{"ocidd.image.size":"big"}"#,
        );
        assert!(image_layer(&manifest(&bad)).is_err());
    }

    #[test]
    fn tells_manifest_kinds() {
        assert!(matches!(
            manifest_kind(&manifest(""), None),
            Ok(ManifestKind::Image)
        ));
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            manifest_kind(index, None),
            Ok(ManifestKind::Index)
        ));
        assert!(matches!(
            manifest_kind(br#"{"schemaVersion":2,"manifests":[]}"#, Some(DOCKER_LIST)),
            Ok(ManifestKind::Index)
        ));
        let e = manifest_kind(b"<html>not json</html>", None).unwrap_err();
        assert!(format!("{e:#}").contains("not valid JSON"));
        assert!(manifest_kind(br#"{"schemaVersion":1}"#, Some(DOCKER_SCHEMA1[0])).is_err());
        assert!(manifest_kind(br#"{"mediaType":"text/plain"}"#, None).is_err());
    }

    #[test]
    fn selects_platforms() {
        let entry = |arch: &str, variant: &str| {
            format!(
                r#"{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{}","size":1,"platform":{{"os":"linux","architecture":"{arch}"{variant}}}}}"#,
                "cd".repeat(32)
            )
        };
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{},{}]}}"#,
            entry("amd64", ""),
            entry("arm64", r#","variant":"v8""#)
        );
        let index: ImageIndex = serde_json::from_str(&body).unwrap();
        let arm = select_platform(&index, &"linux/arm64".parse().unwrap()).unwrap();
        assert_eq!(
            arm.platform().as_ref().unwrap().architecture().to_string(),
            "arm64"
        );
        assert!(select_platform(&index, &"linux/arm64/v8".parse().unwrap()).is_ok());
        let e = select_platform(&index, &"linux/s390x".parse().unwrap()).unwrap_err();
        assert!(
            format!("{e:#}").contains("has: linux/amd64, linux/arm64/v8"),
            "{e:#}"
        );
    }

    #[test]
    fn plain_http_is_refused_unless_allowed() {
        // A redirect to http:// goes through the same check as a first request.
        let strict = http_client(&RegistryOptions::default()).unwrap();
        let error = strict.get("http://127.0.0.1:9/v2/").send().unwrap_err();
        assert!(error.is_builder() && !error.is_connect(), "{error:#}");
        let lenient = http_client(&RegistryOptions {
            allow_no_tls: true,
            ..RegistryOptions::default()
        })
        .unwrap();
        let error = lenient.get("http://127.0.0.1:9/v2/").send().unwrap_err();
        assert!(error.is_connect(), "{error:#}");
    }

    #[test]
    fn an_index_leads_to_the_platform_manifest() {
        let platform: Platform = "linux/amd64".parse().unwrap();
        let index = |digest: &str| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
            )
        };
        let good = format!("sha256:{}", "ef".repeat(32));
        assert_eq!(
            interpret_manifest(index(&good).as_bytes(), None, &platform).unwrap(),
            Resolved::Manifest(good.parse().unwrap())
        );
        let sha384 = format!("sha384:{}", "ef".repeat(48));
        let e = interpret_manifest(index(&sha384).as_bytes(), None, &platform).unwrap_err();
        assert_eq!(
            crate::error::failure_of(&e),
            Some(Failure::Verification),
            "{e:#}"
        );
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
