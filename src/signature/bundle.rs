//! Cosign's bundle layout (sigstore/cosign `specs/BUNDLE_SPEC.md`, newer cosign's default):
//! each signature is an OCI 1.1 artifact whose `subject` is the signed manifest and whose one
//! layer is a Sigstore bundle. The artifacts are found through the referrers API, or, where a
//! registry has none, through the referrers tag `sha256-HEX`. The bundle's DSSE envelope is
//! signed over PAE(payloadType, payload), and the payload is an in-toto statement whose subject
//! is the manifest's digest.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::keys::PublicKey;
use super::{
    Accepted, BUNDLE, COSIGN_SIGN_PREDICATE, Finding, IN_TOTO, Layer, MAX_SIGNATURES,
    decode_signature, newest, read_layer_blob, signed_by,
};
use crate::digest::Digest;
use crate::registry::Registry;

/// The tag a registry without the referrers API lists the referrers of `digest` at.
pub fn referrers_tag(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm().name(), digest.hex())
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    digest: String,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
}

#[derive(Deserialize)]
struct ArtifactManifest {
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    subject: Option<Subject>,
    #[serde(default)]
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Subject {
    digest: String,
}

#[derive(Deserialize)]
struct Bundle {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(rename = "dsseEnvelope")]
    dsse_envelope: Option<Envelope>,
    #[serde(rename = "messageSignature")]
    message_signature: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Envelope {
    payload: String,
    #[serde(rename = "payloadType")]
    payload_type: String,
    #[serde(default)]
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

/// The bundle signatures of `digest`, checked against `keys`, up to the first that
/// verifies. The referrers API lists them; where it fails or is missing, the referrers tag
/// is read too (registries without the API answer 404, 400, 401, 403, 405 or 501).
pub(super) fn findings(registry: &Registry, digest: &Digest, keys: &[PublicKey]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut listings = Vec::new();
    match registry.referrers(digest) {
        Ok(Some(listing)) => listings.push(("the referrers API", listing)),
        Ok(None) => {}
        Err(error) => findings.push(Finding::from_error("the referrers API's list", &error)),
    }
    if listings.is_empty() {
        let tag = referrers_tag(digest);
        match registry.manifest_if_any(&tag, None) {
            Ok(Some(manifest)) => listings.push(("the referrers tag", manifest.body)),
            Ok(None) => {}
            Err(error) => findings.push(Finding::from_error(
                &format!("the referrers list at tag {tag}"),
                &error,
            )),
        }
    }
    for (place, listing) in listings {
        let Ok(index) = serde_json::from_slice::<Index>(&listing) else {
            findings.push(Finding::Refused(format!(
                "malformed signature: {place}'s list is not an image index"
            )));
            continue;
        };
        // Entries that say another artifact type are not signatures; ones that say none may be.
        let entries: Vec<&Entry> = index
            .manifests
            .iter()
            .filter(|e| e.artifact_type.as_deref().is_none_or(|t| t == BUNDLE))
            .collect();
        let (entries, skipped) = newest(entries, &format!("in {place}'s list"));
        findings.extend(skipped);
        for entry in entries {
            let Some(finding) = check_referrer(registry, digest, keys, &entry.digest) else {
                continue;
            };
            let accepted = matches!(finding, Finding::Accepted(_));
            findings.push(finding);
            if accepted {
                return findings;
            }
        }
    }
    findings
}

/// One referrer: `None` if it is not a Sigstore bundle at all.
fn check_referrer(
    registry: &Registry,
    digest: &Digest,
    keys: &[PublicKey],
    referrer: &str,
) -> Option<Finding> {
    let Ok(referrer) = referrer.parse::<Digest>() else {
        return Some(Finding::Refused(
            "malformed signature: a referrer's digest is not a digest".to_string(),
        ));
    };
    let manifest = match registry.manifest_if_any(&referrer.to_string(), Some(&referrer)) {
        Ok(Some(manifest)) => manifest,
        Ok(None) => {
            return Some(Finding::Refused(format!(
                "the referrer {referrer} is listed but missing"
            )));
        }
        Err(error) => {
            return Some(Finding::from_error(
                &format!("the referrer {referrer}"),
                &error,
            ));
        }
    };
    let Ok(manifest) = serde_json::from_slice::<ArtifactManifest>(&manifest.body) else {
        return Some(Finding::Refused(format!(
            "malformed signature: the referrer {referrer} is not an artifact manifest"
        )));
    };
    let layer = manifest.layers.first().filter(|l| l.media_type == BUNDLE)?;
    if manifest
        .artifact_type
        .as_deref()
        .is_some_and(|t| t != BUNDLE)
    {
        return None;
    }
    // The listing is only a hint: the artifact itself must say what it signs.
    if manifest.subject.as_ref().map(|s| s.digest.as_str()) != Some(&digest.to_string()) {
        return Some(Finding::Refused(format!(
            "the bundle {referrer} is attached to another manifest"
        )));
    }
    let bundle = match read_layer_blob(registry, layer, "bundle") {
        Ok(bundle) => bundle,
        Err(finding) => return Some(finding),
    };
    Some(match check_bundle(&bundle, digest, keys) {
        Ok(key) => Finding::Accepted(Accepted {
            key: key.label.clone(),
            layout: "bundle",
        }),
        Err(reason) => Finding::Refused(reason),
    })
}

/// Checks a bundle's DSSE envelope against `keys` and its statement against `digest`.
pub(super) fn check_bundle<'k>(
    bundle: &[u8],
    digest: &Digest,
    keys: &'k [PublicKey],
) -> Result<&'k PublicKey, String> {
    let bundle: Bundle = serde_json::from_slice(bundle)
        .map_err(|_| "malformed signature: the bundle is not a Sigstore bundle".to_string())?;
    if !bundle
        .media_type
        .as_deref()
        .is_some_and(|t| t.starts_with("application/vnd.dev.sigstore.bundle"))
    {
        return Err(
            "malformed signature: the bundle has no Sigstore bundle media type".to_string(),
        );
    }
    let Some(envelope) = bundle.dsse_envelope else {
        return Err(if bundle.message_signature.is_some() {
            "a message-signature bundle (cosign sign-blob), not an image signature statement"
                .to_string()
        } else {
            "malformed signature: the bundle has no DSSE envelope".to_string()
        });
    };
    let payload = STANDARD
        .decode(envelope.payload.trim())
        .map_err(|_| "malformed signature: the envelope's payload is not base64".to_string())?;
    let message = pae(&envelope.payload_type, &payload);
    let mut last = "malformed signature: the envelope has no signatures".to_string();
    let mut signer = None;
    for signature in envelope.signatures.iter().take(MAX_SIGNATURES) {
        let der = match decode_signature(&signature.sig) {
            Ok(der) => der,
            Err(reason) => {
                last = reason;
                continue;
            }
        };
        match signed_by(keys, &message, &der) {
            Ok(key) => {
                signer = Some(key);
                break;
            }
            Err(reason) => last = reason,
        }
    }
    let key = signer.ok_or(last)?;
    if envelope.payload_type != IN_TOTO {
        return Err(format!(
            "the envelope's payload type is {:?}, not {IN_TOTO}",
            envelope.payload_type
        ));
    }
    check_statement(&payload, digest)?;
    Ok(key)
}

