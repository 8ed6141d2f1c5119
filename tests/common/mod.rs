//! Test harness: a real registry (Debian's docker-registry) on a free loopback port, the
//! ocidd binary, images, loop devices, and raw uploads for manifests ocidd push never writes.

#![allow(dead_code)]

pub mod files;
pub mod lab;
pub mod proxy;
pub mod python;
pub mod receiver;
pub mod tinyproxy;
pub mod vm;

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sha2::Digest as _;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const GZIP: &str = "application/octet-stream+gzip";
pub const ZSTD: &str = "application/octet-stream+zstd";
pub const RAW: &str = "application/octet-stream";
pub const MIB: usize = 1 << 20;

/// Runs `openssl ARGS` in `dir`; its stdout. Fails the test, with openssl's stderr, if it
/// fails.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A P-256 key pair made by openssl: (private PEM, public PEM).
pub fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = format!("{name}.key");
    let public = format!("{name}.pub");
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &private,
        ],
    );
    openssl(dir, &["ec", "-in", &private, "-pubout", "-out", &public]);
    (dir.join(private), dir.join(public))
}

/// An htpasswd file in `dir` (bcrypt, as docker-registry takes it) with one user.
pub fn htpasswd(dir: &Path, user: &str, password: &str) -> PathBuf {
    let path = dir.join("htpasswd");
    let made = Command::new("htpasswd")
        .args(["-Bbc"])
        .arg(&path)
        .args([user, password])
        .output()
        .expect("running htpasswd (apache2-utils)");
    assert!(made.status.success(), "htpasswd failed");
    path
}

/// A docker config.json that gives `host` the credentials `user:password`.
pub fn docker_config(host: &str, user_pass: &str) -> String {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(user_pass);
    format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#)
}

/// A free TCP port on 127.0.0.1 (others may run registries here too).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}

