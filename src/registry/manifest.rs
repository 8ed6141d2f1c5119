//! Manifests, pure: what a manifest or image index says, read without any I/O (the part the
//! `manifest` fuzz target runs), and the media types and annotations ocidd reads and writes.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::compression::Compression;
use crate::digest::Digest;
use crate::error::{Classify, Failure};
use crate::fail;
use crate::reference::Platform;

/// The media types ocidd reads and writes, in one place.
pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker's schema 1, recognised only to be refused clearly.
    pub const DOCKER_SCHEMA1: &[&str] = &[
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ];
    /// The disk-image layer: gzip, zstd, or the raw image.
    pub const LAYER_GZIP: &str = "application/octet-stream+gzip";
    pub const LAYER_ZSTD: &str = "application/octet-stream+zstd";
    pub const LAYER_RAW: &str = "application/octet-stream";
    /// The chunk index layer (see `chunks`).
    pub const CHUNK_INDEX: &str = "application/vnd.ocidd.chunk-index.v1+json";
    /// The artifact type of manifests `ocidd push` writes.
    pub const DISK_IMAGE_ARTIFACT: &str = "application/vnd.ocidd.disk-image.v1";
}

use media_type::{
    CHUNK_INDEX, DOCKER_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1, LAYER_GZIP, LAYER_RAW, LAYER_ZSTD,
    OCI_INDEX, OCI_MANIFEST,
};

/// Manifests larger than this are refused before they are read.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// Annotation on an image layer: the size of the uncompressed image in bytes.
pub const ANNOTATION_IMAGE_SIZE: &str = "ocidd.image.size";
/// Annotation on an image layer: the digest of the uncompressed image.
pub const ANNOTATION_IMAGE_DIGEST: &str = "ocidd.image.digest";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayer {
    pub digest: Digest,
    pub size: u64,
    pub compression: Compression,
    /// The uncompressed size, when the layer is annotated with it.
    pub image_size: Option<u64>,
    /// The chunk index layer (digest, size), when the image was pushed in chunks.
    pub chunk_index: Option<(Digest, u64)>,
}

/// What a manifest leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// An image manifest: its disk-image layer.
    Layer(ImageLayer),
    /// An image index: the manifest to fetch for the platform.
    Manifest(Digest),
}

/// Reads a manifest (image manifest or index, OCI or Docker schema 2): the disk-image layer
/// of an image manifest, or the entry of an index that matches `platform`. `content_type` is
/// the response's, used when the manifest does not say its media type.
pub fn interpret_manifest(
    body: &[u8],
    content_type: Option<&str>,
    platform: &Platform,
) -> Result<Resolved> {
    match manifest_kind(body, content_type)? {
        ManifestKind::Image => image_layer(body).map(Resolved::Layer),
        ManifestKind::Index => {
            let index: ImageIndex = serde_json::from_slice(body)
                .context("the image index is malformed")
                .classify(Failure::Verification)?;
            let entry = select_platform(&index, platform)?;
            let digest = entry
                .digest()
                .to_string()
                .parse()
                .context("the image index entry's digest")
                .classify(Failure::Verification)?;
            Ok(Resolved::Manifest(digest))
        }
    }
}

#[derive(Deserialize)]
struct ManifestHead {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    manifests: Option<serde_json::Value>,
}

#[derive(Debug)]
enum ManifestKind {
    Image,
    Index,
}

fn manifest_kind(body: &[u8], content_type: Option<&str>) -> Result<ManifestKind> {
    let head: ManifestHead = serde_json::from_slice(body)
        .map_err(|e| anyhow!("the manifest is not valid JSON: {e}"))
        .classify(Failure::Verification)?;
    let media_type = head.media_type.as_deref().or(content_type);
    match media_type {
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => Ok(ManifestKind::Image),
        Some(OCI_INDEX | DOCKER_LIST) => Ok(ManifestKind::Index),
        Some(t) if DOCKER_SCHEMA1.contains(&t) || head.schema_version == Some(1) => fail!(
            Failure::Verification,
            "the manifest is a Docker schema 1 manifest, which is not supported"
        ),
        // OCI allows leaving mediaType out; the shape tells then.
        _ if head.media_type.is_none() && head.schema_version == Some(2) => {
            Ok(match head.manifests {
                Some(_) => ManifestKind::Index,
                None => ManifestKind::Image,
            })
        }
        Some(t) => fail!(
            Failure::Verification,
            "the manifest has media type {t}, which is neither an image manifest nor an image index"
        ),
        None => fail!(
            Failure::Verification,
            "the manifest has no media type and no schemaVersion 2"
        ),
    }
}

