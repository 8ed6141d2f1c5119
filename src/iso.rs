//! ocidd's boot ISO (`cargo xtask iso`) and its embed areas: a fixed-size run of `#` at the
//! end of GRUB's kernel line for a node's words, and a zero-filled `ocidd/site.img` that GRUB
//! loads after the initramfs for a site overlay. `ocidd iso customize` patches both in a copy
//! of the file, so a per-node ISO takes a copy and two writes, not a rebuild; `ocidd iso show`
//! reads them back.
//!
//! Where the areas are is written once, when the ISO is built ([`stamp`]), as one line of
//! text in the primary volume descriptor's application-use field, which ISO 9660 leaves to
//! the application: `ocidd-embed 1 words=OFFSET:LENGTH overlay=OFFSET:LENGTH`. A copy that
//! carries an image (`customize --layout`) has the tar of an OCI image layout appended after
//! the ISO's own bytes, and ` layout=OFFSET:LENGTH` on that line; `oci.layout=medium` finds
//! it on the machine's disks and CDs ([`find_layout`]) and reads it in place.
//!
//! GRUB reads the words area as the kernel line's last arguments: each word single-quoted
//! (so GRUB takes `$`, `;` and `#` in it literally), then `#`, a comment to the line's end.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cmdline::parse_words;
use crate::error::{Classify, Failure};
use crate::fail;

/// Bytes reserved on the kernel line for a node's words.
pub const WORDS_AREA: usize = 1024;
/// Bytes reserved for a site overlay.
pub const OVERLAY_AREA: usize = 1 << 20;
/// What fills the words area in a base ISO: at a word's start, GRUB's comment.
pub const WORDS_FILL: u8 = b'#';
/// Where the overlay area is on the medium, and what GRUB loads after the initramfs.
pub const OVERLAY_PATH: &str = "/ocidd/site.img";

/// The primary volume descriptor (sector 16) and its application-use field.
const DESCRIPTOR_FIELD: u64 = 16 * 2048 + 883;
const DESCRIPTOR_LENGTH: usize = 512;
const MAGIC: &str = "ocidd-embed 1 ";

/// A run of bytes in the ISO file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    pub offset: u64,
    pub length: u64,
}

/// Where an ISO's embed areas are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    pub words: Area,
    pub overlay: Area,
    /// The appended image layout's tar, in a customized copy that carries one.
    pub layout: Option<Area>,
}

impl Areas {
    fn descriptor(&self) -> String {
        let mut line = format!(
            "{MAGIC}words={}:{} overlay={}:{}",
            self.words.offset, self.words.length, self.overlay.offset, self.overlay.length
        );
        if let Some(layout) = self.layout {
            line += &format!(" layout={}:{}", layout.offset, layout.length);
        }
        line
    }

    fn field(&self) -> Vec<u8> {
        let mut field = self.descriptor().into_bytes();
        field.resize(DESCRIPTOR_LENGTH, b' ');
        field
    }

    fn parse(field: &[u8]) -> Option<Areas> {
        let text = std::str::from_utf8(field)
            .ok()?
            .trim_end_matches([' ', '\0']);
        let rest = text.strip_prefix(MAGIC)?;
        let mut words = None;
        let mut overlay = None;
        let mut layout = None;
        for part in rest.split(' ') {
            let (name, value) = part.split_once('=')?;
            let (offset, length) = value.split_once(':')?;
            let area = Area {
                offset: offset.parse().ok()?,
                length: length.parse().ok()?,
            };
            match name {
                "words" => words = Some(area),
                "overlay" => overlay = Some(area),
                "layout" => layout = Some(area),
                _ => return None,
            }
        }
        Some(Areas {
            words: words?,
            overlay: overlay?,
            layout,
        })
    }
}

/// Records `areas` in the ISO at `path`, after checking that they hold what a base ISO's
/// areas hold (the words area all `#`, the overlay area all zeros).
pub fn stamp(path: &Path, areas: &Areas) -> Result<()> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let field = read_at(&mut file, DESCRIPTOR_FIELD, DESCRIPTOR_LENGTH)?;
    if field.iter().any(|&b| b != b' ' && b != 0) {
        bail!("{}: its application-use field is taken", path.display());
    }
    if read_area(&mut file, areas.words)? != vec![WORDS_FILL; WORDS_AREA] {
        bail!("{}: the words area is not {WORDS_AREA} '#'", path.display());
    }
    if read_area(&mut file, areas.overlay)? != vec![0; OVERLAY_AREA] {
        bail!(
            "{}: the overlay area is not {OVERLAY_AREA} zeros",
            path.display()
        );
    }
    file.seek(SeekFrom::Start(DESCRIPTOR_FIELD))?;
    file.write_all(&areas.field())?;
    Ok(())
}

