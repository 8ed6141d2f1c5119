//! The registry's pull protocol: the HTTP client, manifest and blob GETs, retries, and the
//! registry's errors.
//!
//! Written on reqwest rather than with oci-client's pull functions because installing needs
//! what those hide: the response headers of a blob GET (Content-Range for resuming,
//! Retry-After), a cap on the manifest size before it is read, and plain error messages.
//! oci-client is still used for pushing (see `push`).

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use oci_spec::distribution::Reference;
use reqwest::StatusCode;
use reqwest::blocking::{Client, ClientBuilder, Response};
use reqwest::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderValue, RANGE,
    RETRY_AFTER, WWW_AUTHENTICATE,
};
use serde::Deserialize;

use super::auth::{Auth, lookup_credentials};
use super::layout::{LayoutServer, LayoutSource};
use super::manifest::media_type::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use super::manifest::{
    ImageLayer, MAX_MANIFEST_SIZE, Resolved, container_image, interpret_manifest,
};
use super::mirror::Scheme;
use super::proxy::Proxies;
use crate::cmdline::RegistryOptions;
use crate::digest::{Algorithm, Digest};
use crate::error::{Classify, Failure, classified};
use crate::reference::Platform;
use crate::retry::{Attempt, Backoff, Transient, parse_retry_after, with_retries};
use crate::sync::Unpoisoned;
use crate::{fail, say};

/// A blob GET that a source answered with 200 or 206.
pub struct BlobResponse {
    pub body: Response,
    /// Bytes at the body's start that come before the offset asked for: a server that ignored
    /// the range (200) or began it early sends bytes the reader already has.
    pub skip: u64,
    /// The blob's total size, when the response says.
    pub total_size: Option<u64>,
    /// A range was asked for and the whole blob came (200): a pull-through cache's miss does
    /// that, and more ranges in parallel would each pull the whole blob.
    pub range_ignored: bool,
}

/// A connection to one repository of a registry, through its mirrors.
pub struct Registry {
    /// The mirrors in the order given, then the registry itself.
    sources: Vec<Source>,
    /// Whether mirrors may resolve tags (`oci.mirror_resolve`).
    mirror_resolve: bool,
    backoff: Backoff,
    /// What the console was told about which source served what, so it is told once.
    told: Mutex<HashSet<String>>,
    /// `oci.layout`'s server, the first source, kept while the sources may ask it.
    _layout: Option<LayoutServer>,
}

/// What a tag or digest resolved to.
#[derive(Debug)]
pub struct Resolution {
    /// The disk-image layer.
    pub layer: ImageLayer,
    /// The digest of the manifest the name gave (an image index, or the image's manifest).
    pub manifest: Digest,
    /// The digest of the platform's image manifest, when `manifest` is an index.
    pub platform_manifest: Option<Digest>,
}

/// A manifest as fetched.
#[derive(Debug)]
pub struct FetchedManifest {
    pub body: Vec<u8>,
    /// The Content-Type it came with.
    pub media_type: Option<String>,
    /// The digest of `body`, computed here.
    pub digest: Digest,
}

/// How an install is given credentials.
const PULL_CREDENTIALS: &str = "oci.auth= or --auth";

/// A mirror, or the registry.
struct Source {
    /// How the console names it: `mirror HOST[/PREFIX]` or `registry HOST`.
    name: String,
    /// `SCHEME://HOST/v2/[PREFIX/]REPOSITORY`
    base: String,
    /// `?ns=REGISTRY` at a mirror, as containerd sends it (Spegel needs it to tell registries
    /// apart; Dragonfly reads it too); nothing at the registry.
    query: String,
    http: Client,
    auth: Auth,
    /// A mirror that could not be connected to is left alone until then.
    down_until: Mutex<Option<Instant>>,
    /// What names the proxy requests to it go through (`oci.proxy`, `HTTPS_PROXY`), if any:
    /// a refused connection may be the proxy's.
    through: Option<&'static str>,
    /// It resolves tags even without `oci.mirror_resolve`: `oci.layout`, the operator's own
    /// copy of the image.
    resolves_tags: bool,
}

