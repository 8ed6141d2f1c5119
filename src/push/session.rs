//! One push's registry session: oci-client's client and the credentials it pushes with, and
//! how each request is tried: bounded by the stall timeout (`--stall-timeout`), retried with
//! backoff (`--retries`) when its failure may pass (no connection, no answer, 408, 429, 5xx),
//! and its failure said in one line without the registry's raw text.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use oci_spec::distribution::Reference;
use reqwest::StatusCode;

use crate::cmdline::RegistryOptions;
use crate::digest::{Algorithm, Digest};
use crate::error::{Failure, classified};
use crate::fail;
use crate::registry::auth::{Credentials, lookup_credentials};
use crate::registry::client::{
    CONNECT_TIMEOUT, CredentialsNote, bounded, describe_answer, extra_certificates,
    install_crypto_provider, is_transient_status, transient_network_error,
};
use crate::retry::{Attempt, Backoff, Transient, with_retries_async};

/// How a push is given credentials.
const PUSH_CREDENTIALS: &str = "--auth, or a docker config at $DOCKER_CONFIG or ~/.docker";

pub(super) struct Session {
    pub(super) client: Client,
    pub(super) auth: RegistryAuth,
    note: CredentialsNote,
    backoff: Backoff,
    stall_timeout: Duration,
}

impl Session {
    /// Logs in to `reference`'s registry for pushing, with the credentials the docker config
    /// has for it.
    pub(super) async fn open(reference: &Reference, options: &RegistryOptions) -> Result<Session> {
        install_crypto_provider();
        let credentials = lookup_credentials(reference.registry(), options.auth.as_deref())?;
        let note = CredentialsNote::new(
            reference.registry(),
            credentials.is_some(),
            options.auth.as_deref(),
            PUSH_CREDENTIALS,
        );
        let auth = match credentials {
            Some(Credentials::Basic { username, password }) => {
                RegistryAuth::Basic(username, password)
            }
            Some(Credentials::IdentityToken(_)) => fail!(
                Failure::Usage,
                "pushing with an identity token is not supported; use a username and password"
            ),
            None => RegistryAuth::Anonymous,
        };
        let session = Session {
            client: Client::new(client_config(options)?),
            auth,
            note,
            backoff: options.backoff(),
            stall_timeout: options.stall_timeout(),
        };
        session
            .request("authenticating to the registry", || {
                session
                    .client
                    .auth(reference, &session.auth, RegistryOperation::Push)
            })
            .await?;
        Ok(session)
    }

    pub(super) fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    pub(super) fn stall_timeout(&self) -> Duration {
        self.stall_timeout
    }

