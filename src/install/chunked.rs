//! The parallel install of an image pushed in chunks (see `chunks`).
//!
//! Fetchers download ranges of the blob concurrently. The main thread takes the ranges back in
//! order, hashes every byte of the blob exactly once (the digest is checked at the end, as in
//! the sequential path), and hands each chunk to a worker, or, for a chunk the index marks as
//! all zeros, checks its gzip trailer (or zstd frame header) against the index and zeroes
//! that part of the target without decompressing or writing it. Workers decompress chunks on
//! all cores and write each in place, in `dd.bs` blocks. Memory is bounded: fetching waits
//! while too many compressed bytes are in flight.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use indicatif::HumanBytes;

use crate::chunks::{Chunk, ChunkIndex, is_zero};
use crate::compression::Compression;
use crate::digest::{Digest, Hasher};
use crate::error::{Classify, Failure, classified};
use crate::install::decompress::MemberInflater;
use crate::install::target::Target;
use crate::install::writer::{
    AlignedBuffer, BlockFailure, BlockWriter, Held, WriteFailure, unheld_part,
};
use crate::progress::{DeltaCounts, Progress};
use crate::registry::Registry;
use crate::registry::blob::BlobReader;
use crate::say;
use crate::seed::Seed;
use crate::sync::{Unpoisoned, UnpoisonedWait};

/// Compressed bytes per range request.
const GROUP_BYTES: u64 = 4 << 20;
/// Concurrent range requests.
const FETCHERS: usize = 2;
/// Groups per range request: fewer requests spare the registry work (each costs it more than
/// the bytes do).
const SPAN: usize = 4;
/// Fetched ranges in memory at most (being fetched, hashed or decompressed).
const BUFFERS: usize = 4;
/// Decompress-and-write workers at most, whatever the cores. Each holds a chunk (4 MiB by
/// default), so this bounds memory on big machines; six already decompress several GB/s, more
/// than a disk or a network link takes, and the fetch buffers hold only ~16 chunks to share.
const MAX_WORKERS: usize = 6;

/// The blob and its index.
pub struct ChunkedSource<'a> {
    pub registry: &'a Registry,
    pub digest: &'a Digest,
    pub blob_size: u64,
    pub index: &'a ChunkIndex,
    pub compression: Compression,
}

/// Consecutive chunks fetched with one range request.
struct Group {
    chunks: Range<usize>,
    start: u64,
    end: u64,
}

/// Consecutive chunks, up to [`GROUP_BYTES`] of them (or one larger chunk) per group: all of
/// them, or (`dd.delta`) only the chunks `wanted` says, a group never spanning one that is not.
fn groups(index: &ChunkIndex, wanted: Option<&[bool]>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, chunk) in index.chunks.iter().enumerate() {
        if wanted.is_some_and(|wanted| !wanted[i]) {
            continue;
        }
        let end = chunk.offset + chunk.length;
        match groups.last_mut() {
            Some(group)
                if group.chunks.end == i
                    && group.end == chunk.offset
                    && end - group.start <= GROUP_BYTES =>
            {
                group.chunks.end = i + 1;
                group.end = end;
            }
            _ => groups.push(Group {
                chunks: i..i + 1,
                start: chunk.offset,
                end,
            }),
        }
    }
    groups
}

/// The range requests: up to [`SPAN`] groups each, back to back in the blob.
fn spans(groups: &[Group]) -> Vec<Range<usize>> {
    let mut spans: Vec<Range<usize>> = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        match spans.last_mut() {
            Some(span) if span.len() < SPAN && groups[span.end - 1].end == group.start => {
                span.end = g + 1;
            }
            _ => spans.push(g..g + 1),
        }
    }
    spans
}

/// The buffers fetched ranges go into: a fixed number, each big enough for the largest
/// group, reused from range to range. They bound the memory of the install, and spare it the
/// page faults and the allocator's hoarding of a fresh buffer per range.
///
/// The hasher takes groups in order, and a group's buffer is free again only once it was
/// hashed; so the lowest group not yet fetched must always be able to get a buffer: any other
/// group gets one only while that leaves one for it.
struct Buffers {
    state: Mutex<BufferState>,
    changed: Condvar,
    capacity: usize,
}

#[derive(Default)]
struct BufferState {
    free: Vec<Vec<u8>>,
    /// Buffers allocated so far.
    made: usize,
    /// Groups above `lowest` that have a buffer.
    granted: std::collections::BTreeSet<usize>,
    /// The lowest group without a buffer yet.
    lowest: usize,
}

impl BufferState {
    fn available(&self) -> usize {
        self.free.len() + (BUFFERS - self.made)
    }
}

impl Buffers {
    fn new(capacity: usize) -> Self {
        Buffers {
            state: Mutex::new(BufferState::default()),
            changed: Condvar::new(),
            capacity,
        }
    }