/// How long a mirror that could not be connected to is skipped: each try costs the connect
/// timeout, and a chunked install makes many requests.
const MIRROR_DOWN_FOR: Duration = Duration::from_secs(30);
/// The connect timeout for mirrors: a mirror is an optimisation, and a dead one must cost
/// little before the registry is asked.
const MIRROR_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a mirror may take to answer a request (and then each read of the body): one
/// that takes the connection and says nothing must cost little too.
const MIRROR_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The connect timeout for the registry.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl Source {
    fn url(&self, path: &str) -> String {
        format!("{}{path}{}", self.base, self.query)
    }

    fn is_down(&self) -> bool {
        let down_until = self.down_until.lock_unpoisoned();
        down_until.is_some_and(|until| Instant::now() < until)
    }

    fn set_down(&self) {
        *self.down_until.lock_unpoisoned() = Some(Instant::now() + MIRROR_DOWN_FOR);
    }
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

/// Builds the HTTP client registry traffic goes through: the CA, the proxy, plain HTTP only
/// when allowed.
pub fn http_client(options: &RegistryOptions) -> Result<Client> {
    client_builder(options, CONNECT_TIMEOUT)?
        .build()
        .context("setting up HTTP client")
        .classify(Failure::Usage)
}

/// The settings every client that talks for the install shares (registry, mirrors, report
/// receivers): the CA (`oci.ca=`), the proxy (`oci.proxy=`), plain HTTP only when allowed.
pub fn client_builder(
    options: &RegistryOptions,
    connect_timeout: Duration,
) -> Result<ClientBuilder> {
    install_crypto_provider();
    let mut builder = Client::builder()
        .user_agent(concat!("ocidd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect_timeout)
        // Applies to each read of a body too, so a stalled download is noticed.
        .timeout(options.stall_timeout())
        // Redirects (blob GETs often go to object storage) are followed; reqwest drops the
        // Authorization header when a redirect leaves the registry's host.
        .redirect(reqwest::redirect::Policy::limited(10))
        // Without oci.allow_no_tls even a redirect must not downgrade to plain HTTP.
        .https_only(!options.allow_no_tls);
    if let Some(path) = &options.ca {
        let certificates = extra_certificates(path)?
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("the CA file {}", path.display()))
            .classify(Failure::Usage)?;
        builder = builder.tls_certs_merge(certificates);
    }
    // oci.proxy=, or the environment's proxies at a shell; at boot there is no environment.
    builder = match Proxies::from_options(options)? {
        Some(proxies) => proxies.apply(builder),
        None => builder.no_proxy(),
    };
    Ok(builder)
}

/// The certificates of a CA file (PEM) to trust besides the system's, DER-encoded, for the
/// pull client and for push's; a file without any is refused.
pub fn extra_certificates(path: &Path) -> Result<Vec<Vec<u8>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the CA file {}", path.display()))
        .classify(Failure::Usage)?;
    parse_certificates(&pem, path)
}

/// The certificates of the CA file `path`, which holds `pem`, DER-encoded.
pub fn parse_certificates(pem: &[u8], path: &Path) -> Result<Vec<Vec<u8>>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certificates = CertificateDer::pem_slice_iter(pem)
        .map(|certificate| certificate.map(|der| der.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("the CA file {} is not valid PEM: {e}", path.display()))
        .classify(Failure::Usage)?;
    if certificates.is_empty() {
        fail!(
            Failure::Usage,
            "the CA file {} holds no PEM certificates",
            path.display()
        );
    }
    Ok(certificates)
}

/// Selects ring as rustls's cryptography once per process.
pub fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Registry {
    /// The registry of `reference`, and the mirrors `options` name.
    pub fn new(reference: &Reference, options: &RegistryOptions) -> Result<Self> {
        let default_scheme = if options.allow_no_tls {
            Scheme::Http
        } else {
            Scheme::Https
        };
        let repository = reference.repository();
        let registry_host = reference.resolve_registry();
        let proxies = Proxies::from_options(options)?;
        let through = |base: &str| proxies.as_ref().and_then(|p| p.name_for(base));
        let mut sources = Vec::with_capacity(options.mirrors.len() + 2);
        let layout = match &options.layout {
            Some(layout) => {
                let server = LayoutServer::start(layout)?;
                let base = format!("http://{}/v2/{repository}", server.host());
                sources.push(Source {
                    name: match layout {
                        LayoutSource::Directory(dir) => format!("layout {}", dir.display()),
                        LayoutSource::Medium => "the boot medium's layout".to_string(),
                    },
                    base,
                    query: String::new(),
                    // No proxy: the layout is on loopback.
                    http: client_builder(
                        &RegistryOptions {
                            allow_no_tls: true,
                            proxy: None,
                            no_proxy: None,
                            ..options.clone()
                        },
                        MIRROR_CONNECT_TIMEOUT,
                    )?
                    .no_proxy()
                    .build()
                    .context("setting up HTTP client")
                    .classify(Failure::Usage)?,
                    auth: Auth::new(
                        repository,
                        CredentialsNote::new("the layout", false, None, PULL_CREDENTIALS),
                        None,
                        true,
                    ),
                    down_until: Mutex::new(None),
                    through: None,
                    resolves_tags: true,
                });
                Some(server)
            }
            None => None,
        };
        if !options.mirrors.is_empty() {
            let http = client_builder(options, MIRROR_CONNECT_TIMEOUT)?
                .timeout(options.stall_timeout().min(MIRROR_ANSWER_TIMEOUT))
                .build()
                .context("setting up HTTP client")
                .classify(Failure::Usage)?;
            let mut ns = url::form_urlencoded::Serializer::for_suffix(String::from("?"), 1);
            ns.append_pair("ns", reference.registry());
            let query = ns.finish();
            for mirror in &options.mirrors {
                let scheme = mirror.scheme().unwrap_or(default_scheme);
                if scheme == Scheme::Http && !options.allow_no_tls {
                    fail!(
                        Failure::Usage,
                        "oci.mirror={mirror} is plain HTTP, which is allowed only with oci.allow_no_tls or --plain-http"
                    );
                }
                let repository = mirror.repository(repository);
                let credentials = lookup_credentials(mirror.host(), options.auth.as_deref())?;
                let base = format!("{}://{}/v2/{repository}", scheme.as_str(), mirror.host());
                sources.push(Source {
                    name: format!("mirror {mirror}"),
                    through: through(&base),
                    base,
                    query: query.clone(),
                    http: http.clone(),
                    auth: Auth::new(
                        &repository,
                        CredentialsNote::new(
                            mirror.host(),
                            credentials.is_some(),
                            options.auth.as_deref(),
                            PULL_CREDENTIALS,
                        ),
                        credentials,
                        options.allow_no_tls,
                    ),
                    down_until: Mutex::new(None),
                    resolves_tags: false,
                });
            }
        }
        let credentials = lookup_credentials(reference.registry(), options.auth.as_deref())?;
        let base = format!(
            "{}://{registry_host}/v2/{repository}",
            default_scheme.as_str()
        );
        sources.push(Source {
            name: format!("registry {}", reference.registry()),
            through: through(&base),
            base,
            query: String::new(),
            http: http_client(options)?,
            auth: Auth::new(
                repository,
                CredentialsNote::new(
                    reference.registry(),
                    credentials.is_some(),
                    options.auth.as_deref(),
                    PULL_CREDENTIALS,
                ),
                credentials,
                options.allow_no_tls,
            ),
            down_until: Mutex::new(None),
            resolves_tags: false,
        });
        Ok(Registry {
            sources,
            mirror_resolve: options.mirror_resolve,
            backoff: options.backoff(),
            told: Mutex::new(HashSet::new()),
            _layout: layout,
        })
    }

    /// Resolves a tag (or manifest digest) to the disk-image layer of its manifest, choosing
    /// `platform` from an image index; with the digests of what was read on the way, which a
    /// signature must name.
    pub fn resolve(&self, reference: &Reference, platform: &Platform) -> Result<Resolution> {
        let name = match (reference.tag(), reference.digest()) {
            (_, Some(digest)) => digest,
            (Some(tag), None) => tag,
            (None, None) => "latest",
        };
        let pinned = reference.digest().map(str::parse::<Digest>).transpose()?;
        let top = self.fetch_manifest(name, pinned.as_ref())?;
        let candidates = match interpret_manifest(&top.body, top.media_type.as_deref(), platform)? {
            Resolved::Layer(layer) => {
                return Ok(Resolution {
                    layer,
                    manifest: top.digest,
                    platform_manifest: None,
                });
            }
            Resolved::ContainerImage { layers } => {
                fail!(Failure::Verification, "{}", container_image(name, layers))
            }
            Resolved::Manifests(candidates) => candidates,
        };
        let count = candidates.len();
        for (i, candidate) in candidates.into_iter().enumerate() {
            let digest = &candidate.digest;
            let entry = self.fetch_manifest(&digest.to_string(), Some(digest))?;
            match interpret_manifest(&entry.body, entry.media_type.as_deref(), platform)? {
                Resolved::Layer(layer) => {
                    if count > 1 {
                        say!(
                            "ocidd: the image index has {count} entries for {platform}; installing {} ({digest})",
                            candidate.description
                        );
                    }
                    return Ok(Resolution {
                        layer,
                        manifest: top.digest,
                        platform_manifest: Some(entry.digest),
                    });
                }
                Resolved::ContainerImage { layers } if i + 1 < count => say!(
                    "ocidd: skipping the index entry {} ({digest}): {}",
                    candidate.description,
                    container_image("it", layers)
                ),
                Resolved::ContainerImage { layers } => fail!(
                    Failure::Verification,
                    "the image index entry {} ({digest}): {}",
                    candidate.description,
                    container_image("it", layers)
                ),
                Resolved::Manifests(_) => fail!(
                    Failure::Verification,
                    "the image index entry for {platform} is another index; nested indexes are not supported"
                ),
            }
        }
        fail!(
            Failure::Verification,
            "the image index has no entry for {platform}"
        )
    }

    /// The manifest `name` (a tag or a digest, checked when `pinned`) in this repository, or
    /// `None` when the registry has none by that name.
    pub fn manifest_if_any(
        &self,
        name: &str,
        pinned: Option<&Digest>,
    ) -> Result<Option<FetchedManifest>> {
        let (response, source) = self.request_manifest(name, pinned)?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.read_manifest(response, source, name, pinned).map(Some)
    }

    /// The referrers of `subject` (an image index, as the OCI referrers API lists them), or
    /// `None` when the registry has no referrers API: it answers 404, or, in front ends and
    /// registries that do not know the path, 400, 401, 403, 405 or 501.
    pub fn referrers(&self, subject: &Digest) -> Result<Option<Vec<u8>>> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(OCI_INDEX));
        let what = format!("listing the referrers of {subject}");
        let (response, source) =
            self.get(&format!("/referrers/{subject}"), &headers, &what, false)?;
        match response.status() {
            StatusCode::NOT_FOUND
            | StatusCode::BAD_REQUEST
            | StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED => return Ok(None),
            status if !status.is_success() => {
                return Err(registry_error(response, Some(source.auth.note())).context(what));
            }
            _ => {}
        }
        read_limited(response, MAX_MANIFEST_SIZE, &what).map(Some)
    }

    fn fetch_manifest(&self, name: &str, pinned: Option<&Digest>) -> Result<FetchedManifest> {
        let (response, source) = self.request_manifest(name, pinned)?;
        self.read_manifest(response, source, name, pinned)
    }

    /// Sends the GET of manifest `name`: to the mirrors first when they may serve it.
    fn request_manifest(&self, name: &str, pinned: Option<&Digest>) -> Result<(Response, &Source)> {
        let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_str(&accept)?);
        // Mirrors serve what a digest names; a tag is the registry's to say, unless the
        // mirrors were trusted with it.
        let at_mirrors = pinned.is_some() || self.mirror_resolve;
        self.get(
            &format!("/manifests/{name}"),
            &headers,
            &format!("fetching manifest {name}"),
            at_mirrors,
        )
    }

    /// Reads the answer to [`Registry::request_manifest`]: the body (size-capped), its type,
    /// and its digest, checked when `pinned`.
    fn read_manifest(
        &self,
        response: Response,
        source: &Source,
        name: &str,
        pinned: Option<&Digest>,
    ) -> Result<FetchedManifest> {
        if !response.status().is_success() {
            return Err(registry_error(response, Some(source.auth.note()))
                .context(format!("fetching manifest {name}")));
        }
        self.tell_source(source, &format!("manifest {name}"));
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let body = read_limited(response, MAX_MANIFEST_SIZE, &format!("manifest {name}"))?;
        // The digest of what was read, never what a header claims: it is what a signature
        // and a pinned reference are checked against.
        let digest = Digest::of(pinned.map_or(Algorithm::Sha256, Digest::algorithm), &body);
        if let Some(expected) = pinned {
            expected.check(&digest, "manifest")?;
        }
        Ok(FetchedManifest {
            body,
            media_type,
            digest,
        })
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
        let mut headers = HeaderMap::new();
        let range = match end {
            Some(end) => Some(format!("bytes={offset}-{}", end.saturating_sub(1))),
            None if offset > 0 => Some(format!("bytes={offset}-")),
            None => None,
        };
        let ranged = range.is_some();
        if let Some(range) = range {
            headers.insert(RANGE, HeaderValue::from_str(&range)?);
        }
        let (response, source) = self.get(
            &format!("/blobs/{digest}"),
            &headers,
            "fetching the blob",
            true,
        )?;
        if response.status().is_success() {
            self.tell_source(source, &format!("blob {digest}"));
        }
        match response.status() {
            StatusCode::OK => Ok(BlobResponse {
                total_size: header_u64(response.headers(), CONTENT_LENGTH),
                skip: offset,
                body: response,
                range_ignored: ranged,
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
                    range_ignored: false,
                })
            }
            // docker-registry's 416 carries a wrong Content-Length: never read its body.
            StatusCode::RANGE_NOT_SATISFIABLE => fail!(
                Failure::Registry,
                "fetching the blob: the registry cannot serve it from byte {offset} (HTTP 416)"
            ),
            _ => {
                Err(registry_error(response, Some(source.auth.note())).context("fetching the blob"))
            }
        }
    }

    /// Says once which source served `what`, when there are mirrors to tell apart.
    fn tell_source(&self, source: &Source, what: &str) {
        if self.sources.len() > 1 && self.tell_once(format!("{what} {}", source.name)) {
            say!("ocidd: {what} from {}", source.name);
        }
    }

    /// Whether `key` is new to the console.
    fn tell_once(&self, key: String) -> bool {
        self.told.lock_unpoisoned().insert(key)
    }

    /// How failing requests and broken downloads are retried.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Sends a GET for `path` (`/manifests/…`, `/blobs/…`): to each mirror in turn when
    /// `at_mirrors`, once each, then to the registry. A mirror that cannot be reached or does
    /// not answer 2xx passes the request on (containerd's rule); the registry's answer is
    /// final. Connection failures and answers that may pass (408, 429, 5xx) at the registry
    /// are retried with backoff, each time through the mirrors again.
    fn get(
        &self,
        path: &str,
        headers: &HeaderMap,
        what: &str,
        at_mirrors: bool,
    ) -> Result<(Response, &Source)> {
        let (registry, mirrors) = self
            .sources
            .split_last()
            .ok_or_else(|| anyhow!("no registry to ask"))?;
        with_retries(&self.backoff, what, || {
            for mirror in mirrors
                .iter()
                .filter(|m| (at_mirrors || m.resolves_tags) && !m.is_down())
            {
                match self.send(mirror, path, headers, &Backoff::with_retries(0)) {
                    Ok(response) if response.status().is_success() => {
                        return Ok((response, mirror));
                    }
                    Ok(response) => {
                        let reason =
                            format!("{:#}", registry_error(response, Some(mirror.auth.note())));
                        self.passed_on(mirror, path, &reason);
                    }
                    Err(error) => {
                        if let SendFailure::Network(error) = &error
                            && (error.is_connect() || error.is_timeout())
                        {
                            mirror.set_down();
                        }
                        self.passed_on(mirror, path, &error.reason());
                    }
                }
            }
            match self.send(registry, path, headers, &self.backoff) {
                Ok(response) => check_transient(response).map(|r| (r, registry)),
                Err(SendFailure::Network(error)) => {
                    match (transient_network_error(error), registry.through) {
                        // Which connection failed is not in the error: say the proxy may be it.
                        (Attempt::Transient(mut t), Some(proxy)) => {
                            t.reason += &format!(" (through the proxy in {proxy})");
                            Err(Attempt::Transient(t))
                        }
                        (Attempt::Permanent(e), Some(proxy)) => Err(Attempt::Permanent(
                            e.context(format!("through the proxy in {proxy}")),
                        )),
                        (attempt, None) => Err(attempt),
                    }
                }
                Err(SendFailure::Auth(error)) => Err(Attempt::Permanent(error)),
            }
        })
    }

    /// Says that a mirror did not serve `path` and why (once per mirror and object).
    fn passed_on(&self, mirror: &Source, path: &str, reason: &str) {
        let object = path.rsplit('/').next().unwrap_or(path);
        if self.tell_once(format!("{} {object} failed", mirror.name)) {
            let reason = reason.strip_prefix("registry answered ").unwrap_or(reason);
            let reason = if reason == NOT_TLS {
                MIRROR_NOT_TLS
            } else {
                reason
            };
            say!(
                "ocidd: {} did not serve {object} ({reason}); trying the next source",
                mirror.name
            );
        }
    }

    /// Sends one GET to `source`, answering its authentication challenge if it makes one.
    fn send(
        &self,
        source: &Source,
        path: &str,
        headers: &HeaderMap,
        backoff: &Backoff,
    ) -> Result<Response, SendFailure> {
        let url = source.url(path);
        let request = || {
            source
                .auth
                .authorize(source.http.get(&url).headers(headers.clone()))
        };
        let mut response = request().send().map_err(SendFailure::Network)?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if let Some(challenge) = challenge
                && source
                    .auth
                    .answer(&challenge, &source.http, backoff)
                    .map_err(SendFailure::Auth)?
            {
                response = request().send().map_err(SendFailure::Network)?;
            }
        }
        Ok(response)
    }
}

