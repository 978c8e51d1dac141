//! capture: follows the source and publishes one state event per change.
//!
//! # Layout
//! - [`notify`]: checks (and, when allowed, sets) `notify-keyspace-events`,
//!   refusing to start with the exact `CONFIG SET` needed; while capture
//!   runs, re-checks after every subscription and every 30 s, failing
//!   readiness while classes are missing and reporting a gap once they are
//!   back.
//! - [`pending`]: the bounded set of changed flows waiting to be read
//!   (coalesces bursts; when full it drops and reports a gap, never grows).
//! - [`subscriber`]: the keyevent subscription, one session at a time;
//!   every re-subscription (and every overflow) is a gap, counted and
//!   reported so the reconciler runs a pass.
//! - [`publisher`]: reads pending flows atomically with the source clock
//!   and publishes their state with the idempotent producer.
//! - [`flushes`]: polls `INFO commandstats` for FLUSHDB, FLUSHALL and
//!   SWAPDB, which send no per-key notification, and reports each as a gap.
//! - [`masters`]: a cluster source's masters as capture's own map has them
//!   now, for the commands that must reach each (the two above).
//! - [`run`]: the whole role.
//! - [`role`]: the role as a process runs it (only while it holds the
//!   capture lease, gaps signalled to the reconciler), and resync.
//!
//! capture never writes the source's data and runs no scripts: it needs
//! `psubscribe`, `multi`/`exec`, `time`, `info`, `hgetall` and `config get`
//! (see docs/operations.md for the ACL). Its one change to the source is a
//! setting: with `configure_notifications` it runs
//! `CONFIG SET notify-keyspace-events` (and then needs `config set` too).

pub mod flushes;
pub mod masters;
pub mod notify;
pub mod pending;
pub mod publisher;
pub mod role;
pub mod subscriber;

use std::sync::Arc;
use std::time::Duration;

use redmirror_redis::cluster::Cluster;

use redmirror_config::RedisEndpoint;
use redmirror_core::{KeyLayout, MirrorRules};
use redmirror_kafka::Publisher;
use redmirror_telemetry::errors::Chain;
use redmirror_telemetry::metrics::SourceFlush;
use redmirror_telemetry::{Component, Health};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use pending::{Pending, Progress};

/// Where capture reports its [`Progress`] for the reconciler's barrier: a
/// key on the destination holding `"{run} {received} {settled}"`
/// ([`redmirror_core::KeyLayout::capture_progress_key`]). It is written
/// every 100 ms while it changes (every second otherwise) with a 10 s
/// expiry, so a capture that died stops holding passes back, and deleted
/// when capture stops. `run` tells one capture run from the next (its
/// sequence numbers start again at 0).
#[derive(Clone, Debug)]
pub struct ProgressReport {
    /// Destination client.
    pub client: fred::prelude::Client,
    /// The key.
    pub key: String,
}

/// How often progress is written while it changes.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// How often it is written when nothing changes (keeps the expiry fresh).
const PROGRESS_REFRESH: Duration = Duration::from_secs(1);
/// Expiry of the progress key.
const PROGRESS_TTL_MS: i64 = 10_000;

async fn report_progress(report: ProgressReport, pending: Arc<Pending>, stop: CancellationToken) {
    use fred::prelude::*;
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            ^ u128::from(std::process::id())
    );
    let mut last: Option<Progress> = None;
    let mut written = tokio::time::Instant::now();
    loop {
        let now = pending.progress();
        if last != Some(now) || written.elapsed() >= PROGRESS_REFRESH {
            let value = redmirror_core::CaptureProgress {
                run: run.clone(),
                received: now.received,
                settled: now.settled,
            }
            .encode();
            let set: Result<(), _> = report
                .client
                .set(
                    &report.key,
                    value,
                    Some(fred::types::Expiration::PX(PROGRESS_TTL_MS)),
                    None,
                    false,
                )
                .await;
            match set {
                Ok(()) => {
                    last = Some(now);
                    written = tokio::time::Instant::now();
                }
                Err(e) => tracing::debug!(error = %e, "Cannot write capture progress; retrying."),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(PROGRESS_EVERY) => {}
        }
    }
    let _: Result<i64, _> = report.client.del(&report.key).await;
}