/// A docker-registry process with its own storage, stopped (by PID) when dropped.
pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// Certificate and key when serving HTTPS.
    tls: Option<(PathBuf, PathBuf)>,
    /// An htpasswd file: Basic authentication for everything.
    htpasswd: Option<PathBuf>,
    /// The address it listens on: `127.0.0.1`, `[::1]`, or one in a [`lab::Lab`].
    loopback: String,
    /// The registry this one is a pull-through cache of (`proxy: remoteurl:`).
    remote: Option<String>,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(None, None)
    }

    /// A registry serving HTTPS with this certificate and key (PEM files).
    pub fn start_tls(certificate: &Path, key: &Path) -> Registry {
        Registry::start_with(Some((certificate.to_path_buf(), key.to_path_buf())), None)
    }

    /// A registry serving HTTPS that demands Basic authentication for the users of an
    /// htpasswd file (bcrypt, as `htpasswd -B` writes).
    pub fn start_with_htpasswd(certificate: &Path, key: &Path, htpasswd: &Path) -> Registry {
        Registry::start_with(
            Some((certificate.to_path_buf(), key.to_path_buf())),
            Some(htpasswd.to_path_buf()),
        )
    }

    /// A plain-HTTP registry on the IPv6 loopback, `[::1]`.
    /// A registry on `host` (an address in a [`lab::Lab`]) that serves HTTPS and demands a
    /// password.
    pub fn start_with_htpasswd_at(
        host: &str,
        certificate: &Path,
        key: &Path,
        htpasswd: &Path,
    ) -> Registry {
        Registry::start_full(
            host,
            Some((certificate.to_path_buf(), key.to_path_buf())),
            Some(htpasswd.to_path_buf()),
            None,
        )
    }

    pub fn start_ipv6() -> Registry {
        Registry::start_on("[::1]", None, None)
    }

    /// A registry on `host` (`10.0.5.1`, `[fd00:5::1]`): started from inside a
    /// [`lab::Lab`] (its `run`), it listens in the lab's network.
    pub fn start_at(host: &str, tls: Option<(PathBuf, PathBuf)>) -> Registry {
        Registry::start_full(host, tls, None, None)
    }

    /// A pull-through cache of the registry at `remote` (distribution's proxy mode): it
    /// fetches what it lacks from there, stores it, and serves it again.
    pub fn start_cache(remote: &str) -> Registry {
        Registry::start_full("127.0.0.1", None, None, Some(remote.to_string()))
    }

    fn start_with(tls: Option<(PathBuf, PathBuf)>, htpasswd: Option<PathBuf>) -> Registry {
        Registry::start_on("127.0.0.1", tls, htpasswd)
    }

    fn start_on(
        loopback: &str,
        tls: Option<(PathBuf, PathBuf)>,
        htpasswd: Option<PathBuf>,
    ) -> Registry {
        Registry::start_full(loopback, tls, htpasswd, None)
    }

    fn start_full(
        loopback: &str,
        tls: Option<(PathBuf, PathBuf)>,
        htpasswd: Option<PathBuf>,
        remote: Option<String>,
    ) -> Registry {
        // The tests' own HTTP client needs rustls's cryptography selected, as ocidd does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut registry = Registry {
            port,
            dir,
            child: None,
            tls,
            htpasswd,
            loopback: loopback.to_string(),
            remote,
        };
        registry.restart();
        registry
    }

    /// An HTTP client for the test's own requests (trusting the registry's certificate).
    pub fn client(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .danger_accept_invalid_certs(self.tls.is_some())
            .build()
            .expect("test HTTP client")
    }

    fn config(&self) -> PathBuf {
        let config = self.dir.path().join("config.yml");
        let storage = self.dir.path().join("storage");
        let tls = match &self.tls {
            Some((certificate, key)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                certificate.display(),
                key.display()
            ),
            None => String::new(),
        };
        let auth = match &self.htpasswd {
            Some(path) => format!(
                "auth:\n  htpasswd:\n    realm: ocidd-test\n    path: {}\n",
                path.display()
            ),
            None => String::new(),
        };
        let proxy = match &self.remote {
            Some(url) => format!("proxy:\n  remoteurl: {url}\n"),
            None => String::new(),
        };
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{auth}{proxy}http:\n  addr: \"{}:{}\"\n{tls}",
                storage.display(),
                self.loopback,
                self.port
            ),
        )
        .expect("writing registry config");
        config
    }

    /// Starts the registry (again, after [`Registry::stop`]) on the same port and storage.
    pub fn restart(&mut self) {
        let binary = ["/usr/bin/docker-registry", "/usr/sbin/docker-registry"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "docker-registry is not installed (apt-get install docker-registry; .ci/run does)",
            );
        let child = Command::new(binary)
            .arg("serve")
            .arg(self.config())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self
                .client()
                .get(format!("{}/v2/", self.url()))
                .send()
                // 401 is an answer too: the registry is up and demands credentials.
                .map(|r| r.status().is_success() || r.status().as_u16() == 401)
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "docker-registry did not come up");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the registry process.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.loopback, self.port)
    }

    pub fn host(&self) -> String {
        format!("{}:{}", self.loopback, self.port)
    }

    /// Where the registry stores a blob's bytes.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Uploads a blob as it is; returns its digest.
    pub fn put_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        self.put_blob_as(repo, data, &digest);
        digest
    }

    /// Uploads a blob under `digest` (which the registry checks).
    pub fn put_blob_as(&self, repo: &str, data: &[u8], digest: &str) {
        let client = self.client();
        let response = client
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.url()))
            .send()
            .expect("starting upload");
        assert_eq!(response.status().as_u16(), 202, "upload start");
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.url())
        } else {
            location
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let response = client
            .put(format!("{location}{separator}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .expect("finishing upload");
        assert_eq!(response.status().as_u16(), 201, "upload end");
    }

    /// Pushes a manifest as it is under `tag`; returns its digest.
    pub fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, body: &str) -> String {
        let response = self
            .client()
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.url()))
            .header("content-type", media_type)
            .body(body.to_string())
            .send()
            .expect("pushing manifest");
        let status = response.status().as_u16();
        assert_eq!(
            status,
            201,
            "manifest push: {}",
            response.text().unwrap_or_default()
        );
        sha256(body.as_bytes())
    }

    /// Pushes an image index (or Docker manifest list) under `tag` with one entry per
    /// (architecture, manifest media type, manifest digest, manifest size), all linux.
    pub fn put_index(
        &self,
        repo: &str,
        tag: &str,
        index_type: &str,
        entries: &[(&str, &str, String, usize)],
    ) -> String {
        let entries: Vec<String> = entries
            .iter()
            .map(|(arch, manifest_type, digest, size)| {
                format!(
                    r#"{{"mediaType":"{manifest_type}","digest":"{digest}","size":{size},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#
                )
            })
            .collect();
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{index_type}","manifests":[{}]}}"#,
            entries.join(",")
        );
        self.put_manifest(repo, tag, index_type, &index)
    }

    /// Pushes each (architecture, image file) with `ocidd push --platform linux/ARCH` into an
    /// image index at `REPO:TAG`.
    pub fn push_multiarch(&self, repo: &str, tag: &str, images: &[(&str, &Path)]) {
        let reference = format!("{}/{repo}:{tag}", self.host());
        for (arch, file) in images {
            push_with(file, &reference, &["--platform", &format!("linux/{arch}")]);
        }
    }

    /// Uploads `blob` and pushes an OCI manifest with the given layers under `tag`. Each
    /// layer is (media type, blob bytes).
    pub fn put_image(&self, repo: &str, tag: &str, layers: &[(&str, &[u8])]) -> String {
        let body = self.image_manifest(repo, OCI_MANIFEST, layers, "");
        self.put_manifest(repo, tag, OCI_MANIFEST, &body)
    }

    /// Uploads the layers and an empty config; returns the manifest body.
    pub fn image_manifest(
        &self,
        repo: &str,
        media_type: &str,
        layers: &[(&str, &[u8])],
        layer_annotations: &str,
    ) -> String {
        let (config_type, config) = if media_type == DOCKER_MANIFEST {
            (
                "application/vnd.docker.container.image.v1+json",
                br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                    .as_slice(),
            )
        } else {
            ("application/vnd.oci.empty.v1+json", b"{}".as_slice())
        };
        let config_digest = self.put_blob(repo, config);
        let layers: Vec<String> = layers
            .iter()
            .map(|(layer_type, data)| {
                let digest = self.put_blob(repo, data);
                format!(
                    r#"{{"mediaType":"{layer_type}","digest":"{digest}","size":{}{layer_annotations}}}"#,
                    data.len()
                )
            })
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{{"mediaType":"{config_type}","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
            config.len(),
            layers.join(",")
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// The ocidd binary under test.
pub fn ocidd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ocidd"));
    command.stdin(Stdio::null()).env("HOME", "/nonexistent");
    command
}

/// What a run of ocidd did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts success and the final verified line.
    pub fn assert_installed(&self) {
        assert_eq!(self.code, 0, "ocidd failed:\n{}", self.stderr);
        assert!(
            self.stdout.contains("ocidd: installed") && self.stdout.contains("verified"),
            "no success line:\n{}\n{}",
            self.stdout,
            self.stderr
        );
    }

    /// Asserts a failure with this exit code and a message containing `message`, and no
    /// success line.
    pub fn assert_failed(&self, code: i32, message: &str) {
        assert_eq!(
            self.code, code,
            "exit code {} (expected {code}):\n{}",
            self.code, self.stderr
        );
        let error_lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("ocidd: error: "))
            .collect();
        assert_eq!(
            error_lines.len(),
            1,
            "expected one error line:\n{}",
            self.stderr
        );
        assert!(
            error_lines[0].contains(message),
            "error line lacks {message:?}:\n{}",
            self.stderr
        );
        assert!(
            !self.stdout.contains("installed"),
            "claims success:\n{}",
            self.stdout
        );
    }
}

