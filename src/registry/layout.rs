//! `oci.layout=DIR`: an OCI image layout (what `skopeo copy … oci:DIR:TAG` and `oras copy
//! --to-oci-layout` write: `index.json`, `blobs/ALGORITHM/HEX`) on a local medium, served as
//! the first source of an install, before the mirrors and the registry. It answers what the
//! install asks a registry for: manifests by tag (the `org.opencontainers.image.ref.name` of
//! an `index.json` entry) or by digest, and blobs by digest, with ranges.
//!
//! It is served over loopback HTTP so that an install from a medium goes through the one
//! fetch path every install takes ([`super::client::Registry`], [`super::blob::BlobReader`]):
//! the same digest checks, signature checks, chunked parallel ranges, retries and reports.
//! What the layout lacks is asked of the next source, as with a mirror.
//!
//! The layout is a directory, or (`oci.layout=medium`) the tar of one that `ocidd iso
//! customize --layout` appended to the boot ISO, read in place from the medium's block device.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Deserialize;
use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use crate::error::{Classify, Failure};
use crate::iso::Area;
use crate::{fail, say};

/// `oci.layout=`: where the layout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutSource {
    /// A directory.
    Directory(PathBuf),
    /// The one appended to the boot medium (`medium`).
    Medium,
}

impl FromStr for LayoutSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "medium" => LayoutSource::Medium,
            dir => LayoutSource::Directory(dir.into()),
        })
    }
}

impl fmt::Display for LayoutSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutSource::Directory(dir) => write!(f, "{}", dir.display()),
            LayoutSource::Medium => write!(f, "medium"),
        }
    }
}

/// How long to wait for the boot medium: a USB stick's disk appears seconds after /init starts.
const MEDIUM_WAIT: Duration = Duration::from_secs(30);

/// The annotation that names an `index.json` entry's tag.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Requests served at once: a chunked install fetches ranges in parallel.
const WORKERS: usize = 8;

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize, Clone)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

/// A layout served on loopback while this lives.
pub struct LayoutServer {
    server: Arc<Server>,
    workers: Vec<JoinHandle<()>>,
    port: u16,
}

impl LayoutServer {
    /// Checks `source` is an OCI image layout and starts serving it on 127.0.0.1.
    pub fn start(source: &LayoutSource) -> Result<LayoutServer> {
        let layout = match source {
            LayoutSource::Directory(dir) => Layout::open(Store::Directory(dir.clone()), source)?,
            LayoutSource::Medium => {
                let (device, area) = wait_for_medium()?;
                say!(
                    "ocidd: the image layout is on {} ({} MiB)",
                    device.display(),
                    area.length >> 20
                );
                Layout::open(Store::region(&device, area)?, source)?
            }
        };
        let server = Server::http("127.0.0.1:0")
            .map_err(|e| anyhow::anyhow!("serving oci.layout={source} on loopback: {e}"))
            .classify(Failure::Target)?;
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .context("the loopback server has no port")?;
        let server = Arc::new(server);
        let layout = Arc::new(layout);
        let workers = (0..WORKERS)
            .map(|_| {
                let server = Arc::clone(&server);
                let layout = Arc::clone(&layout);
                std::thread::spawn(move || {
                    while let Ok(request) = server.recv() {
                        layout.answer(request);
                    }
                })
            })
            .collect();
        Ok(LayoutServer {
            server,
            workers,
            port,
        })
    }

