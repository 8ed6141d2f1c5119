//! `ocidd push`: compress a raw image while uploading it, then push a manifest whose single
//! layer is the image, so that `oci.tag=` (and the original `oras | gunzip | dd`) install it.
//! With `--platform`, the tag holds an image index instead, and the image becomes (or
//! replaces) that platform's entry in it: one tag serves amd64 and arm64 machines.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
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
use oci_spec::image::{
    Descriptor, DescriptorBuilder, ImageIndex, ImageIndexBuilder, ImageManifestBuilder, MediaType,
    PlatformBuilder,
};
use tokio::sync::mpsc;

use crate::chunks::{Chunk, ChunkIndex, is_zero};
use crate::cmdline::RegistryOptions;
use crate::compression::Compression;
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Classify, Failure};
use crate::fail;
use crate::reference::Platform;
use crate::registry::auth::{Credentials, lookup_credentials};
use crate::registry::client::extra_certificates;
use crate::registry::manifest::media_type::{
    CHUNK_INDEX, DISK_IMAGE_ARTIFACT, DOCKER_LIST, OCI_INDEX, OCI_MANIFEST,
};
use crate::registry::manifest::{ANNOTATION_IMAGE_DIGEST, ANNOTATION_IMAGE_SIZE, entry_platform};

const EMPTY_CONFIG: &[u8] = b"{}";
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
    /// Push into the image index at the tag, as this platform's entry.
    pub platform: Option<Platform>,
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
    /// The image index the tag now holds, when pushed for a platform.
    pub image_index: Option<IndexUpdate>,
}

/// The image index a `--platform` push left at the tag.
#[derive(Debug, PartialEq)]
pub struct IndexUpdate {
    pub digest: String,
    /// The platforms it lists, in order.
    pub platforms: Vec<String>,
    /// What the tag held that the index no longer has: the same platform's previous entry,
    /// or a single-platform image.
    pub replaced: Option<String>,
}

pub fn run(options: &PushOptions) -> Result<Pushed> {
    check_level(options.compression, options.level)?;
    let mut file = File::open(&options.file)
        .with_context(|| format!("opening {}", options.file.display()))
        .classify(Failure::Usage)?;
    // Its size by seeking, which block devices answer too; an empty image is refused before
    // anything is uploaded.
    let size = file
        .seek(SeekFrom::End(0))
        .and_then(|size| file.rewind().map(|()| size))
        .with_context(|| format!("reading {}", options.file.display()))
        .classify(Failure::Usage)?;
    if size == 0 {
        fail!(Failure::Usage, "{} is empty", options.file.display());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .classify(Failure::Target)?;
    runtime.block_on(push(options, file))
}

async fn push(options: &PushOptions, file: File) -> Result<Pushed> {
    crate::registry::client::install_crypto_provider();
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
    let image_index = match &options.platform {
        None => {
            push_manifest(&client, reference, body, OCI_MANIFEST).await?;
            None
        }
        Some(platform) => {
            // The image by digest first, so that the index never names a missing manifest.
            let by_digest = Reference::with_digest(
                reference.registry().to_string(),
                reference.repository().to_string(),
                manifest_digest.clone(),
            );
            let size = body.len() as u64;
            push_manifest(&client, &by_digest, body, OCI_MANIFEST).await?;
            let existing = match client
                .pull_manifest_raw(reference, &auth, &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST])
                .await
            {
                Ok((body, digest)) => Some((body, digest)),
                Err(error) if is_not_found(&error) => None,
                Err(error) => {
                    return Err(registry_error(error))
                        .with_context(|| format!("reading the index at {reference}"));
                }
            };
            let entry = platform_entry(&manifest_digest, size, platform)?;
            let (index, update) = merge_into_index(
                existing
                    .as_ref()
                    .map(|(body, digest)| (&body[..], digest.as_str())),
                entry,
                platform,
            )?;
            push_manifest(&client, reference, index, OCI_INDEX).await?;
            Some(update)
        }
    };
    Ok(Pushed {
        manifest_digest,
        layer_digest: uploaded.blob_digest,
        layer_size: uploaded.size,
        image_size: image.size,
        image_digest: image.digest,
        index_digest: index.map(|(digest, _)| digest),
        image_index,
    })
}

