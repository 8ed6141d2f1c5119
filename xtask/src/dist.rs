//! `cargo xtask dist`: the release artifacts in `dist/`: the static ocidd for amd64 and
//! arm64, the boot files for both, a short README with the boot snippets, and SHA256SUMS.
//! With `--push REF`, they go to a registry as one OCI artifact, a layer per file titled by its
//! name, so that `oras pull`, skopeo or ocidd fetch them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::Digest as _;

use crate::pxe;
use crate::util::root;

/// The artifact type of the pushed boot files.
pub const ARTIFACT_TYPE: &str = "application/vnd.ocidd.boot-files.v1";
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
const TITLE: &str = "org.opencontainers.image.title";

pub struct Options {
    pub out: PathBuf,
    /// Also push them as one OCI artifact to this reference.
    pub push: Option<String>,
    /// Plain HTTP to the registry pushed to.
    pub plain_http: bool,
}

pub fn run(options: &Options) -> Result<()> {
    let out = &options.out;
    let _ = fs::remove_dir_all(out);
    fs::create_dir_all(out)?;
    for arch in [pxe::Arch::Amd64, pxe::Arch::Arm64] {
        pxe::build(&pxe::Options::generic(arch, out.clone(), false))?;
        fs::copy(
            pxe::ocidd_binary(arch),
            out.join(format!("ocidd-{}", arch.name())),
        )?;
    }
    fs::write(out.join("README"), readme()?)?;
    let sums = sha256sums(out)?;
    fs::write(out.join("SHA256SUMS"), &sums)?;
    eprintln!("dist: {} holds:\n{sums}", out.display());
    if let Some(reference) = &options.push {
        push(out, reference, options.plain_http)?;
    }
    Ok(())
}

/// `sha256sum`'s lines for the files in `dir`, sorted by name, so that `sha256sum -c
/// SHA256SUMS` checks them there.
fn sha256sums(dir: &Path) -> Result<String> {
    let mut lines = String::new();
    for name in files(dir)? {
        let digest = sha2::Sha256::digest(fs::read(dir.join(&name))?);
        lines += &format!("{}  {name}\n", hex(&digest));
    }
    Ok(lines)
}

/// The names of the files in `dir`, sorted (SHA256SUMS excluded).
fn files(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "SHA256SUMS")
        .collect();
    names.sort();
    Ok(names)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The README that goes with the files: what they are, and the iPXE and GRUB snippets as
/// docs/booting.md has them (the tests boot those).
fn readme() -> Result<String> {
    let booting = fs::read_to_string(root().join("docs/booting.md"))?;
    let snippet = |marker: &str| -> Result<String> {
        booting
            .split("```")
            .skip(1)
            .step_by(2)
            .find(|block| block.contains(marker))
            .map(|block| block.trim_matches('\n').to_string())
            .with_context(|| format!("no snippet with {marker:?} in docs/booting.md"))
    };
    Ok(format!(
        "ocidd {version}: install a machine by streaming a verified raw disk image from an OCI\n\
         registry onto its disk.\n\n\
         vmlinuz-amd64, initramfs-amd64.img   boot files for x86_64 machines (BIOS or UEFI)\n\
         vmlinuz-arm64, initramfs-arm64.img   boot files for arm64 machines (UEFI)\n\
         shimx64.efi, grubx64.efi             Debian's signed shim and network GRUB, for Secure Boot (x86_64)\n\
         shimaa64.efi, grubaa64.efi           the same for arm64\n\
         ocidd-amd64, ocidd-arm64             the static ocidd: `ocidd push` images, `ocidd install` at a shell\n\
         SHA256SUMS                           check with `sha256sum -c SHA256SUMS`\n\n\
         Serve the boot files over HTTP and boot them with iPXE:\n\n{ipxe}\n\n\
         or with GRUB (UEFI), from grub.cfg:\n\n{grub}\n\n\
         The kernel is Debian's signed kernel. Every parameter is in docs/parameters.md in\n\
         ocidd's source.\n",
        version = env_version()?,
        ipxe = snippet(
            "#!ipxe\nkernel http://boot.example.com/vmlinuz-amd64 initrd=initramfs-amd64.img oci.tag"
        )?,
        grub = snippet("menuentry")?,
    ))
}

