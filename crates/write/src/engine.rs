//! The engine: events in, one guarded script step each, outcomes out.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use fred::prelude::*;
use fred::types::Value;
use redmirror_core::event::{DeleteReason, Op};
use redmirror_core::{slot, FlowEvent, KeyLayout, MirrorRules};
use redmirror_redis::{script, Script};
use redmirror_telemetry::metrics::ApplyOutcome;

use crate::script::{Call, Malformed, Member, Step, StepArgs, APPLY, INDEX};
use redmirror_core::rules::MARKER_VALUE;

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
    /// An upsert made under other field rules than the current ones
    /// (SPEC section 8): never written, so old history cannot bring back a
    /// value the current rules hide. Holds the event's fingerprint.
    SkippedRules(String),
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
            Outcome::SkippedRules(_) => ApplyOutcome::SkippedRules,
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
#[error("destination write failed (will retry)")]
pub struct Transient(#[from] pub fred::error::Error);

/// Applies events to the destination.
///
/// On a standalone destination each script call carries the index with
/// it: one atomic step per event. On a Redis Cluster
/// ([`redmirror_redis::is_cluster`]) a script may touch one slot only, so
/// the batch is grouped by the slot of each flow key (a flow always falls in
/// one group, in batch order) and each call guards and writes its flows
/// against that slot's watermark hash
/// ([`KeyLayout::watermark_key_in`]); the index is then kept in step by a
/// second, idempotent step after every reply of the first, guarded by the
/// flow read again and by order (see `index_step`). A crash between the two leaves the
/// offsets unstored: the events are read again, and one whose order equals
/// its watermark is applied again, so the second step runs then.
#[derive(Clone)]
pub struct ApplyEngine {
    client: Client,
    script: Script,
    index_script: Script,
    keys: KeyLayout,
    rules: MirrorRules,
    watermark_key: Bytes,
    clustered: bool,
    skip_index_step: bool,
    throttle: crate::Throttle,
}

/// What the second step does to a flow's index field (cluster only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IndexAction {
    Set,
    Remove,
}

/// The index step a batch's first step implies on a cluster destination.
#[doc(hidden)]
#[derive(Debug)]
pub struct IndexPlan {
    /// Per flow: the action of its last event that wrote.
    flows: HashMap<Bytes, PlannedIndex>,
    /// A rewind: the orders of earlier index changes are ignored.
    force: bool,
}

/// One flow's part of an [`IndexPlan`].
#[derive(Debug)]
struct PlannedIndex {
    action: IndexAction,
    /// The order of the event behind the action, encoded.
    order: String,
    /// The events behind it, by their place in the batch.
    events: Vec<usize>,
}

impl ApplyEngine {
    /// An engine writing through `client` (standalone or clustered, as
    /// `redmirror_redis::connect` returned it).
    pub fn new(client: Client, keys: KeyLayout, rules: MirrorRules) -> Self {
        ApplyEngine {
            clustered: redmirror_redis::is_cluster(&client),
            client,
            script: Script::new(APPLY),
            index_script: Script::new(INDEX),
            watermark_key: Bytes::from(keys.watermark_key()),
            keys,
            rules,
            skip_index_step: false,
            throttle: crate::Throttle::unlimited(),
        }
    }

    /// Writes through `throttle` (`REDMIRROR_APPLY_MAX_RATE`, `replay
    /// --max-rate`): [`ApplyEngine::apply`] then writes a batch in slices of
    /// at most [`crate::Throttle::burst`] events, each when the limit allows.
    pub fn with_throttle(mut self, throttle: crate::Throttle) -> Self {
        self.throttle = throttle;
        self
    }

    /// The write limit this engine follows.
    pub fn throttle(&self) -> &crate::Throttle {
        &self.throttle
    }

    /// For tests of the crash between the two steps of a cluster write: an
    /// engine that never sends the second step (the index).
    #[doc(hidden)]
    pub fn without_index_step(mut self) -> Self {
        self.skip_index_step = true;
        self
    }

    /// The rules this engine writes under.
    pub fn rules(&self) -> &MirrorRules {
        &self.rules
    }

