//! Replay and rewind.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::IsTerminal;
use std::time::Instant;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::Value;
use redmirror_apply::engine::{ApplyEngine, Decoded, Outcome};
use redmirror_core::diff::{self, DestFlow};
use redmirror_core::event::{DeleteReason, Origin};
use redmirror_core::{FlowEvent, KeyLayout, MirrorRules};
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
    /// Apply older snapshots too (rewind); with `until_us`, flows that did
    /// not exist at that time are removed.
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
    /// Outcomes (apply's labels).
    pub outcomes: BTreeMap<String, u64>,
    /// Flows removed by a rewind because they did not exist at `--until`.
    pub rewound_away: u64,
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

struct Progress {
    enabled: bool,
    started: Instant,
    last: Instant,
    total: u64,
}

impl Progress {
    fn tick(&mut self, read: u64, force: bool) {
        if !self.enabled || (!force && self.last.elapsed().as_millis() < 250) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = read as f64 / secs;
        let total = self.total.max(read);
        let eta = if rate > 0.0 { (total - read) as f64 / rate } else { 0.0 };
        eprint!("\rreplay: {read} / ~{total} events, {rate:.0}/s, ETA {eta:.0}s   ");
        if force {
            eprintln!();
        }
    }
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
    let mut reader = TopicReader::open(kafka, &opts.topic, &opts.start).await?;
    let mut progress = Progress {
        enabled: opts.progress && std::io::stderr().is_terminal(),
        started,
        last: started,
        total: reader.estimated_total,
    };
    let mut report = ReplayReport::default();
    let mut batch: Vec<Decoded> = Vec::with_capacity(opts.batch);
    // Rewind bookkeeping: flows seen at or before --until, and flows seen only after.
    let mut before: HashSet<Bytes> = HashSet::new();
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
            if let (Ok(ev), Some(until)) = (&decoded, opts.until_us) {
                if ev.source_time_us > until {
                    report.after_until += 1;
                    if !before.contains(&ev.flow_id) {
                        only_after.insert(ev.flow_id.clone());
                    }
                    continue;
                }
                before.insert(ev.flow_id.clone());
                only_after.remove(&ev.flow_id);
            }
            if opts.dry_run {
                match decoded {
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
    // A rewind removes the copies of flows that did not exist yet at --until.
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

/// Counts the outcomes of one written batch.
fn tally(
    report: &mut ReplayReport,
    joined: Result<Result<Vec<Outcome>, Error>, tokio::task::JoinError>,
) -> Result<(), Error> {
    let outcomes = joined.map_err(|e| Error::Usage(format!("replay writer task failed: {e}")))??;
    for o in outcomes {
        *report.outcomes.entry(o.label().to_string()).or_default() += 1;
    }
    Ok(())
}

async fn apply_with_retry(engine: &ApplyEngine, batch: &[Decoded], force: bool) -> Result<Vec<Outcome>, Error> {
    let mut backoff = std::time::Duration::from_millis(50);
    for _ in 0..20 {
        match engine.apply(batch, force).await {
            Ok(o) => return Ok(o),
            Err(e) => {
                tracing::warn!(error = %e, "Destination write failed; retrying.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
    Err(Error::Usage(
        "the destination kept failing; replay stopped (nothing was skipped: run it again)".into(),
    ))
}

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
    let wm_key = keys.watermark_key();
    for chunk in events.chunks(500) {
        let pipe = dest.pipeline();
        for ev in chunk {
            let _: () = pipe.hgetall(keys.flow_key(&ev.flow_id)).await?;
            let _: () = pipe.hget(wm_key.as_str(), ev.flow_id.clone()).await?;
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
            source,
        })?;
    let list = c
        .fetch_group_list(Some(group), redmirror_kafka::ADMIN_TIMEOUT)
        .map_err(|e| Error::Usage(format!("cannot list the members of consumer group {group}: {e}")))?;
    Ok(list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .map(|g| g.members().len())
        .sum())
}
