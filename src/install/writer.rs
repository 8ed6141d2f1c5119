//! Writing the image onto the target: aligned blocks, runs of zeros zeroed instead of written,
//! and the promise that the image's first and last MiB (its partition tables) reach the target
//! last, only after the whole image verified. Both installs, the stream and the chunked one,
//! write through here.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::ops::Range;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};

use super::target::Target;
use super::{gpt, interrupt, seed_partition};
use crate::chunks::is_zero;
use crate::error::{Classify, Failure, classified, io_error};
use crate::progress::Progress;
use crate::say;
use crate::seed::Seed;

/// How much of the image's start, and of its end, is written last (see [`Held`]).
pub const HOLDBACK: usize = 1 << 20;

/// An install that failed once it had the target open: the error, and how many bytes of the
/// image had reached the target (`None`: nothing did; it holds what it held before).
#[derive(Debug)]
pub struct WriteFailure {
    pub error: anyhow::Error,
    pub written: Option<u64>,
}

impl From<anyhow::Error> for WriteFailure {
    /// A failure before anything was written.
    fn from(error: anyhow::Error) -> Self {
        WriteFailure {
            error,
            written: None,
        }
    }
}

/// Where the held-back tail of an image of `size` bytes starts, if it has one apart from the
/// held start.
fn held_tail_start(size: u64) -> Option<u64> {
    (size > HOLDBACK as u64).then(|| (HOLDBACK as u64).max(size - HOLDBACK as u64))
}

/// The part of `range` of an image of `image_size` bytes that is not held back (see [`Held`]),
/// without holding anything: for deciding before the install what it will write as it comes.
pub fn unheld_part(range: Range<u64>, image_size: u64) -> Range<u64> {
    unheld_between(range, held_tail_start(image_size))
}

fn unheld_between(range: Range<u64>, tail_start: Option<u64>) -> Range<u64> {
    let start = range.start.max(HOLDBACK as u64);
    let end = range.end.min(tail_start.unwrap_or(u64::MAX));
    start..end.max(start)
}

/// The parts of the image written last, once all the rest is on the target and the image
/// verified: its first [`HOLDBACK`] bytes (boot code and the partition table) and its last
/// [`HOLDBACK`] bytes (where a GPT keeps its backup). Until then the target holds neither its
/// old tables (cleared before the first write, see [`Target`]) nor the new ones, so nothing
/// boots, or restores a table onto, a half-written image.
pub struct Held {
    start: AlignedBuffer,
    /// Image bytes to its end, in pieces: (offset, bytes), in order.
    tail: Vec<(u64, AlignedBuffer)>,
    /// Where the held end of an image of known size begins.
    tail_start: Option<u64>,
    /// The machine's seed, written with the tables into a partition of its own.
    seed: Option<Arc<Seed>>,
}

impl Held {
    /// For an image of `image_size` bytes, or of a size not known yet (the stream then hands
    /// its last blocks over with [`Held::hold_tail`]). Bytes never given (the zero chunks of a
    /// chunked image) are zeros.
    pub fn new(image_size: Option<u64>) -> Self {
        let mut start = AlignedBuffer::with_capacity(HOLDBACK);
        let mut tail = Vec::new();
        let mut tail_start = None;
        if let Some(size) = image_size {
            start.set_len(size.min(HOLDBACK as u64) as usize);
            if let Some(from) = held_tail_start(size) {
                let mut end = AlignedBuffer::with_capacity((size - from) as usize);
                end.set_len((size - from) as usize);
                tail.push((from, end));
                tail_start = Some(from);
            }
        }
        Held {
            start,
            tail,
            tail_start,
            seed: None,
        }
    }

    /// Also writes `seed` at the commit, in a new partition at the disk's end.
    pub fn with_seed(mut self, seed: Option<Arc<Seed>>) -> Self {
        self.seed = seed;
        self
    }

    /// The part of `range` of the image that is not held: what goes onto the target as it
    /// comes.
    pub fn unheld(&self, range: Range<u64>) -> Range<u64> {
        unheld_between(range, self.tail_start)
    }

