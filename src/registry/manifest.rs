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
    pub const LAYER_XZ: &str = "application/octet-stream+xz";
    /// What `file --mime-type` says of xz, and what people label xz layers with.
    pub const LAYER_XZ_ALIAS: &str = "application/x-xz";
    /// The chunk index layer (see `chunks`).
    pub const CHUNK_INDEX: &str = "application/vnd.ocidd.chunk-index.v1+json";
    /// The artifact type of manifests `ocidd push` writes.
    pub const DISK_IMAGE_ARTIFACT: &str = "application/vnd.ocidd.disk-image.v1";

    /// Layers that hold a disk image in another tool's shape, recognised by their content
    /// (compression by magic; a tar is a KubeVirt containerDisk, else the raw image):
    /// `oras push disk.img` with no type (and Tinkerbell's oci2disk), a containerDisk built
    /// as a container image, the plain compressed types Ironic and podman machine-os use.
    pub const BY_CONTENT: &[&str] = &[
        ORAS_DEFAULT,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/gzip",
        "application/x-gzip",
        "application/zstd",
        "application/x-xz",
        "application/x-qemu-disk",
    ];
    /// oras's layer type for a file pushed without one (and a container image's plain tar).
    pub const ORAS_DEFAULT: &str = "application/vnd.oci.image.layer.v1.tar";
    /// KubeVirt's disk layers (VEP 256): `…disk.raw+zstd`, `…disk.qcow2`, recognised by content.
    pub const KUBEVIRT_DISK_PREFIX: &str = "application/vnd.kubevirt.disk.";
    /// A container image's configuration: with more than one layer, a container (bootc), not
    /// a disk.
    pub const CONTAINER_CONFIGS: &[&str] = &[
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
    ];
}

use media_type::{
    CHUNK_INDEX, CONTAINER_CONFIGS, DOCKER_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1, LAYER_GZIP,
    LAYER_RAW, LAYER_XZ, LAYER_ZSTD, OCI_INDEX, OCI_MANIFEST,
};

/// Manifests larger than this are refused before they are read.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// Annotation on an image layer: the size of the uncompressed image in bytes.
pub const ANNOTATION_IMAGE_SIZE: &str = "ocidd.image.size";
/// Annotation on an image layer: the digest of the uncompressed image.
pub const ANNOTATION_IMAGE_DIGEST: &str = "ocidd.image.digest";
/// Annotation on an image index entry: the disk format of the manifest it names (Ironic,
/// Metal3, podman machine-os).
pub const ANNOTATION_DISKTYPE: &str = "disktype";
/// Annotation on a KubeVirt disk layer (VEP 256): the disk's name.
pub const ANNOTATION_KUBEVIRT_DISK_NAME: &str = "io.kubevirt.disk.name";

/// The `disktype` values read, most preferred first, as Ironic's agent prefers them when it
/// streams onto the disk: the raw forms, then qcow2. Entries without one follow; entries
/// with another (`hyperv`: VHDX) are passed over.
const DISKTYPES: &[&str] = &["raw", "applehv", "qcow2", "qemu"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayer {
    pub digest: Digest,
    pub size: u64,
    /// How its media type says it is compressed; `None` when only its content tells (see
    /// [`media_type::BY_CONTENT`]).
    pub compression: Option<Compression>,
    /// The uncompressed size, when the layer is annotated with it.
    pub image_size: Option<u64>,
    /// The chunk index (digest, size), when the image was pushed in chunks.
    pub chunk_index: Option<(Digest, u64)>,
    /// What the install should say about the choice of this layer.
    pub note: Option<String>,
}

/// What a manifest leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// An image manifest: its disk-image layer.
    Layer(ImageLayer),
    /// An image index: the manifests for the platform, the one to install first (see
    /// `disktype`).
    Manifests(Vec<Candidate>),
    /// A container image (a container configuration and several layers: bootc), not a disk.
    ContainerImage { layers: usize },
}

/// Why a container image is not installed; `what` names it.
pub fn container_image(what: &str, layers: usize) -> String {
    format!(
        "{what} is a container image ({layers} layers and a container configuration: bootc?), not a disk image; ocidd installs one disk layer, or a containerDisk's one tar layer"
    )
}

