//! Replay and rewind.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::Value;
use redmirror_core::diff::{self, DestFlow};
use redmirror_core::event::{DeleteReason, Origin};
use redmirror_core::{FlowEvent, KeyLayout, MirrorRules, Order};
use redmirror_telemetry::progress::Progress;
use redmirror_write::{ApplyEngine, Decoded, Outcome};
use serde::Serialize;

use crate::reader::{Start, TopicReader};
use crate::Error;

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Change topic.
    pub topic: String,
    /// Where to start.
    pub start: Start,
    /// Only events whose source time is at or before this (µs).
    pub until_us: Option<i64>,
    /// Report what would change without writing.
    pub dry_run: bool,
    /// Apply older snapshots too (rewind): each flow gets its latest state
    /// at or before `until_us` (or in the whole history), rebuilt from the
    /// topic's beginning whatever `start` says; with `until_us`, flows that
    /// did not exist at that time are removed.
    pub force: bool,
    /// Events per destination round trip.
    pub batch: usize,
    /// Show progress on the terminal.
    pub progress: bool,
}

/// Result of a replay.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReplayReport {
    /// Messages read.
    pub read: u64,
    /// Events past `--until`, not applied.
    pub after_until: u64,
    /// Upserts made under other field rules than the current ones (SPEC
    /// section 8), not applied (also in `outcomes` as `skipped_rules`): a
    /// reconcile pass brings those flows back under the current rules.
    pub skipped_rules: u64,
    /// Outcomes (apply's labels).
    pub outcomes: BTreeMap<String, u64>,
    /// Flows removed by a rewind because they did not exist at `--until`.
    pub rewound_away: u64,
    /// Events a rewind did not apply because the same flow has a later
    /// event at or before `--until` (only the latest state counts).
    pub superseded: u64,
    /// A rewind's partitions were read from their beginning (whatever
    /// `--from-*` said): the state at `--until` needs the whole history.
    pub read_from_beginning: bool,
    /// Since when the topic's history is known complete (RFC 3339): the
    /// change topic keeps every record younger than `min.compaction.lag.ms`
    /// (and `retention.ms`), so a rewind to a time after this is exact.
    /// `None`: the history is complete as far back as it goes.
    pub exact_since: Option<String>,
    /// Flows a rewind to before `exact_since` may have got wrong: they have
    /// no record at or before `--until`, so they are taken as created after
    /// it, but compaction (or retention) may have removed their older
    /// records. At most 100 listed; see `approximate`.
    pub approximate_flows: Vec<String>,
    /// How many flows may be approximate.
    pub approximate: u64,
    /// Dry run: what would change, per flow.
    pub changes: Vec<Change>,
    /// Seconds taken.
    pub seconds: f64,
    /// Events per second.
    pub per_second: f64,
}

/// One flow a dry run would change.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    /// Flow id.
    pub flow_id: String,
    /// `create`, `update` or `delete`.
    pub action: String,
    /// Fields that would change (for updates).
    pub fields: Vec<String>,
}

