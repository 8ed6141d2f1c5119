//! `ocidd push`: compress a raw image while uploading it, then push a manifest whose single
//! layer is the image, so that `oci.tag=` (and the original `oras | gunzip | dd`) install it.
//! With `--platform`, the tag holds an image index instead, and the image becomes (or
//! replaces) that platform's entry in it: one tag serves amd64 and arm64 machines.

mod compress;
mod index;
pub mod sign;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use oci_spec::distribution::Reference;
use oci_spec::image::{DescriptorBuilder, ImageManifestBuilder, MediaType};
use serde::Serialize;

pub use compress::{DEFAULT_GZIP_LEVEL, DEFAULT_ZSTD_LEVEL, GZIP_LEVELS, ZSTD_LEVELS};
pub use index::IndexUpdate;

use crate::chunks::{Chunk, ChunkIndex};
use crate::cmdline::RegistryOptions;
use crate::compression::Compression;
use crate::digest::{Algorithm, Digest};
use crate::error::{Classify, Failure};
use crate::fail;
use crate::reference::Platform;
use crate::registry::auth::{Credentials, lookup_credentials};
use crate::registry::client::extra_certificates;
use crate::registry::manifest::media_type::{CHUNK_INDEX, DISK_IMAGE_ARTIFACT, OCI_MANIFEST};
use crate::registry::manifest::{ANNOTATION_IMAGE_DIGEST, ANNOTATION_IMAGE_SIZE};
use compress::Image;

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
    runtime.block_on(push(options, file, sign_key.as_ref()))
}

async fn push(
    options: &PushOptions,
    file: File,
    sign_key: Option<&p256::ecdsa::SigningKey>,
) -> Result<Pushed> {
    crate::registry::client::install_crypto_provider();
    let reference = &options.reference;
    let client = Client::new(client_config(&options.registry)?);
    let auth = authenticate(&client, reference, &options.registry).await?;
    let (layer, image, chunks) = upload_image(&client, options, file).await?;
    let config_digest = upload_blob(
        &client,
        reference,
        EMPTY_CONFIG.to_vec(),
        "the empty config",
    )
    .await?;
    let chunk_index = match chunks {
        Some(chunks) => Some(upload_chunk_index(&client, options, &layer, &image, chunks).await?),
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
            push_manifest(&client, reference, body, OCI_MANIFEST).await?;
            None
        }
        Some(platform) => Some(
            index::push_for_platform(&client, &auth, reference, body, &manifest_digest, platform)
                .await?,
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
            signatures
                .push(sign::sign(&client, &auth, reference, key, digest, &config_digest).await?);
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

/// Logs in for pushing, with the credentials the docker config has for the registry.
async fn authenticate(
    client: &Client,
    reference: &Reference,
    options: &RegistryOptions,
) -> Result<RegistryAuth> {
    let auth = match lookup_credentials(reference.registry(), options.auth.as_deref())? {
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
    Ok(auth)
}

/// Compresses the image while uploading it as the layer; returns the layer, the image as
/// read, and where each chunk landed when compressed in chunks.
async fn upload_image(
    client: &Client,
    options: &PushOptions,
    file: File,
) -> Result<(Uploaded, Image, Option<Vec<Chunk>>)> {
    let (pieces, compressor) =
        compress::start(file, options.compression, options.level, options.chunk_size)?;
    let stream = futures_util::stream::unfold(pieces, |mut pieces| async move {
        pieces.recv().await.map(|piece| (piece, pieces))
    });
    let uploaded = client
        .push_blob_stream_chunked(&options.reference, stream)
        .await
        .map_err(registry_error)
        .context("uploading the image");
    let compressed = compressor
        .join()
        .map_err(|_| anyhow!("the compressor thread panicked"))
        .classify(Failure::Target)?
        .with_context(|| format!("reading {}", options.file.display()));
    // When the upload failed, the compressor only saw it stop: the upload says why.
    let (uploaded, (image, chunks)) = match (uploaded, compressed) {
        (Err(upload), Err(read)) if compress::is_upload_stopped(&read) => return Err(upload),
        (uploaded, compressed) => (uploaded, compressed?),
    };
    let uploaded = uploaded?;
    let layer = Uploaded {
        digest: uploaded.blob_digest,
        size: uploaded.size,
    };
    Ok((layer, image, chunks))
}

/// Uploads the chunk index of the `layer` just uploaded.
async fn upload_chunk_index(
    client: &Client,
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
        chunks,
    };
    let body = serde_json::to_vec(&index).context("encoding the chunk index")?;
    let size = body.len() as u64;
    let digest = upload_blob(client, &options.reference, body, "the chunk index").await?;
    Ok(Uploaded { digest, size })
}

/// Uploads a small blob (`what` it is, for the error); returns its digest.
pub(super) async fn upload_blob(
    client: &Client,
    reference: &Reference,
    body: Vec<u8>,
    what: &str,
) -> Result<String> {
    let digest = Digest::of(Algorithm::Sha256, &body).to_string();
    client
        .push_blob(reference, body, &digest)
        .await
        .map_err(registry_error)
        .with_context(|| format!("uploading {what}"))?;
    Ok(digest)
}

/// JSON through a `Value`, whose maps are sorted, so that the same content always gets the
/// same digest (annotations are a HashMap).
pub(super) fn canonical_json(value: &impl Serialize) -> serde_json::Result<Vec<u8>> {
    serde_json::to_value(value).and_then(|value| serde_json::to_vec(&value))
}

pub(super) async fn push_manifest(
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

/// The image's manifest: an empty config, the image layer annotated with the image's size
/// and digest, and the chunk index layer if there is one.
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
            .digest(oci_spec::image::Digest::try_from(layer.digest.as_str())?)
            .size(layer.size)
            .annotations(annotations)
            .build()?;
        let mut layers = vec![layer];
        if let Some(index) = chunk_index {
            layers.push(
                DescriptorBuilder::default()
                    .media_type(MediaType::Other(CHUNK_INDEX.to_string()))
                    .digest(oci_spec::image::Digest::try_from(index.digest.as_str())?)
                    .size(index.size)
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

pub(super) fn registry_error(error: OciDistributionError) -> anyhow::Error {
    crate::error::classified(Failure::Registry, error.into())
}
