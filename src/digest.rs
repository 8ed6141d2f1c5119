//! Content digests (`sha256:…`, `sha512:…`) and the running hash that checks them.

use std::fmt;
use std::str::FromStr;

use std::io::{self, Read};

use anyhow::anyhow;
use sha2::Digest as _;

use crate::error::{Failure, classified, io_error};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A content digest as OCI writes it: `algorithm:lowercase-hex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form ALGORITHM:HEX")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported (only sha256 and sha512)")]
    Unsupported(String),
    #[error("{algorithm} digest must be {len} lowercase hex digits")]
    BadHex { algorithm: &'static str, len: usize },
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Malformed(s.to_string()))?;
        let algorithm = match name {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(DigestError::Unsupported(name.to_string())),
        };
        let well_formed = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !well_formed {
            return Err(DigestError::BadHex {
                algorithm: algorithm.name(),
                len: algorithm.hex_len(),
            });
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part, after `ALGORITHM:`.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Checks that `actual`, computed over `what` ("blob", "manifest"), is this digest.
    pub fn check(&self, actual: &Digest, what: &str) -> anyhow::Result<()> {
        if actual == self {
            return Ok(());
        }
        Err(classified(
            Failure::Verification,
            anyhow!("{what} digest mismatch: expected {self}, got {actual}"),
        ))
    }

    /// The digest of `data` computed with `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut hasher = Hasher::new(algorithm);
        hasher.update(data);
        hasher.finish()
    }
}

/// A running hash over a stream, in the algorithm of the digest it will be compared with.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

/// Passes a blob through while hashing it; at its end, checks the size and the digest, so that
/// a reader downstream sees the end of the stream only if the blob verified.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Option<Hasher>,
    expected: Digest,
    expected_size: Option<u64>,
    size: u64,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: Digest, expected_size: Option<u64>) -> Self {
        VerifyingReader {
            inner,
            hasher: Some(Hasher::new(expected.algorithm())),
            expected,
            expected_size,
            size: 0,
        }
    }

    /// True once the whole blob was read and matched its digest.
    pub fn verified(&self) -> bool {
        self.hasher.is_none()
    }

    fn check(&mut self) -> io::Result<()> {
        let Some(hasher) = self.hasher.take() else {
            return Ok(());
        };
        if let Some(expected) = self.expected_size
            && self.size != expected
        {
            return Err(io_error(
                Failure::Verification,
                anyhow!(
                    "blob size mismatch: expected {expected} bytes, got {}",
                    self.size
                ),
            ));
        }
        self.expected
            .check(&hasher.finish(), "blob")
            .map_err(|e| io_error(Failure::Verification, e))
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.hasher.is_none() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.check()?;
            return Ok(0);
        }
        self.size += n as u64;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let text = format!("sha256:{}", "ab".repeat(32));
        let digest: Digest = text.parse().unwrap();
        assert_eq!(digest.to_string(), text);
        let text = format!("sha512:{}", "0f".repeat(64));
        assert_eq!(text.parse::<Digest>().unwrap().to_string(), text);
    }

    #[test]
    fn rejects_bad_digests() {
        assert!(matches!(
            "sha256".parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            format!("md5:{}", "a".repeat(32)).parse::<Digest>(),
            Err(DigestError::Unsupported(_))
        ));
        assert!(matches!(
            format!("sha256:{}", "A".repeat(64)).parse::<Digest>(),
            Err(DigestError::BadHex { .. })
        ));
        assert!(matches!(
            "sha256:abc".parse::<Digest>(),
            Err(DigestError::BadHex { .. })
        ));
    }

    #[test]
    fn verifying_reader_checks_at_the_end() {
        let data = b"disk image bytes";
        let good = Digest::of(Algorithm::Sha256, data);
        let mut out = Vec::new();
        let mut r = VerifyingReader::new(&data[..], good.clone(), Some(data.len() as u64));
        r.read_to_end(&mut out).unwrap();
        assert!(r.verified());
        assert_eq!(out, data);

        let bad = Digest::of(Algorithm::Sha256, b"other");
        let e = VerifyingReader::new(&data[..], bad, None)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("blob digest mismatch"), "{e}");
        let e = VerifyingReader::new(&data[..], good, Some(3))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("blob size mismatch"), "{e}");
    }

    #[test]
    fn hashes_known_values() {
        assert_eq!(
            Digest::of(Algorithm::Sha256, b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(
            h.finish().to_string(),
            "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }
}