/// Re-applies history through apply's engine.
pub async fn replay(
    kafka: &redmirror_kafka::Kafka,
    engine: &ApplyEngine,
    keys: &KeyLayout,
    rules: &MirrorRules,
    opts: &ReplayOptions,
) -> Result<ReplayReport, Error> {
    let started = Instant::now();
    let mut report = ReplayReport::default();
    let start = if opts.force && opts.start != Start::Beginning {
        report.read_from_beginning = true;
        Start::Beginning
    } else {
        opts.start.clone()
    };
    let exact_since_us = if opts.force && opts.until_us.is_some() && !kafka.embedded {
        exact_since(kafka, &opts.topic).await?
    } else {
        None
    };
    report.exact_since = exact_since_us.map(redmirror_core::text::rfc3339_us);
    let mut reader = TopicReader::open(kafka, &opts.topic, &start).await?;
    let mut progress = Progress::new("replay", "events", reader.estimated_total, opts.progress);
    let mut batch: Vec<Decoded> = Vec::with_capacity(opts.batch);
    // Rewind bookkeeping: per flow, the latest order applied at or before
    // --until (events of one flow are in one partition, read in order, but
    // a reconcile repair may follow a newer capture event: the order
    // decides), and the flows seen only after --until.
    let mut best: HashMap<Bytes, Order> = HashMap::new();
    let mut only_after: HashSet<Bytes> = HashSet::new();
    // Dry run: the latest applicable event per flow.
    let mut latest: HashMap<Bytes, FlowEvent> = HashMap::new();
    let mut in_flight: VecDeque<tokio::task::JoinHandle<Result<Vec<Outcome>, Error>>> = VecDeque::new();
    // Two batches are written at once (the destination executes one while
    // the next one's calls are built), except in a rewind: --force ignores
    // the watermarks, so a retried batch must never land after a later one.
    let depth = if opts.force { 1 } else { 2 };
    loop {
        let msg = reader.next().await?;
        let done = msg.is_none();
        if let Some(m) = msg {
            report.read += 1;
            let decoded = redmirror_kafka::decode_event(&m);
            if let Ok(ev) = &decoded {
                if opts.until_us.is_some_and(|until| after_until(ev, until)) {
                    report.after_until += 1;
                    if opts.force && !best.contains_key(&ev.flow_id) {
                        only_after.insert(ev.flow_id.clone());
                    }
                    continue;
                }
                if opts.force {
                    if best.get(&ev.flow_id).is_some_and(|o| *o > ev.order()) {
                        report.superseded += 1;
                        continue;
                    }
                    best.insert(ev.flow_id.clone(), ev.order());
                    only_after.remove(&ev.flow_id);
                }
            }
            if opts.dry_run {
                match decoded {
                    Ok(ev) if ev.is_upsert() && !rules.fields.accepts(&ev.rules) => {
                        report.skipped_rules += 1;
                        *report.outcomes.entry("skipped_rules".into()).or_default() += 1;
                    }
                    Ok(ev) => {
                        let keep = latest.get(&ev.flow_id).is_none_or(|old| old.order() <= ev.order());
                        if keep {
                            latest.insert(ev.flow_id.clone(), ev);
                        }
                    }
                    Err(_) => *report.outcomes.entry("dead_lettered".into()).or_default() += 1,
                }
            } else {
                batch.push(decoded);
            }
        }
        if !batch.is_empty() && (done || batch.len() >= opts.batch) {
            // Batches are written while the next one is read and decoded.
            // Without --force, a batch that lands out of order (only when
            // one is retried) is safe: the watermark skips the older event.
            let full = std::mem::replace(&mut batch, Vec::with_capacity(opts.batch));
            while in_flight.len() >= depth {
                let prev = in_flight.pop_front().expect("non-empty");
                tally(&mut report, prev.await)?;
            }
            let (engine, force) = (engine.clone(), opts.force);
            in_flight.push_back(tokio::spawn(
                async move { apply_with_retry(&engine, &full, force).await },
            ));
        }
        progress.tick(report.read, false);
        if done {
            break;
        }
    }
    while let Some(prev) = in_flight.pop_front() {
        tally(&mut report, prev.await)?;
    }
    // A rewind removes the copies of flows that did not exist yet at --until;
    // before the exact window, some of them may have existed.
    if let (Some(exact), Some(until)) = (exact_since_us, opts.until_us) {
        if until < exact {
            report.approximate = only_after.len() as u64;
            let mut ids: Vec<String> = only_after.iter().map(|id| redmirror_core::text::lossy(id)).collect();
            ids.sort();
            ids.truncate(100);
            report.approximate_flows = ids;
        }
    }
    if let (true, Some(until), false) = (opts.force, opts.until_us, only_after.is_empty()) {
        let deletes: Vec<FlowEvent> = only_after
            .into_iter()
            .map(|id| FlowEvent::delete(id, DeleteReason::Absent, until, Origin::Resync, "rewind"))
            .collect();
        if opts.dry_run {
            for ev in deletes {
                latest.insert(ev.flow_id.clone(), ev);
            }
        } else {
            for chunk in deletes.chunks(opts.batch) {
                let decoded: Vec<Decoded> = chunk.iter().cloned().map(Ok).collect();
                for o in apply_with_retry(engine, &decoded, true).await? {
                    if o.wrote() {
                        report.rewound_away += 1;
                    }
                }
            }
        }
    }
    if opts.dry_run {
        report.changes = dry_run_changes(engine.client(), keys, rules, latest, opts.force).await?;
    }
    progress.tick(report.read, true);
    report.seconds = started.elapsed().as_secs_f64();
    report.per_second = report.read as f64 / report.seconds.max(1e-9);
    Ok(report)
}

