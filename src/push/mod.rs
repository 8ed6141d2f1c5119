//! `ocidd push`: compress a raw image while uploading it, then push a manifest whose single
//! layer is the image, so that `oci.tag=` (and the original `oras | gunzip | dd`) install it.
//! With `--platform`, the tag holds an image index instead, and the image becomes (or
//! replaces) that platform's entry in it: one tag serves amd64 and arm64 machines.

mod compress;
mod index;
mod session;
pub mod sign;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use futures_util::future::{Either, select};
use oci_spec::distribution::Reference;
use oci_spec::image::{DescriptorBuilder, ImageManifestBuilder, MediaType};
use serde::Serialize;

pub use index::IndexUpdate;

use crate::chunks::{Chunk, ChunkIndex};
use crate::cmdline::RegistryOptions;
use crate::compression::Compression;
use crate::digest::{Algorithm, Digest};
use crate::error::{Classify, Failure};
use crate::fail;
use crate::reference::Platform;
use crate::registry::manifest::media_type::{CHUNK_INDEX, DISK_IMAGE_ARTIFACT, OCI_MANIFEST};
use crate::registry::manifest::{ANNOTATION_IMAGE_DIGEST, ANNOTATION_IMAGE_SIZE};
use crate::retry::{Attempt, with_retries_async};
use crate::sync::Unpoisoned;
use compress::Image;
use session::Session;

const EMPTY_CONFIG: &[u8] = b"{}";
const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

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
    /// Sign what the tag names with this key (cosign's legacy layout).
    pub sign_key: Option<PathBuf>,
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
    /// The tags of the signatures pushed (`--sign-key`).
    pub signatures: Vec<String>,
}

pub fn run(options: &PushOptions) -> Result<Pushed> {
    compress::check_level(options.compression, options.level)?;
    let (file, size) = open_image(&options.file)?;
    // A bad key is found before anything is uploaded.
    let sign_key = options
        .sign_key
        .as_deref()
        .map(crate::signature::keys::read_signing_key)
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .classify(Failure::Target)?;
    runtime.block_on(push(options, &file, size, sign_key.as_ref()))
}

/// Opens the raw image to push: a regular file or a block device, not empty; with its size.
/// Whatever is wrong with it is a usage error (exit 2), found before anything is uploaded.
fn open_image(path: &Path) -> Result<(File, u64)> {
    // What it is, before opening it: opening a FIFO waits for a writer.
    let kind = std::fs::metadata(path)
        .with_context(|| format!("opening {}", path.display()))
        .classify(Failure::Usage)?
        .file_type();
    if kind.is_dir() {
        fail!(
            Failure::Usage,
            "{} is a directory, not a raw disk image",
            path.display()
        );
    }
    if !kind.is_file() && !kind.is_block_device() {
        fail!(
            Failure::Usage,
            "{} is neither a file nor a block device",
            path.display()
        );
    }
    let mut file = File::open(path)
        .with_context(|| format!("opening {}", path.display()))
        .classify(Failure::Usage)?;
    // Its size by seeking, which block devices answer too.
    let size = file
        .seek(SeekFrom::End(0))
        .and_then(|size| file.rewind().map(|()| size))
        .with_context(|| format!("reading {}", path.display()))
        .classify(Failure::Usage)?;
    if size == 0 {
        fail!(Failure::Usage, "{} is empty", path.display());
    }
    Ok((file, size))
}

