//! The blob as a byte stream: a `Read` over the registry's blob GET that survives broken
//! connections. When a download breaks (reset, early end, a stall), it reconnects and asks for
//! the rest with `Range: bytes=N-`, so every byte reaches the reader once, in order, and the
//! digest downstream keeps running over the one stream.

use std::io::{self, Read};
use std::sync::Arc;
use std::thread;

use anyhow::{Result, anyhow};
use reqwest::blocking::Response;

use crate::digest::Digest;
use crate::error::{Failure, io_error};
use crate::fail;
use crate::progress::Progress;
use crate::registry::{BlobResponse, Registry, short_reason};
use crate::retry::{Backoff, Transient, wait_time};

/// Reads a blob from the registry, in order, each byte once, resuming broken downloads.
pub struct BlobReader<'a> {
    registry: &'a Registry,
    digest: Digest,
    size: Option<u64>,
    /// Bytes handed to the reader so far.
    position: u64,
    body: Option<Response>,
    /// Bytes at the start of the current body that were already read (a server that ignored
    /// the range, or started it early): read and dropped.
    skip: u64,
    interruptions: Interruptions,
    progress: Arc<Progress>,
}

impl<'a> BlobReader<'a> {
    /// Starts the download. `expected_size` is the size the manifest gives, if any.
    pub fn open(
        registry: &'a Registry,
        digest: &Digest,
        expected_size: Option<u64>,
        backoff: Backoff,
        progress: Arc<Progress>,
    ) -> Result<Self> {
        let mut reader = BlobReader {
            registry,
            digest: digest.clone(),
            size: expected_size,
            position: 0,
            body: None,
            skip: 0,
            interruptions: Interruptions::new(backoff),
            progress,
        };
        reader.connect()?;
        Ok(reader)
    }

    /// The blob's size in bytes, when the manifest or the registry told it.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// (Re)starts the GET at the current position.
    fn connect(&mut self) -> Result<()> {
        let BlobResponse {
            body,
            skip,
            total_size,
        } = self
            .registry
            .fetch_blob(&self.digest, self.position, None)?;
        let position = self.position;
        self.size = match (self.size, total_size) {
            (Some(expected), Some(sent)) if expected != sent => fail!(
                Failure::Verification,
                "the registry's blob {} has {sent} bytes but {expected} were expected",
                self.digest
            ),
            (expected, sent) => expected.or(sent),
        };
        if skip > 0 {
            eprintln!(
                "ocidd: the registry sent the blob from byte {}, not {position}; skipping {skip} bytes",
                position - skip
            );
        }
        self.skip = skip;
        self.body = Some(body);
        Ok(())
    }

    /// Counts an interruption; waits before the next attempt, or gives up.
    fn interrupted(&mut self, reason: String) -> io::Result<()> {
        self.body = None;
        self.interruptions
            .wait(self.position, self.size, &reason)
            .map_err(|e| io_error(Failure::Registry, e))
    }
}

/// Interruptions of a download since it last made progress: waits with backoff before each
/// resumption, and gives up after the retry budget.
pub struct Interruptions {
    failures: u32,
    backoff: Backoff,
}

impl Interruptions {
    pub fn new(backoff: Backoff) -> Self {
        Interruptions {
            failures: 0,
            backoff,
        }
    }

    /// Bytes arrived: the budget starts over.
    pub fn progressed(&mut self) {
        self.failures = 0;
    }

    /// The download broke at `position` (of `size`) for `reason`: waits before resuming, or
    /// fails when the retries are used up.
    pub fn wait(&mut self, position: u64, size: Option<u64>, reason: &str) -> anyhow::Result<()> {
        let size = size.map(|s| format!(" of {s}")).unwrap_or_default();
        if self.failures >= self.backoff.retries {
            return Err(crate::error::classified(
                Failure::Registry,
                anyhow!(
                    "the download broke at byte {position}{size} and did not resume after {} retries: {reason}",
                    self.backoff.retries
                ),
            ));
        }
        let delay = wait_time(
            &self.backoff,
            self.failures,
            &Transient {
                reason: reason.to_string(),
                retry_after: None,
            },
        );
        self.failures += 1;
        eprintln!(
            "ocidd: download interrupted at byte {position}{size} ({reason}); resuming in {} s (retry {} of {})",
            delay.as_secs_f64().ceil(),
            self.failures,
            self.backoff.retries
        );
        thread::sleep(delay);
        Ok(())
    }
}

/// Why reading a download failed, in a few words.
pub fn interruption_reason(error: &io::Error) -> String {
    let reason = match error.get_ref() {
        Some(inner) => short_reason(inner),
        None => error.to_string(),
    };
    if error.kind() == io::ErrorKind::TimedOut || reason.contains("timed out") {
        "no data within oci.stall_timeout".to_string()
    } else {
        reason
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.size.is_some_and(|size| self.position >= size) && self.skip == 0 {
                // Everything arrived; whatever the connection does now does not matter.
                return Ok(0);
            }
            let body = match &mut self.body {
                Some(body) => body,
                None => {
                    self.connect().map_err(|e| io_error(Failure::Registry, e))?;
                    continue;
                }
            };
            let want = if self.skip > 0 {
                buf.len().min(self.skip.min(1 << 20) as usize)
            } else {
                buf.len()
            };
            match body.read(&mut buf[..want]) {
                Ok(0) => match self.size {
                    None => return Ok(0),
                    Some(size) => {
                        let reason = format!(
                            "the connection ended after byte {} of {size}",
                            self.position + self.skip
                        );
                        self.interrupted(reason)?;
                    }
                },
                Ok(n) => {
                    self.progress.fetched(n as u64);
                    self.interruptions.progressed();
                    if self.skip > 0 {
                        self.skip -= n as u64;
                        continue;
                    }
                    self.position += n as u64;
                    if let Some(size) = self.size
                        && self.position > size
                    {
                        return Err(io_error(
                            Failure::Verification,
                            anyhow!("the registry sent more than the blob's {size} bytes"),
                        ));
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => self.interrupted(interruption_reason(&e))?,
            }
        }
    }
}