    /// The destination client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Applies `events` in order in one pipelined round trip (per-flow order
    /// holds: one connection executes them in sequence; on a cluster, a
    /// flow's events are in one slot's calls, on that slot's node's
    /// connection), then, on a cluster, the index step. `force` ignores the
    /// watermark (rewind). Decode failures and permanent per-event errors
    /// become [`Outcome::DeadLetter`]; a transient error fails the whole batch,
    /// which is safe to retry (every step is idempotent).
    ///
    /// Under a write limit ([`ApplyEngine::with_throttle`]) the batch is
    /// written in slices, each waiting for the limit; per-flow order holds
    /// (slices go one after another), and a transient error fails the whole
    /// batch as before.
    pub async fn apply<E>(&self, events: &[E], force: bool) -> Result<Vec<Outcome>, Transient>
    where
        E: std::borrow::Borrow<Decoded> + Sync,
    {
        let burst = self.throttle.burst();
        if events.len() <= burst {
            self.throttle.acquire(events.len()).await;
            return self.apply_now(events, force).await;
        }
        let mut outcomes = Vec::with_capacity(events.len());
        for slice in events.chunks(burst) {
            self.throttle.acquire(slice.len()).await;
            outcomes.extend(self.apply_now(slice, force).await?);
        }
        Ok(outcomes)
    }