    /// Waits for a buffer for `group`; `None` if the install stopped.
    fn acquire(&self, group: usize, stop: &AtomicBool) -> Option<Vec<u8>> {
        let mut state = self.state.lock_unpoisoned();
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(buffer) = self.grant(&mut state, group) {
                self.changed.notify_all();
                return Some(buffer);
            }
            state = self
                .changed
                .wait_timeout_unpoisoned(state, Duration::from_millis(100))
                .0;
        }
    }

    /// A buffer for `group` if the rule above allows one now.
    fn grant(&self, state: &mut BufferState, group: usize) -> Option<Vec<u8>> {
        let available = state.available();
        if available < 1 || (available == 1 && group != state.lowest) {
            return None;
        }
        let buffer = match state.free.pop() {
            Some(buffer) => buffer,
            None => {
                state.made += 1;
                Vec::with_capacity(self.capacity)
            }
        };
        state.granted.insert(group);
        loop {
            let lowest = state.lowest;
            if !state.granted.remove(&lowest) {
                break;
            }
            state.lowest += 1;
        }
        Some(buffer)
    }

    /// A buffer for `group` without waiting.
    #[cfg(test)]
    fn try_acquire(&self, group: usize) -> Option<Vec<u8>> {
        let mut state = self.state.lock_unpoisoned();
        self.grant(&mut state, group)
    }

    /// Gives a buffer back (`None`: it was lost; another may be made).
    fn release(&self, buffer: Option<Vec<u8>>) {
        let mut state = self.state.lock_unpoisoned();
        match buffer {
            Some(mut buffer) => {
                buffer.clear();
                state.free.push(buffer);
            }
            None => state.made -= 1,
        }
        self.changed.notify_all();
    }
}

/// A fetched range of the blob, shared by the hasher and the workers decompressing its
/// chunks; its buffer goes back to the pool when the group is done.
type GroupData = Arc<Vec<u8>>;

/// One chunk for a worker: its group, its number, and where its compressed bytes are.
struct Job {
    group: usize,
    chunk: usize,
    data: GroupData,
    range: Range<usize>,
}

struct Shared<'a> {
    source: &'a ChunkedSource<'a>,
    target: &'a Target,
    block_size: usize,
    progress: &'a Arc<Progress>,
    buffers: Buffers,
    /// Set on a failure that ends the install at once.
    stop: AtomicBool,
    failure: Mutex<Option<anyhow::Error>>,
    /// The first chunk that did not decompress: hashing goes on, to tell a blob that does
    /// not match its digest (the better explanation) from a bad image.
    corruption: Mutex<Option<anyhow::Error>>,
    touched: AtomicBool,
    /// Image bytes written or zeroed.
    done: AtomicU64,
    /// The image's first and last MiB, written last.
    held: Mutex<Held>,
    /// Per group: the chunks still to decompress, plus one until it is hashed. Its buffer
    /// is free again when this reaches zero.
    pending: Vec<AtomicUsize>,
    /// The fetched groups not yet done, to take their buffers back.
    in_use: Mutex<HashMap<usize, GroupData>>,
}

impl Shared<'_> {
    /// A group was hashed, or one of its chunks written (callers drop their share of its
    /// data first).
    fn group_done(&self, g: usize) {
        if self.pending[g].fetch_sub(1, Ordering::AcqRel) == 1 {
            let data = self.in_use.lock_unpoisoned().remove(&g);
            self.buffers
                .release(data.and_then(|d| Arc::try_unwrap(d).ok()));
        }
    }

    fn fail(&self, error: anyhow::Error) {
        let mut failure = self.failure.lock_unpoisoned();
        if failure.is_none() {
            *failure = Some(error);
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    fn corrupt(&self, error: anyhow::Error) {
        let mut corruption = self.corruption.lock_unpoisoned();
        if corruption.is_none() {
            *corruption = Some(error);
        }
    }

    fn is_corrupt(&self) -> bool {
        self.corruption.lock_unpoisoned().is_some()
    }

    fn account(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        self.progress.written(bytes);
    }

    /// Zeroes `[offset, offset + length)` of the image on the target (the held parts are
    /// zeros already).
    fn zero_on_target(&self, offset: u64, length: u64) -> Result<()> {
        let unheld = self.held.lock_unpoisoned().unheld(offset..offset + length);
        if !unheld.is_empty() {
            self.touched.store(true, Ordering::Relaxed);
            self.target
                .zero_range(unheld.start, unheld.end - unheld.start)
                .map_err(|error| {
                    BlockFailure {
                        error,
                        what: "zeroing",
                        offset: unheld.start,
                    }
                    .into_error(self.target)
                })?;
        }
        Ok(())
    }

    /// A chunk of zeros.
    fn zero(&self, offset: u64, length: u64) -> Result<()> {
        self.zero_on_target(offset, length)?;
        self.account(length);
        Ok(())
    }

    /// Writes a decompressed chunk at `offset`: its held-back part into the held buffer, the
    /// rest in blocks, with runs of zero blocks zeroed instead of written.
    fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let (mut offset, rest) = self.held.lock_unpoisoned().keep(offset, data);
        let mut blocks = BlockWriter::new(self.target);
        let mut put = || -> Result<(), BlockFailure> {
            for block in rest.chunks(self.block_size) {
                blocks.put(block, offset)?;
                offset += block.len() as u64;
            }
            blocks.flush()
        };
        let result = put();
        if blocks.touched() {
            self.touched.store(true, Ordering::Relaxed);
        }
        result.map_err(|f| f.into_error(self.target))?;
        self.account(data.len() as u64);
        Ok(())
    }
}

