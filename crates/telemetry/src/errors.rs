//! Printing an error chain with each cause once.

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
    use super::chain;

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
