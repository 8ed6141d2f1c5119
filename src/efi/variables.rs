//! UEFI variables through efivarfs (`/sys/firmware/efi/efivars`), as the kernel's
//! Documentation/filesystems/efivarfs.rst describes it: a file per variable, named
//! `NAME-GUID`, holding the 4-byte attributes and then the value. The kernel makes the
//! files of the variables it knows (`Boot####`, `BootOrder`) immutable, so that a stray `rm`
//! cannot brick a machine: the flag is cleared right before a change.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rustix::fs::IFlags;

/// EFI_GLOBAL_VARIABLE: the vendor GUID of `Boot####`, `BootOrder` and `BootNext`.
const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// Non-volatile, boot-services and runtime access: what boot entries are stored with.
const ATTRIBUTES: u32 = 0x7;
/// Where the kernel mounts it.
pub const EFIVARFS: &str = "/sys/firmware/efi/efivars";

/// The global variables of a machine (or of a directory laid out as efivarfs, in tests).
pub struct Variables {
    root: PathBuf,
}

impl Variables {
    pub fn at(root: &Path) -> Variables {
        Variables {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}-{GLOBAL}"))
    }

    /// The value of `name`, without its attributes; `None` where it does not exist.
    pub fn get(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(name)) {
            Ok(bytes) if bytes.len() >= 4 => Ok(Some(bytes[4..].to_vec())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(naming(name, "reading", e)),
        }
    }

    /// Whether the firmware booted with Secure Boot on (`SecureBoot` is 1).
    pub fn secure_boot(&self) -> bool {
        matches!(self.get("SecureBoot"), Ok(Some(value)) if value.first() == Some(&1))
    }

    /// Sets `name` to `value`. The attributes and the value go in one write, as efivarfs
    /// wants: it hands each write to the firmware as one SetVariable.
    pub fn set(&self, name: &str, value: &[u8]) -> io::Result<()> {
        self.try_set(name, value)
            .map_err(|e| naming(name, "writing", e))
    }

    fn try_set(&self, name: &str, value: &[u8]) -> io::Result<()> {
        let path = self.path(name);
        make_mutable(&path)?;
        let mut bytes = ATTRIBUTES.to_le_bytes().to_vec();
        bytes.extend_from_slice(value);
        // No O_TRUNC: efivarfs replaces the whole variable on each write, and has no length
        // to truncate.
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let written = file.write(&bytes)?;
        if written != bytes.len() {
            return Err(io::Error::other(format!(
                "the firmware took {written} of {} bytes",
                bytes.len()
            )));
        }
        // efivarfs says the new size; a plain directory (the tests') keeps the old tail.
        if file.metadata()?.len() > bytes.len() as u64 {
            file.set_len(bytes.len() as u64)?;
        }
        Ok(())
    }

    /// Deletes `name`; nothing when it does not exist.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let path = self.path(name);
        let removed = make_mutable(&path).and_then(|()| match fs::remove_file(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        });
        removed.map_err(|e| naming(name, "removing", e))
    }

    /// The numbers of the `Boot####` variables there are, in order.
    pub fn boot_entries(&self) -> io::Result<Vec<u16>> {
        let suffix = format!("-{GLOBAL}");
        let mut numbers: Vec<u16> = fs::read_dir(&self.root)?
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let hex = name.strip_suffix(&suffix)?.strip_prefix("Boot")?;
                let digits = hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit());
                digits.then(|| u16::from_str_radix(hex, 16).ok()).flatten()
            })
            .collect();
        numbers.sort_unstable();
        Ok(numbers)
    }
}

/// `e`, saying which variable and what was being done to it.
fn naming(name: &str, doing: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {name}: {e}"))
}

/// The name of boot entry `number`: `Boot0003`.
pub fn boot_name(number: u16) -> String {
    format!("Boot{number:04X}")
}

/// Clears the immutable flag of the variable at `path`, where it exists and has one. A file
/// system without flags (a test's directory) has nothing to clear.
fn make_mutable(path: &Path) -> io::Result<()> {
    clear_immutable(path)
        .map_err(|e| io::Error::new(e.kind(), format!("clearing its immutable flag: {e}")))
}

fn clear_immutable(path: &Path) -> io::Result<()> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let flags = match rustix::fs::ioctl_getflags(&file) {
        Ok(flags) => flags,
        Err(rustix::io::Errno::NOTTY | rustix::io::Errno::OPNOTSUPP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if flags.contains(IFlags::IMMUTABLE) {
        rustix::fs::ioctl_setflags(&file, flags - IFlags::IMMUTABLE)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_stored_after_their_attributes_and_listed_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let vars = Variables::at(dir.path());
        vars.set("Boot0003", b"three").unwrap();
        vars.set("Boot000A", b"ten").unwrap();
        vars.set("BootOrder", &[3, 0, 10, 0, 4, 0]).unwrap();
        vars.set("BootOrder", &[3, 0, 10, 0]).unwrap();
        fs::write(dir.path().join("Boot0004-other-vendor"), b"x").unwrap();
        assert_eq!(
            fs::read(dir.path().join(format!("Boot0003-{GLOBAL}"))).unwrap(),
            b"\x07\0\0\0three"
        );
        assert_eq!(vars.get("Boot000A").unwrap().unwrap(), b"ten");
        assert_eq!(vars.get("BootOrder").unwrap().unwrap(), [3, 0, 10, 0]);
        assert_eq!(vars.boot_entries().unwrap(), vec![3, 10]);
        vars.remove("Boot0003").unwrap();
        vars.remove("Boot0003").unwrap();
        assert_eq!(vars.get("Boot0003").unwrap(), None);
        assert_eq!(boot_name(10), "Boot000A");
    }
}
