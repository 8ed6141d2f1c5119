//! Status reports for the provisioning system that drives the install (`ocidd.report=URL`):
//! one JSON event ([`event`]) when each phase starts and finishes, progress while writing,
//! POSTed in the background ([`sender`]); or printed as JSON lines (`ocidd install --json`).

pub mod event;
pub mod sender;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use reqwest::header::HeaderValue;

use crate::cmdline::{RegistryOptions, ReportOptions};
use crate::error::{Classify, Failure, failure_of};
use crate::fail;
use crate::output;
use crate::progress::Progress;
use crate::registry::client::client_builder;
use crate::sync::{Unpoisoned, UnpoisonedWait};
use event::{Disk, Event, EventType, Image, Node, Outcome, Phase, timestamp};
use sender::Sender;

/// How long a POST may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the end of the install waits for the last events to be delivered.
pub const FINISH_GRACE: Duration = Duration::from_secs(3);
/// How long a signal's exit waits for its event.
const SIGNAL_GRACE: Duration = Duration::from_secs(2);

/// The install's reports; does nothing when none were asked for.
pub struct Report {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    senders: Vec<Sender>,
    json_lines: bool,
    interval: Duration,
    state: Mutex<State>,
    /// Wakes the progress thread early when the write phase ends.
    write_ended: std::sync::Condvar,
}

struct State {
    node: Node,
    image: Image,
    disk: Disk,
    progress: Option<Arc<Progress>>,
    bytes_total: Option<u64>,
    /// The phase under way, and what it is doing.
    current: Option<(Phase, String)>,
    /// A finish event was sent for the install's outcome: nothing more is said.
    ended: bool,
}

/// The report of the install under way, for the signal handler's last words.
static ACTIVE: Mutex<Option<Weak<Inner>>> = Mutex::new(None);

impl Report {
    /// Sets up the receivers `options` name (their HTTPS trusts `registry`'s CA, and goes
    /// through its proxy).
    pub fn new(options: &ReportOptions, registry: &RegistryOptions) -> Result<Report> {
        if options.urls.is_empty() && !options.json_lines {
            return Ok(Report { inner: None });
        }
        let token = options.token.as_deref().map(read_token).transpose()?;
        for url in &options.urls {
            check_credentials(url, token.is_some(), registry.allow_no_tls)?;
        }
        let mut senders = Vec::with_capacity(options.urls.len());
        if !options.urls.is_empty() {
            let client = client_builder(registry, CONNECT_TIMEOUT)?
                .timeout(REQUEST_TIMEOUT)
                // A receiver's scheme is the operator's choice, whatever the registry's.
                .https_only(false)
                .build()
                .context("setting up HTTP client")
                .classify(Failure::Usage)?;
            for url in &options.urls {
                senders.push(Sender::start(url.clone(), client.clone(), token.clone()));
            }
        }
        let inner = Arc::new(Inner {
            senders,
            json_lines: options.json_lines,
            interval: options.interval(),
            state: Mutex::new(State {
                node: Node::this_machine(),
                image: Image::default(),
                disk: Disk::default(),
                progress: None,
                bytes_total: None,
                current: None,
                ended: false,
            }),
            write_ended: std::sync::Condvar::new(),
        });
        *ACTIVE.lock_unpoisoned() = Some(Arc::downgrade(&inner));
        Ok(Report { inner: Some(inner) })
    }

    /// A report that says nothing.
    pub fn none() -> Report {
        Report { inner: None }
    }

    /// The image: its reference, the manifest digest it resolved to, its blob's digest.
    pub fn set_image(&self, reference: &str, digest: Option<&str>, blob: Option<&str>) {
        if let Some(inner) = &self.inner {
            let mut state = inner.lock();
            state.image.reference = Some(reference.to_string());
            state.image.digest = digest.map(str::to_string);
            state.image.blob = blob.map(str::to_string);
        }
    }

    pub fn set_disk(&self, path: &Path, serial: Option<&str>, size: Option<u64>) {
        if let Some(inner) = &self.inner {
            let mut state = inner.lock();
            state.disk = Disk {
                path: Some(path.display().to_string()),
                serial: serial.map(str::to_string),
                size,
            };
        }
    }

