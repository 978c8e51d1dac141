//! When passes run, and the watermark pruning after them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use redmirror_state::hold::{Hold, HoldWatch};

use crate::pass::{PassOptions, Reconciler};
use crate::prune::{prune_watermarks, DEFAULT_DELETE_RETENTION_MS};
use crate::schedule::{Ended, Schedule};
use crate::Report;
use redmirror_state::lease::{run_while_leased, Lease, LeasedRole};
use redmirror_state::signal::GapScope;
use redmirror_state::signal::GapSignal;
use redmirror_telemetry::errors::Chain;

/// How often the gap and request counters on the destination are read.
const SIGNAL_POLL: Duration = Duration::from_millis(500);

/// A request for a pass now.
#[derive(Debug)]
pub enum Trigger {
    /// Run a pass now. `started` is told when the pass that answers the
    /// request begins (it is dropped unsent when none will); `reply` gets
    /// that pass's report, or why there is none.
    Now {
        /// The answering pass has begun.
        started: oneshot::Sender<()>,
        /// Its report.
        reply: oneshot::Sender<Result<Report, String>>,
    },
}

/// The reconcile role.
pub struct Service {
    /// The reconciler.
    pub reconciler: Reconciler,
    /// Its lease.
    pub lease: Lease,
    /// Pass settings.
    pub opts: PassOptions,
    /// Time between scheduled passes.
    pub interval: Duration,
    /// Gap counter to watch.
    pub gaps: GapSignal,
    /// Pass requests to watch (`reconcile --once` while this service holds
    /// the lease): a counter on the destination.
    pub requests: GapSignal,
    /// Where the last report is kept (destination key, JSON).
    pub report_key: String,
    /// The last report, shared with the status endpoint.
    pub last: Arc<Mutex<Option<Report>>>,
    /// The hold: while a rewind holds the mirror no pass runs (its repairs
    /// would undo the rewind); the hold's end starts one.
    pub hold: HoldWatch,
}

impl Service {
    /// Runs until `shutdown`: stand by until the lease is ours, then pass at
    /// start, on schedule, on demand and after every gap, pruning the
    /// watermarks after each pass that reached its barrier (see
    /// [`crate::prune`]); hand the lease over on shutdown. One pass answers
    /// every request waiting when it begins; a request that arrives during a
    /// pass waits for the next.
    pub async fn run(self, mut triggers: mpsc::Receiver<Trigger>, shutdown: CancellationToken) {
        let mut leader = Leader {
            service: &self,
            triggers: &mut triggers,
            retention_unread: false,
        };
        let Ok(()) = run_while_leased(Some(&self.lease), &mut leader, &shutdown).await;
    }