    /// Keeps the parts of `data` (image bytes from `offset` on) that are held; returns where
    /// the rest goes, and the rest.
    pub fn keep<'d>(&mut self, offset: u64, data: &'d [u8]) -> (u64, &'d [u8]) {
        let (mut offset, mut rest) = (offset, data);
        if offset < HOLDBACK as u64 {
            let at = offset as usize;
            let n = (HOLDBACK - at).min(rest.len());
            if self.start.len() < at + n {
                self.start.set_len(at + n);
            }
            self.start[at..at + n].copy_from_slice(&rest[..n]);
            offset += n as u64;
            rest = &rest[n..];
        }
        if let (Some(from), Some((_, tail))) = (self.tail_start, self.tail.first_mut()) {
            let end = offset + rest.len() as u64;
            if end > from {
                let cut = from.saturating_sub(offset) as usize;
                let at = (offset + cut as u64 - from) as usize;
                tail[at..at + rest.len() - cut].copy_from_slice(&rest[cut..]);
                rest = &rest[..cut];
            }
        }
        (offset, rest)
    }

    /// Holds a block at the image's end, at `offset` (after the blocks held before it).
    pub fn hold_tail(&mut self, offset: u64, block: AlignedBuffer) {
        self.tail.push((offset, block));
    }

    /// How many bytes are held.
    pub fn len(&self) -> u64 {
        self.start.len() as u64 + self.tail.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Once everything else is written and the image verified: flushes the image to stable
    /// storage; writes the held end, and a GPT's backup where it belongs on this target (its
    /// last sectors, see [`gpt`]); flushes; writes the held start; flushes again.
    pub fn commit(&mut self, target: &Target, block_size: usize) -> Result<()> {
        target.sync().context("flushing the image")?;
        // An image held whole was not written yet: the old tables go first, as always.
        target
            .begin_writing()
            .with_context(|| {
                format!(
                    "clearing the partition tables of {}",
                    target.path().display()
                )
            })
            .classify(Failure::Target)?;
        // A signal from here on waits until the tables are written.
        let _tables = interrupt::changing_tables();
        let mut blocks = BlockWriter::new(target);
        for (offset, bytes) in &self.tail {
            for (i, block) in bytes.chunks(block_size).enumerate() {
                blocks
                    .put(block, offset + (i * block_size) as u64)
                    .map_err(|f| f.into_error(target))?;
            }
        }
        blocks.flush().map_err(|f| f.into_error(target))?;
        let image_size = match self.tail.last() {
            Some((offset, bytes)) => offset + bytes.len() as u64,
            None => self.start.len() as u64,
        };
        let disk_size = match self.seed.clone() {
            Some(seed) => Some(self.write_seed(&seed, target, image_size)?),
            None => target.capacity(),
        };
        if let Some(disk_size) = disk_size
            && let Some(backup) = gpt::move_backup_to_end(
                &mut self.start,
                target.sector_size(),
                image_size,
                disk_size,
            )
        {
            target
                .write_at(&backup.bytes, backup.offset)
                .map_err(|error| {
                    BlockFailure {
                        error,
                        what: "writing the GPT backup to",
                        offset: backup.offset,
                    }
                    .into_error(target)
                })?;
        }
        target.sync().context("flushing the image's end")?;
        for (i, block) in self.start.chunks(block_size).enumerate() {
            let offset = (i * block_size) as u64;
            target.write_at(block, offset).map_err(|error| {
                BlockFailure {
                    error,
                    what: "writing to",
                    offset,
                }
                .into_error(target)
            })?;
        }
        target.sync().context("flushing the image's first MiB")?;
        interrupt::committed(&target.path().display().to_string());
        Ok(())
    }
}

