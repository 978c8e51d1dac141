//! The apply script (`apply.lua`, after the guard fragment `flow.lua` of
//! `redmirror_redis`) behind a typed wrapper: [`Call`] in, [`Step`] out.
//!
//! Events in order, each one atomic guarded step; several events share one
//! script call (the per-call overhead dominates otherwise). KEYS: index
//! (standalone only), watermark hash, then the flow key of each event.
//! ARGV: marker field, marker value ([`MARKER_VALUE`]), mode (`i`: the
//! index is `KEYS[1]` and kept by the script; `s`: a cluster slot's call,
//! every key in one slot, the index left to the engine's second step), then
//! per event: flow id, order ([`redmirror_core::Order::encode`]), op
//! (`u`/`d`), force (`1` ignores the watermark: rewind), N, then N
//! field/value arguments (marker included).
//!
//! Order of checks per event: wrong type → native copy → stale → write. The
//! watermark is recorded for deletes too (a tombstone), so an old upsert
//! delivered after a delete cannot resurrect the flow. An order is
//! `"{time}"` (epoch 0) or `"{epoch}:{time}"`: a newer epoch wins, and within
//! an epoch the later source time.
//!
//! # Contract
//! The reply: an array with one string per event, `applied`, `deleted`,
//! `skipped_native`, `skipped_stale` or `wrong_type:{type}`, and in mode
//! `s` also `deleted_owned` (deleted, and the mirror owned the flow: a sync
//! copy or a watermark was there, so its index field is the mirror's to
//! remove). The first four
//! are also the `outcome` labels of `redmirror_apply_events_total`; the
//! watermark hash and its values are read by reconcile's prune and by
//! replay. Change them together or not at all.

use bytes::Bytes;
use fred::types::Value;
use redmirror_core::rules::MARKER_VALUE;
use redmirror_core::Fields;

/// The script body: the guard fragment, then the steps.
pub(crate) const APPLY: &str = concat!(
    include_str!("../../redis/src/flow.lua"),
    include_str!("order.lua"),
    include_str!("apply.lua")
);

/// A cluster destination's index step (`index.lua`, after `order.lua`): see
/// [`crate::ApplyEngine`].
pub(crate) const INDEX: &str = concat!(include_str!("order.lua"), include_str!("index.lua"));

/// Most events per script call.
pub(crate) const EVENTS_PER_CALL: usize = 64;
/// Most arguments per script call (a call holds Redis while it runs).
pub(crate) const ARGS_PER_CALL: usize = 20_000;

/// One event's step as the script takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StepArgs {
    /// The flow.
    pub flow_id: Bytes,
    /// Its order, encoded.
    pub order: String,
    /// Upsert (`copy` is the whole copy) or delete.
    pub upsert: bool,
    /// Ignore the watermark (rewind).
    pub force: bool,
    /// The copy to write (marker included); empty for a delete.
    pub copy: Fields,
}

impl StepArgs {
    /// How many script arguments this step takes.
    pub fn len(&self) -> usize {
        5 + 2 * self.copy.len()
    }
}

/// An event of a call: where it sits in the caller's batch, its flow and
/// whether it was a filtered flow (its delete is reported as
/// `SkippedFiltered`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Index in the batch.
    pub index: usize,
    /// The flow.
    pub flow_id: Bytes,
    /// A filtered organisation's flow.
    pub filtered: bool,
}

/// One script call: the events it carries, its keys and its arguments.
#[derive(Debug)]
pub(crate) struct Call {
    /// The events, in order.
    pub members: Vec<Member>,
    /// Index (standalone only), watermarks, then one flow key per event.
    pub keys: Vec<Bytes>,
    /// Marker field and value, then each event's step.
    pub args: Vec<Value>,
}

impl Call {
    /// An empty call for this watermark hash and marker field that keeps
    /// this index too (`Some`: standalone), or leaves the index alone
    /// (`None`: one cluster slot's call).
    pub fn new(index_key: Option<Bytes>, watermark_key: Bytes, marker_field: Bytes) -> Self {
        let mut keys = Vec::with_capacity(2 + EVENTS_PER_CALL);
        let mode = if index_key.is_some() { "i" } else { "s" };
        keys.extend(index_key);
        keys.push(watermark_key);
        Call {
            members: Vec::with_capacity(EVENTS_PER_CALL),
            keys,
            args: vec![
                Value::Bytes(marker_field),
                Value::Bytes(Bytes::from_static(MARKER_VALUE)),
                Value::from(mode),
            ],
        }
    }