/// A possible gap in the notification stream: the reconciler should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gap {
    /// The first subscription: anything changed while capture was down is unknown.
    Start,
    /// The subscription was lost and re-made.
    Resubscribed,
    /// Notifications were dropped while the pending set was full: one per
    /// overflow episode, reported when it ended (after every drop it covers).
    Overflow {
        /// Flows dropped in the episode.
        dropped: u64,
    },
    /// The source ran FLUSHDB, FLUSHALL or SWAPDB (with how many calls):
    /// flows vanished or appeared without a notification.
    Flushed(Vec<(SourceFlush, u64)>),
    /// Notification classes were missing on the source (or capture had to
    /// set them again) and are back.
    NotificationsBack,
    /// A cluster source's slots changed master (these): a failover, a
    /// slot migration, a master added or removed.
    Topology(Vec<u16>),
    /// A master of a cluster source came after the start: the subscriber
    /// subscribed to it (it joined, or its subscription was lost and
    /// re-made), or the flush watcher first read its counters (a promoted
    /// replica). A gap for its slots.
    Slots {
        /// The master's address.
        master: String,
        /// The slots it serves.
        slots: Vec<u16>,
    },
}

impl Gap {
    /// What the gap covers: a cluster master's slots, or everything.
    pub fn scope(&self) -> redmirror_state::signal::GapScope {
        use redmirror_state::signal::GapScope;
        match self {
            Gap::Topology(slots) | Gap::Slots { slots, .. } => GapScope::Slots(slots.clone()),
            _ => GapScope::Whole,
        }
    }

    /// Reports the gap: logs and counts it (the first subscription is
    /// logged by the subscriber, with its pattern, and is not counted) and
    /// sends it on `gaps` for the reconciler.
    pub fn report(self, gaps: &mpsc::UnboundedSender<Gap>) {
        use redmirror_telemetry::metrics as m;
        match &self {
            Gap::Start => {}
            Gap::Resubscribed => {
                metrics::counter!(m::CAPTURE_GAPS).increment(1);
                tracing::warn!("Re-subscribed to source notifications: gap reported for reconciliation.");
            }
            Gap::Overflow { dropped } => {
                metrics::counter!(m::CAPTURE_GAPS).increment(1);
                tracing::warn!(
                    dropped,
                    "Capture fell behind: changed flows were dropped while the pending set was full \
                     (capture_pending_max); the set has room again, gap reported for reconciliation."
                );
            }
            Gap::Flushed(ran) => {
                for (command, calls) in ran {
                    metrics::counter!(m::CAPTURE_SOURCE_FLUSHES, "command" => command.label()).increment(*calls);
                }
                let names: Vec<String> = ran.iter().map(|(c, _)| c.label().to_uppercase()).collect();
                tracing::warn!(
                    commands = %names.join(","),
                    "The source ran a command that sends no per-key notification: gap reported for reconciliation."
                );
            }
            Gap::Topology(slots) => {
                metrics::counter!(m::CAPTURE_GAPS).increment(1);
                tracing::warn!(
                    slots = slots.len(),
                    "The source cluster's slots changed master: gap reported for a pass over those slots."
                );
            }
            Gap::Slots { master, slots } => {
                metrics::counter!(m::CAPTURE_GAPS).increment(1);
                tracing::warn!(
                    master = %master,
                    slots = slots.len(),
                    "A master of the source cluster came after the start (it joined, was promoted, or \
                     re-subscribed): what it ran before is unknown; gap reported for a pass over its slots."
                );
            }
            Gap::NotificationsBack => {
                metrics::counter!(m::CAPTURE_GAPS).increment(1);
                tracing::warn!(
                    "Keyspace notifications are back on the source: gap reported for reconciliation (changes \
                     made while they were missing are unknown)."
                );
            }
        }
        let _ = gaps.send(self);
    }
}

/// Capture settings.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Source endpoint (its URL path picks the database).
    pub source: RedisEndpoint,
    /// Key layout.
    pub keys: KeyLayout,
    /// Mirror rules (exclusions, filter, size limit).
    pub rules: MirrorRules,
    /// Flows per atomic read.
    pub batch: usize,
    /// Most distinct flows pending.
    pub pending_max: usize,
    /// Set `notify-keyspace-events` when classes are missing.
    pub configure_notifications: bool,
    /// How long a stop may take to drain pending flows and flush.
    pub shutdown_timeout: Duration,
    /// The source epoch this process orders its reads with.
    pub epoch: redmirror_redis::epoch::SourceEpoch,
}

