//! The live apply loop.
//!
//! A session of one Kafka consumer runs three steps: `Session::read`
//! waits for the next batch (watching shutdown, the hold, finished writes
//! and stalls meanwhile), `Session::dispatch` records the batch in the
//! [`Ledger`] and writes it on a task of its own, and `Session::drain`
//! finishes the writes in flight when the session ends. Each finished write
//! goes through `Session::settle`, which stores the offsets the ledger
//! says are safe: never past a batch that is not written.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, MessageStream, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use redmirror_core::backoff::Backoff;
use redmirror_core::failpoint::{self, Failpoint};
use redmirror_kafka::{DeadLetter, Kafka, Publisher};
use redmirror_state::hold::{Hold, HoldWatch};
use redmirror_state::members;
use redmirror_telemetry::errors::Chain;
use redmirror_telemetry::metrics as m;
use redmirror_telemetry::metrics::ApplyOutcome;
use redmirror_telemetry::wait::pause;
use redmirror_telemetry::{Component, Health};
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::engine::{ApplyEngine, Decoded, Outcome};
use crate::lag::SharedLag;
use crate::ledger::{self, BatchId, Ledger};
use crate::stall::{StallWatch, STALL_AFTER};

/// Apply settings.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Change topic.
    pub topic: String,
    /// Dead-letter topic.
    pub dlq_topic: String,
    /// Consumer group.
    pub group_id: String,
    /// Most events per destination round trip.
    pub batch: usize,
    /// Where this instance acknowledges a hold.
    pub hold_acks_key: String,
    /// Sorted set where this instance announces itself (heartbeat).
    pub members_key: String,
}

/// Fatal apply errors (set-up). Runtime errors are retried, not returned.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Kafka client set-up failed.
    #[error(transparent)]
    Kafka(#[from] redmirror_kafka::Error),
    /// The loop ended without a stop being asked for (the consumer stream
    /// ended, or a write task failed).
    #[error("apply stopped by itself: {reason}")]
    Ended {
        /// Why.
        reason: &'static str,
    },
    /// Subscribing failed.
    #[error("cannot subscribe to {topic}")]
    Subscribe {
        /// Topic.
        topic: String,
        /// Cause.
        #[source]
        source: redmirror_kafka::Librdkafka,
    },
}

struct Item {
    partition: i32,
    offset: i64,
    key: Vec<u8>,
    payload: Vec<u8>,
    decoded: Decoded,
}

fn item(m: &BorrowedMessage<'_>) -> Item {
    let decoded = redmirror_kafka::decode_event(m);
    Item {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        decoded,
    }
}