/// An index entry's platform as people write it (`linux/arm64/v8`), or what it is without one.
pub fn entry_platform(entry: &Descriptor) -> String {
    match entry.platform() {
        Some(p) => match p.variant() {
            Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
            None => format!("{}/{}", p.os(), p.architecture()),
        },
        None => format!("(no platform: {})", entry.digest()),
    }
}

fn select_platform<'a>(index: &'a ImageIndex, wanted: &Platform) -> Result<&'a Descriptor> {
    if let Some(entry) = index.manifests().iter().find(|d| wanted.selects(d)) {
        return Ok(entry);
    }
    let available: Vec<String> = index.manifests().iter().map(entry_platform).collect();
    fail!(
        Failure::Verification,
        "the image index has no entry for {wanted}; it has: {} (choose one with oci.platform= or --platform)",
        if available.is_empty() {
            "nothing".to_string()
        } else {
            available.join(", ")
        }
    )
}

fn image_layer(body: &[u8]) -> Result<ImageLayer> {
    let manifest: ImageManifest = serde_json::from_slice(body)
        .context("the image manifest is malformed")
        .classify(Failure::Verification)?;
    let images: Vec<(&Descriptor, Compression)> = manifest
        .layers()
        .iter()
        .filter_map(|l| Compression::from_media_type(l.media_type().as_ref()).map(|c| (l, c)))
        .collect();
    let [(layer, compression)] = images.as_slice() else {
        let present: Vec<String> = manifest
            .layers()
            .iter()
            .map(|l| format!("{} ({} bytes)", l.media_type(), l.size()))
            .collect();
        let present = if present.is_empty() {
            "no layers".to_string()
        } else {
            format!("layers: {}", present.join(", "))
        };
        // The usual slip: a disk image pushed with a tool's default layer type.
        let hint = if images.is_empty() && !manifest.layers().is_empty() {
            " (push the image with its media type: `ocidd push`, or `oras push REF disk.img.gz:application/octet-stream+gzip`)"
        } else {
            ""
        };
        fail!(
            Failure::Verification,
            "the manifest must have exactly one disk-image layer ({LAYER_GZIP}, {LAYER_ZSTD} or {LAYER_RAW}) but has {}; {present}{hint}",
            images.len()
        )
    };
    let digest: Digest = layer
        .digest()
        .to_string()
        .parse()
        .context("the image layer's digest")
        .classify(Failure::Verification)?;
    let annotations = layer.annotations().clone().unwrap_or_default();
    let image_size = annotation_u64(&annotations, ANNOTATION_IMAGE_SIZE)?;
    let indexes: Vec<&Descriptor> = manifest
        .layers()
        .iter()
        .filter(|l| l.media_type().as_ref() == CHUNK_INDEX)
        .collect();
    let chunk_index = match indexes.as_slice() {
        [] => None,
        [index] => Some((
            index
                .digest()
                .to_string()
                .parse::<Digest>()
                .context("the chunk index layer's digest")
                .classify(Failure::Verification)?,
            index.size(),
        )),
        _ => fail!(
            Failure::Verification,
            "the manifest has {} chunk index layers; at most one is allowed",
            indexes.len()
        ),
    };
    if *compression == Compression::None && image_size.is_some_and(|n| n != layer.size()) {
        fail!(
            Failure::Verification,
            "the uncompressed layer's size ({}) differs from its {ANNOTATION_IMAGE_SIZE} annotation",
            layer.size()
        );
    }
    Ok(ImageLayer {
        digest,
        size: layer.size(),
        compression: *compression,
        image_size: image_size.or((*compression == Compression::None).then_some(layer.size())),
        chunk_index,
    })
}

