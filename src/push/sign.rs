//! `push --sign-key`: signs what was pushed in cosign's legacy layout (see
//! [`crate::signature::legacy`]), so that cosign verifies it and `oci.verify.key=` accepts it:
//! a simple-signing payload naming the manifest digest, its ECDSA P-256 signature in the layer's
//! annotation, in the manifest at tag `sha256-HEX.sig`. Signatures already there are kept.

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use oci_spec::distribution::Reference;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::json;

use super::canonical_json;
use super::session::Session;
use crate::digest::Digest;
use crate::registry::manifest::media_type::OCI_MANIFEST;
use crate::signature::legacy::signature_tag;
use crate::signature::{COSIGN_SIGNATURE_TYPE, SIGNATURE_ANNOTATION, SIMPLE_SIGNING};

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The simple-signing payload cosign signs for `digest` in `repository` (`REGISTRY/REPO`).
pub fn payload(repository: &str, digest: &Digest) -> Vec<u8> {
    let value = json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": COSIGN_SIGNATURE_TYPE,
        },
        "optional": null,
    });
    // A map of plain strings always serializes.
    serde_json::to_vec(&value).unwrap_or_default()
}

/// Signs `digest` (a manifest in `reference`'s repository) and pushes the signature; returns
/// the signature's tag.
pub(super) async fn sign(
    session: &Session,
    reference: &Reference,
    key: &SigningKey,
    digest: &Digest,
    config_digest: &str,
) -> Result<String> {
    let repository = format!("{}/{}", reference.registry(), reference.repository());
    let payload = payload(&repository, digest);
    let signature: Signature = key.sign(&payload);
    let signature = STANDARD.encode(signature.to_der().as_bytes());
    let payload_size = payload.len() as u64;
    let payload_digest = session
        .upload_blob(reference, payload, "the signature payload")
        .await?;
    let tag = signature_tag(digest);
    let at_tag = Reference::with_tag(
        reference.registry().to_string(),
        reference.repository().to_string(),
        tag.clone(),
    );
    let layer = json!({
        "mediaType": SIMPLE_SIGNING,
        "digest": payload_digest,
        "size": payload_size,
        "annotations": {SIGNATURE_ANNOTATION: signature},
    });
    // Other signatures of the same manifest (other keys, earlier pushes) stay.
    let mut layers = session
        .pull_manifest(
            &at_tag,
            &[OCI_MANIFEST],
            &format!("reading the signatures at {at_tag}"),
        )
        .await?
        .and_then(|(body, _)| {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|m| m["layers"].as_array().cloned())
        })
        .unwrap_or_default();
    layers.retain(|l| l != &layer);
    layers.push(layer);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": super::EMPTY_CONFIG.len()},
        "layers": layers,
    });
    let body = canonical_json(&manifest).context("encoding the signature manifest")?;
    session.push_manifest(&at_tag, body, OCI_MANIFEST).await?;
    Ok(tag)
}
