//! The live apply loop.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;
use redmirror_kafka::{DeadLetter, Kafka, Publisher};
use redmirror_telemetry::metrics as m;
use redmirror_telemetry::Health;
use tokio_util::sync::CancellationToken;

use redmirror_redis::hold::{Hold, HoldWatch};

use crate::engine::{ApplyEngine, Decoded, Outcome};
use crate::lag::SharedLag;

/// Health component names set by apply.
pub const HEALTH_DEST: &str = "destination";
/// Health component for the Kafka consumer.
pub const HEALTH_KAFKA: &str = "kafka";

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
    #[error("cannot subscribe to {topic}: {source}")]
    Subscribe {
        /// Topic.
        topic: String,
        /// Cause.
        #[source]
        source: rdkafka::error::KafkaError,
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
/// while the current one is written. On shutdown the batch being written is
/// finished and offsets are committed synchronously.
///
/// While the mirror is held (a rewind, see [`redmirror_redis::hold`]) apply
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
    health.register(HEALTH_DEST);
    health.set(HEALTH_KAFKA, true);
    // The destination is known up when the engine was built; mark it so.
    health.set(HEALTH_DEST, true);
    let member = format!("{}-{}", std::process::id(), redmirror_core::now_us());
    let announcer = tokio::spawn(announce(
        engine.client().clone(),
        opts.members_key.clone(),
        member.clone(),
        shutdown.clone(),
    ));
    let writer = Writer {
        engine,
        dlq,
        opts: opts.clone(),
        health: health.clone(),
        shutdown: shutdown.clone(),
    };
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    // Consumers replaced after a stall so far.
    let mut generation = 0u32;
    let result = loop {
        if hold.current().is_some() {
            // Acknowledged again for each new hold (a second rewind).
            while let Some(h) = hold.current() {
                acknowledge_hold(writer.engine.client(), &opts, &member, Some(h)).await;
                tracing::info!(
                    at = %redmirror_redis::hold::rfc3339(h.at_us),
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
                source,
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
    let _: Result<i64, _> =
        fred::interfaces::SortedSetsInterface::zrem(writer.engine.client(), opts.members_key.as_str(), member.as_str())
            .await;
    tracing::info!(
        applied = totals.get("applied").copied().unwrap_or(0),
        deleted = totals.get("deleted").copied().unwrap_or(0),
        skipped_stale = totals.get("skipped_stale").copied().unwrap_or(0),
        events = totals.values().sum::<u64>(),
        "Apply stopped; offsets committed."
    );
    result
}

/// Why [`consume`] returned.
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

/// Reads and writes batches until shutdown, a hold or a failure; the
/// batches in flight are finished (or given up at shutdown) before it
/// returns, and offsets are stored in order up to the first unfinished one.
async fn consume(
    consumer: &StreamConsumer,
    writer: &Writer,
    hold: &HoldWatch,
    lag: &SharedLag,
    generation: u32,
    totals: &mut BTreeMap<&'static str, u64>,
) -> Stop {
    let (opts, health, shutdown) = (&writer.opts, &writer.health, &writer.shutdown);
    let mut held = hold.clone();
    let mut stream = consumer.stream();
    // The stream is polled again every tick even when librdkafka signals
    // nothing, and the tick looks for a stall.
    let mut tick = tokio::time::interval(STALL_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_read = std::time::Instant::now();
    // The failpoint stops the first consumer reading after its first
    // message, as a lost wake-up or a stuck group rejoin would.
    let mut stall = StallWatch::default();
    let freezes = generation == 0 && redmirror_core::failpoint::hit("apply-consumer-stuck");
    let mut frozen = false;
    // Up to WRITES_IN_FLIGHT batches are written (each on its own task)
    // while the next is read and decoded, so the destination executes one
    // batch while the next one's script calls are built. Batches finish and
    // store offsets in order. Two batches may reach the destination out of
    // order only if one is retried; the watermark makes that safe (an older
    // event of a flow is skipped as stale, never applied over a newer one).
    let mut in_flight: VecDeque<tokio::task::JoinHandle<Written>> = VecDeque::new();
    // False once a batch did not finish: no later batch may store offsets
    // past it, or its events would never be read again.
    let mut complete = true;
    let stop = 'run: loop {
        let mut batch: Vec<Item> = Vec::with_capacity(opts.batch);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'run Stop::Shutdown,
                // A batch read but not written is read again after the hold.
                _ = held.until_held() => break 'run Stop::Held,
                done = async { in_flight.front_mut().expect("guarded").await }, if !in_flight.is_empty() => {
                    in_flight.pop_front();
                    if !finish(done, consumer, &opts.topic, totals) {
                        complete = false;
                        break 'run Stop::Ended("a batch could not be written (its write task failed)");
                    }
                }
                next = stream.next(), if !frozen => match next.filter(|_| !redmirror_core::failpoint::hit("apply-stream-end")) {
                    None => break 'run Stop::Ended("the Kafka consumer stream ended"),
                    Some(Err(e)) => {
                        tracing::warn!(topic = %opts.topic, group = %opts.group_id, error = %e, "Kafka consumer error; the consumer retries by itself (check the brokers, REDMIRROR_KAFKA_BROKERS).");
                        health.set(HEALTH_KAFKA, false);
                    }
                    Some(Ok(msg)) => {
                        batch.push(item(&msg));
                        last_read = std::time::Instant::now();
                        frozen = freezes;
                        break;
                    }
                },
                _ = tick.tick() => {
                    if in_flight.is_empty() && last_read.elapsed() >= STALL_AFTER {
                        let assigned = assigned_partitions(consumer, &opts.topic);
                        let now = std::time::Instant::now();
                        if let Some(n) = stall.check(&assigned, last_read, &lag.lock().expect("lag lock"), now) {
                            tracing::error!(
                                topic = %opts.topic,
                                group = %opts.group_id,
                                unread = n,
                                idle_s = last_read.elapsed().as_secs(),
                                "Apply's Kafka consumer has received nothing although events wait unread; closing it and joining the group again from the committed offsets (if this repeats, check the brokers and the group: kafka-consumer-groups.sh --describe --group)."
                            );
                            health.set(HEALTH_KAFKA, false);
                            break 'run Stop::Stalled;
                        }
                    }
                }
            }
        }
        health.set(HEALTH_KAFKA, true);
        // Take whatever else is ready, without waiting.
        while batch.len() < opts.batch && !frozen {
            match stream.next().now_or_never() {
                Some(Some(Ok(msg))) => batch.push(item(&msg)),
                _ => break,
            }
        }
        while in_flight.len() >= WRITES_IN_FLIGHT {
            let h = in_flight.pop_front().expect("non-empty");
            if !finish(h.await, consumer, &opts.topic, totals) {
                complete = false;
                break 'run Stop::Ended("a batch could not be written (its write task failed)");
            }
        }
        if hold.current().is_some() {
            break Stop::Held;
        }
        metrics::gauge!(m::APPLY_IN_FLIGHT).increment(batch.len() as f64);
        let w = writer.clone();
        in_flight.push_back(tokio::spawn(async move {
            if redmirror_core::failpoint::hit("apply-write-panic") {
                panic!("failpoint apply-write-panic");
            }
            let outcomes = write_batch(&w.engine, &w.dlq, &w.opts, &batch, &w.health, &w.shutdown).await;
            Written { batch, outcomes }
        }));
    };
    while let Some(h) = in_flight.pop_front() {
        let done = h.await;
        complete = complete && finish(done, consumer, &opts.topic, totals);
    }
    stop
}

/// Records on the destination that this instance stopped writing for
/// `hold` (or, with `None`, that it no longer holds).
async fn acknowledge_hold(client: &fred::prelude::Client, opts: &ApplyOptions, member: &str, hold: Option<Hold>) {
    use fred::interfaces::{HashesInterface, KeysInterface};
    let key = opts.hold_acks_key.as_str();
    let r: Result<(), fred::error::Error> = async {
        match hold {
            Some(h) => {
                let _: () = client.hset(key, (member, h.since_us.to_string())).await?;
                let _: () = client.pexpire(key, MEMBER_TTL_MS, None).await?;
            }
            None => {
                let _: () = client.hdel(key, member).await?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(key, error = %e, "Cannot record the hold on the destination (a rewind waits for it).");
    }
}

/// How long apply's consumer may receive nothing while events wait unread
/// before it counts as stuck: three session timeouts, so a normal rejoin
/// after a broker pause or a rebalance is never taken for a stall.
pub const STALL_AFTER: Duration = Duration::from_secs(30);

/// Decides whether a consumer that received nothing for [`STALL_AFTER`]
/// is stuck, from lag measurements taken after its last read (plus the
/// auto-commit of what it read).
#[derive(Debug, Default)]
struct StallWatch {
    /// With no partition assigned: the group's committed offsets when the
    /// silence was first measured, and when.
    baseline: Option<(std::time::Instant, BTreeMap<i32, i64>)>,
}

impl StallWatch {
    /// The events that wait unread if the consumer is stuck.
    ///
    /// With partitions assigned, it is stuck when any of them has events
    /// not committed. With none (a rejoin that never completes, or more
    /// instances than partitions), it is stuck only when events wait and
    /// the whole group committed nothing for [`STALL_AFTER`]: another
    /// instance busy with a backlog is not this one's stall.
    fn check(
        &mut self,
        assigned: &[i32],
        last_read: std::time::Instant,
        lag: &crate::lag::Measured,
        now: std::time::Instant,
    ) -> Option<i64> {
        // Measured after the auto-commit of the last read (every 1 s), and
        // recently: with the broker unreachable nothing is measured, and an
        // old measurement says nothing about now.
        let recent = lag
            .at
            .is_some_and(|at| now.saturating_duration_since(at) < MEASURED_WITHIN);
        if !recent || !lag.fresh_after(last_read + Duration::from_secs(5)) {
            return None;
        }
        if !assigned.is_empty() {
            return Some(lag.unread(Some(assigned))).filter(|n| *n > 0);
        }
        let unread = lag.unread(None);
        if unread == 0 {
            self.baseline = None;
            return None;
        }
        match &self.baseline {
            Some((since, committed)) if committed == &lag.committed => {
                (now.duration_since(*since) >= STALL_AFTER).then_some(unread)
            }
            _ => {
                self.baseline = Some((now, lag.committed.clone()));
                None
            }
        }
    }
}

/// How recent the lag measurement behind a stall must be (three of
/// [`crate::lag::track`]'s periods).
const MEASURED_WITHIN: Duration = Duration::from_secs(15);

/// The partitions of `topic` assigned to `consumer` now.
fn assigned_partitions(consumer: &StreamConsumer, topic: &str) -> Vec<i32> {
    consumer
        .assignment()
        .map(|tpl| tpl.elements_for_topic(topic).iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// How often the consumer loop polls again and looks for a stall.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Batches written at once (see `run`).
const WRITES_IN_FLIGHT: usize = 2;

/// What a write task needs.
#[derive(Clone)]
struct Writer {
    engine: ApplyEngine,
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

/// Counts a written batch and stores its offsets; false when the write did
/// not finish (its offsets are not stored, so it is read again).
fn finish(
    joined: Result<Written, tokio::task::JoinError>,
    consumer: &StreamConsumer,
    topic: &str,
    totals: &mut BTreeMap<&'static str, u64>,
) -> bool {
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
        *totals.entry(o.label()).or_default() += 1;
    }
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for it in &written.batch {
        last.insert(it.partition, it.offset);
    }
    for (p, o) in last {
        if let Err(e) = consumer.store_offset(topic, p, o) {
            tracing::debug!(partition = p, error = %e, "Offset not stored (partition revoked?).");
        }
    }
    true
}

/// Every [`HEARTBEAT`]: announces this instance in the members set, and
/// forgets members that stopped announcing themselves (crashed instances)
/// so the set stays as small as the live group.
async fn announce(client: fred::prelude::Client, members_key: String, member: String, shutdown: CancellationToken) {
    use fred::interfaces::{KeysInterface, SortedSetsInterface};
    loop {
        let now_ms = redmirror_core::now_us() / 1000;
        let r: Result<(), fred::error::Error> = async {
            let _: i64 = client
                .zadd(
                    members_key.as_str(),
                    None,
                    None,
                    false,
                    false,
                    (now_ms as f64, member.as_str()),
                )
                .await?;
            let _: i64 = client
                .zremrangebyscore(members_key.as_str(), f64::NEG_INFINITY, (now_ms - MEMBER_TTL_MS) as f64)
                .await?;
            let _: () = client.pexpire(members_key.as_str(), MEMBER_TTL_MS, None).await?;
            Ok(())
        }
        .await;
        if let Err(e) = r {
            tracing::debug!(key = %members_key, error = %e, "Heartbeat not written.");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
}

/// How often an apply instance announces itself.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// A member (or hold acknowledgement) not refreshed for this long is
/// forgotten: 120 heartbeats, far past any pause of a live process.
pub const MEMBER_TTL_MS: i64 = 60_000;

/// Apply instances that announced themselves within the last 3 s.
pub async fn live_members(
    client: &fred::prelude::Client,
    members_key: &str,
) -> Result<Vec<String>, fred::error::Error> {
    use fred::interfaces::SortedSetsInterface;
    let since = (redmirror_core::now_us() / 1000 - 3000) as f64;
    client
        .zrangebyscore(members_key, since, f64::INFINITY, false, None)
        .await
}

/// The live apply instances that have not yet stopped writing for the
/// hold that began at `since_us` (empty: none is in a rewind's way).
pub async fn not_yet_held(
    client: &fred::prelude::Client,
    members_key: &str,
    acks_key: &str,
    since_us: i64,
) -> Result<Vec<String>, fred::error::Error> {
    use fred::interfaces::HashesInterface;
    let live = live_members(client, members_key).await?;
    let acks: std::collections::HashMap<String, String> = client.hgetall(acks_key).await?;
    let want = since_us.to_string();
    Ok(live.into_iter().filter(|m| acks.get(m) != Some(&want)).collect())
}

/// Writes one batch, retrying transient errors with backoff until it is
/// done. Returns `None` if shutdown interrupted the retries.
async fn write_batch(
    engine: &ApplyEngine,
    dlq: &Publisher,
    opts: &ApplyOptions,
    batch: &[Item],
    health: &Health,
    shutdown: &CancellationToken,
) -> Option<Vec<Outcome>> {
    let decoded: Vec<&Decoded> = batch.iter().map(|i| &i.decoded).collect();
    let mut backoff = Backoff::default();
    let outcomes = loop {
        match engine.apply(&decoded, false).await {
            Ok(o) => {
                health.set(HEALTH_DEST, true);
                break o;
            }
            Err(e) => {
                health.set(HEALTH_DEST, false);
                metrics::counter!(m::APPLY_RETRIES).increment(1);
                tracing::warn!(error = %e, events = batch.len(), "Destination write failed; retrying with backoff, nothing skipped (check the destination, REDMIRROR_DEST_URL).");
                if !backoff.wait(shutdown).await {
                    return None;
                }
            }
        }
    };
    let now = redmirror_core::now_us();
    // Metric handles are looked up once per batch, counts added per label.
    let end_to_end = metrics::histogram!(m::END_TO_END);
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
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
                        tracing::warn!(topic = %opts.dlq_topic, error = %e, "Dead-letter write failed; retrying, the stream waits (check that the dead-letter topic exists and takes writes).");
                        if !backoff.wait(shutdown).await {
                            return None;
                        }
                    }
                }
            }
            tracing::warn!(
                partition = it.partition,
                offset = it.offset,
                reason = %reason,
                "Event dead-lettered."
            );
        } else if let Ok(ev) = &it.decoded {
            if outcome.wrote() {
                let secs = (now - ev.source_time_us).max(0) as f64 / 1e6;
                end_to_end.record(secs);
            }
        }
        *counts.entry(outcome.label()).or_default() += 1;
    }
    for (label, n) in counts {
        m::apply_outcome(label, n);
    }
    Some(outcomes)
}

/// Exponential backoff, 50 ms to 5 s.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(50),
        }
    }
}

