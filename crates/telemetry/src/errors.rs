//! Printing an error with its causes.
//!
//! One model for every error of the workspace: an error's own message says
//! what failed, its cause is what `source()` returns, never both. The
//! causes are then printed once, where people read them: `main`'s last
//! line, `check`'s findings, log lines (`error = %Chain(&e)`) and reasons
//! kept for readiness or the status. A foreign error that writes its cause
//! into its message and returns it too (rdkafka's `KafkaError`) is wrapped
//! where it enters as a cause that ends the chain
//! (`redmirror_kafka::Librdkafka`).

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

/// `e` and its causes, `"outer: cause: cause"`: anyhow's `{:#}`.
pub fn chain(e: &anyhow::Error) -> String {
    format!("{e:#}")
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

    /// Nothing is left out by matching text: an error that breaks the rule
    /// has its cause printed twice, which is why none may.
    #[test]
    fn a_cause_also_in_the_message_is_printed_twice() {
        #[derive(Debug, thiserror::Error)]
        #[error("redis {endpoint}: {source}")]
        struct Both {
            endpoint: &'static str,
            source: std::io::Error,
        }
        let e = Both {
            endpoint: "redis://127.0.0.1:1",
            source: refused().source,
        };
        assert_eq!(Chain(&e).to_string().matches("Connection refused").count(), 2);
    }

    #[test]
    fn an_anyhow_chain_is_printed_the_same_way() {
        let e = anyhow::Error::new(Outer::Source(refused())).context("capture failed");
        assert_eq!(
            chain(&e),
            "capture failed: reading the source: redis redis://127.0.0.1:1: Connection refused"
        );
        let dyn_error: &(dyn std::error::Error + 'static) = e.as_ref();
        assert_eq!(chain(&e), Chain(dyn_error).to_string());
        assert_eq!(
            chain(&anyhow::anyhow!("inner").context("middle").context("outer")),
            "outer: middle: inner"
        );
    }
}
