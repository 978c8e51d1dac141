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
    /// A bad request (unknown partition, bad time).
    #[error("{0}")]
    Usage(String),
    /// The destination failed.
    #[error("destination: {0}")]
    Redis(#[from] fred::error::Error),
}
