//! Delivery of events to one receiver, in the background: a bounded queue that a thread
//! drains with POSTs, retrying with backoff. The install only ever adds to the queue, so a
//! slow or dead receiver never slows it; at the end it waits a few seconds at most.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};

use crate::registry::client::short_reason;
use crate::say;
use crate::sync::{Unpoisoned, UnpoisonedWait};

/// Events waiting at most: a receiver that is down for long loses the oldest progress
/// events first (each says where the install stands, so the newest is enough).
const CAPACITY: usize = 32;
/// The first wait before sending again after a failure; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(30);

/// An event, serialized.
struct Queued {
    body: Arc<Vec<u8>>,
    /// A progress event, which a newer one makes worthless.
    progress: bool,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// The thread is sending the queue's first event.
    sending: bool,
    /// No more events come; the thread gives up at `deadline`.
    closed: bool,
    deadline: Option<Instant>,
    /// Events given up on, and the last reason.
    lost: u64,
    last_error: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock_unpoisoned()
    }
}

/// The queue and thread for one receiver URL.
pub struct Sender {
    shared: Arc<Shared>,
    /// The URL as the console shows it: without credentials or query.
    shown: String,
}

impl Sender {
    pub fn start(url: String, client: Client, token: Option<HeaderValue>) -> Sender {
        let shown = shown_url(&url);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread_shown = shown.clone();
        let spawned = thread::Builder::new()
            .name("report".into())
            .spawn(move || deliver(&thread_shared, &url, &thread_shown, &client, token));
        if let Err(e) = spawned {
            say!("ocidd: cannot report to {shown}: {e}");
        }
        Sender { shared, shown }
    }

    /// Queues an event; never waits.
    pub fn send(&self, body: Arc<Vec<u8>>, progress: bool) {
        let mut state = self.shared.lock();
        if state.closed {
            return;
        }
        if state.queue.len() >= CAPACITY {
            // The one being sent stays; of the rest, the oldest progress event goes first.
            let first = usize::from(state.sending);
            let victim = (first..state.queue.len())
                .find(|&i| state.queue[i].progress)
                .unwrap_or(first);
            if state.queue.remove(victim).is_some() {
                state.lost += 1;
            }
        }
        state.queue.push_back(Queued { body, progress });
        self.shared.changed.notify_all();
    }

    /// No more events: waits until the queue is delivered or `deadline`; says what was not.
    pub fn close(&self, deadline: Instant) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.deadline = Some(deadline);
        self.shared.changed.notify_all();
        while !state.queue.is_empty() && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            state = self.shared.changed.wait_timeout_unpoisoned(state, left).0;
        }
        let lost = state.lost + state.queue.len() as u64;
        if lost > 0 {
            let reason = state
                .last_error
                .as_deref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default();
            say!(
                "ocidd: report to {}: {lost} event(s) not delivered{reason}",
                self.shown
            );
        }
    }
}

/// The thread: sends the queue's events in order, retrying each with backoff while it is
/// the newest of its kind, until the queue is closed and empty or the deadline passed.
fn deliver(shared: &Shared, url: &str, shown: &str, client: &Client, token: Option<HeaderValue>) {
    let mut failures: u32 = 0;
    let mut told = false;
    loop {
        let mut state = shared.lock();
        let body = loop {
            if state.closed && state.deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            match state.queue.front() {
                Some(event) => break Arc::clone(&event.body),
                None if state.closed => return,
                None => {
                    state = shared
                        .changed
                        .wait_timeout_unpoisoned(state, Duration::from_millis(500))
                        .0
                }
            }
        };
        state.sending = true;
        drop(state);

        let mut request = client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(token) = &token {
            request = request.header(AUTHORIZATION, token.clone());
        }
        let outcome = match request.send() {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("HTTP {}", response.status().as_u16())),
            Err(e) => Err(short_reason(&e)),
        };

        let mut state = shared.lock();
        state.sending = false;
        match outcome {
            Ok(()) => {
                failures = 0;
                state.queue.pop_front();
                shared.changed.notify_all();
            }
            Err(reason) => {
                if !told {
                    say!("ocidd: report to {shown} failed ({reason}); retrying in the background");
                    told = true;
                }
                state.last_error = Some(reason);
                // A progress event that a newer one follows is not worth retrying.
                let superseded = state.queue.front().is_some_and(|e| e.progress)
                    && state.queue.iter().skip(1).any(|e| e.progress);
                if superseded {
                    state.queue.pop_front();
                    state.lost += 1;
                    shared.changed.notify_all();
                    continue;
                }
                let delay = FIRST_DELAY
                    .saturating_mul(1 << failures.min(10))
                    .min(MAX_DELAY);
                failures += 1;
                let until = Instant::now() + delay;
                let until = state.deadline.map_or(until, |d| until.min(d));
                while Instant::now() < until {
                    let left = until.saturating_duration_since(Instant::now());
                    let (next, _) = shared.changed.wait_timeout_unpoisoned(state, left);
                    state = next;
                    // Closing shortens the wait to the deadline.
                    if let Some(deadline) = state.deadline
                        && deadline < until
                        && Instant::now() >= deadline
                    {
                        break;
                    }
                }
            }
        }
    }
}

/// A URL as the console shows it: scheme, host, port and path, without credentials or query
/// (either may carry a secret).
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(url) => {
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}{port}{}",
                url.scheme(),
                url.host_str().unwrap_or("?"),
                url.path()
            )
        }
        Err(_) => "the report URL".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_secrets() {
        assert_eq!(
            shown_url("https://user:pw@maas.example:5240/report?token=abc"),
            "https://maas.example:5240/report"
        );
    }

    #[test]
    fn a_full_queue_drops_the_oldest_progress_event() {
        // A thread that cannot deliver: nothing listens on port 9 (discard) of loopback.
        crate::registry::client::install_crypto_provider();
        let client = Client::builder()
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let sender = Sender::start("http://127.0.0.1:9/".into(), client, None);
        sender.send(Arc::new(b"start".to_vec()), false);
        for i in 0..CAPACITY * 2 {
            sender.send(Arc::new(format!("progress {i}").into_bytes()), true);
        }
        sender.send(Arc::new(b"finish".to_vec()), false);
        let state = sender.shared.lock();
        assert!(state.queue.len() <= CAPACITY);
        let bodies: Vec<_> = state
            .queue
            .iter()
            .map(|e| String::from_utf8_lossy(&e.body).into_owned())
            .collect();
        assert!(bodies.contains(&"start".to_string()), "{bodies:?}");
        assert_eq!(bodies.last().map(String::as_str), Some("finish"));
    }
}
