//! Starting and stopping the roles in one process.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use redmirror_apply::{ApplyEngine, ApplyOptions};
use redmirror_capture::CaptureOptions;
use redmirror_config::Config;
use redmirror_core::LeaseName;
use redmirror_kafka::{EmbeddedBroker, Kafka, Publisher};
use redmirror_reconcile::{PassOptions, Reconciler, Service, Sides};
use redmirror_redis::epoch::{EpochReader, SourceEpoch};
use redmirror_redis::routed::Routed;
use redmirror_redis::source::SourceReader;
use redmirror_state::hold::HoldWatch;
use redmirror_state::lease::Lease;
use redmirror_state::signal::GapSignal;
use redmirror_telemetry::http::HttpState;
use redmirror_telemetry::wait::until_up;
use redmirror_telemetry::{Component, Health};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// One of the roles a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follow the source and publish change events.
    Capture,
    /// Consume change events and write the destination.
    Apply,
    /// Compare both sides and repair drift.
    Reconcile,
}

/// The roles this process runs (`run`: all three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    /// `redmirror run`: capture, apply and reconcile.
    pub const ALL: Roles = Roles(0b111);

    /// One role alone (`redmirror capture`, `apply`, `reconcile`).
    pub const fn only(role: Role) -> Roles {
        Roles(Self::bit(role))
    }

    const fn bit(role: Role) -> u8 {
        match role {
            Role::Capture => 1,
            Role::Apply => 2,
            Role::Reconcile => 4,
        }
    }

    /// True when `role` runs here.
    pub const fn has(self, role: Role) -> bool {
        self.0 & Self::bit(role) != 0
    }

    /// True when a role that reads the source runs here (capture, reconcile).
    pub const fn reads_source(self) -> bool {
        self.has(Role::Capture) || self.has(Role::Reconcile)
    }

    /// The `role` of `/v1/status`: the subcommand that runs these roles.
    fn name(self) -> &'static str {
        match self {
            Roles::ALL => "run",
            r if r == Roles::only(Role::Capture) => "capture",
            r if r == Roles::only(Role::Apply) => "apply",
            r if r == Roles::only(Role::Reconcile) => "reconcile",
            _ => "mixed",
        }
    }
}

pub use redmirror_console::startup::Refusal;

/// Runs one role of the process. A role runs until it is asked to stop: one
/// that returns while `shutdown` has not fired (its stream ended, its loop
/// returned) has failed, whatever it returned, so the process exits
/// non-zero instead of reporting a clean stop.
async fn role(
    name: &'static str,
    shutdown: CancellationToken,
    run: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    match run.await {
        Ok(()) if shutdown.is_cancelled() => Ok(()),
        Ok(()) => Err(anyhow::anyhow!(
            "{name} ended without being asked to stop (see the log lines before this one)"
        )),
        Err(e) => Err(e.context(format!("{name} failed"))),
    }
}

/// Connects to a Redis server once it is up, with `component` not ready
/// until then.
async fn connect_when_up(
    health: &Health,
    component: Component,
    endpoint: &redmirror_config::RedisEndpoint,
) -> anyhow::Result<fred::prelude::Client> {
    health.register(component);
    let what = format!("{} ({})", component.for_people(), component.setting());
    let c = until_up(
        &what,
        || async { Ok(redmirror_redis::connect(endpoint, component.name()).await?) },
        redis_retryable,
    )
    .await?;
    health.set(component, true);
    Ok(c)
}

/// A Kafka set-up error worth retrying: the broker is unreachable or
/// timing out (not a bad client setting).
fn kafka_retryable(e: &anyhow::Error) -> bool {
    redmirror_kafka::retryable_in(e.chain())
}

/// A Redis connection error worth retrying: the server is down, refusing,
/// loading or timing out; not bad credentials, a bad URL or TLS set-up.
fn redis_retryable(e: &anyhow::Error) -> bool {
    redmirror_redis::retryable_in(e.chain())
}

/// A started process: its roles run until [`Running::stop`].
pub struct Running {
    pub http_addr: SocketAddr,
    pub shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    timeout: Duration,
    _broker: Option<EmbeddedBroker>,
}