/// Runs the consumer until `shutdown`: read a batch, write it, dead-letter
/// what can never be applied, store offsets, repeat; the next batch is read
/// while the current one is written. On shutdown the batches being written
/// are finished (for at most [`DRAIN_AT_SHUTDOWN`]) and offsets are
/// committed synchronously.
///
/// While the mirror is held (a rewind, see [`redmirror_state::hold`]) apply
/// writes nothing: it finishes the batches in flight, commits, leaves the
/// consumer group, says so on the destination (the rewind waits for that),
/// and joins again from its committed offsets once the hold ends.
/// `hold` is the process's watch of the hold, read before the first write.
///
/// A consumer that receives nothing for [`STALL_AFTER`] while `lag` (kept
/// by [`crate::lag::track`]) says events wait unread is stuck (a group
/// rejoin that never completes, a wake-up that never comes): it is closed
/// and a new one joins from the committed offsets.
pub async fn run(
    engine: ApplyEngine,
    kafka: &Kafka,
    opts: ApplyOptions,
    mut hold: HoldWatch,
    lag: SharedLag,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), ApplyError> {
    let mut consumer: StreamConsumer = kafka.consumer(&opts.group_id)?;
    let dlq = Publisher::new(kafka, &opts.dlq_topic)?;
    health.register(Component::Destination);
    health.set(Component::Kafka, true);
    // The destination is known up when the engine was built; mark it so.
    health.set(Component::Destination, true);
    let member = members::member_name();
    let announcer = tokio::spawn(members::announce(
        engine.client().clone(),
        opts.members_key.clone(),
        member.clone(),
        shutdown.clone(),
    ));
    let rules = std::sync::Arc::new(crate::rules_watch::RulesWatch::new(
        engine.rules().fields.fingerprint(),
        &health,
    ));
    let writer = Writer {
        engine,
        rules,
        dlq,
        opts: opts.clone(),
        health: health.clone(),
        shutdown: shutdown.clone(),
    };
    let mut totals: BTreeMap<ApplyOutcome, u64> = BTreeMap::new();
    // Consumers replaced after a stall so far.
    let mut generation = 0u32;
    let result = loop {
        if hold.current().is_some() {
            // Acknowledged again for each new hold (a second rewind).
            while let Some(h) = hold.current() {
                acknowledge_hold(writer.engine.client(), &opts, &member, Some(h)).await;
                tracing::info!(
                    at = %redmirror_state::hold::rfc3339(h.at_us),
                    "Apply holds: the mirror is held by a rewind; nothing is written until `redmirror resume`."
                );
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = hold.changed() => {}
                }
            }
            acknowledge_hold(writer.engine.client(), &opts, &member, None).await;
            if shutdown.is_cancelled() {
                break Ok(());
            }
            tracing::info!("Apply resumes from its committed offsets.");
        }
        consumer
            .subscribe(&[&opts.topic])
            .map_err(|source| ApplyError::Subscribe {
                topic: opts.topic.clone(),
                source: source.into(),
            })?;
        tracing::info!(topic = %opts.topic, group = %opts.group_id, "Apply started.");
        let stop = consume(&consumer, &writer, &hold, &lag, generation, &mut totals).await;
        if let Stop::Stalled = stop {
            metrics::counter!(m::APPLY_CONSUMER_RESTARTS).increment(1);
            generation += 1;
            let stuck = std::mem::replace(&mut consumer, kafka.consumer(&opts.group_id)?);
            // A stuck consumer's commit and close can block for ever: they
            // run off the runtime, not waited for. Every finished batch's
            // offsets were stored and auto-committed long before the stall
            // was noticed; a new member reads on from them.
            tokio::task::spawn_blocking(move || {
                let _ = stuck.commit_consumer_state(CommitMode::Sync);
                drop(stuck);
            });
            continue;
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Offset commit failed; the events after the last commit will be applied again (harmless: the watermark skips them).")
            }
        }
        consumer.unsubscribe();
        match stop {
            Stop::Held => continue,
            Stop::Stalled => unreachable!("handled above"),
            Stop::Shutdown => break Ok(()),
            // Shutdown interrupts writes too: only an unasked end is a failure.
            Stop::Ended(_) if shutdown.is_cancelled() => break Ok(()),
            Stop::Ended(reason) => {
                tracing::error!(reason, "Apply stopped by itself; the process exits with a failure.");
                break Err(ApplyError::Ended { reason });
            }
        }
    };
    announcer.abort();
    let _ = members::leave(writer.engine.client(), &opts.members_key, &member).await;
    tracing::info!(
        applied = totals.get(&ApplyOutcome::Applied).copied().unwrap_or(0),
        deleted = totals.get(&ApplyOutcome::Deleted).copied().unwrap_or(0),
        skipped_stale = totals.get(&ApplyOutcome::SkippedStale).copied().unwrap_or(0),
        skipped_rules = totals.get(&ApplyOutcome::SkippedRules).copied().unwrap_or(0),
        events = totals.values().sum::<u64>(),
        "Apply stopped; offsets committed."
    );
    result
}