/// What a chunked install did.
#[derive(Debug)]
pub struct Installed {
    pub image_size: u64,
    /// What was verified, as the console and the final line say it.
    pub verified: String,
}

/// Installs the chunked image onto `target`, which already has the image's length if it is a
/// file that grows (chunks land anywhere, zero chunks nowhere). With `delta`, chunks the
/// target holds already are neither fetched nor written. Calls
/// `on_verified` with what was verified once everything was, before the held-back first MiB
/// is written.
pub fn install(
    source: &ChunkedSource,
    target: &Target,
    block_size: usize,
    progress: &Arc<Progress>,
    delta: bool,
    seed: Option<Arc<Seed>>,
    on_verified: &dyn Fn(&str),
) -> Result<Installed, WriteFailure> {
    let index = source.index;
    let wanted = match delta {
        true if index.has_tree() => Some(read_pass(index, target, progress)),
        true if index.has_digests() => {
            say!(
                "ocidd: dd.delta: the chunk index is version 2, whose chunk digests do not add up to the image (push it again with this ocidd for version 3), so the whole image is installed"
            );
            None
        }
        true => {
            say!(
                "ocidd: dd.delta: the chunk index has no chunk digests (an image pushed by an older ocidd), so the whole image is installed"
            );
            None
        }
        false => None,
    };
    // Every chunk wanted: the whole blob, fetched, hashed and zero-checked as without dd.delta.
    let wanted = wanted.filter(|wanted| !wanted.iter().all(|&w| w));
    let whole_blob = wanted.is_none();
    // Zero chunks are never fetched with dd.delta: those wanted are zeroed below.
    let fetch: Option<Vec<bool>> = wanted.as_ref().map(|wanted| {
        index
            .chunks
            .iter()
            .zip(wanted)
            .map(|(chunk, &want)| want && !chunk.zero)
            .collect()
    });
    let groups = groups(index, fetch.as_deref());
    let spans = spans(&groups);
    if wanted.is_some() {
        progress.set_total(Some(groups.iter().map(|g| g.end - g.start).sum()));
    }
    let shared = Shared {
        source,
        target,
        block_size,
        progress,
        buffers: Buffers::new(
            groups
                .iter()
                .map(|g| (g.end - g.start) as usize)
                .max()
                .unwrap_or(0),
        ),
        stop: AtomicBool::new(false),
        failure: Mutex::new(None),
        corruption: Mutex::new(None),
        touched: AtomicBool::new(false),
        done: AtomicU64::new(0),
        held: Mutex::new(Held::new(Some(index.image_size)).with_seed(seed)),
        pending: groups
            .iter()
            .map(|g| {
                let work = index.chunks[g.chunks.clone()]
                    .iter()
                    .filter(|c| !c.zero)
                    .count();
                AtomicUsize::new(work + 1)
            })
            .collect(),
        in_use: Mutex::new(HashMap::new()),
    };
    // One more than the cores: direct writes wait for the disk, and meanwhile another worker
    // decompresses.
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let workers = (cores + 1).min(MAX_WORKERS);
    // dd.delta: the zero chunks the target does not hold as zeros yet are zeroed; none is
    // fetched.
    if let Some(wanted) = &wanted {
        for (i, chunk) in index.chunks.iter().enumerate() {
            if chunk.zero
                && wanted[i]
                && let Err(error) = shared.zero(index.image_offset(i), chunk.size)
            {
                let written = Some(shared.done.load(Ordering::Relaxed));
                return Err(WriteFailure { error, written });
            }
        }
    }
    let next_span = AtomicUsize::new(0);
    let probe = RangeProbe::new();
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(workers * 2);
    let job_rx = Mutex::new(job_rx);
    let verified = thread::scope(|scope| {
        let (fetched_tx, fetched_rx) = mpsc::channel::<(usize, Vec<u8>)>();
        for i in 0..FETCHERS.min(spans.len()) {
            let fetched_tx = fetched_tx.clone();
            let (shared, groups, spans, next_span, probe) =
                (&shared, &groups, &spans, &next_span, &probe);
            let first = i == 0;
            scope.spawn(move || {
                fetcher(shared, groups, spans, next_span, probe, first, fetched_tx);
            });
        }
        drop(fetched_tx);
        for _ in 0..workers {
            let (shared, job_rx) = (&shared, &job_rx);
            scope.spawn(move || worker(shared, job_rx));
        }
        let verified = sequence(&shared, &groups, whole_blob, fetched_rx, job_tx);
        // Wake anything waiting for a buffer.
        if verified.is_err() {
            shared.stop.store(true, Ordering::Relaxed);
        }
        verified
    });
    let touched = shared.touched.load(Ordering::Relaxed);
    let written = touched.then(|| shared.done.load(Ordering::Relaxed));
    let failure = shared.failure.lock_unpoisoned().take();
    let corruption = shared.corruption.lock_unpoisoned().take();
    // A failure that stopped everything first; then a blob that does not match its digest;
    // then a chunk that did not decompress.
    let outcome = match (failure, verified, corruption) {
        (Some(error), _, _) => Err(error),
        (None, Err(error), _) => Err(error),
        (None, Ok(()), Some(error)) => Err(error),
        (None, Ok(()), None) => Ok(()),
    };
    if let Err(error) = outcome {
        return Err(WriteFailure { error, written });
    }
    // dd.delta: what the read pass found on the target must still be there, since the image
    // is committed on the strength of it.
    if let Some(wanted) = &wanted {
        let reused: Vec<usize> = (0..wanted.len()).filter(|&i| !wanted[i]).collect();
        let (holds, read_error) = check_on_target(index, target, &reused, &|_| {});
        if let Some(i) = reused
            .iter()
            .zip(&holds)
            .find_map(|(&i, &h)| (!h).then_some(i))
        {
            let why = read_error.map(|e| format!(" ({e})")).unwrap_or_default();
            let error = classified(
                Failure::Target,
                anyhow!(
                    "the target changed during the install: chunk {i}, which the read pass found there, no longer holds it{why}; run the install again"
                ),
            );
            return Err(WriteFailure { error, written });
        }
    }
    // A partial fetch is possible with a version 3 index only: its image hash is there.
    let image = index.image_digest.map(|digest| digest.to_string());
    let verified = match (whole_blob, image) {
        (true, Some(image)) => format!("blob {} and image {image} verified", source.digest),
        (true, None) => format!("blob {} verified", source.digest),
        (false, image) => format!(
            "image {} verified: each chunk on the target or fetched checked against the chunk index of blob {}",
            image.unwrap_or_default(),
            source.digest
        ),
    };
    on_verified(&verified);
    // A target file that grows was given the image's length before the install began.
    shared
        .held
        .lock_unpoisoned()
        .commit(target, block_size)
        .map_err(|error| WriteFailure {
            error,
            written: Some(index.image_size),
        })?;
    Ok(Installed {
        image_size: index.image_size,
        verified,
    })
}