/// Runs ocidd with kernel command-line words.
pub fn install_words(words: &[&str]) -> Run {
    Run::from(ocidd().args(words).output().expect("running ocidd"))
}

/// Installs `oci.tag=REF` from a plain-HTTP registry onto `target`.
pub fn install_tag(reference: &str, target: &Path, extra: &[&str]) -> Run {
    let tag = format!("oci.tag={reference}");
    let of = format!("dd.of={}", target.display());
    let mut words = vec![tag.as_str(), "oci.allow_no_tls", of.as_str()];
    if !extra.iter().any(|w| w.starts_with("dd.bs=")) {
        words.push("dd.bs=64k");
    }
    words.extend_from_slice(extra);
    install_words(&words)
}

/// Installs `oci.blob=REF` from a plain-HTTP registry onto `target`.
pub fn install_blob(reference: &str, target: &Path) -> Run {
    let blob = format!("oci.blob={reference}");
    let of = format!("dd.of={}", target.display());
    install_words(&[&blob, "oci.allow_no_tls", &of, "dd.bs=1M"])
}

/// Pushes `file` with `ocidd push` (chunked, the default); returns (manifest digest, layer
/// digest).
pub fn push(file: &Path, reference: &str, compression: &str) -> (String, String) {
    push_with(file, reference, &["--compression", compression])
}