/// Why a request got no answer: the network, or answering the source's challenge.
enum SendFailure {
    Network(reqwest::Error),
    Auth(anyhow::Error),
}

impl SendFailure {
    fn reason(&self) -> String {
        match self {
            SendFailure::Network(error) => short_reason(error),
            SendFailure::Auth(error) => format!("{error:#}"),
        }
    }
}

/// Reads a small response body (`what` it is), refusing one over `limit` bytes before and
/// while reading it.
fn read_limited(response: Response, limit: u64, what: &str) -> Result<Vec<u8>> {
    let declared = header_u64(response.headers(), CONTENT_LENGTH);
    if declared.is_some_and(|n| n > limit) {
        fail!(
            Failure::Verification,
            "{what} is larger than the {} MiB limit",
            limit >> 20
        );
    }
    let mut body = Vec::new();
    response
        .take(limit + 1)
        .read_to_end(&mut body)
        .with_context(|| format!("reading {what}"))
        .classify(Failure::Registry)?;
    if body.len() as u64 > limit {
        fail!(
            Failure::Verification,
            "{what} is larger than the {} MiB limit",
            limit >> 20
        );
    }
    Ok(body)
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
/// certificate that does not verify, or a server that does not speak TLS) or a redirect was
/// refused: trying again will not change those.
pub(crate) fn transient_network_error(error: reqwest::Error) -> Attempt {
    if is_tls_error(&error) || error.is_redirect() {
        return Attempt::Permanent(network_error(error));
    }
    let cause = short_reason(&error);
    // A proxy that refused to open a tunnel without credentials will not change its mind.
    if cause.contains(PROXY_AUTH_CAUSE) {
        return Attempt::Permanent(classified(Failure::Registry, anyhow!(PROXY_AUTH)));
    }
    // Name the host a lookup failed for: the cause alone does not.
    let reason = match error.url().and_then(|url| url.host_str()) {
        Some(host) if is_dns_failure(&error) => format!("cannot resolve {host}: {cause}"),
        _ => cause,
    };
    Attempt::Transient(Transient {
        reason,
        retry_after: None,
    })
}

/// Whether connecting failed at looking the host up.
fn is_dns_failure(error: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        let text = current.to_string();
        if text.contains("dns error") || text.contains("lookup address") {
            return true;
        }
        cause = current.source();
    }
    false
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
    if text.contains(NOT_TLS_CAUSE) {
        return NOT_TLS.into();
    }
    text
}