/// `dd.delta`'s read pass: reads each chunk's range from the target, on several threads, and
/// says which chunks must be fetched (or, for zero chunks, zeroed): those whose bytes there are
/// not the image's, and always those in the image's held-back first and last MiB, which are
/// written last whatever the target holds.
fn read_pass(index: &ChunkIndex, target: &Target, progress: &Progress) -> Vec<bool> {
    progress.checking(index.image_size);
    let mut wanted = vec![true; index.chunks.len()];
    let mut outside = Vec::new();
    for (i, chunk) in index.chunks.iter().enumerate() {
        let offset = index.image_offset(i);
        let range = offset..offset + chunk.size;
        if unheld_part(range.clone(), index.image_size) == range {
            outside.push(i);
        } else {
            progress.checked(chunk.size);
        }
    }
    let (holds, read_error) =
        check_on_target(index, target, &outside, &|size| progress.checked(size));
    for (&i, holds) in outside.iter().zip(holds) {
        wanted[i] = !holds;
    }
    progress.checking(0);
    if let Some(error) = read_error {
        say!(
            "ocidd: dd.delta: reading the target failed ({error}); what could not be read is fetched"
        );
    }
    let mut counts = DeltaCounts {
        total: index.chunks.len() as u64,
        ..DeltaCounts::default()
    };
    let mut fetch_bytes = 0;
    for (chunk, &want) in index.chunks.iter().zip(&wanted) {
        match (want, chunk.zero) {
            (false, _) => {
                counts.reused += 1;
                counts.reused_bytes += chunk.size;
            }
            (true, true) => counts.zeroed += 1,
            (true, false) => {
                counts.fetched += 1;
                fetch_bytes += chunk.length;
            }
        }
    }
    progress.set_delta(counts);
    say!(
        "ocidd: dd.delta: the target holds {} of {} chunks ({}) already; fetching {} ({} of the blob), zeroing {}",
        counts.reused,
        counts.total,
        HumanBytes(counts.reused_bytes),
        counts.fetched,
        HumanBytes(fetch_bytes),
        counts.zeroed
    );
    wanted
}

