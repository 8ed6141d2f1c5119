//! The decoders that undo a disk image's compression: streams (gzip members, zstd frames,
//! xz streams) and whole gzip members held in memory.

use std::io::{self, BufRead, Read};

use crate::compression::Compression;

/// A reader of the decompressed image over a reader of the compressed blob.
pub enum Decoder<R: BufRead> {
    Compressed(Units<R>),
    None(R),
}

impl<R: BufRead> Decoder<R> {
    pub fn new(compression: Compression, input: R) -> io::Result<Self> {
        Ok(match compression {
            Compression::Gzip | Compression::Zstd | Compression::Xz => {
                Decoder::Compressed(Units::new(compression, input)?)
            }
            Compression::None => Decoder::None(input),
        })
    }
}

/// gzip members, zstd frames or xz streams back to back (as pigz and `ocidd push` write them), decoded
/// one after the other. The image ends at the input's end or where the next bytes do not
/// start another member or frame; what follows is left in the input, for the caller to count
/// as data after the image (a decoder that read on would call it a corrupt header).
pub struct Units<R: BufRead> {
    compression: Compression,
    state: UnitState<R>,
}

enum UnitState<R: BufRead> {
    Gzip(Box<flate2::bufread::GzDecoder<R>>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
    Xz(Box<liblzma::bufread::XzDecoder<R>>),
    Ended(R),
    /// Only while one unit gives way to the next.
    Between,
}

impl<R: BufRead> Units<R> {
    fn new(compression: Compression, input: R) -> io::Result<Self> {
        let mut units = Units {
            compression,
            state: UnitState::Between,
        };
        units.start(input)?;
        Ok(units)
    }

    /// Starts decoding the unit at the start of `input`.
    fn start(&mut self, input: R) -> io::Result<()> {
        self.state = match self.compression {
            Compression::Zstd => {
                UnitState::Zstd(zstd::stream::read::Decoder::with_buffer(input)?.single_frame())
            }
            Compression::Xz => UnitState::Xz(Box::new(liblzma::bufread::XzDecoder::new_stream(
                input,
                xz_stream()?,
            ))),
            _ => UnitState::Gzip(Box::new(flate2::bufread::GzDecoder::new(input))),
        };
        Ok(())
    }

    /// After a unit: whether `next` (what the input has now; empty at its end) may start
    /// another. Bytes that begin like one count: the rest of its magic may be in the next
    /// buffer.
    fn continues(&self, next: &[u8]) -> bool {
        if next.is_empty() {
            return false;
        }
        let starts = |magic: &[u8]| {
            let n = next.len().min(magic.len());
            next[..n] == magic[..n]
        };
        match self.compression {
            Compression::Zstd => {
                // A zstd frame, or a skippable frame (magic 0x184D2A50 to 0x184D2A5F).
                starts(&[0x28, 0xb5, 0x2f, 0xfd])
                    || (next[0] & 0xf0 == 0x50 && starts(&[next[0], 0x2a, 0x4d, 0x18]))
            }
            Compression::Xz => starts(crate::compression::XZ_MAGIC),
            _ => starts(&[0x1f, 0x8b]),
        }
    }

    /// The compressed stream, where decoding has got to (`None` after a decoder for the next
    /// unit could not be made, which took the stream with it).
    fn input(&mut self) -> Option<&mut R> {
        match &mut self.state {
            UnitState::Gzip(d) => Some(d.get_mut()),
            UnitState::Zstd(d) => Some(d.get_mut()),
            UnitState::Xz(d) => Some(d.get_mut()),
            UnitState::Ended(r) => Some(r),
            UnitState::Between => None,
        }
    }
}

impl<R: BufRead> Read for Units<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = match &mut self.state {
                UnitState::Gzip(d) => d.read(buf)?,
                UnitState::Zstd(d) => d.read(buf)?,
                UnitState::Xz(d) => d.read(buf)?,
                UnitState::Ended(_) | UnitState::Between => return Ok(0),
            };
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // The unit ended: another follows, or the image did.
            let mut input = match std::mem::replace(&mut self.state, UnitState::Between) {
                UnitState::Gzip(d) => d.into_inner(),
                UnitState::Zstd(d) => d.finish(),
                UnitState::Xz(d) => d.into_inner(),
                other => {
                    self.state = other;
                    return Ok(0);
                }
            };
            let next = match input.fill_buf() {
                Ok(next) => next,
                Err(e) => {
                    self.state = UnitState::Ended(input);
                    return Err(e);
                }
            };
            if self.continues(next) {
                self.start(input)?;
            } else {
                self.state = UnitState::Ended(input);
                return Ok(0);
            }
        }
    }
}

