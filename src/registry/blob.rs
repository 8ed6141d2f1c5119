//! Blobs as byte streams that survive broken connections: the one reader every blob fetch goes
//! through, whole blobs and ranges of them, large and small. When a download breaks (reset,
//! early end, a stall), it reconnects and asks for the rest with `Range: bytes=N-`; a server
//! that ignores the range or starts it early has the overlap read and dropped, and a failure
//! while dropping it is one more interruption like any other. So every byte reaches the reader
//! once, in order, and the digest downstream keeps running over the one stream.

use std::io::{self, Read};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use anyhow::{Context, Result, anyhow};
use reqwest::blocking::Response;

use super::client::{BlobResponse, Registry, short_reason};
use crate::digest::{Digest, VerifyingReader};
use crate::error::{Classify, Failure, classified, io_error};
use crate::fail;
use crate::progress::Progress;
use crate::retry::{Backoff, Transient, wait_time};
use crate::say;

/// Reads a blob, or a range of it, from the registry: in order, each byte once, resuming
/// broken downloads.
pub struct BlobReader<'a> {
    registry: &'a Registry,
    digest: Digest,
    /// The next byte handed to the reader.
    position: u64,
    /// Where reading ends (exclusive): the end of the range asked for, or the blob's end once
    /// its size is known; `None` reads to the end of the body.
    end: Option<u64>,
    /// Whether `end` is a range's end, asked for in every request.
    ranged: bool,
    /// The blob's size, when the manifest or the registry told it.
    size: Option<u64>,
    body: Option<Response>,
    /// Bytes at the start of the current body that the reader already has (a server that
    /// ignored the range, or started it early): read and dropped.
    skip: u64,
    interruptions: Interruptions,
    progress: Option<Arc<Progress>>,
    /// Set when the install stopped for another reason: no more reconnecting.
    stop: Option<&'a AtomicBool>,
    /// The last connection asked for a range and got the whole blob.
    range_ignored: bool,
}

impl<'a> BlobReader<'a> {
    /// The whole blob; `size` is what the manifest says, if anything.
    pub fn whole(registry: &'a Registry, digest: &Digest, size: Option<u64>) -> Self {
        BlobReader {
            registry,
            digest: digest.clone(),
            position: 0,
            end: size,
            ranged: false,
            size,
            body: None,
            skip: 0,
            interruptions: Interruptions::new(registry.backoff()),
            progress: None,
            stop: None,
            range_ignored: false,
        }
    }

    /// Bytes `range` of a blob of `size` bytes.
    pub fn range(registry: &'a Registry, digest: &Digest, range: Range<u64>, size: u64) -> Self {
        BlobReader {
            position: range.start,
            end: Some(range.end),
            ranged: true,
            ..BlobReader::whole(registry, digest, Some(size))
        }
    }

    /// Counts the bytes handed out as fetched.
    pub fn counting(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Gives up instead of reconnecting once `stop` is set.
    pub fn stopping_on(mut self, stop: &'a AtomicBool) -> Self {
        self.stop = Some(stop);
        self
    }

    /// The blob's size in bytes, when the manifest or the registry told it.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// Starts the download now (it starts at the first read otherwise), so that a registry
    /// that refuses it fails before anything else happens.
    pub fn connect(&mut self) -> Result<()> {
        if self.stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            fail!(Failure::Registry, "the install stopped");
        }
        let range_end = if self.ranged { self.end } else { None };
        let BlobResponse {
            body,
            skip,
            total_size,
            range_ignored,
        } = self
            .registry
            .fetch_blob(&self.digest, self.position, range_end)?;
        self.size = match (self.size, total_size) {
            (Some(expected), Some(sent)) if expected != sent => fail!(
                Failure::Verification,
                "the registry's blob {} has {sent} bytes but {expected} were expected",
                self.digest
            ),
            (expected, sent) => expected.or(sent),
        };
        if !self.ranged {
            self.end = self.size;
        }
        if skip > 0 {
            say!(
                "ocidd: the registry sent the blob from byte {}, not {}; skipping {skip} bytes",
                self.position - skip,
                self.position
            );
        }
        self.skip = skip;
        self.body = Some(body);
        self.range_ignored = range_ignored;
        Ok(())
    }

