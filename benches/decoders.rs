//! Inflate and zstd decoders compared on an image (default: the `cargo xtask bench` realistic
//! image): `cargo bench --bench decoders [-- IMAGE]`. Compresses the image in 4 MiB chunks
//! (gzip -6 members, zstd -3 frames) and as one gzip stream, then times decompressing it
//! single-threaded with each decoder. Prints MiB/s of decompressed output.

use std::io::{Read, Write};
use std::time::Instant;

const CHUNK: usize = 4 << 20;

fn main() {
    let path = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "target/bench/realistic-2048M.img".into());
    let mut image = Vec::new();
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut image))
        .unwrap_or_else(|e| panic!("reading {path}: {e} (run cargo xtask bench first)"));
    let mib = image.len() as f64 / (1 << 20) as f64;
    let chunks: Vec<&[u8]> = image.chunks(CHUNK).collect();
    let gzip_members: Vec<Vec<u8>> = chunks
        .iter()
        .map(|c| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(c).unwrap();
            e.finish().unwrap()
        })
        .collect();
    let zstd_frames: Vec<Vec<u8>> = chunks
        .iter()
        .map(|c| zstd::bulk::compress(c, 3).unwrap())
        .collect();
    let stream: Vec<u8> = gzip_members.concat();
    let report = |name: &str, seconds: f64| {
        println!("{name:<44} {:>7.0} MiB/s ({seconds:.2} s)", mib / seconds);
    };
    let mut out = vec![0u8; CHUNK];

    let start = Instant::now();
    let mut inflater = ocidd::install::decompress::MemberInflater::new();
    for (member, chunk) in gzip_members.iter().zip(&chunks) {
        let (_, n) = inflater.inflate(member, &mut out).unwrap();
        assert_eq!(n, chunk.len());
    }
    report(
        "libdeflate, 4 MiB gzip members",
        start.elapsed().as_secs_f64(),
    );

    let start = Instant::now();
    for (member, chunk) in gzip_members.iter().zip(&chunks) {
        let mut d = flate2::Decompress::new_gzip(15);
        d.decompress(member, &mut out, flate2::FlushDecompress::Finish)
            .unwrap();
        assert_eq!(d.total_out() as usize, chunk.len());
    }
    report(
        "zlib-rs (flate2 Decompress), 4 MiB members",
        start.elapsed().as_secs_f64(),
    );

    let start = Instant::now();
    let mut decoder = flate2::bufread::MultiGzDecoder::new(&stream[..]);
    assert_eq!(read_through(&mut decoder, &mut out), image.len());
    report(
        "zlib-rs (flate2 MultiGzDecoder), a stream",
        start.elapsed().as_secs_f64(),
    );

    let start = Instant::now();
    let mut d = zstd::bulk::Decompressor::new().unwrap();
    for (frame, chunk) in zstd_frames.iter().zip(&chunks) {
        let n = d.decompress_to_buffer(frame, out.as_mut_slice()).unwrap();
        assert_eq!(n, chunk.len());
    }
    report("zstd (bulk), 4 MiB frames", start.elapsed().as_secs_f64());

    let zstd_stream = zstd_frames.concat();
    let start = Instant::now();
    let mut decoder = zstd::stream::read::Decoder::new(&zstd_stream[..]).unwrap();
    assert_eq!(read_through(&mut decoder, &mut out), image.len());
    report(
        "zstd (stream decoder), a stream",
        start.elapsed().as_secs_f64(),
    );
}

/// Reads `decoder` to its end through `out`, as an install would; returns the bytes read.
fn read_through(decoder: &mut impl Read, out: &mut [u8]) -> usize {
    let mut total = 0;
    loop {
        let n = decoder.read(out).unwrap();
        if n == 0 {
            return total;
        }
        total += n;
    }
}
