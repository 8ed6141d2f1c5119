//! What a layer holds once decompressed, when its media type does not say (another tool's
//! layer, or `oci.blob`): the raw image, a KubeVirt containerDisk (a tar whose one `disk/`
//! file is the image), or a qcow2 image. Told by the first bytes, as `file` tells them.

use std::io::{self, Read};

use anyhow::{Result, anyhow};

use crate::error::{Failure, classified, failure_of};
use crate::install::pipe::is_broken;
use crate::install::qcow2::{Qcow2Error, Qcow2Reader};

/// How much of the decompressed stream tells what it holds: a tar header's magic sits at
/// byte 257 of the first 512.
const HEAD: usize = 512;

/// What a decompressed layer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Raw,
    /// A tar archive: a containerDisk.
    Tar,
    Qcow2,
}

pub const QCOW2_MAGIC: &[u8] = b"QFI\xfb";

impl Content {
    pub fn detect(head: &[u8]) -> Content {
        if head.starts_with(QCOW2_MAGIC) {
            Content::Qcow2
        } else if head.len() >= 263 && &head[257..262] == b"ustar" {
            // POSIX ustar ("ustar\0") and GNU tar ("ustar  ") alike.
            Content::Tar
        } else {
            Content::Raw
        }
    }
}

/// Calls `write` with a reader of the raw disk image that `input` (a decompressed layer)
/// holds, in whichever shape: read as it is, taken out of a containerDisk's tar, or expanded
/// from qcow2. What follows the image in a tar (its end blocks) is left in `input`.
pub fn with_image<T>(
    input: &mut dyn Read,
    write: &mut dyn FnMut(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    let head = read_head(input)?;
    match Content::detect(&head) {
        Content::Raw => write(&mut head.as_slice().chain(input)),
        Content::Qcow2 => expand_qcow2(&mut head.as_slice().chain(input), write),
        Content::Tar => {
            let mut archive = tar::Archive::new(head.as_slice().chain(input));
            container_disk(&mut archive, write)
        }
    }
}

/// The raw image of the qcow2 file `input`, to `write`.
fn expand_qcow2<T>(
    input: &mut dyn Read,
    write: &mut dyn FnMut(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    let mut reader = Qcow2Reader::new(input).map_err(|e| {
        if Qcow2Error::is(&e) {
            classified(Failure::Verification, e.into())
        } else {
            e.into()
        }
    })?;
    write(&mut reader)
}

/// The first [`HEAD`] bytes, or all there are.
fn read_head(input: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD);
    input.take(HEAD as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// The one regular file under `disk/` (KubeVirt's containerDisk: `disk/NAME.img` or
/// `disk/NAME.qcow2`, whatever the owner and mode), streamed to `write`; other members are
/// passed over. A second disk file is refused.
fn container_disk<R: Read, T>(
    archive: &mut tar::Archive<R>,
    write: &mut dyn FnMut(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    let mut written: Option<(String, T)> = None;
    let mut others = Vec::new();
    for entry in archive.entries().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        let path = entry
            .path()
            .map_err(tar_error)?
            .to_string_lossy()
            .into_owned();
        let name = path.trim_start_matches("./").trim_start_matches('/');
        let is_file = matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse
        );
        let in_disk = name
            .strip_prefix("disk/")
            .is_some_and(|file| !file.is_empty() && !file.contains('/'));
        if !(is_file && in_disk) {
            if others.len() < 8 {
                others.push(name.to_string());
            }
            continue;
        }
        if let Some((first, _)) = &written {
            return Err(classified(
                Failure::Verification,
                anyhow!(
                    "the containerDisk holds two disks, {first} and {name}; ocidd installs one"
                ),
            ));
        }
        let head = read_head(&mut entry)?;
        let mut member = head.as_slice().chain(&mut entry);
        let value = match Content::detect(&head) {
            Content::Qcow2 => expand_qcow2(&mut member, write)?,
            _ => write(&mut member)?,
        };
        written = Some((name.to_string(), value));
    }
    match written {
        Some((_, value)) => Ok(value),
        None => Err(classified(
            Failure::Verification,
            anyhow!(
                "the layer is a tar without a disk/ file, so not a containerDisk (its image is disk/NAME.img or disk/NAME.qcow2); it has: {}",
                if others.is_empty() {
                    "nothing".to_string()
                } else {
                    others.join(", ")
                }
            ),
        )),
    }
}

/// An error reading the tar: the stream under it failing (a download, a digest, another
/// stage), or else a tar that is not what its first block said.
fn tar_error(error: io::Error) -> anyhow::Error {
    let error = anyhow::Error::from(error);
    if failure_of(&error).is_some() || is_broken(&error) {
        error
    } else {
        classified(
            Failure::Verification,
            error.context("the containerDisk's tar is corrupt"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_mode(0o555);
        dir.set_uid(107);
        builder.append_data(&mut dir, "disk/", io::empty()).unwrap();
        for (name, data) in members {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o440);
            header.set_uid(107);
            header.set_gid(107);
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn image_of(data: &[u8]) -> Result<Vec<u8>> {
        let mut input = data;
        with_image(&mut input, &mut |image| {
            let mut out = Vec::new();
            image.read_to_end(&mut out)?;
            Ok(out)
        })
    }

    #[test]
    fn tells_what_a_layer_holds() {
        assert_eq!(Content::detect(b"QFI\xfb\0\0\0\x03"), Content::Qcow2);
        assert_eq!(Content::detect(&tar(&[("disk/a.img", b"x")])), Content::Tar);
        assert_eq!(Content::detect(&[0u8; 1024]), Content::Raw);
        assert_eq!(Content::detect(b"short"), Content::Raw);
    }

    #[test]
    fn a_raw_image_passes_whole() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        assert_eq!(image_of(&data).unwrap(), data);
        assert_eq!(image_of(b"tiny").unwrap(), b"tiny");
    }

    #[test]
    fn a_container_disk_gives_its_one_disk_file() {
        let image = vec![0x5au8; 70_000];
        let layer = tar(&[("disk/downloaded.img", &image)]);
        assert_eq!(image_of(&layer).unwrap(), image);
        let mut input = layer.as_slice();
        let _ = with_image(&mut input, &mut |image| {
            Ok(io::copy(image, &mut io::sink())?)
        });
        assert!(
            input.iter().all(|b| *b == 0),
            "only the tar's end blocks are left"
        );
    }

    #[test]
    fn a_tar_without_one_disk_file_is_refused() {
        let e = image_of(&tar(&[("etc/motd", b"hi")])).unwrap_err();
        assert!(
            format!("{e:#}").contains("it has: disk/, etc/motd"),
            "{e:#}"
        );
        let e = image_of(&tar(&[("disk/a.img", b"a"), ("disk/b.img", b"b")])).unwrap_err();
        assert!(
            format!("{e:#}").contains("two disks, disk/a.img and disk/b.img"),
            "{e:#}"
        );
        let e = image_of(&tar(&[("disk/a.qcow2", b"QFI\xfb\0\0\0\x04")])).unwrap_err();
        assert!(format!("{e:#}").contains("qcow2"), "{e:#}");
    }
}
