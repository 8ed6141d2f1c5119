//! `ocidd push`: compress a raw image while uploading it, then push a manifest whose single
//! layer is the image, so that `oci.tag=` (and the original `oras | gunzip | dd`) install it.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::sync_channel;
use std::thread;

use anyhow::{Context, Result, anyhow};
use bytes::{Bytes, BytesMut};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use oci_spec::distribution::Reference;
use oci_spec::image::{DescriptorBuilder, ImageManifestBuilder, MediaType};
use tokio::sync::mpsc;

use crate::chunks::{Chunk, ChunkIndex, MEDIA_TYPE_CHUNK_INDEX, is_zero};
use crate::cmdline::RegistryOptions;
use crate::decompress::Compression;
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Classify, Failure};
use crate::fail;
use crate::registry::{
    ANNOTATION_IMAGE_DIGEST, ANNOTATION_IMAGE_SIZE, Credentials, lookup_credentials,
};

const EMPTY_CONFIG: &[u8] = b"{}";
/// The artifact type of manifests `ocidd push` writes.
pub const ARTIFACT_TYPE: &str = "application/vnd.ocidd.disk-image.v1";
const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// Size of the compressed pieces handed to the uploader.
const UPLOAD_PIECE: usize = 1 << 20;

pub struct PushOptions {
    pub file: PathBuf,
    pub reference: Reference,
    pub compression: Compression,
    /// Compression level; `None` for the format's default (gzip 6, zstd 3).
    pub level: Option<i32>,
    /// Compress in independent chunks of this size, with a chunk index layer (see `chunks`);
    /// `None`: one stream.
    pub chunk_size: Option<u64>,
    pub registry: RegistryOptions,
}

/// What was pushed.
#[derive(Debug)]
pub struct Pushed {
    pub manifest_digest: String,
    pub layer_digest: String,
    pub layer_size: u64,
    pub image_size: u64,
    pub image_digest: Digest,
    /// The chunk index layer's digest, when the image was pushed in chunks.
    pub index_digest: Option<String>,
}

pub fn run(options: &PushOptions) -> Result<Pushed> {
    let file = File::open(&options.file)
        .with_context(|| format!("opening {}", options.file.display()))
        .classify(Failure::Usage)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .classify(Failure::Target)?;
    runtime.block_on(push(options, file))
}

