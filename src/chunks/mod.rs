//! The chunk index: how `ocidd push` lays out an image so that it installs on all cores.
//!
//! The image layer stays one ordinary compressed stream (gzip members or zstd frames back to
//! back, which `gunzip`, `zstd -d` and the original pipeline read unchanged), but each member
//! or frame holds one fixed-size chunk of the image, compressed on its own. A second layer,
//! the chunk index, says where each chunk's compressed bytes are and which chunks are all
//! zeros. With it, install fetches ranges concurrently, decompresses chunks in parallel, writes
//! each in place, and neither decompresses nor writes the zero chunks (the target is zeroed
//! there by the device). Without it, install reads the stream in order.
//!
//! Version 2 of the index adds each chunk's SHA-256 (of its uncompressed bytes), which makes
//! each chunk verifiable on its own: an install checks every chunk before writing it, and
//! `dd.delta` reads the target, hashes it, and fetches only the chunks that differ. Version 1
//! indexes (no `version` field, no digests) keep working; older ocidd reads version 2 as
//! version 1, ignoring the digests.

use anyhow::{Result, anyhow};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Classify, Failure};
use crate::fail;

/// Chunk size `ocidd push` uses unless told otherwise.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// The smallest chunk `ocidd push --chunk-size` makes: smaller ones cost more in range
/// requests and index size than they gain.
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;
/// Index layers larger than this are refused before they are read.
pub const MAX_INDEX_SIZE: u64 = 16 << 20;
/// The largest chunk an install accepts (and `ocidd push --chunk-size` makes): workers hold a
/// chunk each, so this bounds the install's memory.
pub const MAX_CHUNK_SIZE: u64 = 64 << 20;

/// The most compressed bytes a chunk of `size` bytes can honestly need: incompressible data
/// grows by a few bytes per stored block in gzip (per raw block in zstd), plus headers.
fn max_compressed_length(size: u64) -> u64 {
    size + size / 64 + (64 << 10)
}

/// The index version `ocidd push` writes.
pub const INDEX_VERSION: u32 = 2;

/// The SHA-256 of a chunk's uncompressed bytes, written `sha256:HEX` in the index.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChunkDigest(pub [u8; 32]);

impl ChunkDigest {
    pub fn of(data: &[u8]) -> ChunkDigest {
        use sha2::Digest as _;
        ChunkDigest(sha2::Sha256::digest(data).into())
    }
}

impl std::fmt::Debug for ChunkDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl Serialize for ChunkDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{self:?}"))
    }
}

impl<'de> Deserialize<'de> for ChunkDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut bytes = [0u8; 32];
        text.strip_prefix("sha256:")
            .and_then(|hex| hex::decode_to_slice(hex, &mut bytes).ok())
            .ok_or_else(|| serde::de::Error::custom("a chunk digest is not sha256:<64 hex>"))?;
        Ok(ChunkDigest(bytes))
    }
}

/// Where one chunk of the image is in the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Offset of its compressed bytes in the blob.
    pub offset: u64,
    /// Length of its compressed bytes.
    pub length: u64,
    /// Its size uncompressed (the chunk size, but for the last chunk).
    pub size: u64,
    /// Whether it is all zeros.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub zero: bool,
    /// The digest of its uncompressed bytes (version 2; none for a zero chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<ChunkDigest>,
}

fn version_1() -> u32 {
    1
}

/// The chunk index layer's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkIndex {
    /// 1: where the chunks are; 2: and their digests.
    #[serde(default = "version_1")]
    pub version: u32,
    /// The digest of the image layer this index describes.
    pub blob: String,
    pub chunk_size: u64,
    pub image_size: u64,
    pub chunks: Vec<Chunk>,
}

impl ChunkIndex {
    /// The bytes of the image outside zero chunks: at most what writing it allocates.
    pub fn data_bytes(&self) -> u64 {
        self.chunks.iter().filter(|c| !c.zero).map(|c| c.size).sum()
    }