/// DSSE's pre-authentication encoding: what the envelope's signatures are over.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut message = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    message.extend_from_slice(payload);
    message
}

/// Checks a signed in-toto statement: cosign's image signature, with `digest` as a subject.
fn check_statement(statement: &[u8], digest: &Digest) -> Result<(), String> {
    let value: serde_json::Value = serde_json::from_slice(statement)
        .map_err(|_| "malformed signature: the signed statement is not JSON".to_string())?;
    let kind = value["_type"].as_str().unwrap_or("");
    if !kind.starts_with("https://in-toto.io/Statement/") {
        return Err(format!(
            "the signed payload is not an in-toto statement ({kind:?})"
        ));
    }
    let predicate = value["predicateType"].as_str().unwrap_or("");
    if predicate != COSIGN_SIGN_PREDICATE {
        return Err(format!(
            "the signed statement is a {predicate:?} attestation, not a cosign signature ({COSIGN_SIGN_PREDICATE})"
        ));
    }
    let algorithm = digest.algorithm().name();
    let subjects: Vec<&str> = value["subject"]
        .as_array()
        .map(|subjects| {
            subjects
                .iter()
                .filter_map(|s| s["digest"][algorithm].as_str())
                .collect()
        })
        .unwrap_or_default();
    if subjects.contains(&digest.hex()) {
        return Ok(());
    }
    match subjects.first() {
        Some(other) => Err(format!(
            "the signature is for {algorithm}:{other}, not for this manifest"
        )),
        None => Err("malformed signature: the signed statement names no digest".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};

    fn digest() -> Digest {
        format!("sha256:{}", "ab".repeat(32)).parse().unwrap()
    }

    fn statement(predicate: &str, hex: &str) -> Vec<u8> {
        format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"r/x","digest":{{"sha256":"{hex}"}}}}],"predicateType":"{predicate}","predicate":{{}}}}"#
        )
        .into_bytes()
    }

    fn bundle(key: &SigningKey, payload_type: &str, payload: &[u8]) -> Vec<u8> {
        let signature: Signature = key.sign(&pae(payload_type, payload));
        format!(
            r#"{{"mediaType":"{BUNDLE}","verificationMaterial":{{"publicKey":{{"hint":"x"}}}},"dsseEnvelope":{{"payload":"{}","payloadType":"{payload_type}","signatures":[{{"sig":"{}","keyid":""}}]}}}}"#,
            STANDARD.encode(payload),
            STANDARD.encode(signature.to_der().as_bytes())
        )
        .into_bytes()
    }

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(pae("t/x", b"hello"), b"DSSEv1 3 t/x 5 hello");
    }

    #[test]
    fn bundles() {
        let signer = SigningKey::from_slice(&[9u8; 32]).unwrap();
        let other = SigningKey::from_slice(&[8u8; 32]).unwrap();
        let keys = [PublicKey {
            key: *signer.verifying_key(),
            label: "k".into(),
        }];
        let d = digest();
        let good = statement(COSIGN_SIGN_PREDICATE, d.hex());
        assert!(check_bundle(&bundle(&signer, IN_TOTO, &good), &d, &keys).is_ok());
        let e = check_bundle(&bundle(&other, IN_TOTO, &good), &d, &keys).unwrap_err();
        assert!(e.contains("another key"), "{e}");
        let elsewhere = statement(COSIGN_SIGN_PREDICATE, &"cd".repeat(32));
        let e = check_bundle(&bundle(&signer, IN_TOTO, &elsewhere), &d, &keys).unwrap_err();
        assert!(e.contains("is for sha256:cdcd"), "{e}");
        let sbom = statement("https://spdx.dev/Document", d.hex());
        let e = check_bundle(&bundle(&signer, IN_TOTO, &sbom), &d, &keys).unwrap_err();
        assert!(e.contains("attestation"), "{e}");
        let e = check_bundle(b"{}", &d, &keys).unwrap_err();
        assert!(e.contains("malformed"), "{e}");
        // A payload changed after signing.
        let mut tampered = String::from_utf8(bundle(&signer, IN_TOTO, &good)).unwrap();
        let encoded = STANDARD.encode(&good);
        tampered = tampered.replace(&encoded, &STANDARD.encode(&elsewhere));
        let e = check_bundle(tampered.as_bytes(), &d, &keys).unwrap_err();
        assert!(
            e.contains("another key, or the signed payload was changed"),
            "{e}"
        );
    }
}