    /// One pass; `slots`: only the flows in these hash slots.
    async fn pass(
        &self,
        request: u64,
        slots: Option<std::collections::BTreeSet<u16>>,
    ) -> Result<Report, crate::pass::PassError> {
        let opts = crate::pass::PassOptions {
            slots: slots.map(Arc::new),
            ..self.opts.clone()
        };
        match self.reconciler.run_pass(&opts).await {
            Ok(mut report) => {
                report.request = request;
                tracing::info!(
                    source_flows = report.source_flows,
                    dest_flows = report.dest_flows,
                    missing = report.count(redmirror_core::diff::DriftKind::Missing),
                    extra = report.count(redmirror_core::diff::DriftKind::Extra),
                    different = report.count(redmirror_core::diff::DriftKind::Different),
                    repaired = report.repaired,
                    seconds = report.duration_seconds,
                    slots = %report.slots.map(|n| n.to_string()).unwrap_or_else(|| "all".into()),
                    "Reconcile pass done."
                );
                self.store(&mut report).await;
                Ok(report)
            }
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "Reconcile pass failed; retried soon (5 s, doubling to 5 min) or at the next trigger.");
                Err(e)
            }
        }
    }

    /// Prunes the watermarks of flows absent for longer than the change
    /// topic's `delete.retention.ms` ([`DEFAULT_DELETE_RETENTION_MS`] when it
    /// cannot be read; `unread` keeps that logged once until it can be read
    /// again). A failure is logged; the next pass prunes again.
    async fn prune(&self, unread: &mut bool) {
        let topic = self.reconciler.publisher.topic();
        let retention_ms =
            match redmirror_kafka::topics::setting_ms(&self.reconciler.kafka, topic, "delete.retention.ms").await {
                Ok(Some(ms)) if ms >= 0 => {
                    *unread = false;
                    ms
                }
                other => {
                    if !*unread {
                        let why = match other {
                            Err(e) => Chain(&e).to_string(),
                            _ => "the broker does not report it".to_string(),
                        };
                        tracing::warn!(
                            topic,
                            error = %why,
                            default_ms = DEFAULT_DELETE_RETENTION_MS,
                            "Cannot read the change topic's delete.retention.ms; pruning watermarks older than \
                             Kafka's default."
                        );
                        *unread = true;
                    }
                    DEFAULT_DELETE_RETENTION_MS
                }
            };
        let older_than_us = redmirror_core::now_us().saturating_sub(retention_ms.saturating_mul(1000));
        match prune_watermarks(&self.reconciler.dest, &self.reconciler.keys, older_than_us).await {
            Ok(r) if r.pruned > 0 => tracing::info!(
                pruned = r.pruned,
                scanned = r.scanned,
                older_than_ms = retention_ms,
                "Pruned watermarks of absent flows."
            ),
            Ok(r) => tracing::debug!(scanned = r.scanned, "No watermark to prune."),
            Err(e) => tracing::warn!(error = %Chain(&e), "Cannot prune watermarks; tried again after the next pass."),
        }
    }

    /// The last report: this process's, else the one stored on the
    /// destination (by any reconciler, before a restart).
    async fn previous(&self) -> Option<Report> {
        let local = self.last.lock().expect("report lock").clone();
        match local {
            Some(r) => Some(r),
            None => stored_report(&self.reconciler.dest, &self.report_key)
                .await
                .and_then(|v| serde_json::from_value(v).ok()),
        }
    }

    /// Keeps the report (here and on the destination), carrying the last
    /// proof forward when this pass proves nothing newer, and sets
    /// `redmirror_verified_source_time_seconds`.
    async fn store(&self, report: &mut Report) {
        if let Some(prev) = self.previous().await {
            report.carry_proof(&prev);
        }
        set_verified_gauge(report);
        *self.last.lock().expect("report lock") = Some(report.clone());
        write_report(&self.reconciler.dest, &self.report_key, report).await;
    }
}

/// Keeps the report of a pass run outside the service (`reconcile --once`)
/// on the destination like the service's own, carrying the stored proof
/// forward when this pass proves nothing newer, so `status` reads the
/// same proof whichever process ran the pass.
pub async fn keep_report(dest: &Client, key: &str, report: &mut Report) {
    let stored = stored_report(dest, key)
        .await
        .and_then(|v| serde_json::from_value::<Report>(v).ok());
    if let Some(prev) = stored {
        report.carry_proof(&prev);
    }
    write_report(dest, key, report).await;
}

/// Writes `report` (its first [`STORED_FLOWS`] flows) to `key`; a failure
/// only loses the status view of this pass.
async fn write_report(dest: &Client, key: &str, report: &Report) {
    let mut summary = report.clone();
    summary.truncated |= summary.flows.len() > STORED_FLOWS;
    summary.flows.truncate(STORED_FLOWS);
    if let Ok(json) = serde_json::to_string(&summary) {
        if let Err(e) = dest.set::<(), _, _>(key, json, None, None, false).await {
            tracing::warn!(key, error = %e, "Cannot keep the pass's report on the destination; status will not show it.");
        }
    }
}

/// The reconcile role while this instance holds the lease.
struct Leader<'a> {
    service: &'a Service,
    triggers: &'a mut mpsc::Receiver<Trigger>,
    /// True while the topic's delete.retention.ms cannot be read (logged once).
    retention_unread: bool,
}

