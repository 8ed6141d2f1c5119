//! Compressing the raw image for the upload, on all cores: as one stream, or in independent
//! chunks (gzip members or zstd frames, see `chunks`) with where each landed; the image is
//! hashed in order as it is read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::{Context, Result, anyhow};
use bytes::{Bytes, BytesMut};
use oci_client::errors::OciDistributionError;
use tokio::sync::mpsc;

use crate::chunks::tree::{ChunkCv, ImageHash, image_hash};
use crate::chunks::{Chunk, is_zero};
use crate::compression::{
    Compression, DEFAULT_GZIP_LEVEL, DEFAULT_ZSTD_LEVEL, GZIP_LEVELS, ZSTD_LEVELS,
};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Classified, Classify, Failure};
use crate::fail;

/// Size of the compressed pieces handed to the uploader.
const UPLOAD_PIECE: usize = 1 << 20;

/// What the compressor meets when the upload gave up: the upload's own error says why.
#[derive(Debug)]
pub(super) struct UploadStopped;

impl std::fmt::Display for UploadStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the upload stopped")
    }
}

impl std::error::Error for UploadStopped {}

/// Whether `error` only says that the upload stopped.
pub(super) fn is_upload_stopped(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<UploadStopped>()
            || cause
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<UploadStopped>())
            || cause
                .downcast_ref::<Classified>()
                .is_some_and(|tagged| is_upload_stopped(&tagged.error))
    })
}

/// The stream of compressed pieces the uploader reads.
pub(super) type Pieces = mpsc::Receiver<Result<Bytes, OciDistributionError>>;

/// Starts compressing `file` (`size` bytes) on its own threads; returns the pieces to
/// upload, and the thread that ends with the image read and, when compressed in chunks of
/// `chunk_size`, where each chunk landed in the blob. A file that turns out not to hold
/// `size` bytes is an error, and so is any read error: then the pieces end in an error, so
/// that the upload is abandoned, not completed with what was read.
#[allow(clippy::type_complexity)]
pub(super) fn start(
    file: File,
    size: u64,
    compression: Compression,
    level: Option<i32>,
    chunk_size: Option<u64>,
) -> Result<(
    Pieces,
    thread::JoinHandle<Result<(Image, Option<Vec<Chunk>>)>>,
)> {
    let (sender, receiver) = mpsc::channel(4);
    let abort = sender.clone();
    let compressor = thread::Builder::new()
        .name("compress".into())
        .spawn(move || {
            let output = ChannelWriter {
                sender,
                piece: BytesMut::with_capacity(UPLOAD_PIECE),
            };
            // One byte more than the file should hold tells a file that grew.
            let file = file.take(size + 1);
            let compressed = match chunk_size {
                Some(chunk_size) => compress_chunks(file, compression, level, chunk_size, output)
                    .map(|(image, chunks)| (image, Some(chunks))),
                None => compress(file, compression, level, output).map(|image| (image, None)),
            }
            .and_then(|(image, chunks)| {
                if image.size > size {
                    fail!(
                        Failure::Target,
                        "the file grew while it was read (from {size} bytes); nothing was pushed"
                    );
                }
                if image.size < size {
                    fail!(
                        Failure::Target,
                        "the file shrank while it was read: {size} bytes when the push began, {} read; nothing was pushed",
                        image.size
                    );
                }
                Ok((image, chunks))
            });
            if compressed.as_ref().is_err_and(|e| !is_upload_stopped(e)) {
                let _ = abort.blocking_send(Err(OciDistributionError::GenericError(Some(
                    "reading the image failed".into(),
                ))));
            }
            compressed
        })
        .map_err(|e| anyhow!("starting the compressor: {e}"))
        .classify(Failure::Target)?;
    Ok((receiver, compressor))
}

/// The uncompressed image, as read.
pub(super) struct Image {
    pub(super) size: u64,
    /// Its SHA-256.
    pub(super) digest: Digest,
    /// Its BLAKE3, from the chunks' chaining values, when compressed in chunks.
    pub(super) tree: Option<ImageHash>,
}