/// The first disk or CD of this machine (`/sys/block`) whose bytes are a customized boot ISO
/// carrying an image layout: its device and the layout's area.
pub fn find_layout() -> Option<(PathBuf, Area)> {
    let mut names: Vec<String> = fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("ram") && !n.starts_with("zram"))
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let device = PathBuf::from("/dev").join(&name);
        let mut file = File::open(&device).ok()?;
        let field = read_at(&mut file, DESCRIPTOR_FIELD, DESCRIPTOR_LENGTH).ok()?;
        let layout = Areas::parse(&field)?.layout?;
        Some((device, layout))
    })
}

/// What an ISO carries: its words and its overlay.
pub struct Carried {
    pub words: Vec<String>,
    /// The overlay's size in bytes, with its files' paths; `None`: the area is empty.
    pub overlay: Option<(u64, Vec<String>)>,
    /// Bytes of each area used.
    pub words_bytes: usize,
    /// The appended layout's size in bytes, if the copy carries one.
    pub layout_bytes: Option<u64>,
}

/// Reads what the ISO at `path` carries.
pub fn show(path: &Path) -> Result<Carried> {
    let mut file = File::open(path)
        .with_context(|| format!("reading {}", path.display()))
        .classify(Failure::Usage)?;
    let areas = areas_of(&mut file, path)?;
    let area = read_area(&mut file, areas.words)?;
    let (words, words_bytes) = read_words(&area)
        .with_context(|| format!("{}: its words area", path.display()))
        .classify(Failure::Usage)?;
    let area = read_area(&mut file, areas.overlay)?;
    let overlay = if area.iter().all(|&b| b == 0) {
        None
    } else {
        let (files, length) = read_overlay(&area)
            .with_context(|| format!("{}: its overlay area", path.display()))
            .classify(Failure::Usage)?;
        Some((length as u64, files))
    };
    Ok(Carried {
        words,
        overlay,
        words_bytes,
        layout_bytes: areas.layout.map(|a| a.length),
    })
}

/// What `customize` wrote.
pub struct Customized {
    /// Words embedded, with the `oci.layout=medium` a layout adds.
    pub words: usize,
    /// The appended layout's bytes, if any.
    pub layout_bytes: Option<u64>,
    pub words_bytes: usize,
    pub overlay_bytes: usize,
    pub overlay_files: usize,
}

/// Writes a copy of the ISO at `base` to `output` with `words` and `overlay` (a file `ocidd
/// overlay` wrote) in its areas, replacing what `base` carried. The same inputs give the
/// same bytes. `output` appears whole or not at all.
pub fn customize(
    base: &Path,
    output: &Path,
    words: &[String],
    overlay: Option<&Path>,
    layout: Option<&Path>,
) -> Result<Customized> {
    let mut words = words.to_vec();
    if layout.is_some() && !words.iter().any(|w| w.starts_with("oci.layout=")) {
        words.push("oci.layout=medium".to_string());
    }
    if let Some(dir) = layout {
        check_layout(dir)?;
    }
    let words_area = words_area(&words)?;
    let words_bytes = WORDS_AREA
        - words_area
            .iter()
            .rev()
            .take_while(|&&b| b == WORDS_FILL)
            .count();
    let mut overlay_area = Vec::new();
    let mut overlay_files = 0;
    if let Some(path) = overlay {
        overlay_area = fs::read(path)
            .with_context(|| format!("reading --overlay {}", path.display()))
            .classify(Failure::Usage)?;
        if overlay_area.len() > OVERLAY_AREA {
            fail!(
                Failure::Usage,
                "--overlay {} is {} bytes; the ISO's overlay area holds {OVERLAY_AREA} (1 MiB)",
                path.display(),
                overlay_area.len()
            );
        }
        overlay_files = read_overlay(&overlay_area)
            .with_context(|| format!("--overlay {}", path.display()))
            .classify(Failure::Usage)?
            .0
            .len();
    }
    let overlay_bytes = overlay_area.len();
    overlay_area.resize(OVERLAY_AREA, 0);

    let mut file = File::open(base)
        .with_context(|| format!("reading {}", base.display()))
        .classify(Failure::Usage)?;
    let areas = areas_of(&mut file, base)?;
    if let (Ok(a), Ok(b)) = (fs::canonicalize(base), fs::canonicalize(output))
        && a == b
    {
        fail!(
            Failure::Usage,
            "--output {} is the base ISO: write the node's copy elsewhere",
            output.display()
        );
    }
    let partial = partial_path(output);
    // The ISO's own bytes: a layout a base carried is not copied.
    let iso_end = match areas.layout {
        Some(old) => old.offset,
        None => file.metadata()?.len(),
    };
    let mut layout_bytes = None;
    let written = (|| -> Result<()> {
        let mut copy = File::create(&partial)?;
        file.seek(SeekFrom::Start(0))?;
        std::io::copy(&mut (&mut file).take(iso_end), &mut copy)?;
        let mut new_areas = Areas {
            layout: None,
            ..areas
        };
        if let Some(dir) = layout {
            let offset = iso_end.next_multiple_of(2048);
            copy.set_len(offset)?;
            copy.seek(SeekFrom::Start(offset))?;
            write_layout_tar(dir, &mut copy)?;
            let end = copy.stream_position()?;
            // Whole sectors, so that a CD reads the last one.
            copy.set_len(end.next_multiple_of(2048))?;
            new_areas.layout = Some(Area {
                offset,
                length: end - offset,
            });
            layout_bytes = Some(end - offset);
        }
        for (area, bytes) in [(areas.words, &words_area), (areas.overlay, &overlay_area)] {
            copy.seek(SeekFrom::Start(area.offset))?;
            copy.write_all(bytes)?;
        }
        copy.seek(SeekFrom::Start(DESCRIPTOR_FIELD))?;
        copy.write_all(&new_areas.field())?;
        copy.sync_all()?;
        fs::rename(&partial, output)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&partial);
        return Err(e)
            .with_context(|| format!("writing {}", output.display()))
            .classify(Failure::Target);
    }
    Ok(Customized {
        words: words.len(),
        words_bytes,
        overlay_bytes,
        overlay_files,
        layout_bytes,
    })
}

