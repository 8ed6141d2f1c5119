//! Chunk indexes, as a registry may send them. The index names its blob and its chunks'
//! lengths, so the target hands `parse` the blob and size it names: the checks after those
//! two are what gets fuzzed. An index that parses is then asked about its chunks. Never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ocidd::chunks::ChunkIndex;
use ocidd::digest::Digest;

fuzz_target!(|data: &[u8]| {
    let named: Option<ChunkIndex> = serde_json::from_slice(data).ok();
    let blob = named
        .as_ref()
        .and_then(|index| index.blob.parse::<Digest>().ok())
        .unwrap_or_else(|| Digest::of(ocidd::digest::Algorithm::Sha256, b""));
    let blob_size = named.as_ref().map_or(0, |index| {
        index
            .chunks
            .iter()
            .fold(0u64, |sum, chunk| sum.saturating_add(chunk.length))
    });
    let Ok(index) = ChunkIndex::parse(data, &blob, blob_size) else {
        return;
    };
    let _ = index.data_bytes();
    for (i, chunk) in index.chunks.iter().enumerate().take(4) {
        let _ = index.image_offset(i);
        let zeros = vec![0u8; chunk.size as usize];
        let _ = index.holds(i, &zeros);
    }
});
