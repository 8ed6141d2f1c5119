//! What to fetch: an image by tag (resolved through its manifest) or a blob by digest, and the
//! platform that selects an entry of an image index.

use std::fmt;
use std::str::FromStr;

use oci_spec::distribution::Reference;
use oci_spec::image::Descriptor;

use crate::digest::Digest;

/// The image to install, as the operator named it: by tag (resolved through its manifest;
/// `REGISTRY/REPO:TAG`, or pinned with `@DIGEST`) or a blob by digest (`REGISTRY/REPO@DIGEST`,
/// fetched directly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    reference: Reference,
    /// The blob's digest, for a blob.
    blob: Option<Digest>,
    /// The operator named no registry: Docker Hub's is implied, as everywhere.
    implied_registry: bool,
}

impl ImageSource {
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// The digest of the blob to install, when a blob was named instead of a tag.
    pub fn blob(&self) -> Option<&Digest> {
        self.blob.as_ref()
    }

    /// Whether no registry was named, so that Docker Hub's (`docker.io`) is implied.
    pub fn implied_registry(&self) -> bool {
        self.implied_registry
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reference())
    }
}

/// Whether the reference's first component names a registry host: it has a dot or a port,
/// is `localhost`, or is an IPv6 literal. Otherwise it is part of a Docker Hub repository.
fn names_registry(text: &str) -> bool {
    match text.split_once('/') {
        Some((first, _)) => {
            first.contains(['.', ':']) || first == "localhost" || first.starts_with('[')
        }
        None => false,
    }
}

/// Parses a reference whose registry is an IPv6 literal (`[2001:db8::1]:5000/disks/base:v1`),
/// which the reference parser does not take: the rest is parsed behind a stand-in host.
fn parse_ipv6_reference(text: &str) -> Option<Result<Reference, String>> {
    let rest = text.strip_prefix('[')?;
    let bad = || Some(Err(format!("{text:?}: not a valid IPv6 registry address")));
    let Some((address, after)) = rest.split_once(']') else {
        return bad();
    };
    if address.parse::<std::net::Ipv6Addr>().is_err() {
        return bad();
    }
    let Some((port, path)) = after.split_once('/') else {
        return bad();
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    if !port_ok {
        return bad();
    }
    let parsed: Reference = match format!("ipv6.invalid/{path}").parse() {
        Ok(parsed) => parsed,
        Err(e) => return Some(Err(format!("{text:?}: {e}"))),
    };
    let registry = format!("[{address}]{port}");
    let repository = parsed.repository().to_string();
    Some(Ok(match (parsed.tag(), parsed.digest()) {
        (Some(tag), Some(digest)) => Reference::with_tag_and_digest(
            registry,
            repository,
            tag.to_string(),
            digest.to_string(),
        ),
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.to_string()),
        (tag, None) => {
            Reference::with_tag(registry, repository, tag.unwrap_or("latest").to_string())
        }
    }))
}

fn parse_reference(text: &str) -> Result<Reference, String> {
    let reference: Reference = match parse_ipv6_reference(text) {
        Some(parsed) => parsed?,
        None => text.parse().map_err(|e| format!("{text:?}: {e}"))?,
    };
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
    Ok(ImageSource {
        reference,
        blob: None,
        implied_registry: !names_registry(text),
    })
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
    Ok(ImageSource {
        reference,
        blob: Some(digest),
        implied_registry: !names_registry(text),
    })
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
    /// variant is arm64/v8, its only variant (containerd reads it the same way). The kernel's
    /// names for the architectures, `x86_64` and `aarch64`, which disk images in registries
    /// often carry (quay.io's podman machine-os, images made for Ironic), are `amd64` and
    /// `arm64`, as Ironic reads them.
    pub fn selects(&self, entry: &Descriptor) -> bool {
        let Some(theirs) = entry.platform() else {
            return false;
        };
        let architecture = oci_architecture(&theirs.architecture().to_string()).to_string();
        let variant = |architecture: &str, variant: Option<&str>| match (architecture, variant) {
            ("arm64", None) => Some("v8".to_string()),
            (_, variant) => variant.map(str::to_string),
        };
        theirs.os().to_string() == self.os
            && architecture == oci_architecture(&self.architecture)
            && (self.variant.is_none()
                || variant(&architecture, theirs.variant().as_deref())
                    == variant(
                        oci_architecture(&self.architecture),
                        self.variant.as_deref(),
                    ))
    }
}

/// An architecture by its OCI name: the kernel's names for amd64 and arm64 are theirs.
fn oci_architecture(name: &str) -> &str {
    match name {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
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
        let source = parse_tag("10.0.2.2:5000/disks/base:v1").unwrap();
        assert!(source.blob().is_none() && !source.implied_registry());
        let r = source.reference();
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
        let source = parse_blob(&format!("r.example/disk@sha256:{HEX}")).unwrap();
        let (r, d) = (source.reference(), source.blob().unwrap());
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
    fn ipv6_literals_and_implied_registries() {
        let source = parse_tag("[2001:db8::1]:5000/disks/base:v1").unwrap();
        let r = source.reference();
        assert_eq!(r.registry(), "[2001:db8::1]:5000");
        assert_eq!(r.resolve_registry(), "[2001:db8::1]:5000");
        assert_eq!(r.repository(), "disks/base");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(source.to_string(), "[2001:db8::1]:5000/disks/base:v1");
        assert!(!source.implied_registry());
        let r = parse_tag("[::1]/disks/base").unwrap();
        assert_eq!(r.reference().registry(), "[::1]");
        assert_eq!(r.reference().tag(), Some("latest"));
        let blob = parse_blob(&format!("[::1]:5000/disks/base@sha256:{HEX}")).unwrap();
        assert_eq!(blob.reference().registry(), "[::1]:5000");
        assert!(blob.blob().is_some());
        for bad in [
            "[::1:5000/d:v1",
            "[zz::1]:5000/d:v1",
            "[::1]:port/d:v1",
            "[::1]",
            "[::1]:5000/D:v1",
        ] {
            assert!(parse_tag(bad).is_err(), "{bad}");
        }
        for (text, implied) in [
            ("disks/base:v1", true),
            ("ubuntu:24.04", true),
            ("docker.io/disks/base:v1", false),
            ("localhost/disks/base:v1", false),
            ("localhost:5000/base:v1", false),
            ("registry.example.com/base:v1", false),
        ] {
            assert_eq!(
                parse_tag(text).unwrap().implied_registry(),
                implied,
                "{text}"
            );
        }
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
        // The kernel's names are the same architectures, either way round.
        assert!(wants("linux/amd64", "linux/x86_64"));
        assert!(wants("linux/x86_64", "linux/amd64"));
        assert!(wants("linux/arm64/v8", "linux/aarch64"));
        assert!(!wants("linux/amd64", "linux/aarch64"));
        let without_platform: Descriptor = serde_json::from_str(&format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{HEX}","size":1}}"#
        ))
        .unwrap();
        assert!(!Platform::current().selects(&without_platform));
    }
}