/// hyper-util's complaint when a proxy answers CONNECT with 407, and what it means.
const PROXY_AUTH_CAUSE: &str = "proxy authorization required";
const PROXY_AUTH: &str = "the proxy answered HTTP 407 Proxy Authentication Required to CONNECT (give its credentials in the proxy's URL: http://USER:PASSWORD@HOST:PORT)";
/// rustls's complaint when a plain-HTTP server answers a TLS handshake, and what it means.
const NOT_TLS_CAUSE: &str = "InvalidContentType";
const NOT_TLS: &str = "the registry does not speak TLS (a plain-HTTP registry is allowed with oci.allow_no_tls or --plain-http)";
const MIRROR_NOT_TLS: &str = "the mirror does not speak TLS (a plain-HTTP mirror is given as oci.mirror=http://HOST, with oci.allow_no_tls)";
/// rustls's complaint about a certificate no trusted CA signed, and what to do.
const UNKNOWN_ISSUER_CAUSE: &str = "UnknownIssuer";
const UNKNOWN_ISSUER: &str = "the registry's certificate is not signed by a CA this machine trusts (give its CA with oci.ca= or --ca)";

/// Whether an answer of `status` may pass when asked again: 408, 429, and 5xx but 501, which
/// says the server does not do what was asked. Pulls and pushes retry the same answers.
pub fn is_transient_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

