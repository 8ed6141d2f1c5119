//! What ocidd prints: lines for the operator on stderr, results on stdout. Printing never
//! changes the outcome: a closed or broken stdout or stderr loses the text, never the install
//! (`println!` would panic on a broken pipe, mid-write). Control characters are escaped, so
//! text that came from a server cannot drive the operator's terminal.

use std::borrow::Cow;
use std::io::{self, Write};

/// `text` with every control character (C0, DEL, C1) and every bidirectional formatting
/// character (which can make a line read in another order than it is) written as an escape,
/// `\u{1b}`, `\u{202e}`.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if needs_escape(c) {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Writes a line to stderr.
pub fn line(text: &str) {
    let mut stderr = io::stderr().lock();
    let _ = writeln!(stderr, "{}", escape_controls(text));
}

/// Writes text to stderr without ending the line, and flushes it.
pub fn inline(text: &str) {
    let mut stderr = io::stderr().lock();
    let _ = write!(stderr, "{}", escape_controls(text));
    let _ = stderr.flush();
}

/// Writes a line to stdout (results other programs read), and flushes it.
pub fn result(text: &str) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{}", escape_controls(text));
    let _ = stdout.flush();
}

/// Writes a line to stdout as it is: only for text made safe already (JSON with every
/// control character escaped).
pub fn result_raw(text: &str) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}

/// A line for the operator, on stderr; never fails.
#[macro_export]
macro_rules! say {
    () => {
        $crate::output::line("")
    };
    ($($arg:tt)*) => {
        $crate::output::line(&format!($($arg)*))
    };
}

/// Text for the operator on stderr, without ending the line; never fails.
#[macro_export]
macro_rules! say_inline {
    ($($arg:tt)*) => {
        $crate::output::inline(&format!($($arg)*))
    };
}

/// A result line on stdout; never fails.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::result(&format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain text: ok"), "plain text: ok");
        assert_eq!(
            escape_controls("\u{1b}]0;PWNED\u{7}\u{1b}[2J\u{1b}[31mfake: installed OK\r"),
            "\\u{1b}]0;PWNED\\u{7}\\u{1b}[2J\\u{1b}[31mfake: installed OK\\r"
        );
        assert_eq!(escape_controls("a\u{9b}b\u{7f}"), "a\\u{9b}b\\u{7f}");
        assert_eq!(escape_controls("grüße"), "grüße");
        assert_eq!(
            escape_controls("ok \u{202e}gpj.exe\u{202c} \u{2066}x\u{2069}"),
            "ok \\u{202e}gpj.exe\\u{202c} \\u{2066}x\\u{2069}"
        );
    }
}