async fn push(options: &PushOptions, file: File) -> Result<Pushed> {
    crate::registry::install_crypto_provider();
    let reference = &options.reference;
    let client = Client::new(client_config(&options.registry)?);
    let auth = match lookup_credentials(reference.registry(), options.registry.auth.as_deref())? {
        Some(Credentials::Basic { username, password }) => RegistryAuth::Basic(username, password),
        Some(Credentials::IdentityToken(_)) => fail!(
            Failure::Usage,
            "pushing with an identity token is not supported; use a username and password"
        ),
        None => RegistryAuth::Anonymous,
    };
    client
        .auth(reference, &auth, RegistryOperation::Push)
        .await
        .map_err(registry_error)
        .context("authenticating to the registry")?;

    let (sender, receiver) = mpsc::channel::<Result<Bytes, OciDistributionError>>(4);
    let compression = options.compression;
    let level = options.level;
    let chunk_size = options.chunk_size;
    let compressor = thread::Builder::new()
        .name("compress".into())
        .spawn(move || {
            let output = ChannelWriter {
                sender,
                piece: BytesMut::with_capacity(UPLOAD_PIECE),
            };
            match chunk_size {
                Some(chunk_size) => compress_chunks(file, compression, level, chunk_size, output)
                    .map(|(image, chunks)| (image, Some((chunk_size, chunks)))),
                None => compress(file, compression, level, output).map(|image| (image, None)),
            }
        })
        .context("starting the compressor")
        .classify(Failure::Target)?;
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|piece| (piece, receiver))
    });
    let uploaded = client.push_blob_stream_chunked(reference, stream).await;
    let (image, chunks) = compressor
        .join()
        .map_err(|_| anyhow!("the compressor thread panicked"))
        .classify(Failure::Target)?
        .with_context(|| format!("reading {}", options.file.display()))?;
    let uploaded = uploaded
        .map_err(registry_error)
        .context("uploading the image")?;
    if image.size == 0 {
        fail!(Failure::Usage, "{} is empty", options.file.display());
    }

    let config_digest = Digest::of(Algorithm::Sha256, EMPTY_CONFIG).to_string();
    client
        .push_blob(reference, EMPTY_CONFIG, &config_digest)
        .await
        .map_err(registry_error)
        .context("uploading the empty config")?;

    let index = match chunks {
        Some((chunk_size, chunks)) => {
            let index = ChunkIndex {
                blob: uploaded.blob_digest.clone(),
                chunk_size,
                image_size: image.size,
                chunks,
            };
            let body = serde_json::to_vec(&index).context("encoding the chunk index")?;
            let digest = Digest::of(Algorithm::Sha256, &body).to_string();
            client
                .push_blob(reference, body.clone(), &digest)
                .await
                .map_err(registry_error)
                .context("uploading the chunk index")?;
            Some((digest, body.len() as u64))
        }
        None => None,
    };

    let manifest = manifest(
        &options.file,
        compression,
        &uploaded.blob_digest,
        uploaded.size,
        &image,
        &config_digest,
        index.as_ref(),
    )?;
    // Through a `Value`, whose maps are sorted, so that the same image always gets the same
    // manifest digest (the annotations are a HashMap).
    let body = serde_json::to_value(&manifest)
        .and_then(|value| serde_json::to_vec(&value))
        .context("encoding the manifest")?;
    let manifest_digest = Digest::of(Algorithm::Sha256, &body).to_string();
    client
        .push_manifest_raw(
            reference,
            body,
            reqwest::header::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
        )
        .await
        .map_err(registry_error)
        .context("pushing the manifest")?;
    Ok(Pushed {
        manifest_digest,
        layer_digest: uploaded.blob_digest,
        layer_size: uploaded.size,
        image_size: image.size,
        image_digest: image.digest,
        index_digest: index.map(|(digest, _)| digest),
    })
}

fn manifest(
    file: &Path,
    compression: Compression,
    layer_digest: &str,
    layer_size: u64,
    image: &Image,
    config_digest: &str,
    index: Option<&(String, u64)>,
) -> Result<oci_spec::image::ImageManifest> {
    let mut annotations = HashMap::from([
        (ANNOTATION_IMAGE_SIZE.to_string(), image.size.to_string()),
        (
            ANNOTATION_IMAGE_DIGEST.to_string(),
            image.digest.to_string(),
        ),
    ]);
    if let Some(name) = file.file_name() {
        annotations.insert(
            TITLE_ANNOTATION.to_string(),
            name.to_string_lossy().to_string(),
        );
    }
    let build = || -> Result<oci_spec::image::ImageManifest, oci_spec::OciSpecError> {
        let config = DescriptorBuilder::default()
            .media_type(MediaType::EmptyJSON)
            .digest(oci_spec::image::Digest::try_from(config_digest)?)
            .size(EMPTY_CONFIG.len() as u64)
            .build()?;
        let layer = DescriptorBuilder::default()
            .media_type(MediaType::Other(compression.media_type().to_string()))
            .digest(oci_spec::image::Digest::try_from(layer_digest)?)
            .size(layer_size)
            .annotations(annotations)
            .build()?;
        let mut layers = vec![layer];
        if let Some((digest, size)) = index {
            layers.push(
                DescriptorBuilder::default()
                    .media_type(MediaType::Other(MEDIA_TYPE_CHUNK_INDEX.to_string()))
                    .digest(oci_spec::image::Digest::try_from(digest.as_str())?)
                    .size(*size)
                    .build()?,
            );
        }
        ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .artifact_type(MediaType::Other(ARTIFACT_TYPE.to_string()))
            .config(config)
            .layers(layers)
            .build()
    };
    build()
        .context("building the manifest")
        .classify(Failure::Registry)
}