/// Reads each of `chunks` from the target, on several threads, and says for each whether the
/// target holds it ([`ChunkIndex::holds`]); with the first read error, if any (what could not
/// be read is not held). `checked` is told the size of each chunk done.
fn check_on_target(
    index: &ChunkIndex,
    target: &Target,
    chunks: &[usize],
    checked: &(dyn Fn(u64) + Sync),
) -> (Vec<bool>, Option<String>) {
    let next = AtomicUsize::new(0);
    let holds: Vec<AtomicBool> = chunks.iter().map(|_| AtomicBool::new(false)).collect();
    let read_error = Mutex::new(None);
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    thread::scope(|scope| {
        for _ in 0..(cores + 1).min(MAX_WORKERS).min(chunks.len()) {
            scope.spawn(|| {
                let mut buffer = vec![0u8; index.chunk_size as usize];
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = chunks.get(k) else {
                        return;
                    };
                    let chunk = index.chunks[i];
                    let offset = index.image_offset(i);
                    let data = &mut buffer[..chunk.size as usize];
                    let held = match target.read_at(data, offset) {
                        // A blank stretch of the target (a new disk) is known to differ from a
                        // chunk that is not all zeros, without hashing it.
                        Ok(n) if n == data.len() => {
                            (chunk.zero || !is_zero(data)) && index.holds(i, data)
                        }
                        Ok(_) => false,
                        Err(e) => {
                            read_error
                                .lock_unpoisoned()
                                .get_or_insert(format!("at byte {offset}: {e}"));
                            false
                        }
                    };
                    holds[k].store(held, Ordering::Relaxed);
                    checked(chunk.size);
                }
            });
        }
    });
    (
        holds.into_iter().map(AtomicBool::into_inner).collect(),
        read_error.into_inner().unwrap_or_else(|p| p.into_inner()),
    )
}

/// Takes the fetched groups in order, hashes them (when they are the whole blob), and
/// dispatches their chunks. Returns whether the whole blob matched its digest.
fn sequence(
    shared: &Shared,
    groups: &[Group],
    whole_blob: bool,
    fetched: mpsc::Receiver<(usize, Vec<u8>)>,
    jobs: mpsc::SyncSender<Job>,
) -> Result<()> {
    let source = shared.source;
    let index = source.index;
    let mut hasher = Hasher::new(source.digest.algorithm());
    let mut waiting: BTreeMap<usize, GroupData> = BTreeMap::new();
    let mut zero_trailers = ZeroTrailers::default();
    let mut next = 0;
    while next < groups.len() {
        if shared.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let (g, data) = match fetched.recv_timeout(Duration::from_millis(100)) {
            Ok(fetched) => fetched,
            Err(RecvTimeoutError::Timeout) => continue,
            // The fetchers stopped: one failed and said so.
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        let data: GroupData = Arc::new(data);
        shared.in_use.lock_unpoisoned().insert(g, Arc::clone(&data));
        // Its chunks go to work at once, in whatever order the ranges arrive.
        let group = &groups[g];
        for i in group.chunks.clone() {
            let chunk = index.chunks[i];
            let start = (chunk.offset - group.start) as usize;
            let range = start..start + chunk.length as usize;
            if !chunk.zero {
                let job = Job {
                    group: g,
                    chunk: i,
                    data: Arc::clone(&data),
                    range,
                };
                if jobs.send(job).is_err() {
                    return Ok(());
                }
                continue;
            }
            match zero_trailers.check(source.compression, &data[range], &chunk, i) {
                Err(e) => shared.corrupt(e),
                Ok(()) if shared.is_corrupt() => {}
                Ok(()) => {
                    if let Err(e) = shared.zero(index.image_offset(i), chunk.size) {
                        shared.fail(e);
                        return Ok(());
                    }
                }
            }
        }
        // The digest runs over the blob in order.
        waiting.insert(g, data);
        while let Some(data) = waiting.remove(&next) {
            if whole_blob {
                hasher.update(&data);
            }
            drop(data);
            shared.group_done(next);
            next += 1;
        }
    }
    drop(jobs);
    if !whole_blob {
        return Ok(());
    }
    source.digest.check(&hasher.finish(), "blob")
}

/// What a zero chunk's compressed form must say: a gzip trailer of the CRC-32 and size of that
/// many zeros, or a single zstd frame of that content size.
/// Whether chunks can come compressed this way: `ocidd push` writes chunks in gzip, zstd or
/// none; an xz layer with a chunk index is refused when the plan is made.
pub fn supports(compression: Compression) -> Result<()> {
    match compression {
        Compression::Xz => Err(classified(
            Failure::Verification,
            anyhow!(
                "the image has a chunk index over an xz layer, which ocidd does not read (chunks are gzip, zstd or uncompressed)"
            ),
        )),
        _ => Ok(()),
    }
}

#[derive(Default)]
struct ZeroTrailers {
    crc_of_zeros: HashMap<u64, u32>,
}

impl ZeroTrailers {
    fn check(
        &mut self,
        compression: Compression,
        data: &[u8],
        chunk: &Chunk,
        i: usize,
    ) -> Result<()> {
        let ok = match compression {
            Compression::Gzip => {
                let crc = *self.crc_of_zeros.entry(chunk.size).or_insert_with(|| {
                    let mut hasher = crc32fast::Hasher::new();
                    let zeros = vec![0u8; chunk.size as usize];
                    hasher.update(&zeros);
                    hasher.finalize()
                });
                data.len() >= 18 && data[data.len() - 8..] == trailer(crc, chunk.size)
            }
            Compression::Zstd => {
                zstd::zstd_safe::get_frame_content_size(data).ok().flatten() == Some(chunk.size)
                    && zstd::zstd_safe::find_frame_compressed_size(data).ok() == Some(data.len())
            }
            Compression::None => is_zero(data),
            Compression::Xz => false,
        };
        if ok {
            Ok(())
        } else {
            Err(classified(
                Failure::Verification,
                anyhow!(
                    "chunk {i} is marked all zeros in the chunk index but its data says otherwise"
                ),
            ))
        }
    }
}

/// A gzip member's trailer: CRC-32 and size (mod 2^32), little-endian.
fn trailer(crc: u32, size: u64) -> [u8; 8] {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&crc.to_le_bytes());
    bytes[4..].copy_from_slice(&(size as u32).to_le_bytes());
    bytes
}

