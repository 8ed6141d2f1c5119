//! Signed images only (`oci.verify.key=`): signatures made here with openssl, independently of
//! ocidd's own signer, following cosign's byte layouts (legacy: simple-signing payload and
//! annotation at `sha256-HEX.sig`; bundle: a DSSE envelope in an OCI 1.1 artifact found
//! through the referrers tag, since docker-registry has no referrers API). Every refusal
//! exits 4 before writing and leaves the target as it was.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::proxy::{Action, Proxy};
use common::*;

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// `b64:` and the DER of a public key, as the kernel line takes it.
fn inline_key(dir: &Path, public: &Path) -> String {
    let der = openssl(
        dir,
        &[
            "pkey",
            "-pubin",
            "-in",
            public.to_str().unwrap(),
            "-outform",
            "DER",
        ],
    );
    format!("b64:{}", STANDARD.encode(der))
}

/// The base64 DER ECDSA/SHA-256 signature of `data` by `private`.
fn sign(dir: &Path, private: &Path, data: &[u8]) -> String {
    let input = dir.join("to-sign");
    fs::write(&input, data).unwrap();
    let der = openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-sign",
            private.to_str().unwrap(),
            "to-sign",
        ],
    );
    STANDARD.encode(der)
}

fn simple_signing_payload(repo: &str, digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{repo}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

struct Setup {
    registry: Registry,
    dir: tempfile::TempDir,
    image: Vec<u8>,
    repo: String,
    manifest: String,
    key: (PathBuf, PathBuf),
    other: (PathBuf, PathBuf),
    /// A front end installs go through instead of the registry itself.
    front: Option<Proxy>,
}

impl Setup {
    fn new(repo: &str) -> Setup {
        let registry = Registry::start();
        let dir = tempfile::tempdir().unwrap();
        let image = image_bytes(2 * MIB, 21);
        let file = write_file(dir.path(), "disk.img", &image);
        let (manifest, _) = push(&file, &format!("{}/{repo}:v1", registry.host()), "gzip");
        let key = key_pair(dir.path(), "site");
        let other = key_pair(dir.path(), "other");
        Setup {
            registry,
            dir,
            image,
            repo: repo.to_string(),
            manifest,
            key,
            other,
            front: None,
        }
    }

    fn reference(&self) -> String {
        format!("{}/{}:v1", self.host(), self.repo)
    }

    /// Where installs go: the registry, or the front end in front of it.
    fn host(&self) -> String {
        match &self.front {
            Some(front) => front.host(),
            None => self.registry.host(),
        }
    }

    /// A legacy signature manifest for `digest` with one layer per (payload, signature).
    fn put_legacy(&self, digest: &str, layers: &[(Vec<u8>, String)]) {
        let config = self.registry.put_blob(&self.repo, b"{}");
        let layers: Vec<String> = layers
            .iter()
            .map(|(payload, signature)| {
                let blob = self.registry.put_blob(&self.repo, payload);
                format!(
                    r#"{{"mediaType":"{SIMPLE_SIGNING}","digest":"{blob}","size":{},"annotations":{{"dev.cosignproject.cosign/signature":"{signature}"}}}}"#,
                    payload.len()
                )
            })
            .collect();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{}]}}"#,
            layers.join(",")
        );
        self.registry.put_manifest(
            &self.repo,
            &format!("sha256-{}.sig", hex(digest)),
            OCI_MANIFEST,
            &manifest,
        );
    }

    /// A legacy signature of `digest` by `key` (over a payload naming `named`).
    fn sign_legacy(&self, digest: &str, named: &str, key: &Path) {
        let payload = simple_signing_payload(&self.repo, named);
        let signature = sign(self.dir.path(), key, &payload);
        self.put_legacy(digest, &[(payload, signature)]);
    }

    /// A bundle signature of `digest` by `key`, over a statement naming `named`, attached
    /// with the referrers tag.
    fn sign_bundle(&self, digest: &str, named: &str, key: &Path) {
        let statement = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"{}","digest":{{"sha256":"{}"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{{}}}}"#,
            self.repo,
            hex(named)
        );
        let payload_type = "application/vnd.in-toto+json";
        let mut pae = format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            statement.len()
        )
        .into_bytes();
        pae.extend_from_slice(statement.as_bytes());
        let signature = sign(self.dir.path(), key, &pae);
        let bundle = format!(
            r#"{{"mediaType":"{BUNDLE}","verificationMaterial":{{"publicKey":{{"hint":"site"}},"tlogEntries":[]}},"dsseEnvelope":{{"payload":"{}","payloadType":"{payload_type}","signatures":[{{"sig":"{signature}","keyid":""}}]}}}}"#,
            STANDARD.encode(&statement)
        );
        let blob = self.registry.put_blob(&self.repo, bundle.as_bytes());
        let empty = self.registry.put_blob(&self.repo, b"{}");
        let artifact = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{BUNDLE}","config":{{"mediaType":"{EMPTY}","digest":"{empty}","size":2}},"layers":[{{"mediaType":"{BUNDLE}","digest":"{blob}","size":{}}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":1}}}}"#,
            bundle.len()
        );
        let artifact_digest = sha256(artifact.as_bytes());
        self.registry
            .put_manifest(&self.repo, &artifact_digest, OCI_MANIFEST, &artifact);
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{artifact_digest}","size":{},"artifactType":"{BUNDLE}"}}]}}"#,
            artifact.len()
        );
        self.registry.put_manifest(
            &self.repo,
            &format!("sha256-{}", hex(digest)),
            OCI_INDEX,
            &index,
        );
    }

    fn key_word(&self) -> String {
        format!("oci.verify.key={}", self.key.1.display())
    }

    /// Installs with `words` onto a fresh target holding 0x5A.
    fn install(&self, words: &[&str]) -> (Run, PathBuf) {
        let target = self.dir.path().join("target.img");
        fs::write(&target, vec![0x5Au8; 4 * MIB]).unwrap();
        (install_tag(&self.reference(), &target, words), target)
    }

    fn assert_refused(&self, words: &[&str], message: &str) {
        self.assert_refused_with(4, words, message);
    }

    fn assert_refused_with(&self, code: i32, words: &[&str], message: &str) {
        let (run, target) = self.install(words);
        run.assert_failed(code, message);
        assert!(run.stderr.contains("nothing was written"), "{}", run.stderr);
        assert_eq!(fs::read(&target).unwrap(), vec![0x5Au8; 4 * MIB]);
    }

    fn assert_installed(&self, words: &[&str], layout: &str) -> Run {
        let (run, target) = self.install(words);
        run.assert_installed();
        assert!(
            run.stderr.contains("ocidd: signature verified: ") && run.stderr.contains(layout),
            "{}",
            run.stderr
        );
        assert_eq!(
            &fs::read(&target).unwrap()[..self.image.len()],
            &self.image[..]
        );
        run
    }
}

