//! Writing the image onto the target: aligned blocks, runs of zeros zeroed instead of written,
//! and the promise that the image's first MiB (its partition tables) reaches the target last,
//! only after the whole image verified. Both installs, the stream and the chunked one, write
//! through here.

use std::io::{self, Write};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};

use super::target::Target;
use crate::chunks::is_zero;
use crate::error::{Classify, Failure, classified, io_error};
use crate::progress::Progress;

/// The part of the image written last, once everything else is verified and on disk: it holds
/// the partition tables, so a machine cannot boot a half-written image.
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

/// The image's first [`HOLDBACK`] bytes, kept in memory while the rest goes onto the target,
/// and written by [`HeldStart::commit`] once the image verified.
pub struct HeldStart {
    buffer: AlignedBuffer,
}

impl HeldStart {
    /// For an image of `image_size` bytes, or of a size not known yet. Bytes never given (the
    /// zero chunks of a chunked image) are zeros.
    pub fn new(image_size: Option<u64>) -> Self {
        let mut buffer = AlignedBuffer::with_capacity(HOLDBACK);
        if let Some(size) = image_size {
            buffer.set_len(size.min(HOLDBACK as u64) as usize);
        }
        HeldStart { buffer }
    }

    /// Keeps the part of `data` (image bytes from `offset` on) that falls into the first
    /// [`HOLDBACK`] bytes; returns where the rest goes and the rest.
    pub fn keep<'d>(&mut self, offset: u64, data: &'d [u8]) -> (u64, &'d [u8]) {
        if offset >= HOLDBACK as u64 {
            return (offset, data);
        }
        let start = offset as usize;
        let n = (HOLDBACK - start).min(data.len());
        if self.buffer.len() < start + n {
            self.buffer.set_len(start + n);
        }
        self.buffer[start..start + n].copy_from_slice(&data[..n]);
        (offset + n as u64, &data[n..])
    }

    /// How many bytes are held.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// Once everything else is written and the image verified: flushes the image to stable
    /// storage, writes the held start in `block_size` writes, and flushes again.
    pub fn commit(&self, target: &Target, block_size: usize) -> Result<()> {
        target.sync().context("flushing the image")?;
        for (i, block) in self.buffer.chunks(block_size).enumerate() {
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
        target.sync().context("flushing the image's first MiB")
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
/// holding the first [`HOLDBACK`] bytes back until [`ImageWriter::finish`]. Blocks of zeros are
/// not written: runs of them become [`Target::zero_range`] calls.
pub struct ImageWriter<'a> {
    target: &'a Target,
    block_size: usize,
    /// The block being filled (aligned, so that it can be written directly).
    block: AlignedBuffer,
    /// Where on the target the next block goes.
    block_offset: u64,
    held: HeldStart,
    accepted: u64,
    blocks: BlockWriter<'a>,
    progress: Arc<Progress>,
}

impl<'a> ImageWriter<'a> {
    pub fn new(target: &'a Target, block_size: usize, progress: Arc<Progress>) -> Self {
        ImageWriter {
            target,
            block_size,
            block: AlignedBuffer::with_capacity(block_size),
            block_offset: HOLDBACK as u64,
            held: HeldStart::new(None),
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

    /// Writes one block at the next block offset, or adds it to the run of zeros.
    fn emit(&mut self, data: &[u8]) -> io::Result<()> {
        let offset = self.block_offset;
        self.block_offset += data.len() as u64;
        self.progress.written(data.len() as u64);
        self.blocks
            .put(data, offset)
            .map_err(|f| self.io_failure(f))
    }

    fn emit_block(&mut self) -> io::Result<()> {
        let block = std::mem::replace(&mut self.block, AlignedBuffer::with_capacity(0));
        let result = self.emit(&block);
        self.block = block;
        self.block.clear();
        result
    }

    /// Writes what is still buffered, flushes it to stable storage, then writes the held-back
    /// start and flushes again. Call only once the image verified. Returns the image size.
    pub fn finish(mut self) -> Result<u64> {
        if !self.block.is_empty() {
            self.emit_block()?;
        }
        self.blocks.flush().map_err(|f| f.into_error(self.target))?;
        self.target
            .set_image_length(self.accepted)
            .with_context(|| format!("setting the length of {}", self.target.path().display()))
            .classify(Failure::Target)?;
        self.held.commit(self.target, self.block_size)?;
        self.progress.written(self.held.len() as u64);
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
                self.emit_block()?;
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
        assert!(target.check_fits((2 << 20) + 1).is_err());
        target.wipe_start().unwrap();
        assert!(contents(file.path())[..HOLDBACK].iter().all(|&b| b == 0));
    }

    #[test]
    fn the_held_start_keeps_only_the_first_mib_in_any_order() {
        let mut held = HeldStart::new(Some(3 << 20));
        assert_eq!(held.len(), HOLDBACK);
        // A later piece first, straddling the end of the held part.
        let data = vec![7u8; 200_000];
        let (offset, rest) = held.keep(HOLDBACK as u64 - 100_000, &data);
        assert_eq!((offset, rest.len()), (HOLDBACK as u64, 100_000));
        let (offset, rest) = held.keep(0, &[1u8; 10]);
        assert_eq!((offset, rest.len()), (10, 0));
        let (offset, rest) = held.keep(5 << 20, &data);
        assert_eq!((offset, rest.len()), (5 << 20, data.len()));
        assert_eq!(&held.buffer[..10], &[1u8; 10]);
        assert!(held.buffer[10..HOLDBACK - 100_000].iter().all(|&b| b == 0));
        assert!(held.buffer[HOLDBACK - 100_000..].iter().all(|&b| b == 7));

        // Of unknown size: it grows to what it was given.
        let mut held = HeldStart::new(None);
        held.keep(0, &[3u8; 1000]);
        assert_eq!(held.len(), 1000);
        let small = HeldStart::new(Some(4096));
        assert_eq!(small.len(), 4096);
    }
}
