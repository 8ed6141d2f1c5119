//! The keys: `oci.verify.key=` (a PEM public key file, or `b64:` and the base64 of its DER
//! SubjectPublicKeyInfo, short enough for a kernel command line) and `push --sign-key` (an
//! unencrypted PEM private key). ECDSA P-256, what `cosign generate-key-pair` makes.

use std::path::Path;

use anyhow::{Result, anyhow};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};

use crate::digest::{Algorithm, Digest};
use crate::error::{Classify, Failure};

/// A key that may sign, and how the console names it.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub key: VerifyingKey,
    /// The file it came from, or `inline key sha256:…` (of its DER) for a `b64:` one.
    pub label: String,
}

/// Parses an inline `b64:` key; the error says why, without repeating the text.
pub fn parse_inline(text: &str) -> Result<PublicKey, String> {
    let encoded = text
        .strip_prefix("b64:")
        .ok_or_else(|| "not b64:<base64 DER public key>".to_string())?;
    let der = STANDARD
        .decode(encoded.trim())
        .map_err(|e| format!("the base64 after b64: is not valid ({e})"))?;
    let key = VerifyingKey::from_public_key_der(&der)
        .map_err(|_| "not an ECDSA P-256 public key (DER SubjectPublicKeyInfo)".to_string())?;
    Ok(PublicKey {
        key,
        label: format!("inline key {}", fingerprint(&der)),
    })
}

/// Reads `oci.verify.key=`'s value: `b64:…` inline, else a PEM file's path.
pub fn read_public_key(value: &str) -> Result<PublicKey> {
    if value.starts_with("b64:") {
        return parse_inline(value)
            .map_err(|e| anyhow!("invalid oci.verify.key: {e}"))
            .classify(Failure::Usage);
    }
    let path = Path::new(value);
    let text = std::fs::read(path)
        .map_err(|e| anyhow!("reading the verify key {}: {e}", path.display()))
        .classify(Failure::Usage)?;
    parse_public_key_pem(&text, path)
}

/// The PEM public key file `path` holds `text`.
pub fn parse_public_key_pem(text: &[u8], path: &Path) -> Result<PublicKey> {
    let key = std::str::from_utf8(text)
        .ok()
        .and_then(|text| VerifyingKey::from_public_key_pem(text.trim()).ok())
        .ok_or_else(|| {
            anyhow!(
                "the verify key {} is not a PEM ECDSA P-256 public key (-----BEGIN PUBLIC KEY-----, as cosign.pub)",
                path.display()
            )
        })
        .classify(Failure::Usage)?;
    Ok(PublicKey {
        key,
        label: path.display().to_string(),
    })
}

/// Reads a PEM private key for signing: PKCS#8 (`BEGIN PRIVATE KEY`, `openssl genpkey`) or
/// SEC1 (`BEGIN EC PRIVATE KEY`, `openssl ecparam -genkey`), P-256, unencrypted.
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("reading the signing key {}: {e}", path.display()))
        .classify(Failure::Usage)?;
    let text = text.trim();
    if text.contains("ENCRYPTED") {
        return Err(anyhow!(
            "the signing key {} is encrypted (a cosign key?); give an unencrypted PEM P-256 key (openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256), which `cosign import-key-pair` also takes",
            path.display()
        ))
        .classify(Failure::Usage);
    }
    let key = if text.starts_with("-----BEGIN EC PRIVATE KEY-----") {
        p256::SecretKey::from_sec1_pem(text).map(SigningKey::from)
    } else {
        SigningKey::from_pkcs8_pem(text).map_err(|_| p256::elliptic_curve::Error)
    };
    key.map_err(|_| {
        anyhow!(
            "the signing key {} is not a PEM ECDSA P-256 private key",
            path.display()
        )
    })
    .classify(Failure::Usage)
}

/// The DER SubjectPublicKeyInfo of `key`, as `b64:` takes it.
pub fn public_key_der(key: &VerifyingKey) -> Result<Vec<u8>> {
    Ok(key
        .to_public_key_der()
        .map_err(|e| anyhow!("encoding the public key: {e}"))?
        .as_bytes()
        .to_vec())
}

/// A short name for a key: the start of the digest of its DER.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Digest::of(Algorithm::Sha256, der).to_string();
    format!("{}…", &digest[..19])
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::{EncodePrivateKey, LineEnding};

    fn key() -> SigningKey {
        SigningKey::from_slice(&[7u8; 32]).unwrap()
    }

    #[test]
    fn inline_and_pem_keys() {
        let signing = key();
        let der = public_key_der(signing.verifying_key()).unwrap();
        let inline = format!("b64:{}", STANDARD.encode(&der));
        // About 124 characters: it fits a kernel command line.
        assert!(inline.len() < 130, "{}", inline.len());
        let parsed = parse_inline(&inline).unwrap();
        assert_eq!(parsed.key, *signing.verifying_key());
        assert!(parsed.label.starts_with("inline key sha256:"));

        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("cosign.pub");
        std::fs::write(
            &pem,
            signing
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
        .unwrap();
        let from_file = read_public_key(pem.to_str().unwrap()).unwrap();
        assert_eq!(from_file.key, *signing.verifying_key());

        let private = dir.path().join("key.pem");
        std::fs::write(
            &private,
            signing.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        assert_eq!(read_signing_key(&private).unwrap(), signing);
    }

    #[test]
    fn bad_keys() {
        for (text, says) in [
            ("b64:!!", "base64"),
            ("b64:AAAA", "not an ECDSA P-256 public key"),
            ("key.pem", "not b64:"),
        ] {
            assert!(parse_inline(text).unwrap_err().contains(says), "{text}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.pem");
        std::fs::write(
            &file,
            "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAA\n",
        )
        .unwrap();
        let e = format!("{:#}", read_signing_key(&file).unwrap_err());
        assert!(e.contains("is encrypted"), "{e}");
        std::fs::write(&file, "hello").unwrap();
        let e = format!("{:#}", read_public_key(file.to_str().unwrap()).unwrap_err());
        assert!(e.contains("not a PEM ECDSA P-256 public key"), "{e}");
        let e = format!("{:#}", read_public_key("/nonexistent/k.pub").unwrap_err());
        assert!(
            e.contains("reading the verify key /nonexistent/k.pub"),
            "{e}"
        );
    }
}
