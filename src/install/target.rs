//! The target: opening and checking it, writing the image onto it in `dd.bs` blocks with the
//! first MiB held back until the image verified, wiping it when an install fails, and listing
//! the machine's disks for the prompt.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};

use crate::chunks::is_zero;
use crate::error::{Classify, Failure, io_error};
use crate::fail;
use crate::progress::Progress;

/// The part of the image written last, once everything else is verified and on disk: it holds
/// the partition tables, so a machine cannot boot a half-written image.
pub const HOLDBACK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BlockDevice,
    RegularFile,
}

/// An opened, checked target.
#[derive(Debug)]
pub struct Target {
    path: PathBuf,
    file: File,
    /// The same target opened with O_DIRECT, for aligned writes: they skip the page cache,
    /// whose copying and page allocation cost more than the decompression on machines like
    /// the benchmark's (1 GiB written and flushed: 2.2 s buffered, 0.5 s direct).
    direct: Option<File>,
    /// The alignment direct writes need (address, offset and length).
    alignment: usize,
    kind: Kind,
    /// How many bytes fit; `None` for an empty regular file, which grows to the image's size.
    capacity: Option<u64>,
    /// `MAJOR:MINOR` of a block device.
    device: Option<(u32, u32)>,
}

impl Target {
    /// Opens `path` for writing after checking that it exists, is a block device or a regular
    /// file, and is not in use (mounted, swap, or held by device-mapper/RAID).
    pub fn open(path: &Path) -> Result<Target> {
        let shown = path.display();
        let metadata = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound && path.starts_with("/dev") => {
                // Device names differ between machines (sda or nvme0n1 or vda): say which
                // there are, on the one line an operator reads on the console.
                let disks: Vec<String> = list_disks().iter().map(Disk::summary).collect();
                fail!(
                    Failure::Target,
                    "dd.of={shown} does not exist; disks here: {}",
                    if disks.is_empty() {
                        "none".to_string()
                    } else {
                        disks.join(", ")
                    }
                )
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fail!(Failure::Target, "dd.of={shown} does not exist")
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("dd.of={shown}"))
                    .classify(Failure::Target);
            }
        };
        let kind = if metadata.file_type().is_block_device() {
            Kind::BlockDevice
        } else if metadata.is_file() {
            Kind::RegularFile
        } else {
            fail!(
                Failure::Target,
                "dd.of={shown} is neither a block device nor a regular file"
            )
        };
        let device = (kind == Kind::BlockDevice).then(|| {
            let rdev = metadata.rdev();
            (rustix::fs::major(rdev), rustix::fs::minor(rdev))
        });
        if let Some(device) = device {
            check_not_in_use(path, device)?;
        }
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if kind == Kind::BlockDevice {
            // O_EXCL on a block device fails with EBUSY while the kernel has it claimed
            // (mounted, or in use by device-mapper/RAID): a last guard after the checks above.
            options.custom_flags(rustix::fs::OFlags::EXCL.bits() as i32);
        }
        let mut file = match options.open(path) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
                fail!(
                    Failure::Target,
                    "dd.of={shown} is in use by the system (busy)"
                )
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("opening dd.of={shown} for writing"))
                    .classify(Failure::Target);
            }
        };
        let size = file
            .seek(SeekFrom::End(0))
            .with_context(|| format!("finding the size of dd.of={shown}"))
            .classify(Failure::Target)?;
        let capacity = match kind {
            Kind::RegularFile if size == 0 => None,
            _ => Some(size),
        };
        // Without O_DIRECT support (tmpfs on older kernels, some file systems) every write
        // is buffered.
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path)
            .ok();
        let alignment = match kind {
            Kind::BlockDevice => rustix::fs::ioctl_blksszget(&file)
                .map(|n| (n as usize).max(512))
                .unwrap_or(4096),
            Kind::RegularFile => 4096,
        };
        Ok(Target {
            path: path.to_path_buf(),
            file,
            direct,
            alignment,
            kind,
            capacity,
            device,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A one-line description for the operator: path, size, model.
    pub fn describe(&self) -> String {
        let size = self
            .capacity
            .map(|c| format!("{}", indicatif::HumanBytes(c)))
            .unwrap_or_else(|| "empty".into());
        match (self.kind, self.device) {
            (Kind::BlockDevice, Some((major, minor))) => {
                let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
                let model = read_attribute(&sys.join("device/model"));
                match model {
                    Some(model) => format!("{} ({size}, {model})", self.path.display()),
                    None => format!("{} ({size})", self.path.display()),
                }
            }
            _ => format!("{} (regular file, {size})", self.path.display()),
        }
    }

    /// Refuses an image that is known not to fit.
    pub fn check_fits(&self, image_size: u64) -> Result<()> {
        match self.capacity {
            Some(capacity) if image_size > capacity => fail!(
                Failure::Target,
                "the image ({image_size} bytes) is larger than dd.of={} ({capacity} bytes)",
                self.path.display()
            ),
            _ => Ok(()),
        }
    }

    /// Zeroes the first MiB (the partition tables) so the machine cannot boot what is there.
    pub fn wipe_start(&self) -> Result<()> {
        let length = self.capacity.unwrap_or_else(|| {
            self.file
                .metadata()
                .map(|m| m.len())
                .unwrap_or(HOLDBACK as u64)
        });
        let zeros = vec![0u8; HOLDBACK.min(length as usize)];
        self.file
            .write_all_at(&zeros, 0)
            .and_then(|()| self.file.sync_all())
            .with_context(|| format!("zeroing the first MiB of {}", self.path.display()))
            .classify(Failure::Target)
    }

    /// Makes `[offset, offset + length)` read as zeros without writing zeros where the target
    /// can: BLKZEROOUT on a block device (the device zeroes the range; the kernel writes zero
    /// pages itself where the device cannot), a hole punched in a regular file (nothing to do
    /// past the end of a file that grows). Correctness never depends on what was there before.
    pub fn zero_range(&self, offset: u64, length: u64) -> io::Result<()> {
        if length == 0 {
            return Ok(());
        }
        let offloaded = match self.kind {
            Kind::BlockDevice if offset.is_multiple_of(512) && length.is_multiple_of(512) => {
                const BLKZEROOUT: rustix::ioctl::Opcode = rustix::ioctl::opcode::none(0x12, 127);
                // SAFETY: BLKZEROOUT reads a `u64[2]` (start, length) from the pointer, which
                // the Setter owns for the duration of the call; the fd is our open device.
                unsafe {
                    rustix::ioctl::ioctl(
                        &self.file,
                        rustix::ioctl::Setter::<BLKZEROOUT, [u64; 2]>::new([offset, length]),
                    )
                }
            }
            Kind::BlockDevice => Err(rustix::io::Errno::INVAL),
            // An empty file that grows: everything not written is a hole already.
            Kind::RegularFile if self.capacity.is_none() => Ok(()),
            Kind::RegularFile => rustix::fs::fallocate(
                &self.file,
                rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                offset,
                length,
            ),
        };
        match offloaded {
            Ok(()) => Ok(()),
            // No offload (odd alignment, file system without holes): write the zeros.
            Err(_) => self.write_zeros(offset, length),
        }
    }

    fn write_zeros(&self, offset: u64, length: u64) -> io::Result<()> {
        let zeros = vec![0u8; length.min(1 << 20) as usize];
        let mut done = 0;
        while done < length {
            let n = (length - done).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Writes `data` at `offset`: directly when the buffer, the offset and the length are
    /// aligned for it, else through the page cache.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let aligned = (data.as_ptr() as usize).is_multiple_of(self.alignment)
            && data.len().is_multiple_of(self.alignment)
            && offset.is_multiple_of(self.alignment as u64);
        if let Some(direct) = &self.direct
            && aligned
        {
            match direct.write_all_at(data, offset) {
                // A device or file system that refuses this direct write takes it buffered.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {}
                result => return result,
            }
        }
        self.file.write_all_at(data, offset)
    }

    /// The alignment at which writes go directly to the target.
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Gives a target that grows the image's length (holes at its end included).
    pub fn set_image_length(&self, length: u64) -> io::Result<()> {
        if self.kind == Kind::RegularFile && self.capacity.is_none() {
            self.file.set_len(length)?;
        }
        Ok(())
    }

    /// Flushes everything written to stable storage.
    pub fn sync(&self) -> Result<()> {
        self.direct
            .iter()
            .chain([&self.file])
            .try_for_each(File::sync_all)
            .with_context(|| format!("syncing {}", self.path.display()))
            .classify(Failure::Target)
    }

    /// Asks the kernel to re-read the partition table of a whole-disk block device.
    pub fn reread_partitions(&self) -> Result<()> {
        let Some((major, minor)) = self.device else {
            return Ok(());
        };
        if Path::new(&format!("/sys/dev/block/{major}:{minor}/partition")).exists() {
            return Ok(());
        }
        const BLKRRPART: rustix::ioctl::Opcode = rustix::ioctl::opcode::none(0x12, 95);
        // SAFETY: BLKRRPART takes no argument and reads or writes no memory of ours; the fd is
        // an open block device for the duration of the call.
        unsafe { rustix::ioctl::ioctl(&self.file, rustix::ioctl::NoArg::<BLKRRPART>::new()) }
            .map_err(io::Error::from)
            .with_context(|| format!("re-reading the partition table of {}", self.path.display()))
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

    /// Writes the held-back start of the image at offset 0, in `block_size` writes.
    pub fn put_start(&mut self, held: &[u8], block_size: usize) -> Result<(), BlockFailure> {
        for (i, block) in held.chunks(block_size).enumerate() {
            let offset = (i * block_size) as u64;
            self.touched = true;
            self.target
                .write_at(block, offset)
                .map_err(|error| BlockFailure {
                    error,
                    what: "writing to",
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
    held: AlignedBuffer,
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
            held: AlignedBuffer::with_capacity(HOLDBACK),
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
        io_error(
            Failure::Target,
            anyhow!(failure.error).context(format!(
                "{} {} at byte {}",
                failure.what,
                self.target.path.display(),
                failure.offset
            )),
        )
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
        self.blocks.flush().map_err(|f| self.io_failure(f))?;
        self.target
            .set_image_length(self.accepted)
            .with_context(|| format!("setting the length of {}", self.target.path.display()))
            .classify(Failure::Target)?;
        self.target.sync().context("flushing the image")?;
        self.blocks
            .put_start(&self.held, self.block_size)
            .map_err(|f| self.io_failure(f))?;
        self.progress.written(self.held.len() as u64);
        self.target
            .sync()
            .context("flushing the image's first MiB")?;
        Ok(self.accepted)
    }
}

impl Write for ImageWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.accepted + buf.len() as u64;
        if let Some(capacity) = self.target.capacity
            && end > capacity
        {
            return Err(io_error(
                Failure::Target,
                anyhow!(
                    "the image is larger than dd.of={} ({capacity} bytes); nothing was written past its end",
                    self.target.path.display()
                ),
            ));
        }
        let mut rest = buf;
        if self.held.len() < HOLDBACK {
            let take = (HOLDBACK - self.held.len()).min(rest.len());
            self.held.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        }
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

/// Refuses a block device that is mounted, used as swap, or held by another device, itself
/// or through one of its partitions.
fn check_not_in_use(path: &Path, device: (u32, u32)) -> Result<()> {
    let shown = path.display();
    let sys = PathBuf::from(format!("/sys/dev/block/{}:{}", device.0, device.1));
    let mut devices = vec![(device, path.display().to_string())];
    if let Ok(entries) = fs::read_dir(&sys) {
        for entry in entries.flatten() {
            let dir = entry.path();
            if !dir.join("partition").exists() {
                continue;
            }
            if let Some(dev) = read_attribute(&dir.join("dev")).and_then(|d| parse_dev(&d)) {
                let name = format!("/dev/{}", entry.file_name().to_string_lossy());
                devices.push((dev, name));
            }
        }
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(dev), Some(mount_point)) =
            (fields.get(2).and_then(|d| parse_dev(d)), fields.get(4))
        else {
            continue;
        };
        if let Some((_, name)) = devices.iter().find(|(d, _)| *d == dev) {
            fail!(
                Failure::Target,
                "dd.of={shown} is in use: {name} is mounted on {}",
                mount_point.replace("\\040", " ")
            );
        }
    }
    let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
    for swap in swaps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
    {
        let Ok(metadata) = fs::metadata(swap) else {
            continue;
        };
        let dev = (
            rustix::fs::major(metadata.rdev()),
            rustix::fs::minor(metadata.rdev()),
        );
        if metadata.file_type().is_block_device() && devices.iter().any(|(d, _)| *d == dev) {
            fail!(
                Failure::Target,
                "dd.of={shown} is in use: {swap} is swap space"
            );
        }
    }
    for ((major, minor), name) in &devices {
        let holders = PathBuf::from(format!("/sys/dev/block/{major}:{minor}/holders"));
        if let Some(holder) = fs::read_dir(holders)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok)
        {
            fail!(
                Failure::Target,
                "dd.of={shown} is in use: {name} is held by {} (device-mapper, LVM or RAID)",
                holder.file_name().to_string_lossy()
            );
        }
    }
    Ok(())
}

fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn read_attribute(path: &Path) -> Option<String> {
    let value = fs::read_to_string(path).ok()?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// A disk the operator can choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    pub size: u64,
    pub model: Option<String>,
    pub serial: Option<String>,
}

impl Disk {
    /// One line: path, size, and model and serial where known.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} ({}",
            self.path.display(),
            indicatif::HumanBytes(self.size)
        );
        if let Some(model) = &self.model {
            line.push_str(&format!(", {model}"));
        }
        if let Some(serial) = &self.serial {
            line.push_str(&format!(", serial {serial}"));
        }
        line.push(')');
        line
    }
}

/// The machine's disks, from /sys/block: whole disks with a size, without loop, RAM,
/// optical and virtual devices.
pub fn list_disks() -> Vec<Disk> {
    list_disks_in(Path::new("/sys/block"))
}

fn list_disks_in(sys_block: &Path) -> Vec<Disk> {
    const SKIP: &[&str] = &["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"];
    let Ok(entries) = fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut disks: Vec<Disk> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            if SKIP.iter().any(|p| name.starts_with(p)) {
                return None;
            }
            let dir = entry.path();
            let sectors: u64 = read_attribute(&dir.join("size"))?.parse().ok()?;
            if sectors == 0 {
                return None;
            }
            let serial = read_attribute(&dir.join("device/serial"))
                .or_else(|| read_attribute(&dir.join("serial")))
                .or_else(|| read_attribute(&dir.join("device/wwid")));
            Some(Disk {
                path: PathBuf::from("/dev").join(&name),
                size: sectors * 512,
                model: read_attribute(&dir.join("device/model")),
                serial,
            })
        })
        .collect();
    disks.sort_by(|a, b| a.path.cmp(&b.path));
    disks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

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
        assert_eq!(target.capacity, None);
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
        assert!(e.to_string().contains("larger than dd.of="), "{e}");
        assert!(target.check_fits((2 << 20) + 1).is_err());
        target.wipe_start().unwrap();
        assert!(contents(file.path())[..HOLDBACK].iter().all(|&b| b == 0));
    }

    #[test]
    fn refuses_missing_and_odd_targets() {
        let e = Target::open(Path::new("/dev/ocidd-no-such-disk")).unwrap_err();
        assert_eq!(crate::error::failure_of(&e), Some(Failure::Target));
        assert!(format!("{e:#}").contains("does not exist"));
        assert!(!Path::new("/dev/ocidd-no-such-disk").exists());
        let e = Target::open(Path::new("/dev/null")).unwrap_err();
        assert!(format!("{e:#}").contains("neither a block device"));
        let dir = tempfile::tempdir().unwrap();
        assert!(Target::open(dir.path()).is_err());
    }

    #[test]
    fn lists_disks_from_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        let disk = |name: &str, sectors: &str, model: Option<&str>| {
            let dir = sys.path().join(name);
            fs::create_dir_all(dir.join("device")).unwrap();
            fs::write(dir.join("size"), sectors).unwrap();
            if let Some(model) = model {
                fs::write(dir.join("device/model"), format!("{model}  \n")).unwrap();
            }
        };
        disk("sda", "2048\n", Some("QEMU HARDDISK"));
        disk("vda", "4096\n", None);
        fs::write(sys.path().join("vda/serial"), "abc123\n").unwrap();
        disk("loop0", "2048\n", None);
        disk("sr0", "0\n", None);
        let disks = list_disks_in(sys.path());
        assert_eq!(disks.len(), 2);
        assert_eq!(disks[0].path, PathBuf::from("/dev/sda"));
        assert_eq!(disks[0].size, 1 << 20);
        assert_eq!(disks[0].model.as_deref(), Some("QEMU HARDDISK"));
        assert_eq!(disks[1].serial.as_deref(), Some("abc123"));
        assert_eq!(disks[0].summary(), "/dev/sda (1.00 MiB, QEMU HARDDISK)");
        assert_eq!(disks[1].summary(), "/dev/vda (2.00 MiB, serial abc123)");
    }
}