/// Reads the image, hashing it, and sends it compressed, as one stream, to the uploader.
fn compress(
    mut file: impl Read,
    compression: Compression,
    level: Option<i32>,
    output: ChannelWriter,
) -> Result<Image> {
    let mut encoder: Box<dyn FinishWrite> = match compression {
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(output, gzip_level(level))),
        Compression::Zstd => Box::new(
            zstd::stream::write::Encoder::new(output, zstd_level(level))
                .context("starting zstd")
                .classify(Failure::Usage)?,
        ),
        Compression::None => Box::new(output),
        Compression::Xz => fail!(Failure::Usage, "{PUSH_XZ}"),
    };
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).classify(Failure::Target),
        };
        hasher.update(&buffer[..n]);
        size += n as u64;
        encoder
            .write_all(&buffer[..n])
            .classify(Failure::Registry)?;
    }
    encoder.finish_write().classify(Failure::Registry)?;
    Ok(Image {
        size,
        digest: hasher.finish(),
        tree: None,
    })
}

/// Reads `file` in chunks of `chunk_size`, hashing it in order, compresses the chunks on all
/// cores each into its own gzip member or zstd frame, and writes them in order to `output`.
/// Returns the image and where each chunk landed.
fn compress_chunks(
    mut file: impl Read + Send,
    compression: Compression,
    level: Option<i32>,
    chunk_size: u64,
    mut output: ChannelWriter,
) -> Result<(Image, Vec<Chunk>)> {
    if !crate::chunks::tree::is_tree_chunk_size(chunk_size) {
        fail!(
            Failure::Usage,
            "chunks of {chunk_size} bytes are not a power of two"
        );
    }
    let workers = thread::available_parallelism().map_or(1, |n| n.get());
    let (work_tx, work_rx) = sync_channel::<(usize, Vec<u8>)>(workers);
    // Only the workers hold the work's receiving end: once they have all stopped (the
    // upload gave up), the reader's next send fails instead of waiting for room forever.
    let work_rx = Arc::new(Mutex::new(work_rx));
    // Per chunk: what the workers made of it.
    struct Done {
        i: usize,
        size: u64,
        zero: bool,
        cv: ChunkCv,
        /// For chunk 0: the image's hash, should it be the only chunk.
        alone: Option<ImageHash>,
        compressed: io::Result<Vec<u8>>,
    }
    let (done_tx, done_rx) = sync_channel::<Done>(workers);
    thread::scope(|scope| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let work_rx = Arc::clone(&work_rx);
            scope.spawn(move || {
                loop {
                    let job = work_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((i, data))) = job else { break };
                    let done = Done {
                        i,
                        size: data.len() as u64,
                        zero: is_zero(&data),
                        cv: ChunkCv::of(&data, i as u64 * chunk_size),
                        alone: (i == 0).then(|| ImageHash::of(&data)),
                        compressed: compress_chunk(compression, level, &data),
                    };
                    if done_tx.send(done).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        drop(work_rx);
        let reader = scope.spawn(move || -> Result<Image> {
            let mut hasher = Hasher::new(Algorithm::Sha256);
            let mut size = 0u64;
            for i in 0.. {
                let mut data = Vec::with_capacity(chunk_size as usize);
                (&mut file)
                    .take(chunk_size)
                    .read_to_end(&mut data)
                    .classify(Failure::Target)?;
                if data.is_empty() {
                    break;
                }
                hasher.update(&data);
                size += data.len() as u64;
                if work_tx.send((i, data)).is_err() {
                    break;
                }
            }
            Ok(Image {
                size,
                digest: hasher.finish(),
                tree: None,
            })
        });
        // Put the chunks back in order as they come out of the workers.
        let mut waiting = BTreeMap::new();
        let mut chunks = Vec::new();
        let mut cvs = Vec::new();
        let mut alone = None;
        let mut offset = 0u64;
        let collected = (|| -> Result<()> {
            for done in done_rx.iter() {
                waiting.insert(done.i, done);
                while let Some(done) = waiting.remove(&chunks.len()) {
                    let compressed = done.compressed.classify(Failure::Usage)?;
                    output.write_all(&compressed).classify(Failure::Registry)?;
                    chunks.push(Chunk {
                        offset,
                        length: compressed.len() as u64,
                        size: done.size,
                        zero: done.zero,
                        digest: None,
                        cv: (!done.zero).then_some(done.cv),
                    });
                    cvs.push(done.cv);
                    alone = alone.or(done.alone);
                    offset += compressed.len() as u64;
                }
            }
            Ok(())
        })();
        // Whatever happened, stop the reader and the workers.
        drop(done_rx);
        let image = reader
            .join()
            .map_err(|_| anyhow!("the reader thread panicked"))??;
        collected?;
        Box::new(output)
            .finish_write()
            .classify(Failure::Registry)?;
        let tree = image_hash(&cvs, chunk_size, image.size).or(alone);
        Ok((Image { tree, ..image }, chunks))
    })
}

/// The levels each compression takes: refused, not quietly changed, when out of range.
pub fn check_level(compression: Compression, level: Option<i32>) -> Result<()> {
    if !compression.can_push() {
        fail!(Failure::Usage, "{PUSH_XZ}");
    }
    let Some(level) = level else { return Ok(()) };
    let range = match compression {
        Compression::Gzip => GZIP_LEVELS,
        Compression::Zstd => ZSTD_LEVELS,
        Compression::None => fail!(
            Failure::Usage,
            "--level does not apply to --compression none"
        ),
        Compression::Xz => fail!(Failure::Usage, "{PUSH_XZ}"),
    };
    if !range.contains(&level) {
        fail!(
            Failure::Usage,
            "--level {level} is not a {compression} level ({}-{})",
            range.start(),
            range.end()
        );
    }
    Ok(())
}

fn gzip_level(level: Option<i32>) -> flate2::Compression {
    flate2::Compression::new(level.unwrap_or(DEFAULT_GZIP_LEVEL).unsigned_abs())
}

fn zstd_level(level: Option<i32>) -> i32 {
    level.unwrap_or(DEFAULT_ZSTD_LEVEL)
}

/// One chunk as a complete gzip member or zstd frame (with its checksum and size).
fn compress_chunk(
    compression: Compression,
    level: Option<i32>,
    data: &[u8],
) -> io::Result<Vec<u8>> {
    match compression {
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 2),
                gzip_level(level),
            );
            encoder.write_all(data)?;
            encoder.finish()
        }
        Compression::Zstd => {
            let mut compressor = zstd::bulk::Compressor::new(zstd_level(level))?;
            compressor.include_checksum(true)?;
            compressor.include_contentsize(true)?;
            compressor.compress(data)
        }
        Compression::None => Ok(data.to_vec()),
        Compression::Xz => Err(io::Error::other(PUSH_XZ)),
    }
}