/// What range requests showed about the source. A pull-through cache that does not hold
/// the blob yet (distribution's proxy mode, Harbor's proxy cache) answers a range with 200
/// and the whole blob, and would do so for every range: so the first request goes alone, and
/// once a range brings the whole blob, that one response is read to the end instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSupport {
    /// The first range request is under way; the other fetchers wait for its answer.
    Unknown,
    /// Ranges are served (206): fetchers fetch in parallel.
    Served,
    /// A range came back as the whole blob: one fetcher reads it all as a stream.
    Ignored,
}

struct RangeProbe {
    support: Mutex<RangeSupport>,
    decided: Condvar,
}

impl RangeProbe {
    fn new() -> Self {
        RangeProbe {
            support: Mutex::new(RangeSupport::Unknown),
            decided: Condvar::new(),
        }
    }

    /// Records what a response showed; true for the first to show that ranges are ignored.
    fn learn(&self, ignored: bool) -> bool {
        let mut support = self.support.lock_unpoisoned();
        let first_ignored = ignored && *support != RangeSupport::Ignored;
        if ignored {
            *support = RangeSupport::Ignored;
        } else if *support == RangeSupport::Unknown {
            *support = RangeSupport::Served;
        }
        self.decided.notify_all();
        first_ignored
    }

    /// Waits until the first answer came (or the install stopped).
    fn wait(&self, stop: &AtomicBool) -> RangeSupport {
        let mut support = self.support.lock_unpoisoned();
        while *support == RangeSupport::Unknown && !stop.load(Ordering::Relaxed) {
            support = self
                .decided
                .wait_timeout_unpoisoned(support, Duration::from_millis(100))
                .0;
        }
        *support
    }
}