impl LeasedRole for Leader<'_> {
    type Error = std::convert::Infallible;

    /// Answers an on-demand request with who holds the lease.
    async fn standby(&mut self, lease: &Lease) {
        if let Some(Trigger::Now { reply, .. }) = self.triggers.recv().await {
            let holder = lease.current_holder().await.unwrap_or_default();
            let _ = reply.send(Err(format!(
                "another instance holds the reconcile lease ({holder}); it runs the passes"
            )));
        } else {
            std::future::pending::<()>().await;
        }
    }

    async fn run(&mut self, active: CancellationToken) -> Result<(), Self::Error> {
        let svc = self.service;
        // A restarted reconciler reports the proof it finds stored.
        if let Some(prev) = svc.previous().await {
            set_verified_gauge(&prev);
        }
        let gaps = svc.gaps.current().await.unwrap_or(0);
        let requests = svc.requests.current().await.unwrap_or(0);
        let mut schedule = Schedule::new(svc.interval, Instant::now(), gaps, requests);
        // Requests waiting for a pass to begin.
        let mut queued: Vec<Trigger> = Vec::new();
        let mut hold = svc.hold.clone();
        loop {
            let due = schedule.due(Instant::now()) || !queued.is_empty();
            if let (Some(h), true) = (hold.current(), due) {
                while let Ok(t) = self.triggers.try_recv() {
                    queued.push(t);
                }
                let why = held_message(&h);
                for Trigger::Now { reply, .. } in queued.drain(..) {
                    let _ = reply.send(Err(why.clone()));
                }
                // The hold's end starts the next pass.
                schedule.held(Instant::now());
            } else if due {
                while let Ok(t) = self.triggers.try_recv() {
                    queued.push(t);
                }
                let replies: Vec<_> = queued
                    .drain(..)
                    .map(|Trigger::Now { started, reply }| {
                        let _ = started.send(());
                        reply
                    })
                    .collect();
                let plan = schedule.begin(Instant::now(), !replies.is_empty());
                if plan.whole() {
                    // A pass over every flow covers every gap signalled
                    // before it begins, the ones this loop has not seen
                    // yet among them (capture's start-up gap can land
                    // before the counter's first read): their scope goes
                    // with it. The counter is read before the scope is
                    // taken, so a gap between the two is seen again and
                    // finds no scope, which is the whole keyspace.
                    if let Some(g) = svc.gaps.current().await {
                        schedule.gaps_covered(g);
                        svc.gaps.take_scope().await;
                    }
                }
                // A pass (and its barrier wait) gives way to shutdown,
                // and to a hold (its repairs would undo the rewind).
                let mut holding = hold.clone();
                let r = tokio::select! {
                    biased;
                    _ = active.cancelled() => break,
                    h = holding.until_held() => {
                        tracing::info!("A hold began: the reconcile pass in progress is abandoned.");
                        let why = held_message(&h);
                        for tx in replies {
                            let _ = tx.send(Err(why.clone()));
                        }
                        schedule.held(Instant::now());
                        continue;
                    }
                    r = svc.pass(plan.answering, plan.slots.clone()) => r,
                };
                // A pass whose barrier timed out repaired nothing: it is run
                // again like a failed one (sooner than the schedule).
                let timed_out = matches!(&r, Ok(report) if report.barrier == crate::report::Barrier::TimedOut);
                let ended = if r.is_ok() && !timed_out {
                    Ended::Done
                } else {
                    Ended::Retry
                };
                schedule.end(Instant::now(), plan, ended);
                // Pruning needs a pass that saw apply caught up (see `prune`).
                let prune =
                    matches!(&r, Ok(report) if report.barrier == crate::report::Barrier::Reached) && !svc.opts.dry_run;
                let r = r.map_err(|e| Chain(&e).to_string());
                for tx in replies {
                    let _ = tx.send(r.clone());
                }
                if prune {
                    tokio::select! {
                        biased;
                        _ = active.cancelled() => break,
                        _ = svc.prune(&mut self.retention_unread) => {}
                    }
                }
            }
            tokio::select! {
                biased;
                _ = active.cancelled() => break,
                Some(t) = self.triggers.recv() => queued.push(t),
                _ = hold.changed() => {
                    if hold.current().is_none() {
                        tracing::info!("The hold ended: reconcile pass now, to bring the destination to the source's current state.");
                        schedule.hold_ended(Instant::now());
                    }
                }
                _ = tokio::time::sleep_until(schedule.next()) => {}
                _ = tokio::time::sleep(SIGNAL_POLL) => {
                    if let Some(g) = svc.gaps.current().await {
                        if schedule.gaps_moved(g) {
                            let scope = svc.gaps.take_scope().await;
                            match &scope {
                                GapScope::Whole => tracing::info!("Capture gap signalled: reconcile pass now."),
                                GapScope::Slots(slots) => tracing::info!(
                                    slots = slots.len(),
                                    "Capture gap signalled on some masters of the source cluster: reconcile pass \
                                     over their slots now."
                                ),
                            }
                            schedule.gap(Instant::now(), scope);
                        }
                    }
                    if let Some(r) = svc.requests.current().await {
                        if schedule.requested(Instant::now(), r) {
                            tracing::info!("Pass requested (reconcile --once): reconcile pass now.");
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why no pass runs while `hold` is in force.
pub fn held_message(hold: &Hold) -> String {
    format!(
        "the mirror is held at {} by a rewind (since {}): reconcile repairs nothing until `redmirror resume` \
         (or POST /v1/resume); `reconcile --once --dry-run` still reports the drift",
        redmirror_state::hold::rfc3339(hold.at_us),
        redmirror_state::hold::rfc3339(hold.since_us)
    )
}

/// Most per-flow entries in the report kept on the destination.
pub const STORED_FLOWS: usize = redmirror_api::STATUS_FLOWS;

/// Sets `redmirror_verified_source_time_seconds` from a report's proof.
pub fn set_verified_gauge(report: &Report) {
    if let Some(us) = report.verified_source_time_us {
        metrics::gauge!(redmirror_telemetry::metrics::VERIFIED_SOURCE_TIME).set(us as f64 / 1e6);
    }
}

/// The last report stored on the destination by any reconciler.
pub async fn stored_report(dest: &Client, key: &str) -> Option<serde_json::Value> {
    let s: Option<String> = dest.get(key).await.ok().flatten();
    s.and_then(|s| serde_json::from_str(&s).ok())
}

/// The lease is held by another reconciler: asks it for a pass (a counter
/// on the destination it watches) and waits for the report of a pass that
/// answered the request. `None` when the lease came free meanwhile: the
/// caller then runs the pass itself (it holds the lease). `asked_for` is
/// told each request made: the holder and the request number.
pub async fn request_pass(
    dest: &Client,
    keys: &redmirror_core::KeyLayout,
    lease: &Lease,
    asked_for: impl Fn(&str, u64),
) -> Result<Option<Report>, fred::error::Error> {
    let key = keys.reconcile_request_key();
    let report_key = keys.report_key();
    let mut asked: Option<(String, u64)> = None;
    loop {
        let holder = lease.current_holder().await.unwrap_or_default();
        // Ask (again, when the lease changed hands: a new holder starts
        // from the counter as it finds it).
        if asked.as_ref().is_none_or(|(h, _)| *h != holder) {
            let n: u64 = dest.incr(&key).await?;
            asked_for(&holder, n);
            asked = Some((holder, n));
        }
        let n = asked.as_ref().map_or(0, |(_, n)| *n);
        let stored = stored_report(dest, &report_key).await;
        if let Some(report) = stored.and_then(|v| serde_json::from_value::<Report>(v).ok()) {
            if report.request >= n {
                return Ok(Some(report));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if lease.try_acquire().await? {
            return Ok(None);
        }
    }
}