    /// `HOST:PORT`, to reach it by plain HTTP.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for LayoutServer {
    fn drop(&mut self) {
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// The boot medium that carries a layout: its device and the layout's area, once it shows.
fn wait_for_medium() -> Result<(PathBuf, Area)> {
    let deadline = Instant::now() + MEDIUM_WAIT;
    let mut told = false;
    loop {
        if let Some(found) = crate::iso::find_layout() {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            fail!(
                Failure::Usage,
                "oci.layout=medium: no disk or CD carries a boot ISO with an image layout (ocidd iso customize --layout appends one)"
            );
        }
        if !told {
            say!("ocidd: waiting for the boot medium with the image layout");
            told = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Where a layout's files are.
enum Store {
    Directory(PathBuf),
    /// A tar of the layout in `area` of `path` (a block device), indexed: each file's
    /// offset in `path` and length.
    Region {
        path: PathBuf,
        files: HashMap<String, (u64, u64)>,
    },
}

impl Store {
    fn region(path: &Path, area: Area) -> Result<Store> {
        let file = File::open(path)
            .with_context(|| format!("opening {}", path.display()))
            .classify(Failure::Target)?;
        let window = Window::new(file, area)?;
        let mut archive = tar::Archive::new(window);
        let mut files = HashMap::new();
        for entry in archive
            .entries_with_seek()
            .context("the medium's image layout is not a tar")
            .classify(Failure::Verification)?
        {
            let entry = entry
                .context("the medium's image layout is cut short")
                .classify(Failure::Verification)?;
            let name = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            files.insert(
                name,
                (area.offset + entry.raw_file_position(), entry.size()),
            );
        }
        Ok(Store::Region {
            path: path.to_path_buf(),
            files,
        })
    }

    /// The file `name` (`index.json`, `blobs/sha256/HEX`): opened at its start, with its length.
    fn open(&self, name: &str) -> Option<(File, u64)> {
        match self {
            Store::Directory(dir) => {
                let path = dir.join(name);
                let file = File::open(path).ok()?;
                let meta = file.metadata().ok()?;
                meta.is_file().then_some((file, meta.len()))
            }
            Store::Region { path, files } => {
                let &(offset, length) = files.get(name)?;
                let mut file = File::open(path).ok()?;
                file.seek(SeekFrom::Start(offset)).ok()?;
                Some((file, length))
            }
        }
    }

    fn read(&self, name: &str) -> Option<Vec<u8>> {
        let (file, length) = self.open(name)?;
        let mut bytes = Vec::new();
        file.take(length).read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }
}

/// A part of a file as a file of its own, for the tar reader to seek in.
struct Window {
    file: File,
    area: Area,
    position: u64,
}

impl Window {
    fn new(mut file: File, area: Area) -> Result<Window> {
        file.seek(SeekFrom::Start(area.offset))?;
        Ok(Window {
            file,
            area,
            position: 0,
        })
    }
}

impl Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.area.length.saturating_sub(self.position);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let read = self.file.read(&mut buf[..want])?;
        self.position += read as u64;
        Ok(read)
    }
}

impl Seek for Window {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let position = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.position.checked_add_signed(d),
            SeekFrom::End(d) => self.area.length.checked_add_signed(d),
        }
        .ok_or_else(|| std::io::Error::other("seek out of the layout's area"))?;
        self.file
            .seek(SeekFrom::Start(self.area.offset + position))?;
        self.position = position;
        Ok(position)
    }
}

/// An OCI image layout, read.
struct Layout {
    store: Store,
    entries: Vec<Descriptor>,
}

impl Layout {
    fn open(store: Store, source: &LayoutSource) -> Result<Layout> {
        let named = |what: &str| format!("oci.layout={source}: {what}");
        let Some(marker) = store.read("oci-layout") else {
            fail!(
                Failure::Usage,
                "{}",
                named("no oci-layout file: not an OCI image layout")
            );
        };
        if !String::from_utf8_lossy(&marker).contains("imageLayoutVersion") {
            fail!(
                Failure::Usage,
                "{}",
                named("its oci-layout file is not an OCI layout's")
            );
        }
        let Some(index) = store.read("index.json") else {
            fail!(Failure::Usage, "{}", named("no index.json"));
        };
        let index: Index = serde_json::from_slice(&index)
            .with_context(|| named("index.json is not an OCI image index"))
            .classify(Failure::Usage)?;
        Ok(Layout {
            store,
            entries: index.manifests,
        })
    }

    /// A blob's name in the layout, if `digest` is a well-formed digest (never a path out
    /// of `blobs/`).
    fn blob_name(digest: &str) -> Option<String> {
        let parsed: crate::digest::Digest = digest.parse().ok()?;
        let text = parsed.to_string();
        let (algorithm, hex) = text.split_once(':')?;
        Some(format!("blobs/{algorithm}/{hex}"))
    }