impl Backoff {
    /// Waits the next delay; false if `shutdown` fired first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// Offsets committed by `group` on `topic`, per partition (no entry when none).
pub fn committed(kafka: &Kafka, group: &str, topic: &str) -> Result<BTreeMap<i32, i64>, redmirror_kafka::Error> {
    let (c, ids) = crate::lag::partitions(kafka, topic, &[("group.id", group), ("enable.auto.commit", "false")])?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in ids {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, redmirror_kafka::ADMIN_TIMEOUT)
        .map_err(|e| crate::lag::topic_error(topic, e))?;
    let mut out = BTreeMap::new();
    for e in got.elements() {
        if let Offset::Offset(o) = e.offset() {
            out.insert(e.partition(), o);
        }
    }
    drop(got);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::lag::Measured;

    fn measured(at: Instant, lag: &[(i32, i64)], committed: &[(i32, i64)]) -> Measured {
        Measured {
            per_partition: lag.iter().copied().collect(),
            committed: committed.iter().copied().collect(),
            at: Some(at),
        }
    }

    #[test]
    fn an_assigned_partition_with_events_waiting_is_a_stall_once_measured_after_the_last_read() {
        let read = Instant::now();
        let mut w = StallWatch::default();
        let now = read + STALL_AFTER;
        let early = measured(read + Duration::from_secs(1), &[(0, 7)], &[(0, 3)]);
        assert_eq!(w.check(&[0], read, &early, now), None, "measured before the commit");
        let fresh = measured(now - Duration::from_secs(2), &[(0, 7), (1, 0)], &[(0, 3)]);
        assert_eq!(w.check(&[0, 1], read, &fresh, now), Some(7));
        assert_eq!(w.check(&[1], read, &fresh, now), None, "another instance's partition");
        let old = measured(read + Duration::from_secs(6), &[(0, 7)], &[(0, 3)]);
        assert_eq!(
            w.check(&[0], read, &old, now),
            None,
            "no measurement since (broker unreachable)"
        );
        let caught_up = measured(now - Duration::from_secs(2), &[(0, 0)], &[(0, 10)]);
        assert_eq!(w.check(&[0], read, &caught_up, now), None);
    }

    #[test]
    fn with_nothing_assigned_it_is_a_stall_only_when_the_whole_group_commits_nothing() {
        let read = Instant::now();
        let t = |s: u64| read + Duration::from_secs(s);
        let mut w = StallWatch::default();
        // Another member works through a backlog: its commits move.
        assert_eq!(
            w.check(&[], read, &measured(t(30), &[(0, 50)], &[(0, 100)]), t(31)),
            None
        );
        assert_eq!(
            w.check(&[], read, &measured(t(40), &[(0, 40)], &[(0, 110)]), t(41)),
            None
        );
        assert_eq!(
            w.check(&[], read, &measured(t(80), &[(0, 45)], &[(0, 130)]), t(81)),
            None
        );
        // Nobody commits for STALL_AFTER while events wait.
        assert_eq!(
            w.check(&[], read, &measured(t(95), &[(0, 45)], &[(0, 130)]), t(100)),
            None
        );
        assert_eq!(
            w.check(&[], read, &measured(t(110), &[(0, 60)], &[(0, 130)]), t(111)),
            Some(60)
        );
        // Nothing waits: never a stall.
        let mut w = StallWatch::default();
        assert_eq!(
            w.check(&[], read, &measured(t(30), &[(0, 0)], &[(0, 130)]), t(31)),
            None
        );
        assert_eq!(
            w.check(&[], read, &measured(t(90), &[(0, 0)], &[(0, 130)]), t(91)),
            None
        );
    }
}
