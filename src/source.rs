//! The blob as a byte stream: a `Read` over the registry's blob GET.

use std::io::{self, Read};
use std::sync::Arc;

use anyhow::{Result, anyhow};
use reqwest::blocking::Response;

use crate::digest::Digest;
use crate::error::{Failure, io_error};
use crate::fail;
use crate::progress::Progress;
use crate::registry::Registry;

/// Reads a blob from the registry, in order, each byte once.
pub struct BlobReader<'a> {
    _registry: &'a Registry,
    size: Option<u64>,
    position: u64,
    body: Response,
    progress: Arc<Progress>,
}

impl<'a> BlobReader<'a> {
    /// Starts the download. `expected_size` is the size the manifest gives, if any.
    pub fn open(
        registry: &'a Registry,
        digest: &Digest,
        expected_size: Option<u64>,
        progress: Arc<Progress>,
    ) -> Result<Self> {
        let response = registry.fetch_blob(digest, 0)?;
        let size = match (expected_size, response.total_size) {
            (Some(expected), Some(sent)) if expected != sent => fail!(
                Failure::Verification,
                "the registry's blob {digest} has {sent} bytes but the manifest says {expected}"
            ),
            (expected, sent) => expected.or(sent),
        };
        Ok(BlobReader {
            _registry: registry,
            size,
            position: 0,
            body: response.body,
            progress,
        })
    }

    /// The blob's size in bytes, when the manifest or the registry told it.
    pub fn size(&self) -> Option<u64> {
        self.size
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.body.read(buf).map_err(|e| {
            io_error(
                Failure::Registry,
                anyhow!(e).context(format!("downloading the blob at byte {}", self.position)),
            )
        })?;
        self.position += n as u64;
        self.progress.fetched(n as u64);
        match self.size {
            Some(size) if n == 0 && self.position < size => Err(io_error(
                Failure::Registry,
                anyhow!(
                    "the download ended early: {} of {size} bytes received",
                    self.position
                ),
            )),
            Some(size) if self.position > size => Err(io_error(
                Failure::Verification,
                anyhow!("the registry sent more than the blob's {size} bytes"),
            )),
            _ => Ok(n),
        }
    }
}