/// Fetches spans of groups until none is left. The first fetcher's first request finds out
/// whether the source serves ranges; the others wait for that.
fn fetcher(
    shared: &Shared,
    groups: &[Group],
    spans: &[Range<usize>],
    next_span: &AtomicUsize,
    probe: &RangeProbe,
    first: bool,
    fetched: mpsc::Sender<(usize, Vec<u8>)>,
) {
    let source = shared.source;
    if !first && probe.wait(&shared.stop) != RangeSupport::Served {
        return;
    }
    loop {
        let span = next_span.fetch_add(1, Ordering::SeqCst);
        let Some(owned) = spans.get(span).cloned() else {
            return;
        };
        let range = groups[owned.start].start..groups[owned.end - 1].end;
        let mut reader = BlobReader::range(source.registry, source.digest, range, source.blob_size)
            .counting(Arc::clone(shared.progress))
            .stopping_on(&shared.stop);
        if let Err(e) = reader.connect() {
            probe.learn(false);
            if !shared.stop.load(Ordering::Relaxed) {
                shared.fail(e);
            }
            return;
        }
        // Groups read here that another fetcher already claimed are read past, not delivered.
        let mut also_owned = groups.len()..groups.len();
        let mut last = owned.end;
        if probe.learn(reader.range_ignored()) {
            let rest = next_span.swap(spans.len(), Ordering::SeqCst);
            if let Some(rest) = spans.get(rest) {
                also_owned = rest.start..groups.len();
            }
            last = groups.len();
            reader.read_to_blob_end();
            say!(
                "ocidd: the source sent the whole blob for a range (a cache filling?); reading it as one stream"
            );
        }
        for (g, group) in groups.iter().enumerate().take(last).skip(owned.start) {
            let mine = owned.contains(&g) || also_owned.contains(&g);
            let buffer = if mine {
                match shared.buffers.acquire(g, &shared.stop) {
                    Some(buffer) => buffer,
                    None => return,
                }
            } else {
                Vec::new()
            };
            // Streaming the whole blob: the bytes between wanted groups are read past.
            let gap = group.start.saturating_sub(reader.position());
            if gap > 0
                && let Err(e) = io::copy(&mut (&mut reader).take(gap), &mut io::sink())
            {
                if !shared.stop.load(Ordering::Relaxed) {
                    shared.fail(anyhow::Error::from(e).context("fetching the blob"));
                }
                return;
            }
            match read_group(&mut reader, group, buffer, mine) {
                Ok(data) if mine => {
                    if fetched.send((g, data)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // Once the install stopped, this is only the echo of that.
                    if !shared.stop.load(Ordering::Relaxed) {
                        shared.fail(e);
                    }
                    return;
                }
            }
        }
    }
}

/// Reads `group`'s bytes from `reader` into `data`, or past them when they are not `wanted`.
fn read_group(
    reader: &mut BlobReader,
    group: &Group,
    mut data: Vec<u8>,
    wanted: bool,
) -> Result<Vec<u8>> {
    let length = group.end - group.start;
    data.clear();
    let read = if wanted {
        reader.take(length).read_to_end(&mut data)
    } else {
        io::copy(&mut reader.take(length), &mut io::sink()).map(|n| n as usize)
    };
    let read = read
        .context("fetching the blob")
        .classify(Failure::Registry)?;
    if read as u64 != length {
        return Err(classified(
            Failure::Registry,
            anyhow!(
                "fetching the blob: it ended at byte {}",
                group.start + read as u64
            ),
        ));
    }
    Ok(data)
}

fn worker(shared: &Shared, jobs: &Mutex<mpsc::Receiver<Job>>) {
    let index = shared.source.index;
    let mut output = AlignedBuffer::with_capacity(index.chunk_size as usize);
    let mut inflater = MemberInflater::new();
    let mut zstd = zstd::bulk::Decompressor::new().ok();
    loop {
        let job = jobs.lock().map(|rx| rx.recv());
        let Ok(Ok(Job {
            group,
            chunk: i,
            data,
            range,
        })) = job
        else {
            return;
        };
        let chunk = index.chunks[i];
        let skip = shared.stop.load(Ordering::Relaxed) || shared.is_corrupt();
        if !skip {
            match decompress(
                shared.source.compression,
                &data[range],
                &chunk,
                &mut output,
                &mut inflater,
                zstd.as_mut(),
            ) {
                Ok(()) if !index.holds(i, &output) => {
                    shared.corrupt(classified(
                        Failure::Verification,
                        anyhow!("chunk {i} does not match its digest in the chunk index"),
                    ));
                }
                Ok(()) => {
                    if let Err(e) = shared.write(index.image_offset(i), &output) {
                        shared.fail(e);
                    }
                }
                Err(e) => shared.corrupt(e.context(format!("chunk {i}"))),
            }
        }
        drop(data);
        shared.group_done(group);
    }
}

/// Decompresses one chunk into `output`, which ends up exactly the chunk's size.
fn decompress(
    compression: Compression,
    data: &[u8],
    chunk: &Chunk,
    output: &mut AlignedBuffer,
    inflater: &mut MemberInflater,
    zstd: Option<&mut zstd::bulk::Decompressor>,
) -> Result<()> {
    let size = chunk.size as usize;
    output.set_len(size);
    let produced = match compression {
        Compression::Gzip => {
            let (used, produced) = inflater
                .inflate(data, output)
                .map_err(|e| anyhow!("the gzip data is corrupt: {e}"))
                .classify(Failure::Verification)?;
            if used != data.len() {
                return Err(classified(
                    Failure::Verification,
                    anyhow!("the gzip data is corrupt: the chunk is not exactly one gzip member"),
                ));
            }
            produced
        }
        Compression::Zstd => {
            let zstd = zstd
                .ok_or_else(|| anyhow!("zstd is not available"))
                .classify(Failure::Verification)?;
            zstd.decompress_to_buffer(data, &mut output[..])
                .map_err(|e| anyhow!("the zstd data is corrupt: {e}"))
                .classify(Failure::Verification)?
        }
        Compression::None if data.len() == size => {
            output.copy_from_slice(data);
            size
        }
        Compression::None => data.len(),
        Compression::Xz => return supports(compression),
    };
    if produced != size {
        return Err(classified(
            Failure::Verification,
            anyhow!("the chunk decompressed to {produced} bytes, not the {size} its index says"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::assert_failed;

    fn assert_verification(result: Result<()>, expected: &str) {
        assert_failed(result, Failure::Verification, expected);
    }

    fn index(lengths: &[u64]) -> ChunkIndex {
        let mut offset = 0;
        let chunks = lengths
            .iter()
            .map(|&length| {
                let chunk = Chunk {
                    offset,
                    length,
                    size: 100,
                    zero: false,
                    digest: None,
                    cv: None,
                };
                offset += length;
                chunk
            })
            .collect::<Vec<_>>();
        ChunkIndex {
            version: 1,
            blob: String::new(),
            chunk_size: 100,
            image_size: 100 * lengths.len() as u64,
            image_digest: None,
            chunks,
        }
    }

    #[test]
    fn groups_cover_the_blob_in_order() {
        let mib = 1 << 20;
        let index = index(&[5 * mib, mib, 2 * mib, mib, 3 * mib, 1]);
        let groups = groups(&index, None);
        let spans: Vec<(Range<usize>, u64, u64)> = groups
            .iter()
            .map(|g| (g.chunks.clone(), g.start, g.end))
            .collect();
        assert_eq!(
            spans,
            [
                (0..1, 0, 5 * mib),
                (1..4, 5 * mib, 9 * mib),
                (4..6, 9 * mib, 12 * mib + 1)
            ]
        );
    }

    #[test]
    fn delta_groups_skip_what_is_not_wanted_and_spans_stay_contiguous() {
        let mib = 1 << 20;
        let index = index(&[mib, mib, mib, mib, mib, mib, mib, mib, mib, mib]);
        let wanted = [true, true, false, true, true, true, true, true, true, false];
        let groups = groups(&index, Some(&wanted));
        let found: Vec<(Range<usize>, u64, u64)> = groups
            .iter()
            .map(|g| (g.chunks.clone(), g.start, g.end))
            .collect();
        assert_eq!(
            found,
            [
                (0..2, 0, 2 * mib),
                (3..7, 3 * mib, 7 * mib),
                (7..9, 7 * mib, 9 * mib)
            ]
        );
        // The gap after group 0 starts a new span; groups 1 and 2 are back to back.
        assert_eq!(spans(&groups), [0..1, 1..3]);
        let many: Vec<Group> = (0..9u64)
            .map(|i| Group {
                chunks: i as usize..i as usize + 1,
                start: i * mib,
                end: (i + 1) * mib,
            })
            .collect();
        assert_eq!(spans(&many), [0..4, 4..8, 8..9]);
    }

    #[test]
    fn the_lowest_group_always_gets_a_buffer() {
        let buffers = Buffers::new(100);
        // Later groups take all buffers but one...
        let later: Vec<Vec<u8>> = (1..BUFFERS)
            .map(|g| buffers.try_acquire(g * 10).unwrap())
            .collect();
        assert!(later.iter().all(|b| b.capacity() >= 100));
        // ...which another later group may not take, but the lowest group may.
        assert!(buffers.try_acquire(99).is_none());
        let lowest = buffers.try_acquire(0).unwrap();
        // Now none is left, even for the next lowest.
        assert!(buffers.try_acquire(1).is_none());
        buffers.release(Some(lowest));
        // Group 1 is now the lowest without one: the one free buffer is kept for it.
        assert!(buffers.try_acquire(99).is_none());
        assert!(buffers.try_acquire(1).is_some());
        // A lost buffer may be made again, for the lowest group (now 2).
        buffers.release(None);
        assert!(buffers.try_acquire(99).is_none());
        assert!(buffers.try_acquire(2).is_some());
    }

    #[test]
    fn a_stopped_install_gets_no_buffer() {
        let buffers = Buffers::new(100);
        let stop = AtomicBool::new(true);
        assert!(buffers.acquire(0, &stop).is_none());
        stop.store(false, Ordering::Relaxed);
        assert!(buffers.acquire(0, &stop).is_some());
    }

    #[test]
    fn zero_chunks_are_checked_against_their_trailer() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(&[0u8; 4096]).unwrap();
        let zeros = encoder.finish().unwrap();
        let chunk = Chunk {
            offset: 0,
            length: zeros.len() as u64,
            size: 4096,
            zero: true,
            digest: None,
            cv: None,
        };
        let mut trailers = ZeroTrailers::default();
        assert!(trailers.check(Compression::Gzip, &zeros, &chunk, 0).is_ok());
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(&[1u8; 4096]).unwrap();
        let ones = encoder.finish().unwrap();
        let marked = "marked all zeros in the chunk index but its data says otherwise";
        assert_verification(trailers.check(Compression::Gzip, &ones, &chunk, 0), marked);
        let frame = zstd::bulk::compress(&[0u8; 4096], 3).unwrap();
        assert!(trailers.check(Compression::Zstd, &frame, &chunk, 0).is_ok());
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        assert_verification(trailers.check(Compression::Zstd, &two, &chunk, 0), marked);
    }

    #[test]
    fn decompresses_exactly_one_member_of_the_right_size() {
        use std::io::Write;
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8).collect();
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(&data).unwrap();
        let member = encoder.finish().unwrap();
        let chunk = |size| Chunk {
            offset: 0,
            length: member.len() as u64,
            size,
            zero: false,
            digest: None,
            cv: None,
        };
        let mut output = AlignedBuffer::with_capacity(8192);
        let mut inflater = MemberInflater::new();
        decompress(
            Compression::Gzip,
            &member,
            &chunk(5000),
            &mut output,
            &mut inflater,
            None,
        )
        .unwrap();
        assert_eq!(&output[..], &data[..]);
        assert_verification(
            decompress(
                Compression::Gzip,
                &member,
                &chunk(4999),
                &mut output,
                &mut inflater,
                None,
            ),
            "the gzip data is corrupt: it decompresses to more than expected",
        );
        assert_verification(
            decompress(
                Compression::Gzip,
                &member,
                &chunk(5001),
                &mut output,
                &mut inflater,
                None,
            ),
            "the chunk decompressed to 5000 bytes, not the 5001 its index says",
        );
        let mut two = member.clone();
        two.extend_from_slice(&member);
        assert_verification(
            decompress(
                Compression::Gzip,
                &two,
                &chunk(5000),
                &mut output,
                &mut inflater,
                None,
            ),
            "the chunk is not exactly one gzip member",
        );
    }
}