#[test]
fn legacy_signatures() {
    let s = Setup::new("signed/legacy");
    let key = s.key_word();
    s.assert_refused(&[&key], "unsigned");

    s.sign_legacy(&s.manifest, &s.manifest, &s.other.0);
    s.assert_refused(&[&key], "signed by another key");

    let elsewhere = format!("sha256:{}", "cd".repeat(32));
    s.sign_legacy(&s.manifest, &elsewhere, &s.key.0);
    s.assert_refused(&[&key], &format!("the signature is for {elsewhere}"));

    // The payload changed after signing (and uploaded under its new digest).
    let signature = sign(
        s.dir.path(),
        &s.key.0,
        &simple_signing_payload(&s.repo, &s.manifest),
    );
    let changed = simple_signing_payload("signed/other", &s.manifest);
    s.put_legacy(&s.manifest, &[(changed, signature.clone())]);
    s.assert_refused(&[&key], "the signed payload was changed");

    s.put_legacy(
        &s.manifest,
        &[(
            simple_signing_payload(&s.repo, &s.manifest),
            "%%%".to_string(),
        )],
    );
    s.assert_refused(&[&key], "malformed signature: not base64");

    // Several signatures: one valid one is enough, inline key form too.
    let good = simple_signing_payload(&s.repo, &s.manifest);
    let good_signature = sign(s.dir.path(), &s.key.0, &good);
    let other_signature = sign(s.dir.path(), &s.other.0, &good);
    s.put_legacy(
        &s.manifest,
        &[(good.clone(), other_signature), (good, good_signature)],
    );
    s.assert_installed(&[&key], "legacy layout");
    let value = inline_key(s.dir.path(), &s.key.1);
    // b64: and the 124 characters of 91 bytes of DER: it fits a kernel command line.
    assert_eq!(value.len(), 128, "{value}");
    let inline = format!("oci.verify.key={value}");
    s.assert_installed(&[&inline], "legacy layout");
    // Any one of several keys.
    let other_key = format!("oci.verify.key={}", s.other.1.display());
    s.assert_installed(&[&other_key, &key], "legacy layout");
    // Signed by the site's key alone: the other key alone is refused.
    s.sign_legacy(&s.manifest, &s.manifest, &s.key.0);
    s.assert_refused(&[&other_key], "signed by another key");
}

