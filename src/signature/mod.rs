//! Signed images only (`oci.verify.key=`): before anything is written, a cosign signature by
//! one of the given keys must cover the manifest the tag resolved to, or, for an image index,
//! the platform's manifest. Both of cosign's layouts are read: the legacy one ([`legacy`],
//! what `cosign sign --key` wrote for years) and the bundle one ([`bundle`], newer cosign's
//! default). Key-based verification needs nothing but the registry; transparency-log data is
//! ignored.

pub mod bundle;
pub mod keys;
pub mod legacy;

use anyhow::{Result, anyhow};
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;

use crate::cmdline::VerifyOptions;
use crate::digest::Digest;
use crate::error::{Failure, classified, failure_of};
use crate::registry::Registry;
use crate::registry::blob::read_small_blob;
use crate::registry::client::Resolution;
use crate::say;
use keys::PublicKey;

/// The media type of a legacy signature's payload layer (simple signing).
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation on that layer holding the base64 DER signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign image signature's payload.
pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";
/// The artifact and layer media type of a Sigstore bundle.
pub const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// A DSSE envelope's payload type for an in-toto statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The predicate type of newer cosign's image signature statement.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// At most this many signatures are looked at for one manifest.
const MAX_SIGNATURES: usize = 32;
/// Payloads and bundles larger than this are not read.
const MAX_SIGNATURE_BLOB: u64 = 1 << 20;

/// The keys an install by tag must find a signature by.
pub struct Policy {
    keys: Vec<PublicKey>,
    /// `oci.verify=warn`: say so loudly, but install.
    warn_only: bool,
}

/// What verification found, for the console and the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Signed: by which key, over which digest, in which layout.
    Verified(String),
    /// Not signed as required, installed anyway (`oci.verify=warn`): why.
    Unverified(String),
}

/// One signature found, accepted or not.
type Finding = Result<Accepted, String>;

/// A signature that verified.
struct Accepted {
    key: String,
    layout: &'static str,
}

impl Policy {
    /// The policy `options` ask for; `None` without keys.
    pub fn new(options: &VerifyOptions) -> Result<Option<Policy>> {
        if options.keys.is_empty() {
            return Ok(None);
        }
        let keys = options
            .keys
            .iter()
            .map(|value| keys::read_public_key(value))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Policy {
            keys,
            warn_only: options.warn_only,
        }))
    }

    /// Checks that a signature by one of the keys covers what `resolution` names. Fails
    /// (verification, exit 4) saying what was found, unless only warning.
    pub fn check(&self, registry: &Registry, resolution: &Resolution) -> Result<Outcome> {
        let mut candidates = vec![&resolution.manifest];
        candidates.extend(&resolution.platform_manifest);
        let mut reasons = Vec::new();
        for digest in candidates {
            let findings = self.findings(registry, digest)?;
            if findings.is_empty() {
                reasons.push(format!(
                    "{digest}: unsigned (no signature in either layout)"
                ));
            }
            for finding in findings {
                match finding {
                    Ok(accepted) => {
                        let what = format!(
                            "{digest} signed by {} (cosign {} layout)",
                            accepted.key, accepted.layout
                        );
                        say!("ocidd: signature verified: {what}");
                        return Ok(Outcome::Verified(what));
                    }
                    Err(reason) => {
                        let reason = format!("{digest}: {reason}");
                        if !reasons.contains(&reason) {
                            reasons.push(reason);
                        }
                    }
                }
            }
        }
        let keys = if self.keys.len() == 1 {
            "the key"
        } else {
            "any of the keys"
        };
        let message = format!("no valid signature by {keys}: {}", reasons.join("; "));
        if self.warn_only {
            say!("ocidd: WARNING: {message}");
            say!(
                "ocidd: WARNING: installing an image whose signature did not verify, as oci.verify=warn says"
            );
            return Ok(Outcome::Unverified(message));
        }
        Err(classified(
            Failure::Verification,
            anyhow!("{message}; nothing was written"),
        ))
    }

    /// Every signature for `digest` in both layouts, each accepted or with why not. Registry
    /// failures (other than "not there") are errors: they are not evidence either way.
    fn findings(&self, registry: &Registry, digest: &Digest) -> Result<Vec<Finding>> {
        let mut findings = legacy::findings(registry, digest, &self.keys)?;
        findings.extend(bundle::findings(registry, digest, &self.keys)?);
        Ok(findings)
    }
}

/// A layer of a signature manifest or an artifact: what it holds, where, and (legacy) the
/// signature over it.
#[derive(serde::Deserialize, Clone)]
struct Layer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

/// Fetches the blob `layer` names (`what` it is: "payload", "bundle"), checked against its
/// digest, at most [`MAX_SIGNATURE_BLOB`] bytes. A blob that is not as the layer says is
/// evidence against the signature (`Ok(Err(why))`); a network failure is not evidence either
/// way (`Err`).
fn read_layer_blob(
    registry: &Registry,
    layer: &Layer,
    what: &str,
) -> Result<Result<Vec<u8>, String>> {
    let Ok(digest) = layer.digest.parse::<Digest>() else {
        return Ok(Err(format!(
            "malformed signature: the {what} layer's digest is not a digest"
        )));
    };
    match read_small_blob(registry, &digest, Some(layer.size), MAX_SIGNATURE_BLOB) {
        Ok(blob) => Ok(Ok(blob)),
        Err(error) if failure_of(&error) == Some(Failure::Verification) => Ok(Err(format!(
            "the {what} is not as its layer says ({error:#})"
        ))),
        Err(error) => Err(error),
    }
}

/// The key among `keys` whose ECDSA P-256/SHA-256 signature `der` (ASN.1 DER) is over
/// `message`.
fn signed_by<'k>(
    keys: &'k [PublicKey],
    message: &[u8],
    der: &[u8],
) -> Result<&'k PublicKey, String> {
    let signature = Signature::from_der(der)
        .map_err(|_| "malformed signature: not an ECDSA signature (ASN.1 DER)".to_string())?;
    keys.iter()
        .find(|key| key.key.verify(message, &signature).is_ok())
        .ok_or_else(|| "signed by another key, or the signed payload was changed".to_string())
}

/// Decodes a base64 signature.
fn decode_signature(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "malformed signature: not base64".to_string())
}
