//! What an image is, chunk by chunk (index version 3): the BLAKE3 hash of its raw bytes
//! (`blake3:HEX`, what `b3sum disk.img` prints), and each chunk's BLAKE3 chaining value, the
//! hash of its subtree in BLAKE3's own tree. Chunks are powers of two of at least 1 KiB and
//! start at multiples of their size, so each is a subtree of the image's tree: its chaining
//! value can be checked on its own, wherever its bytes come from (the blob, or the target
//! under `dd.delta`), and the chaining values merge into the image's hash.
//!
//! So a chunk index is trusted only when its chaining values (those of zero chunks computed
//! here, never taken from the index) add up to the image hash it names; then every chunk
//! that matches its chaining value is that part of that image, on every path.
//!
//! Written on the blake3 crate's `hazmat` module, which computes and merges chaining values;
//! the tree's shape (which subtrees merge) is ours to keep, and is checked against
//! `blake3::hash` of whole images in the tests.

use std::fmt;
use std::thread;

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};
use serde::{Deserialize, Serialize};

/// BLAKE3's chunk: the smallest subtree.
pub const LEAF: u64 = 1024;

/// A chunk's chaining value, written as 64 hex digits in the index.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChunkCv(pub ChainingValue);

/// The BLAKE3 hash of a whole raw image, written `blake3:HEX`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ImageHash(pub [u8; 32]);

impl ChunkCv {
    /// The chaining value of `data`, the chunk at `offset` in the image (`offset` a multiple of
    /// a power of two of at least [`LEAF`] that is no smaller than `data`).
    pub fn of(data: &[u8], offset: u64) -> ChunkCv {
        ChunkCv(
            blake3::Hasher::new()
                .set_input_offset(offset)
                .update(data)
                .finalize_non_root(),
        )
    }

    /// The chaining value of `length` zeros at `offset`.
    pub fn of_zeros(offset: u64, length: u64) -> ChunkCv {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(offset);
        let mut left = length;
        while left > 0 {
            let n = left.min(ZEROS.len() as u64);
            hasher.update(&ZEROS[..n as usize]);
            left -= n;
        }
        ChunkCv(hasher.finalize_non_root())
    }
}

impl ImageHash {
    /// The hash of a whole image held in memory (an image of one chunk).
    pub fn of(data: &[u8]) -> ImageHash {
        ImageHash(*blake3::hash(data).as_bytes())
    }
}

/// The image's hash from its chunks' chaining values, in order: chunks of `chunk_size` (a
/// power of two of at least [`LEAF`]), the last one `image_size`'s remainder. `None` for an
/// image of one chunk, whose hash only its bytes give (a chaining value is not a root).
pub fn image_hash(cvs: &[ChunkCv], chunk_size: u64, image_size: u64) -> Option<ImageHash> {
    if cvs.len() < 2 {
        return None;
    }
    // The root splits as every parent does; only its merge is marked as the root's.
    let (left, right) = split(cvs, chunk_size, image_size);
    Some(ImageHash(
        *merge_subtrees_root(&left, &right, Mode::Hash).as_bytes(),
    ))
}

/// The chaining values of a node's two children: BLAKE3 gives the left one the largest power
/// of two of leaves below the node's length, which for a node of two chunks or more is a
/// whole number of chunks (chunks being powers of two themselves).
fn split(cvs: &[ChunkCv], chunk_size: u64, length: u64) -> (ChainingValue, ChainingValue) {
    let left_length = left_subtree_len(length);
    let left_chunks = (left_length / chunk_size) as usize;
    let (left, right) = cvs.split_at(left_chunks);
    (
        subtree(left, chunk_size, left_length),
        subtree(right, chunk_size, length - left_length),
    )
}

/// The chaining value of the subtree of `cvs`, `length` bytes in all.
fn subtree(cvs: &[ChunkCv], chunk_size: u64, length: u64) -> ChainingValue {
    if let [only] = cvs {
        return only.0;
    }
    let (left, right) = split(cvs, chunk_size, length);
    merge_subtrees_non_root(&left, &right, Mode::Hash)
}