impl Running {
    /// Waits until a role fails (returned as an error) or `until` resolves.
    pub async fn wait(&mut self, until: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        tokio::select! {
            _ = until => Ok(()),
            Some(r) = self.tasks.join_next() => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("a role panicked: {e}")),
            },
        }
    }

    /// Stops every role gracefully, bounded by the shutdown timeout.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let mut first_err = None;
        let drained = tokio::time::timeout(self.timeout + Duration::from_secs(5), async {
            while let Some(r) = self.tasks.join_next().await {
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        first_err.get_or_insert(e);
                    }
                    Err(e) => {
                        first_err.get_or_insert(anyhow::anyhow!("a role panicked: {e}"));
                    }
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("Shutdown timed out; abandoning the remaining work.");
            self.tasks.abort_all();
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Starts Kafka: the embedded broker or the configured one, with the topics.
pub async fn kafka(config: &Config) -> anyhow::Result<(Kafka, Option<EmbeddedBroker>)> {
    let brokers = config
        .kafka_brokers
        .as_ref()
        .context("REDMIRROR_KAFKA_BROKERS is not set")?;
    redmirror_kafka::topics::connect(config, brokers)
        .await
        .context("preparing the Kafka topics")
}

/// Refuses when source and destination are the same server (the same
/// `run_id`), or the same Redis Cluster reached through two of its nodes
/// (a shared node id).
pub async fn refuse_same_server(source: &fred::prelude::Client, dest: &fred::prelude::Client) -> anyhow::Result<()> {
    redmirror_console::startup::distinct_servers(source, dest).await
}

/// Sets the largest record Kafka takes on the change topic (see
/// [`redmirror_kafka::topics::RecordLimit`]); refuses (exit 2) a
/// `REDMIRROR_MAX_FLOW_BYTES` over it ([`redmirror_console::startup`],
/// which `check` runs too).
pub async fn record_limit(config: &mut Config, kafka: &Kafka) -> anyhow::Result<()> {
    let limit = until_up(
        "Kafka (REDMIRROR_KAFKA_BROKERS), for the change topic's max.message.bytes",
        || redmirror_console::startup::record_limit(config, kafka),
        kafka_retryable,
    )
    .await?;
    config.rules.max_record_bytes = limit;
    Ok(())
}

/// Refuses (exit 2) when the source user lacks a permission capture or
/// reconcile needs, with the `ACL SETUSER` line that grants it.
pub async fn refuse_missing_permissions(
    config: &Config,
    endpoint: &redmirror_config::RedisEndpoint,
) -> anyhow::Result<()> {
    until_up(
        "the source (REDMIRROR_SOURCE_URL)",
        || redmirror_console::startup::permissions(config, endpoint),
        redis_retryable,
    )
    .await
}

/// The source epoch shared through the destination (waited for like the
/// destination itself), or one kept in memory when there is no destination.
pub async fn source_epoch(config: &Config, dest: Option<&fred::prelude::Client>) -> anyhow::Result<SourceEpoch> {
    match dest {
        Some(d) => {
            let key = config.keys.source_epoch_key();
            until_up(
                "the destination (REDMIRROR_DEST_URL), for the source epoch",
                || async { Ok(SourceEpoch::load(d.clone(), key.clone()).await?) },
                redis_retryable,
            )
            .await
        }
        None => {
            tracing::warn!(
                "REDMIRROR_DEST_URL is not set: the source epoch is kept in memory only, so after a restart this \
                 process starts again at epoch 0 (set REDMIRROR_DEST_URL so every process shares it)"
            );
            Ok(SourceEpoch::in_memory())
        }
    }
}

/// A source reader ordering its reads in `epoch`; `sequential` for a
/// reader that runs one read at a time.
pub fn source_reader(config: &Config, epoch: &SourceEpoch, sequential: bool) -> anyhow::Result<SourceReader> {
    Ok(SourceReader::new(
        config.source.as_ref().context("REDMIRROR_SOURCE_URL is not set")?,
        config.keys.clone(),
        EpochReader::new(epoch.clone(), sequential),
    )?)
}

/// Starts the roles, the HTTP server and (if configured) the embedded broker.
pub async fn start(mut config: Config, roles: Roles) -> anyhow::Result<Running> {
    let metrics = redmirror_telemetry::metrics::install();
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {} (REDMIRROR_HTTP_ADDR)", config.http_addr))?;
    let http_addr = listener.local_addr()?;
    let health = Health::new();
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let lag: redmirror_apply::lag::SharedLag = Arc::new(Mutex::new(Default::default()));

    // Served from the start: /healthz answers and /readyz fails (naming what
    // is missing) while the servers are waited for; admin calls answer 503.
    let admin = Arc::new(crate::admin::LateAdmin::default());
    let state = HttpState {
        metrics,
        health: health.clone(),
        admin: Some(admin.clone()),
        admin_token: config.admin_token.clone(),
        requests: Default::default(),
    };
    let s = shutdown.clone();
    tasks.spawn(role("the HTTP listener", shutdown.clone(), async move {
        redmirror_telemetry::http::serve(listener, state, s).await?;
        Ok(())
    }));

    // A server down at start-up is waited for (SPEC section 7); only what
    // retrying cannot fix (bad credentials, TLS set-up) ends the process.
    // Every component this process will wait for is registered first, so
    // /readyz cannot answer 200 between one server coming up and the
    // next one being waited for.
    health.register(Component::Kafka);
    if config.source.is_some() && (roles.reads_source()) {
        health.register(Component::Source);
    }
    if config.dest.is_some() {
        health.register(Component::Destination);
    }
    let (kafka, broker) = until_up("Kafka (REDMIRROR_KAFKA_BROKERS)", || kafka(&config), kafka_retryable).await?;
    health.set(Component::Kafka, true);
    if roles.reads_source() {
        record_limit(&mut config, &kafka).await?;
    }
    // Permissions first: a cluster client's own set-up needs some of them
    // (CLUSTER SLOTS), and a refusal must name them, not wait for ever.
    if let (true, Some(endpoint)) = (roles.reads_source(), &config.source) {
        health.register(Component::Source);
        refuse_missing_permissions(&config, endpoint).await?;
    }
    let source = match &config.source {
        Some(s) if roles.reads_source() => Some(connect_when_up(&health, Component::Source, s).await?),
        _ => None,
    };
    // capture uses the destination only for its lease and the gap signal.
    let dest = match &config.dest {
        Some(d) => Some(connect_when_up(&health, Component::Destination, d).await?),
        None => None,
    };
    if let (Some(s), Some(d)) = (&source, &dest) {
        refuse_same_server(s, d).await?;
    }
    // Idle connections that silently died are found and made again before
    // a role needs them (redmirror_redis::liveness).
    // The destination's heartbeat also drives its readiness: an idle
    // process has no write to fail. The source's readiness is capture's
    // (its subscription and notification checks).
    let mut p = Wiring {
        config: &config,
        health: &health,
        shutdown: &shutdown,
        tasks: &mut tasks,
    };
    if let Some(client) = &source {
        p.heartbeat("source heartbeat", client.clone());
    }
    if let Some(client) = &dest {
        let (c, h) = (client.clone(), health.clone());
        p.spawn("destination heartbeat", async move {
            redmirror_redis::watch(c, h, Component::Destination, "The destination (REDMIRROR_DEST_URL)").await;
            Ok(())
        });
    }
    // What capture and reconcile share: the source, the producer, the epoch.
    let reads = match (&source, roles.reads_source()) {
        (Some(client), true) => {
            let publisher = Publisher::new(&kafka, &config.topic)?;
            let epoch = source_epoch(&config, dest.as_ref()).await?;
            let e = epoch.clone();
            let s = shutdown.clone();
            p.spawn("source epoch sync", async move {
                e.keep_synced(s).await;
                Ok(())
            });
            Some(Reads {
                source: client.clone(),
                publisher,
                epoch,
            })
        }
        (None, true) => anyhow::bail!("REDMIRROR_SOURCE_URL is not set"),
        (_, false) => None,
    };
    // The hold (a rewind) is known before any role starts; it sets redmirror_held.
    let hold = match &dest {
        Some(d) => match HoldWatch::start(d.clone(), config.keys.hold_key(), shutdown.clone()).await {
            Some(h) => Some(h),
            None => anyhow::bail!("stopped while reading the hold from the destination"),
        },
        None => None,
    };
    let coordination = dest.clone().zip(hold.clone());
    let mut leases = Vec::new();
    let last_report = Arc::new(Mutex::new(None));
    let mut reconcile_tx = None;
    if roles.has(Role::Capture) {
        let reads = reads.as_ref().context("capture needs the source")?;
        leases.extend(p.start_capture(reads, dest.as_ref()).await?);
    }
    let throttle = redmirror_apply::engine::Throttle::new(config.apply_max_rate);
    if roles.has(Role::Apply) {
        let (_, held) = coordination.clone().context("REDMIRROR_DEST_URL is not set")?;
        p.start_apply(&kafka, held, lag.clone(), throttle.clone()).await?;
    }
    if roles.has(Role::Reconcile) {
        let reads = reads.as_ref().context("reconcile needs the source")?;
        let (dst, held) = coordination.clone().context("REDMIRROR_DEST_URL is not set")?;
        let (lease, tx) = p.start_reconcile(&kafka, reads, dst, held, last_report.clone())?;
        leases.push(lease);
        reconcile_tx = Some(tx);
    }
    let (epoch, publisher) = match reads {
        Some(r) => (Some(r.epoch), Some(r.publisher)),
        None => (None, None),
    };

    let process_admin = crate::admin::ProcessAdmin {
        role: roles.name(),
        health: health.clone(),
        lag,
        resync_reader: match &epoch {
            Some(e) => Some(Arc::new(source_reader(&config, e, false)?)),
            None => None,
        },
        epoch,
        publisher,
        dest,
        leases,
        reconcile: reconcile_tx,
        last_report,
        hold,
        kafka: kafka.clone(),
        write_limit: roles.has(Role::Apply).then_some(throttle),
        config: config.clone(),
    };
    let _ = admin.0.set(Arc::new(process_admin));
    tracing::info!(role = roles.name(), http = %http_addr, embedded_broker = kafka.embedded, "redmirror started.");
    Ok(Running {
        http_addr,
        shutdown,
        tasks,
        timeout: config.shutdown_timeout,
        _broker: broker,
    })
}

/// What capture and reconcile share: the source, the producer and the
/// source epoch their reads are ordered in.
struct Reads {
    source: fred::prelude::Client,
    publisher: Publisher,
    epoch: SourceEpoch,
}

/// What every role's start needs from the process: its settings, its
/// readiness, its stop signal, and the set of tasks a stop waits for.
struct Wiring<'a> {
    config: &'a Config,
    health: &'a Health,
    shutdown: &'a CancellationToken,
    tasks: &'a mut JoinSet<anyhow::Result<()>>,
}

impl Wiring<'_> {
    /// Runs `work` as the task `name`, until shutdown; its end before that
    /// is a failure of the process ([`role`]).
    fn spawn(
        &mut self,
        name: &'static str,
        work: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let s = self.shutdown.clone();
        self.tasks.spawn(role(name, self.shutdown.clone(), async move {
            tokio::select! {
                _ = s.cancelled() => Ok(()),
                r = work => r,
            }
        }));
    }

    /// Pings `client`'s idle connection until shutdown (see
    /// [`redmirror_redis::heartbeat`]).
    fn heartbeat(&mut self, name: &'static str, client: fred::prelude::Client) {
        self.spawn(name, async move {
            redmirror_redis::heartbeat(client).await;
            Ok(())
        });
    }

    /// Starts capture (under its lease when there is a destination, which
    /// is returned). Refuses when the source's notifications are missing
    /// or may not be read.
    async fn start_capture(
        &mut self,
        reads: &Reads,
        dest: Option<&fred::prelude::Client>,
    ) -> anyhow::Result<Option<Lease>> {
        let config = self.config;
        let opts = CaptureOptions {
            source: config.source.clone().context("REDMIRROR_SOURCE_URL is not set")?,
            keys: config.keys.clone(),
            rules: config.rules.clone(),
            batch: config.capture_batch,
            pending_max: config.capture_pending_max,
            configure_notifications: config.configure_notifications,
            shutdown_timeout: config.shutdown_timeout,
            epoch: reads.epoch.clone(),
        };
        // Refuse at start when the classes are missing (or the setting may
        // not be read); a source that went away meanwhile is waited for.
        let checked =
            redmirror_capture::notify::ensure_at_start(&reads.source, &opts.source, opts.configure_notifications)
                .await?;
        checked.map_err(|e| Refusal(e.to_string()))?;
        let lease = dest.map(|d| Lease::new(d.clone(), LeaseName::Capture, &config.keys, config.lease_ttl));
        if lease.is_none() {
            tracing::warn!(
                "REDMIRROR_DEST_URL is not set for capture: no capture lease (run one capture only) and gaps \
                 cannot reach a reconciler in another process"
            );
        }
        let leased = redmirror_capture::role::Leased {
            opts,
            publisher: reads.publisher.clone(),
            health: self.health.clone(),
            lease: lease.clone(),
            gaps: dest.map(|d| GapSignal::new(d.clone(), config.keys.gap_key())),
            progress: dest.map(|d| redmirror_capture::ProgressReport {
                client: d.clone(),
                key: config.keys.capture_progress_key(),
            }),
        };
        let s = self.shutdown.clone();
        self.tasks.spawn(role("capture", self.shutdown.clone(), async move {
            Ok(leased.run(s).await?)
        }));
        Ok(lease)
    }

    /// Starts apply and its lag tracking.
    async fn start_apply(
        &mut self,
        kafka: &Kafka,
        hold: HoldWatch,
        lag: redmirror_apply::lag::SharedLag,
        throttle: redmirror_apply::engine::Throttle,
    ) -> anyhow::Result<()> {
        let config = self.config;
        // Apply writes on a connection of its own: its pipelines (a
        // backlog's batches, over a slow link) never hold back the lease
        // renewals, progress reports and gap signals queued on the shared
        // one, which would otherwise stop capture and the reconciler once a
        // renewal waited out the lease's TTL behind them.
        let endpoint = config.dest.as_ref().context("REDMIRROR_DEST_URL is not set")?;
        let writes = connect_when_up(self.health, Component::Destination, endpoint).await?;
        self.heartbeat("apply connection heartbeat", writes.clone());
        let engine = ApplyEngine::new(writes, config.keys.clone(), config.rules.clone()).with_throttle(throttle);
        let opts = ApplyOptions {
            topic: config.topic.clone(),
            dlq_topic: config.dlq_topic(),
            group_id: config.group_id.clone(),
            batch: config.apply_batch,
            hold_acks_key: config.keys.hold_acks_key(),
            members_key: config.keys.apply_members_key(),
        };
        let (k, h, s, l) = (kafka.clone(), self.health.clone(), self.shutdown.clone(), lag.clone());
        self.tasks.spawn(role("apply", self.shutdown.clone(), async move {
            Ok(redmirror_apply::run(engine, &k, opts, hold, l, h, s).await?)
        }));
        let (k, g, t, h, s) = (
            kafka.clone(),
            config.group_id.clone(),
            config.topic.clone(),
            self.health.clone(),
            self.shutdown.clone(),
        );
        self.tasks
            .spawn(role("apply lag tracking", self.shutdown.clone(), async move {
                redmirror_apply::lag::track(k, g, t, Duration::from_secs(5), lag, h, s).await;
                Ok(())
            }));
        Ok(())
    }

    /// Starts the reconciler under its lease; returns the lease and where
    /// to ask it for a pass.
    fn start_reconcile(
        &mut self,
        kafka: &Kafka,
        reads: &Reads,
        dest: fred::prelude::Client,
        hold: HoldWatch,
        last_report: Arc<Mutex<Option<redmirror_reconcile::Report>>>,
    ) -> anyhow::Result<(Lease, mpsc::Sender<redmirror_reconcile::Trigger>)> {
        let config = self.config;
        let reconciler = Reconciler::new(
            reads.source.clone(),
            dest.clone(),
            bulk_sides(config)?,
            source_reader(config, &reads.epoch, false)?,
            reads.publisher.clone(),
            kafka.clone(),
            config.group_id.clone(),
            config.keys.clone(),
            config.rules.clone(),
        );
        let lease = Lease::new(dest.clone(), LeaseName::Reconcile, &config.keys, config.lease_ttl);
        let service = Service {
            reconciler,
            lease: lease.clone(),
            opts: pass_options(config, false),
            interval: config.reconcile_interval,
            gaps: GapSignal::new(dest.clone(), config.keys.gap_key()),
            requests: GapSignal::new(dest, config.keys.reconcile_request_key()),
            report_key: config.keys.report_key(),
            last: last_report,
            hold,
        };
        let (tx, rx) = mpsc::channel(16);
        let s = self.shutdown.clone();
        self.tasks.spawn(role("reconcile", self.shutdown.clone(), async move {
            service.run(rx, s).await;
            Ok(())
        }));
        Ok((lease, tx))
    }
}

