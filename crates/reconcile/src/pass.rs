//! One reconcile pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::prelude::*;
use futures::future::join_all;
use redmirror_core::diff::{self, DestFlow, Drift, DriftKind};
use redmirror_core::event::{DeleteReason, FlowEvent, Origin};
use redmirror_core::rules::Decision;
use redmirror_core::{CaptureProgress, KeyLayout, MirrorRules, Order, SourceFlow};
use redmirror_kafka::{Kafka, Publisher};
use redmirror_redis::bulk::{Bulk, Pipeline, Reply};
use redmirror_redis::routed::Routed;
use redmirror_redis::source::{ReadFlow, SourceReader};
use redmirror_telemetry::errors::Chain;
use redmirror_telemetry::metrics as m;

use crate::dest_read::{DestRead, DestReader};
use crate::digest::{suspicious, without_copy, Digests, SourceSummary};
use crate::error::{malformed, on};
pub use crate::error::{PassError, Side};
use crate::report::{Barrier, Report};
use crate::scan::hscan_pairs;

/// The flow id read at a pass's start for the source's clock (no flow has it).
const PROBE_FLOW_ID: &[u8] = b"\x00redmirror:pass-clock";

/// One of each, for the source and the destination.
#[derive(Debug)]
pub struct Sides<T> {
    /// Source side.
    pub source: T,
    /// Destination side.
    pub dest: T,
}

/// Settings of a pass.
#[derive(Debug, Clone)]
pub struct PassOptions {
    /// Keys per SCAN page and per pipelined read.
    pub batch: usize,
    /// Keys per second on each side (0: unlimited).
    pub rate_limit: u64,
    /// Report drift without publishing anything.
    pub dry_run: bool,
    /// Longest wait for apply to catch up with the topic before comparing.
    pub barrier_timeout: Duration,
    /// Counts the flows scanned so far on both sides, for a progress line
    /// (`reconcile --once` on a terminal).
    pub progress: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Only the flows in these hash slots (a targeted pass after a gap on
    /// some masters of a cluster source); `None`: every flow.
    pub slots: Option<Arc<std::collections::BTreeSet<u16>>>,
    /// Rewrite every sync copy of a source flow, counted as `different`,
    /// even one that matches. A full pass sets it itself when the
    /// destination's copies were written under other field rules (see
    /// [`Reconciler::rules_changed`]).
    pub rewrite_copies: bool,
}

impl Sides<redmirror_redis::routed::Routed> {
    /// Bulk-read connections to both sides (connected on first use).
    pub fn routed(both: &redmirror_config::BothSides) -> Result<Self, redmirror_redis::RedisError> {
        Ok(Sides {
            source: redmirror_redis::routed::Routed::new(&both.source)?,
            dest: redmirror_redis::routed::Routed::new(&both.dest)?,
        })
    }
}

impl PassOptions {
    /// A pass over every flow with the configured batch, rate and barrier.
    pub fn of(config: &redmirror_config::Config, dry_run: bool) -> PassOptions {
        PassOptions {
            batch: config.reconcile_batch,
            rate_limit: config.reconcile_rate_limit,
            dry_run,
            barrier_timeout: config.reconcile_barrier_timeout,
            progress: None,
            slots: None,
            rewrite_copies: false,
        }
    }