/// Why a session ([`consume`]) ended.
enum Stop {
    /// Shutdown was asked for.
    Shutdown,
    /// A hold began.
    Held,
    /// Nothing arrived for [`STALL_AFTER`] although events wait unread.
    Stalled,
    /// The loop could not go on.
    Ended(&'static str),
}

/// Why a batch whose write did not finish stops the session.
const WRITE_FAILED: &str = "a batch could not be written (its write task failed)";

/// One consumer session: reads, dispatches and drains batches until
/// shutdown, a hold, a stall or a failure; the batches in flight are
/// finished (or given up at shutdown) before it returns, and offsets are
/// stored up to the first unfinished batch of each partition.
async fn consume(
    consumer: &StreamConsumer,
    writer: &Writer,
    hold: &HoldWatch,
    lag: &SharedLag,
    generation: u32,
    totals: &mut BTreeMap<ApplyOutcome, u64>,
) -> Stop {
    let mut session = Session::new(consumer, writer, hold, lag, generation, totals);
    let stop = loop {
        let batch = match session.read().await {
            Ok(batch) => batch,
            Err(stop) => break stop,
        };
        if let Err(stop) = session.make_room().await {
            break stop;
        }
        // A batch read but not written is read again after the hold.
        if hold.current().is_some() {
            break Stop::Held;
        }
        session.dispatch(batch);
    };
    // A bounded wait at shutdown (whatever ended the session): what is not
    // written by then is read again at the next start. For a hold or a stall
    // every write must land before apply says it stopped writing or a new
    // consumer takes over.
    let within = writer.shutdown.is_cancelled().then_some(DRAIN_AT_SHUTDOWN);
    session.drain(within).await;
    stop
}

/// How long the writes in flight may take to finish at shutdown.
pub const DRAIN_AT_SHUTDOWN: Duration = Duration::from_secs(10);

/// How often the consumer loop polls again and looks for a stall.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Batches written at once (see [`Session::dispatch`]).
const WRITES_IN_FLIGHT: usize = 2;

/// A batch's write task, which yields the batch's id with its result.
struct Write {
    id: BatchId,
    task: JoinHandle<Written>,
}

impl Future for Write {
    type Output = (BatchId, Result<Written, JoinError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let id = self.id;
        Pin::new(&mut self.task).poll(cx).map(|r| (id, r))
    }
}

/// The state of one consumer session.
struct Session<'a> {
    consumer: &'a StreamConsumer,
    stream: MessageStream<'a, rdkafka::consumer::DefaultConsumerContext>,
    writer: &'a Writer,
    /// Wakes [`Session::read`] when a hold begins.
    held: HoldWatch,
    lag: &'a SharedLag,
    totals: &'a mut BTreeMap<ApplyOutcome, u64>,
    ledger: Ledger,
    writes: FuturesUnordered<Write>,
    /// The stream is polled again every tick even when librdkafka signals
    /// nothing, and the tick looks for a stall.
    tick: tokio::time::Interval,
    last_read: std::time::Instant,
    stall: StallWatch,
    /// Whether failpoint `apply-consumer-stuck` stops this consumer reading
    /// after its first message, as a lost wake-up or a stuck group rejoin would.
    freezes: bool,
    frozen: bool,
}

