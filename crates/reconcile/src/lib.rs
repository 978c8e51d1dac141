//! reconcile: the backstop that proves nothing was missed and repairs what was.
//!
//! # Layout
//! - [`pass`]: one pass: barrier (wait until apply has passed the topic's
//!   end offsets), then stream the source and destination scans batch by
//!   batch (SCAN + one pipelined read per side per batch), compare each flow
//!   with SPEC section 1, and publish `reconcile` events for the drift.
//!   Memory is bounded by the batch size, not by the number of flows.
//! - [`digest`]: flow summaries: pipelined `HGETALL` on both sides at once,
//!   reduced to a content digest in the client, so Redis does only plain
//!   reads; flows whose digests differ are read again in full and atomically.
//! - [`flow`]: one flow on both sides with its verdict (`GET
//!   /v1/flows/{flowId}`), by the pass's own comparison.
//! - [`dest_read`]: destination flows as the guard sees them (one read-only
//!   script per batch, sharing the guard fragment with apply's write).
//! - [`service`]: the reconcile role: the lease, the signals it watches
//!   (capture gaps and pass requests, through the destination so they work
//!   across processes), holds, passes and pruning.
//! - [`schedule`]: when passes run and what they cover (at start, on a
//!   schedule, on demand, after every gap; retries): a pure state machine.
//! - [`error`]: why a pass failed (which side, what went wrong); the
//!   lowest module, which the others report through.
//! - `scan`: the `HSCAN` cursor reads the pass and the pruning share.
//! - [`report`]: the result of a pass, for people (a table) and machines (JSON).
//! - [`prune`]: keeps the watermark hash bounded: after each pass, removes
//!   the watermarks of flows absent from the destination for longer than the
//!   change topic's `delete.retention.ms`, and says why that is safe.

pub mod dest_read;
pub mod digest;
pub mod error;
pub mod flow;
pub mod pass;
pub mod prune;
pub mod report;
mod scan;
pub mod schedule;
pub mod service;

pub use pass::{PassError, PassOptions, Reconciler, Side, Sides};
pub use prune::{prune_watermarks, PruneReport};
pub use report::{Barrier, Report};
pub use service::{Service, Trigger};
