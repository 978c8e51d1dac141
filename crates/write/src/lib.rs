//! The guarded write: makes the destination match change events, each with
//! one atomic, guarded, idempotent step (SPEC section 2, apply). Shared by
//! apply's live consumer and by replay and rewind.
//!
//! # Layout
//! - [`engine`]: [`ApplyEngine`] batches events into pipelined script calls
//!   and turns each reply into an [`Outcome`]; rules enforced without the
//!   destination (the size limit, the organisation filter) are decided here.
//! - [`retry`]: a failed write tried again with backoff, nothing skipped
//!   (live apply and replay).
//! - [`throttle`]: the destination write limit ([`Throttle`]), events per
//!   second through one engine and its clones.
//! - `script`: the Lua step (`apply.lua`, after the guard fragment
//!   `flow.lua` of `redmirror_redis`) behind a typed wrapper: a call's
//!   arguments in, one step reply per event out, any other reply an error.
//!
//! # Contract
//! What other processes and operators rely on; change it only through an
//! issue (SPEC.md):
//! - what lands in the destination: the copy (source fields minus excluded
//!   ones plus the marker), the index entry `F` → `1`, and the per-flow
//!   watermark under `redmirror:` (see `redmirror_core::keys`);
//! - [`Outcome::label`]: the `outcome` label values of
//!   `redmirror_apply_events_total`;
//! - the dead-letter codes of [`Outcome::DeadLetter`] (`too_large`,
//!   `wrong_type`, `write_failed`, `unexpected_reply`, and the decode codes
//!   of `redmirror_core::DecodeError`), which `redmirror dlq list` shows;
//! - the script's reply strings (see `script`), matched by this crate only
//!   but named like the labels above.

pub mod engine;
pub mod retry;
mod script;
pub mod throttle;

pub use engine::{ApplyEngine, Decoded, Outcome, Transient};
pub use throttle::{Throttle, WriteLimit};
