//! The engine: events in, one guarded script step each, outcomes out.

use bytes::Bytes;
use fred::prelude::*;
use fred::types::Value;
use redmirror_core::event::{DeleteReason, Op};
use redmirror_core::{FlowEvent, KeyLayout, MirrorRules};
use redmirror_redis::{script, Script};

/// Events in order, each one atomic guarded step; several events share one
/// script call (the per-call overhead dominates otherwise). KEYS: index,
/// watermark hash, then the flow key of each event. ARGV: marker field, then
/// per event: flow id, order (`redmirror_core::Order::encode`), op
/// (`u`/`d`), force (`1` ignores the watermark: rewind), N, then N
/// field/value arguments (marker included). Reply: one outcome string per
/// event.
///
/// Order of checks per event: wrong type → native copy → stale → write. The
/// watermark is recorded for deletes too (a tombstone), so an old upsert
/// delivered after a delete cannot resurrect the flow. An order is
/// `"{time}"` (epoch 0) or `"{epoch}:{time}"`: a newer epoch wins, and within
/// an epoch the later source time.
const APPLY: &str = r#"
local ik, wk, marker = KEYS[1], KEYS[2], ARGV[1]
local function split(o)
  local c = o:find(':', 1, true)
  if c then return tonumber(o:sub(1, c - 1)), o:sub(c + 1) end
  return 0, o
end
-- Exact comparison of decimal microsecond times (tonumber loses precision past 2^53).
local function earlier(a, b)
  local na, nb = a:sub(1, 1) == '-', b:sub(1, 1) == '-'
  if na or nb then return tonumber(a) < tonumber(b) end
  if #a ~= #b then return #a < #b end
  return a < b
end
local function older(a, b)
  local ea, ta = split(a)
  local eb, tb = split(b)
  if ea ~= eb then return ea < eb end
  return earlier(ta, tb)
end
local function one(fk, id, ts, op, force, first, last)
  local ty = redis.call('TYPE', fk)['ok']
  if ty == 'hash' then
    if redis.call('HGET', fk, marker) ~= 'true' then return 'skipped_native' end
  elseif ty ~= 'none' then
    return 'wrong_type:' .. ty
  end
  local wm = redis.call('HGET', wk, id)
  if force ~= '1' and wm and older(ts, wm) then return 'skipped_stale' end
  redis.call('HSET', wk, id, ts)
  if ty == 'hash' then redis.call('DEL', fk) end
  if op == 'u' then
    local i = first
    while i <= last do
      local j = i + 999
      if j > last then j = last end
      redis.call('HSET', fk, unpack(ARGV, i, j))
      i = j + 1
    end
    redis.call('HSET', ik, id, '1')
    return 'applied'
  end
  if ty == 'hash' or wm then redis.call('HDEL', ik, id) end
  return 'deleted'
end
local out = {}
local p = 2
for e = 1, #KEYS - 2 do
  local n = tonumber(ARGV[p + 4])
  out[e] = one(KEYS[e + 2], ARGV[p], ARGV[p + 1], ARGV[p + 2], ARGV[p + 3], p + 5, p + 4 + n)
  p = p + 5 + n
end
return out
"#;

/// One script call: the events it carries (index in the batch, `filtered`),
/// its keys and its arguments.
type Call = (Vec<(usize, bool)>, Vec<Bytes>, Vec<Value>);

/// Most events per script call.
const EVENTS_PER_CALL: usize = 64;
/// Most arguments per script call (a call holds Redis while it runs).
const ARGS_PER_CALL: usize = 20_000;

/// What happened to one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The copy now equals the event.
    Applied,
    /// The sync copy is gone (or was never there).
    Deleted,
    /// A native copy: untouched.
    SkippedNative,
    /// A filtered organisation: the sync copy, if any, was removed.
    SkippedFiltered,
    /// Older than what was already applied to this flow.
    SkippedStale,
    /// Can never be applied: goes to the dead-letter topic.
    DeadLetter {
        /// Reason code.
        code: &'static str,
        /// Reason text.
        reason: String,
    },
}

