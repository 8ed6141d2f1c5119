//! What to fetch: an image by tag (resolved through its manifest) or a blob by digest, and the
//! platform that selects an entry of an image index.

use std::fmt;
use std::str::FromStr;

use oci_spec::distribution::Reference;
use oci_spec::image::Descriptor;

use crate::digest::Digest;

/// The image to install, as the operator named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// `REGISTRY/REPO:TAG` (or pinned with `@DIGEST`): resolved through the manifest.
    Tag(Reference),
    /// `REGISTRY/REPO@DIGEST`: that blob, fetched directly.
    Blob(Reference, Digest),
}

impl ImageSource {
    pub fn reference(&self) -> &Reference {
        match self {
            ImageSource::Tag(r) | ImageSource::Blob(r, _) => r,
        }
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reference())
    }
}

fn parse_reference(text: &str) -> Result<Reference, String> {
    let reference: Reference = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    // The reference grammar lets an uppercase first component pass as a registry host that
    // is then taken as part of the repository.
    if reference
        .repository()
        .bytes()
        .any(|b| b.is_ascii_uppercase())
    {
        return Err(format!("{text:?}: repository name must be lowercase"));
    }
    if let Some(digest) = reference.digest() {
        digest
            .parse::<Digest>()
            .map_err(|e| format!("{text:?}: {e}"))?;
    }
    Ok(reference)
}

/// Parses `REGISTRY/REPO:TAG`, `REGISTRY/REPO@DIGEST` or `REGISTRY/REPO:TAG@DIGEST`.
pub fn parse_tag(text: &str) -> Result<ImageSource, String> {
    let reference =
        parse_reference(text).map_err(|e| format!("{e} (expected REGISTRY/REPOSITORY:TAG)"))?;
    Ok(ImageSource::Tag(reference))
}

/// Parses `REGISTRY/REPO@DIGEST`.
pub fn parse_blob(text: &str) -> Result<ImageSource, String> {
    let expected = "(expected REGISTRY/REPOSITORY@sha256:HEX)";
    let reference = parse_reference(text).map_err(|e| format!("{e} {expected}"))?;
    let digest = match reference.digest() {
        // The reference parser fills in `latest` only when there is no digest, so a tag here
        // was written by the operator.
        Some(digest) if reference.tag().is_none() => digest.parse::<Digest>(),
        Some(_) => return Err(format!("{text:?} names a tag and a digest {expected}")),
        None => return Err(format!("{text:?} has no digest {expected}")),
    };
    let digest = digest.map_err(|e| format!("{text:?}: {e}"))?;
    Ok(ImageSource::Blob(reference, digest))
}

/// An OS/architecture pair (with optional variant) as image indexes describe platforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary was built for, in OCI's names.
    pub fn current() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "riscv64" => "riscv64",
            "s390x" => "s390x",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: None,
        }
    }
}

impl Platform {
    /// Whether `entry` of an image index is for this platform: the same OS and architecture,
    /// and the same variant unless this platform names none. This one rule decides both what
    /// an install selects and what `ocidd push --platform` replaces. An arm64 entry without a
    /// variant is arm64/v8, its only variant (containerd reads it the same way).
    pub fn selects(&self, entry: &Descriptor) -> bool {
        let Some(theirs) = entry.platform() else {
            return false;
        };
        let architecture = theirs.architecture().to_string();
        let variant = |architecture: &str, variant: Option<&str>| match (architecture, variant) {
            ("arm64", None) => Some("v8".to_string()),
            (_, variant) => variant.map(str::to_string),
        };
        theirs.os().to_string() == self.os
            && architecture == self.architecture
            && (self.variant.is_none()
                || variant(&architecture, theirs.variant().as_deref())
                    == variant(&self.architecture, self.variant.as_deref()))
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(format!(
                "{text:?} is not a platform (expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/arm64)"
            )),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "243786d4bef167ff79122d052ded386cbac007e71bdb9e15d6ffbf31b6dbe54d";

    #[test]
    fn tags() {
        let ImageSource::Tag(r) = parse_tag("10.0.2.2:5000/disks/base:v1").unwrap() else {
            panic!()
        };
        assert_eq!(r.registry(), "10.0.2.2:5000");
        assert_eq!(r.repository(), "disks/base");
        assert_eq!(r.tag(), Some("v1"));
        assert!(parse_tag(&format!("localhost:5000/disk@sha256:{HEX}")).is_ok());
        assert!(parse_tag("registry.example.com/Disk:v1").is_err());
        assert!(parse_tag("NOT/valid").unwrap_err().contains("lowercase"));
        assert!(parse_tag("registry.example.com/disk:").is_err());
        assert!(parse_tag("").is_err());
        assert!(parse_tag("localhost:5000/disk@md5:0123456789abcdef0123456789abcdef").is_err());
    }

    #[test]
    fn blobs() {
        let ImageSource::Blob(r, d) = parse_blob(&format!("r.example/disk@sha256:{HEX}")).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.repository(), "disk");
        assert_eq!(d.to_string(), format!("sha256:{HEX}"));
        let err = parse_blob("r.example/disk:v1").unwrap_err();
        assert!(err.contains("has no digest"), "{err}");
        let err = parse_blob(&format!("r.example/disk:v1@sha256:{HEX}")).unwrap_err();
        assert!(err.contains("tag and a digest"), "{err}");
        let err = parse_blob(&format!("r.example/disk@sha256:{}", HEX.to_uppercase())).unwrap_err();
        assert!(err.contains("lowercase hex"), "{err}");
    }

    #[test]
    fn platforms() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//".parse::<Platform>().is_err());
        assert!("Linux/AMD64".parse::<Platform>().is_err());
        assert_eq!(Platform::current().os, "linux");
    }

    #[test]
    fn one_rule_selects_index_entries() {
        let entry = |platform: &str| -> Descriptor {
            let mut parts = platform.split('/');
            let (os, arch, variant) = (parts.next().unwrap(), parts.next().unwrap(), parts.next());
            let variant = variant
                .map(|v| format!(r#","variant":"{v}""#))
                .unwrap_or_default();
            serde_json::from_str(&format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{HEX}","size":1,"platform":{{"os":"{os}","architecture":"{arch}"{variant}}}}}"#
            ))
            .unwrap()
        };
        let wants = |wanted: &str, entry_platform: &str| {
            wanted
                .parse::<Platform>()
                .unwrap()
                .selects(&entry(entry_platform))
        };
        assert!(wants("linux/amd64", "linux/amd64"));
        assert!(!wants("linux/amd64", "linux/arm64"));
        assert!(!wants("linux/amd64", "windows/amd64"));
        // No variant asked for: any variant serves.
        assert!(wants("linux/arm", "linux/arm/v7"));
        // A variant asked for: the entry must have it...
        assert!(wants("linux/arm/v7", "linux/arm/v7"));
        assert!(!wants("linux/arm/v7", "linux/arm/v6"));
        assert!(!wants("linux/arm/v7", "linux/arm"));
        // ...where arm64 without one is v8.
        assert!(wants("linux/arm64/v8", "linux/arm64"));
        assert!(!wants("linux/arm64/v9", "linux/arm64"));
        let without_platform: Descriptor = serde_json::from_str(&format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{HEX}","size":1}}"#
        ))
        .unwrap();
        assert!(!Platform::current().selects(&without_platform));
    }
}