    /// Where the byte counts come from, and how many compressed bytes there are to fetch.
    pub fn track(&self, progress: &Arc<Progress>, bytes_total: Option<u64>) {
        if let Some(inner) = &self.inner {
            let mut state = inner.lock();
            state.progress = Some(Arc::clone(progress));
            state.bytes_total = bytes_total;
        }
    }

    /// A phase starts; while writing, progress goes out every interval.
    pub fn start(&self, phase: Phase, description: String) {
        let Some(inner) = &self.inner else { return };
        inner.lock().current = Some((phase, description.clone()));
        inner.emit(EventType::Start, phase, description, None, None);
        if phase == Phase::Write {
            let weak = Arc::downgrade(inner);
            let _ = thread::Builder::new()
                .name("report-progress".into())
                .spawn(move || progress_loop(&weak));
        }
    }

    /// The phase under way succeeded.
    pub fn succeed(&self, phase: Phase, description: String) {
        let Some(inner) = &self.inner else { return };
        inner.lock().current = None;
        inner.write_ended.notify_all();
        inner.emit(
            EventType::Finish,
            phase,
            description,
            Some((Outcome::Success, 0)),
            None,
        );
    }

    /// The install failed with `error` in the phase under way (or, before any, in the first).
    pub fn fail(&self, error: &anyhow::Error) {
        let Some(inner) = &self.inner else { return };
        let failure = failure_of(error);
        let code = failure.map_or(1, |f| i32::from(f.exit_code()));
        // The blob is verified while it is written: a mismatch is the verify phase's failure.
        let verifying = failure == Some(Failure::Verification);
        inner.fail(code, format!("{error:#}"), verifying);
    }

    /// Waits a few seconds at most for the events to reach the receivers.
    pub fn close(self) {
        let Some(inner) = self.inner else { return };
        inner.close(Instant::now() + FINISH_GRACE);
    }
}

/// The install is being stopped by a signal: says so as its failure, and waits a moment for
/// that to go out.
pub fn interrupted(exit_code: i32, message: &str) {
    let active = ACTIVE.lock_unpoisoned().clone();
    if let Some(inner) = active.and_then(|weak| weak.upgrade()) {
        inner.fail(exit_code, message.to_string(), false);
        inner.close(Instant::now() + SIGNAL_GRACE);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock_unpoisoned()
    }

    fn fail(&self, exit_code: i32, error: String, verifying: bool) {
        let (phase, description) = {
            let mut state = self.lock();
            if state.ended {
                return;
            }
            match state.current.take() {
                Some((Phase::Write, _)) if verifying => {
                    (Phase::Verify, "verifying the image".to_string())
                }
                Some(current) => current,
                None => (Phase::SelectDisk, "starting".to_string()),
            }
        };
        self.write_ended.notify_all();
        self.emit(
            EventType::Finish,
            phase,
            description,
            Some((Outcome::Fail, exit_code)),
            Some(error),
        );
    }

    fn close(&self, deadline: Instant) {
        for sender in &self.senders {
            sender.close(deadline);
        }
    }

    /// Builds the event from what is known now and hands it to every receiver.
    fn emit(
        &self,
        event_type: EventType,
        name: Phase,
        description: String,
        result: Option<(Outcome, i32)>,
        error: Option<String>,
    ) {
        let event = {
            let mut state = self.lock();
            if state.ended {
                return;
            }
            // The install's last word: a failure, or the last phase's success.
            state.ended = matches!(result, Some((Outcome::Fail, _)))
                || (event_type == EventType::Finish && name == Phase::Finalize);
            let (fetched, written, total, chunks) =
                state.progress.as_ref().map_or((0, 0, None, None), |p| {
                    (p.fetched_bytes(), p.written_bytes(), p.total(), p.delta())
                });
            Event {
                origin: "ocidd",
                event_type,
                name,
                description,
                timestamp: timestamp(),
                result: result.map(|(outcome, _)| outcome),
                exit_code: result.map(|(_, code)| code),
                error,
                node: state.node.clone(),
                image: state.image.clone(),
                disk: state.disk.clone(),
                bytes_fetched: fetched,
                bytes_written: written,
                bytes_total: total.or(state.bytes_total),
                chunks,
            }
        };
        let Ok(json) = serde_json::to_string(&event) else {
            return;
        };
        let json = escape_terminal_controls(json);
        if self.json_lines {
            output::result_raw(&json);
        }
        let body = Arc::new(json.into_bytes());
        for sender in &self.senders {
            sender.send(Arc::clone(&body), event_type == EventType::Progress);
        }
    }
}

