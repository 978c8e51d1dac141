//! apply: makes the destination match each change event.
//!
//! # Layout
//! - [`engine`]: the guarded atomic write, which lives in `redmirror_write`
//!   (shared with replay) and is re-exported here for the consumer.
//! - [`consumer`]: the Kafka consumer loop: batch, write, dead-letter what
//!   can never be applied, then store offsets (never before the write);
//!   retry transient destination errors forever with backoff.
//! - [`lag`]: per-partition consumer lag for metrics and status.
//!
//! Delivery is at-least-once; events are full states ordered by source time,
//! so a duplicate or an older event changes nothing (the effect is exactly once).

pub mod consumer;
pub mod lag;

pub use redmirror_write as engine;

pub use consumer::{run, ApplyOptions};
pub use engine::{ApplyEngine, Outcome};
