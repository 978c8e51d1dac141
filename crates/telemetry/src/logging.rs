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

/// Installs the global subscriber writing plain lines to the file at
/// `path` (created or appended to), for commands whose own output owns the
/// terminal (`demo`).
pub fn init_file(filter: &str, path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}