/// Capture errors that stop the role.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Connecting or checking the source failed.
    #[error(transparent)]
    Redis(#[from] redmirror_redis::RedisError),
    /// Keyspace notifications are not configured.
    #[error(transparent)]
    Notify(#[from] notify::NotifyError),
    /// The Kafka producer failed fatally (librdkafka's fatal error, e.g. of
    /// the idempotent producer): it can publish nothing more, so the role
    /// stops and the process exits non-zero, to be started again with a
    /// new producer.
    #[error("the Kafka producer failed fatally and can publish nothing more ({0}); capture stops")]
    ProducerFatal(String),
    /// The subscriber's thread or runtime could not be started.
    #[error("cannot start the notification subscriber's thread")]
    Runtime(#[source] std::io::Error),
    /// Waiting for the source ended otherwise.
    #[error(transparent)]
    Wait(anyhow::Error),
}

/// Runs the subscriber on a thread of its own, with a one-thread runtime:
/// the notification stream is drained however busy apply or a reconcile
/// pass keep the shared runtime. On the shared runtime, hot flows written
/// faster than the workers are free overflow the notification buffer, and
/// every overflow is a gap and a reconcile pass. Resolves when the
/// subscriber ends.
fn spawn_subscriber(
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::sync::oneshot::Receiver<()>, CaptureError> {
    let (done, ended) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CaptureError::Runtime)?;
    std::thread::Builder::new()
        .name("capture-sub".into())
        .spawn(move || {
            runtime.block_on(task);
            let _ = done.send(());
        })
        .map_err(CaptureError::Runtime)?;
    Ok(ended)
}

/// How often a cluster source's map is read again (a failover, a slot
/// moved, a master added or removed).
pub const TOPOLOGY_EVERY: Duration = Duration::from_secs(1);

/// On a cluster source: reads the map every [`TOPOLOGY_EVERY`]. A change
/// is a gap for the slots concerned (changes there while they moved may
/// not have been notified) and a new source epoch (the reader moves it);
/// the subscriptions follow the new masters ([`subscriber::run_cluster`]).
async fn watch_topology(
    reader: Arc<redmirror_redis::source::SourceReader>,
    cluster: Arc<Cluster>,
    gaps: mpsc::UnboundedSender<Gap>,
    stop: CancellationToken,
) {
    let mut failing = false;
    // The map as last reported: a change installed by the reader (after a
    // redirection) is reported here too.
    let mut seen = cluster.topology();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TOPOLOGY_EVERY) => {}
        }
        match reader.refresh_topology().await {
            Ok(_) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %Chain(&e), "Cannot read the source cluster's map; retrying.");
            }
            Err(_) => {}
        }
        let now = cluster.topology();
        let moved = seen.moved_slots(&now);
        if !moved.is_empty() {
            tracing::info!(
                masters = %now.shards.iter().map(|s| s.addr.to_string()).collect::<Vec<_>>().join(", "),
                slots = moved.len(),
                "The source cluster changed."
            );
            Gap::Topology(moved).report(&gaps);
        }
        seen = now;
    }
}

