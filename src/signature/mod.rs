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

/// What one place a signature may be in says.
enum Finding {
    /// A signature by one of the keys over the digest.
    Accepted(Accepted),
    /// Evidence against: a signature that does not verify, or is not for this digest.
    Refused(String),
    /// A lookup that failed (the registry or the network): evidence of nothing, either way.
    Unread(String),
}

impl Finding {
    /// A lookup's failure: evidence against when what was read is not as it must be (a
    /// digest that does not match, a manifest over the limit), else a lookup that failed.
    fn from_error(what: &str, error: &anyhow::Error) -> Finding {
        if failure_of(error) == Some(Failure::Verification) {
            Finding::Refused(format!("{what} is not as it must be ({error:#})"))
        } else {
            Finding::Unread(format!("{what} could not be read ({error:#})"))
        }
    }
}

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

    /// Checks that a signature by one of the keys covers what `resolution` names. One valid
    /// signature, in either layout, over either digest, is enough; a lookup that failed
    /// somewhere is only a reason, given when nothing valid was found. Fails saying what was
    /// found (verification, exit 4; exit 3 when some lookup failed, since trying again may
    /// find a valid one), unless only warning.
    pub fn check(&self, registry: &Registry, resolution: &Resolution) -> Result<Outcome> {
        let mut candidates = vec![&resolution.manifest];
        candidates.extend(&resolution.platform_manifest);
        let mut reasons = Vec::new();
        let mut unread = false;
        for digest in candidates {
            let mut found_any = false;
            for layout in [legacy::findings, bundle::findings] {
                for finding in layout(registry, digest, &self.keys) {
                    found_any = true;
                    let reason = match finding {
                        Finding::Accepted(accepted) => {
                            let what = format!(
                                "{digest} signed by {} (cosign {} layout)",
                                accepted.key, accepted.layout
                            );
                            say!("ocidd: signature verified: {what}");
                            return Ok(Outcome::Verified(what));
                        }
                        Finding::Refused(reason) => reason,
                        Finding::Unread(reason) => {
                            unread = true;
                            reason
                        }
                    };
                    let reason = format!("{digest}: {reason}");
                    if !reasons.contains(&reason) {
                        reasons.push(reason);
                    }
                }
            }
            if !found_any {
                reasons.push(format!(
                    "{digest}: unsigned (no signature in either layout)"
                ));
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
        let failure = if unread {
            Failure::Registry
        } else {
            Failure::Verification
        };
        Err(classified(
            failure,
            anyhow!("{message}; nothing was written"),
        ))
    }
}

/// The newest [`MAX_SIGNATURES`] of `candidates` (cosign appends, so the last are the
/// newest), newest first; and, when there were more, the reason that says what was skipped
/// (`place`: where they are).
fn newest<T>(candidates: Vec<T>, place: &str) -> (Vec<T>, Option<Finding>) {
    let skipped = candidates.len().saturating_sub(MAX_SIGNATURES);
    let newest: Vec<T> = candidates.into_iter().rev().take(MAX_SIGNATURES).collect();
    let note = (skipped > 0).then(|| {
        Finding::Refused(format!(
            "{skipped} older signature{} {place} were not looked at (only the newest {MAX_SIGNATURES} are)",
            if skipped == 1 { "" } else { "s" }
        ))
    });
    (newest, note)
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
/// digest, at most [`MAX_SIGNATURE_BLOB`] bytes; or what that says about the signature.
fn read_layer_blob(registry: &Registry, layer: &Layer, what: &str) -> Result<Vec<u8>, Finding> {
    let Ok(digest) = layer.digest.parse::<Digest>() else {
        return Err(Finding::Refused(format!(
            "malformed signature: the {what} layer's digest is not a digest"
        )));
    };
    read_small_blob(registry, &digest, Some(layer.size), MAX_SIGNATURE_BLOB)
        .map_err(|error| Finding::from_error(&format!("the {what} {digest}"), &error))
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
