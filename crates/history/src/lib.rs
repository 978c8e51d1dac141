//! History: what Kafka keeps, put to use.
//!
//! # Layout
//! - [`reader`]: reads a topic from chosen positions (beginning, a
//!   timestamp, explicit offsets) to the end of each partition as it was
//!   when reading began. The end is detected by partition EOF or by the first
//!   message produced after the start — never by the reported high
//!   watermark alone, which some brokers report short.
//! - [`replay`]: re-applies history through the guarded atomic step of
//!   `redmirror_write` (native copies untouched, the watermark keeps it
//!   monotonic), or, with `force`, rewinds sync copies to their state at
//!   `--until`.
//! - [`rewind`]: the hold around a rewind: set before anything is rewound,
//!   acknowledged by every live apply instance, kept until `resume`.
//! - [`flow`]: one flow's latest events, newest first, from its partition
//!   only, within a bound (`GET /v1/flows/{flowId}/history`).
//! - [`dlq`]: lists dead letters and re-drives them to the change topic.
//! - [`inspect`]: events as JSON lines for people.
//! - [`commands`]: the command line's `replay`, `resume`, `dlq` and
//!   `inspect`: their flags and what they print.

pub mod commands;
pub mod dlq;
pub mod flow;
pub mod inspect;
pub mod reader;
pub mod replay;
pub mod rewind;

pub use reader::{Start, TopicReader};

/// Errors of the history tools.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] redmirror_kafka::Error),
    /// Reading the topic failed.
    #[error("reading {topic}: {message}")]
    Read {
        /// Topic.
        topic: String,
        /// What went wrong.
        message: String,
    },
    /// A bad request (unknown partition, bad time): exit 2.
    #[error("{0}")]
    Usage(String),
    /// A failure while running a valid request (the destination kept
    /// failing, a task died, Kafka did not answer): exit 1.
    #[error("{0}")]
    Runtime(String),
    /// The destination failed.
    #[error("destination")]
    Redis(#[from] fred::error::Error),
}

impl Error {
    /// The process exit code this error ends a command with: 2 for a bad
    /// request (SPEC section 7), 1 for a runtime failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Kafka(_) | Error::Read { .. } | Error::Runtime(_) | Error::Redis(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    /// Only a bad request exits 2: a destination that keeps failing during
    /// a valid replay, or a writer task that died, is a runtime failure.
    #[test]
    fn only_a_bad_request_exits_2() {
        assert_eq!(Error::Usage("--from-offsets: bad offset".into()).exit_code(), 2);
        let runtime = [
            Error::Runtime("the destination kept failing".into()),
            Error::Redis(fred::error::Error::new(fred::error::ErrorKind::IO, "refused")),
            Error::Read {
                topic: "t".into(),
                message: "m".into(),
            },
        ];
        for e in runtime {
            assert_eq!(e.exit_code(), 1, "{e}");
        }
    }
}