async fn push_manifest(
    client: &Client,
    reference: &Reference,
    body: Vec<u8>,
    media_type: &'static str,
) -> Result<()> {
    client
        .push_manifest_raw(
            reference,
            body,
            reqwest::header::HeaderValue::from_static(media_type),
        )
        .await
        .map_err(registry_error)
        .with_context(|| format!("pushing the manifest to {reference}"))?;
    Ok(())
}

/// Whether the registry said the tag (or the whole repository) does not exist yet.
fn is_not_found(error: &OciDistributionError) -> bool {
    use oci_client::errors::OciErrorCode;
    match error {
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
            )
        }),
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        _ => false,
    }
}

fn platform_entry(digest: &str, size: u64, platform: &Platform) -> Result<Descriptor> {
    let build = || -> Result<Descriptor, oci_spec::OciSpecError> {
        let mut oci_platform = PlatformBuilder::default()
            .os(platform.os.as_str())
            .architecture(platform.architecture.as_str());
        if let Some(variant) = &platform.variant {
            oci_platform = oci_platform.variant(variant.clone());
        }
        DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .artifact_type(MediaType::Other(DISK_IMAGE_ARTIFACT.to_string()))
            .digest(oci_spec::image::Digest::try_from(digest)?)
            .size(size)
            .platform(oci_platform.build()?)
            .build()
    };
    build()
        .context("building the index entry")
        .classify(Failure::Registry)
}