/// Pushes `file` with `ocidd push ARGS`; returns (manifest digest, layer digest).
pub fn push_with(file: &Path, reference: &str, args: &[&str]) -> (String, String) {
    let run = Run::from(
        ocidd()
            .args(["push", "--plain-http"])
            .args(args)
            .arg(file)
            .arg(reference)
            .output()
            .expect("running ocidd push"),
    );
    assert_eq!(run.code, 0, "push failed:\n{}", run.stderr);
    let field = |name: &str| {
        run.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in push output:\n{}", run.stdout))
            .trim()
            .to_string()
    };
    (field("manifest "), field("layer "))
}

/// Deterministic bytes that look like a disk: runs of zeros, text and noise.
pub fn image_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        let block = 4096.min(size - data.len());
        match next() % 4 {
            0 => data.extend(std::iter::repeat_n(0u8, block)),
            1 => data.extend(b"ocidd test image text block; ".iter().cycle().take(block)),
            _ => data.extend((0..block).map(|_| next() as u8)),
        }
    }
    data
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Writes a GPT label with one Linux partition from 1 MiB onto the disk image at `path`.
pub fn gpt_label(path: &Path) {
    let mut sfdisk = Command::new("sfdisk")
        .arg("--quiet")
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("running sfdisk (fdisk package)");
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\nstart=2048, type=linux, name=root\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk failed");
}

/// A file of `size` bytes filled with 0xAA, so that zeroing and writing show.
pub fn target_file(dir: &Path, name: &str, size: usize) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, vec![0xAAu8; size]).unwrap();
    path
}

pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, data).unwrap();
    path
}

/// Asserts that the first MiB of `path` is zero (the wipe after a failure).
pub fn assert_start_zeroed(path: &Path) {
    let data = read_prefix(path, MIB);
    assert!(
        data.iter().all(|&b| b == 0),
        "first MiB of {} not zeroed",
        path.display()
    );
}

/// Asserts that `path` (filled by [`target_file`]) holds no partition table after a failure:
/// untouched when the error says nothing was written, else its first and last MiB zeroed.
pub fn assert_no_table_left(run: &Run, path: &Path) {
    if run.stderr.contains("nothing was written to") {
        assert_untouched(path);
        return;
    }
    assert!(
        run.stderr.contains("has no partition table"),
        "the error does not say what the target holds:\n{}",
        run.stderr
    );
    assert_start_zeroed(path);
    let data = fs::read(path).unwrap();
    let tail = data.len().saturating_sub(MIB);
    assert!(
        data[tail..].iter().all(|&b| b == 0),
        "last MiB of {} not zeroed",
        path.display()
    );
}

/// Asserts that `path` still holds the 0xAA fill of [`target_file`] at its start.
pub fn assert_untouched(path: &Path) {
    let data = read_prefix(path, MIB);
    assert!(
        data.iter().all(|&b| b == 0xAA),
        "{} was written to",
        path.display()
    );
}

