//! Every console the kernel was given. With `console=ttyS0 console=tty0` the kernel prints to
//! both, but init's /dev/console is only the last one named: an operator on the serial line
//! (a BMC's serial-over-LAN) would see the kernel's messages and none of ours. So as init,
//! ocidd copies what it writes (stdout and stderr) to every active console; input, and the
//! emergency shell, stay on /dev/console.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Copies stdout and stderr to each console; dropping it does not stop the copying (init
/// never ends), [`Mirror::drain`] waits for what was written to be out.
pub struct Mirror {
    pipe: OwnedFd,
    busy: Arc<AtomicBool>,
    /// /dev/console as it was, for the shell.
    console: OwnedFd,
}

/// The active consoles, as the kernel lists them in /sys/class/tty/console/active
/// (`tty0 ttyS0`).
pub fn active_consoles(listed: &str) -> Vec<String> {
    listed
        .split_whitespace()
        .filter(|name| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        })
        .map(String::from)
        .collect()
}

impl Mirror {
    /// When the kernel has more than one console: points stdout and stderr at a pipe whose
    /// reader writes to each of them. `None` (and nothing changed) with one console.
    pub fn start() -> Result<Option<Mirror>> {
        let listed = std::fs::read_to_string("/sys/class/tty/console/active")
            .context("reading /sys/class/tty/console/active")?;
        let outputs: Vec<File> = active_consoles(&listed)
            .iter()
            .filter_map(|name| {
                // Non-blocking: a console that stops taking output (Scroll Lock on a screen,
                // a serial line held by flow control) must not stall the install.
                OpenOptions::new()
                    .write(true)
                    .custom_flags(
                        (rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::NONBLOCK).bits() as i32,
                    )
                    .open(format!("/dev/{name}"))
                    .ok()
            })
            .collect();
        if outputs.len() < 2 {
            return Ok(None);
        }
        let console = rustix::io::dup(std::io::stderr().as_fd()).context("keeping the console")?;
        let (reader, writer) = rustix::pipe::pipe().context("making the console pipe")?;
        let busy = Arc::new(AtomicBool::new(false));
        let pipe = rustix::io::dup(&reader).context("keeping the console pipe")?;
        let copying = Arc::clone(&busy);
        thread::Builder::new()
            .name("consoles".into())
            .spawn(move || copy_to_consoles(File::from(reader), outputs, &copying))
            .context("starting the console copier")?;
        // Everything this process and its children write from here on goes to the pipe.
        rustix::stdio::dup2_stdout(&writer).context("redirecting stdout")?;
        rustix::stdio::dup2_stderr(&writer).context("redirecting stderr")?;
        drop(writer);
        Ok(Some(Mirror {
            pipe,
            busy,
            console,
        }))
    }

    /// /dev/console as it was before the copying began: the emergency shell's terminal.
    pub fn console(&self) -> &OwnedFd {
        &self.console
    }

    /// Waits (up to 2 s) until everything written so far reached the consoles: before a
    /// reboot.
    pub fn drain(&self) {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        let deadline = Instant::now() + Duration::from_secs(2);
        // Idle twice in a row: the copier may have just taken the last bytes from the pipe
        // and not yet said it is busy.
        let mut idle = 0;
        while idle < 2 && Instant::now() < deadline {
            let pending = rustix::io::ioctl_fionread(&self.pipe).unwrap_or(0);
            if pending == 0 && !self.busy.load(Ordering::Acquire) {
                idle += 1;
            } else {
                idle = 0;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn copy_to_consoles(mut reader: File, mut outputs: Vec<File>, busy: &AtomicBool) {
    let mut buffer = [0u8; 4096];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        busy.store(true, Ordering::Release);
        // A console that fails is left out from then on; the others go on.
        outputs.retain_mut(|console| write_or_give_up(console, &buffer[..n]).is_ok());
        busy.store(false, Ordering::Release);
    }
}

/// How long a console may keep us waiting for room before what we had for it is dropped.
const CONSOLE_PATIENCE: Duration = Duration::from_secs(2);

/// Writes `data` to a non-blocking console, waiting while it is full, but no longer than
/// [`CONSOLE_PATIENCE`] in all: a stuck console loses text instead of stalling everything.
fn write_or_give_up(console: &mut File, mut data: &[u8]) -> std::io::Result<()> {
    let deadline = Instant::now() + CONSOLE_PATIENCE;
    while !data.is_empty() {
        match console.write(data) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(());
                }
                let timeout =
                    rustix::event::Timespec::try_from(left.min(Duration::from_millis(100)))
                        .unwrap_or(rustix::event::Timespec {
                            tv_sec: 0,
                            tv_nsec: 100_000_000,
                        });
                let mut fds = [rustix::event::PollFd::new(
                    console,
                    rustix::event::PollFlags::OUT,
                )];
                let _ = rustix::event::poll(&mut fds, Some(&timeout));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_console_loses_text_instead_of_stalling() {
        // A pipe nobody reads stands for a console that stopped taking output.
        let (unread, writer) = rustix::pipe::pipe().unwrap();
        rustix::fs::fcntl_setfl(&writer, rustix::fs::OFlags::NONBLOCK).unwrap();
        let mut console = File::from(writer);
        let started = Instant::now();
        let data = vec![b'x'; 1 << 20];
        write_or_give_up(&mut console, &data).unwrap();
        // It returned though nobody reads the pipe, after waiting its patience out, and what
        // did not fit was dropped.
        let waited = started.elapsed();
        assert!(waited >= CONSOLE_PATIENCE, "{waited:?}");
        let held = rustix::io::ioctl_fionread(&unread).unwrap() as usize;
        assert!(held > 0 && held < data.len(), "{held}");
        // A console that takes everything gets everything.
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        write_or_give_up(&mut File::from(writer), b"line\n").unwrap();
        let mut got = String::new();
        File::from(reader).read_to_string(&mut got).unwrap();
        assert_eq!(got, "line\n");
    }

    #[test]
    fn reads_the_kernels_console_list() {
        assert_eq!(active_consoles("tty0 ttyS0\n"), ["tty0", "ttyS0"]);
        assert_eq!(active_consoles("ttyAMA0\n"), ["ttyAMA0"]);
        assert_eq!(active_consoles("hvc0 ../x ttyS1"), ["hvc0", "ttyS1"]);
        assert!(active_consoles("").is_empty());
    }
}