    /// `/v2/REPOSITORY/manifests/NAME` or `/v2/REPOSITORY/blobs/DIGEST` (any repository:
    /// a layout holds what was copied into it), and `/v2/`.
    fn answer(&self, request: Request) {
        let head = *request.method() == Method::Head;
        if !head && *request.method() != Method::Get {
            let _ = request.respond(Response::empty(405));
            return;
        }
        let path = request.url().split('?').next().unwrap_or("").to_string();
        if path == "/v2/" || path == "/v2" {
            let _ = request.respond(Response::empty(200));
            return;
        }
        let found = if let Some((_, name)) = path.rsplit_once("/manifests/") {
            self.manifest(name)
        } else if let Some((_, digest)) = path.rsplit_once("/blobs/") {
            Layout::blob_name(digest).map(|name| (name, None))
        } else {
            None
        };
        let Some(((file, size), media_type)) =
            found.and_then(|(name, media_type)| Some((self.store.open(&name)?, media_type)))
        else {
            let _ = request.respond(Response::empty(404));
            return;
        };
        let range = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("Range"))
            .map(|h| h.value.as_str().to_string());
        let _ = match serve(file, size, media_type.as_deref(), range.as_deref(), head) {
            Ok(response) => request.respond(response),
            Err(_) => request.respond(Response::empty(500).boxed()),
        };
    }

    /// A manifest's name in the layout and its media type, by digest or by tag.
    fn manifest(&self, name: &str) -> Option<(String, Option<String>)> {
        let entry = if name.contains(':') {
            self.entries.iter().find(|e| e.digest == name)
        } else {
            // The last entry of a name wins, as `skopeo copy` replaces one.
            self.entries
                .iter()
                .rev()
                .find(|e| e.annotations.get(REF_NAME).is_some_and(|r| r == name))
        };
        let media_type = entry.and_then(|e| e.media_type.clone());
        let digest = entry.map_or(name, |e| e.digest.as_str());
        let blob = Layout::blob_name(digest)?;
        let media_type = media_type.or_else(|| {
            let body = self.store.read(&blob)?;
            let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
            value.get("mediaType")?.as_str().map(str::to_string)
        });
        Some((blob, media_type))
    }
}

/// The answer for `file` (opened at its start, `size` bytes): whole (200), or the range asked
/// for (206), or 416.
fn serve(
    mut file: File,
    size: u64,
    media_type: Option<&str>,
    range: Option<&str>,
    head: bool,
) -> Result<Response<Box<dyn Read + Send>>> {
    let base = file.stream_position()?;
    let mut headers: Vec<Header> = [
        Some(("Accept-Ranges", "bytes")),
        media_type.map(|m| ("Content-Type", m)),
    ]
    .into_iter()
    .flatten()
    .filter_map(|(field, value)| header(field, value))
    .collect();
    let (status, start, length) = match range.map(|r| parse_range(r, size)) {
        None => (200, 0, size),
        Some(Some((start, end))) => {
            headers.extend(header(
                "Content-Range",
                &format!("bytes {start}-{}/{size}", end - 1),
            ));
            (206, start, end - start)
        }
        Some(None) => {
            headers.extend(header("Content-Range", &format!("bytes */{size}")));
            return Ok(Response::new(
                StatusCode(416),
                headers,
                Box::new(std::io::empty()),
                Some(0),
                None,
            ));
        }
    };
    file.seek(SeekFrom::Start(base + start))?;
    let body: Box<dyn Read + Send> = if head {
        Box::new(std::io::empty())
    } else {
        Box::new(file.take(length))
    };
    Ok(Response::new(
        StatusCode(status),
        headers,
        body,
        usize::try_from(length).ok(),
        None,
    )
    // Content-Length, never chunked transfer (tiny_http's default above 32 KiB): the reader
    // learns the blob's size from it, and chunk framing costs a third of the speed.
    .with_chunked_threshold(usize::MAX))
}

/// A header, unless its value is not one HTTP can carry (a media type in index.json is the
/// layout's to say): then the install finds the type in the manifest itself.
fn header(field: &str, value: &str) -> Option<Header> {
    Header::from_bytes(field.as_bytes(), value.as_bytes()).ok()
}

/// `bytes=START-[END]` as a half-open range within `size`; `None` when it is not satisfiable.
fn parse_range(range: &str, size: u64) -> Option<(u64, u64)> {
    let (start, end) = range.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => size,
        end => end.parse::<u64>().ok()?.saturating_add(1).min(size),
    };
    (start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_registries_read_them() {
        assert_eq!(parse_range("bytes=0-", 10), Some((0, 10)));
        assert_eq!(parse_range("bytes=2-4", 10), Some((2, 5)));
        assert_eq!(parse_range("bytes=2-40", 10), Some((2, 10)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("items=0-1", 10), None);
    }
}