/// An index entry for the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub digest: Digest,
    /// As people write it: `linux/x86_64 (disktype raw)`.
    pub description: String,
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
        ManifestKind::Image => image_manifest(body),
        ManifestKind::Index => {
            let index: ImageIndex = serde_json::from_slice(body)
                .context("the image index is malformed")
                .classify(Failure::Verification)?;
            select_platform(&index, platform)?
                .into_iter()
                .map(|entry| {
                    Ok(Candidate {
                        digest: entry
                            .digest()
                            .to_string()
                            .parse()
                            .context("the image index entry's digest")
                            .classify(Failure::Verification)?,
                        description: describe_entry(entry),
                    })
                })
                .collect::<Result<_>>()
                .map(Resolved::Manifests)
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

/// An index entry's platform as people write it (`linux/arm64/v8`), or what it is without
/// one.
pub fn entry_platform(entry: &Descriptor) -> String {
    match entry.platform() {
        Some(p) => match p.variant() {
            Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
            None => format!("{}/{}", p.os(), p.architecture()),
        },
        None => format!("(no platform: {})", entry.digest()),
    }
}

/// An index entry as an install names it: its platform, and its `disktype` if it has one.
fn describe_entry(entry: &Descriptor) -> String {
    let platform = entry_platform(entry);
    match disktype(entry) {
        Some(disktype) => format!("{platform} (disktype {disktype})"),
        None => platform,
    }
}

fn disktype(entry: &Descriptor) -> Option<&str> {
    entry
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_DISKTYPE))
        .map(String::as_str)
}

/// Where an entry's `disktype` puts it among the platform's entries (see [`DISKTYPES`]);
/// `None` for a disk format not read.
fn disktype_rank(entry: &Descriptor) -> Option<usize> {
    match disktype(entry) {
        None => Some(DISKTYPES.len()),
        Some(disktype) => DISKTYPES.iter().position(|d| *d == disktype),
    }
}