impl Held {
    /// Adds the seed's partition to the held table and writes the seed into it, before any
    /// table is on the target. Returns the disk's size (a file that grows grows by the seed's
    /// room).
    fn write_seed(&mut self, seed: &Seed, target: &Target, image_size: u64) -> Result<u64> {
        let disk_size = match target.capacity() {
            Some(size) => size,
            None => {
                let size = seed_partition::disk_size_for(image_size);
                target
                    .set_image_length(size)
                    .with_context(|| format!("growing {} for the seed", target.path().display()))
                    .classify(Failure::Target)?;
                size
            }
        };
        let placement =
            seed_partition::add(&mut self.start, target.sector_size(), image_size, disk_size)?;
        let mut block =
            AlignedBuffer::with_capacity(seed.bytes.len().next_multiple_of(BUFFER_ALIGNMENT));
        block.extend_from_slice(&seed.bytes);
        block.set_len(block.capacity());
        block[seed.bytes.len()..].fill(0);
        target.write_at(&block, placement.offset).map_err(|error| {
            BlockFailure {
                error,
                what: "writing the seed to",
                offset: placement.offset,
            }
            .into_error(target)
        })?;
        say!(
            "ocidd: {} written into partition {} of {} ({}, {} MiB at the disk's end)",
            seed.describe(),
            placement.number,
            target.path().display(),
            placement.table,
            placement.length >> 20
        );
        Ok(disk_size)
    }
}

/// A byte buffer whose start is aligned for direct I/O (4096 bytes, which covers every
/// logical block size). Over-allocates a plain `Vec` and uses an aligned window of it.
pub struct AlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

const BUFFER_ALIGNMENT: usize = 4096;

impl AlignedBuffer {
    /// A buffer of `capacity` bytes, empty.
    pub fn with_capacity(capacity: usize) -> Self {
        let storage = vec![0u8; capacity + BUFFER_ALIGNMENT];
        let start = storage.as_ptr().align_offset(BUFFER_ALIGNMENT);
        AlignedBuffer {
            storage,
            start,
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.storage.len() - BUFFER_ALIGNMENT
    }

    /// Sets the length (up to the capacity); new bytes are whatever was there.
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.capacity());
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn extend_from_slice(&mut self, data: &[u8]) {
        let end = self.len + data.len();
        self.storage[self.start + self.len..self.start + end].copy_from_slice(data);
        self.len = end;
    }
}

impl std::ops::Deref for AlignedBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for AlignedBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// A write or a zeroing of the target that failed: the error, which it was, and where.
pub struct BlockFailure {
    pub error: io::Error,
    pub what: &'static str,
    pub offset: u64,
}

impl BlockFailure {
    /// The error to report: what failed, on which target, at which byte.
    pub fn into_error(self, target: &Target) -> anyhow::Error {
        classified(
            Failure::Target,
            anyhow!(self.error).context(format!(
                "{} {} at byte {}",
                self.what,
                target.path().display(),
                self.offset
            )),
        )
    }
}

/// Blocks of the image going onto the target at increasing offsets: each is written, but for
/// blocks of zeros, whose runs become one [`Target::zero_range`] each. Both installs (the
/// stream's [`ImageWriter`] and each chunk of a chunked image) write through one.
pub struct BlockWriter<'a> {
    target: &'a Target,
    /// Zero blocks not yet zeroed: (offset, length).
    zero_run: Option<(u64, u64)>,
    touched: bool,
}

impl<'a> BlockWriter<'a> {
    pub fn new(target: &'a Target) -> Self {
        BlockWriter {
            target,
            zero_run: None,
            touched: false,
        }
    }

    /// Whether a write or a zeroing was issued (then a failure must wipe the target).
    pub fn touched(&self) -> bool {
        self.touched
    }

    /// Puts `block` at `offset`: written, or added to the run of zeros.
    pub fn put(&mut self, block: &[u8], offset: u64) -> Result<(), BlockFailure> {
        if is_zero(block) {
            match &mut self.zero_run {
                Some((start, length)) if *start + *length == offset => {
                    *length += block.len() as u64
                }
                _ => {
                    self.flush()?;
                    self.zero_run = Some((offset, block.len() as u64));
                }
            }
            return Ok(());
        }
        self.flush()?;
        self.touched = true;
        self.target
            .write_at(block, offset)
            .map_err(|error| BlockFailure {
                error,
                what: "writing to",
                offset,
            })
    }

