//! The mirror's own coordination state, kept on the destination under the
//! state prefix (`redmirror:` by default, SPEC section 1): what one process
//! writes so that others (another instance of a role, another role, an
//! operator's command) can see it. How redmirror talks to Redis is
//! `redmirror_redis`; this crate is what it says there.
//!
//! # Layout
//! - [`lease`]: a named lease (`SET NX PX`, renewed by compare-and-expire,
//!   released by compare-and-delete) so at most one instance runs a role,
//!   and running a role only while it is held.
//! - [`hold`]: the rewind's hold, which stops apply and reconcile repairs
//!   until `redmirror resume`.
//! - [`members`]: apply instances announcing themselves on the
//!   destination, and which hold each one stopped writing for.
//! - [`signal`]: counters one process bumps and another watches (capture
//!   gaps with the slots they cover, pass requests).
//! - [`epoch`]: where the processes share the source epoch. The epoch
//!   itself (`redmirror_redis::epoch`) stays beside the source read that
//!   orders by it; this is only its store.

pub mod epoch;
pub mod hold;
pub mod lease;
mod lease_script;
pub mod members;
pub mod signal;
