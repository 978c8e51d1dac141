//! Tracing set-up.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `filter` in EnvFilter syntax, JSON lines
/// when `json`, human-readable otherwise (colours only on a terminal). Logs
/// go to stderr. Calling it twice is harmless (the second call is ignored).
pub fn init(filter: &str, json: bool) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(false).try_init()
    } else {
        use std::io::IsTerminal;
        builder.with_ansi(std::io::stderr().is_terminal()).try_init()
    };
}