#[test]
fn bundle_signatures() {
    let s = Setup::new("signed/bundle");
    let key = s.key_word();
    s.sign_bundle(&s.manifest, &s.manifest, &s.other.0);
    s.assert_refused(&[&key], "signed by another key");
    let elsewhere = format!("sha256:{}", "cd".repeat(32));
    s.sign_bundle(&s.manifest, &elsewhere, &s.key.0);
    s.assert_refused(&[&key], &format!("the signature is for {elsewhere}"));
    s.sign_bundle(&s.manifest, &s.manifest, &s.key.0);
    s.assert_installed(&[&key], "bundle layout");
}

#[test]
fn an_index_is_signed_at_the_index_or_at_the_platform_manifest() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = image_bytes(MIB, 22);
    let file = write_file(dir.path(), "disk.img", &image);
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    let reference = format!("{}/signed/index:v1", registry.host());
    let (platform_manifest, _) =
        push_with(&file, &reference, &["--platform", &format!("linux/{arch}")]);
    let index = registry
        .client()
        .get(format!("{}/v2/signed/index/manifests/v1", registry.url()))
        .header("accept", OCI_INDEX)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let index_digest = sha256(&index);
    let s = Setup {
        registry,
        dir,
        image,
        repo: "signed/index".to_string(),
        manifest: index_digest.clone(),
        key: (PathBuf::new(), PathBuf::new()),
        other: (PathBuf::new(), PathBuf::new()),
        front: None,
    };
    let key = key_pair(s.dir.path(), "site");
    let s = Setup { key, ..s };
    let word = s.key_word();
    s.assert_refused(&[&word], "unsigned");
    // At the platform's manifest.
    s.sign_legacy(&platform_manifest, &platform_manifest, &s.key.0);
    s.assert_installed(&[&word], &platform_manifest);
    // At the index (bundle layout), with the platform's signature gone.
    let sig_tag = format!("sha256-{}.sig", hex(&platform_manifest));
    let gone = s
        .registry
        .client()
        .delete(format!(
            "{}/v2/signed/index/manifests/{}",
            s.registry.url(),
            sha256(
                &s.registry
                    .client()
                    .get(format!(
                        "{}/v2/signed/index/manifests/{sig_tag}",
                        s.registry.url()
                    ))
                    .header("accept", OCI_MANIFEST)
                    .send()
                    .unwrap()
                    .bytes()
                    .unwrap()
            )
        ))
        .send()
        .unwrap();
    assert_eq!(gone.status().as_u16(), 202);
    s.assert_refused(&[&word], "unsigned");
    s.sign_bundle(&index_digest, &index_digest, &s.key.0);
    s.assert_installed(&[&word], &index_digest);
}