/// Refuses a `--layout` that is not an OCI image layout directory.
fn check_layout(dir: &Path) -> Result<()> {
    let marker = fs::read_to_string(dir.join("oci-layout")).unwrap_or_default();
    if !marker.contains("imageLayoutVersion") || !dir.join("index.json").is_file() {
        fail!(
            Failure::Usage,
            "--layout {} is not an OCI image layout (no oci-layout and index.json; skopeo copy docker://REF oci:DIR:TAG writes one)",
            dir.display()
        );
    }
    Ok(())
}

/// Writes the layout at `dir` as a tar to `out`: its files in name order, with fixed owners,
/// modes and times, so that the same layout gives the same bytes.
fn write_layout_tar(dir: &Path, out: &mut File) -> Result<()> {
    let mut names = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in fs::read_dir(dir.join(&relative))
            .with_context(|| format!("reading --layout {}", dir.display()))
            .classify(Failure::Usage)?
        {
            let entry = entry?;
            let name = relative.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(name);
            } else if kind.is_file() {
                names.push(name);
            }
        }
    }
    names.sort();
    let mut builder = tar::Builder::new(out);
    for name in &names {
        let path = dir.join(name);
        let mut source = File::open(&path)
            .with_context(|| format!("reading {}", path.display()))
            .classify(Failure::Usage)?;
        let mut header = tar::Header::new_ustar();
        header.set_size(source.metadata()?.len());
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, &mut source)?;
    }
    builder.into_inner()?;
    Ok(())
}

/// `output`'s name while it is written: beside it, so that the rename is atomic.
fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

/// The areas the ISO's descriptor names, checked against its size and our sizes.
fn areas_of(file: &mut File, path: &Path) -> Result<Areas> {
    let not_ours = || {
        crate::error::classified(
            Failure::Usage,
            anyhow::anyhow!(
                "{} is not an ocidd boot ISO (cargo xtask iso builds one): it names no embed areas",
                path.display()
            ),
        )
    };
    let field = read_at(file, DESCRIPTOR_FIELD, DESCRIPTOR_LENGTH).map_err(|_| not_ours())?;
    let areas = Areas::parse(&field).ok_or_else(not_ours)?;
    let size = file.metadata()?.len();
    if areas
        .layout
        .is_some_and(|a| a.offset.saturating_add(a.length) > size)
    {
        fail!(
            Failure::Usage,
            "{}: its image layout is cut short (the file is {size} bytes)",
            path.display()
        );
    }
    for (area, length) in [(areas.words, WORDS_AREA), (areas.overlay, OVERLAY_AREA)] {
        if area.length != length as u64 || area.offset.saturating_add(area.length) > size {
            fail!(
                Failure::Usage,
                "{}: its embed areas do not fit the file or this ocidd",
                path.display()
            );
        }
    }
    Ok(areas)
}

fn read_area(file: &mut File, area: Area) -> Result<Vec<u8>> {
    read_at(file, area.offset, area.length as usize)
}