    /// Zeroes the pending run of zero blocks.
    pub fn flush(&mut self) -> Result<(), BlockFailure> {
        if let Some((offset, length)) = self.zero_run.take() {
            self.touched = true;
            self.target
                .zero_range(offset, length)
                .map_err(|error| BlockFailure {
                    error,
                    what: "zeroing",
                    offset,
                })?;
        }
        Ok(())
    }
}

/// Writes the decompressed image onto the target: in `block_size` writes, never past its end,
/// holding its first and last [`HOLDBACK`] bytes back until [`ImageWriter::finish`] (the end
/// of a stream is known only when it comes, so the last blocks wait until more follows them).
/// Blocks of zeros are not written: runs of them become [`Target::zero_range`] calls.
pub struct ImageWriter<'a> {
    target: &'a Target,
    block_size: usize,
    /// The block being filled (aligned, so that it can be written directly).
    block: AlignedBuffer,
    /// Where on the target the block being filled goes.
    block_offset: u64,
    /// Full blocks not written yet, because they may be the image's last MiB.
    waiting: VecDeque<(u64, AlignedBuffer)>,
    waiting_bytes: usize,
    /// Blocks written, for reuse.
    spare: Vec<AlignedBuffer>,
    held: Held,
    accepted: u64,
    blocks: BlockWriter<'a>,
    progress: Arc<Progress>,
}

impl<'a> ImageWriter<'a> {
    pub fn new(target: &'a Target, block_size: usize, progress: Arc<Progress>) -> Self {
        Self::with_seed(target, block_size, progress, None)
    }

    /// Also writes `seed` at the commit (see [`Held::with_seed`]).
    pub fn with_seed(
        target: &'a Target,
        block_size: usize,
        progress: Arc<Progress>,
        seed: Option<Arc<Seed>>,
    ) -> Self {
        ImageWriter {
            target,
            block_size,
            block: AlignedBuffer::with_capacity(block_size),
            block_offset: HOLDBACK as u64,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            spare: Vec::new(),
            held: Held::new(None).with_seed(seed),
            accepted: 0,
            blocks: BlockWriter::new(target),
            progress,
        }
    }

    /// Whether anything reached the target yet (then a failure must wipe it).
    pub fn touched(&self) -> bool {
        self.blocks.touched()
    }

    /// How many bytes of the image were accepted (written, or buffered to be).
    pub fn written(&self) -> u64 {
        self.accepted
    }

    fn io_failure(&self, failure: BlockFailure) -> io::Error {
        io_error(Failure::Target, failure.into_error(self.target))
    }

    /// Queues the filled block; writes the oldest queued ones that are surely not in the
    /// image's last [`HOLDBACK`] bytes.
    fn block_done(&mut self) -> io::Result<()> {
        let next = self
            .spare
            .pop()
            .unwrap_or_else(|| AlignedBuffer::with_capacity(self.block_size));
        let block = std::mem::replace(&mut self.block, next);
        let length = block.len();
        self.waiting.push_back((self.block_offset, block));
        self.waiting_bytes += length;
        self.block_offset += length as u64;
        while self
            .waiting
            .front()
            .is_some_and(|(_, front)| self.waiting_bytes - front.len() >= HOLDBACK)
        {
            let Some((offset, mut front)) = self.waiting.pop_front() else {
                break;
            };
            self.waiting_bytes -= front.len();
            self.blocks
                .put(&front, offset)
                .map_err(|f| self.io_failure(f))?;
            self.progress.written(front.len() as u64);
            front.clear();
            self.spare.push(front);
        }
        Ok(())
    }

    /// Writes what is still buffered but held, flushes it to stable storage, then commits the
    /// held end and start (see [`Held::commit`]). Call only once the image verified. Returns
    /// the image size.
    pub fn finish(mut self) -> Result<u64> {
        if !self.block.is_empty() {
            self.block_done()?;
        }
        self.blocks.flush().map_err(|f| f.into_error(self.target))?;
        while let Some((offset, block)) = self.waiting.pop_front() {
            self.held.hold_tail(offset, block);
        }
        self.target
            .set_image_length(self.accepted)
            .with_context(|| format!("setting the length of {}", self.target.path().display()))
            .classify(Failure::Target)?;
        self.held.commit(self.target, self.block_size)?;
        self.progress.written(self.held.len());
        Ok(self.accepted)
    }
}

