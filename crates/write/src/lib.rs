//! The guarded write: makes the destination match change events, each with
//! one atomic, guarded, idempotent step (SPEC section 2, apply). Shared by
//! apply's live consumer and by replay and rewind.
//!
//! # Layout
//! - [`engine`]: [`ApplyEngine`] batches events into pipelined script calls
//!   and turns each reply into an [`Outcome`]; rules enforced without the
//!   destination (the size limit, the organisation filter) are decided here.

pub mod engine;

pub use engine::{ApplyEngine, Decoded, Outcome, Transient};
