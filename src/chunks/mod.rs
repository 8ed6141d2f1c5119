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
//! Version 2 of the index added each chunk's SHA-256 (of its uncompressed bytes), which made
//! each chunk verifiable on its own. Version 3 replaces those with what also ties the chunks
//! to the image: the image's BLAKE3 hash and each chunk's chaining value in BLAKE3's tree (see
//! [`tree`]); an index is read only if its chaining values add up to that hash. Every install
//! checks each chunk before writing it, and `dd.delta` (version 3 only) reads the target,
//! checks each chunk there the same way, and fetches only the chunks that differ. Versions 1
//! (no digests) and 2 keep installing; older ocidd reads version 2 as version 1, and refuses
//! version 3.

pub mod tree;

use anyhow::{Result, anyhow};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Classify, Failure};
use crate::fail;
use tree::{ChunkCv, ImageHash, image_hash, is_tree_chunk_size, zero_cvs};

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
pub const INDEX_VERSION: u32 = 3;

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
    /// Its chaining value in the image's BLAKE3 tree (version 3; none for a zero chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<ChunkCv>,
}

fn version_1() -> u32 {
    1
}

/// The chunk index layer's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkIndex {
    /// 1: where the chunks are; 2: and their SHA-256; 3: their BLAKE3 chaining values and
    /// the image's hash.
    #[serde(default = "version_1")]
    pub version: u32,
    /// The digest of the image layer this index describes.
    pub blob: String,
    pub chunk_size: u64,
    pub image_size: u64,
    /// The BLAKE3 hash of the raw image (version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<ImageHash>,
    pub chunks: Vec<Chunk>,
}

impl ChunkIndex {
    /// The bytes of the image outside zero chunks: at most what writing it allocates.
    pub fn data_bytes(&self) -> u64 {
        self.chunks.iter().filter(|c| !c.zero).map(|c| c.size).sum()
    }

    /// Reads an index and checks that it describes `blob` (of `blob_size` bytes) completely:
    /// chunks back to back from offset 0 to the end of the blob, each (but the last) of the
    /// chunk size, adding up to the image size; and, for version 3, that its chunks' chaining
    /// values add up to the image hash it names.
    pub fn parse(data: &[u8], blob: &Digest, blob_size: u64) -> Result<ChunkIndex> {
        let index: ChunkIndex = serde_json::from_slice(data)
            .map_err(|e| anyhow!("the chunk index is malformed: {e}"))
            .classify(Failure::Verification)?;
        index.check(blob, blob_size)?;
        index.check_tree()?;
        Ok(index)
    }