impl<'a> Session<'a> {
    fn new(
        consumer: &'a StreamConsumer,
        writer: &'a Writer,
        hold: &HoldWatch,
        lag: &'a SharedLag,
        generation: u32,
        totals: &'a mut BTreeMap<ApplyOutcome, u64>,
    ) -> Self {
        let mut tick = tokio::time::interval(STALL_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Session {
            consumer,
            stream: consumer.stream(),
            writer,
            held: hold.clone(),
            lag,
            totals,
            ledger: Ledger::new(),
            writes: FuturesUnordered::new(),
            tick,
            last_read: std::time::Instant::now(),
            stall: StallWatch::default(),
            freezes: generation == 0 && failpoint::hit(Failpoint::ApplyConsumerStuck),
            frozen: false,
        }
    }

    /// The read step: waits for a message, then takes whatever else is
    /// ready (up to the batch size) without waiting. Meanwhile it settles
    /// the writes that finish and watches for shutdown, a hold and a stall.
    async fn read(&mut self) -> Result<Vec<Item>, Stop> {
        let opts = &self.writer.opts;
        let mut batch: Vec<Item> = Vec::with_capacity(opts.batch);
        loop {
            tokio::select! {
                biased;
                _ = self.writer.shutdown.cancelled() => return Err(Stop::Shutdown),
                _ = self.held.until_held() => return Err(Stop::Held),
                Some(done) = self.writes.next(), if !self.writes.is_empty() => self.settle(done)?,
                next = self.stream.next(), if !self.frozen => match next.filter(|_| !failpoint::hit(Failpoint::ApplyStreamEnd)) {
                    None => return Err(Stop::Ended("the Kafka consumer stream ended")),
                    Some(Err(e)) => {
                        tracing::warn!(topic = %opts.topic, group = %opts.group_id, error = %e, "Kafka consumer error; the consumer retries by itself (check the brokers, REDMIRROR_KAFKA_BROKERS).");
                        self.writer.health.set(Component::Kafka, false);
                    }
                    Some(Ok(msg)) => {
                        batch.push(item(&msg));
                        self.last_read = std::time::Instant::now();
                        self.frozen = self.freezes;
                        break;
                    }
                },
                _ = self.tick.tick() => self.check_stall()?,
            }
        }
        self.writer.health.set(Component::Kafka, true);
        while batch.len() < opts.batch && !self.frozen {
            match self.stream.next().now_or_never() {
                Some(Some(Ok(msg))) => batch.push(item(&msg)),
                _ => break,
            }
        }
        Ok(batch)
    }

    /// `Err(Stalled)` when nothing was read for [`STALL_AFTER`] with nothing
    /// being written, while the lag says events wait for this consumer.
    fn check_stall(&mut self) -> Result<(), Stop> {
        if !self.writes.is_empty() || self.last_read.elapsed() < STALL_AFTER {
            return Ok(());
        }
        let opts = &self.writer.opts;
        let assigned = assigned_partitions(self.consumer, &opts.topic);
        let now = std::time::Instant::now();
        let Some(n) = self
            .stall
            .check(&assigned, self.last_read, &self.lag.lock().expect("lag lock"), now)
        else {
            return Ok(());
        };
        tracing::error!(
            topic = %opts.topic,
            group = %opts.group_id,
            unread = n,
            idle_s = self.last_read.elapsed().as_secs(),
            "Apply's Kafka consumer has received nothing although events wait unread; closing it and joining the group again from the committed offsets (if this repeats, check the brokers and the group: kafka-consumer-groups.sh --describe --group)."
        );
        self.writer.health.set(Component::Kafka, false);
        Err(Stop::Stalled)
    }

    /// Waits until fewer than [`WRITES_IN_FLIGHT`] batches are being written.
    async fn make_room(&mut self) -> Result<(), Stop> {
        while self.writes.len() >= WRITES_IN_FLIGHT {
            if let Some(done) = self.writes.next().await {
                self.settle(done)?;
            }
        }
        Ok(())
    }

    /// The dispatch step: records `batch` in the ledger and writes it on a
    /// task of its own, so the destination executes one batch while the
    /// next one is read and its script calls built. Two batches may reach
    /// the destination out of order only if one is retried; the watermark
    /// makes that safe (an older event of a flow is skipped as stale, never
    /// applied over a newer one).
    fn dispatch(&mut self, batch: Vec<Item>) {
        let id = self.ledger.push(batch.iter().map(|it| (it.partition, it.offset)));
        metrics::gauge!(m::APPLY_IN_FLIGHT).increment(batch.len() as f64);
        let w = self.writer.clone();
        let task = tokio::spawn(async move {
            if failpoint::hit(Failpoint::ApplyWritePanic) {
                panic!("failpoint {}", Failpoint::ApplyWritePanic);
            }
            let outcomes = write_batch(&w.engine, &w.rules, &w.dlq, &w.opts, &batch, &w.health, &w.shutdown).await;
            Written { batch, outcomes }
        });
        self.writes.push(Write { id, task });
    }

    /// A write finished: counts it, marks its batch done and stores the
    /// offsets that became safe. `Err` when the write did not finish: its
    /// batch stays unfinished in the ledger, so it is read again.
    fn settle(&mut self, (id, joined): (BatchId, Result<Written, JoinError>)) -> Result<(), Stop> {
        let wrote = count(joined, self.totals);
        if wrote {
            self.ledger.done(id);
        }
        store(self.consumer, &self.writer.opts.topic, self.ledger.take_storable());
        if wrote {
            Ok(())
        } else {
            Err(Stop::Ended(WRITE_FAILED))
        }
    }

    /// The drain step: waits for the writes in flight (for at most
    /// `within`, or until all are done), stores what finished, and gives up
    /// the rest, whose events are read again.
    async fn drain(mut self, within: Option<Duration>) {
        let totals = &mut *self.totals;
        ledger::drain(&mut self.ledger, &mut self.writes, within, |(id, joined)| {
            count(joined, totals).then_some(id)
        })
        .await;
        store(self.consumer, &self.writer.opts.topic, self.ledger.take_storable());
        if !self.writes.is_empty() {
            for w in self.writes.iter() {
                w.task.abort();
            }
            metrics::gauge!(m::APPLY_IN_FLIGHT).set(0.0);
            tracing::warn!(
                batches = self.writes.len(),
                from = ?self.ledger.unfinished(),
                "Writes still in flight at shutdown were given up; their events are read again at the next start (harmless: the watermark skips what was written)."
            );
        }
    }
}

/// Counts a finished write task's outcomes; false when its write did not
/// finish (the task failed, or shutdown interrupted its retries). The
/// caller marks the batch done in the ledger only after this, so a crash
/// here leaves its offsets unstored.
fn count(joined: Result<Written, JoinError>, totals: &mut BTreeMap<ApplyOutcome, u64>) -> bool {
    let written = match joined {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "Apply write task failed; its batch will be read again.");
            metrics::gauge!(m::APPLY_IN_FLIGHT).set(0.0);
            return false;
        }
    };
    metrics::gauge!(m::APPLY_IN_FLIGHT).decrement(written.batch.len() as f64);
    let Some(outcomes) = written.outcomes else {
        return false;
    };
    for o in outcomes {
        *totals.entry(o.metric()).or_default() += 1;
    }
    // The crash window at-least-once delivery must survive: the batch is on
    // the destination, its offsets are not stored. The process exits at
    // once, as a crash would (no drain, no commit), without the core file an
    // abort could leave behind.
    if failpoint::hit(Failpoint::ApplyCrashBeforeStore) {
        tracing::error!(
            "Failpoint apply-crash-before-store: the process dies after a write, before its offsets are stored."
        );
        std::process::exit(CRASH_EXIT);
    }
    true
}