/// Connects to the source and checks its notification setting, waiting
/// (with backoff, 100 ms to 5 s) while the source is down or loading: a
/// standby that takes the lease during a source outage must wait for it,
/// not fail. `None` when `shutdown` came first.
async fn connect_when_up(
    opts: &CaptureOptions,
    reader: &redmirror_redis::source::SourceReader,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<Option<(fred::prelude::Client, Option<Arc<Cluster>>)>, CaptureError> {
    let up = redmirror_telemetry::wait::until_up(
        "the source (REDMIRROR_SOURCE_URL)",
        shutdown,
        || async {
            let attempt = async {
                let client = redmirror_redis::connect(&opts.source, "capture-reader").await?;
                notify::ensure(&client, &opts.source, opts.configure_notifications).await?;
                let cluster = reader.detect().await?;
                Ok::<_, CaptureError>((client, cluster))
            }
            .await;
            if attempt.is_err() {
                health.set(Component::Source, false);
            }
            Ok(attempt?)
        },
        source_retryable,
    )
    .await;
    match up {
        Ok(up) => Ok(Some(up)),
        Err(e) if e.is::<redmirror_telemetry::wait::Stopped>() => Ok(None),
        Err(e) => Err(e.downcast::<CaptureError>().unwrap_or_else(CaptureError::Wait)),
    }
}

/// A failure to reach the source worth waiting out: the source is down or
/// loading, or its notification setting cannot be read yet (not a
/// permission refusal).
fn source_retryable(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<CaptureError>() {
        Some(CaptureError::Redis(e)) => e.is_retryable(),
        Some(CaptureError::Notify(notify::NotifyError::Unreadable { refused, .. })) => !refused,
        _ => false,
    }
}

/// Runs capture until `shutdown`. Gaps are sent on `gaps` (may be closed);
/// progress is reported to `progress` when given.
pub async fn run(
    opts: CaptureOptions,
    publisher: Publisher,
    health: Health,
    gaps: mpsc::UnboundedSender<Gap>,
    progress: Option<ProgressReport>,
    shutdown: CancellationToken,
) -> Result<(), CaptureError> {
    health.register(Component::Source);
    health.register(Component::Notifications);
    let reader = redmirror_redis::source::SourceReader::new(
        &opts.source,
        opts.keys.clone(),
        redmirror_redis::epoch::EpochReader::new(opts.epoch.clone(), true),
    )?;
    let Some((client, cluster)) = connect_when_up(&opts, &reader, &health, &shutdown).await? else {
        return Ok(());
    };
    if cluster.is_some() {
        // What each master was before this start is not kept: a failover
        // while capture was down (to a replica whose clock is behind) is
        // only safe in a new epoch.
        opts.epoch
            .bump("capture started on a cluster source (its masters' identities are not kept across restarts)");
    }
    health.set(Component::Source, true);
    health.set(Component::Notifications, true);
    let pending = Arc::new(Pending::new(opts.pending_max));
    let stop_sub = CancellationToken::new();
    let masters = || cluster.clone().map(masters::Masters::new);
    let flushes = tokio::spawn(flushes::watch(
        client.clone(),
        masters(),
        gaps.clone(),
        stop_sub.clone(),
    ));
    let subscribed = Arc::new(tokio::sync::Notify::new());
    let watcher = tokio::spawn(notify::watch(
        client.clone(),
        opts.source.clone(),
        opts.configure_notifications,
        health.clone(),
        gaps.clone(),
        subscribed.clone(),
        masters(),
        stop_sub.clone(),
    ));
    let beat = {
        let (c, s) = (client.clone(), stop_sub.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = s.cancelled() => {}
                _ = redmirror_redis::heartbeat(c) => {}
            }
        })
    };
    let sub = match &cluster {
        None => spawn_subscriber(subscriber::run(
            opts.source.clone(),
            subscriber::Scope::Whole,
            opts.keys.clone(),
            pending.clone(),
            gaps.clone(),
            health.clone(),
            subscribed,
            stop_sub.clone(),
        ))?,
        Some(c) => spawn_subscriber(subscriber::run_cluster(
            c.clone(),
            opts.keys.clone(),
            pending.clone(),
            gaps.clone(),
            health.clone(),
            subscribed,
            stop_sub.clone(),
        ))?,
    };
    let reader = Arc::new(reader);
    let topology = cluster.as_ref().map(|c| {
        tokio::spawn(watch_topology(
            reader.clone(),
            c.clone(),
            gaps.clone(),
            stop_sub.clone(),
        ))
    });
    let overflows = {
        let (p, g, s) = (pending.clone(), gaps.clone(), stop_sub.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = s.cancelled() => return,
                    dropped = p.overflowed() => Gap::Overflow { dropped }.report(&g),
                }
            }
        })
    };
    let stop_progress = CancellationToken::new();
    let reporter = progress.map(|p| tokio::spawn(report_progress(p, pending.clone(), stop_progress.clone())));
    let result = publisher::run(&opts, reader, publisher, pending, health.clone(), shutdown).await;
    stop_sub.cancel();
    if let Some(t) = topology {
        let _ = t.await;
    }
    let _ = sub.await;
    let _ = overflows.await;
    let _ = flushes.await;
    let _ = watcher.await;
    let _ = beat.await;
    // Not capturing any more (stopped, or standing by without the lease):
    // the setting is checked again by the next run.
    health.remove(Component::Notifications);
    metrics::gauge!(redmirror_telemetry::metrics::CAPTURE_NOTIFICATIONS_MISSING).set(0.0);
    stop_progress.cancel();
    if let Some(r) = reporter {
        let _ = r.await;
    }
    result
}