/// Sends a progress event every interval while the write phase lasts.
fn progress_loop(inner: &Weak<Inner>) {
    loop {
        let Some(inner) = inner.upgrade() else { return };
        let state = inner.lock();
        let (state, _) = inner
            .write_ended
            .wait_timeout_unpoisoned(state, inner.interval);
        let writing = state
            .current
            .as_ref()
            .is_some_and(|(phase, _)| *phase == Phase::Write);
        if !writing || state.ended {
            return;
        }
        let description = state
            .progress
            .as_ref()
            .map_or_else(|| "writing".to_string(), |p| p.summary());
        drop(state);
        inner.emit(EventType::Progress, Phase::Write, description, None, None);
    }
}

/// serde_json leaves DEL and the C1 controls (U+007F–U+009F) as they are; written as `\u`
/// escapes they stay the same JSON and cannot drive a terminal. They can only be in strings.
fn escape_terminal_controls(json: String) -> String {
    if !json.chars().any(|c| ('\u{7f}'..='\u{9f}').contains(&c)) {
        return json;
    }
    json.chars()
        .map(|c| {
            if ('\u{7f}'..='\u{9f}').contains(&c) {
                format!("\\u{:04x}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Where credentials may go to the receiver at `url`: not both in its URL and as the token
/// (the receiver would get two Authorization headers), and over plain HTTP only with
/// `oci.allow_no_tls`, as the registry's credentials.
fn check_credentials(url: &str, token: bool, allow_no_tls: bool) -> Result<()> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(());
    };
    let shown = sender::shown_url(url);
    let userinfo = !parsed.username().is_empty() || parsed.password().is_some();
    if userinfo && token {
        fail!(
            Failure::Usage,
            "ocidd.report={shown} carries credentials in its URL and ocidd.report_token= is given too; give one of them"
        );
    }
    if (userinfo || token) && parsed.scheme() == "http" && !allow_no_tls {
        let what = if token {
            "the report token"
        } else {
            "the credentials in its URL"
        };
        fail!(
            Failure::Usage,
            "ocidd.report={shown} is plain HTTP, and {what} would cross the network in the clear; use https://, or allow it with oci.allow_no_tls"
        );
    }
    Ok(())
}

/// The bearer token in `path`, as an Authorization header.
fn read_token(path: &Path) -> Result<HeaderValue> {
    let text = std::fs::read(path)
        .with_context(|| format!("reading the report token file {}", path.display()))
        .classify(Failure::Usage)?;
    parse_token(&text, path)
}

/// The bearer token that the token file `path` holds (`text`), as an Authorization header.
pub fn parse_token(text: &[u8], path: &Path) -> Result<HeaderValue> {
    let text = String::from_utf8_lossy(text);
    let token = text.trim();
    if token.is_empty() {
        return Err(anyhow!("the report token file {} is empty", path.display()))
            .classify(Failure::Usage);
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| {
            anyhow!(
                "the report token file {} holds characters a header cannot carry",
                path.display()
            )
        })
        .classify(Failure::Usage)?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_become_json_escapes() {
        let json = serde_json::to_string("a\u{9b}31mb\u{7f}").unwrap();
        let escaped = escape_terminal_controls(json);
        assert_eq!(escaped, r#""a\u009b31mb\u007f""#);
        let back: String = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back, "a\u{9b}31mb\u{7f}");
    }
}