fn read_at(file: &mut File, offset: u64, length: usize) -> Result<Vec<u8>> {
    let mut bytes = vec![0; length];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// The words area holding `words`, each checked as an install reads it. GRUB rewrites
/// quotes, backslashes and spaces when it builds the kernel's line, so a word may hold none.
pub fn words_area(words: &[String]) -> Result<Vec<u8>> {
    for word in words {
        let name = crate::cmdline::bounded_name(word.split('=').next().unwrap_or(word));
        if word.is_empty() {
            fail!(Failure::Usage, "an empty word cannot be embedded");
        }
        if word
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '\'' | '"' | '\\'))
        {
            fail!(
                Failure::Usage,
                "{name}: a space, a quote, a backslash or a control character cannot be embedded (GRUB rewrites them)"
            );
        }
    }
    parse_words(words)?;
    let mut area: Vec<u8> = words
        .iter()
        .flat_map(|w| format!("'{w}' ").into_bytes())
        .collect();
    if area.len() > WORDS_AREA {
        fail!(
            Failure::Usage,
            "the words take {} bytes quoted; the ISO's words area holds {WORDS_AREA}",
            area.len()
        );
    }
    area.resize(WORDS_AREA, WORDS_FILL);
    Ok(area)
}

/// The words in a words area, and the bytes they take.
fn read_words(area: &[u8]) -> Result<(Vec<String>, usize)> {
    let text = std::str::from_utf8(area).context("not UTF-8")?;
    let mut words = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() || rest.starts_with('#') {
            break;
        }
        let Some(quoted) = rest.strip_prefix('\'') else {
            bail!("not as ocidd writes it (a word is not quoted)");
        };
        let Some((word, after)) = quoted.split_once('\'') else {
            bail!("not as ocidd writes it (a quote is not closed)");
        };
        words.push(word.to_string());
        rest = after;
    }
    Ok((words, text.len() - rest.len()))
}

/// The paths of the files in an overlay (a newc cpio, gzip'd as `ocidd overlay` writes it,
/// or not) at the start of `bytes`, and the bytes it takes.
fn read_overlay(bytes: &[u8]) -> Result<(Vec<String>, usize)> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut gunzip = flate2::bufread::GzDecoder::new(bytes);
        let paths = cpio_paths(&mut gunzip)?;
        // To the gzip member's end, so that what is left is what follows it.
        std::io::copy(&mut gunzip, &mut std::io::sink()).context("the gzip stream is cut short")?;
        Ok((paths, bytes.len() - gunzip.into_inner().len()))
    } else if bytes.starts_with(b"070701") {
        let mut rest = bytes;
        let paths = cpio_paths(&mut rest)?;
        Ok((paths, bytes.len() - rest.len()))
    } else {
        bail!("not a site overlay (a gzip'd or plain newc cpio, as ocidd overlay writes)")
    }
}

fn cpio_paths<R: Read>(mut reader: R) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    loop {
        let entry = cpio::newc::Reader::new(reader).context("not a newc cpio")?;
        if entry.entry().is_trailer() {
            return Ok(paths);
        }
        let regular = entry.entry().mode() & 0o170000 == 0o100000;
        if regular {
            paths.push(format!("/{}", entry.entry().name().trim_start_matches('/')));
        }
        reader = entry.finish().context("the cpio is cut short")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_reads_back() {
        let areas = Areas {
            words: Area {
                offset: 1 << 20,
                length: WORDS_AREA as u64,
            },
            overlay: Area {
                offset: 3 << 20,
                length: OVERLAY_AREA as u64,
            },
            layout: None,
        };
        let mut field = areas.descriptor().into_bytes();
        field.resize(DESCRIPTOR_LENGTH, b' ');
        assert_eq!(Areas::parse(&field), Some(areas));
        let carrying = Areas {
            layout: Some(Area {
                offset: 30 << 20,
                length: 5 << 20,
            }),
            ..areas
        };
        assert_eq!(Areas::parse(&carrying.field()), Some(carrying));
        assert_eq!(Areas::parse(&[b' '; DESCRIPTOR_LENGTH]), None);
    }

    #[test]
    fn words_are_quoted_then_a_comment() {
        let words = vec![
            "oci.tag=r.example/a:b".to_string(),
            "x=$a;#1".to_string(),
            "ip=dhcp".to_string(),
        ];
        let area = words_area(&words).unwrap();
        assert!(area.starts_with(b"'oci.tag=r.example/a:b' 'x=$a;#1' 'ip=dhcp' ##"));
        assert_eq!(area.len(), WORDS_AREA);
        assert_eq!(read_words(&area).unwrap().0, words);
        assert_eq!(
            read_words(&[WORDS_FILL; 8]).unwrap().0,
            Vec::<String>::new()
        );
    }

    #[test]
    fn what_grub_would_rewrite_is_refused() {
        for word in ["oci.tag=a b", "x='y'", "x=\"y\"", "x=a\\b", "x=\t"] {
            assert!(words_area(&[word.to_string()]).is_err(), "{word}");
        }
        let long = format!("x={}", "a".repeat(WORDS_AREA));
        let error = words_area(&[long]).unwrap_err().to_string();
        assert!(error.contains("holds 1024"), "{error}");
    }
}
