//! Reading pending flows and publishing their state.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use redmirror_core::backoff::Backoff;
use redmirror_core::event::{Op, Origin};
use redmirror_core::rules::Decision;
use redmirror_core::SourceFlow;
use redmirror_kafka::Publisher;
use redmirror_redis::source::{ReadFlow, SourceRead, SourceReader};
use redmirror_telemetry::errors::Chain;
use redmirror_telemetry::events::InternalEvent;
use redmirror_telemetry::metrics as m;
use redmirror_telemetry::metrics::{CaptureOp, PublishRetry, SkipReason};
use redmirror_telemetry::{Component, Health};
use tokio_util::sync::CancellationToken;

use crate::pending::Taken;
use crate::{CaptureError, CaptureOptions, Pending};

/// Most events awaiting a broker acknowledgement; beyond it capture stops reading.
const MAX_IN_FLIGHT: usize = 20_000;

/// A flow's publish outcome.
struct Acked {
    /// The flow as it was taken from the pending set.
    taken: Taken,
    /// What was published.
    op: CaptureOp,
    /// What the broker said.
    result: Result<(), redmirror_kafka::Error>,
}

/// Reads and publishes until `shutdown`, then drains what is pending (within
/// the shutdown timeout) and flushes the producer.
pub async fn run(
    opts: &CaptureOptions,
    reader: std::sync::Arc<SourceReader>,
    publisher: Publisher,
    pending: Arc<Pending>,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), CaptureError> {
    let mut in_flight: FuturesUnordered<futures::future::BoxFuture<'static, Acked>> = FuturesUnordered::new();
    let warned = WarnOnce::default();
    let warned_large = WarnOnce::default();
    let ctx = Ctx {
        warned_large: &warned_large,
        opts,
        pending: &pending,
        reader: &reader,
        publisher: &publisher,
        health: &health,
        warned: &warned,
    };
    let mut retry = Retry::new(&health);
    let result = loop {
        metrics::gauge!(m::PRODUCER_QUEUE).set(publisher.queue_len() as f64);
        let paused = retry.until;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            Some(acked) = in_flight.next(), if !in_flight.is_empty() => {
                match on_ack(acked, &pending, &warned_large) {
                    Outcome::Published => retry.succeeded(),
                    Outcome::Failed(e) => {
                        if let Some(fatal) = publisher.fatal_error() {
                            break Err(CaptureError::ProducerFatal(fatal));
                        }
                        retry.failed(&e);
                    }
                    Outcome::Settled => {}
                }
            }
            _ = tokio::time::sleep_until(paused.unwrap_or_else(tokio::time::Instant::now)), if paused.is_some() => {
                retry.until = None;
            }
            batch = pending.take(opts.batch), if in_flight.len() < MAX_IN_FLIGHT && paused.is_none() => {
                if !ctx.publish(batch, &mut in_flight, Some(&shutdown)).await {
                    break Ok(());
                }
            }
        }
    };
    health.remove(Component::Publish);
    result?;
    // Drain: read and publish what is already pending, within the timeout.
    let deadline = tokio::time::Instant::now() + opts.shutdown_timeout;
    let drain = async {
        loop {
            let batch = pending.try_take(opts.batch);
            if batch.is_empty() {
                break;
            }
            ctx.publish(batch, &mut in_flight, None).await;
        }
        while let Some(acked) = in_flight.next().await {
            let _ = on_ack(acked, &pending, &warned_large);
        }
    };
    if tokio::time::timeout_at(deadline, drain).await.is_err() {
        tracing::warn!(
            pending = pending.len(),
            "Stopped before every pending flow was published; the next reconcile pass covers them."
        );
    }
    let left = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_millis(100));
    if let Err(e) = publisher.flush(left) {
        tracing::warn!(error = %Chain(&e), "Producer flush incomplete at shutdown.");
    }
    tracing::info!("Capture stopped.");
    Ok(())
}

/// What became of a flow's event.
enum Outcome {
    /// Acknowledged by the broker.
    Published,
    /// Settled without being published (Kafka refuses it for good).
    Settled,
    /// Failed; the flow is back in the pending set.
    Failed(redmirror_kafka::Error),
}

