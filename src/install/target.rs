//! The target: opening and checking it (it exists, it is not in use, the image fits), the
//! primitives the writer uses (aligned direct writes, zeroing ranges, flushing), wiping its
//! start when an install fails, and listing the machine's disks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

use super::interrupt;
use super::writer::HOLDBACK;
use crate::error::{Classify, Failure};
use crate::fail;
use crate::sync::Unpoisoned;

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
    /// Whether the old partition tables were cleared, which happens once, right before the
    /// first write.
    cleared: Mutex<bool>,
}

impl Target {
    /// Opens `path` for writing after checking that it exists, is a block device or a regular
    /// file, and is not in use (mounted, swap, or held by device-mapper/RAID).
    pub fn open(path: &Path) -> Result<Target> {
        let shown = path.display();
        let metadata = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fail!(Failure::Target, "the target {shown} does not exist")
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("the target {shown}"))
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
                "the target {shown} is neither a block device nor a regular file"
            )
        };
        let device = (kind == Kind::BlockDevice).then(|| {
            let rdev = metadata.rdev();
            (rustix::fs::major(rdev), rustix::fs::minor(rdev))
        });
        match device {
            Some(device) => check_not_in_use(path, device)?,
            None => check_not_a_loop_backing_file(path)?,
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
                    "the target {shown} is in use by the system (busy)"
                )
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("opening the target {shown} for writing"))
                    .classify(Failure::Target);
            }
        };
        if kind == Kind::RegularFile {
            // Two installs onto one file would each verify their stream and leave a mix: the
            // second one is refused while the first holds the lock (until it exits).
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => fail!(
                    Failure::Target,
                    "the target {shown} is in use: another process holds its lock (another install?)"
                ),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("locking the target {shown}"))
                        .classify(Failure::Target);
                }
            }
        }
        let size = file
            .seek(SeekFrom::End(0))
            .with_context(|| format!("finding the size of the target {shown}"))
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
        interrupt::opened(&shown.to_string());
        Ok(Target {
            path: path.to_path_buf(),
            file,
            direct,
            alignment,
            kind,
            capacity,
            device,
            cleared: Mutex::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many bytes fit; `None` for an empty regular file, which grows to the image.
    pub fn capacity(&self) -> Option<u64> {
        self.capacity
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

    pub fn is_block_device(&self) -> bool {
        matches!(self.kind, Kind::BlockDevice)
    }

    /// The size of the target's logical blocks: the sector size of a GPT on it.
    pub fn sector_size(&self) -> usize {
        match self.kind {
            Kind::BlockDevice => self.alignment,
            Kind::RegularFile => 512,
        }
    }

    /// Refuses an image that is known not to fit: larger than the target, or, for a file
    /// that grows, than the room left on its file system.
    pub fn check_fits(&self, image_size: u64, data_bytes: Option<u64>) -> Result<()> {
        match (self.capacity, data_bytes) {
            (Some(capacity), _) if image_size > capacity => fail!(
                Failure::Target,
                "the image ({image_size} bytes) is larger than the target {} ({capacity} bytes)",
                self.path.display()
            ),
            (Some(_), _) => Ok(()),
            // A file that grows: zero runs stay holes, so what it needs is the image's data,
            // known from a chunk index; without one, a full file system shows when writing.
            (None, None) => Ok(()),
            (None, Some(needed)) => {
                let stats = rustix::fs::fstatvfs(&self.file)
                    .with_context(|| format!("reading the free space of {}", self.path.display()))
                    .classify(Failure::Target)?;
                let free = stats.f_bavail.saturating_mul(stats.f_frsize);
                if needed > free {
                    fail!(
                        Failure::Target,
                        "the image's data ({needed} bytes outside its zero chunks) does not fit on the file system of the target {} ({free} bytes free)",
                        self.path.display()
                    );
                }
                Ok(())
            }
        }
    }

    /// Zeroes the target's first and last [`HOLDBACK`] bytes, where partition tables are (a
    /// GPT's backup and RAID superblocks sit at the end), and flushes: once writing began,
    /// neither the old tables nor half of the new ones may remain for firmware to boot or
    /// restore. A file that grew from empty has none.
    fn clear_tables(&self) -> io::Result<()> {
        let Some(length) = self.capacity else {
            return Ok(());
        };
        let span = (HOLDBACK as u64).min(length);
        self.write_zeros(0, span)?;
        self.write_zeros(length - span, span)?;
        self.file.sync_all()
    }

    /// Clears the old tables (the first and last MiB), once, before the first write;
    /// every write and zeroing calls it.
    pub fn begin_writing(&self) -> io::Result<()> {
        let mut cleared = self.cleared.lock_unpoisoned();
        if !*cleared {
            let _tables = interrupt::changing_tables();
            self.clear_tables()?;
            interrupt::writing(&self.path.display().to_string());
            *cleared = true;
        }
        Ok(())
    }

    /// After a failed install: leaves the target without partition tables, so that nothing
    /// boots a partial image; a file that grew from empty is emptied again. Returns what the
    /// target now holds, for the operator.
    pub fn wipe(&self) -> Result<&'static str> {
        let (result, holds) = match self.capacity {
            None => (
                self.file.set_len(0).and_then(|()| self.file.sync_all()),
                "is empty again",
            ),
            Some(_) => (
                self.clear_tables(),
                "has no partition table (its first and last MiB are zeroed)",
            ),
        };
        result
            .map(|()| holds)
            .with_context(|| format!("wiping the partition tables of {}", self.path.display()))
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
        self.begin_writing()?;
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

    /// Reads what the target holds at `offset` into `buf`: as much as there is (a file may end
    /// sooner). Returns how much was read.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Writes `data` at `offset`: directly when the buffer, the offset and the length are
    /// aligned for it, else through the page cache.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.begin_writing()?;
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
        match unsafe { rustix::ioctl::ioctl(&self.file, rustix::ioctl::NoArg::<BLKRRPART>::new()) }
        {
            // A disk that takes no partitions (a loop device without partition scanning)
            // has none to re-read.
            Ok(()) | Err(rustix::io::Errno::INVAL) => Ok(()),
            Err(e) => Err(io::Error::from(e)).with_context(|| {
                format!("re-reading the partition table of {}", self.path.display())
            }),
        }
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
                "the target {shown} is in use: {name} is mounted on {}",
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
                "the target {shown} is in use: {swap} is swap space"
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
                "the target {shown} is in use: {name} is held by {} (device-mapper, LVM or RAID)",
                holder.file_name().to_string_lossy()
            );
        }
    }
    Ok(())
}

/// Refuses a regular file that backs a loop device: writing it under the device's feet is
/// writing a disk in use.
fn check_not_a_loop_backing_file(path: &Path) -> Result<()> {
    let Ok(target) = fs::canonicalize(path) else {
        return Ok(());
    };
    let Ok(devices) = fs::read_dir("/sys/block") else {
        return Ok(());
    };
    for device in devices.flatten() {
        let Some(backing) = read_attribute(&device.path().join("loop/backing_file")) else {
            continue;
        };
        if Path::new(&backing) == target {
            fail!(
                Failure::Target,
                "the target {} is in use: it backs /dev/{}",
                path.display(),
                device.file_name().to_string_lossy()
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
