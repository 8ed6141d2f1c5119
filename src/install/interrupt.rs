//! SIGTERM, SIGINT (Ctrl-C) and SIGHUP during an install: stop, say what happened and what
//! the target holds, and exit with 128 + the signal's number.
//!
//! The target needs no repair at that moment: once the first byte was written its old tables
//! are cleared and the new ones are held back (see `writer::Held`), so it holds either what it
//! held before or no partition table at all. Only the clearing of the old tables, and the
//! commit that writes the held parts after the image verified, are let finish first.

use std::sync::{Mutex, MutexGuard, Once};
use std::thread;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::say;
use crate::sync::Unpoisoned;

/// How far the install got with its target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// No target opened yet.
    Starting,
    /// The target is open; nothing was written.
    Opened(String),
    /// Writing began: the old tables are gone, the new ones are held back.
    Writing(String),
    /// The held parts were written: the target holds the verified image.
    Committed(String),
}

static PHASE: Mutex<Phase> = Mutex::new(Phase::Starting);
/// Held while the target's tables change (cleared before the first write, written by the
/// commit), so that a signal waits for that to end.
static TABLES: Mutex<()> = Mutex::new(());
static WATCH: Once = Once::new();

fn set(phase: Phase) {
    *PHASE.lock_unpoisoned() = phase;
}

/// The target `path` is open.
pub fn opened(path: &str) {
    set(Phase::Opened(path.to_string()));
}

/// Writing to `path` began.
pub fn writing(path: &str) {
    set(Phase::Writing(path.to_string()));
}

/// Holds off the signals' exit until the returned guard is dropped: while the old tables are
/// cleared, and while the held parts of the image are written.
pub fn changing_tables() -> MutexGuard<'static, ()> {
    TABLES.lock_unpoisoned()
}

/// The verified image is on `path`.
pub fn committed(path: &str) {
    set(Phase::Committed(path.to_string()));
}

/// Starts listening for the signals (once per process; not as PID 1, which must never
/// exit). Without this, the signals end the process as they always do, which the target
/// survives too.
pub fn watch() {
    WATCH.call_once(|| {
        let Ok(mut signals) = Signals::new([SIGTERM, SIGINT, SIGHUP]) else {
            return;
        };
        let _ = thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    stop(signal);
                }
            });
    });
}

fn stop(signal: i32) -> ! {
    let name = match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    };
    let _tables = changing_tables();
    let phase = PHASE.lock_unpoisoned().clone();
    let message = format!("stopped by {name}; {}", holds(&phase));
    say!("ocidd: error: {message}");
    crate::report::interrupted(128 + signal, &message);
    std::process::exit(128 + signal)
}

/// What the target holds in `phase`, for the operator.
fn holds(phase: &Phase) -> String {
    match phase {
        Phase::Starting => "no target was opened; nothing was written".to_string(),
        Phase::Opened(path) => format!("nothing was written to {path}"),
        Phase::Writing(path) => format!(
            "{path} holds a partial image and no partition table (its first and last MiB are zeroed), so it cannot boot"
        ),
        Phase::Committed(path) => format!("{path} holds the installed and verified image"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_says_what_the_target_holds() {
        assert!(holds(&Phase::Opened("/dev/sda".into())).contains("nothing was written"));
        assert!(holds(&Phase::Writing("/dev/sda".into())).contains("no partition table"));
        assert!(holds(&Phase::Committed("/dev/sda".into())).contains("verified image"));
    }
}