    /// Runs the request `op` makes (`what` it does, for the console and the error), each try
    /// given the stall timeout to answer, and tries again while its failure may pass.
    pub(super) async fn request<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        with_retries_async(&self.backoff, what, || {
            let attempt = op();
            async move {
                match tokio::time::timeout(self.stall_timeout, attempt).await {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(error)) => Err(self.attempt(error, what)),
                    Err(_) => Err(Attempt::Transient(self.no_answer())),
                }
            }
        })
        .await
    }

    /// What a request that got nothing for the stall timeout counts as.
    pub(super) fn no_answer(&self) -> Transient {
        Transient {
            reason: format!(
                "the registry sent nothing for {} s (--stall-timeout)",
                self.stall_timeout.as_secs()
            ),
            retry_after: None,
        }
    }

    /// Whether trying `what` again may help after `error`, and what to say.
    pub(super) fn attempt(&self, error: OciDistributionError, what: &str) -> Attempt {
        let permanent = |message: String| {
            Attempt::Permanent(classified(
                Failure::Registry,
                anyhow::anyhow!("{what}: {message}"),
            ))
        };
        match error {
            OciDistributionError::RequestError(error) if error.is_timeout() => {
                Attempt::Transient(self.no_answer())
            }
            OciDistributionError::RequestError(error) => match transient_network_error(error) {
                Attempt::Permanent(error) => Attempt::Permanent(error.context(what.to_string())),
                transient => transient,
            },
            OciDistributionError::ServerError { code, message, .. } => {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
                let text = describe_answer(status, message.as_bytes(), Some(&self.note));
                let text = text
                    .strip_prefix("registry answered ")
                    .map_or(text.clone(), |rest| format!("the registry answered {rest}"));
                if is_transient_status(status) {
                    Attempt::Transient(Transient {
                        reason: text,
                        retry_after: None,
                    })
                } else {
                    permanent(text)
                }
            }
            OciDistributionError::UnauthorizedError { .. } => permanent(format!(
                "the registry answered HTTP 401 Unauthorized{}",
                self.note.hint(StatusCode::UNAUTHORIZED)
            )),
            OciDistributionError::AuthenticationFailure(text) => permanent(format!(
                "the registry refused to authenticate: {}{}",
                bounded(&text, 200),
                self.note.hint(StatusCode::UNAUTHORIZED)
            )),
            OciDistributionError::RegistryError { envelope, .. } => {
                let denied = envelope
                    .errors
                    .iter()
                    .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
                let detail: Vec<String> = envelope
                    .errors
                    .iter()
                    .map(|e| {
                        let code = serde_json::to_value(&e.code)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default();
                        bounded(&format!("{code}: {}", e.message), 200)
                    })
                    .collect();
                let hint = if denied {
                    self.note.hint(StatusCode::UNAUTHORIZED)
                } else {
                    String::new()
                };
                permanent(format!("the registry answered {}{hint}", detail.join("; ")))
            }
            other => permanent(bounded(&other.to_string(), 300)),
        }
    }

    /// Uploads a small blob (`what` it is, for the error); returns its digest.
    pub(super) async fn upload_blob(
        &self,
        reference: &Reference,
        body: Vec<u8>,
        what: &str,
    ) -> Result<String> {
        let digest = Digest::of(Algorithm::Sha256, &body).to_string();
        let body = bytes::Bytes::from(body);
        self.request(&format!("uploading {what}"), || {
            self.client.push_blob(reference, body.clone(), &digest)
        })
        .await?;
        Ok(digest)
    }

    /// Pushes a manifest (`media_type`, `body`) to `reference`.
    pub(super) async fn push_manifest(
        &self,
        reference: &Reference,
        body: Vec<u8>,
        media_type: &'static str,
    ) -> Result<()> {
        self.request(&format!("pushing the manifest to {reference}"), || {
            self.client.push_manifest_raw(
                reference,
                body.clone(),
                reqwest::header::HeaderValue::from_static(media_type),
            )
        })
        .await?;
        Ok(())
    }

    /// The manifest at `reference` (of one of the `accepted` types) and its digest, or `None`
    /// when the registry has none there yet.
    pub(super) async fn pull_manifest(
        &self,
        reference: &Reference,
        accepted: &[&str],
        what: &str,
    ) -> Result<Option<(Vec<u8>, String)>> {
        self.request(what, || async {
            match self
                .client
                .pull_manifest_raw(reference, &self.auth, accepted)
                .await
            {
                Ok((body, digest)) => Ok(Some((body.to_vec(), digest))),
                Err(error) if is_not_found(&error) => Ok(None),
                Err(error) => Err(error),
            }
        })
        .await
    }
}

/// Whether the registry said the tag (or the whole repository) does not exist yet.
fn is_not_found(error: &OciDistributionError) -> bool {
    match error {
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
            )
        }),
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code: 404, .. } => true,
        _ => false,
    }
}

fn client_config(options: &RegistryOptions) -> Result<ClientConfig> {
    let mut config = ClientConfig {
        protocol: if options.allow_no_tls {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(options.stall_timeout()),
        ..Default::default()
    };
    if let Some(path) = &options.ca {
        config.extra_root_certificates = extra_certificates(path)?
            .into_iter()
            .map(|data| Certificate {
                encoding: CertificateEncoding::Der,
                data,
            })
            .collect();
    }
    Ok(config)
}