fn on_ack(acked: Acked, pending: &Pending, warned: &WarnOnce) -> Outcome {
    let Acked { taken, op, result } = acked;
    let Taken { id, cause, seq } = taken;
    match result {
        Ok(()) => {
            metrics::counter!(m::CAPTURE_EVENTS, "op" => op.label()).increment(1);
            pending.done(seq);
            Outcome::Published
        }
        Err(e) if !e.is_retryable() => {
            // Kafka refuses this record for good (its size): reading and
            // publishing it again would spin for ever and hold every
            // reconcile barrier back.
            FlowSkipped {
                id: &id,
                reason: SkipReason::TooLarge,
                once: warned,
                why: format_args!(
                    "Kafka refused the flow's event for good ({}); not published.",
                    Chain(&e)
                ),
            }
            .emit();
            pending.done(seq);
            Outcome::Settled
        }
        Err(e) => {
            metrics::counter!(m::PUBLISH_RETRIES, "reason" => PublishRetry::DeliveryFailed.label()).increment(1);
            pending.requeue(id, cause, seq);
            Outcome::Failed(e)
        }
    }
}

/// First and longest pause after a failed publish.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Publishing that fails at once (a topic deleted under capture, a broker
/// refusing every record) must not spin: after a failure nothing more is
/// taken from the pending set until a pause has passed (100 ms, doubling
/// to 5 s while failures go on; failures of events already in flight
/// during the pause do not lengthen it). The first failure of a run of
/// them is a WARN and puts [`Component::Publish`] down with the error as its
/// reason; the first success after them is an INFO and puts it up again.
struct Retry<'a> {
    health: &'a Health,
    backoff: Backoff,
    /// No flow is taken before this.
    until: Option<tokio::time::Instant>,
    /// Failures since the last success (0: publishing works).
    failures: u64,
}

impl<'a> Retry<'a> {
    fn new(health: &'a Health) -> Self {
        health.set(Component::Publish, true);
        Retry {
            health,
            backoff: Backoff::new(RETRY_FIRST, RETRY_MAX),
            until: None,
            failures: 0,
        }
    }

    fn failed(&mut self, e: &redmirror_kafka::Error) {
        self.failures += 1;
        if self.until.is_none() {
            self.until = Some(tokio::time::Instant::now() + self.backoff.next_delay());
        }
        if self.failures == 1 {
            let reason = format!(
                "publishing to Kafka fails: {}; capture retries with backoff (check the brokers and the change \
                 topic, REDMIRROR_KAFKA_BROKERS, REDMIRROR_TOPIC)",
                Chain(e)
            );
            tracing::warn!(
                error = %Chain(e),
                "Publish to Kafka failed; the flow will be read and published again after a pause (backoff up to \
                 5 s while it keeps failing; /readyz fails meanwhile). Check the brokers and the change topic \
                 (REDMIRROR_KAFKA_BROKERS, REDMIRROR_TOPIC)."
            );
            self.health.set_down(Component::Publish, &reason);
        } else {
            tracing::debug!(error = %Chain(e), failures = self.failures, "Publish to Kafka failed again.");
        }
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "Publishing to Kafka works again.");
            self.failures = 0;
            self.backoff.reset();
            self.health.set(Component::Publish, true);
        }
    }
}

/// A flow capture read and did not publish: counted every time, logged
/// once per flow (`once`), since a key rewritten as a non-hash again and
/// again would otherwise log every change.
struct FlowSkipped<'a> {
    id: &'a Bytes,
    reason: SkipReason,
    once: &'a WarnOnce,
    /// What happened and what became of the sync copy (formatted only when
    /// it is logged).
    why: std::fmt::Arguments<'a>,
}

impl InternalEvent for FlowSkipped<'_> {
    fn emit(self) {
        let reason = self.reason.label();
        metrics::counter!(m::CAPTURE_SKIPPED, "reason" => reason).increment(1);
        if self.once.first(self.id) {
            tracing::warn!(
                flow_id = %redmirror_core::text::lossy(self.id),
                reason,
                "{} Logged once per flow; redmirror_capture_skipped_total{{reason=\"{reason}\"}} counts every one.",
                self.why
            );
        }
    }
}