/// The index to push: `existing` (the tag's manifest and its digest, if it has one) with
/// `entry` in place of whatever it had for `platform`. A tag that holds a single image gets an
/// index with only `entry`; the image stays in the repository under its digest.
fn merge_into_index(
    existing: Option<(&[u8], &str)>,
    entry: Descriptor,
    platform: &Platform,
) -> Result<(Vec<u8>, IndexUpdate)> {
    let existing_index = match existing {
        Some((body, digest)) => {
            let value: serde_json::Value = serde_json::from_slice(body)
                .with_context(|| format!("the tag's manifest {digest} is not JSON"))
                .classify(Failure::Registry)?;
            if value.get("manifests").is_some() {
                let index: ImageIndex = serde_json::from_value(value)
                    .with_context(|| format!("reading the tag's image index {digest}"))
                    .classify(Failure::Registry)?;
                Some(index)
            } else {
                None
            }
        }
        None => None,
    };
    let mut replaced = match (existing, &existing_index) {
        (Some((_, digest)), None) => Some(format!("the single-platform image {digest}")),
        _ => None,
    };
    let mut index = match existing_index {
        Some(index) => index,
        None => ImageIndexBuilder::default()
            .schema_version(2u32)
            .manifests(Vec::new())
            .build()
            .context("building the image index")
            .classify(Failure::Registry)?,
    };
    // Entries are OCI or Docker manifests; the index itself is OCI's, whatever it was.
    index.set_media_type(Some(MediaType::ImageIndex));
    let mut manifests = index.manifests().clone();
    if let Some(old) = manifests.iter().find(|d| platform.selects(d)) {
        replaced = Some(format!("the {platform} entry {}", old.digest()));
    }
    manifests.retain(|d| !platform.selects(d));
    manifests.push(entry);
    let platforms = manifests.iter().map(entry_platform).collect();
    index.set_manifests(manifests);
    // Through a `Value`, whose maps are sorted: the same entries give the same digest.
    let body = serde_json::to_value(&index)
        .and_then(|value| serde_json::to_vec(&value))
        .context("encoding the image index")?;
    let update = IndexUpdate {
        digest: Digest::of(Algorithm::Sha256, &body).to_string(),
        platforms,
        replaced,
    };
    Ok((body, update))
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
                    .media_type(MediaType::Other(CHUNK_INDEX.to_string()))
                    .digest(oci_spec::image::Digest::try_from(digest.as_str())?)
                    .size(*size)
                    .build()?,
            );
        }
        ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .artifact_type(MediaType::Other(DISK_IMAGE_ARTIFACT.to_string()))
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
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(output, gzip_level(level))),
        Compression::Zstd => Box::new(
            zstd::stream::write::Encoder::new(output, zstd_level(level))
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

/// The levels each compression takes: refused, not quietly changed, when out of range.
fn check_level(compression: Compression, level: Option<i32>) -> Result<()> {
    let Some(level) = level else { return Ok(()) };
    let range = match compression {
        Compression::Gzip => 1..=9,
        Compression::Zstd => 1..=22,
        Compression::None => fail!(
            Failure::Usage,
            "--level does not apply to --compression none"
        ),
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
    flate2::Compression::new(level.unwrap_or(6) as u32)
}

fn zstd_level(level: Option<i32>) -> i32 {
    level.unwrap_or(3)
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
        config.extra_root_certificates = extra_certificates(path)?
            .into_iter()
            .map(|data| Certificate {
                encoding: CertificateEncoding::Der,
                data,
            })
            .collect();
    }
    Ok(config)
}

fn registry_error(error: OciDistributionError) -> anyhow::Error {
    crate::error::classified(Failure::Registry, error.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn merge(existing: Option<&[u8]>, digest: &str, platform: &str) -> (ImageIndex, IndexUpdate) {
        let platform: Platform = platform.parse().unwrap();
        let entry = platform_entry(digest, 100, &platform).unwrap();
        let (body, update) =
            merge_into_index(existing.map(|b| (b, "sha256:old")), entry, &platform).unwrap();
        assert_eq!(
            update.digest,
            Digest::of(Algorithm::Sha256, &body).to_string()
        );
        (serde_json::from_slice(&body).unwrap(), update)
    }

    fn entries(index: &ImageIndex) -> Vec<String> {
        index
            .manifests()
            .iter()
            .map(|d| d.digest().to_string())
            .collect()
    }

    #[test]
    fn a_new_tag_gets_an_index_with_one_entry() {
        let (index, update) = merge(None, A, "linux/amd64");
        assert_eq!(index.media_type(), &Some(MediaType::ImageIndex));
        assert_eq!(entries(&index), [A]);
        assert_eq!(update.platforms, ["linux/amd64"]);
        assert_eq!(update.replaced, None);
    }

    #[test]
    fn other_platforms_are_kept_and_the_same_one_replaced() {
        let (first, _) = merge(None, A, "linux/amd64");
        let first = serde_json::to_vec(&first).unwrap();
        let (second, update) = merge(Some(&first), B, "linux/arm64");
        assert_eq!(entries(&second), [A, B]);
        assert_eq!(update.platforms, ["linux/amd64", "linux/arm64"]);
        assert_eq!(update.replaced, None);

        let second = serde_json::to_vec(&second).unwrap();
        let (third, update) = merge(Some(&second), C, "linux/arm64/v8");
        assert_eq!(entries(&third), [A, C]);
        assert_eq!(update.platforms, ["linux/amd64", "linux/arm64/v8"]);
        assert_eq!(
            update.replaced,
            Some(format!("the linux/arm64/v8 entry {B}"))
        );
    }

    #[test]
    fn a_docker_list_becomes_an_oci_index_and_keeps_unknown_entries() {
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
                {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{A}","size":1,"platform":{{"os":"linux","architecture":"s390x"}}}},
                {{"mediaType":"{OCI_MANIFEST}","digest":"{B}","size":1}}]}}"#
        );
        let (index, update) = merge(Some(list.as_bytes()), C, "linux/amd64");
        assert_eq!(index.media_type(), &Some(MediaType::ImageIndex));
        assert_eq!(entries(&index), [A, B, C]);
        assert_eq!(
            update.platforms,
            [
                "linux/s390x".to_string(),
                format!("(no platform: {B})"),
                "linux/amd64".to_string()
            ]
        );
    }

    #[test]
    fn a_single_image_at_the_tag_is_replaced_and_said_so() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{A}","size":2}},"layers":[]}}"#
        );
        let (index, update) = merge(Some(manifest.as_bytes()), C, "linux/amd64");
        assert_eq!(entries(&index), [C]);
        assert_eq!(
            update.replaced.as_deref(),
            Some("the single-platform image sha256:old")
        );
    }

    #[test]
    fn a_tag_that_is_not_json_is_not_overwritten() {
        let platform: Platform = "linux/amd64".parse().unwrap();
        let entry = platform_entry(A, 1, &platform).unwrap();
        let error = merge_into_index(Some((b"<html>", "sha256:old")), entry, &platform)
            .unwrap_err()
            .to_string();
        assert!(error.contains("is not JSON"), "{error}");
    }
}
