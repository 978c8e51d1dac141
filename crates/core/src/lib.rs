//! The heart of redmirror, with no I/O: what a change event is and what the
//! mirror rules of SPEC section 1 say about it.
//!
//! # Layout
//! - [`event`]: the protobuf change event (generated from `proto/`), its
//!   Kafka headers, encoding and strict decoding.
//! - [`keys`]: the key layout (`client:{flowId}`, `clients`, `redmirror:*`).
//! - [`order`]: the order of a flow's events, (source epoch, source time).
//! - [`partition`]: the change-topic partition of a flow (the producer's
//!   key-hashing partitioner).
//! - [`field_rules`]: the field rules of SPEC section 8 (excluded fields,
//!   allow-list, masks, the mask key) and their fingerprint.
//! - [`rules`]: the guard, field rules and the organisation filter; turns
//!   a source read into an event and an event into the expected copy.
//! - [`diff`]: compares what the destination holds against what the rules
//!   expect (used by the reconciler and its dry run).
//! - [`slot`]: Redis Cluster hash slots of keys, and a hash tag for each
//!   slot (bookkeeping kept beside a flow on a cluster destination).
//! - [`text`]: bytes shown to people (UTF-8 as text, otherwise base64).
//! - [`backoff`]: the retry delay sequence every retry loop uses.
//! - [`failpoint`]: failures the end-to-end tests inject into debug builds.

pub mod backoff;
pub mod diff;
pub mod event;
pub mod failpoint;
pub mod field_rules;
pub mod keys;
pub mod order;
pub mod partition;
pub mod rules;
pub mod slot;
pub mod text;

pub use event::{DecodeError, FlowEvent};
pub use field_rules::{FieldRules, MaskMethod, RulesSummary};
pub use keys::{CaptureProgress, KeyLayout, LeaseName};
pub use order::Order;
pub use rules::{MirrorRules, SourceFlow};

/// A flow's fields as read from Redis: `(name, value)` pairs, binary safe.
pub type Fields = Vec<(bytes::Bytes, bytes::Bytes)>;

/// Microseconds since the Unix epoch on this machine's clock.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