/// Flows already warned about, so a key rewritten as a non-hash again and
/// again is logged once (and counted every time). Bounded: when full it
/// starts over, so a flood of distinct bad keys logs at most one line per
/// flow per `WARN_ONCE_MAX` of them.
#[derive(Default)]
struct WarnOnce(std::sync::Mutex<std::collections::HashSet<Bytes>>);

const WARN_ONCE_MAX: usize = 10_000;

impl WarnOnce {
    /// True the first time `id` is seen.
    fn first(&self, id: &Bytes) -> bool {
        let mut g = self.0.lock().expect("warn-once lock");
        if g.contains(id) {
            return false;
        }
        if g.len() >= WARN_ONCE_MAX {
            g.clear();
        }
        g.insert(id.clone());
        true
    }
}

struct Ctx<'a> {
    warned: &'a WarnOnce,
    warned_large: &'a WarnOnce,
    opts: &'a CaptureOptions,
    pending: &'a Pending,
    reader: &'a SourceReader,
    publisher: &'a Publisher,
    health: &'a Health,
}

impl Ctx<'_> {
    /// Reads a batch atomically (retrying with backoff) and enqueues its
    /// events. False when shutdown interrupted the retries.
    async fn publish(
        &self,
        batch: Vec<Taken>,
        in_flight: &mut FuturesUnordered<futures::future::BoxFuture<'static, Acked>>,
        shutdown: Option<&CancellationToken>,
    ) -> bool {
        let ids: Vec<Bytes> = batch.iter().map(|t| t.id.clone()).collect();
        tracing::trace!(flows = ids.len(), "Reading a batch.");
        let Some(read) = self.read(&ids, shutdown).await else {
            return false;
        };
        for (ReadFlow { id, state, order }, taken) in read.flows.into_iter().zip(batch) {
            let seq = taken.seq;
            if state == SourceFlow::NotAHash {
                FlowSkipped {
                    id: &id,
                    reason: SkipReason::NotAHash,
                    once: self.warned,
                    why: format_args!("Source flow key is not a hash; treated as absent (its sync copy is removed)."),
                }
                .emit();
            }
            match self
                .opts
                .rules
                .decide(id.clone(), state, order, Origin::Capture, taken.cause.as_str())
            {
                Decision::TooLarge { bytes, limit, which } => {
                    FlowSkipped {
                        id: &id,
                        reason: SkipReason::TooLarge,
                        once: self.warned_large,
                        why: format_args!(
                            "Flow of {bytes} bytes is over {which} ({limit} bytes); not published (the sync copy, \
                             if any, stays as it was)."
                        ),
                    }
                    .emit();
                    self.pending.done(seq);
                }
                Decision::Publish(event) => {
                    let op = if event.op == Op::Upsert as i32 {
                        CaptureOp::Upsert
                    } else {
                        CaptureOp::Delete
                    };
                    let ack = self.publisher.enqueue(&event).await;
                    in_flight.push(
                        ack.map(move |r| Acked {
                            taken,
                            op,
                            result: r.map(|_| ()),
                        })
                        .boxed(),
                    );
                }
            }
        }
        true
    }

    async fn read(&self, ids: &[Bytes], shutdown: Option<&CancellationToken>) -> Option<SourceRead> {
        let mut backoff = Backoff::default();
        loop {
            match self.reader.read(ids).await {
                Ok(r) => {
                    self.health.set(Component::Source, true);
                    return Some(r);
                }
                Err(e) => {
                    self.health.set(Component::Source, false);
                    tracing::warn!(error = %e, "Source read failed; retrying with backoff, changes are kept (check the source, REDMIRROR_SOURCE_URL).");
                    if !redmirror_telemetry::wait::pause_or_sleep(&mut backoff, shutdown).await {
                        return None;
                    }
                }
            }
        }
    }
}
