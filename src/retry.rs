//! Retrying what may succeed when tried again: jittered exponential backoff, bounded, with
//! each retry reported on the console.

use std::thread;
use std::time::Duration;

use anyhow::anyhow;

use crate::error::{Failure, classified};
use crate::say;

/// Retries by default: with the delays below, enough to ride out a registry or network
/// outage of over a minute even with the shortest jitter (71.5 s to 143 s in all).
pub const DEFAULT_RETRIES: u32 = 12;
const BASE_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(16);
/// The longest Retry-After honoured; a longer one is shortened to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub retries: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::with_retries(DEFAULT_RETRIES)
    }
}

impl Backoff {
    pub fn with_retries(retries: u32) -> Backoff {
        Backoff {
            retries,
            base: BASE_DELAY,
            max: MAX_DELAY,
        }
    }

    /// The delay before retry `attempt` (0-based): exponential, capped, with the upper half
    /// jittered so that a fleet of machines does not retry in step.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_jittered(attempt, random_fraction())
    }

    /// The delay before retry `attempt` with the jitter `fraction` (0 to 1) of its upper
    /// half.
    fn delay_jittered(&self, attempt: u32, fraction: f64) -> Duration {
        let full = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = full / 2;
        half + half.mul_f64(fraction.clamp(0.0, 1.0))
    }
}

fn random_fraction() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    f64::from(u32::from_ne_bytes(bytes)) / f64::from(u32::MAX)
}

/// Why an attempt failed in a way that may pass.
#[derive(Debug)]
pub struct Transient {
    pub reason: String,
    /// What the server asked for (Retry-After).
    pub retry_after: Option<Duration>,
}

/// How an attempt failed.
pub enum Attempt {
    Transient(Transient),
    Permanent(anyhow::Error),
}

impl From<anyhow::Error> for Attempt {
    fn from(error: anyhow::Error) -> Self {
        Attempt::Permanent(error)
    }
}

/// Runs `op` until it succeeds, fails permanently, or `backoff.retries` retries failed.
/// Waits between attempts, printing why and for how long.
pub fn with_retries<T>(
    backoff: &Backoff,
    what: &str,
    mut op: impl FnMut() -> Result<T, Attempt>,
) -> anyhow::Result<T> {
    let mut attempt = 0;
    loop {
        match op() {
            Ok(value) => return Ok(value),
            Err(Attempt::Permanent(error)) => return Err(error),
            Err(Attempt::Transient(transient)) => {
                thread::sleep(next_wait(backoff, attempt, what, &transient)?);
                attempt += 1;
            }
        }
    }
}

/// [`with_retries`] for an async `op`, waiting on the async runtime's timer.
pub async fn with_retries_async<T, F, Fut>(
    backoff: &Backoff,
    what: &str,
    mut op: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(Attempt::Permanent(error)) => return Err(error),
            Err(Attempt::Transient(transient)) => {
                tokio::time::sleep(next_wait(backoff, attempt, what, &transient)?).await;
                attempt += 1;
            }
        }
    }
}

/// After transient failure number `attempt` (0-based) of `what`: how long to wait before
/// trying again, said on the console; or the error that gives up, once the retries are
/// spent.
fn next_wait(
    backoff: &Backoff,
    attempt: u32,
    what: &str,
    transient: &Transient,
) -> anyhow::Result<Duration> {
    if attempt >= backoff.retries {
        return Err(classified(
            Failure::Registry,
            anyhow!(
                "{what}: {} (gave up after {} retries)",
                transient.reason,
                backoff.retries
            ),
        ));
    }
    let delay = wait_time(backoff, attempt, transient);
    say!(
        "ocidd: retrying in {} s: {} ({what}; retry {} of {})",
        delay.as_secs_f64().ceil(),
        transient.reason,
        attempt + 1,
        backoff.retries
    );
    Ok(delay)
}

/// The delay before the retry after a transient failure: the server's Retry-After if it
/// gave one, else the backoff's.
pub fn wait_time(backoff: &Backoff, attempt: u32, transient: &Transient) -> Duration {
    transient
        .retry_after
        .map(|d| d.min(MAX_RETRY_AFTER))
        .unwrap_or_else(|| backoff.delay(attempt))
}

/// Parses a Retry-After value: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_capped_and_jittered() {
        let backoff = Backoff::default();
        for attempt in 0..30 {
            let full = (BASE_DELAY * 2u32.pow(attempt.min(10))).min(MAX_DELAY);
            let d = backoff.delay(attempt);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn the_default_retries_ride_out_a_minute_long_outage() {
        // The twelve default retries, with the shortest and the longest jitter: what the
        // comment on DEFAULT_RETRIES promises.
        let backoff = Backoff::default();
        let total = |fraction| -> Duration {
            (0..backoff.retries)
                .map(|a| backoff.delay_jittered(a, fraction))
                .sum()
        };
        assert_eq!(backoff.retries, 12);
        assert_eq!(total(0.0), Duration::from_millis(71_500));
        assert_eq!(total(1.0), Duration::from_secs(143));
    }

    #[test]
    fn retries_then_gives_up() {
        let backoff = Backoff {
            retries: 2,
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let mut calls = 0;
        let result: anyhow::Result<()> = with_retries(&backoff, "testing", || {
            calls += 1;
            Err(Attempt::Transient(Transient {
                reason: "connection refused".into(),
                retry_after: None,
            }))
        });
        assert_eq!(calls, 3);
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains("gave up after 2 retries"), "{error}");

        let mut calls = 0;
        let value = with_retries(&backoff, "testing", || {
            calls += 1;
            if calls < 2 {
                Err(Attempt::Transient(Transient {
                    reason: "HTTP 503".into(),
                    retry_after: Some(Duration::from_millis(1)),
                }))
            } else {
                Ok(7)
            }
        });
        assert_eq!(value.unwrap(), 7);
        let permanent: anyhow::Result<()> =
            with_retries(&backoff, "testing", || Err(anyhow!("404").into()));
        assert!(permanent.is_err());
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