async fn push(
    options: &PushOptions,
    file: &File,
    size: u64,
    sign_key: Option<&p256::ecdsa::SigningKey>,
) -> Result<Pushed> {
    let reference = &options.reference;
    let session = Session::open(reference, &options.registry).await?;
    let (layer, image, chunks) = upload_image(&session, options, file, size).await?;
    let config_digest = session
        .upload_blob(reference, EMPTY_CONFIG.to_vec(), "the empty config")
        .await?;
    let chunk_index = match chunks {
        Some(chunks) => Some(upload_chunk_index(&session, options, &layer, &image, chunks).await?),
        None => None,
    };
    let manifest = manifest(
        &options.file,
        options.compression,
        &layer,
        &image,
        &config_digest,
        chunk_index.as_ref(),
    )?;
    let body = canonical_json(&manifest).context("encoding the manifest")?;
    let manifest_digest = Digest::of(Algorithm::Sha256, &body).to_string();
    let image_index = match &options.platform {
        None => {
            session.push_manifest(reference, body, OCI_MANIFEST).await?;
            None
        }
        Some(platform) => Some(
            index::push_for_platform(&session, reference, body, &manifest_digest, platform).await?,
        ),
    };
    // The image's manifest is signed, and the index at the tag too: a later push for another
    // platform changes the index, but not this manifest's signature.
    let mut signatures = Vec::new();
    if let Some(key) = sign_key {
        let mut signed: Vec<Digest> = vec![manifest_digest.parse()?];
        if let Some(update) = &image_index {
            signed.push(update.digest.parse()?);
        }
        for digest in &signed {
            signatures.push(sign::sign(&session, reference, key, digest, &config_digest).await?);
        }
    }
    Ok(Pushed {
        signatures,
        manifest_digest,
        layer_digest: layer.digest,
        layer_size: layer.size,
        image_size: image.size,
        image_digest: image.digest,
        index_digest: chunk_index.map(|index| index.digest),
        image_index,
    })
}

/// A blob as uploaded: its digest and size.
struct Uploaded {
    digest: String,
    size: u64,
}

/// Compresses the image (`size` bytes) while uploading it as the layer; returns the layer,
/// the image as read, and where each chunk landed when compressed in chunks. An upload that
/// fails in a way that may pass is started again from the image's first byte.
async fn upload_image(
    session: &Session,
    options: &PushOptions,
    file: &File,
    size: u64,
) -> Result<(Uploaded, Image, Option<Vec<Chunk>>)> {
    with_retries_async(session.backoff(), "uploading the image", || async {
        // A clone shares the offset, which the try before may have moved.
        let file = file
            .try_clone()
            .and_then(|mut file| file.rewind().map(|()| file))
            .with_context(|| format!("reading {}", options.file.display()))
            .classify(Failure::Target)?;
        upload_image_once(session, options, file, size).await
    })
    .await
}

/// One try of [`upload_image`].
async fn upload_image_once(
    session: &Session,
    options: &PushOptions,
    file: File,
    size: u64,
) -> Result<(Uploaded, Image, Option<Vec<Chunk>>), Attempt> {
    let (pieces, compressor) = compress::start(
        file,
        size,
        options.compression,
        options.level,
        options.chunk_size,
    )?;
    let watch = NetworkWatch::default();
    let stream = {
        let watch = watch.clone();
        futures_util::stream::unfold(pieces, move |mut pieces| {
            let watch = watch.clone();
            async move {
                // Waiting for the compressor is not the registry's delay.
                watch.set(None);
                let piece = pieces.recv().await;
                watch.set(Some(Instant::now()));
                piece.map(|piece| (piece, pieces))
            }
        })
    };
    let upload = session
        .client
        .push_blob_stream_chunked(&options.reference, stream);
    let stalled = watch.stalled(session.stall_timeout());
    let uploaded = match select(pin!(upload), pin!(stalled)).await {
        Either::Left((uploaded, _)) => {
            uploaded.map_err(|error| session.attempt(error, "uploading the image"))
        }
        Either::Right(((), _)) => Err(Attempt::Transient(session.no_answer())),
    };
    let compressed = compressor
        .join()
        .map_err(|_| anyhow!("the compressor thread panicked"))
        .classify(Failure::Target)?
        .with_context(|| format!("reading {}", options.file.display()));
    // When the upload failed, the compressor only saw it stop: the upload says why. When
    // reading failed, the upload was aborted, and the read error says why.
    match (uploaded, compressed) {
        (Err(upload), Err(read)) if compress::is_upload_stopped(&read) => Err(upload),
        (_, Err(read)) => Err(Attempt::Permanent(read)),
        (Err(upload), Ok(_)) => Err(upload),
        (Ok(uploaded), Ok((image, chunks))) => {
            let layer = Uploaded {
                digest: uploaded.blob_digest,
                size: uploaded.size,
            };
            Ok((layer, image, chunks))
        }
    }
}

