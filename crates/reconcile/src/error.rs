//! Why a pass (or its pruning) failed: which server, and what went wrong
//! there. The lowest module of the crate: every other one reports through
//! it, none is imported here.

use fred::types::Value;

/// Which server a pass was talking to when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source Redis.
    Source,
    /// The destination Redis.
    Destination,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

/// Errors that end a pass (it is retried at the next trigger).
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A Redis call failed.
    #[error("{side}")]
    Redis {
        /// The server that failed.
        side: Side,
        /// Cause.
        #[source]
        source: fred::error::Error,
    },
    /// A Redis reply did not have the shape the command promises. The pass
    /// fails (and is retried) rather than treat what it could not read as
    /// "nothing there", which would leave flows uncompared.
    #[error("{side}: unexpected reply to {command}: {detail}")]
    Malformed {
        /// The server that failed.
        side: Side,
        /// The command or script.
        command: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Publishing a repair failed.
    #[error(transparent)]
    Kafka(#[from] redmirror_kafka::Error),
}

/// Turns a reply-shape complaint on `side`, for `command`, into the error.
pub(crate) fn malformed(side: Side, command: &'static str) -> impl Fn(String) -> PassError {
    move |detail| PassError::Malformed { side, command, detail }
}

/// Wraps a failed call on `side`.
pub(crate) fn on(side: Side) -> impl Fn(fred::error::Error) -> PassError {
    move |source| PassError::Redis { side, source }
}

/// What a reply was, for an error message ("an array", "nil", ...).
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "an array",
        Value::Null => "nil",
        Value::Integer(_) => "an integer",
        Value::Bytes(_) | Value::String(_) => "a string",
        Value::Map(_) => "a map",
        _ => "another type",
    }
}
