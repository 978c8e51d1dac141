//! Starting and stopping the roles in one process.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use redmirror_apply::{ApplyEngine, ApplyOptions};
use redmirror_capture::CaptureOptions;
use redmirror_config::{BothSides, Brokers, Config, DestSide, RedisEndpoint, SourceSide};
use redmirror_core::LeaseName;
use redmirror_kafka::{EmbeddedBroker, Kafka, Publisher};
use redmirror_reconcile::{PassOptions, Reconciler, Service, Sides};
use redmirror_redis::epoch::SourceEpoch;
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

/// The roles a process runs, each with the servers it needs (validated:
/// no endpoint here is optional unless the roles can do without it).
#[derive(Debug, Clone)]
pub enum Roles {
    /// `redmirror run`: capture, apply and reconcile.
    All(BothSides),
    /// `redmirror capture`: the destination, when set, keeps its lease.
    Capture(SourceSide),
    /// `redmirror apply`.
    Apply(DestSide),
    /// `redmirror reconcile` (the service).
    Reconcile(BothSides),
}

impl Roles {
    /// The `role` of `/v1/status`: the subcommand that runs these roles.
    fn name(&self) -> &'static str {
        match self {
            Roles::All(_) => "run",
            Roles::Capture(_) => "capture",
            Roles::Apply(_) => "apply",
            Roles::Reconcile(_) => "reconcile",
        }
    }

    fn brokers(&self) -> &Brokers {
        match self {
            Roles::All(b) | Roles::Reconcile(b) => &b.brokers,
            Roles::Capture(s) => &s.brokers,
            Roles::Apply(d) => &d.brokers,
        }
    }

    /// The source, when a role that reads it (capture, reconcile) runs.
    fn source(&self) -> Option<&RedisEndpoint> {
        match self {
            Roles::All(b) | Roles::Reconcile(b) => Some(&b.source),
            Roles::Capture(s) => Some(&s.source),
            Roles::Apply(_) => None,
        }
    }

    /// The destination, when this process uses one.
    fn dest(&self) -> Option<&RedisEndpoint> {
        match self {
            Roles::All(b) | Roles::Reconcile(b) => Some(&b.dest),
            Roles::Capture(s) => s.dest.as_ref(),
            Roles::Apply(d) => Some(&d.dest),
        }
    }
}

pub use redmirror_startup::Refusal;
use redmirror_startup::{
    connect_when_up, kafka, kafka_retryable, record_limit, refuse_missing_permissions, source_epoch, source_reader,
};

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

