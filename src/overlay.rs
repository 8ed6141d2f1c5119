//! A site overlay: a small initramfs of a site's files (its default words in
//! `/etc/ocidd/cmdline`, a CA, credentials) that boot loaders load after the main one, so that
//! prebuilt boot files plus one overlay are a site's whole setup (`ocidd overlay`).
//!
//! The archive is reproducible: newc cpio (what the kernel unpacks), entries sorted, parent
//! directories made explicit, uid/gid 0, mtime 0, gzip (which every kernel unpacks) with no
//! name or time in its header. The same files give the same bytes.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use cpio::newc::{Builder, ModeFileType};
use flate2::{Compression, GzBuilder};

use crate::cmdline::{DEFAULTS_FILE, parse_words, split_defaults, text_words};
use crate::error::{Classify, Failure};
use crate::fail;
use crate::registry::auth::check_boot_config;
use crate::registry::client::parse_certificates;
use crate::report::parse_token;
use crate::signature::keys::parse_public_key_pem;

/// Where files are private: credentials, tokens, the default words that may name a proxy's
/// password. Files here get mode 0600, the directory 0700.
const PRIVATE_DIR: &str = "/etc/ocidd";

/// One file for the overlay: `SRC=DEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayFile {
    pub source: PathBuf,
    /// An absolute path in the booted system.
    pub dest: String,
}

impl std::str::FromStr for OverlayFile {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (source, dest) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not SRC=DEST"))?;
        if source.is_empty() {
            return Err(format!("{text:?} has no source file before '='"));
        }
        Ok(OverlayFile {
            source: source.into(),
            dest: check_dest(dest)?,
        })
    }
}

/// An absolute, normal path naming a file (not `/`, no `.`, `..` or empty segments).
fn check_dest(dest: &str) -> Result<String, String> {
    let Some(rest) = dest.strip_prefix('/') else {
        return Err(format!("the destination {dest:?} is not an absolute path"));
    };
    if rest.is_empty() || rest.ends_with('/') {
        return Err(format!("the destination {dest:?} does not name a file"));
    }
    // By its text: Path's components() quietly drops a "." in the middle.
    if rest
        .split('/')
        .any(|segment| matches!(segment, "" | "." | ".."))
    {
        return Err(format!(
            "the destination {dest:?} is not a plain path (no '.', '..' or '//')"
        ));
    }
    Ok(dest.to_string())
}

/// What goes into the archive, by path (so sorted, parents before children).
enum Entry {
    Directory { mode: u32 },
    File { mode: u32, data: Vec<u8> },
}

/// What [`write()`] wrote.
#[derive(Debug)]
pub struct Written {
    pub files: usize,
    pub bytes: u64,
    /// Paths the default words name (CA, credentials, token, verify keys) that the overlay
    /// does not carry: they must be in the main initramfs, or the install will not find them.
    pub missing: Vec<String>,
}

/// Writes the overlay of `files` to `output`. `/etc/ocidd/cmdline`, if given, is checked as
/// /init will read it, so that a typo fails here rather than at every machine's boot.
pub fn write(files: &[OverlayFile], output: &Path) -> Result<Written> {
    if files.is_empty() {
        fail!(Failure::Usage, "no files given (SRC=DEST …)");
    }
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for file in files {
        let (data, source_mode) = read_source(&file.source)?;
        let private = Path::new(&file.dest).starts_with(PRIVATE_DIR);
        let executable = source_mode & 0o111 != 0;
        // Under /etc/ocidd always private; elsewhere private when the source is.
        let readable = !private && source_mode & 0o044 != 0;
        let mode = match (executable, readable) {
            (true, true) => 0o755,
            (true, false) => 0o700,
            (false, true) => 0o644,
            (false, false) => 0o600,
        };
        let name = file.dest.trim_start_matches('/').to_string();
        match entries.get(&name) {
            Some(Entry::File { .. }) => fail!(
                Failure::Usage,
                "the destination {} is given twice",
                file.dest
            ),
            Some(Entry::Directory { .. }) => fail!(
                Failure::Usage,
                "{} is given as a file and as a directory",
                file.dest
            ),
            None => {}
        }
        let mut parent = Path::new(&name).parent();
        while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
            let dir_name = dir.to_string_lossy().into_owned();
            if let Some(Entry::File { .. }) = entries.get(&dir_name) {
                fail!(
                    Failure::Usage,
                    "/{dir_name} is given as a file and as a directory"
                );
            }
            let mode = if Path::new("/").join(dir).starts_with(PRIVATE_DIR) {
                0o700
            } else {
                0o755
            };
            entries.insert(dir_name, Entry::Directory { mode });
            parent = dir.parent();
        }
        entries.insert(name, Entry::File { mode, data });
    }
    let mut missing = Vec::new();
    let defaults = DEFAULTS_FILE.trim_start_matches('/');
    if let Some(Entry::File { data, .. }) = entries.get(defaults) {
        missing = check_defaults(data, &entries)?;
    }

    let archive = archive(&entries)?;
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    gz.write_all(&archive)
        .context("compressing the overlay")
        .classify(Failure::Usage)?;
    let compressed = gz
        .finish()
        .context("compressing the overlay")
        .classify(Failure::Usage)?;
    write_private(output, &compressed)?;
    Ok(Written {
        files: files.len(),
        bytes: compressed.len() as u64,
        missing,
    })
}