/// ocidd's version, from its Cargo.toml.
fn env_version() -> Result<String> {
    let manifest = fs::read_to_string(root().join("Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_string)
        .context("no version in Cargo.toml")
}

/// Pushes the files of `dir` as one OCI artifact to `reference`.
fn push(dir: &Path, reference: &str, plain_http: bool) -> Result<()> {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    use oci_client::manifest::OciImageManifest;
    use oci_client::secrets::RegistryAuth;

    let reference: oci_client::Reference = reference
        .parse()
        .with_context(|| format!("{reference} is not a reference"))?;
    let mut layers = Vec::new();
    for name in files(dir)?.into_iter().chain(["SHA256SUMS".to_string()]) {
        let data = fs::read(dir.join(&name))?;
        let media_type = if name == "README" || name == "SHA256SUMS" {
            "text/plain"
        } else {
            "application/octet-stream"
        };
        layers.push(ImageLayer::new(
            data,
            media_type.to_string(),
            Some(BTreeMap::from([(TITLE.to_string(), name)])),
        ));
    }
    // oci-client's HTTP client needs rustls's cryptography chosen, as ocidd's does.
    ocidd::registry::client::install_crypto_provider();
    let config = Config::new(b"{}".to_vec(), EMPTY_CONFIG.to_string(), None);
    let mut manifest = OciImageManifest::build(&layers, &config, None);
    manifest.artifact_type = Some(ARTIFACT_TYPE.to_string());
    let client = oci_client::Client::new(ClientConfig {
        protocol: if plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..Default::default()
    });
    // Credentials for the registry from the docker config, as `docker login` leaves them.
    let auth = match docker_credential::get_credential(reference.registry()) {
        Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
            RegistryAuth::Basic(user, password)
        }
        _ => RegistryAuth::Anonymous,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pushed = runtime.block_on(client.push(&reference, &layers, config, &auth, Some(manifest)));
    match pushed {
        Ok(response) => {
            eprintln!("dist: pushed {reference} ({})", response.manifest_url);
            Ok(())
        }
        Err(e) => bail!("dist: pushing {reference}: {e}"),
    }
}

/// What `cargo xtask test` checks of the release: two runs give the same SHA256SUMS, and the
/// artifact pushed to a local registry comes back through skopeo (a client ocidd did not
/// write) byte for byte.
pub fn check() -> Result<()> {
    let out = root().join("target/dist-check");
    let options = Options {
        out: out.clone(),
        push: None,
        plain_http: true,
    };
    run(&options)?;
    let first = fs::read_to_string(out.join("SHA256SUMS"))?;
    run(&options)?;
    if fs::read_to_string(out.join("SHA256SUMS"))? != first {
        bail!("dist: two runs gave different SHA256SUMS");
    }
    let work = root().join("target/dist-registry");
    let _ = fs::remove_dir_all(&work);
    let registry = crate::util::LocalRegistry::start(&work.join("registry"))?;
    let reference = format!("127.0.0.1:{}/ocidd/boot:check", registry.port);
    push(&out, &reference, true)?;
    let pulled = work.join("pulled");
    crate::util::exec(
        std::process::Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("dir:{}", pulled.display())),
    )?;
    // skopeo's dir: holds each blob under its digest's hex: every file must be there.
    for line in first.lines() {
        let Some((digest, name)) = line.split_once("  ") else {
            continue;
        };
        let blob = fs::read(pulled.join(digest))
            .with_context(|| format!("dist: skopeo did not bring {name} back"))?;
        if hex(&sha2::Sha256::digest(&blob)) != digest || blob != fs::read(out.join(name))? {
            bail!("dist: {name} came back from the registry changed");
        }
    }
    eprintln!(
        "dist: two runs gave the same SHA256SUMS, and skopeo pulled all {} files back byte for byte",
        first.lines().count()
    );
    Ok(())
}
