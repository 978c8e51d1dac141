//! apply: makes the destination match each change event.
//!
//! # Layout
//! - [`engine`]: the guarded atomic write, which lives in `redmirror_write`
//!   (shared with replay) and is re-exported here for the consumer.
//! - [`consumer`]: the Kafka consumer loop in three steps: read a batch,
//!   dispatch its write (dead-letter what can never be applied, retry
//!   transient destination errors forever with backoff), drain the writes
//!   in flight; then store offsets (never before the write).
//! - [`ledger`]: the offset ledger, pure: which offsets may be stored while
//!   batches finish in any order (never past an unfinished one).
//! - [`stall`]: telling a stuck Kafka consumer from an idle one.
//! - [`lag`]: per-partition consumer lag for metrics, readiness and status.
//! - [`rules_watch`]: events made under other field rules fail readiness,
//!   logged once per fingerprint.
//!
//! Delivery is at-least-once; events are full states ordered by source time,
//! so a duplicate or an older event changes nothing (the effect is exactly once).

pub mod consumer;
pub mod lag;
pub mod ledger;
pub mod rules_watch;
pub mod stall;

pub use redmirror_write as engine;

pub use consumer::{run, ApplyOptions};
pub use engine::{ApplyEngine, Outcome};