    /// Reads an index and checks that it describes `blob` (of `blob_size` bytes) completely:
    /// chunks back to back from offset 0 to the end of the blob, each (but the last) of the
    /// chunk size, adding up to the image size.
    pub fn parse(data: &[u8], blob: &Digest, blob_size: u64) -> Result<ChunkIndex> {
        let index: ChunkIndex = serde_json::from_slice(data)
            .map_err(|e| anyhow!("the chunk index is malformed: {e}"))
            .classify(Failure::Verification)?;
        index.check(blob, blob_size)?;
        Ok(index)
    }

    fn check(&self, blob: &Digest, blob_size: u64) -> Result<()> {
        if self.blob != blob.to_string() {
            fail!(
                Failure::Verification,
                "the chunk index describes blob {}, not the image layer {blob}",
                self.blob
            );
        }
        if self.chunk_size == 0 || self.chunks.is_empty() {
            fail!(Failure::Verification, "the chunk index is empty");
        }
        if !(1..=INDEX_VERSION).contains(&self.version) {
            fail!(
                Failure::Verification,
                "the chunk index is version {}, which this ocidd does not read (it reads 1 to {INDEX_VERSION})",
                self.version
            );
        }
        if self.has_digests()
            && let Some(i) = self
                .chunks
                .iter()
                .position(|c| !c.zero && c.digest.is_none())
        {
            fail!(
                Failure::Verification,
                "the chunk index (version 2) has no digest for chunk {i}"
            );
        }
        if self.chunk_size > MAX_CHUNK_SIZE {
            fail!(
                Failure::Verification,
                "the chunk index's chunk size {} is larger than {MAX_CHUNK_SIZE} bytes",
                self.chunk_size
            );
        }
        let (mut offset, mut size) = (0u64, 0u64);
        let last = self.chunks.len() - 1;
        for (i, chunk) in self.chunks.iter().enumerate() {
            let size_ok = if i == last {
                chunk.size > 0 && chunk.size <= self.chunk_size
            } else {
                chunk.size == self.chunk_size
            };
            let length_ok = chunk.length > 0 && chunk.length <= max_compressed_length(chunk.size);
            if chunk.offset != offset || !length_ok || !size_ok {
                fail!(
                    Failure::Verification,
                    "the chunk index is inconsistent at chunk {i}"
                );
            }
            offset = offset.saturating_add(chunk.length);
            size = size.saturating_add(chunk.size);
        }
        if offset != blob_size || size != self.image_size {
            fail!(
                Failure::Verification,
                "the chunk index covers {offset} of the blob's {blob_size} bytes and {size} of the image's {} bytes",
                self.image_size
            );
        }
        Ok(())
    }

    /// Whether every (non-zero) chunk has its digest: version 2.
    pub fn has_digests(&self) -> bool {
        self.version >= 2
    }

    /// Where chunk `i` goes on the target.
    pub fn image_offset(&self, i: usize) -> u64 {
        i as u64 * self.chunk_size
    }
}