/// Memory the xz decoder may use for decoding blocks on several threads; past it, it uses
/// fewer threads, down to one (a single-block stream always decodes on one). `xz -T0` at its
/// default preset writes 24 MiB blocks, and each thread holds one in and one out.
const XZ_THREADING_MEMORY: u64 = 256 << 20;

/// An xz stream decoder on all cores. Blocks that record their sizes (as every multi-threaded
/// xz encoder writes them) decode in parallel; the stream's index and each block's check are
/// verified.
fn xz_stream() -> io::Result<liblzma::stream::Stream> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    liblzma::stream::MtStreamBuilder::new()
        .threads(u32::try_from(threads).unwrap_or(1))
        .memlimit_threading(XZ_THREADING_MEMORY)
        .memlimit_stop(u64::MAX)
        .decoder()
        .map_err(io::Error::other)
}

/// Inflates whole gzip members held in memory (the chunks of a chunked image) with libdeflate,
/// which does that about 1.6 times as fast as zlib-rs streams on the benchmark image
/// (`benches/decoders.rs`). Written against libdeflate-sys because libdeflater does not tell
/// how many input bytes a member took, which is how a chunk is checked to be exactly one
/// member.
pub struct MemberInflater(std::ptr::NonNull<libdeflate_sys::libdeflate_decompressor>);

// SAFETY: a libdeflate decompressor is plain heap state with no thread affinity; `&mut self`
// on every use keeps it to one thread at a time.
unsafe impl Send for MemberInflater {}

impl MemberInflater {
    pub fn new() -> Self {
        // SAFETY: no arguments; returns an owned decompressor or null (out of memory).
        let raw = unsafe { libdeflate_sys::libdeflate_alloc_decompressor() };
        MemberInflater(std::ptr::NonNull::new(raw).expect("out of memory"))
    }

    /// Inflates the single gzip member `member` into `out`, checking its CRC-32 and size.
    /// Returns (input bytes used, output bytes produced).
    pub fn inflate(&mut self, member: &[u8], out: &mut [u8]) -> Result<(usize, usize), String> {
        let (mut used, mut produced) = (0usize, 0usize);
        // SAFETY: the pointers and lengths describe live slices we hold for the call (input
        // read-only, output writable), the result pointers point to our locals, and the
        // decompressor is ours (see `new`).
        let result = unsafe {
            libdeflate_sys::libdeflate_gzip_decompress_ex(
                self.0.as_ptr(),
                member.as_ptr().cast(),
                member.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                &mut used,
                &mut produced,
            )
        };
        match result {
            libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS => Ok((used, produced)),
            libdeflate_sys::libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE => {
                Err("it decompresses to more than expected".into())
            }
            _ => Err("invalid gzip data".into()),
        }
    }
}

impl Default for MemberInflater {
    fn default() -> Self {
        MemberInflater::new()
    }
}

