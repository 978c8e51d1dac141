//! The engine: events in, one guarded script step each, outcomes out.

use bytes::Bytes;
use fred::prelude::*;
use fred::types::Value;
use redmirror_core::event::{DeleteReason, Op};
use redmirror_core::{FlowEvent, KeyLayout, MirrorRules};
use redmirror_redis::{script, Script};
use redmirror_telemetry::metrics::ApplyOutcome;

use crate::script::{Call, Malformed, Member, Step, StepArgs, APPLY};

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
    /// The `outcome` of `redmirror_apply_events_total` it counts as.
    pub fn metric(&self) -> ApplyOutcome {
        match self {
            Outcome::Applied => ApplyOutcome::Applied,
            Outcome::Deleted => ApplyOutcome::Deleted,
            Outcome::SkippedNative => ApplyOutcome::SkippedNative,
            Outcome::SkippedFiltered => ApplyOutcome::SkippedFiltered,
            Outcome::SkippedStale => ApplyOutcome::SkippedStale,
            Outcome::DeadLetter { .. } => ApplyOutcome::DeadLettered,
        }
    }

    /// The `outcome` label of `redmirror_apply_events_total`.
    pub fn label(&self) -> &'static str {
        self.metric().label()
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
                Ok((ev, (step, filtered))) => {
                    outcomes.push(None);
                    if current.as_ref().is_some_and(|c| c.is_full_for(&step)) {
                        calls.extend(current.take());
                    }
                    current
                        .get_or_insert_with(|| {
                            Call::new(
                                self.keys.index_key.clone(),
                                self.watermark_key.clone(),
                                self.rules.marker_field.clone(),
                            )
                        })
                        .push(Member { index: i, filtered }, self.keys.flow_key(&ev.flow_id), step);
                }
            }
        }
        calls.extend(current);
        if !calls.is_empty() {
            let pipeline = self.client.pipeline();
            let mut members = Vec::with_capacity(calls.len());
            for call in calls {
                let _: () = pipeline
                    .custom(self.script.command(), self.script.args_owned(call.keys, call.args))
                    .await?;
                members.push(call.members);
            }
            let results = pipeline.try_all::<Value>().await;
            if results.iter().any(|r| matches!(r, Err(e) if script::is_noscript(e))) {
                return Ok(None);
            }
            for (members, r) in members.into_iter().zip(results) {
                match r {
                    Ok(reply) => {
                        for (m, step) in members.iter().zip(Step::parse_call(reply, members.len())) {
                            outcomes[m.index] = Some(outcome(step, m.filtered));
                        }
                    }
                    Err(e) if redmirror_redis::is_permanent(&e) => {
                        for m in members {
                            outcomes[m.index] = Some(Outcome::DeadLetter {
                                code: "write_failed",
                                reason: format!("destination refused the write: {}", e.details()),
                            });
                        }
                    }
                    Err(e) => return Err(Transient(e)),
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

    /// The event's step and whether it is a filtered flow, or an outcome
    /// decided without the destination.
    fn prepare(&self, ev: &FlowEvent, force: bool) -> Result<(StepArgs, bool), Outcome> {
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
        let step = StepArgs {
            flow_id: ev.flow_id.clone(),
            order: ev.order().encode(),
            upsert,
            force,
            copy,
        };
        Ok((step, filtered))
    }
}

/// The outcome of one event's reply.
fn outcome(step: Result<Step, Malformed>, filtered: bool) -> Outcome {
    match step {
        Ok(Step::Applied) => Outcome::Applied,
        Ok(Step::Deleted) if filtered => Outcome::SkippedFiltered,
        Ok(Step::Deleted) => Outcome::Deleted,
        Ok(Step::SkippedNative) => Outcome::SkippedNative,
        Ok(Step::SkippedStale) => Outcome::SkippedStale,
        Ok(Step::WrongType(ty)) => Outcome::DeadLetter {
            code: "wrong_type",
            reason: format!("destination key has type {ty}, not a hash"),
        },
        Err(Malformed(reply)) => Outcome::DeadLetter {
            code: "unexpected_reply",
            reason: format!("apply script replied {reply}"),
        },
    }
}