#[test]
fn warn_installs_unsigned_images_loudly() {
    let s = Setup::new("signed/warn");
    let key = s.key_word();
    let (run, target) = s.install(&[&key, "oci.verify=warn"]);
    run.assert_installed();
    assert!(
        run.stderr.contains("ocidd: WARNING: no valid signature"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("WARNING: its signature did not verify"),
        "{}",
        run.stdout
    );
    assert_eq!(&fs::read(&target).unwrap()[..s.image.len()], &s.image[..]);
    // Without a key nothing changes; a blob is pinned by its digest.
    let (run, _) = s.install(&[]);
    run.assert_installed();
    assert!(!run.stderr.contains("signature"), "{}", run.stderr);
    // A key file that is missing is the operator's mistake: exit 2.
    let (run, _) = s.install(&["oci.verify.key=/nonexistent/cosign.pub"]);
    run.assert_failed(2, "reading the verify key /nonexistent/cosign.pub");
}

#[test]
fn push_sign_key_makes_signatures_openssl_and_ocidd_verify() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = key_pair(dir.path(), "push");
    let image = image_bytes(MIB, 23);
    let file = write_file(dir.path(), "disk.img", &image);
    let reference = format!("{}/signed/pushed:v1", registry.host());
    let run = Run::from(
        ocidd()
            .args(["push", "--plain-http", "--sign-key"])
            .arg(&private)
            .arg(&file)
            .arg(&reference)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let manifest = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("manifest "))
        .unwrap()
        .to_string();
    let tag = format!("sha256-{}.sig", hex(&manifest));
    assert!(
        run.stdout.contains(&format!("signature {tag}")),
        "{}",
        run.stdout
    );

    // Read the signature as cosign would, and check it with openssl.
    let client = registry.client();
    let sig_manifest: serde_json::Value = client
        .get(format!(
            "{}/v2/signed/pushed/manifests/{tag}",
            registry.url()
        ))
        .header("accept", OCI_MANIFEST)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let layer = &sig_manifest["layers"][0];
    assert_eq!(layer["mediaType"], SIMPLE_SIGNING);
    let payload = client
        .get(format!(
            "{}/v2/signed/pushed/blobs/{}",
            registry.url(),
            layer["digest"].as_str().unwrap()
        ))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let payload_json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        payload_json["critical"]["image"]["docker-manifest-digest"],
        manifest.as_str()
    );
    assert_eq!(
        payload_json["critical"]["type"],
        "cosign container image signature"
    );
    let signature = STANDARD
        .decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    fs::write(dir.path().join("payload"), &payload).unwrap();
    fs::write(dir.path().join("sig.der"), &signature).unwrap();
    let verified = openssl(
        dir.path(),
        &[
            "dgst",
            "-sha256",
            "-verify",
            public.to_str().unwrap(),
            "-signature",
            "sig.der",
            "payload",
        ],
    );
    assert!(
        String::from_utf8_lossy(&verified).contains("Verified OK"),
        "{}",
        String::from_utf8_lossy(&verified)
    );

    // Pushing again with another key keeps the first signature.
    let (other, _) = key_pair(dir.path(), "second");
    let run = Run::from(
        ocidd()
            .args(["push", "--plain-http", "--sign-key"])
            .arg(&other)
            .arg(&file)
            .arg(&reference)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let target = write_file(dir.path(), "t.img", b"");
    let key = format!("oci.verify.key={}", public.display());
    let run = install_tag(&reference, &target, &[&key]);
    run.assert_installed();
    assert!(run.stderr.contains("signature verified"), "{}", run.stderr);

    // A cosign-encrypted key is refused before anything is uploaded.
    let encrypted = write_file(
        dir.path(),
        "cosign.key",
        b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
    );
    let run = Run::from(
        ocidd()
            .args(["push", "--plain-http", "--sign-key"])
            .arg(&encrypted)
            .arg(&file)
            .arg(format!("{}/signed/never:v1", registry.host()))
            .output()
            .unwrap(),
    );
    run.assert_failed(2, "is encrypted");
}

/// A front end in front of `registry` that answers the referrers API with `status`, as
/// registries and proxies without it do.
fn referrers_answered_with(registry: &Registry, status: u16) -> Proxy {
    Proxy::start(registry.port, move |request| {
        if request.path.contains("/referrers/") {
            return Action::Respond {
                status,
                headers: vec![],
                body: b"not here".to_vec(),
            };
        }
        Action::forward()
    })
}