    /// Version 3: the chaining values, those of the zero chunks computed here, must add up to
    /// the image hash. An image of one chunk has no tree: its bytes are checked against the
    /// hash when they come.
    fn check_tree(&self) -> Result<()> {
        let Some(expected) = self.image_digest.filter(|_| self.has_tree()) else {
            return Ok(());
        };
        let zeros: Vec<(u64, u64)> = self
            .chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.zero)
            .map(|(i, c)| (self.image_offset(i), c.size))
            .collect();
        let mut zero_cvs = zero_cvs(&zeros).into_iter();
        let cvs: Vec<ChunkCv> = self
            .chunks
            .iter()
            .map(|c| match c.cv {
                Some(cv) if !c.zero => Some(cv),
                _ => zero_cvs.next(),
            })
            .collect::<Option<_>>()
            .ok_or_else(|| anyhow!("the chunk index's zero chunks could not be hashed"))
            .classify(Failure::Verification)?;
        match image_hash(&cvs, self.chunk_size, self.image_size) {
            Some(found) if found != expected => fail!(
                Failure::Verification,
                "the chunk index's chunks add up to {found}, not to the image {expected} it names"
            ),
            _ => Ok(()),
        }
    }

    /// Whether `data` is chunk `i` of the image: all zeros for a zero chunk; else, by its
    /// chaining value (version 3; the image hash for an image of one chunk), or its SHA-256
    /// (version 2); anything, for version 1, which says nothing. Every path that decides
    /// whether a chunk is the image's (a chunk fetched, one read from the target) asks here.
    pub fn holds(&self, i: usize, data: &[u8]) -> bool {
        let Some(chunk) = self.chunks.get(i) else {
            return false;
        };
        if data.len() as u64 != chunk.size {
            return false;
        }
        if chunk.zero {
            return is_zero(data);
        }
        match (self.version, chunk.cv, chunk.digest) {
            (3.., _, _) if self.chunks.len() == 1 => self.image_digest == Some(ImageHash::of(data)),
            (3.., Some(cv), _) => ChunkCv::of(data, self.image_offset(i)) == cv,
            (2, _, Some(digest)) => ChunkDigest::of(data) == digest,
            (1, _, _) => true,
            _ => false,
        }
    }

    /// Whether each chunk can be checked on its own against the image it belongs to
    /// (version 3), as `dd.delta` needs.
    pub fn has_tree(&self) -> bool {
        self.version >= 3
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
        let missing = |has: fn(&Chunk) -> bool| self.chunks.iter().position(|c| !c.zero && !has(c));
        if self.version == 2
            && let Some(i) = missing(|c| c.digest.is_some())
        {
            fail!(
                Failure::Verification,
                "the chunk index (version 2) has no digest for chunk {i}"
            );
        }
        if self.has_tree() {
            if !is_tree_chunk_size(self.chunk_size) {
                fail!(
                    Failure::Verification,
                    "the chunk index (version 3) has chunks of {} bytes, not a power of two",
                    self.chunk_size
                );
            }
            if self.image_digest.is_none() {
                fail!(
                    Failure::Verification,
                    "the chunk index (version 3) names no image digest"
                );
            }
            if let Some(i) = missing(|c| c.cv.is_some()) {
                fail!(
                    Failure::Verification,
                    "the chunk index (version 3) has no chaining value for chunk {i}"
                );
            }
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

    /// Whether every (non-zero) chunk can be checked: version 2 or later.
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
    use crate::error::assert_failed;

    /// `json` is refused as the index of `blob` (`blob_size` bytes), as a verification
    /// failure whose message contains `expected`.
    fn assert_refused(json: &[u8], blob: &Digest, blob_size: u64, expected: &str) {
        let parsed = ChunkIndex::parse(json, blob, blob_size);
        assert_failed(parsed, Failure::Verification, expected);
    }

    fn digest() -> Digest {
        Digest::of(crate::digest::Algorithm::Sha256, b"blob")
    }

    fn index(chunks: Vec<Chunk>, image_size: u64) -> ChunkIndex {
        ChunkIndex {
            version: 1,
            blob: digest().to_string(),
            chunk_size: 100,
            image_size,
            image_digest: None,
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
            cv: None,
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
        v2.version = 4;
        let e = ChunkIndex::parse(&serde_json::to_vec(&v2).unwrap(), &digest(), 15).unwrap_err();
        assert!(format!("{e}").contains("version 4"), "{e}");
        let bad = json.replace("sha256:ca97", "sha256:zz97");
        assert_refused(
            bad.as_bytes(),
            &digest(),
            15,
            "the chunk index is malformed",
        );
    }

    /// A version 3 index of `image` in chunks of 1 KiB, with made-up blob offsets.
    fn tree_index(image: &[u8]) -> ChunkIndex {
        let chunks: Vec<Chunk> = image
            .chunks(1024)
            .enumerate()
            .map(|(i, data)| {
                let zero = is_zero(data);
                Chunk {
                    offset: i as u64 * 10,
                    length: 10,
                    size: data.len() as u64,
                    zero,
                    digest: None,
                    cv: (!zero).then(|| ChunkCv::of(data, i as u64 * 1024)),
                }
            })
            .collect();
        ChunkIndex {
            version: 3,
            blob: digest().to_string(),
            chunk_size: 1024,
            image_size: image.len() as u64,
            image_digest: Some(ImageHash::of(image)),
            chunks,
        }
    }

    #[test]
    fn version_3_ties_each_chunk_to_the_image() {
        let mut image: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        image[2048..3072].fill(0);
        let index = tree_index(&image);
        let json = serde_json::to_vec(&index).unwrap();
        let text = String::from_utf8_lossy(&json);
        assert!(text.contains(r#""imageDigest":"blake3:"#), "{text}");
        let parsed = ChunkIndex::parse(&json, &digest(), 50).unwrap();
        assert!(parsed.has_tree());
        for (i, data) in image.chunks(1024).enumerate() {
            assert!(parsed.holds(i, data), "chunk {i}");
        }
        assert!(
            !parsed.holds(1, &image[..1024]),
            "chunk 0's bytes as chunk 1"
        );
        assert!(!parsed.holds(2, &[1u8; 1024]), "a zero chunk");

        // One chaining value changed: the chunks no longer add up to the image.
        let mut lying = index.clone();
        lying.chunks[1].cv = Some(ChunkCv::of(&[7u8; 1024], 1024));
        let e = ChunkIndex::parse(&serde_json::to_vec(&lying).unwrap(), &digest(), 50).unwrap_err();
        assert!(format!("{e}").contains("add up to"), "{e}");
        // A zero chunk claimed for data: its chaining value is computed, not read.
        let mut hiding = index.clone();
        hiding.chunks[3].zero = true;
        hiding.chunks[3].cv = None;
        assert_refused(
            &serde_json::to_vec(&hiding).unwrap(),
            &digest(),
            50,
            "add up to",
        );
        // Chunks that are not a power of two, a missing hash or chaining value.
        let mut odd = index.clone();
        odd.chunk_size = 1000;
        assert_refused(
            &serde_json::to_vec(&odd).unwrap(),
            &digest(),
            50,
            "not a power of two",
        );
        let mut unnamed = index.clone();
        unnamed.image_digest = None;
        let e =
            ChunkIndex::parse(&serde_json::to_vec(&unnamed).unwrap(), &digest(), 50).unwrap_err();
        assert!(format!("{e}").contains("names no image digest"), "{e}");
        let mut bare = index;
        bare.chunks[0].cv = None;
        let e = ChunkIndex::parse(&serde_json::to_vec(&bare).unwrap(), &digest(), 50).unwrap_err();
        assert!(
            format!("{e}").contains("no chaining value for chunk 0"),
            "{e}"
        );

        // An image of one chunk: its bytes are checked against the image hash.
        let small = tree_index(&image[..700]);
        let parsed =
            ChunkIndex::parse(&serde_json::to_vec(&small).unwrap(), &digest(), 10).unwrap();
        assert!(parsed.holds(0, &image[..700]));
        assert!(!parsed.holds(0, &[0u8; 700]));
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
        let at = |i| format!("inconsistent at chunk {i}");
        let cases = [
            (index(vec![chunk(0, 10, 100), chunk(11, 5, 30)], 130), at(1)), // gap
            (index(vec![chunk(0, 10, 100), chunk(9, 5, 30)], 130), at(1)),  // overlap
            (index(vec![chunk(0, 10, 90), chunk(10, 5, 30)], 120), at(0)),  // short middle chunk
            (
                index(vec![chunk(0, 10, 100), chunk(10, 5, 30)], 131),
                "130 of the image's 131 bytes".into(),
            ),
            (index(vec![chunk(0, 10, 100), chunk(10, 0, 30)], 130), at(1)), // empty chunk
            (
                index(vec![chunk(0, 10, 100), chunk(10, 70 << 10, 30)], 130),
                at(1),
            ), // too long
            (index(vec![], 0), "the chunk index is empty".into()),
        ];
        for (case, expected) in &cases {
            let json = serde_json::to_vec(case).unwrap();
            let blob_size = case.chunks.iter().map(|c| c.length).sum::<u64>();
            assert_refused(&json, &digest(), blob_size, expected);
        }
        let good = index(vec![chunk(0, 10, 100)], 100);
        let json = serde_json::to_vec(&good).unwrap();
        assert_refused(&json, &digest(), 11, "covers 10 of the blob's 11 bytes");
        let other = Digest::of(crate::digest::Algorithm::Sha256, b"other");
        assert_refused(&json, &other, 10, "not the image layer");
        assert_refused(b"[1,2]", &digest(), 10, "the chunk index is malformed");

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
