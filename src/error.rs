//! Exit statuses, and how a failure is classified into one.
//!
//! Errors travel as `anyhow::Error`; the stage that knows what went wrong wraps the error once
//! in [`Classified`], and `main` finds that tag anywhere in the chain (including inside an
//! `io::Error` that crossed a `Read` adapter) to choose the exit status.

use std::fmt;
use std::io;

/// What kind of thing failed; each maps to one exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Bad or missing parameters (exit 2).
    Usage,
    /// The registry or the network failed (exit 3).
    Registry,
    /// The image did not verify or is not a usable image (exit 4).
    Verification,
    /// The target, or I/O on it, failed (exit 5).
    Target,
}

impl Failure {
    pub const ALL: [Failure; 4] = [
        Failure::Usage,
        Failure::Registry,
        Failure::Verification,
        Failure::Target,
    ];

    /// What its exit status tells the operator, for the docs.
    pub fn meaning(self) -> &'static str {
        match self {
            Failure::Usage => {
                "a bad or missing parameter or input file; nothing was fetched or written"
            }
            Failure::Registry => {
                "the registry, a mirror, a proxy or the network failed (retries spent); asking again may work"
            }
            Failure::Verification => {
                "the image did not verify, or is not an image ocidd can install"
            }
            Failure::Target => "the target disk or file failed, or does not fit the image",
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Failure::Usage => 2,
            Failure::Registry => 3,
            Failure::Verification => 4,
            Failure::Target => 5,
        }
    }
}

/// An error tagged with the kind of failure it is.
#[derive(Debug)]
pub struct Classified {
    pub failure: Failure,
    pub error: anyhow::Error,
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Classified {}

/// Tags an error with a failure kind, unless a stage deeper down already did.
pub fn classified(failure: Failure, error: anyhow::Error) -> anyhow::Error {
    if failure_of(&error).is_some() {
        error
    } else {
        anyhow::Error::new(Classified { failure, error })
    }
}

/// A tagged error for a `Read`/`Write` adapter to return.
pub fn io_error(failure: Failure, error: anyhow::Error) -> io::Error {
    let failure = failure_of(&error).unwrap_or(failure);
    match error.downcast::<io::Error>() {
        Ok(io) if failure_of_io(&io).is_some() => io,
        Ok(io) => io::Error::new(
            io.kind(),
            Classified {
                failure,
                error: io.into(),
            },
        ),
        Err(error) => io::Error::other(Classified { failure, error }),
    }
}

fn failure_of_io(error: &io::Error) -> Option<Failure> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Classified>())
        .map(|c| c.failure)
}

/// The failure kind an error was tagged with, if any.
pub fn failure_of(error: &anyhow::Error) -> Option<Failure> {
    error.chain().find_map(|cause| {
        if let Some(c) = cause.downcast_ref::<Classified>() {
            return Some(c.failure);
        }
        cause.downcast_ref::<io::Error>().and_then(failure_of_io)
    })
}

/// For tests: `result` failed as `failure`, with a message that contains `expected`.
#[cfg(test)]
pub fn assert_failed<T>(result: anyhow::Result<T>, failure: Failure, expected: &str) {
    let Err(error) = result else {
        panic!("succeeded where it should fail with {expected:?}");
    };
    assert_eq!(failure_of(&error), Some(failure), "{error:#}");
    assert!(format!("{error:#}").contains(expected), "{error:#}");
}

/// `result.classify(Failure::Registry)` tags the error of a fallible call.
pub trait Classify<T> {
    fn classify(self, failure: Failure) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> Classify<T> for Result<T, E> {
    fn classify(self, failure: Failure) -> anyhow::Result<T> {
        self.map_err(|e| classified(failure, e.into()))
    }
}

/// Returns early with a tagged error made from a format string.
#[macro_export]
macro_rules! fail {
    ($failure:expr, $($arg:tt)*) => {
        return Err($crate::error::classified($failure, anyhow::anyhow!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_survives_context_and_io() {
        let inner = classified(Failure::Verification, anyhow::anyhow!("digest mismatch"));
        let io = io_error(Failure::Target, inner);
        let outer = anyhow::Error::new(io).context("reading image");
        assert_eq!(failure_of(&outer), Some(Failure::Verification));
        assert_eq!(format!("{outer:#}"), "reading image: digest mismatch");
    }

    #[test]
    fn first_classification_wins() {
        let e: anyhow::Result<()> = Err(anyhow::anyhow!("x")).classify(Failure::Registry);
        let e = e.classify(Failure::Target).unwrap_err();
        assert_eq!(failure_of(&e), Some(Failure::Registry));
        assert_eq!(failure_of(&anyhow::anyhow!("plain")), None);
    }
}