/// One valid signature is enough, whatever the referrers API answers: 400, 401, 403, 405
/// and 501 mean there is none (the referrers tag is read instead), and a 500 only counts
/// when nothing valid was found, in either layout.
#[test]
fn a_valid_signature_is_found_whatever_the_referrers_api_answers() {
    let mut s = Setup::new("signed/fronted");
    let key = s.key_word();
    s.sign_legacy(&s.manifest, &s.manifest, &s.key.0);
    for status in [400, 401, 403, 405, 500, 501] {
        s.front = Some(referrers_answered_with(&s.registry, status));
        s.assert_installed(&[&key], "legacy layout");
    }
    // Only a bundle, at the referrers tag: found where the API is missing, or broken.
    let s = Setup::new("signed/fronted-bundle");
    s.sign_bundle(&s.manifest, &s.manifest, &s.key.0);
    let mut s = s;
    for status in [405, 501, 500] {
        s.front = Some(referrers_answered_with(&s.registry, status));
        s.assert_installed(&[&s.key_word(), "oci.retries=1"], "bundle layout");
    }
    // Nothing valid, and the API failed: exit 3, since asking again may find one; with
    // oci.verify=warn it installs, saying so.
    let mut s = Setup::new("signed/fronted-none");
    s.front = Some(referrers_answered_with(&s.registry, 500));
    let key = s.key_word();
    s.assert_refused_with(3, &[&key, "oci.retries=0"], "could not be read");
    let (run, _) = s.install(&[&key, "oci.retries=0", "oci.verify=warn"]);
    run.assert_installed();
    assert!(run.stderr.contains("WARNING"), "{}", run.stderr);
}

/// A signature whose payload blob is gone does not hide a valid one beside it, in either
/// mode.
#[test]
fn a_missing_payload_does_not_hide_a_valid_signature() {
    let s = Setup::new("signed/missing");
    let key = s.key_word();
    let good = simple_signing_payload(&s.repo, &s.manifest);
    let good_signature = sign(s.dir.path(), &s.key.0, &good);
    let lost = simple_signing_payload(&s.repo, &format!("sha256:{}", "ee".repeat(32)));
    let lost_signature = sign(s.dir.path(), &s.key.0, &lost);
    // The newest layer (looked at first) is the one whose payload goes.
    s.put_legacy(
        &s.manifest,
        &[(good, good_signature), (lost.clone(), lost_signature)],
    );
    let gone = s
        .registry
        .client()
        .delete(format!(
            "{}/v2/{}/blobs/{}",
            s.registry.url(),
            s.repo,
            sha256(&lost)
        ))
        .send()
        .unwrap();
    assert_eq!(gone.status().as_u16(), 202);
    s.assert_installed(&[&key], "legacy layout");
    s.assert_installed(&[&key, "oci.verify=warn"], "legacy layout");
}

/// Signatures are looked at newest first: a valid one appended after 40 others is found,
/// and when the valid one is older than the newest 32, the refusal says how many were not
/// looked at.
#[test]
fn the_newest_signatures_are_looked_at_and_the_skipped_ones_are_named() {
    let s = Setup::new("signed/many");
    let key = s.key_word();
    let good = simple_signing_payload(&s.repo, &s.manifest);
    let junk: Vec<(Vec<u8>, String)> = (0..40)
        .map(|i| {
            let payload = simple_signing_payload(&format!("junk/{i}"), &s.manifest);
            let signature = sign(s.dir.path(), &s.other.0, &payload);
            (payload, signature)
        })
        .collect();
    let valid = (good.clone(), sign(s.dir.path(), &s.key.0, &good));
    let mut newest_valid = junk.clone();
    newest_valid.push(valid.clone());
    s.put_legacy(&s.manifest, &newest_valid);
    s.assert_installed(&[&key], "legacy layout");
    let mut oldest_valid = vec![valid];
    oldest_valid.extend(junk);
    s.put_legacy(&s.manifest, &oldest_valid);
    s.assert_refused(&[&key], "9 older signatures at tag sha256-");
}