/// The chaining values of the zero chunks at `offsets` (each `chunk_size`, but one that ends
/// the image), computed on all cores: zero chunks are not in the blob, so they are hashed here.
pub fn zero_cvs(offsets: &[(u64, u64)]) -> Vec<ChunkCv> {
    let threads = thread::available_parallelism().map_or(1, |n| n.get());
    let per = offsets.len().div_ceil(threads).max(1);
    thread::scope(|scope| {
        let parts: Vec<_> = offsets
            .chunks(per)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|&(offset, length)| ChunkCv::of_zeros(offset, length))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|part| part.join().unwrap_or_default())
            .collect()
    })
}

/// Whether `chunk_size` makes each chunk a subtree of BLAKE3's tree.
pub fn is_tree_chunk_size(chunk_size: u64) -> bool {
    chunk_size >= LEAF && chunk_size.is_power_of_two()
}

impl fmt::Debug for ChunkCv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Display for ImageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for ImageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for ImageHash {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut bytes = [0u8; 32];
        text.strip_prefix("blake3:")
            .and_then(|hex| hex::decode_to_slice(hex, &mut bytes).ok())
            .ok_or_else(|| "an image digest is not blake3:<64 hex>".to_string())?;
        Ok(ImageHash(bytes))
    }
}

impl Serialize for ChunkCv {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for ChunkCv {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&text, &mut bytes)
            .map_err(|_| serde::de::Error::custom("a chaining value is not 64 hex digits"))?;
        Ok(ChunkCv(bytes))
    }
}

impl Serialize for ImageHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ImageHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes with runs of zeros, so that zero chunks occur.
    fn image(size: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..size)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if (i / 3000) % 3 == 0 { 0 } else { state as u8 }
            })
            .collect()
    }

    /// The image's hash from its chunks, zero chunks hashed as zeros.
    fn by_chunks(data: &[u8], chunk_size: u64) -> Option<ImageHash> {
        let cvs: Vec<ChunkCv> = data
            .chunks(chunk_size as usize)
            .enumerate()
            .map(|(i, chunk)| {
                let offset = i as u64 * chunk_size;
                if chunk.iter().all(|&b| b == 0) {
                    ChunkCv::of_zeros(offset, chunk.len() as u64)
                } else {
                    ChunkCv::of(chunk, offset)
                }
            })
            .collect();
        image_hash(&cvs, chunk_size, data.len() as u64)
    }

    #[test]
    fn chunks_add_up_to_b3sum_of_the_image() {
        let data = image(300_000, 7);
        for chunk_size in [1024u64, 2048, 4096, 16384, 65536] {
            for size in [
                2 * chunk_size as usize,
                2 * chunk_size as usize + 1,
                3 * chunk_size as usize - 1,
                5 * chunk_size as usize,
                8 * chunk_size as usize,
                9 * chunk_size as usize + 100,
                data.len(),
            ] {
                let size = size.min(data.len());
                if size <= chunk_size as usize {
                    continue;
                }
                let part = &data[..size];
                assert_eq!(
                    by_chunks(part, chunk_size),
                    Some(ImageHash::of(part)),
                    "chunk size {chunk_size}, image {size}"
                );
            }
        }
        // One chunk: only the bytes give the hash.
        assert_eq!(by_chunks(&data[..1000], 1024), None);
    }

    #[test]
    fn zero_cvs_are_those_of_zeros() {
        let offsets = [(0u64, 4096u64), (4096, 4096), (65536, 1000)];
        let cvs = zero_cvs(&offsets);
        for ((offset, length), cv) in offsets.iter().zip(&cvs) {
            assert_eq!(*cv, ChunkCv::of(&vec![0u8; *length as usize], *offset));
        }
    }

    #[test]
    fn text_forms() {
        let hash = ImageHash::of(b"disk");
        let text = hash.to_string();
        assert!(text.starts_with("blake3:") && text.len() == 71, "{text}");
        assert_eq!(text.parse::<ImageHash>(), Ok(hash));
        assert!("sha256:00".parse::<ImageHash>().is_err());
        assert!(is_tree_chunk_size(4 << 20) && !is_tree_chunk_size(3 << 20));
        assert!(!is_tree_chunk_size(512));
    }
}
