//! How a disk image is compressed: the formats, their layer media types, and how a blob's
//! first bytes tell them. Push compresses in gzip and zstd (`push`), install undoes them and
//! xz (`install::decompress`).

use std::fmt;
use std::ops::RangeInclusive;

use crate::registry::manifest::media_type;

/// gzip's levels, and the one `ocidd push` uses unless told otherwise.
pub const GZIP_LEVELS: RangeInclusive<i32> = 1..=9;
pub const DEFAULT_GZIP_LEVEL: i32 = 6;
/// zstd's levels, and the one `ocidd push` uses unless told otherwise.
pub const ZSTD_LEVELS: RangeInclusive<i32> = 1..=22;
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// How a disk image blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip, possibly several members back to back (as pigz and `ocidd push` write).
    Gzip,
    /// zstd, possibly several frames.
    Zstd,
    /// xz, possibly several streams, each of one block or many (`xz -T0` writes many, which
    /// decode in parallel). Read only: Fedora CoreOS, Talos and curtin images come this way.
    Xz,
    /// The raw image.
    None,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
pub(crate) const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// Formats we recognise only to refuse them clearly.
const UNSUPPORTED_MAGIC: &[(&[u8], &str)] = &[
    (b"BZh", "bzip2"),
    (&[0x04, 0x22, 0x4d, 0x18], "lz4"),
    (&[0x89, b'L', b'Z', b'O'], "lzo"),
];

impl Compression {
    /// The layer media type an image compressed this way has.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => media_type::LAYER_GZIP,
            Compression::Zstd => media_type::LAYER_ZSTD,
            Compression::Xz => media_type::LAYER_XZ,
            Compression::None => media_type::LAYER_RAW,
        }
    }

    /// The compressions `ocidd push` writes.
    pub fn can_push(self) -> bool {
        self != Compression::Xz
    }

    /// What a file compressed this way ends in: `.gz`, `.zst`, or nothing.
    pub fn file_suffix(self) -> &'static str {
        match self {
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
            Compression::Xz => ".xz",
            Compression::None => "",
        }
    }

    /// The compression a disk-image layer media type stands for; `None` for other layers.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        if media_type == media_type::LAYER_XZ_ALIAS {
            return Some(Compression::Xz);
        }
        [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Xz,
            Compression::None,
        ]
        .into_iter()
        .find(|c| c.media_type() == media_type)
    }

    /// Recognises the compression from the first bytes of a blob.
    pub fn detect(head: &[u8]) -> Result<Compression, String> {
        if head.starts_with(GZIP_MAGIC) {
            return Ok(Compression::Gzip);
        }
        if head.starts_with(ZSTD_MAGIC) {
            return Ok(Compression::Zstd);
        }
        if head.starts_with(XZ_MAGIC) {
            return Ok(Compression::Xz);
        }
        if let Some((_, name)) = UNSUPPORTED_MAGIC.iter().find(|(m, _)| head.starts_with(m)) {
            return Err(format!(
                "the blob is {name}-compressed, which is not supported (use gzip, zstd, xz or none)"
            ));
        }
        Ok(Compression::None)
    }

    /// Checks a blob labelled with this compression against its first bytes: gzip or zstd
    /// data in a layer labelled uncompressed (an easy mistake with `oras push`) would be
    /// written to the disk as it is.
    pub fn check_label(self, head: &[u8]) -> Result<(), String> {
        match (self, Compression::detect(head)) {
            (
                Compression::None,
                Ok(actual @ (Compression::Gzip | Compression::Zstd | Compression::Xz)),
            ) => Err(format!(
                "the layer is labelled {} (uncompressed) but holds {actual} data; push it with the media type {}",
                self.media_type(),
                actual.media_type()
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::None => "uncompressed",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats() {
        let gzip = flate2::read::GzEncoder::new(&b"x"[..], flate2::Compression::fast());
        let gzip: Vec<u8> = std::io::Read::bytes(gzip).map(Result::unwrap).collect();
        assert_eq!(Compression::detect(&gzip), Ok(Compression::Gzip));
        let z = zstd::encode_all(&b"x"[..], 1).unwrap();
        assert_eq!(Compression::detect(&z), Ok(Compression::Zstd));
        assert_eq!(
            Compression::detect(&[0xeb, 0x63, 0x90]),
            Ok(Compression::None)
        );
        assert_eq!(Compression::detect(&[]), Ok(Compression::None));
        assert_eq!(Compression::detect(b"\xfd7zXZ\0rest"), Ok(Compression::Xz));
        assert!(
            Compression::detect(b"BZh91AY")
                .unwrap_err()
                .contains("bzip2")
        );
    }

    #[test]
    fn compressed_data_labelled_raw_is_caught() {
        let gzip = [0x1f, 0x8b, 8, 0, 0, 0];
        let error = Compression::None.check_label(&gzip).unwrap_err();
        assert!(error.contains("application/octet-stream+gzip"), "{error}");
        assert!(
            Compression::None
                .check_label(&[0x28, 0xb5, 0x2f, 0xfd])
                .is_err()
        );
        assert!(Compression::None.check_label(&[0xeb, 0x63, 0x90]).is_ok());
        assert!(Compression::Gzip.check_label(&gzip).is_ok());
    }

    #[test]
    fn media_types_round_trip() {
        for c in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Xz,
            Compression::None,
        ] {
            assert_eq!(Compression::from_media_type(c.media_type()), Some(c));
        }
        assert_eq!(
            Compression::from_media_type("application/x-xz"),
            Some(Compression::Xz)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip"),
            None
        );
    }
}