/// The largest file an overlay takes: every machine holds the overlay in memory while it
/// boots, and an initramfs file is for settings, not payloads.
const MAX_FILE: u64 = 64 << 20;

/// A source file's bytes and permission bits. Only a regular file of at most [`MAX_FILE`] is
/// read: a directory, a FIFO (which would wait for a writer) or a device (`/dev/zero`, which
/// never ends) is refused before it is opened.
fn read_source(source: &Path) -> Result<(Vec<u8>, u32)> {
    let metadata = fs::metadata(source)
        .with_context(|| format!("reading {}", source.display()))
        .classify(Failure::Usage)?;
    if metadata.is_dir() {
        fail!(
            Failure::Usage,
            "{} is a directory; name each file (SRC=DEST)",
            source.display()
        );
    }
    if !metadata.is_file() {
        fail!(
            Failure::Usage,
            "{} is not a regular file (a FIFO, socket or device)",
            source.display()
        );
    }
    let too_large = || {
        crate::error::classified(
            Failure::Usage,
            anyhow!(
                "{} is larger than the {} MiB an overlay file may be",
                source.display(),
                MAX_FILE >> 20
            ),
        )
    };
    if metadata.len() > MAX_FILE {
        return Err(too_large());
    }
    let mut data = Vec::new();
    fs::File::open(source)
        .and_then(|file| file.take(MAX_FILE + 1).read_to_end(&mut data))
        .with_context(|| format!("reading {}", source.display()))
        .classify(Failure::Usage)?;
    if data.len() as u64 > MAX_FILE {
        return Err(too_large());
    }
    Ok((data, metadata.permissions().mode()))
}

/// Writes `data` to `output` readable by its owner only (it may carry credentials), whole or
/// not at all: into a new file beside it, flushed, then renamed over it, so that a full file
/// system or a crash leaves any earlier overlay as it was.
fn write_private(output: &Path, data: &[u8]) -> Result<()> {
    let dir = match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let writing = || -> std::io::Result<()> {
        // tempfile creates it with mode 0600.
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        file.write_all(data)?;
        file.as_file().sync_all()?;
        file.persist(output).map_err(|e| e.error)?;
        Ok(())
    };
    writing()
        .with_context(|| format!("writing {}", output.display()))
        .classify(Failure::Target)
}

/// Parses the default words as /init will; checks the files they name that the overlay
/// carries as the install will read them (a CA must hold PEM certificates, a verify key must
/// be a P-256 public key, credentials a docker config usable at boot, a token not empty), so
/// that a bad file fails here rather than at every boot; and lists the files they name that
/// the overlay lacks.
fn check_defaults(data: &[u8], entries: &BTreeMap<String, Entry>) -> Result<Vec<String>> {
    let words = text_words(&split_defaults(data))
        .and_then(|words| parse_words(&words))
        .map_err(|e| anyhow!("{DEFAULTS_FILE}: {e:#}"))
        .classify(Failure::Usage)?;
    let params = &words.install;
    type Check = fn(&[u8], &Path) -> Result<()>;
    let mut named: Vec<(PathBuf, Check)> = Vec::new();
    if let Some(ca) = &params.registry.ca {
        named.push((ca.clone(), |data, path| {
            parse_certificates(data, path).map(drop)
        }));
    }
    if let Some(auth) = &params.registry.auth {
        named.push((auth.clone(), check_boot_config));
    }
    if let Some(token) = &params.report.token {
        named.push((token.clone(), |data, path| {
            parse_token(data, path).map(drop)
        }));
    }
    for key in params
        .verify
        .keys
        .iter()
        .filter(|key| !key.starts_with("b64:"))
    {
        named.push((key.into(), |data, path| {
            parse_public_key_pem(data, path).map(drop)
        }));
    }
    let mut missing = Vec::new();
    for (path, check) in named {
        let name = path.to_string_lossy();
        match entries.get(name.trim_start_matches('/')) {
            Some(Entry::File { data, .. }) => check(data, &path)
                .map_err(|e| anyhow!("{DEFAULTS_FILE} names {name}, but {e:#}"))
                .classify(Failure::Usage)?,
            _ => missing.push(name.into_owned()),
        }
    }
    Ok(missing)
}