/// Passes on a response, unless its status says trying again may help.
pub(super) fn check_transient(response: Response) -> Result<Response, Attempt> {
    let status = response.status();
    if !is_transient_status(status) {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let message = format!("{:#}", registry_error(response, None));
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
fn network_error(error: reqwest::Error) -> anyhow::Error {
    // A refused redirect: said without the target's URL (beyond its host), which can be a
    // signed secret, and which the errors inside this one would print.
    if error.is_redirect() {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        let mut to_plain_http = None;
        while let Some(current) = cause {
            if let Some(url) = current
                .downcast_ref::<reqwest::Error>()
                .and_then(reqwest::Error::url)
                .filter(|url| url.scheme() == "http")
            {
                let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
                to_plain_http = Some(format!("{}{port}", url.host_str().unwrap_or("?")));
            }
            cause = current.source();
        }
        let message = match to_plain_http {
            Some(host) => format!(
                "the registry redirected to plain HTTP (http://{host}/…), which is refused without oci.allow_no_tls or --plain-http"
            ),
            None => format!(
                "following the registry's redirect: {}",
                short_reason(&error)
            ),
        };
        return classified(Failure::Registry, anyhow!(message));
    }
    let error = anyhow::Error::from(error.without_url());
    let text = format!("{error:#}");
    let error = if text.contains(NOT_TLS_CAUSE) {
        error.context(NOT_TLS)
    } else if text.contains(UNKNOWN_ISSUER_CAUSE) {
        error.context(UNKNOWN_ISSUER)
    } else if let Some(note) = clock_note(&text) {
        error.context(note)
    } else {
        error
    };
    classified(Failure::Registry, error)
}

/// When a certificate failed for its dates: what the clock says, since a machine with a dead
/// RTC battery or a factory date fails every handshake this way.
fn clock_note(text: &str) -> Option<String> {
    let not_yet = text.contains("not valid yet") || text.contains("NotValidYet");
    let expired = (text.contains("certificate expired") || text.contains("Expired"))
        && !text.contains("Revocation");
    if !not_yet && !expired {
        return None;
    }
    let now = httpdate::fmt_http_date(std::time::SystemTime::now());
    let what = if not_yet { "not valid yet" } else { "expired" };
    Some(format!(
        "the registry's certificate is {what} by this machine's clock, which says {now}; if the clock is wrong, set it (at boot: ocidd.ntp=HOST, or an NTP server from DHCP)"
    ))
}

/// The registry's answer to a failed request as one line: status and its error message,
/// with what it says about the credentials (`note`), if anything.
pub(super) fn registry_error(response: Response, note: Option<&CredentialsNote>) -> anyhow::Error {
    let status = response.status();
    let mut body = Vec::new();
    let _ = response.take(64 << 10).read_to_end(&mut body);
    classified(
        Failure::Registry,
        anyhow!("{}", describe_answer(status, &body, note)),
    )
}

/// What an answer of 401 or 403 adds about credentials: the ones sent were refused, or
/// none were sent and how to give them.
#[derive(Debug, Clone)]
pub struct CredentialsNote {
    /// Credentials were sent.
    pub sent: bool,
    /// When none were: why, and how to give them.
    pub without: String,
}

impl CredentialsNote {
    /// For a source at `host` that `oci.auth=` (`auth_file`) may hold credentials for.
    pub fn new(host: &str, sent: bool, auth_file: Option<&Path>, flags: &str) -> Self {
        let without = match auth_file {
            Some(path) => format!("{} has no credentials for {host}", path.display()),
            None => format!("no credentials were given: {flags}"),
        };
        CredentialsNote { sent, without }
    }

    /// What an answer of `status` adds: for 401 and 403, whether the credentials sent were
    /// refused or none were sent (and how to give them); nothing for other statuses.
    pub fn hint(&self, status: StatusCode) -> String {
        match (status, self.sent) {
            (StatusCode::UNAUTHORIZED, true) => {
                " (the registry refused the credentials given)".into()
            }
            (StatusCode::FORBIDDEN, true) => " (the credentials given do not allow this)".into(),
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, false) => {
                format!(" ({})", self.without)
            }
            _ => String::new(),
        }
    }
}

/// A status as one line: "HTTP 404 Not Found" (the number alone where it has no name).
pub fn status_line(status: StatusCode) -> String {
    format!(
        "HTTP {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim()
    .to_string()
}

/// A registry's answer that is not a success, as one line: "registry answered HTTP 401
/// Unauthorized: UNAUTHORIZED: …", from its status and its body (the OCI error envelope's
/// codes and messages, or a short first line of text), with what it says about the
/// credentials. A proxy's demand for credentials (407) is said to be the proxy's. Pushes and
/// pulls describe answers alike.
pub fn describe_answer(status: StatusCode, body: &[u8], note: Option<&CredentialsNote>) -> String {
    let status_text = status_line(status);
    if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        return format!(
            "the proxy answered {status_text} (give its credentials in the proxy's URL: http://USER:PASSWORD@HOST:PORT)"
        );
    }
    let detail = serde_json::from_slice::<ErrorEnvelope>(body)
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
            let text = String::from_utf8_lossy(body);
            let line = text.lines().next().unwrap_or("").trim();
            (!line.is_empty() && line.len() < 200).then(|| line.to_string())
        })
        .map(|detail| bounded(&detail, MAX_DETAIL));
    let message = match detail {
        Some(detail) => format!("registry answered {status_text}: {detail}"),
        None => format!("registry answered {status_text}"),
    };
    let hint = note.map(|note| note.hint(status)).unwrap_or_default();
    format!("{message}{hint}")
}

/// The most of a server's message an error line carries.
const MAX_DETAIL: usize = 300;

/// `text` cut to at most `max` characters, saying so.
pub fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}… ({} more bytes)", &text[..cut], text.len() - cut),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_out_of_its_dates_names_the_clock() {
        use rustls::CertificateError;
        for (error, what) in [
            (CertificateError::NotValidYet, "not valid yet"),
            (CertificateError::Expired, "expired"),
        ] {
            let text = format!("{}", rustls::Error::InvalidCertificate(error));
            let note = clock_note(&text).unwrap_or_else(|| panic!("{text}"));
            assert!(note.contains(what) && note.contains("ocidd.ntp="), "{note}");
        }
        assert_eq!(clock_note("invalid peer certificate: UnknownIssuer"), None);
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