    /// True when the pass covers `flow_key`.
    fn covers(&self, flow_key: &[u8]) -> bool {
        self.slots
            .as_ref()
            .is_none_or(|s| s.contains(&redmirror_core::slot::of(flow_key)))
    }
}

/// Compares source and destination and repairs drift through Kafka.
#[derive(Clone)]
pub struct Reconciler {
    /// Source client.
    pub source: Client,
    /// Destination client.
    pub dest: Client,
    /// Publisher of repair events (change topic).
    pub publisher: Publisher,
    /// Kafka settings (for the barrier).
    pub kafka: Kafka,
    /// Apply's consumer group (for the barrier).
    pub group: String,
    /// Key layout.
    pub keys: KeyLayout,
    /// Rules.
    pub rules: MirrorRules,
    /// Bulk reads on each side (digests, existence checks).
    bulk: Arc<Sides<Routed>>,
    reader: Arc<SourceReader>,
    dest_reader: DestReader,
    digests: Digests,
}

/// Keys-per-second limit shared by the phases of a pass; it also counts
/// the flows scanned.
struct Limiter {
    rate: u64,
    start: Instant,
    done: std::sync::atomic::AtomicU64,
    progress: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl Limiter {
    async fn take(&self, n: u64) {
        let done = self.done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        if let Some(p) = &self.progress {
            p.store(done, std::sync::atomic::Ordering::Relaxed);
        }
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(done as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

impl Reconciler {
    /// A reconciler over these connections; `bulk` reads each side on
    /// connections of its own (see [`Routed`]: one set per master on a
    /// cluster), and `reader` reads flows to
    /// repair atomically with the source clock, in the source epoch.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source: Client,
        dest: Client,
        bulk: Sides<Routed>,
        reader: SourceReader,
        publisher: Publisher,
        kafka: Kafka,
        group: String,
        keys: KeyLayout,
        rules: MirrorRules,
    ) -> Self {
        Reconciler {
            bulk: Arc::new(bulk),
            digests: Digests::new(keys.clone(), &rules),
            reader: Arc::new(reader),
            dest_reader: DestReader::new(keys.clone(), &rules),
            source,
            dest,
            publisher,
            kafka,
            group,
            keys,
            rules,
        }
    }

    /// Waits until every change capture had received when the pass began
    /// is in Kafka (capture's progress key; see
    /// `redmirror_capture::ProgressReport`), then until apply's committed
    /// offsets reach the topic's end offsets as they are then, so in-flight
    /// events land before the comparison. Without the first step, events
    /// still queued in capture after a broker outage counted as drift.
    pub async fn barrier(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if !self.capture_settled(deadline).await {
            tracing::warn!("Capture has not published everything it received yet.");
            return false;
        }
        let (k, t) = (self.kafka.clone(), self.publisher.topic().to_string());
        let ends = match tokio::task::spawn_blocking(move || redmirror_kafka::offsets::end_offsets(&k, &t)).await {
            Ok(Ok(e)) => e,
            _ => return false,
        };
        loop {
            let (k, g, t) = (
                self.kafka.clone(),
                self.group.clone(),
                self.publisher.topic().to_string(),
            );
            if let Ok(Ok(committed)) =
                tokio::task::spawn_blocking(move || redmirror_kafka::offsets::committed(&k, &g, &t)).await
            {
                if ends
                    .iter()
                    .all(|(p, end)| *end == 0 || committed.get(p).is_some_and(|c| c >= end))
                {
                    return true;
                }
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// True once capture (if one reports progress) has settled every change
    /// it had received at the call, or has stopped or restarted since.
    async fn capture_settled(&self, deadline: Instant) -> bool {
        let key = self.keys.capture_progress_key();
        let read = || async {
            let v: Option<String> = self.dest.get(&key).await.ok().flatten();
            v.and_then(|v| CaptureProgress::parse(&v))
        };
        let Some(start) = read().await else {
            return true;
        };
        loop {
            match read().await {
                None => return true,
                Some(now) if now.run != start.run || now.settled >= start.received => return true,
                Some(_) => {}
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs one pass: the barrier, then three phases at the same time
    /// (each waits on its own Redis round trips, so together they keep
    /// both sides busy): every source flow against its copy, destination
    /// flows whose source is gone, and index entries without a copy.
    pub async fn run_pass(&self, opts: &PassOptions) -> Result<Report, PassError> {
        let started = Instant::now();
        // The pass's start on the source's clock: what a clean pass proves.
        let clock = self.source_clock().await;
        let mut report = Report {
            started_at: humantime_now(),
            dry_run: opts.dry_run,
            slots: opts.slots.as_ref().map(|s| s.len()),
            source_started_us: clock.map(|o| o.time_us),
            source_epoch: clock.map(|o| o.epoch),
            ..Report::default()
        };
        // A pass whose barrier timed out compares and reports, but repairs
        // nothing: an event still in flight may land after the comparison,
        // and a repair made from it could resurrect a flow deleted during a
        // gap (SPEC section 2). The service runs the pass again soon.
        let withheld;
        let opts = if self.barrier(opts.barrier_timeout).await {
            report.barrier = Barrier::Reached;
            opts
        } else {
            tracing::warn!(
                timeout = ?opts.barrier_timeout,
                "Reconcile barrier not reached (apply behind or not running): this pass reports drift and repairs \
                 nothing; it runs again soon."
            );
            report.barrier = Barrier::TimedOut;
            report.dry_run = true;
            withheld = PassOptions {
                dry_run: true,
                ..opts.clone()
            };
            &withheld
        };
        report
            .phase_seconds
            .insert("barrier".into(), started.elapsed().as_secs_f64());
        // On a cluster, route by the map as it is now.
        let (s, d) = tokio::join!(self.bulk.source.refresh(), self.bulk.dest.refresh());
        s.map_err(on(Side::Source))?;
        d.map_err(on(Side::Destination))?;
        // Repairs carry the current epoch: adopt one another process moved to.
        if let Err(e) = self.reader.epoch().sync().await {
            tracing::debug!(error = %e, "Cannot sync the source epoch before the pass.");
        }
        // A full pass under other field rules than the copies were written
        // under rewrites every copy (SPEC section 8).
        let rewrite = opts.slots.is_none() && self.rules_changed().await?;
        if rewrite {
            tracing::info!(
                rules = self.rules.fields.fingerprint(),
                "The destination's copies were written under other field rules: this pass rewrites every copy."
            );
        }
        let opts = &PassOptions {
            rewrite_copies: opts.rewrite_copies || rewrite,
            ..opts.clone()
        };
        let limiter = Limiter {
            rate: opts.rate_limit,
            start: Instant::now(),
            done: 0.into(),
            progress: opts.progress.clone(),
        };
        let (source, dest, index) = tokio::join!(
            phase("source_scan", self.source_phase(opts, &limiter)),
            phase("dest_scan", self.dest_phase(opts, &limiter)),
            phase("index_scan", self.index_phase(opts)),
        );
        for part in [source?, dest?, index?] {
            report.absorb(part);
        }
        if opts.slots.is_none() && !opts.dry_run {
            // Every copy is now (being) written under these rules.
            self.store_rules().await?;
        }

        if let Some(clock) = clock {
            if self.proves(opts, &report).await? {
                report.verified_source_time_us = Some(clock.time_us);
                report.verified_source_epoch = Some(clock.epoch);
                report.verified_flows = Some(report.source_flows);
            }
        }
        let secs = started.elapsed().as_secs_f64();
        report.duration_seconds = secs;
        report.flows_per_second = (report.source_flows + report.dest_flows) as f64 / secs.max(1e-9);
        metrics::counter!(m::RECONCILE_RUNS).increment(1);
        metrics::histogram!(m::RECONCILE_DURATION).record(secs);
        for kind in [DriftKind::Missing, DriftKind::Extra, DriftKind::Different] {
            metrics::counter!(m::RECONCILE_DRIFT, "kind" => kind.label()).increment(report.count(kind));
        }
        Ok(report)
    }

    /// The source's clock now, in the source epoch's order: one atomic read
    /// (`MULTI TIME HGETALL EXEC`, as for every flow) of a flow id no flow
    /// has. `None` when the source does not answer (the pass then proves
    /// nothing).
    async fn source_clock(&self) -> Option<Order> {
        let probe = [Bytes::from_static(PROBE_FLOW_ID)];
        match self.reader.read(&probe).await {
            Ok(r) => r.flows.into_iter().next().map(|f| f.order),
            Err(e) => {
                tracing::debug!(error = %e, "Cannot read the source clock at the pass start.");
                None
            }
        }
    }

    /// Whether this pass proves the destination equal to the source as of
    /// its start (SPEC section 10): a pass over every flow whose barrier
    /// was reached, and after which no drift remained: none was found, or
    /// every flow it repaired compared in step again after a second barrier
    /// (a dry run repairs nothing, so its drift remains). A pass over some
    /// slots only (after a gap on some masters) proves nothing about the
    /// others.
    async fn proves(&self, opts: &PassOptions, report: &Report) -> Result<bool, PassError> {
        if opts.slots.is_some() || report.barrier != Barrier::Reached {
            return Ok(false);
        }
        if report.total_drift() == 0 {
            return Ok(true);
        }
        if opts.dry_run || report.truncated {
            return Ok(false);
        }
        if !self.barrier(opts.barrier_timeout).await {
            tracing::info!("Repairs not applied within the barrier timeout; this pass proves nothing.");
            return Ok(false);
        }
        let ids: Vec<Bytes> = report
            .flows
            .iter()
            .filter_map(|f| redmirror_core::text::parse_flow_id(&f.flow_id).ok())
            .collect();
        // Compared again without repairing: what still differs stays drift.
        let recheck = PassOptions {
            dry_run: true,
            rewrite_copies: false,
            ..opts.clone()
        };
        let mut again = Report::default();
        for batch in ids.chunks(opts.batch.max(1)) {
            self.compare_batch(batch, false, &recheck, &mut again).await?;
        }
        if again.total_drift() > 0 {
            tracing::info!(
                remaining = again.total_drift(),
                "Repaired flows still differ after the repairs were applied; this pass proves nothing."
            );
        }
        Ok(again.total_drift() == 0)
    }

    /// True when the destination's copies were written under other field
    /// rules than this process's: the stored fingerprint differs, or there
    /// is none and these rules do more than exclude fields (copies written
    /// before field rules existed had only exclusions).
    pub async fn rules_changed(&self) -> Result<bool, PassError> {
        let stored: Option<String> = self
            .dest
            .get(self.keys.rules_key())
            .await
            .map_err(on(Side::Destination))?;
        Ok(match stored {
            Some(f) => f != self.rules.fields.fingerprint(),
            None => !self.rules.fields.only_exclusions(),
        })
    }

    /// Records that the copies are written under this process's field rules.
    async fn store_rules(&self) -> Result<(), PassError> {
        let () = self
            .dest
            .set(
                self.keys.rules_key(),
                self.rules.fields.fingerprint(),
                None,
                None,
                false,
            )
            .await
            .map_err(on(Side::Destination))?;
        Ok(())
    }

    /// Phase 1: every source flow against its copy. The next SCAN page is
    /// fetched while the current one is compared.
    async fn source_phase(&self, opts: &PassOptions, limiter: &Limiter) -> Result<Report, PassError> {
        let masters = match &opts.slots {
            None => self.bulk.source.masters().await,
            Some(slots) => self.bulk.source.masters_of(slots).await,
        }
        .map_err(on(Side::Source))?;
        let mut report = Report::default();
        for part in join_all(masters.iter().map(|m| self.source_phase_on(m, opts, limiter))).await {
            report.absorb(part?);
        }
        Ok(report)
    }

    /// Phase 1 on one master of the source (the server itself when standalone).
    async fn source_phase_on(&self, node: &Bulk, opts: &PassOptions, limiter: &Limiter) -> Result<Report, PassError> {
        let mut report = Report::default();
        let pattern = self.keys.scan_pattern();
        let mut page = scan(node, Side::Source, &Bytes::from_static(b"0"), &pattern, opts.batch).await?;
        loop {
            let (next, keys) = page;
            let ids: Vec<Bytes> = keys
                .iter()
                .filter(|k| opts.covers(k))
                .filter_map(|k| self.keys.flow_id(k).map(|id| k.slice_ref(id)))
                .collect();
            let more = next.as_ref() != b"0";
            let fetch_next = async {
                if more {
                    Some(scan(node, Side::Source, &next, &pattern, opts.batch).await)
                } else {
                    None
                }
            };
            let compare = async {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let (src, dst) = tokio::join!(
                    self.digests.source(&self.bulk.source, &ids),
                    self.digests.dest(&self.bulk.dest, &ids)
                );
                Ok::<_, PassError>((src.map_err(on(Side::Source))?, dst.map_err(on(Side::Destination))?))
                    .map(|(src, dst)| src.into_iter().zip(dst).collect::<Vec<_>>())
            };
            let (next_page, summaries) = tokio::join!(fetch_next, compare);
            let summaries = summaries?;
            if !ids.is_empty() {
                limiter.take(ids.len() as u64).await;
                report.source_flows += ids.len() as u64;
                let mut closer = Vec::new();
                for (id, (s, d)) in ids.iter().zip(&summaries) {
                    let rewrite =
                        opts.rewrite_copies && matches!((s, &d.flow), (SourceSummary::Copy(_), DestFlow::SyncCopy(_)));
                    if d.flow == DestFlow::Native {
                        report.native += 1;
                    } else if rewrite || suspicious(s, d) {
                        closer.push(id.clone());
                    }
                }
                if !closer.is_empty() {
                    self.compare_batch(&closer, false, opts, &mut report).await?;
                }
            }
            match next_page {
                Some(p) => page = p?,
                None => break,
            }
        }
        Ok(report)
    }

    /// Phase 2: destination flows whose source is gone (extra copies).
    async fn dest_phase(&self, opts: &PassOptions, limiter: &Limiter) -> Result<Report, PassError> {
        let masters = self.bulk.dest.masters().await.map_err(on(Side::Destination))?;
        let mut report = Report::default();
        for part in join_all(masters.iter().map(|m| self.dest_phase_on(m, opts, limiter))).await {
            report.absorb(part?);
        }
        Ok(report)
    }

    /// Phase 2 on one master of the destination.
    async fn dest_phase_on(&self, node: &Bulk, opts: &PassOptions, limiter: &Limiter) -> Result<Report, PassError> {
        let mut report = Report::default();
        let pattern = self.keys.scan_pattern();
        let mut cursor = Bytes::from_static(b"0");
        loop {
            let (next, keys) = scan(node, Side::Destination, &cursor, &pattern, opts.batch).await?;
            let ids: Vec<Bytes> = keys
                .iter()
                .filter(|k| opts.covers(k))
                .filter_map(|k| self.keys.flow_id(k).map(|id| k.slice_ref(id)))
                .collect();
            if !ids.is_empty() {
                limiter.take(ids.len() as u64).await;
                report.dest_flows += ids.len() as u64;
                // Flows the source has are compared in phase 1: only the
                // ones it lacks (rare) need their destination state.
                let gone = without_copy(&self.bulk.source, &self.keys, &ids)
                    .await
                    .map_err(on(Side::Source))?;
                let mut closer = Vec::new();
                if !gone.is_empty() {
                    let dst = self.digests.dest_states(&self.dest, &gone).await?;
                    for (id, d) in gone.iter().zip(&dst) {
                        match d.flow {
                            DestFlow::Native => report.native += 1,
                            DestFlow::SyncCopy(()) => closer.push(id.clone()),
                            DestFlow::Absent | DestFlow::WrongType => {}
                        }
                    }
                }
                if !closer.is_empty() {
                    self.compare_batch(&closer, true, opts, &mut report).await?;
                }
            }
            if next.as_ref() == b"0" {
                break;
            }
            cursor = next;
        }
        Ok(report)
    }

    /// Phase 3: index entries the mirror wrote for flows that have no copy.
    async fn index_phase(&self, opts: &PassOptions) -> Result<Report, PassError> {
        let mut report = Report::default();
        let mut cursor = Bytes::from_static(b"0");
        loop {
            let (next, mut ids) = hscan_fields(&self.dest, &self.keys.index_key, &cursor, opts.batch).await?;
            ids.retain(|id| opts.covers(&self.keys.flow_key(id)));
            if !ids.is_empty() {
                // Only entries without a copy (rare) need a closer look.
                let absent = without_copy(&self.bulk.dest, &self.keys, &ids)
                    .await
                    .map_err(on(Side::Destination))?;
                if !absent.is_empty() {
                    let dst = self.digests.dest_states(&self.dest, &absent).await?;
                    let orphans: Vec<Bytes> = absent
                        .iter()
                        .zip(&dst)
                        .filter(|(_, d)| d.flow == DestFlow::Absent && d.watermarked)
                        .map(|(id, _)| id.clone())
                        .collect();
                    if !orphans.is_empty() {
                        self.compare_index(&orphans, opts.dry_run, &mut report).await?;
                    }
                }
            }
            if next.as_ref() == b"0" {
                break;
            }
            cursor = next;
        }
        Ok(report)
    }

    async fn read_dest(&self, ids: &[Bytes]) -> Result<Vec<DestRead<redmirror_core::Fields>>, PassError> {
        Ok(self.dest_reader.flows(&self.dest, ids).await?)
    }

    /// Compares a batch of flows. `only_absent_sources`: phase 2, where flows
    /// that exist on the source were already compared in phase 1.
    async fn compare_batch(
        &self,
        ids: &[Bytes],
        only_absent_sources: bool,
        opts: &PassOptions,
        report: &mut Report,
    ) -> Result<(), PassError> {
        let dry_run = opts.dry_run;
        let (src, dst) = tokio::join!(self.reader.read(ids), self.read_dest(ids));
        let src = src.map_err(on(Side::Source))?;
        let dst = dst?;
        let mut repairs = Vec::new();
        for (ReadFlow { id, state, order }, d) in src.flows.into_iter().zip(dst) {
            let (dest_state, indexed) = (d.flow, d.indexed);
            if only_absent_sources && !matches!(state, SourceFlow::Absent) {
                continue;
            }
            if dest_state == DestFlow::Native {
                continue; // became native since the digest: counted by the caller's next pass
            }
            let event = match self
                .rules
                .decide(id.clone(), state, order, Origin::Reconcile, "reconcile")
            {
                Decision::Publish(ev) => ev,
                // Skipped, as capture skips it (counted and logged there).
                Decision::TooLarge { .. } => continue,
            };
            let expected = event.is_upsert().then(|| {
                let fields: Vec<(Bytes, Bytes)> =
                    event.fields.iter().map(|f| (f.name.clone(), f.value.clone())).collect();
                self.rules.expected_copy(&fields)
            });
            let drift = diff::compare(expected.as_deref(), &dest_state, indexed).or_else(|| {
                // Equal, but written under other field rules: rewritten.
                (opts.rewrite_copies && expected.is_some() && matches!(dest_state, DestFlow::SyncCopy(_))).then(|| {
                    Drift {
                        kind: DriftKind::Different,
                        fields: vec!["<rules>".into()],
                    }
                })
            });
            if let Some(drift) = drift {
                let mut event = event;
                event.cause = format!("reconcile:{}", drift.kind.label());
                report.add(redmirror_core::text::lossy(&id), drift);
                repairs.push(event);
            }
        }
        self.publish(repairs, dry_run, report).await
    }

    /// Index entries the mirror wrote (a watermark exists) with no flow copy behind them.
    async fn compare_index(&self, orphans: &[Bytes], dry_run: bool, report: &mut Report) -> Result<(), PassError> {
        let src = self.reader.read(orphans).await.map_err(on(Side::Source))?;
        let mut repairs = Vec::new();
        for ReadFlow { id, state, order } in src.flows {
            // A flow that exists on the source was counted as missing in phase 1.
            let mirrored = matches!(&state, SourceFlow::Hash(f) if !self.rules.is_filtered(f));
            if mirrored {
                continue;
            }
            report.add(
                redmirror_core::text::lossy(&id),
                Drift {
                    kind: DriftKind::Extra,
                    fields: vec!["<index>".into()],
                },
            );
            repairs.push(
                FlowEvent::delete(
                    id,
                    DeleteReason::Absent,
                    order.time_us,
                    Origin::Reconcile,
                    "reconcile:extra",
                )
                .in_epoch(order.epoch),
            );
        }
        self.publish(repairs, dry_run, report).await
    }

    async fn publish(&self, events: Vec<FlowEvent>, dry_run: bool, report: &mut Report) -> Result<(), PassError> {
        if dry_run || events.is_empty() {
            return Ok(());
        }
        let mut acks = Vec::with_capacity(events.len());
        for e in &events {
            acks.push(self.publisher.enqueue(e).await);
        }
        for (r, e) in join_all(acks).await.into_iter().zip(&events) {
            match r {
                Ok(_) => report.repaired += 1,
                // Refused for good (its size): the rest of the pass goes on.
                Err(err) if !err.is_retryable() => tracing::warn!(
                    flow_id = %redmirror_core::text::lossy(&e.flow_id),
                    error = %Chain(&err),
                    "Kafka refused a repair event for good; the flow is left as it is."
                ),
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}

/// Runs a phase and records how long it took in its report.
async fn phase(
    name: &'static str,
    run: impl std::future::Future<Output = Result<Report, PassError>>,
) -> Result<Report, PassError> {
    let t = Instant::now();
    let mut report = run.await?;
    report.phase_seconds.insert(name.into(), t.elapsed().as_secs_f64());
    Ok(report)
}

/// One `SCAN` step on one server: the next cursor and this page's keys.
async fn scan(
    node: &Bulk,
    side: Side,
    cursor: &Bytes,
    pattern: &Bytes,
    count: usize,
) -> Result<(Bytes, Vec<Bytes>), PassError> {
    let mut p = Pipeline::new();
    let count = count.to_string();
    p.cmd(&[
        b"SCAN".as_ref(),
        cursor.as_ref(),
        b"MATCH",
        pattern.as_ref(),
        b"COUNT",
        count.as_bytes(),
    ]);
    let mut page = Err(PassError::Malformed {
        side,
        command: "SCAN",
        detail: "no reply".into(),
    });
    node.run(&p, |_, reply| {
        page = match reply {
            Reply::Error(e) => Err(PassError::Redis {
                side,
                source: fred::error::Error::new(
                    fred::error::ErrorKind::Unknown,
                    String::from_utf8_lossy(e).into_owned(),
                ),
            }),
            reply => scan_reply(reply).map_err(malformed(side, "SCAN")),
        }
    })
    .await
    .map_err(on(side))?;
    page
}

/// `[cursor, [key...]]` of `SCAN`, read from a bulk reply (see
/// [`cursor_reply`] for why anything else is an error).
fn scan_reply(reply: Reply<'_>) -> Result<(Bytes, Vec<Bytes>), String> {
    let Reply::Array(parts) = reply else {
        return Err("expected [cursor, items]".into());
    };
    let [Reply::Str(cursor), Reply::Array(items)] = parts.as_slice() else {
        return Err(format!("expected [cursor, items], got {} parts", parts.len()));
    };
    if cursor.is_empty() || !cursor.iter().all(u8::is_ascii_digit) {
        return Err(format!("cursor is not a number: {:?}", String::from_utf8_lossy(cursor)));
    }
    let keys = items
        .iter()
        .map(|i| match i {
            Reply::Str(k) => Ok(Bytes::copy_from_slice(k)),
            _ => Err("an item is not a string".to_string()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((Bytes::copy_from_slice(cursor), keys))
}

async fn hscan_fields(
    client: &Client,
    key: &Bytes,
    cursor: &Bytes,
    count: usize,
) -> Result<(Bytes, Vec<Bytes>), PassError> {
    let (next, pairs) = hscan_pairs(client, key, cursor, count).await?;
    Ok((next, pairs.into_iter().map(|(field, _)| field).collect()))
}

fn humantime_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