fn annotation_u64(annotations: &HashMap<String, String>, key: &str) -> Result<Option<u64>> {
    annotations
        .get(key)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| anyhow!("the layer annotation {key}={v:?} is not a number"))
                .classify(Failure::Verification)
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(layers: &str) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},
            "layers":[{layers}]}}"#
        )
        .into_bytes()
    }

    fn layer(media_type: &str, annotations: &str) -> String {
        format!(
            r#"{{"mediaType":"{media_type}","digest":"sha256:{}","size":1234{annotations}}}"#,
            "ab".repeat(32)
        )
    }

    #[test]
    fn finds_the_one_image_layer() {
        let body = manifest(
            &[
                layer(LAYER_GZIP, r#","annotations":{"ocidd.image.size":"4096"}"#),
                layer("application/vnd.ocidd.other", ""),
            ]
            .join(","),
        );
        let l = image_layer(&body).unwrap();
        assert_eq!(l.compression, Compression::Gzip);
        assert_eq!(l.size, 1234);
        assert_eq!(l.image_size, Some(4096));
        let raw = image_layer(&manifest(&layer(LAYER_RAW, ""))).unwrap();
        assert_eq!(raw.image_size, Some(1234));
    }

    #[test]
    fn refuses_zero_or_two_image_layers() {
        let e = image_layer(&manifest("")).unwrap_err();
        assert!(format!("{e:#}").contains("has 0; no layers"), "{e:#}");
        let tar = layer("application/vnd.oci.image.layer.v1.tar+gzip", "");
        let e = image_layer(&manifest(&tar)).unwrap_err();
        assert!(
            format!("{e:#}")
                .contains("layers: application/vnd.oci.image.layer.v1.tar+gzip (1234 bytes)"),
            "{e:#}"
        );
        assert!(format!("{e:#}").contains("disk.img.gz:application/octet-stream+gzip"));
        let two = [layer(LAYER_GZIP, ""), layer(LAYER_ZSTD, "")].join(",");
        let e = image_layer(&manifest(&two)).unwrap_err();
        assert!(format!("{e:#}").contains("but has 2"), "{e:#}");
        let bad = layer(LAYER_GZIP, r#","annotations":{"ocidd.image.size":"big"}"#);
        assert!(image_layer(&manifest(&bad)).is_err());
    }

    #[test]
    fn tells_manifest_kinds() {
        assert!(matches!(
            manifest_kind(&manifest(""), None),
            Ok(ManifestKind::Image)
        ));
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            manifest_kind(index, None),
            Ok(ManifestKind::Index)
        ));
        assert!(matches!(
            manifest_kind(br#"{"schemaVersion":2,"manifests":[]}"#, Some(DOCKER_LIST)),
            Ok(ManifestKind::Index)
        ));
        let e = manifest_kind(b"<html>not json</html>", None).unwrap_err();
        assert!(format!("{e:#}").contains("not valid JSON"));
        assert!(manifest_kind(br#"{"schemaVersion":1}"#, Some(DOCKER_SCHEMA1[0])).is_err());
        assert!(manifest_kind(br#"{"mediaType":"text/plain"}"#, None).is_err());
    }

    #[test]
    fn selects_platforms() {
        let entry = |arch: &str, variant: &str| {
            format!(
                r#"{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{}","size":1,"platform":{{"os":"linux","architecture":"{arch}"{variant}}}}}"#,
                "cd".repeat(32)
            )
        };
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{},{}]}}"#,
            entry("amd64", ""),
            entry("arm64", r#","variant":"v8""#)
        );
        let index: ImageIndex = serde_json::from_str(&body).unwrap();
        let arm = select_platform(&index, &"linux/arm64".parse().unwrap()).unwrap();
        assert_eq!(
            arm.platform().as_ref().unwrap().architecture().to_string(),
            "arm64"
        );
        assert!(select_platform(&index, &"linux/arm64/v8".parse().unwrap()).is_ok());
        let e = select_platform(&index, &"linux/s390x".parse().unwrap()).unwrap_err();
        assert!(
            format!("{e:#}").contains("has: linux/amd64, linux/arm64/v8"),
            "{e:#}"
        );
    }

    #[test]
    fn an_index_leads_to_the_platform_manifest() {
        let platform: Platform = "linux/amd64".parse().unwrap();
        let index = |digest: &str| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
            )
        };
        let good = format!("sha256:{}", "ef".repeat(32));
        assert_eq!(
            interpret_manifest(index(&good).as_bytes(), None, &platform).unwrap(),
            Resolved::Manifest(good.parse().unwrap())
        );
        let sha384 = format!("sha384:{}", "ef".repeat(48));
        let e = interpret_manifest(index(&sha384).as_bytes(), None, &platform).unwrap_err();
        assert_eq!(
            crate::error::failure_of(&e),
            Some(Failure::Verification),
            "{e:#}"
        );
    }
}