/// When the uploader began waiting on the registry (a request sent, its answer not in), if
/// it is: the stall timeout applies to that wait, not to the compressor's.
#[derive(Clone, Default)]
struct NetworkWatch(Arc<Mutex<Option<Instant>>>);

impl NetworkWatch {
    fn set(&self, since: Option<Instant>) {
        *self.0.lock_unpoisoned() = since;
    }

    /// Ends once the uploader has waited on the registry for `timeout`.
    async fn stalled(&self, timeout: Duration) {
        loop {
            tokio::time::sleep(timeout.min(Duration::from_secs(1))).await;
            let since = *self.0.lock_unpoisoned();
            if since.is_some_and(|since| since.elapsed() >= timeout) {
                return;
            }
        }
    }
}

/// Uploads the chunk index of the `layer` just uploaded.
async fn upload_chunk_index(
    session: &Session,
    options: &PushOptions,
    layer: &Uploaded,
    image: &Image,
    chunks: Vec<Chunk>,
) -> Result<Uploaded> {
    let index = ChunkIndex {
        version: crate::chunks::INDEX_VERSION,
        blob: layer.digest.clone(),
        chunk_size: options
            .chunk_size
            .ok_or_else(|| anyhow!("a chunk index without a chunk size"))?,
        image_size: image.size,
        image_digest: image.tree,
        chunks,
    };
    let body = serde_json::to_vec(&index).context("encoding the chunk index")?;
    let size = body.len() as u64;
    let digest = session
        .upload_blob(&options.reference, body, "the chunk index")
        .await?;
    Ok(Uploaded { digest, size })
}

/// JSON through a `Value`, whose maps are sorted, so that the same content always gets the
/// same digest (annotations are a HashMap).
pub(super) fn canonical_json(value: &impl Serialize) -> serde_json::Result<Vec<u8>> {
    serde_json::to_value(value).and_then(|value| serde_json::to_vec(&value))
}

/// The image's manifest: one layer, the image, annotated with the image's size and digest;
/// the chunk index as its config, or the empty config. One layer is what Ironic, Tinkerbell
/// and oras read as a disk artifact; the config travels with the manifest through every copy
/// (skopeo, oras, mirrors) and its digest is covered by the manifest's signature, where a
/// referrer artifact would need a referrers API (docker-registry has none) and a copy that
/// brings referrers along. Earlier versions pushed the chunk index as a second layer; installs
/// still read that (`registry::manifest`).
fn manifest(
    file: &Path,
    compression: Compression,
    layer: &Uploaded,
    image: &Image,
    config_digest: &str,
    chunk_index: Option<&Uploaded>,
) -> Result<oci_spec::image::ImageManifest> {
    let mut annotations = HashMap::from([
        (ANNOTATION_IMAGE_SIZE.to_string(), image.size.to_string()),
        (
            ANNOTATION_IMAGE_DIGEST.to_string(),
            image.digest.to_string(),
        ),
    ]);
    // The title is the name `oras pull` saves the layer under: it says that the file is
    // compressed, so that nobody writes it to a disk as it is.
    if let Some(name) = file.file_name() {
        annotations.insert(
            TITLE_ANNOTATION.to_string(),
            format!("{}{}", name.to_string_lossy(), compression.file_suffix()),
        );
    }
    let build = || -> Result<oci_spec::image::ImageManifest, oci_spec::OciSpecError> {
        let config = match chunk_index {
            Some(index) => DescriptorBuilder::default()
                .media_type(MediaType::Other(CHUNK_INDEX.to_string()))
                .digest(oci_spec::image::Digest::try_from(index.digest.as_str())?)
                .size(index.size)
                .build()?,
            None => DescriptorBuilder::default()
                .media_type(MediaType::EmptyJSON)
                .digest(oci_spec::image::Digest::try_from(config_digest)?)
                .size(EMPTY_CONFIG.len() as u64)
                .build()?,
        };
        let layer = DescriptorBuilder::default()
            .media_type(MediaType::Other(compression.media_type().to_string()))
            .digest(oci_spec::image::Digest::try_from(layer.digest.as_str())?)
            .size(layer.size)
            .annotations(annotations)
            .build()?;
        let layers = vec![layer];
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