/// The newc archive of `entries`.
fn archive(entries: &BTreeMap<String, Entry>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (ino, (name, entry)) in (1u32..).zip(entries) {
        let builder = Builder::new(name).ino(ino).uid(0).gid(0).mtime(0);
        let (builder, data): (Builder, &[u8]) = match entry {
            Entry::Directory { mode } => (
                builder
                    .mode(*mode)
                    .nlink(2)
                    .set_mode_file_type(ModeFileType::Directory),
                &[],
            ),
            Entry::File { mode, data } => (
                builder
                    .mode(*mode)
                    .set_mode_file_type(ModeFileType::Regular),
                data,
            ),
        };
        let size = u32::try_from(data.len())
            .map_err(|_| anyhow!("/{name} is too large for an initramfs (4 GiB or more)"))
            .classify(Failure::Usage)?;
        let mut writer = builder.write(&mut out, size);
        writer.write_all(data)?;
        writer.finish()?;
    }
    cpio::newc::trailer(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The entries of a gzip'd newc archive: name, mode, uid, gid, mtime, data.
    fn unpack(path: &Path) -> Vec<(String, u32, u32, u32, u64, Vec<u8>)> {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(fs::File::open(path).unwrap())
            .read_to_end(&mut raw)
            .unwrap();
        let mut entries = Vec::new();
        let mut rest: &[u8] = &raw;
        loop {
            let mut reader = cpio::NewcReader::new(rest).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            let e = reader.entry();
            let (name, mode, uid, gid, mtime) =
                (e.name().to_string(), e.mode(), e.uid(), e.gid(), e.mtime());
            let mut data = Vec::new();
            reader.read_to_end(&mut data).unwrap();
            entries.push((name, mode, uid, gid, u64::from(mtime), data));
            rest = reader.finish().unwrap();
        }
        entries
    }

    #[test]
    fn reproducible_sorted_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let (words, ca, hook) = (
            dir.path().join("words"),
            dir.path().join("ca.pem"),
            dir.path().join("hook"),
        );
        fs::write(
            &words,
            "oci.auth=/etc/ocidd/auth.json oci.verify.key=/etc/ocidd/k.pub\n",
        )
        .unwrap();
        fs::write(&ca, "PEM").unwrap();
        fs::write(&hook, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
        let files: Vec<OverlayFile> = [
            format!("{}=/usr/local/bin/hook", hook.display()),
            format!("{}=/etc/ocidd/cmdline", words.display()),
            format!("{}=/etc/ocidd/ca.pem", ca.display()),
        ]
        .iter()
        .map(|f| f.parse().unwrap())
        .collect();
        let (first, second) = (dir.path().join("a.img"), dir.path().join("b.img"));
        let written = write(&files, &first).unwrap();
        assert_eq!(written.files, 3);
        assert_eq!(
            written.missing,
            ["/etc/ocidd/auth.json", "/etc/ocidd/k.pub"]
        );
        // Another time, and a day later: the same bytes.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(86400);
        fs::File::options()
            .write(true)
            .open(&ca)
            .unwrap()
            .set_modified(later)
            .unwrap();
        write(&files, &second).unwrap();
        assert_eq!(fs::read(&first).unwrap(), fs::read(&second).unwrap());

        let entries = unpack(&first);
        let shown: Vec<(&str, u32)> = entries
            .iter()
            .map(|(name, mode, ..)| (name.as_str(), *mode))
            .collect();
        assert_eq!(
            shown,
            [
                ("etc", 0o040755),
                ("etc/ocidd", 0o040700),
                ("etc/ocidd/ca.pem", 0o100600),
                ("etc/ocidd/cmdline", 0o100600),
                ("usr", 0o040755),
                ("usr/local", 0o040755),
                ("usr/local/bin", 0o040755),
                ("usr/local/bin/hook", 0o100755),
            ]
        );
        assert!(
            entries
                .iter()
                .all(|(_, _, uid, gid, mtime, _)| (*uid, *gid, *mtime) == (0, 0, 0))
        );
        assert_eq!(entries[2].5, b"PEM");
    }

    #[test]
    fn bad_files() {
        for (text, says) in [
            ("a", "is not SRC=DEST"),
            ("=/etc/x", "no source file"),
            ("a=etc/x", "not an absolute path"),
            ("a=/", "does not name a file"),
            ("a=/etc/", "does not name a file"),
            ("a=/etc/../x", "not a plain path"),
            ("a=/etc//x", "not a plain path"),
        ] {
            let e = text.parse::<OverlayFile>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.img");
        let file = |s: &str| s.parse::<OverlayFile>().unwrap();
        let e = write(&[file("/nonexistent=/etc/x")], &out).unwrap_err();
        assert!(format!("{e:#}").contains("reading /nonexistent"), "{e:#}");
        let src = dir.path().join("f");
        fs::write(&src, "x").unwrap();
        let twice = [
            file(&format!("{}=/etc/x", src.display())),
            file(&format!("{}=/etc/x", src.display())),
        ];
        assert!(format!("{:#}", write(&twice, &out).unwrap_err()).contains("given twice"));
        let both = [
            file(&format!("{}=/etc/x", src.display())),
            file(&format!("{}=/etc/x/y", src.display())),
        ];
        assert!(
            format!("{:#}", write(&both, &out).unwrap_err())
                .contains("as a file and as a directory")
        );
        fs::write(&src, "oci.mirorr=cache:5000").unwrap();
        let typo = [file(&format!("{}=/etc/ocidd/cmdline", src.display()))];
        let e = format!("{:#}", write(&typo, &out).unwrap_err());
        assert!(
            e.contains("/etc/ocidd/cmdline: unknown parameter oci.mirorr"),
            "{e}"
        );
        assert!(!out.exists());
    }
}