impl Drop for MemberInflater {
    fn drop(&mut self) {
        // SAFETY: the decompressor came from libdeflate_alloc_decompressor and is freed once.
        unsafe { libdeflate_sys::libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

impl<R: BufRead> Decoder<R> {
    /// The compressed stream, where the decoder has got to (see [`Units`]).
    pub fn get_mut(&mut self) -> Option<&mut R> {
        match self {
            Decoder::Compressed(units) => units.input(),
            Decoder::None(r) => Some(r),
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Compressed(units) => units.read(buf),
            Decoder::None(r) => r.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode(compression: Compression, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Decoder::new(compression, data)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn multi_member_gzip_and_multi_frame_zstd() {
        let mut members = gzip(b"first ");
        members.extend(gzip(b"second"));
        assert_eq!(
            decode(Compression::Gzip, &members).unwrap(),
            b"first second"
        );
        let mut frames = zstd::encode_all(&b"one "[..], 3).unwrap();
        frames.extend(zstd::encode_all(&b"two"[..], 3).unwrap());
        assert_eq!(decode(Compression::Zstd, &frames).unwrap(), b"one two");
        let mut streams = xz(b"three ", 0);
        streams.extend(xz(b"four", 0));
        assert_eq!(decode(Compression::Xz, &streams).unwrap(), b"three four");
    }

    /// xz with blocks of `block` bytes (0: one block), as `xz -T2 --block-size` writes.
    fn xz(data: &[u8], block: u64) -> Vec<u8> {
        let mut builder = liblzma::stream::MtStreamBuilder::new();
        builder.threads(2).preset(1);
        if block > 0 {
            builder.block_size(block);
        }
        let mut encoder =
            liblzma::write::XzEncoder::new_stream(Vec::new(), builder.encoder().unwrap());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn multi_block_and_single_block_xz() {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        for block in [0, 256 << 10] {
            let packed = xz(&data, block);
            assert!(
                decode(Compression::Xz, &packed).unwrap() == data,
                "block {block}"
            );
            let mut corrupt = packed.clone();
            let middle = corrupt.len() / 2;
            corrupt[middle] ^= 0x55;
            let error = decode(Compression::Xz, &corrupt).unwrap_err();
            assert_eq!(
                error.kind(),
                io::ErrorKind::InvalidData,
                "block {block}: {error}"
            );
            let error = decode(Compression::Xz, &packed[..packed.len() - 20]).unwrap_err();
            assert_eq!(
                error.kind(),
                io::ErrorKind::UnexpectedEof,
                "block {block}: {error}"
            );
        }
    }

    #[test]
    fn member_inflater_reports_what_it_used() {
        let member = gzip(b"hello, chunk");
        let mut two = member.clone();
        two.extend_from_slice(&member);
        let mut inflater = MemberInflater::new();
        let mut out = vec![0u8; 64];
        assert_eq!(inflater.inflate(&two, &mut out), Ok((member.len(), 12)));
        assert_eq!(&out[..12], b"hello, chunk");
        assert_eq!(
            inflater.inflate(&member, &mut out[..5]),
            Err("it decompresses to more than expected".into())
        );
        let invalid = Err("invalid gzip data".into());
        assert_eq!(
            inflater.inflate(&member[..member.len() - 1], &mut out),
            invalid
        );
        let mut bad = member.clone();
        let n = bad.len();
        bad[n - 8] ^= 1; // CRC
        assert_eq!(inflater.inflate(&bad, &mut out), invalid);
    }

    #[test]
    fn corrupt_and_truncated_data_fail() {
        let good = gzip(&[7u8; 100_000]);
        let truncated = &good[..good.len() - 10];
        let kind = |compression, data| decode(compression, data).unwrap_err().kind();
        assert_eq!(
            kind(Compression::Gzip, truncated),
            io::ErrorKind::UnexpectedEof
        );
        let mut corrupt = good.clone();
        let n = corrupt.len();
        corrupt[n - 6] ^= 0xff; // inside the CRC32/ISIZE trailer
        assert_eq!(
            kind(Compression::Gzip, &corrupt),
            io::ErrorKind::InvalidInput
        );
        let z = zstd::encode_all(&[7u8; 100_000][..], 3).unwrap();
        assert_eq!(
            kind(Compression::Zstd, &z[..z.len() - 3]),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn data_after_the_last_member_or_frame_is_left_in_the_input() {
        let z = zstd::encode_all(&[7u8; 100_000][..], 3).unwrap();
        for (compression, good) in [
            (Compression::Gzip, gzip(&[7u8; 100_000])),
            (Compression::Zstd, z),
            (Compression::Xz, xz(&[7u8; 100_000], 0)),
        ] {
            let mut trailing = good.clone();
            trailing.extend_from_slice(b"garbage!");
            let mut decoder = Decoder::new(compression, &trailing[..]).unwrap();
            let mut out = Vec::new();
            decoder.read_to_end(&mut out).unwrap();
            assert_eq!(out, vec![7u8; 100_000], "{compression}");
            let mut left = Vec::new();
            decoder.get_mut().unwrap().read_to_end(&mut left).unwrap();
            assert_eq!(left, b"garbage!", "{compression}");
        }
    }
}