/// Since when (µs) the change topic is known to keep every record, from
/// its settings: compaction leaves alone records younger than
/// `min.compaction.lag.ms`, so for a time T inside that window the latest
/// record of each flow at or before T is still there (a later record that
/// could replace it is itself too young to be compacted); `retention.ms`
/// (with `cleanup.policy=delete`) removes whole old segments. `None`: the
/// topic keeps everything.
async fn exact_since(kafka: &redmirror_kafka::Kafka, topic: &str) -> Result<Option<i64>, Error> {
    let settings = redmirror_kafka::topics::settings(kafka, topic).await?;
    let ms = |name: &str| settings.get(name).and_then(|v| v.parse::<i64>().ok());
    let policy = settings.get("cleanup.policy").map_or("delete", String::as_str);
    let now = redmirror_core::now_us();
    let mut since: Option<i64> = None;
    if policy.contains("compact") {
        since = Some(now - ms("min.compaction.lag.ms").unwrap_or(0).max(0).saturating_mul(1000));
    }
    if policy.contains("delete") {
        if let Some(r) = ms("retention.ms").filter(|r| *r >= 0) {
            let s = now - r.saturating_mul(1000);
            since = Some(since.map_or(s, |c| c.max(s)));
        }
    }
    Ok(since)
}

/// Counts the outcomes of one written batch.
fn tally(
    report: &mut ReplayReport,
    joined: Result<Result<Vec<Outcome>, Error>, tokio::task::JoinError>,
) -> Result<(), Error> {
    let outcomes = joined.map_err(|e| Error::Runtime(format!("replay writer task failed: {e}")))??;
    for o in outcomes {
        if let Outcome::SkippedRules(_) = o {
            report.skipped_rules += 1;
        }
        *report.outcomes.entry(o.label().to_string()).or_default() += 1;
    }
    Ok(())
}

/// Writes a batch, retrying a failed write (nothing skipped) up to
/// [`WRITE_ATTEMPTS`] times.
async fn apply_with_retry(engine: &ApplyEngine, batch: &[Decoded], force: bool) -> Result<Vec<Outcome>, Error> {
    use redmirror_write::retry::{until_written, Retried};
    // Ctrl-C ends the command itself; nothing else stops a replay's retries.
    let never = tokio_util::sync::CancellationToken::new();
    match until_written(
        batch.len(),
        &never,
        Some(WRITE_ATTEMPTS),
        |_| {},
        || engine.apply(batch, force),
    )
    .await
    {
        Retried::Written(outcomes) => Ok(outcomes),
        Retried::Stopped => Err(Error::Runtime(
            "replay stopped (nothing was skipped: run it again)".into(),
        )),
        Retried::GaveUp(e) => Err(Error::Runtime(format!(
            "the destination kept failing ({}); replay stopped (nothing was skipped: run it again)",
            redmirror_redis::describe(&e.0)
        ))),
    }
}

/// Failed writes of one batch before a replay stops (about a minute and
/// a half with the backoff).
const WRITE_ATTEMPTS: u32 = 20;

