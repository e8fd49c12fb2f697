//! The text log's field formatting. Logged values often come from outside
//! (a denial message quoting a statement's `_type`, a certificate SAN, an
//! upstream's error text), so every field is written with control
//! characters escaped: a value holding a newline cannot start a forged log
//! line. The JSON log escapes them already.

use std::fmt::{self, Write as _};

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{self, Writer};

/// Field formatting for the text log: `message` bare, other fields as
/// `name=value`, each value with control characters escaped.
pub fn escaped_fields()
-> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static {
    format::debug_fn(write_field).delimited(" ")
}

fn write_field(
    w: &mut Writer<'_>,
    field: &tracing::field::Field,
    value: &dyn fmt::Debug,
) -> fmt::Result {
    if field.name() != "message" {
        write!(w, "{}=", field.name())?;
    }
    let mut text = String::new();
    write!(text, "{value:?}")?;
    w.write_str(&escape_control(&text))
}

/// Characters that could make a log line read other than it is: control
/// characters, line and paragraph separators, and bidirectional overrides.
fn deceptive(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `text` with every such character written as a Rust escape (`\n`,
/// `\u{1b}`), so it stays on one line and reads as it is.
pub fn escape_control(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(deceptive) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if deceptive(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_logged_value_with_a_newline_cannot_forge_a_second_line() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(escaped_fields())
            .with_writer(move || out.clone())
            .finish();
        let hostile = "x\n2026-12-01T00:00:00Z  INFO portcullis: allowed\u{1b}[2K";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(message = %hostile, reason = "unsigned", "denied");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        // The default field formatting writes the value raw: the forged line appears.
        let raw = Buffer::default();
        let out = raw.clone();
        let default = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(default, || {
            tracing::info!(message = %hostile, "denied");
        });
        assert_eq!(
            String::from_utf8(raw.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .count(),
            2
        );
        assert!(text.contains("x\\n2026"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("reason=\"unsigned\""), "{text}");
    }

    #[test]
    fn plain_text_is_left_alone() {
        assert!(matches!(
            escape_control("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(escape_control("a\tb\r"), "a\\tb\\r");
        assert_eq!(escape_control("a\u{2028}b\u{202e}"), "a\\u{2028}b\\u{202e}");
    }
}
