//! Progress of an install: counters the byte stream bumps, and a reporter thread that shows
//! them as a bar on a terminal or as a plain line every few seconds on a serial console.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::say;
use crate::sync::{Unpoisoned, UnpoisonedWait};
use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Counters shared by the stages of the stream.
#[derive(Debug)]
pub struct Progress {
    fetched: AtomicU64,
    written: AtomicU64,
    /// The compressed size to fetch; 0 when unknown.
    total: AtomicU64,
    started: Instant,
    /// What `dd.delta` found on the target, once its read pass is done.
    delta: Mutex<Option<DeltaCounts>>,
    /// `dd.delta`'s read pass: bytes of the target checked, of how many (0: not under way).
    checked: AtomicU64,
    to_check: AtomicU64,
}

/// What `dd.delta` does with the image's chunks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeltaCounts {
    /// Chunks in the image.
    pub total: u64,
    /// Chunks the target held already: neither fetched nor written.
    pub reused: u64,
    /// Their bytes.
    pub reused_bytes: u64,
    /// Chunks fetched and written.
    pub fetched: u64,
    /// Zero chunks zeroed on the target (it held something else there).
    pub zeroed: u64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            fetched: AtomicU64::new(0),
            written: AtomicU64::new(0),
            total: AtomicU64::new(0),
            started: Instant::now(),
            delta: Mutex::new(None),
            checked: AtomicU64::new(0),
            to_check: AtomicU64::new(0),
        }
    }
}

impl Progress {
    pub fn fetched(&self, n: u64) {
        self.fetched.fetch_add(n, Ordering::Relaxed);
    }

    pub fn written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    /// How many bytes there are to fetch, if known.
    pub fn total(&self) -> Option<u64> {
        Some(self.total.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    pub fn set_total(&self, total: Option<u64>) {
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
    }

    /// `dd.delta`'s read pass starts over `bytes` of the target (0: it ended).
    pub fn checking(&self, bytes: u64) {
        self.to_check.store(bytes, Ordering::Relaxed);
    }

    pub fn checked(&self, bytes: u64) {
        self.checked.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn set_delta(&self, counts: DeltaCounts) {
        *self.delta.lock_unpoisoned() = Some(counts);
    }

    /// What `dd.delta` found, if it ran.
    pub fn delta(&self) -> Option<DeltaCounts> {
        *self.delta.lock_unpoisoned()
    }

    pub fn fetched_bytes(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    pub fn written_bytes(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// One plain line: what was fetched and written, the rate and the time left (or, during
    /// `dd.delta`'s read pass, how much of the target was checked).
    pub fn summary(&self) -> String {
        let to_check = self.to_check.load(Ordering::Relaxed);
        if to_check > 0 {
            let checked = self.checked.load(Ordering::Relaxed);
            return format!(
                "dd.delta: checked {} of {} on the target ({}%)",
                HumanBytes(checked),
                HumanBytes(to_check),
                checked.saturating_mul(100) / to_check
            );
        }
        let fetched = self.fetched_bytes();
        let total = self.total.load(Ordering::Relaxed);
        let seconds = self.elapsed().as_secs_f64().max(0.001);
        let rate = fetched as f64 / seconds;
        let mut line = format!("fetched {}", HumanBytes(fetched));
        if total > 0 {
            line += &format!(
                " of {} ({}%)",
                HumanBytes(total),
                fetched.saturating_mul(100) / total
            );
        }
        line += &format!(
            " at {}/s, wrote {}",
            HumanBytes(rate as u64),
            HumanBytes(self.written_bytes())
        );
        if total > 0 && rate > 0.0 && fetched < total {
            let left = Duration::from_secs_f64((total - fetched) as f64 / rate);
            line += &format!(", {} left", HumanDuration(left));
        }
        line
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// An updating bar, for a terminal.
    Bar,
    /// A line at this interval, for logs and serial consoles.
    Lines(Duration),
}

/// The thread that shows progress until it is stopped.
pub struct Reporter {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Reporter {
    pub fn start(progress: Arc<Progress>, display: Display) -> Reporter {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop_flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("progress".into())
            .spawn(move || report(&progress, display, &stop_flag))
            .ok();
        Reporter { stop, thread }
    }

    /// Stops the reporter and clears its bar.
    pub fn finish(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock_unpoisoned() = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn report(progress: &Progress, display: Display, stop: &(Mutex<bool>, Condvar)) {
    let (interval, bar) = match display {
        Display::Bar => {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} fetched {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            (Duration::from_millis(200), Some(bar))
        }
        Display::Lines(interval) => (interval, None),
    };
    let (lock, wake) = stop;
    let mut stopped = lock.lock_unpoisoned();
    loop {
        let (guard, _) = wake.wait_timeout_unpoisoned(stopped, interval);
        stopped = guard;
        if *stopped {
            break;
        }
        match &bar {
            Some(bar) => {
                let total = progress.total.load(Ordering::Relaxed);
                if total > 0 {
                    bar.set_length(total);
                }
                bar.set_position(progress.fetched_bytes());
                bar.set_message(format!("wrote {}", HumanBytes(progress.written_bytes())));
            }
            None => say!("ocidd: {}", progress.summary()),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_reports_counts_and_share() {
        let p = Progress::default();
        p.set_total(Some(4 << 20));
        p.fetched(1 << 20);
        p.written(3 << 20);
        let line = p.summary();
        assert!(
            line.starts_with("fetched 1.00 MiB of 4.00 MiB (25%) at "),
            "{line}"
        );
        p.checking(8 << 20);
        p.checked(2 << 20);
        assert_eq!(
            p.summary(),
            "dd.delta: checked 2.00 MiB of 8.00 MiB on the target (25%)"
        );
        p.checking(0);
        assert!(p.summary().starts_with("fetched 1.00 MiB"));
        assert!(line.contains("wrote 3.00 MiB"), "{line}");
        assert!(line.contains("left"), "{line}");
    }
}
