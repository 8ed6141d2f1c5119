//! A `--platform` push: the image index at the tag, with this platform's entry added or
//! replaced and the other entries kept.

use std::collections::HashMap;

use anyhow::{Context, Result};
use oci_spec::distribution::Reference;
use oci_spec::image::{
    Descriptor, DescriptorBuilder, ImageIndex, ImageIndexBuilder, MediaType, PlatformBuilder,
};

use super::canonical_json;
use super::session::Session;
use crate::digest::{Algorithm, Digest};
use crate::error::{Classify, Failure};
use crate::reference::Platform;
use crate::registry::manifest::media_type::{
    DISK_IMAGE_ARTIFACT, DOCKER_LIST, OCI_INDEX, OCI_MANIFEST,
};
use crate::registry::manifest::{ANNOTATION_DISKTYPE, entry_platform};

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

/// Pushes the image's manifest (`body`, of digest `digest`) by digest, then the index at the
/// tag with the image as `platform`'s entry, so that the index never names a missing manifest.
pub(super) async fn push_for_platform(
    session: &Session,
    reference: &Reference,
    body: Vec<u8>,
    digest: &str,
    platform: &Platform,
) -> Result<IndexUpdate> {
    let by_digest = Reference::with_digest(
        reference.registry().to_string(),
        reference.repository().to_string(),
        digest.to_string(),
    );
    let size = body.len() as u64;
    session
        .push_manifest(&by_digest, body, OCI_MANIFEST)
        .await?;
    let existing = session
        .pull_manifest(
            reference,
            &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST],
            &format!("reading the index at {reference}"),
        )
        .await?;
    let entry = platform_entry(digest, size, platform)?;
    let (index, update) = merge_into_index(
        existing
            .as_ref()
            .map(|(body, digest)| (&body[..], digest.as_str())),
        entry,
        platform,
    )?;
    session.push_manifest(reference, index, OCI_INDEX).await?;
    Ok(update)
}

fn platform_entry(digest: &str, size: u64, platform: &Platform) -> Result<Descriptor> {
    let build = || -> Result<Descriptor, oci_spec::OciSpecError> {
        let mut oci_platform = PlatformBuilder::default()
            .os(platform.os.as_str())
            .architecture(platform.architecture.as_str());
        if let Some(variant) = &platform.variant {
            oci_platform = oci_platform.variant(variant.clone());
        }
        // `disktype: raw` is how Ironic, Metal3 and podman machine-os tell an index's disk
        // entries, and the format, apart.
        DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .artifact_type(MediaType::Other(DISK_IMAGE_ARTIFACT.to_string()))
            .digest(oci_spec::image::Digest::try_from(digest)?)
            .size(size)
            .platform(oci_platform.build()?)
            .annotations(HashMap::from([(
                ANNOTATION_DISKTYPE.to_string(),
                "raw".to_string(),
            )]))
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
    let body = canonical_json(&index).context("encoding the image index")?;
    let update = IndexUpdate {
        digest: Digest::of(Algorithm::Sha256, &body).to_string(),
        platforms,
        replaced,
    };
    Ok((body, update))
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