/// The entries for `wanted`, the preferred first; entries of equal rank keep the index's
/// order.
fn select_platform<'a>(index: &'a ImageIndex, wanted: &Platform) -> Result<Vec<&'a Descriptor>> {
    let for_platform: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| wanted.selects(d))
        .collect();
    let mut entries: Vec<(usize, &Descriptor)> = for_platform
        .iter()
        .filter_map(|d| disktype_rank(d).map(|rank| (rank, *d)))
        .collect();
    entries.sort_by_key(|(rank, _)| *rank);
    if !entries.is_empty() {
        return Ok(entries.into_iter().map(|(_, d)| d).collect());
    }
    if !for_platform.is_empty() {
        let unread: Vec<String> = for_platform.iter().map(|d| describe_entry(d)).collect();
        fail!(
            Failure::Verification,
            "the image index's entries for {wanted} hold disks ocidd does not read: {} (it reads disktype {} or none)",
            unread.join(", "),
            DISKTYPES.join(", ")
        );
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

/// How a layer's media type says it holds the disk image.
fn disk_layer(media_type: &str) -> Option<Option<Compression>> {
    if let Some(compression) = Compression::from_media_type(media_type) {
        return Some(Some(compression));
    }
    let by_content = media_type::BY_CONTENT.contains(&media_type)
        || media_type.starts_with(media_type::KUBEVIRT_DISK_PREFIX);
    by_content.then_some(None)
}

/// What an image manifest holds: its one disk layer, or a container image.
fn image_manifest(body: &[u8]) -> Result<Resolved> {
    let manifest: ImageManifest = serde_json::from_slice(body)
        .context("the image manifest is malformed")
        .classify(Failure::Verification)?;
    let config_type = manifest.config().media_type().to_string();
    if CONTAINER_CONFIGS.contains(&config_type.as_str()) && manifest.layers().len() > 1 {
        return Ok(Resolved::ContainerImage {
            layers: manifest.layers().len(),
        });
    }
    let disks: Vec<(&Descriptor, Option<Compression>)> = manifest
        .layers()
        .iter()
        .filter_map(|l| disk_layer(l.media_type().as_ref()).map(|c| (l, c)))
        .collect();
    fn named(l: &Descriptor) -> Option<&str> {
        layer_annotation(l, ANNOTATION_KUBEVIRT_DISK_NAME)
    }
    let ((layer, compression), note) = match disks.as_slice() {
        [one] => (*one, None),
        // KubeVirt's disks, named: the first is the one it boots.
        [first, rest @ ..] if disks.iter().all(|(l, _)| named(l).is_some()) => (
            *first,
            Some(format!(
                "the manifest has {} disks; installing the first, {}, not {}",
                disks.len(),
                named(first.0).unwrap_or_default(),
                rest.iter()
                    .map(|(l, _)| named(l).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        ),
        _ => fail!(
            Failure::Verification,
            "the manifest must have exactly one disk-image layer but has {}; {} (a disk layer is {LAYER_GZIP}, {LAYER_ZSTD}, {LAYER_XZ}, {LAYER_RAW}, or one of {} holding a raw image, compressed or not, or a containerDisk tar)",
            disks.len(),
            describe_layers(&manifest),
            media_type::BY_CONTENT.join(", ")
        ),
    };
    let digest: Digest = layer
        .digest()
        .to_string()
        .parse()
        .context("the image layer's digest")
        .classify(Failure::Verification)?;
    let annotations = layer.annotations().clone().unwrap_or_default();
    let image_size = annotation_u64(&annotations, ANNOTATION_IMAGE_SIZE)?;
    let chunk_index = chunk_index(&manifest)?;
    let raw = compression == Some(Compression::None);
    if raw && image_size.is_some_and(|n| n != layer.size()) {
        fail!(
            Failure::Verification,
            "the uncompressed layer's size ({}) differs from its {ANNOTATION_IMAGE_SIZE} annotation",
            layer.size()
        );
    }
    Ok(Resolved::Layer(ImageLayer {
        digest,
        size: layer.size(),
        compression,
        image_size: image_size.or(raw.then_some(layer.size())),
        chunk_index,
        note,
    }))
}

/// The chunk index (digest, size): the manifest's config, as `ocidd push` writes it, or a
/// second layer, as it wrote it before (see docs/image-conventions.md).
fn chunk_index(manifest: &ImageManifest) -> Result<Option<(Digest, u64)>> {
    let config = manifest.config();
    let mut indexes: Vec<&Descriptor> = manifest
        .layers()
        .iter()
        .filter(|l| l.media_type().as_ref() == CHUNK_INDEX)
        .collect();
    if config.media_type().as_ref() == CHUNK_INDEX {
        indexes.push(config);
    }
    match indexes.as_slice() {
        [] => Ok(None),
        [index] => Ok(Some((
            index
                .digest()
                .to_string()
                .parse::<Digest>()
                .context("the chunk index's digest")
                .classify(Failure::Verification)?,
            index.size(),
        ))),
        _ => fail!(
            Failure::Verification,
            "the manifest has {} chunk indexes; at most one is allowed",
            indexes.len()
        ),
    }
}

fn layer_annotation<'a>(layer: &'a Descriptor, key: &str) -> Option<&'a str> {
    layer
        .annotations()
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The layers as a refusal names them: type, size, and the name a tool gave.
fn describe_layers(manifest: &ImageManifest) -> String {
    let layers: Vec<String> = manifest
        .layers()
        .iter()
        .map(|l| {
            let name = layer_annotation(l, ANNOTATION_KUBEVIRT_DISK_NAME)
                .or(layer_annotation(l, "org.opencontainers.image.title"))
                .map_or(String::new(), |n| format!(" {n:?}"));
            format!("{}{name} ({} bytes)", l.media_type(), l.size())
        })
        .collect();
    if layers.is_empty() {
        "no layers".to_string()
    } else {
        format!("layers: {}", layers.join(", "))
    }
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
    use media_type::ORAS_DEFAULT;

    fn text(body: Vec<u8>) -> String {
        String::from_utf8(body).unwrap()
    }

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

    fn image_layer(body: &[u8]) -> Result<ImageLayer> {
        match image_manifest(body)? {
            Resolved::Layer(layer) => Ok(layer),
            other => Err(anyhow!("not a layer: {other:?}")),
        }
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
        assert_eq!(l.compression, Some(Compression::Gzip));
        assert_eq!(l.size, 1234);
        assert_eq!(l.image_size, Some(4096));
        let raw = image_layer(&manifest(&layer(LAYER_RAW, ""))).unwrap();
        assert_eq!(raw.image_size, Some(1234));
    }

    #[test]
    fn refuses_zero_or_two_image_layers() {
        let e = image_layer(&manifest("")).unwrap_err();
        assert!(format!("{e:#}").contains("has 0; no layers"), "{e:#}");
        let wasm = layer(
            "application/vnd.wasm.content.layer.v1+wasm",
            r#","annotations":{"org.opencontainers.image.title":"app.wasm"}"#,
        );
        let e = image_layer(&manifest(&wasm)).unwrap_err();
        assert!(
            format!("{e:#}").contains(
                r#"layers: application/vnd.wasm.content.layer.v1+wasm "app.wasm" (1234 bytes)"#
            ),
            "{e:#}"
        );
        assert!(
            format!("{e:#}").contains("application/octet-stream+xz"),
            "{e:#}"
        );
        assert!(format!("{e:#}").contains(ORAS_DEFAULT), "{e:#}");
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
        let arm = select_platform(&index, &"linux/arm64".parse().unwrap()).unwrap()[0];
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
            Resolved::Manifests(vec![Candidate {
                digest: good.parse().unwrap(),
                description: "linux/amd64".into()
            }])
        );
        let sha384 = format!("sha384:{}", "ef".repeat(48));
        let e = interpret_manifest(index(&sha384).as_bytes(), None, &platform).unwrap_err();
        assert_eq!(
            crate::error::failure_of(&e),
            Some(Failure::Verification),
            "{e:#}"
        );
    }

    #[test]
    fn other_tools_disk_layers_are_read_by_content() {
        for media_type in [
            ORAS_DEFAULT,
            "application/zstd",
            "application/vnd.kubevirt.disk.raw+zstd",
        ] {
            let l = image_layer(&manifest(&layer(media_type, ""))).unwrap();
            assert_eq!(l.compression, None, "{media_type}");
            assert_eq!(l.image_size, None, "{media_type}");
        }
        let xz = image_layer(&manifest(&layer("application/x-xz", ""))).unwrap();
        assert_eq!(xz.compression, Some(Compression::Xz));
        // ocidd's old shape: the disk and the chunk index as layers; its new: the index as
        // the config.
        let old = [layer(LAYER_GZIP, ""), layer(CHUNK_INDEX, "")].join(",");
        assert!(image_layer(&manifest(&old)).unwrap().chunk_index.is_some());
        let new = text(manifest(&layer(LAYER_GZIP, "")))
            .replace("application/vnd.oci.empty.v1+json", CHUNK_INDEX);
        let l = image_layer(new.as_bytes()).unwrap();
        assert_eq!(l.chunk_index.map(|(_, size)| size), Some(2));
    }

    #[test]
    fn named_kubevirt_disks_install_the_first_and_say_so() {
        let disk = |name: &str| {
            layer(
                "application/vnd.kubevirt.disk.raw+zstd",
                &format!(r#","annotations":{{"io.kubevirt.disk.name":"{name}"}}"#),
            )
        };
        let l = image_layer(&manifest(&[disk("root"), disk("data")].join(","))).unwrap();
        let note = l.note.unwrap();
        assert!(
            note.contains("installing the first, root, not data"),
            "{note}"
        );
    }

    #[test]
    fn a_container_image_is_told_apart() {
        let body = text(manifest(
            &[layer(ORAS_DEFAULT, ""), layer(ORAS_DEFAULT, "")].join(","),
        ))
        .replace(
            "application/vnd.oci.empty.v1+json",
            "application/vnd.oci.image.config.v1+json",
        );
        assert_eq!(
            image_manifest(body.as_bytes()).unwrap(),
            Resolved::ContainerImage { layers: 2 }
        );
        // One tar layer under a container configuration: a containerDisk.
        let one = text(manifest(&layer(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "",
        )))
        .replace(
            "application/vnd.oci.empty.v1+json",
            "application/vnd.oci.image.config.v1+json",
        );
        assert!(matches!(
            image_manifest(one.as_bytes()),
            Ok(Resolved::Layer(_))
        ));
    }

    #[test]
    fn disktype_orders_a_platforms_entries() {
        let entry = |arch: &str, disktype: Option<&str>, digit: char| {
            let annotations = disktype
                .map(|d| format!(r#","annotations":{{"disktype":"{d}"}}"#))
                .unwrap_or_default();
            format!(
                r#"{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{}","size":1,"platform":{{"os":"linux","architecture":"{arch}"}}{annotations}}}"#,
                digit.to_string().repeat(64)
            )
        };
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
            [
                entry("amd64", None, '1'),
                entry("x86_64", Some("hyperv"), '2'),
                entry("x86_64", Some("qcow2"), '3'),
                entry("x86_64", Some("raw"), '4'),
                entry("aarch64", Some("raw"), '5'),
            ]
            .join(",")
        );
        let Resolved::Manifests(candidates) =
            interpret_manifest(body.as_bytes(), None, &"linux/amd64".parse().unwrap()).unwrap()
        else {
            panic!("not an index");
        };
        let order: Vec<&str> = candidates.iter().map(|c| c.description.as_str()).collect();
        assert_eq!(
            order,
            [
                "linux/x86_64 (disktype raw)",
                "linux/x86_64 (disktype qcow2)",
                "linux/amd64"
            ]
        );
        let only_hyperv = format!(
            r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
            entry("amd64", Some("hyperv"), '2')
        );
        let e = interpret_manifest(
            only_hyperv.as_bytes(),
            None,
            &"linux/amd64".parse().unwrap(),
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("does not read: linux/amd64 (disktype hyperv)"),
            "{e:#}"
        );
    }
}