/// The exit code of failpoint `apply-crash-before-store`.
const CRASH_EXIT: i32 = 101;

/// Stores `offsets` (per partition, the last offset written) for the next
/// commit.
fn store(consumer: &StreamConsumer, topic: &str, offsets: BTreeMap<i32, i64>) {
    for (p, o) in offsets {
        if let Err(e) = consumer.store_offset(topic, p, o) {
            tracing::debug!(partition = p, error = %e, "Offset not stored (partition revoked?).");
        }
    }
}

/// The partitions of `topic` assigned to `consumer` now.
fn assigned_partitions(consumer: &StreamConsumer, topic: &str) -> Vec<i32> {
    consumer
        .assignment()
        .map(|tpl| tpl.elements_for_topic(topic).iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Records on the destination that this instance stopped writing for
/// `hold` (or, with `None`, that it no longer holds).
async fn acknowledge_hold(client: &fred::prelude::Client, opts: &ApplyOptions, member: &str, hold: Option<Hold>) {
    let key = opts.hold_acks_key.as_str();
    if let Err(e) = members::acknowledge_hold(client, key, member, hold).await {
        tracing::warn!(key, error = %e, "Cannot record the hold on the destination (a rewind waits for it).");
    }
}

/// What a write task needs.
#[derive(Clone)]
struct Writer {
    engine: ApplyEngine,
    rules: std::sync::Arc<crate::rules_watch::RulesWatch>,
    dlq: Publisher,
    opts: ApplyOptions,
    health: Health,
    shutdown: CancellationToken,
}

/// A written batch: its items and outcomes (`None`: shutdown interrupted the retries).
struct Written {
    batch: Vec<Item>,
    outcomes: Option<Vec<Outcome>>,
}

/// Writes one batch, retrying transient errors with backoff until it is
/// done. Returns `None` if shutdown interrupted the retries.
///
/// Under the write limit (`REDMIRROR_APPLY_MAX_RATE`) the batch is written
/// in slices of at most [`redmirror_write::Throttle::burst`] events, each
/// when the limit allows, and counted as it is written; shutdown ends the
/// wait between slices (the batch's offsets are not stored: it is read
/// again, and every step is idempotent).
async fn write_batch(
    engine: &ApplyEngine,
    rules: &crate::rules_watch::RulesWatch,
    dlq: &Publisher,
    opts: &ApplyOptions,
    batch: &[Item],
    health: &Health,
    shutdown: &CancellationToken,
) -> Option<Vec<Outcome>> {
    let mut outcomes = Vec::with_capacity(batch.len());
    for slice in batch.chunks(engine.throttle().burst()) {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            _ = engine.throttle().acquire(slice.len()) => {}
        }
        outcomes.extend(write_slice(engine, dlq, opts, slice, health, shutdown).await?);
    }
    rules.observe(&outcomes, health);
    Some(outcomes)
}

/// Writes one slice of a batch (the write limit already waited for).
async fn write_slice(
    engine: &ApplyEngine,
    dlq: &Publisher,
    opts: &ApplyOptions,
    batch: &[Item],
    health: &Health,
    shutdown: &CancellationToken,
) -> Option<Vec<Outcome>> {
    let decoded: Vec<&Decoded> = batch.iter().map(|i| &i.decoded).collect();
    let written = redmirror_write::retry::until_written(
        batch.len(),
        shutdown,
        None,
        |_| {
            health.set(Component::Destination, false);
            metrics::counter!(m::APPLY_RETRIES).increment(1);
        },
        || engine.apply_now(&decoded, false),
    )
    .await;
    let redmirror_write::retry::Retried::Written(outcomes) = written else {
        return None;
    };
    health.set(Component::Destination, true);
    let now = redmirror_core::now_us();
    // Metric handles are looked up once per batch, counts added per label.
    let end_to_end = metrics::histogram!(m::END_TO_END);
    let mut counts: BTreeMap<ApplyOutcome, u64> = BTreeMap::new();
    for (it, outcome) in batch.iter().zip(&outcomes) {
        if let Outcome::DeadLetter { code, reason } = outcome {
            let d = DeadLetter {
                key: &it.key,
                payload: &it.payload,
                reason_code: code,
                reason: reason.clone(),
                topic: &opts.topic,
                partition: it.partition,
                offset: it.offset,
            };
            let mut backoff = Backoff::default();
            loop {
                match dlq.dead_letter(&d).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(topic = %opts.dlq_topic, error = %Chain(&e), "Dead-letter write failed; retrying, the stream waits (check that the dead-letter topic exists and takes writes).");
                        if !pause(&mut backoff, shutdown).await {
                            return None;
                        }
                    }
                }
            }
        } else if let Ok(ev) = &it.decoded {
            if outcome.wrote() {
                let secs = (now - ev.source_time_us).max(0) as f64 / 1e6;
                end_to_end.record(secs);
            }
        }
        *counts.entry(outcome.metric()).or_default() += 1;
    }
    for (outcome, n) in counts {
        m::apply_outcome(outcome, n);
    }
    let external = batch
        .iter()
        .filter(|it| {
            it.decoded
                .as_ref()
                .is_ok_and(redmirror_core::FlowEvent::is_external_tombstone)
        })
        .count();
    if external > 0 {
        metrics::counter!(m::APPLY_EXTERNAL_TOMBSTONES).increment(external as u64);
        tracing::info!(
            events = external,
            "Tombstones without a redmirror-source-epoch header (written by a tool or an operator) applied as deletes \
             of their flows."
        );
    }
    Some(outcomes)
}
