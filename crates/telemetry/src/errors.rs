//! Printing an error chain with each cause once.

use std::fmt;

/// An error and its causes, `outer: cause: cause` (anyhow's `{:#}` for an
/// error that is not an `anyhow::Error`). `error = %Chain(&e)` in a log
/// line keeps the causes that `error = %e` would leave out.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// `e` and its causes, `"outer: inner: ..."`, each written once. The
/// library errors name their cause in their own message (so a log line's
/// `error = %e` field is whole) and also return it from `source()`, which
/// anyhow's `{:#}` would print a second time (`redis ...: IO Error: ...
/// refused: IO Error: ... refused`). A cause whose text is already in the
/// message so far is left out.
pub fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{chain, Chain};

    /// Says what failed; its cause is `source()` only.
    #[derive(Debug, thiserror::Error)]
    #[error("redis {endpoint}")]
    struct Unreachable {
        endpoint: &'static str,
        #[source]
        source: std::io::Error,
    }

    /// Adds nothing to its cause.
    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("reading the source")]
        Source(#[source] Unreachable),
        #[error(transparent)]
        Other(Unreachable),
    }

    fn refused() -> Unreachable {
        Unreachable {
            endpoint: "redis://127.0.0.1:1",
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused"),
        }
    }

    #[test]
    fn every_cause_is_written_once_in_order() {
        let e = Outer::Source(refused());
        let text = Chain(&e).to_string();
        assert_eq!(
            text,
            "reading the source: redis redis://127.0.0.1:1: Connection refused"
        );
        assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
        assert_eq!(text.matches("redis://127.0.0.1:1").count(), 1, "{text}");
    }

    #[test]
    fn a_transparent_wrapper_adds_nothing() {
        let e = Outer::Other(refused());
        assert_eq!(Chain(&e).to_string(), "redis redis://127.0.0.1:1: Connection refused");
    }

    #[test]
    fn an_error_without_a_cause_is_its_message() {
        let e = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        assert_eq!(Chain(&e).to_string(), "Connection refused");
    }

    /// Names its cause in its message and returns it from `source()`.
    #[derive(Debug)]
    struct Named {
        endpoint: &'static str,
        source: std::io::Error,
    }

    impl std::fmt::Display for Named {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "redis {}: {}", self.endpoint, self.source)
        }
    }

    impl std::error::Error for Named {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_written_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = anyhow::Error::new(Named {
            endpoint: "redis://127.0.0.1:1",
            source: io,
        })
        .context("the source");
        assert_eq!(format!("{e:#}").matches("Connection refused").count(), 2, "{e:#}");
        assert_eq!(chain(&e), "the source: redis redis://127.0.0.1:1: Connection refused");
    }

    #[test]
    fn causes_not_in_the_message_are_all_written() {
        let e = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(chain(&e), "outer: middle: inner");
    }
}