impl Outcome {
    /// The `outcome` label of `redmirror_apply_events_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Deleted => "deleted",
            Outcome::SkippedNative => "skipped_native",
            Outcome::SkippedFiltered => "skipped_filtered",
            Outcome::SkippedStale => "skipped_stale",
            Outcome::DeadLetter { .. } => "dead_lettered",
        }
    }

    /// True when the destination was (possibly) written.
    pub fn wrote(&self) -> bool {
        matches!(self, Outcome::Applied | Outcome::Deleted | Outcome::SkippedFiltered)
    }
}

/// An event ready to apply, or the reason it cannot be.
pub type Decoded = Result<FlowEvent, redmirror_core::DecodeError>;

/// A destination failure worth retrying (connection, timeout, busy, ...).
#[derive(Debug, thiserror::Error)]
#[error("destination write failed (will retry): {0}")]
pub struct Transient(#[from] pub fred::error::Error);

/// Applies events to the destination.
#[derive(Clone)]
pub struct ApplyEngine {
    client: Client,
    script: Script,
    keys: KeyLayout,
    rules: MirrorRules,
    watermark_key: Bytes,
}

impl ApplyEngine {
    /// An engine writing through `client`.
    pub fn new(client: Client, keys: KeyLayout, rules: MirrorRules) -> Self {
        ApplyEngine {
            client,
            script: Script::new(APPLY),
            watermark_key: Bytes::from(keys.watermark_key()),
            keys,
            rules,
        }
    }

    /// The destination client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Applies `events` in order in one pipelined round trip (per-flow order
    /// holds: one connection executes them in sequence). `force` ignores the
    /// watermark (rewind). Decode failures and permanent per-event errors
    /// become [`Outcome::DeadLetter`]; a transient error fails the whole batch,
    /// which is safe to retry (every step is idempotent).
    pub async fn apply<E>(&self, events: &[E], force: bool) -> Result<Vec<Outcome>, Transient>
    where
        E: std::borrow::Borrow<Decoded> + Sync,
    {
        // The script is loaded at start; after a destination restart the
        // first attempt meets NOSCRIPT, loads it and builds the calls again
        // (rare, so the arguments are not kept for it).
        let mut loaded = false;
        loop {
            match self.attempt(events, force).await? {
                Some(outcomes) => return Ok(outcomes),
                None if !loaded => {
                    self.script.load(&self.client).await?;
                    loaded = true;
                }
                None => {
                    return Err(Transient(fred::error::Error::new(
                        fred::error::ErrorKind::Unknown,
                        "NOSCRIPT after loading the apply script",
                    )))
                }
            }
        }
    }

    /// One pipelined round trip; `None` when the script was not loaded.
    async fn attempt<E>(&self, events: &[E], force: bool) -> Result<Option<Vec<Outcome>>, Transient>
    where
        E: std::borrow::Borrow<Decoded> + Sync,
    {
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(events.len());
        let mut calls: Vec<Call> = Vec::new();
        let mut current: Option<Call> = None;
        for (i, e) in events.iter().enumerate() {
            let prepared = match e.borrow() {
                Err(d) => Err(Outcome::DeadLetter {
                    code: d.code(),
                    reason: d.to_string(),
                }),
                Ok(ev) => self.prepare(ev, force).map(|p| (ev, p)),
            };
            match prepared {
                Err(o) => outcomes.push(Some(o)),
                Ok((ev, (args, filtered))) => {
                    outcomes.push(None);
                    let full = current
                        .as_ref()
                        .is_some_and(|c| c.0.len() >= EVENTS_PER_CALL || c.2.len() + args.len() > ARGS_PER_CALL);
                    if full {
                        calls.extend(current.take());
                    }
                    let c = current.get_or_insert_with(|| {
                        (
                            Vec::with_capacity(EVENTS_PER_CALL),
                            vec![self.keys.index_key.clone(), self.watermark_key.clone()],
                            vec![Value::Bytes(self.rules.marker_field.clone())],
                        )
                    });
                    c.0.push((i, filtered));
                    c.1.push(self.keys.flow_key(&ev.flow_id));
                    c.2.extend(args);
                }
            }
        }
        calls.extend(current);
        if !calls.is_empty() {
            let pipeline = self.client.pipeline();
            let mut members = Vec::with_capacity(calls.len());
            for (m, keys, args) in calls {
                let _: () = pipeline
                    .custom(self.script.command(), self.script.args_owned(keys, args))
                    .await?;
                members.push(m);
            }
            let results = pipeline.try_all::<Value>().await;
            if results.iter().any(|r| matches!(r, Err(e) if script::is_noscript(e))) {
                return Ok(None);
            }
            for (members, r) in members.into_iter().zip(results) {
                match r {
                    Ok(Value::Array(replies)) if replies.len() == members.len() => {
                        for ((i, filtered), reply) in members.into_iter().zip(replies) {
                            outcomes[i] = Some(self.outcome(Ok(reply), filtered)?);
                        }
                    }
                    Ok(other) => {
                        for (i, filtered) in members {
                            outcomes[i] = Some(self.outcome(Ok(other.clone()), filtered)?);
                        }
                    }
                    Err(e) => {
                        for (i, filtered) in members {
                            outcomes[i] = Some(self.outcome(Err(e.clone()), filtered)?);
                        }
                    }
                }
            }
        }
        Ok(Some(
            outcomes
                .into_iter()
                .map(|o| o.expect("every event has an outcome"))
                .collect(),
        ))
    }

    /// Script arguments, or an outcome decided without the destination.
    fn prepare(&self, ev: &FlowEvent, force: bool) -> Result<(Vec<Value>, bool), Outcome> {
        let fields: Vec<(Bytes, Bytes)> = ev.fields.iter().map(|f| (f.name.clone(), f.value.clone())).collect();
        let mut upsert = ev.op == Op::Upsert as i32;
        // Apply enforces the filter too: an upsert of a filtered flow (from a
        // capture configured differently) removes the copy instead.
        let filtered = (upsert && self.rules.is_filtered(&fields)) || ev.delete_reason == DeleteReason::Filtered as i32;
        if upsert && !filtered {
            let size = ev.payload_bytes();
            if size > self.rules.max_flow_bytes {
                return Err(Outcome::DeadLetter {
                    code: "too_large",
                    reason: format!(
                        "flow is {size} bytes, over the limit of {} (REDMIRROR_MAX_FLOW_BYTES)",
                        self.rules.max_flow_bytes
                    ),
                });
            }
        }
        if filtered {
            upsert = false;
        }
        let copy = if upsert {
            self.rules.expected_copy(&fields)
        } else {
            Vec::new()
        };
        let mut args = Vec::with_capacity(5 + 2 * copy.len());
        args.push(Value::Bytes(ev.flow_id.clone()));
        args.push(Value::from(ev.order().encode()));
        args.push(Value::from(if upsert { "u" } else { "d" }));
        args.push(Value::from(if force { "1" } else { "0" }));
        args.push(Value::from((2 * copy.len()) as i64));
        for (n, v) in copy {
            args.push(Value::Bytes(n));
            args.push(Value::Bytes(v));
        }
        Ok((args, filtered))
    }

    fn outcome(&self, r: Result<Value, fred::error::Error>, filtered: bool) -> Result<Outcome, Transient> {
        let v = match r {
            Ok(v) => v,
            Err(e) if redmirror_redis::is_permanent(&e) => {
                return Ok(Outcome::DeadLetter {
                    code: "write_failed",
                    reason: format!("destination refused the write: {}", e.details()),
                })
            }
            Err(e) => return Err(Transient(e)),
        };
        let s = redmirror_redis::value::bytes(&v).unwrap_or_default();
        Ok(match s.as_ref() {
            b"applied" => Outcome::Applied,
            b"deleted" if filtered => Outcome::SkippedFiltered,
            b"deleted" => Outcome::Deleted,
            b"skipped_native" => Outcome::SkippedNative,
            b"skipped_stale" => Outcome::SkippedStale,
            other if other.starts_with(b"wrong_type:") => Outcome::DeadLetter {
                code: "wrong_type",
                reason: format!(
                    "destination key has type {}, not a hash",
                    String::from_utf8_lossy(&other[b"wrong_type:".len()..])
                ),
            },
            other => Outcome::DeadLetter {
                code: "unexpected_reply",
                reason: format!("apply script replied {:?}", String::from_utf8_lossy(other)),
            },
        })
    }
}