/// Reconcile pass settings from the configuration.
pub fn pass_options(config: &Config, dry_run: bool) -> PassOptions {
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

/// Waits for SIGTERM or SIGINT.
pub async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Runs the roles until SIGTERM/SIGINT, then stops gracefully.
pub async fn run(config: Config, roles: Roles) -> anyhow::Result<ExitCode> {
    // SIGTERM/SIGINT while the servers are still waited for is a clean stop.
    let started = tokio::select! {
        r = start(config, roles) => r,
        _ = signal() => {
            tracing::info!("Stopped before every server was up.");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut running = match started {
        Ok(r) => r,
        Err(e) if e.downcast_ref::<Refusal>().is_some() => {
            eprintln!("redmirror: {}", redmirror_telemetry::errors::chain(&e));
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e),
    };
    let result = running.wait(signal()).await;
    tracing::info!("Stopping.");
    let stopped = running.stop().await;
    result?;
    stopped?;
    tracing::info!("Stopped cleanly.");
    Ok(ExitCode::SUCCESS)
}

/// Bulk-read connections to both sides for the reconciler (connected on
/// first use).
pub(crate) fn bulk_sides(config: &Config) -> anyhow::Result<Sides<Routed>> {
    Ok(Sides {
        source: Routed::new(config.source.as_ref().context("REDMIRROR_SOURCE_URL is not set")?)?,
        dest: Routed::new(config.dest.as_ref().context("REDMIRROR_DEST_URL is not set")?)?,
    })
}

#[cfg(test)]
mod role_exit {
    use super::role;
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn a_role_that_returns_unasked_is_a_failure() {
        let token = CancellationToken::new();
        let e = role("apply", token.clone(), async { Ok(()) }).await.unwrap_err();
        assert!(
            format!("{e:#}").contains("apply ended without being asked to stop"),
            "{e:#}"
        );
        token.cancel();
        role("apply", token.clone(), async { Ok(()) })
            .await
            .expect("a stop that was asked for");
        let e = role("capture", token, async { Err(anyhow::anyhow!("boom")) })
            .await
            .unwrap_err();
        assert_eq!(format!("{e:#}"), "capture failed: boom");
    }
}

#[cfg(test)]
mod roles {
    use super::{Role, Roles};

    #[test]
    fn roles_are_named_by_the_subcommand_that_runs_them() {
        assert_eq!(Roles::ALL.name(), "run");
        assert_eq!(Roles::only(Role::Capture).name(), "capture");
        assert_eq!(Roles::only(Role::Apply).name(), "apply");
        assert_eq!(Roles::only(Role::Reconcile).name(), "reconcile");
        assert!(Roles::ALL.has(Role::Apply));
        assert!(!Roles::only(Role::Capture).has(Role::Apply));
        assert!(Roles::only(Role::Reconcile).reads_source());
        assert!(!Roles::only(Role::Apply).reads_source());
    }
}