    /// True when `step` no longer fits.
    pub fn is_full_for(&self, step: &StepArgs) -> bool {
        self.members.len() >= EVENTS_PER_CALL || self.args.len() + step.len() > ARGS_PER_CALL
    }

    /// Adds one event's step on `flow_key`.
    pub fn push(&mut self, member: Member, flow_key: Bytes, step: StepArgs) {
        self.members.push(member);
        self.keys.push(flow_key);
        self.args.reserve(step.len());
        self.args.push(Value::Bytes(step.flow_id));
        self.args.push(Value::from(step.order));
        self.args.push(Value::from(if step.upsert { "u" } else { "d" }));
        self.args.push(Value::from(if step.force { "1" } else { "0" }));
        self.args.push(Value::from((2 * step.copy.len()) as i64));
        for (n, v) in step.copy {
            self.args.push(Value::Bytes(n));
            self.args.push(Value::Bytes(v));
        }
    }
}

/// What the script did with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// The copy now equals the event.
    Applied,
    /// The sync copy is gone (or was never there).
    Deleted,
    /// Deleted, and the mirror owned the flow (a sync copy or a watermark
    /// was there): its index field is the mirror's to remove (mode `s`).
    DeletedOwned,
    /// A native copy: untouched.
    SkippedNative,
    /// Older than the flow's watermark.
    SkippedStale,
    /// The flow key has this other type.
    WrongType(String),
}

/// A reply the script never gives (the text says what it was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub String);

impl Step {
    /// One event's reply.
    pub fn parse(v: &Value) -> Result<Step, Malformed> {
        let s = match v {
            Value::Bytes(b) => b.clone(),
            Value::String(s) => s.inner().clone(),
            other => return Err(Malformed(format!("{other:?}"))),
        };
        Ok(match s.as_ref() {
            b"applied" => Step::Applied,
            b"deleted" => Step::Deleted,
            b"deleted_owned" => Step::DeletedOwned,
            b"skipped_native" => Step::SkippedNative,
            b"skipped_stale" => Step::SkippedStale,
            other => match other.strip_prefix(b"wrong_type:") {
                Some(ty) if !ty.is_empty() => Step::WrongType(String::from_utf8_lossy(ty).into_owned()),
                _ => return Err(Malformed(format!("{:?}", String::from_utf8_lossy(other)))),
            },
        })
    }

    /// A whole call's reply for `n` events: one step each, or, when the
    /// reply is not an array of `n`, the same error for every event.
    pub fn parse_call(v: Value, n: usize) -> Vec<Result<Step, Malformed>> {
        match v {
            Value::Array(replies) if replies.len() == n => replies.iter().map(Step::parse).collect(),
            other => {
                let e = Malformed(format!("{other:?} for {n} events"));
                vec![Err(e); n]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::Bytes(Bytes::copy_from_slice(x.as_bytes()))
    }

    #[test]
    fn every_reply_the_script_gives_is_a_step() {
        assert_eq!(Step::parse(&s("applied")), Ok(Step::Applied));
        assert_eq!(Step::parse(&s("deleted")), Ok(Step::Deleted));
        assert_eq!(Step::parse(&s("deleted_owned")), Ok(Step::DeletedOwned));
        assert_eq!(Step::parse(&s("skipped_native")), Ok(Step::SkippedNative));
        assert_eq!(Step::parse(&s("skipped_stale")), Ok(Step::SkippedStale));
        assert_eq!(Step::parse(&s("wrong_type:list")), Ok(Step::WrongType("list".into())));
    }

    #[test]
    fn any_other_reply_is_malformed() {
        for bad in [s(""), s("Applied"), s("wrong_type:"), Value::Null, Value::Integer(1)] {
            assert!(Step::parse(&bad).is_err(), "{bad:?} was accepted");
        }
        let got = Step::parse_call(Value::Array(vec![s("applied")]), 2);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(Result::is_err));
        assert!(Step::parse_call(Value::Null, 1)[0].is_err());
    }

    #[test]
    fn the_marker_value_is_passed_in_not_written_in_lua() {
        assert!(!APPLY.contains("'true'"), "the marker value is an argument");
        assert!(APPLY.starts_with("-- flow.lua"), "the guard fragment comes first");
    }
}