    /// Where the next byte read is in the blob.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Whether the last connection asked for a range and the whole blob came instead.
    pub fn range_ignored(&self) -> bool {
        self.range_ignored
    }

    /// Reads on to the blob's end instead of stopping at the range's: the one response that
    /// brings the whole blob anyway serves everything after the range too.
    pub fn read_to_blob_end(&mut self) {
        self.ranged = false;
        self.end = self.size;
    }

    /// Counts an interruption; waits before the next attempt, or gives up.
    fn interrupted(&mut self, reason: String) -> io::Result<()> {
        self.body = None;
        if self.stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            return Err(io_error(Failure::Registry, anyhow!("the install stopped")));
        }
        self.interruptions
            .wait(self.position, self.size, &reason)
            .map_err(|e| io_error(Failure::Registry, e))
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let left = self.end.map(|end| end.saturating_sub(self.position));
            if left == Some(0) {
                // Everything arrived; whatever the connection does now does not matter.
                return Ok(0);
            }
            let Some(body) = &mut self.body else {
                self.connect().map_err(|e| io_error(Failure::Registry, e))?;
                continue;
            };
            let want = if self.skip > 0 {
                self.skip.min(1 << 20)
            } else {
                left.unwrap_or(u64::MAX)
            };
            let want = buf.len().min(usize::try_from(want).unwrap_or(usize::MAX));
            match body.read(&mut buf[..want]) {
                Ok(0) => match self.end {
                    // A blob of unknown size ends where its body does.
                    None => return Ok(0),
                    Some(_) => {
                        let reason = format!(
                            "the connection ended after byte {}",
                            self.position + self.skip
                        );
                        self.interrupted(reason)?;
                    }
                },
                Ok(n) => {
                    self.interruptions.progressed();
                    if self.skip > 0 {
                        self.skip -= n as u64;
                        continue;
                    }
                    self.position += n as u64;
                    if let Some(progress) = &self.progress {
                        progress.fetched(n as u64);
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => self.interrupted(interruption_reason(&e))?,
            }
        }
    }
}

/// Fetches a small blob whole (at most `limit` bytes; `size` is what the manifest says),
/// resuming broken downloads like any other, and checks its digest.
pub fn read_small_blob(
    registry: &Registry,
    digest: &Digest,
    size: Option<u64>,
    limit: u64,
) -> Result<Vec<u8>> {
    let too_large = || {
        classified(
            Failure::Verification,
            anyhow!("blob {digest} is larger than {limit} bytes"),
        )
    };
    if size.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut reader = BlobReader::whole(registry, digest, size);
    reader.connect()?;
    if reader.size().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    VerifyingReader::new(reader, digest.clone(), size)
        .take(limit + 1)
        .read_to_end(&mut body)
        .with_context(|| format!("reading blob {digest}"))
        .classify(Failure::Registry)?;
    if body.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(body)
}

/// Interruptions of a download since it last made progress: waits with backoff before each
/// resumption, and gives up after the retry budget. Unlike a request's retries
/// ([`crate::retry::with_retries`]), the budget starts over whenever bytes arrive.
struct Interruptions {
    failures: u32,
    backoff: Backoff,
}

impl Interruptions {
    fn new(backoff: Backoff) -> Self {
        Interruptions {
            failures: 0,
            backoff,
        }
    }

    /// Bytes arrived: the budget starts over.
    fn progressed(&mut self) {
        self.failures = 0;
    }

    /// The download broke at `position` (of `size`) for `reason`: waits before resuming, or
    /// fails when the retries are used up.
    fn wait(&mut self, position: u64, size: Option<u64>, reason: &str) -> Result<()> {
        let size = size.map(|s| format!(" of {s}")).unwrap_or_default();
        if self.failures >= self.backoff.retries {
            return Err(classified(
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
        say!(
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
fn interruption_reason(error: &io::Error) -> String {
    let reason = match error.get_ref() {
        Some(inner) => short_reason(inner),
        None => error.to_string(),
    };
    if error.kind() == io::ErrorKind::TimedOut || reason.contains("timed out") {
        "no data within the stall timeout".to_string()
    } else {
        reason
    }
}
