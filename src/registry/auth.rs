//! Authenticating to a registry: credentials from a docker config, and the answers to its
//! challenges (Bearer tokens, anonymous or with credentials, and Basic). Push looks its
//! credentials up here too.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

use super::client::{CredentialsNote, check_transient, registry_error, transient_network_error};
use crate::error::{Classify, Failure};
use crate::fail;
use crate::retry::{Backoff, with_retries};

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

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

/// Who we are to one repository of a registry, and the Authorization header that says so
/// once a challenge was answered.
pub(super) struct Auth {
    repository: String,
    credentials: Option<Credentials>,
    /// What a refusal says about them.
    note: CredentialsNote,
    /// Whether plain HTTP is allowed (`oci.allow_no_tls`): only then may credentials go to a
    /// token realm over it.
    allow_plain_http: bool,
    authorization: Mutex<Option<HeaderValue>>,
}

impl Auth {
    pub(super) fn new(
        repository: &str,
        note: CredentialsNote,
        credentials: Option<Credentials>,
        allow_plain_http: bool,
    ) -> Self {
        Auth {
            repository: repository.to_string(),
            credentials,
            note,
            allow_plain_http,
            authorization: Mutex::new(None),
        }
    }

    /// What a refusal says about the credentials.
    pub(super) fn note(&self) -> &CredentialsNote {
        &self.note
    }

    /// Adds the Authorization header a challenge earned, if any.
    pub(super) fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
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
    pub(super) fn answer(&self, challenge: &str, http: &Client, backoff: &Backoff) -> Result<bool> {
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
            let token = self.fetch_token(&realm, service.as_deref(), http, backoff)?;
            format!("Bearer {token}")
        } else if challenges
            .iter()
            .any(|c| c.scheme.eq_ignore_ascii_case("basic"))
        {
            match &self.credentials {
                // encode_credentials gives the whole value, scheme included.
                Some(Credentials::Basic { username, password }) => {
                    http_auth::basic::encode_credentials(username, password)
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
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        http: &Client,
        backoff: &Backoff,
    ) -> Result<String> {
        let scope = format!("repository:{}:pull", self.repository);
        let mut url = url::Url::parse(realm)
            .with_context(|| format!("the registry's token realm {realm:?} is not a URL"))
            .classify(Failure::Registry)?;
        // The realm may be another host (as the protocol has it); credentials go there, but
        // never in the clear unless plain HTTP was allowed.
        if url.scheme() != "https" && !self.allow_plain_http {
            fail!(
                Failure::Registry,
                "the registry's token realm {realm:?} is not HTTPS; credentials and tokens go over plain HTTP only with oci.allow_no_tls or --plain-http"
            );
        }
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
                http.post(url)
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
                let request = http.get(url);
                match credentials {
                    Some(Credentials::Basic { username, password }) => {
                        request.basic_auth(username, Some(password))
                    }
                    _ => request,
                }
            }
        };
        let response = with_retries(backoff, "getting a registry token", || {
            let request = request
                .try_clone()
                .ok_or_else(|| anyhow!("the token request cannot be repeated"))?;
            check_transient(request.send().map_err(transient_network_error)?)
        })?;
        if !response.status().is_success() {
            return Err(
                registry_error(response, Some(&self.note)).context("getting a registry token")
            );
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

/// Finds credentials for `registry` in `auth_file` (`oci.auth=`, `--auth`), or in the docker config of the
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
                    .with_context(|| format!("reading the credentials file {}", path.display()))
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
                "the credentials file {}: cannot read credentials for {registry}: {e:?}",
                auth_file
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            ),
        }
    }
    Ok(None)
}

/// Checks a docker config for use at boot (`path` holds `data`): JSON whose `auths` entries
/// carry `auth` (base64 of `user:password`) or an identity token, and no credential helper,
/// since none can run in the initramfs. The error says what is wrong without the secrets.
pub fn check_boot_config(data: &[u8], path: &Path) -> Result<()> {
    use base64::Engine;
    let bad = |why: String| {
        crate::error::classified(
            Failure::Usage,
            anyhow!("the credentials file {}: {why}", path.display()),
        )
    };
    let config: serde_json::Value =
        serde_json::from_slice(data).map_err(|e| bad(format!("not JSON ({e})")))?;
    let config = config
        .as_object()
        .ok_or_else(|| bad("not a docker config (a JSON object)".into()))?;
    for helper in ["credsStore", "credHelpers"] {
        if config.contains_key(helper) {
            return Err(bad(format!(
                "it names a credential helper ({helper}), which cannot run at boot; put the credentials in \"auths\""
            )));
        }
    }
    let auths = match config.get("auths") {
        Some(serde_json::Value::Object(auths)) => auths,
        Some(_) => return Err(bad("\"auths\" is not an object".into())),
        None => return Err(bad("it has no \"auths\"".into())),
    };
    for (host, entry) in auths {
        let auth = entry.get("auth").and_then(|a| a.as_str());
        let token = entry.get("identitytoken").and_then(|t| t.as_str());
        match (auth, token) {
            (Some(auth), _) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| bad(format!("the \"auth\" of {host} is not base64")))?;
                if !decoded.contains(&b':') {
                    return Err(bad(format!(
                        "the \"auth\" of {host} is not the base64 of USER:PASSWORD"
                    )));
                }
            }
            (None, Some(token)) if !token.is_empty() => {}
            _ => {
                return Err(bad(format!(
                    "{host} has neither \"auth\" nor \"identitytoken\""
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_configs() {
        let path = Path::new("/etc/ocidd/auth.json");
        let good = br#"{"auths":{"r.example":{"auth":"dTpw"},"q.example":{"identitytoken":"t"}}}"#;
        assert!(check_boot_config(good, path).is_ok());
        for (config, says) in [
            (&b"{"[..], "not JSON"),
            (b"[]", "not a docker config"),
            (br#"{"credsStore":"pass","auths":{}}"#, "credential helper"),
            (br#"{"auths":[]}"#, "not an object"),
            (br#"{}"#, "no \"auths\""),
            (br#"{"auths":{"r":{"auth":"%%"}}}"#, "not base64"),
            (br#"{"auths":{"r":{"auth":"dXNlcg=="}}}"#, "USER:PASSWORD"),
            (br#"{"auths":{"r":{}}}"#, "neither"),
        ] {
            let e = format!("{:#}", check_boot_config(config, path).unwrap_err());
            assert!(e.contains(says), "{e}");
        }
    }

    fn note() -> CredentialsNote {
        CredentialsNote::new("r.example", true, None, "--auth")
    }

    #[test]
    fn credentials_go_to_a_plain_http_realm_only_when_allowed() {
        let credentials = Credentials::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        let http = super::super::client::http_client(&crate::cmdline::RegistryOptions {
            allow_no_tls: true,
            ..Default::default()
        })
        .unwrap();
        let backoff = Backoff::with_retries(0);
        let strict = Auth::new("disks/base", note(), Some(credentials.clone()), false);
        // Port 9 (discard) on loopback: nothing answers, so only the refusal can be quick.
        let error = strict
            .fetch_token("http://127.0.0.1:9/token", None, &http, &backoff)
            .unwrap_err();
        assert!(format!("{error:#}").contains("is not HTTPS"), "{error:#}");
        let lenient = Auth::new("disks/base", note(), Some(credentials), true);
        let error = lenient
            .fetch_token("http://127.0.0.1:9/token", None, &http, &backoff)
            .unwrap_err();
        assert!(!format!("{error:#}").contains("is not HTTPS"), "{error:#}");
    }
}