pub fn read_prefix(path: &Path, len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut data = vec![0u8; len];
    let mut file = fs::File::open(path).unwrap();
    let mut filled = 0;
    while filled < len {
        let n = file.read(&mut data[filled..]).unwrap();
        if n == 0 {
            break;
        }
        filled += n;
    }
    data.truncate(filled);
    data
}

/// A loop device over a file of `size` bytes (0xAA-filled), detached when dropped.
pub struct LoopDevice {
    pub device: PathBuf,
    pub backing: PathBuf,
}

impl LoopDevice {
    pub fn new(dir: &Path, size: usize) -> LoopDevice {
        LoopDevice::with_flags(dir, size, &["--partscan"])
    }

    /// A loop device without partition scanning (losetup's default).
    pub fn without_partitions(dir: &Path, size: usize) -> LoopDevice {
        LoopDevice::with_flags(dir, size, &[])
    }

    fn with_flags(dir: &Path, size: usize, flags: &[&str]) -> LoopDevice {
        LoopDevice::attach(&target_file(dir, "loop-backing.img", size), flags)
    }

    /// `file` as a read-only disk, as a CD or a write-protected stick shows.
    pub fn read_only(file: &Path) -> LoopDevice {
        LoopDevice::attach(file, &["--read-only"])
    }

    fn attach(backing: &Path, flags: &[&str]) -> LoopDevice {
        let backing = backing.to_path_buf();
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .args(flags)
            .arg(&backing)
            .output()
            .expect("running losetup (needs root and util-linux)");
        assert!(
            output.status.success(),
            "losetup failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let device = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        LoopDevice { device, backing }
    }

    /// The first `len` bytes as the device reads them.
    pub fn read(&self, len: usize) -> Vec<u8> {
        read_prefix(&self.device, len)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key).
pub fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        openssl(dir, args);
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=ocidd test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,IP:10.0.2.2\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// A registry that serves HTTPS with a certificate from its own CA, holding one image.
pub struct TlsRegistry {
    pub registry: Registry,
    /// The CA to trust it with (`oci.ca=`, `--ca`).
    pub ca: PathBuf,
    /// `HOST:PORT/REPO:TAG` of the image.
    pub reference: String,
    _certificates: tempfile::TempDir,
}

impl TlsRegistry {
    /// Starts one and pushes `file` to it as `repo_tag` (`REPO:TAG`), with `ocidd push --ca`.
    pub fn with_image(file: &Path, repo_tag: &str) -> TlsRegistry {
        let certificates_dir = tempfile::tempdir().unwrap();
        let (ca, certificate, key) = certificates(certificates_dir.path());
        let registry = Registry::start_tls(&certificate, &key);
        let reference = format!("{}/{repo_tag}", registry.host());
        let pushed = Run::from(
            ocidd()
                .args(["push", "--ca"])
                .arg(&ca)
                .arg(file)
                .arg(&reference)
                .output()
                .expect("running ocidd push"),
        );
        assert_eq!(pushed.code, 0, "push: {}", pushed.stderr);
        TlsRegistry {
            registry,
            ca,
            reference,
            _certificates: certificates_dir,
        }
    }
}

/// Asserts that `sgdisk -v` finds nothing wrong with the GPT of `disk` (the backup header at
/// the disk's end, CRCs, the protective MBR).
pub fn assert_gpt_consistent(disk: &Path) {
    let verify = Command::new("sgdisk")
        .arg("-v")
        .arg(disk)
        .output()
        .expect("running sgdisk (gdisk)");
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && report.contains("No problems found"),
        "sgdisk -v {}:\n{report}",
        disk.display()
    );
}

/// Runs a tool the tests check with (sgdisk, genisoimage, mtools…); panics with its
/// output unless it succeeds, else returns what it printed.
pub fn run_tool(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{text}"
    );
    text
}

/// `skopeo copy` of `reference` (at a plain-HTTP registry) into the layout `dir` as `tag`.
pub fn copy_to_layout(reference: &str, dir: &Path, tag: &str) {
    let copied = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--preserve-digests"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:{tag}", dir.display()))
        .output()
        .expect("skopeo (apt-get install skopeo; cargo xtask test does)");
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
}