impl Write for ImageWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.accepted + buf.len() as u64;
        if let Some(capacity) = self.target.capacity()
            && end > capacity
        {
            return Err(io_error(
                Failure::Target,
                anyhow!(
                    "the image is larger than the target {} ({capacity} bytes); nothing was written past its end",
                    self.target.path().display()
                ),
            ));
        }
        let (_, mut rest) = self.held.keep(self.accepted, buf);
        // Blocks are copied into the aligned block buffer: a copy in memory is cheap next to
        // what direct writes save.
        while !rest.is_empty() {
            let take = (self.block_size - self.block.len()).min(rest.len());
            self.block.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.block.len() == self.block_size {
                self.block_done()?;
            }
        }
        self.accepted = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Buffered blocks are written by `finish`, once the image verified.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Read;
    use std::path::Path;

    fn file_target(size: u64) -> (tempfile::NamedTempFile, Target) {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(size).unwrap();
        let target = Target::open(file.path()).unwrap();
        (file, target)
    }

    fn contents(path: &Path) -> Vec<u8> {
        let mut data = Vec::new();
        File::open(path).unwrap().read_to_end(&mut data).unwrap();
        data
    }

    #[test]
    fn holds_back_the_first_mib_until_finish() {
        let (file, target) = file_target(4 << 20);
        let image: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8 + 1).collect();
        let mut writer = ImageWriter::new(&target, 4096, Arc::new(Progress::default()));
        for chunk in image.chunks(10_007) {
            writer.write_all(chunk).unwrap();
        }
        assert!(writer.touched());
        let on_disk = contents(file.path());
        assert!(
            on_disk[..HOLDBACK].iter().all(|&b| b == 0),
            "start written early"
        );
        assert_eq!(writer.finish().unwrap(), image.len() as u64);
        let on_disk = contents(file.path());
        assert_eq!(on_disk.len(), 4 << 20, "a sized file keeps its size");
        assert_eq!(&on_disk[..image.len()], &image[..]);
    }

    #[test]
    fn zero_blocks_become_holes() {
        use std::os::unix::fs::MetadataExt;
        // A sized file full of old data: zero blocks must read as zeros afterwards.
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), vec![0xAAu8; 8 << 20]).unwrap();
        let target = Target::open(file.path()).unwrap();
        let mut image = vec![0u8; 6 << 20];
        image[..10].copy_from_slice(b"first meg.");
        image[(5 << 20) + 7] = 1;
        let mut writer = ImageWriter::new(&target, 65536, Arc::new(Progress::default()));
        writer.write_all(&image).unwrap();
        writer.finish().unwrap();
        assert!(contents(file.path())[..image.len()] == image[..]);
        // Four zero MiB were punched, not written.
        assert!(
            std::fs::metadata(file.path()).unwrap().blocks() * 512 <= (8 << 20) - (3 << 20),
            "no holes"
        );

        // A file that grows ends sparse, at the image's length, zeros at the end included.
        let (file, target) = file_target(0);
        let mut image = vec![0u8; 5 << 20];
        image[0] = 1;
        let mut writer = ImageWriter::new(&target, 4096, Arc::new(Progress::default()));
        writer.write_all(&image).unwrap();
        writer.finish().unwrap();
        assert!(contents(file.path()) == image);
        assert!(std::fs::metadata(file.path()).unwrap().blocks() * 512 <= 2 << 20);
    }

    #[test]
    fn an_empty_file_grows_to_the_image() {
        let (file, target) = file_target(0);
        assert_eq!(target.capacity(), None);
        let mut writer = ImageWriter::new(&target, 1000, Arc::new(Progress::default()));
        writer.write_all(&[9u8; 1_500_000]).unwrap();
        writer.finish().unwrap();
        assert_eq!(contents(file.path()), vec![9u8; 1_500_000]);
    }

    #[test]
    fn refuses_to_write_past_the_end() {
        let (file, target) = file_target(2 << 20);
        let mut writer = ImageWriter::new(&target, 65536, Arc::new(Progress::default()));
        writer.write_all(&[1u8; 2 << 20]).unwrap();
        let e = writer.write_all(&[1u8]).unwrap_err();
        assert!(e.to_string().contains("larger than the target"), "{e}");
        assert!(target.check_fits((2 << 20) + 1, None).is_err());
        target.wipe().unwrap();
        let on_disk = contents(file.path());
        assert!(
            on_disk.iter().all(|&b| b == 0),
            "the first and last MiB are the whole 2 MiB"
        );
    }

    #[test]
    fn the_held_parts_are_the_first_and_last_mib_in_any_order() {
        let mib = HOLDBACK as u64;
        let mut held = Held::new(Some(3 * mib + 10));
        assert_eq!(held.len(), 2 * mib);
        assert_eq!(held.unheld(0..4 * mib), mib..2 * mib + 10);
        assert_eq!(held.unheld(0..100), mib..mib);
        // A later piece first, straddling the end of the held start.
        let data = vec![7u8; 200_000];
        let (offset, rest) = held.keep(mib - 100_000, &data);
        assert_eq!((offset, rest.len()), (mib, 100_000));
        let (offset, rest) = held.keep(0, &[1u8; 10]);
        assert_eq!((offset, rest.len()), (10, 0));
        // A piece straddling the start of the held end.
        let (offset, rest) = held.keep(2 * mib, &data);
        assert_eq!((offset, rest.len()), (2 * mib, 10));
        assert_eq!(&held.start[..10], &[1u8; 10]);
        assert!(held.start[10..HOLDBACK - 100_000].iter().all(|&b| b == 0));
        assert!(held.start[HOLDBACK - 100_000..].iter().all(|&b| b == 7));
        let (tail_offset, tail) = &held.tail[0];
        assert_eq!(*tail_offset, 2 * mib + 10);
        assert!(tail[..200_000 - 10].iter().all(|&b| b == 7));
        assert!(tail[200_000 - 10..].iter().all(|&b| b == 0));

        // Of unknown size: the start grows to what it was given; the stream holds its end.
        let mut held = Held::new(None);
        held.keep(0, &[3u8; 1000]);
        assert_eq!(held.len(), 1000);
        assert_eq!(Held::new(Some(4096)).len(), 4096);
        // Up to 2 MiB, the end is what follows the start.
        let held = Held::new(Some(mib + 5));
        assert_eq!(held.unheld(0..mib + 5), mib..mib);
        assert_eq!(held.tail[0].0, mib);
    }

    #[test]
    fn old_tables_are_cleared_before_the_first_write_and_the_end_is_written_last() {
        // A sized file with "old tables" at both ends.
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), vec![0xAAu8; 8 << 20]).unwrap();
        let target = Target::open(file.path()).unwrap();
        let image: Vec<u8> = (0..(7 << 20) as u32).map(|i| (i % 251) as u8 + 1).collect();
        let mut writer = ImageWriter::new(&target, 65536, Arc::new(Progress::default()));
        writer.write_all(&image).unwrap();
        let on_disk = contents(file.path());
        assert!(
            on_disk[..HOLDBACK].iter().all(|&b| b == 0),
            "start written early or not cleared"
        );
        assert!(
            on_disk[(7 << 20)..].iter().all(|&b| b == 0),
            "the disk's end not cleared"
        );
        assert!(
            on_disk[(6 << 20)..(7 << 20)].iter().all(|&b| b == 0xAA),
            "the image's end written early"
        );
        assert!(on_disk[HOLDBACK..(6 << 20)] == image[HOLDBACK..(6 << 20)]);
        writer.finish().unwrap();
        let on_disk = contents(file.path());
        assert!(on_disk[..image.len()] == image[..]);

        // Nothing written, nothing cleared.
        drop(target);
        std::fs::write(file.path(), vec![0xAAu8; 8 << 20]).unwrap();
        let target = Target::open(file.path()).unwrap();
        let mut writer = ImageWriter::new(&target, 65536, Arc::new(Progress::default()));
        writer.write_all(&image[..HOLDBACK / 2]).unwrap();
        assert!(contents(file.path()).iter().all(|&b| b == 0xAA));
    }
}