/// The uncompressed image, as read.
struct Image {
    size: u64,
    digest: Digest,
}

/// Reads the image, hashing it, and sends it compressed, as one stream, to the uploader.
fn compress(
    mut file: File,
    compression: Compression,
    level: Option<i32>,
    output: ChannelWriter,
) -> Result<Image> {
    let mut encoder: Box<dyn FinishWrite> = match compression {
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(
            output,
            flate2::Compression::new(level.unwrap_or(6).clamp(0, 9) as u32),
        )),
        Compression::Zstd => Box::new(
            zstd::stream::write::Encoder::new(output, level.unwrap_or(3))
                .context("starting zstd")
                .classify(Failure::Usage)?,
        ),
        Compression::None => Box::new(output),
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
    })
}

/// Reads `file` in chunks of `chunk_size`, hashing it in order, compresses the chunks on all
/// cores each into its own gzip member or zstd frame, and writes them in order to `output`.
/// Returns the image and where each chunk landed.
fn compress_chunks(
    mut file: File,
    compression: Compression,
    level: Option<i32>,
    chunk_size: u64,
    mut output: ChannelWriter,
) -> Result<(Image, Vec<Chunk>)> {
    let workers = thread::available_parallelism().map_or(1, |n| n.get());
    let (work_tx, work_rx) = sync_channel::<(usize, Vec<u8>)>(workers);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = sync_channel::<(usize, u64, bool, io::Result<Vec<u8>>)>(workers);
    thread::scope(|scope| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let work_rx = &work_rx;
            scope.spawn(move || {
                loop {
                    let job = work_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((i, data))) = job else { break };
                    let zero = is_zero(&data);
                    let compressed = compress_chunk(compression, level, &data);
                    if done_tx
                        .send((i, data.len() as u64, zero, compressed))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
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
            })
        });
        // Put the chunks back in order as they come out of the workers.
        let mut waiting = BTreeMap::new();
        let mut chunks = Vec::new();
        let mut offset = 0u64;
        let collected = (|| -> Result<()> {
            for (i, size, zero, compressed) in done_rx.iter() {
                waiting.insert(i, (size, zero, compressed));
                while let Some((size, zero, compressed)) = waiting.remove(&chunks.len()) {
                    let compressed = compressed.classify(Failure::Usage)?;
                    output.write_all(&compressed).classify(Failure::Registry)?;
                    chunks.push(Chunk {
                        offset,
                        length: compressed.len() as u64,
                        size,
                        zero,
                    });
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
        Ok((image, chunks))
    })
}

/// One chunk as a complete gzip member or zstd frame (with its checksum and size).
fn compress_chunk(
    compression: Compression,
    level: Option<i32>,
    data: &[u8],
) -> io::Result<Vec<u8>> {
    match compression {
        Compression::Gzip => {
            let level = flate2::Compression::new(level.unwrap_or(6).clamp(0, 9) as u32);
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2), level);
            encoder.write_all(data)?;
            encoder.finish()
        }
        Compression::Zstd => {
            let mut compressor = zstd::bulk::Compressor::new(level.unwrap_or(3))?;
            compressor.include_checksum(true)?;
            compressor.include_contentsize(true)?;
            compressor.compress(data)
        }
        Compression::None => Ok(data.to_vec()),
    }
}

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
struct ChannelWriter {
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
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
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

fn client_config(options: &RegistryOptions) -> Result<ClientConfig> {
    let mut config = ClientConfig {
        protocol: if options.allow_no_tls {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..Default::default()
    };
    if let Some(path) = &options.ca {
        let data = std::fs::read(path)
            .with_context(|| format!("reading --ca {}", path.display()))
            .classify(Failure::Usage)?;
        config.extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    Ok(config)
}

fn registry_error(error: OciDistributionError) -> anyhow::Error {
    crate::error::classified(Failure::Registry, error.into())
}