/// Whether `data` is all zeros (fast: compares words).
pub fn is_zero(data: &[u8]) -> bool {
    // SAFETY: u128 has no invalid bit patterns, and align_to only reinterprets the aligned
    // middle of the slice; the unaligned ends are compared bytewise.
    let (head, words, tail) = unsafe { data.align_to::<u128>() };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest::of(crate::digest::Algorithm::Sha256, b"blob")
    }

    fn index(chunks: Vec<Chunk>, image_size: u64) -> ChunkIndex {
        ChunkIndex {
            version: 1,
            blob: digest().to_string(),
            chunk_size: 100,
            image_size,
            chunks,
        }
    }

    fn chunk(offset: u64, length: u64, size: u64) -> Chunk {
        Chunk {
            offset,
            length,
            size,
            zero: false,
            digest: None,
        }
    }

    #[test]
    fn version_2_carries_chunk_digests() {
        let mut v2 = index(vec![chunk(0, 10, 100), chunk(10, 5, 30)], 130);
        v2.version = 2;
        v2.chunks[0].digest = Some(ChunkDigest::of(b"a"));
        v2.chunks[1].digest = Some(ChunkDigest::of(b"b"));
        let json = serde_json::to_string(&v2).unwrap();
        assert!(json.contains(r#""version":2"#), "{json}");
        assert!(
            json.contains(r#""digest":"sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb""#),
            "{json}"
        );
        let parsed = ChunkIndex::parse(json.as_bytes(), &digest(), 15).unwrap();
        assert_eq!(parsed, v2);
        assert!(parsed.has_digests());
        // A version 1 index (no version field) reads as before.
        let v1 = r#"{"blob":"BLOB","chunkSize":100,"imageSize":100,"chunks":[{"offset":0,"length":10,"size":100}]}"#
            .replace("BLOB", &digest().to_string());
        let parsed = ChunkIndex::parse(v1.as_bytes(), &digest(), 10).unwrap();
        assert_eq!(parsed.version, 1);
        assert!(!parsed.has_digests());
        // Version 2 without a digest, a later version, a bad digest: refused.
        v2.chunks[1].digest = None;
        let e = ChunkIndex::parse(&serde_json::to_vec(&v2).unwrap(), &digest(), 15).unwrap_err();
        assert!(format!("{e}").contains("no digest for chunk 1"), "{e}");
        v2.chunks[1].digest = Some(ChunkDigest::of(b"b"));
        v2.version = 3;
        let e = ChunkIndex::parse(&serde_json::to_vec(&v2).unwrap(), &digest(), 15).unwrap_err();
        assert!(format!("{e}").contains("version 3"), "{e}");
        let bad = json.replace("sha256:ca97", "sha256:zz97");
        assert!(ChunkIndex::parse(bad.as_bytes(), &digest(), 15).is_err());
    }

    #[test]
    fn accepts_a_complete_index() {
        let good = index(
            vec![chunk(0, 10, 100), chunk(10, 5, 100), chunk(15, 7, 30)],
            230,
        );
        let json = serde_json::to_vec(&good).unwrap();
        assert_eq!(ChunkIndex::parse(&json, &digest(), 22).unwrap(), good);
        assert_eq!(good.image_offset(2), 200);
    }

    #[test]
    fn refuses_gaps_overlaps_and_other_blobs() {
        let cases = [
            index(vec![chunk(0, 10, 100), chunk(11, 5, 30)], 130), // gap
            index(vec![chunk(0, 10, 100), chunk(9, 5, 30)], 130),  // overlap
            index(vec![chunk(0, 10, 90), chunk(10, 5, 30)], 120),  // short middle chunk
            index(vec![chunk(0, 10, 100), chunk(10, 5, 30)], 131), // wrong image size
            index(vec![chunk(0, 10, 100), chunk(10, 0, 30)], 130), // empty chunk
            index(vec![chunk(0, 10, 100), chunk(10, 70 << 10, 30)], 130), // too long for 30
            index(vec![], 0),
        ];
        for (i, case) in cases.iter().enumerate() {
            let json = serde_json::to_vec(case).unwrap();
            let blob_size = case.chunks.iter().map(|c| c.length).sum::<u64>();
            assert!(
                ChunkIndex::parse(&json, &digest(), blob_size).is_err(),
                "case {i}"
            );
        }
        let good = index(vec![chunk(0, 10, 100)], 100);
        let json = serde_json::to_vec(&good).unwrap();
        assert!(
            ChunkIndex::parse(&json, &digest(), 11).is_err(),
            "blob size"
        );
        let other = Digest::of(crate::digest::Algorithm::Sha256, b"other");
        assert!(ChunkIndex::parse(&json, &other, 10).is_err(), "other blob");
        assert!(ChunkIndex::parse(b"[1,2]", &digest(), 10).is_err());

        // Chunks so large that workers would hold gigabytes.
        let mut huge = index(vec![chunk(0, 10, 1 << 40)], 1 << 40);
        huge.chunk_size = 1 << 40;
        let json = serde_json::to_vec(&huge).unwrap();
        let error = ChunkIndex::parse(&json, &digest(), 10).unwrap_err();
        assert!(format!("{error}").contains("chunk size 1099511627776 is larger"));
    }

    #[test]
    fn zero_detection() {
        let mut data = vec![0u8; 4099];
        assert!(is_zero(&data));
        assert!(is_zero(&data[1..]));
        assert!(is_zero(&[]));
        for i in [0, 7, 2048, 4098] {
            data[i] = 1;
            assert!(!is_zero(&data), "{i}");
            assert!(!is_zero(&data[1..]) || i == 0);
            data[i] = 0;
        }
    }
}