/// Installs read xz; pushes do not write it (its decoding is slower than zstd's at a like
/// ratio, and a chunk index needs independent members).
const PUSH_XZ: &str = "ocidd push compresses with gzip, zstd or none, not xz";

/// An encoder that can be finished behind a `dyn`.
trait FinishWrite: Write + Send {
    fn finish_write(self: Box<Self>) -> io::Result<()>;
}

impl FinishWrite for flate2::write::GzEncoder<ChannelWriter> {
    fn finish_write(self: Box<Self>) -> io::Result<()> {
        self.finish()?.finish_write_inner()
    }
}

impl FinishWrite for zstd::stream::write::Encoder<'static, ChannelWriter> {
    fn finish_write(self: Box<Self>) -> io::Result<()> {
        self.finish()?.finish_write_inner()
    }
}

impl FinishWrite for ChannelWriter {
    fn finish_write(self: Box<Self>) -> io::Result<()> {
        self.finish_write_inner()
    }
}

/// Collects compressed bytes into pieces and hands each to the uploader.
pub(super) struct ChannelWriter {
    sender: mpsc::Sender<Result<Bytes, OciDistributionError>>,
    piece: BytesMut,
}

impl ChannelWriter {
    fn send_piece(&mut self) -> io::Result<()> {
        if self.piece.is_empty() {
            return Ok(());
        }
        let piece = self.piece.split().freeze();
        self.sender
            .blocking_send(Ok(piece))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, UploadStopped))
    }

    fn finish_write_inner(mut self) -> io::Result<()> {
        self.send_piece()
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.piece.extend_from_slice(buf);
        if self.piece.len() >= UPLOAD_PIECE {
            self.send_piece()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