/// Starts the roles, the HTTP server and (if configured) the embedded broker.
pub async fn start(roles: Roles, mut config: Config) -> anyhow::Result<Running> {
    let metrics = redmirror_telemetry::metrics::install();
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {} (REDMIRROR_HTTP_ADDR)", config.http_addr))?;
    let http_addr = listener.local_addr()?;
    let health = Health::new();
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();

    // Served from the start: /healthz answers and /readyz fails (naming what
    // is missing) while the servers are waited for; admin calls answer 503.
    let admin = Arc::new(redmirror_admin::LateAdmin::default());
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
    if roles.source().is_some() {
        health.register(Component::Source);
    }
    if roles.dest().is_some() {
        health.register(Component::Destination);
    }
    let (kafka, broker) = until_up(
        "Kafka (REDMIRROR_KAFKA_BROKERS)",
        &shutdown,
        || kafka(&config, roles.brokers()),
        kafka_retryable,
    )
    .await?;
    health.set(Component::Kafka, true);
    // Permissions first: a cluster client's own set-up needs some of them
    // (CLUSTER SLOTS), and a refusal must name them, not wait for ever.
    if let Some(endpoint) = roles.source() {
        record_limit(&mut config, &kafka, &shutdown).await?;
        refuse_missing_permissions(&config, endpoint, &shutdown).await?;
    }
    let mut w = Wiring {
        config: &config,
        health: &health,
        shutdown: &shutdown,
        tasks: &mut tasks,
        kafka: &kafka,
        lag: Default::default(),
        last_report: Default::default(),
    };
    let started = match &roles {
        Roles::All(both) | Roles::Reconcile(both) => {
            let (reads, dest) = w.both_sides(both).await?;
            let hold = w.hold(&dest).await?;
            let mut started = Started::new(Some(&reads), Some(&dest), Some(&hold));
            if let Roles::All(_) = roles {
                started.leases.extend(w.start_capture(&reads, Some(&dest)).await?);
                started.write_limit = Some(w.start_apply(&both.dest, hold.clone()).await?);
            }
            let (lease, tx) = w.start_reconcile(&reads, both, dest, hold)?;
            started.leases.push(lease);
            started.reconcile = Some(tx);
            started
        }
        Roles::Capture(side) => {
            let source = w.connect(Component::Source, &side.source).await?;
            let dest = match &side.dest {
                Some(d) => {
                    let dest = w.connect(Component::Destination, d).await?;
                    redmirror_startup::distinct_servers(&source, &dest).await?;
                    Some(dest)
                }
                None => None,
            };
            let reads = w.reads(&side.source, source, dest.as_ref()).await?;
            let hold = match &dest {
                Some(d) => Some(w.hold(d).await?),
                None => None,
            };
            let mut started = Started::new(Some(&reads), dest.as_ref(), hold.as_ref());
            started.leases.extend(w.start_capture(&reads, dest.as_ref()).await?);
            started
        }
        Roles::Apply(side) => {
            let dest = w.connect(Component::Destination, &side.dest).await?;
            let hold = w.hold(&dest).await?;
            let mut started = Started::new(None, Some(&dest), Some(&hold));
            started.write_limit = Some(w.start_apply(&side.dest, hold).await?);
            started
        }
    };

    let process_admin = redmirror_admin::ProcessAdmin {
        role: roles.name(),
        health: health.clone(),
        lag: w.lag.clone(),
        reads: started.reads,
        dest: started.dest,
        leases: started.leases,
        reconcile: started.reconcile,
        last_report: w.last_report.clone(),
        hold: started.hold,
        kafka: kafka.clone(),
        write_limit: started.write_limit,
        config: config.clone(),
        shutdown: shutdown.clone(),
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

/// What the admin API reaches of the roles that started.
struct Started {
    reads: Option<redmirror_admin::SourceReads>,
    dest: Option<fred::prelude::Client>,
    hold: Option<HoldWatch>,
    leases: Vec<Lease>,
    reconcile: Option<mpsc::Sender<redmirror_reconcile::Trigger>>,
    write_limit: Option<redmirror_apply::engine::Throttle>,
}

impl Started {
    fn new(reads: Option<&Reads>, dest: Option<&fred::prelude::Client>, hold: Option<&HoldWatch>) -> Started {
        Started {
            reads: reads.map(|r| redmirror_admin::SourceReads {
                source: r.endpoint.clone(),
                publisher: r.publisher.clone(),
                epoch: r.epoch.clone(),
                reader: r.resync_reader.clone(),
            }),
            dest: dest.cloned(),
            hold: hold.cloned(),
            leases: Vec::new(),
            reconcile: None,
            write_limit: None,
        }
    }
}

/// What capture and reconcile share: the source, the producer and the
/// source epoch their reads are ordered in.
struct Reads {
    endpoint: RedisEndpoint,
    source: fred::prelude::Client,
    publisher: Publisher,
    epoch: SourceEpoch,
    /// One read at a time, for `POST /v1/resync` and the flow API.
    resync_reader: Arc<SourceReader>,
}

/// What every role's start needs from the process: its settings, its
/// readiness, its stop signal, the set of tasks a stop waits for, Kafka,
/// and what the roles report to the admin API.
struct Wiring<'a> {
    config: &'a Config,
    health: &'a Health,
    shutdown: &'a CancellationToken,
    tasks: &'a mut JoinSet<anyhow::Result<()>>,
    kafka: &'a Kafka,
    lag: redmirror_apply::lag::SharedLag,
    last_report: Arc<Mutex<Option<redmirror_reconcile::Report>>>,
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
    /// [`redmirror_redis::heartbeat`]), so a connection that silently died
    /// is found and made again before a role needs it.
    fn heartbeat(&mut self, name: &'static str, client: fred::prelude::Client) {
        self.spawn(name, async move {
            redmirror_redis::heartbeat(client).await;
            Ok(())
        });
    }

    /// Connects to the source or the destination once it is up, and keeps
    /// the connection alive. The destination's heartbeat also drives its
    /// readiness (an idle process has no write to fail); the source's
    /// readiness is capture's (its subscription and notification checks).
    async fn connect(
        &mut self,
        component: Component,
        endpoint: &RedisEndpoint,
    ) -> anyhow::Result<fred::prelude::Client> {
        let client = connect_when_up(self.health, component, endpoint, self.shutdown).await?;
        if component == Component::Destination {
            let (c, h) = (client.clone(), self.health.clone());
            self.spawn("destination heartbeat", async move {
                redmirror_redis::watch(c, h, Component::Destination, "The destination (REDMIRROR_DEST_URL)").await;
                Ok(())
            });
        } else {
            self.heartbeat("source heartbeat", client.clone());
        }
        Ok(client)
    }

    /// Both sides, refused when they are the same server; the source's
    /// reads ordered in the epoch shared through the destination.
    async fn both_sides(&mut self, both: &BothSides) -> anyhow::Result<(Reads, fred::prelude::Client)> {
        let source = self.connect(Component::Source, &both.source).await?;
        let dest = self.connect(Component::Destination, &both.dest).await?;
        redmirror_startup::distinct_servers(&source, &dest).await?;
        let reads = self.reads(&both.source, source, Some(&dest)).await?;
        Ok((reads, dest))
    }

    /// The producer and the source epoch (kept in step with the other
    /// processes' through the destination, when there is one).
    async fn reads(
        &mut self,
        endpoint: &RedisEndpoint,
        source: fred::prelude::Client,
        dest: Option<&fred::prelude::Client>,
    ) -> anyhow::Result<Reads> {
        let publisher = Publisher::new(self.kafka, &self.config.topic)?;
        let epoch = source_epoch(self.config, dest, self.shutdown).await?;
        let (e, s) = (epoch.clone(), self.shutdown.clone());
        self.spawn("source epoch sync", async move {
            e.keep_synced(s).await;
            Ok(())
        });
        Ok(Reads {
            endpoint: endpoint.clone(),
            resync_reader: Arc::new(source_reader(endpoint, self.config, &epoch, false)?),
            source,
            publisher,
            epoch,
        })
    }

    /// The hold (a rewind), read before any role starts; it sets
    /// `redmirror_held`.
    async fn hold(&mut self, dest: &fred::prelude::Client) -> anyhow::Result<HoldWatch> {
        HoldWatch::start(dest.clone(), self.config.keys.hold_key(), self.shutdown.clone())
            .await
            .context("stopped while reading the hold from the destination")
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
            source: reads.endpoint.clone(),
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
        let checked = redmirror_capture::notify::ensure_at_start(
            &reads.source,
            &opts.source,
            opts.configure_notifications,
            self.shutdown,
        )
        .await?;
        checked.map_err(|e| Refusal(redmirror_telemetry::errors::Chain(&e).to_string()))?;
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

    /// Starts apply and its lag tracking; returns apply's write limit.
    async fn start_apply(
        &mut self,
        endpoint: &RedisEndpoint,
        hold: HoldWatch,
    ) -> anyhow::Result<redmirror_apply::engine::Throttle> {
        let config = self.config;
        // Apply writes on a connection of its own: its pipelines (a
        // backlog's batches, over a slow link) never hold back the lease
        // renewals, progress reports and gap signals queued on the shared
        // one, which would otherwise stop capture and the reconciler once a
        // renewal waited out the lease's TTL behind them.
        let writes = connect_when_up(self.health, Component::Destination, endpoint, self.shutdown).await?;
        self.heartbeat("apply connection heartbeat", writes.clone());
        let throttle = redmirror_apply::engine::Throttle::new(config.apply_max_rate);
        let engine =
            ApplyEngine::new(writes, config.keys.clone(), config.rules.clone()).with_throttle(throttle.clone());
        let opts = ApplyOptions {
            topic: config.topic.clone(),
            dlq_topic: config.dlq_topic(),
            group_id: config.group_id.clone(),
            batch: config.apply_batch,
            hold_acks_key: config.keys.hold_acks_key(),
            members_key: config.keys.apply_members_key(),
        };
        let (k, h, s, l) = (
            self.kafka.clone(),
            self.health.clone(),
            self.shutdown.clone(),
            self.lag.clone(),
        );
        self.tasks.spawn(role("apply", self.shutdown.clone(), async move {
            Ok(redmirror_apply::run(engine, &k, opts, hold, l, h, s).await?)
        }));
        let (k, g, t, h, s, l) = (
            self.kafka.clone(),
            config.group_id.clone(),
            config.topic.clone(),
            self.health.clone(),
            self.shutdown.clone(),
            self.lag.clone(),
        );
        self.tasks
            .spawn(role("apply lag tracking", self.shutdown.clone(), async move {
                redmirror_apply::lag::track(k, g, t, Duration::from_secs(5), l, h, s).await;
                Ok(())
            }));
        Ok(throttle)
    }

    /// Starts the reconciler under its lease; returns the lease and where
    /// to ask it for a pass.
    fn start_reconcile(
        &mut self,
        reads: &Reads,
        both: &BothSides,
        dest: fred::prelude::Client,
        hold: HoldWatch,
    ) -> anyhow::Result<(Lease, mpsc::Sender<redmirror_reconcile::Trigger>)> {
        let config = self.config;
        let reconciler = Reconciler::new(
            reads.source.clone(),
            dest.clone(),
            Sides::routed(both)?,
            source_reader(&reads.endpoint, config, &reads.epoch, false)?,
            reads.publisher.clone(),
            self.kafka.clone(),
            config.group_id.clone(),
            config.keys.clone(),
            config.rules.clone(),
        );
        let lease = Lease::new(dest.clone(), LeaseName::Reconcile, &config.keys, config.lease_ttl);
        let service = Service {
            reconciler,
            lease: lease.clone(),
            opts: PassOptions::of(config, false),
            interval: config.reconcile_interval,
            gaps: GapSignal::new(dest.clone(), config.keys.gap_key()),
            requests: GapSignal::new(dest, config.keys.reconcile_request_key()),
            report_key: config.keys.report_key(),
            last: self.last_report.clone(),
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

/// Runs the roles until SIGTERM/SIGINT, then stops gracefully.
pub async fn run(roles: Roles, config: Config) -> anyhow::Result<ExitCode> {
    // SIGTERM/SIGINT while the servers are still waited for is a clean stop.
    let started = tokio::select! {
        r = start(roles, config) => r,
        _ = redmirror_telemetry::wait::signal() => {
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
    let result = running.wait(redmirror_telemetry::wait::signal()).await;
    tracing::info!("Stopping.");
    let stopped = running.stop().await;
    result?;
    stopped?;
    tracing::info!("Stopped cleanly.");
    Ok(ExitCode::SUCCESS)
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