/// For each flow's latest event: would applying it change the destination?
async fn dry_run_changes(
    dest: &Client,
    keys: &KeyLayout,
    rules: &MirrorRules,
    latest: HashMap<Bytes, FlowEvent>,
    force: bool,
) -> Result<Vec<Change>, Error> {
    let mut out = Vec::new();
    let events: Vec<FlowEvent> = latest.into_values().collect();
    // A cluster destination keeps each flow's watermark in the hash of its
    // flow key's slot.
    let clustered = redmirror_redis::is_cluster(dest);
    let wm_key = keys.watermark_key();
    for chunk in events.chunks(500) {
        let pipe = dest.pipeline();
        for ev in chunk {
            let flow_key = keys.flow_key(&ev.flow_id);
            let wm = if clustered {
                keys.watermark_key_in(redmirror_core::slot::of(&flow_key))
            } else {
                wm_key.clone()
            };
            let _: () = pipe.hgetall(flow_key).await?;
            let _: () = pipe.hget(wm, ev.flow_id.clone()).await?;
        }
        let results = pipe.try_all::<Value>().await;
        for (i, ev) in chunk.iter().enumerate() {
            let dest_state = match &results[2 * i] {
                Ok(v) => {
                    let fields = redmirror_redis::value::pairs(v.clone());
                    if fields.is_empty() {
                        DestFlow::Absent
                    } else if rules.is_sync_copy(&fields) {
                        DestFlow::SyncCopy(fields)
                    } else {
                        DestFlow::Native
                    }
                }
                Err(_) => DestFlow::WrongType,
            };
            let watermark = results[2 * i + 1]
                .as_ref()
                .ok()
                .and_then(redmirror_redis::value::bytes)
                .and_then(|b| redmirror_core::Order::parse(&b));
            if !force && watermark.is_some_and(|w| w > ev.order()) {
                continue; // stale: would be skipped
            }
            let fields: Vec<(Bytes, Bytes)> = ev.fields.iter().map(|f| (f.name.clone(), f.value.clone())).collect();
            let expected = (ev.is_upsert() && !rules.is_filtered(&fields)).then(|| rules.expected_copy(&fields));
            if let Some(d) = diff::compare(expected.as_deref(), &dest_state, true) {
                let action = match d.kind {
                    diff::DriftKind::Missing => "create",
                    diff::DriftKind::Extra => "delete",
                    diff::DriftKind::Different => "update",
                };
                out.push(Change {
                    flow_id: redmirror_core::text::lossy(&ev.flow_id),
                    action: action.to_string(),
                    fields: d.fields,
                });
            }
        }
    }
    out.sort_by(|a, b| a.flow_id.cmp(&b.flow_id));
    Ok(out)
}

/// Members of `group` currently consuming (apply instances), if the broker tells.
pub fn active_members(kafka: &redmirror_kafka::Kafka, group: &str) -> Result<usize, Error> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = kafka
        .client_config(&[])
        .create()
        .map_err(|source| redmirror_kafka::Error::Client {
            what: "admin consumer",
            source: source.into(),
        })?;
    let list = c
        .fetch_group_list(Some(group), redmirror_kafka::ADMIN_TIMEOUT)
        .map_err(|e| Error::Runtime(format!("cannot list the members of consumer group {group}: {e}")))?;
    Ok(list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .map(|g| g.members().len())
        .sum())
}

/// True when `ev` was made after `until_us` (`--until`). The source time
/// alone is not enough: after a failover to a host whose clock is behind,
/// a change made after T carries a source time before it (a newer epoch
/// orders it right, but the bound is a time). So an event is also after T
/// when it was captured after T: its capture time comes from the capturing
/// process's clock, which does not step back with the source.
///
/// The capturing host may run a little ahead of the source: a capture time
/// up to [`CAPTURE_CLOCK_MARGIN_US`] past T still counts as before it. An
/// event without a capture time (a tombstone) is judged by its source time.
fn after_until(ev: &redmirror_core::FlowEvent, until_us: i64) -> bool {
    ev.source_time_us > until_us || (ev.capture_time_us > 0 && ev.capture_time_us > until_us + CAPTURE_CLOCK_MARGIN_US)
}

/// How far past `--until` an event's capture time may be while it still
/// counts as made at or before it (a capturing host slightly ahead of the
/// source): 2 s.
pub const CAPTURE_CLOCK_MARGIN_US: i64 = 2_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use redmirror_core::event::Origin;

    const T: i64 = 1_700_000_000_000_000;
    const HOUR: i64 = 3_600_000_000;

    fn event(source_us: i64, capture_us: i64, epoch: u64) -> redmirror_core::FlowEvent {
        let mut e =
            redmirror_core::FlowEvent::upsert(Bytes::from_static(b"f"), Vec::new(), source_us, Origin::Capture, "hset")
                .in_epoch(epoch);
        e.capture_time_us = capture_us;
        e
    }

    #[test]
    fn a_change_made_after_t_on_a_source_whose_clock_is_behind_is_after_t() {
        // Before T, captured at once.
        assert!(!after_until(&event(T - 1_000, T - 900, 1), T));
        // After T by the source's clock.
        assert!(after_until(&event(T + 1, T + 100, 1), T));
        // After a failover to a host an hour behind: stamped before T by the
        // source, captured a minute after T.
        assert!(after_until(&event(T - HOUR + 60_000_000, T + 60_000_000, 2), T));
        // A capturing host a little ahead of the source does not push a
        // change made just before T past it.
        assert!(!after_until(&event(T - 1_000, T + 1_000_000, 1), T));
        // A tombstone carries no capture time: its source time decides.
        assert!(!after_until(&event(T - 1, 0, 0), T));
    }
}
