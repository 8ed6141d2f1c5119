//! Cosign's legacy layout (sigstore/cosign `specs/SIGNATURE_SPEC.md`): the signatures of
//! manifest `sha256:HEX` are the layers of the manifest at tag `sha256-HEX.sig` in the same
//! repository. Each layer of type simple signing is a payload blob naming the signed digest,
//! with the base64 DER ECDSA signature over the payload's bytes in an annotation.

use serde::Deserialize;

use super::keys::PublicKey;
use super::{
    Accepted, COSIGN_SIGN_PREDICATE, COSIGN_SIGNATURE_TYPE, Finding, Layer, SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING, decode_signature, newest, read_layer_blob, signed_by,
};
use crate::digest::Digest;
use crate::registry::Registry;

/// The tag the signatures of `digest` are at: `sha256-HEX.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}-{}.sig", digest.algorithm().name(), digest.hex())
}

#[derive(Deserialize)]
struct SignatureManifest {
    #[serde(default)]
    layers: Vec<Layer>,
}

/// The legacy signatures of `digest`, checked against `keys`, newest first, up to the first
/// that verifies.
pub(super) fn findings(registry: &Registry, digest: &Digest, keys: &[PublicKey]) -> Vec<Finding> {
    let tag = signature_tag(digest);
    let manifest = match registry.manifest_if_any(&tag, None) {
        Ok(Some(manifest)) => manifest,
        Ok(None) => return Vec::new(),
        Err(error) => {
            return vec![Finding::from_error(
                &format!("the signature manifest at tag {tag}"),
                &error,
            )];
        }
    };
    let Ok(manifest) = serde_json::from_slice::<SignatureManifest>(&manifest.body) else {
        return vec![Finding::Refused(format!(
            "malformed signature: the manifest at tag {tag} is not a signature manifest"
        ))];
    };
    let layers: Vec<&Layer> = manifest
        .layers
        .iter()
        .filter(|layer| layer.media_type == SIMPLE_SIGNING)
        .collect();
    if layers.is_empty() {
        return vec![Finding::Refused(format!(
            "malformed signature: the manifest at tag {tag} has no {SIMPLE_SIGNING} layer"
        ))];
    }
    let (layers, skipped) = newest(layers, &format!("at tag {tag}"));
    let mut findings: Vec<Finding> = skipped.into_iter().collect();
    for layer in layers {
        let finding = check_layer(registry, digest, keys, layer);
        let accepted = matches!(finding, Finding::Accepted(_));
        findings.push(finding);
        if accepted {
            break;
        }
    }
    findings
}

/// One signature layer: its payload fetched and matched to its digest, its signature checked
/// against the keys, then what the payload says.
fn check_layer(registry: &Registry, digest: &Digest, keys: &[PublicKey], layer: &Layer) -> Finding {
    let Some(signature) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
        return Finding::Refused(format!(
            "malformed signature: a payload layer without the {SIGNATURE_ANNOTATION} annotation"
        ));
    };
    let signature = match decode_signature(signature) {
        Ok(signature) => signature,
        Err(reason) => return Finding::Refused(reason),
    };
    let payload = match read_layer_blob(registry, layer, "payload") {
        Ok(payload) => payload,
        Err(finding) => return finding,
    };
    let key = match signed_by(keys, &payload, &signature) {
        Ok(key) => key,
        Err(reason) => return Finding::Refused(reason),
    };
    match check_payload(&payload, digest) {
        Ok(()) => Finding::Accepted(Accepted {
            key: key.label.clone(),
            layout: "legacy",
        }),
        Err(reason) => Finding::Refused(reason),
    }
}

/// Checks a signed simple-signing payload: a cosign signature naming `digest`.
pub(super) fn check_payload(payload: &[u8], digest: &Digest) -> Result<(), String> {
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|_| "malformed signature: the signed payload is not JSON".to_string())?;
    let critical = &value["critical"];
    let kind = critical["type"].as_str().unwrap_or("");
    if kind != COSIGN_SIGNATURE_TYPE && kind != COSIGN_SIGN_PREDICATE {
        return Err(format!(
            "the signed payload's type is {kind:?}, not {COSIGN_SIGNATURE_TYPE:?}"
        ));
    }
    let named = manifest_digest(&critical["image"])
        .ok_or_else(|| "malformed signature: the signed payload names no digest".to_string())?;
    if named != digest.to_string() {
        return Err(format!(
            "the signature is for {named}, not for this manifest"
        ));
    }
    Ok(())
}

/// `docker-manifest-digest`; cosign's Go reader matches the key's case loosely (the spec's
/// example writes `Docker-manifest-digest`), so one key in another case is taken too.
fn manifest_digest(image: &serde_json::Value) -> Option<String> {
    let object = image.as_object()?;
    if let Some(value) = object.get("docker-manifest-digest") {
        return value.as_str().map(str::to_string);
    }
    let mut loose = object
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case("docker-manifest-digest"));
    match (loose.next(), loose.next()) {
        (Some((_, value)), None) => value.as_str().map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        format!("sha256:{}", "ab".repeat(32)).parse().unwrap()
    }

    #[test]
    fn the_tag_of_a_digest() {
        assert_eq!(
            signature_tag(&digest()),
            format!("sha256-{}.sig", "ab".repeat(32))
        );
    }

    #[test]
    fn payloads() {
        let d = digest();
        let payload = |kind: &str, key: &str, named: &str| {
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"r/x"}},"image":{{"{key}":"{named}"}},"type":"{kind}"}},"optional":null}}"#
            )
        };
        let good = payload(
            COSIGN_SIGNATURE_TYPE,
            "docker-manifest-digest",
            &d.to_string(),
        );
        assert_eq!(check_payload(good.as_bytes(), &d), Ok(()));
        let capital = payload(
            COSIGN_SIGNATURE_TYPE,
            "Docker-manifest-digest",
            &d.to_string(),
        );
        assert_eq!(check_payload(capital.as_bytes(), &d), Ok(()));
        let other = format!("sha256:{}", "cd".repeat(32));
        let e = check_payload(
            payload(COSIGN_SIGNATURE_TYPE, "docker-manifest-digest", &other).as_bytes(),
            &d,
        )
        .unwrap_err();
        assert!(e.contains(&format!("is for {other}")), "{e}");
        let e = check_payload(
            payload(
                "atomic container signature",
                "docker-manifest-digest",
                &d.to_string(),
            )
            .as_bytes(),
            &d,
        )
        .unwrap_err();
        assert!(e.contains("type is"), "{e}");
        assert!(
            check_payload(b"not json", &d)
                .unwrap_err()
                .contains("not JSON")
        );
    }
}