    /// [`ApplyEngine::apply`] without waiting for the write limit: for a
    /// caller that waited itself ([`crate::Throttle::acquire`], for at most
    /// [`crate::Throttle::burst`] events).
    pub async fn apply_now<E>(&self, events: &[E], force: bool) -> Result<Vec<Outcome>, Transient>
    where
        E: std::borrow::Borrow<Decoded> + Sync,
    {
        // The script is loaded at start; after a destination restart the
        // first attempt meets NOSCRIPT, loads it (on every primary of a
        // cluster) and builds the calls again (rare, so the arguments are
        // not kept for it).
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

    /// A new script call for flows in `slot` (ignored on standalone).
    fn new_call(&self, slot: u16) -> Call {
        if self.clustered {
            Call::new(
                None,
                Bytes::from(self.keys.watermark_key_in(slot)),
                self.rules.marker_field.clone(),
            )
        } else {
            Call::new(
                Some(self.keys.index_key.clone()),
                self.watermark_key.clone(),
                self.rules.marker_field.clone(),
            )
        }
    }

    /// One pipelined round trip (plus the index step on a cluster); `None`
    /// when the script was not loaded.
    async fn attempt<E>(&self, events: &[E], force: bool) -> Result<Option<Vec<Outcome>>, Transient>
    where
        E: std::borrow::Borrow<Decoded> + Sync,
    {
        let Some((mut outcomes, plan)) = self.first_step(events, force).await? else {
            return Ok(None);
        };
        if !plan.flows.is_empty() && !self.skip_index_step {
            self.index_step(plan, &mut outcomes).await?;
        }
        Ok(Some(
            outcomes
                .into_iter()
                .map(|o| o.expect("every event has an outcome"))
                .collect(),
        ))
    }

    /// For tests of two batches in flight on a cluster: the first step of
    /// `events` now, and the index step it implies, to run later with
    /// [`ApplyEngine::index_step_later`].
    #[doc(hidden)]
    pub async fn apply_first_step<E>(&self, events: &[E], force: bool) -> Result<(Vec<Outcome>, IndexPlan), Transient>
    where
        E: std::borrow::Borrow<Decoded> + Sync,
    {
        let (outcomes, plan) = match self.first_step(events, force).await? {
            Some(done) => done,
            None => {
                self.script.load(&self.client).await?;
                self.first_step(events, force).await?.ok_or_else(|| {
                    Transient(fred::error::Error::new(
                        fred::error::ErrorKind::Unknown,
                        "NOSCRIPT after loading the apply script",
                    ))
                })?
            }
        };
        let outcomes = outcomes.into_iter().map(|o| o.expect("an outcome")).collect();
        Ok((outcomes, plan))
    }

    /// For tests: the index step of an earlier [`ApplyEngine::apply_first_step`].
    #[doc(hidden)]
    pub async fn index_step_later(&self, plan: IndexPlan) -> Result<(), Transient> {
        let n = plan
            .flows
            .values()
            .flat_map(|p| p.events.iter())
            .max()
            .map_or(0, |m| m + 1);
        let mut outcomes = vec![None; n];
        self.index_step(plan, &mut outcomes).await
    }

    /// The script calls, in one pipelined round trip: each event's outcome
    /// (`None` until its call answered) and, on a cluster, the index step
    /// they imply; `None` when the script was not loaded.
    async fn first_step<E>(
        &self,
        events: &[E],
        force: bool,
    ) -> Result<Option<(Vec<Option<Outcome>>, IndexPlan)>, Transient>
    where
        E: std::borrow::Borrow<Decoded> + Sync,
    {
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(events.len());
        let mut orders: Vec<String> = Vec::new();
        let mut calls: Vec<Call> = Vec::new();
        // The call being filled per slot (one group on standalone). A full
        // call is queued before its slot's next one: a flow's events stay
        // in order.
        let mut open: BTreeMap<u16, Call> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            let prepared = match e.borrow() {
                Err(d) => Err(Outcome::DeadLetter {
                    code: d.code(),
                    reason: d.to_string(),
                }),
                Ok(ev) => self.prepare(ev, force).map(|p| (ev, p)),
            };
            if self.clustered {
                orders.push(
                    prepared
                        .as_ref()
                        .map(|(_, (step, _))| step.order.clone())
                        .unwrap_or_default(),
                );
            }
            match prepared {
                Err(o) => outcomes.push(Some(o)),
                Ok((ev, (step, filtered))) => {
                    outcomes.push(None);
                    let flow_key = self.keys.flow_key(&ev.flow_id);
                    let group = if self.clustered { slot::of(&flow_key) } else { 0 };
                    if open.get(&group).is_some_and(|c| c.is_full_for(&step)) {
                        calls.extend(open.remove(&group));
                    }
                    open.entry(group).or_insert_with(|| self.new_call(group)).push(
                        Member {
                            index: i,
                            flow_id: ev.flow_id.clone(),
                            filtered,
                        },
                        flow_key,
                        step,
                    );
                }
            }
        }
        calls.extend(open.into_values());
        // Cluster only: per flow, the index change of its last event that
        // wrote, that event's order, and the events behind it.
        let mut plan = IndexPlan {
            flows: HashMap::new(),
            force,
        };
        if !calls.is_empty() {
            let pipeline = self.client.pipeline();
            let mut members = Vec::with_capacity(calls.len());
            for call in calls {
                let command = self.script.command(call.keys.first().map(|k| k.as_ref()));
                let _: () = pipeline
                    .custom(command, self.script.args_owned(call.keys, call.args))
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
                            let action = match step {
                                Ok(Step::Applied) => Some(IndexAction::Set),
                                Ok(Step::DeletedOwned) => Some(IndexAction::Remove),
                                _ => None,
                            };
                            if let (Some(action), true) = (action, self.clustered) {
                                let entry = plan.flows.entry(m.flow_id.clone()).or_insert(PlannedIndex {
                                    action,
                                    order: String::new(),
                                    events: Vec::new(),
                                });
                                entry.action = action;
                                entry.order.clone_from(&orders[m.index]);
                                entry.events.push(m.index);
                            }
                            outcomes[m.index] = Some(outcome(step, m.filtered));
                        }
                    }
                    Err(e) if redmirror_redis::is_permanent(&e) => {
                        for m in members {
                            outcomes[m.index] = Some(write_failed(&e));
                        }
                    }
                    Err(e) => return Err(Transient(e)),
                }
            }
        }
        Ok(Some((outcomes, plan)))
    }

    /// The second step on a cluster: the index changes the first step's
    /// results imply, guarded twice.
    ///
    /// - **By the flow, read again.** A field is set only while the flow is
    ///   a sync copy, and removed only while the flow key is absent: a native
    ///   flow created since the first step keeps its index field as its users
    ///   left it, and a copy a later event wrote again keeps its field (that
    ///   event's own step sets it). One pipelined read of every flow key.
    /// - **By order.** One script call on the index's slot ([`INDEX`]) changes
    ///   a flow's field only for an event no older than the one behind its
    ///   last change, kept in [`KeyLayout::index_order_key`]: when two
    ///   batches' steps land out of order, the newer event's word stands.
    ///
    /// Idempotent: running it again after a retry or a crash changes nothing
    /// more. A refusal the server will never lift dead-letters the events
    /// behind it, as the standalone script's failure would.
    async fn index_step(&self, plan: IndexPlan, outcomes: &mut [Option<Outcome>]) -> Result<(), Transient> {
        let flows: Vec<(Bytes, PlannedIndex)> = plan.flows.into_iter().collect();
        let pipeline = self.client.pipeline();
        for (flow_id, p) in &flows {
            let fk = Value::Bytes(self.keys.flow_key(flow_id));
            let _: () = match p.action {
                IndexAction::Set => {
                    pipeline
                        .custom(
                            fred::types::CustomCommand::new_static("HGET", fred::types::ClusterHash::FirstKey, false),
                            vec![fk, Value::Bytes(self.rules.marker_field.clone())],
                        )
                        .await?
                }
                IndexAction::Remove => {
                    pipeline
                        .custom(
                            fred::types::CustomCommand::new_static("EXISTS", fred::types::ClusterHash::FirstKey, false),
                            vec![fk],
                        )
                        .await?
                }
            };
        }
        let mut args = vec![Value::from(if plan.force { "1" } else { "0" })];
        let mut behind = Vec::new();
        for ((flow_id, p), read) in flows.into_iter().zip(pipeline.try_all::<Value>().await) {
            let still = match (p.action, read) {
                (IndexAction::Set, Ok(v)) => v.as_bytes() == Some(MARKER_VALUE),
                (IndexAction::Remove, Ok(v)) => v.as_i64() == Some(0),
                (_, Err(e)) if redmirror_redis::is_permanent(&e) => {
                    for &i in &p.events {
                        outcomes[i] = Some(write_failed(&e));
                    }
                    false
                }
                (_, Err(e)) => return Err(Transient(e)),
            };
            if still {
                args.push(Value::Bytes(flow_id));
                args.push(Value::from(p.order));
                args.push(Value::from(match p.action {
                    IndexAction::Set => "s",
                    IndexAction::Remove => "r",
                }));
                behind.extend(p.events);
            }
        }
        if args.len() == 1 {
            return Ok(());
        }
        let order_key = self.keys.index_order_key();
        let keys: [&[u8]; 2] = [&self.keys.index_key, order_key.as_bytes()];
        let result = self.index_script.call(&self.client, &keys, args).await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if redmirror_redis::is_permanent(&e) => {
                for i in behind {
                    outcomes[i] = Some(write_failed(&e));
                }
                Ok(())
            }
            Err(e) => Err(Transient(e)),
        }
    }

    /// The event's step and whether it is a filtered flow, or an outcome
    /// decided without the destination.
    fn prepare(&self, ev: &FlowEvent, force: bool) -> Result<(StepArgs, bool), Outcome> {
        // An upsert made under other field rules may hold a value the
        // current rules drop or mask: never written (a pass brings the flow
        // back under the current rules). A delete reveals nothing.
        if ev.is_upsert() && !self.rules.fields.accepts(&ev.rules) {
            return Err(Outcome::SkippedRules(ev.rules.clone()));
        }
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
            // An external tombstone has no place in the order: it deletes
            // whatever was applied before (see `FlowEvent::external_tombstone`).
            force: force || ev.is_external_tombstone(),
            copy,
        };
        Ok((step, filtered))
    }
}

/// The dead letter of an event whose write the destination refused.
fn write_failed(e: &fred::error::Error) -> Outcome {
    Outcome::DeadLetter {
        code: "write_failed",
        reason: format!("destination refused the write: {}", e.details()),
    }
}

/// The outcome of one event's reply.
fn outcome(step: Result<Step, Malformed>, filtered: bool) -> Outcome {
    match step {
        Ok(Step::Applied) => Outcome::Applied,
        Ok(Step::Deleted | Step::DeletedOwned) if filtered => Outcome::SkippedFiltered,
        Ok(Step::Deleted | Step::DeletedOwned) => Outcome::Deleted,
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
