//! `ocidd push`: compress a raw image while uploading it, then push a manifest whose single
//! layer is the image, so that `oci.tag=` (and the original `oras | gunzip | dd`) install it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
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
    let compressor = thread::Builder::new()
        .name("compress".into())
        .spawn(move || compress(file, compression, level, sender))
        .context("starting the compressor")
        .classify(Failure::Target)?;
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|piece| (piece, receiver))
    });
    let uploaded = client.push_blob_stream_chunked(reference, stream).await;
    let image = compressor
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

    let manifest = manifest(
        &options.file,
        compression,
        &uploaded.blob_digest,
        uploaded.size,
        &image,
        &config_digest,
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
    })
}

fn manifest(
    file: &Path,
    compression: Compression,
    layer_digest: &str,
    layer_size: u64,
    image: &Image,
    config_digest: &str,
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
        ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .artifact_type(MediaType::Other(ARTIFACT_TYPE.to_string()))
            .config(config)
            .layers(vec![layer])
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

/// Reads the image, hashing it, and sends it compressed to the uploader in pieces.
fn compress(
    mut file: File,
    compression: Compression,
    level: Option<i32>,
    sender: mpsc::Sender<Result<Bytes, OciDistributionError>>,
) -> Result<Image> {
    let output = ChannelWriter {
        sender,
        piece: BytesMut::with_capacity(UPLOAD_PIECE),
    };
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
