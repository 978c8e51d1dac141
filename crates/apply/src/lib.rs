//! apply: makes the destination match each change event.
//!
//! # Layout
//! - [`engine`]: the guarded atomic write (one Lua script per event, many
//!   per pipelined round trip): guard native copies, drop stale events by the
//!   per-flow watermark, upsert or delete, keep the index in step. Shared by
//!   the live consumer and by replay.
//! - [`consumer`]: the Kafka consumer loop: batch, write, dead-letter what
//!   can never be applied, then store offsets (never before the write);
//!   retry transient destination errors forever with backoff.
//! - [`lag`]: per-partition consumer lag for metrics and status.
//!
//! Delivery is at-least-once; events are full states ordered by source time,
//! so a duplicate or an older event changes nothing (the effect is exactly once).

pub mod consumer;
pub mod engine;
pub mod lag;

pub use consumer::{run, ApplyOptions};
pub use engine::{ApplyEngine, Outcome};
