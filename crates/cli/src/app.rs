//! Starting and stopping the roles in one process.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use redmirror_apply::{ApplyEngine, ApplyOptions};
use redmirror_capture::CaptureOptions;
use redmirror_config::Config;
use redmirror_kafka::{EmbeddedBroker, Kafka, Publisher};
use redmirror_reconcile::{GapSignal, Lease, PassOptions, Reconciler, Service, Sides, Trigger};
use redmirror_redis::bulk::Bulk;
use redmirror_telemetry::http::{Admin, AdminError, AdminResult, HttpState};
use redmirror_telemetry::Health;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Which roles this process runs.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub capture: bool,
    pub apply: bool,
    pub reconcile: bool,
}

impl Roles {
    pub fn all() -> Self {
        Self::of(true, true, true)
    }
    pub fn capture() -> Self {
        Self::of(true, false, false)
    }
    pub fn apply() -> Self {
        Self::of(false, true, false)
    }
    pub fn reconcile() -> Self {
        Self::of(false, false, true)
    }
    fn of(capture: bool, apply: bool, reconcile: bool) -> Self {
        Roles {
            capture,
            apply,
            reconcile,
        }
    }
    fn name(&self) -> &'static str {
        match (self.capture, self.apply, self.reconcile) {
            (true, true, _) => "run",
            (true, false, false) => "capture",
            (false, true, false) => "apply",
            (false, false, true) => "reconcile",
            _ => "mixed",
        }
    }
}

/// A bad-configuration failure found at start-up (exit 2).
#[derive(Debug)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

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

/// Health components this process reports besides the roles' own.
const HEALTH_KAFKA: &str = "kafka";
const HEALTH_SOURCE: &str = "source";
const HEALTH_DEST: &str = "destination";

/// The admin actions once the roles have started; until then every call
/// answers 503 ("starting").
#[derive(Default)]
struct LateAdmin(std::sync::OnceLock<Arc<dyn Admin>>);

impl LateAdmin {
    fn get(&self) -> Result<&Arc<dyn Admin>, AdminResult> {
        self.0.get().ok_or_else(|| -> AdminResult {
            Box::pin(async {
                Err(AdminError::unavailable(
                    "starting: waiting for Kafka, the source or the destination (see /readyz)",
                ))
            })
        })
    }
}

impl Admin for LateAdmin {
    fn resync(&self, flow_id: Bytes) -> AdminResult {
        self.get().map_or_else(|e| e, |a| a.resync(flow_id))
    }
    fn reconcile(&self) -> AdminResult {
        self.get().map_or_else(|e| e, |a| a.reconcile())
    }
    fn status(&self) -> AdminResult {
        self.get().map_or_else(|e| e, |a| a.status())
    }
}

/// Calls `attempt` until it succeeds or fails with an error `retryable`
/// says no to, backing off from 100 ms to 5 s. Logs at INFO what it waits
/// for and why (again when the reason changes, and every minute).
async fn until_up<T, F, Fut>(what: &str, mut attempt: F, retryable: fn(&anyhow::Error) -> bool) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut delay = Duration::from_millis(100);
    let mut last: Option<(String, std::time::Instant)> = None;
    loop {
        match attempt().await {
            Ok(v) => {
                if last.is_some() {
                    tracing::info!("{what} is up.");
                }
                return Ok(v);
            }
            Err(e) if retryable(&e) => {
                let reason = format!("{e:#}");
                let say = match &last {
                    Some((r, at)) => *r != reason || at.elapsed() >= Duration::from_secs(60),
                    None => true,
                };
                if say {
                    tracing::info!(reason = %reason, "Waiting for {what}; retrying with backoff (/readyz fails meanwhile).");
                    last = Some((reason, std::time::Instant::now()));
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Connects to a Redis server once it is up, with `component` not ready
/// until then.
async fn connect_when_up(
    health: &Health,
    component: &'static str,
    what: &str,
    endpoint: &redmirror_config::RedisEndpoint,
) -> anyhow::Result<fred::prelude::Client> {
    health.register(component);
    let c = until_up(
        what,
        || async { Ok(redmirror_redis::connect(endpoint, component).await?) },
        redis_retryable,
    )
    .await?;
    health.set(component, true);
    Ok(c)
}

/// A Kafka set-up error worth retrying: the broker is unreachable or
/// timing out (not a bad client setting).
fn kafka_retryable(e: &anyhow::Error) -> bool {
    e.chain()
        .find_map(|c| c.downcast_ref::<redmirror_kafka::Error>())
        .is_some_and(redmirror_kafka::Error::is_retryable)
}

/// A Redis connection error worth retrying: the server is down, refusing,
/// loading or timing out; not bad credentials, a bad URL or TLS set-up.
fn redis_retryable(e: &anyhow::Error) -> bool {
    use fred::error::ErrorKind;
    match e.chain().find_map(|c| c.downcast_ref::<redmirror_redis::RedisError>()) {
        Some(r) => {
            !redmirror_redis::is_permanent(&r.source)
                && !matches!(
                    r.source.kind(),
                    ErrorKind::Auth | ErrorKind::Config | ErrorKind::Tls | ErrorKind::Url
                )
        }
        None => false,
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

/// Starts Kafka: the embedded broker or the configured one, with the topics.
pub async fn kafka(config: &Config) -> anyhow::Result<(Kafka, Option<EmbeddedBroker>)> {
    let brokers = config
        .kafka_brokers
        .clone()
        .context("REDMIRROR_KAFKA_BROKERS is not set")?;
    if config.embedded_broker() {
        let broker =
            EmbeddedBroker::start(&[(config.topic.clone(), config.topic_partitions), (config.dlq_topic(), 1)])?;
        let mut kafka = Kafka::new(broker.bootstrap(), config.kafka_properties.clone());
        kafka.embedded = true;
        return Ok((kafka, Some(broker)));
    }
    let kafka = Kafka::new(brokers, config.kafka_properties.clone());
    redmirror_kafka::topics::ensure(
        &kafka,
        &config.topic,
        &config.dlq_topic(),
        config.topic_partitions,
        config.topic_replication_factor,
    )
    .await
    .context("preparing the Kafka topics")?;
    Ok((kafka, None))
}

/// Refuses when source and destination are the same server (same run_id).
pub async fn refuse_same_server(source: &fred::prelude::Client, dest: &fred::prelude::Client) -> anyhow::Result<()> {
    let (a, b) = (
        redmirror_redis::run_id(source).await?,
        redmirror_redis::run_id(dest).await?,
    );
    if !a.is_empty() && a == b {
        return Err(Refusal(
            "the source and the destination are the same Redis server (same run_id): refusing to start; \
             check REDMIRROR_SOURCE_URL and REDMIRROR_DEST_URL"
                .into(),
        )
        .into());
    }
    Ok(())
}

struct ProcessAdmin {
    role: &'static str,
    health: Health,
    lag: redmirror_apply::lag::SharedLag,
    publisher: Option<Publisher>,
    source: Option<fred::prelude::Client>,
    dest: Option<fred::prelude::Client>,
    leases: Vec<Lease>,
    reconcile: Option<mpsc::Sender<Trigger>>,
    last_report: Arc<Mutex<Option<redmirror_reconcile::Report>>>,
    config: Config,
}

impl Admin for ProcessAdmin {
    fn resync(&self, flow_id: Bytes) -> AdminResult {
        let (Some(p), Some(s)) = (self.publisher.clone(), self.source.clone()) else {
            return Box::pin(async { Err(AdminError::unavailable("this process does not run capture")) });
        };
        let config = self.config.clone();
        Box::pin(async move {
            crate::app::resync(&config, &s, &p, std::slice::from_ref(&flow_id))
                .await
                .map_err(|e| AdminError::failed(format!("{e:#}")))?;
            Ok(json!({ "resynced": redmirror_core::text::json_bytes(&flow_id) }))
        })
    }

    fn reconcile(&self) -> AdminResult {
        let Some(tx) = self.reconcile.clone() else {
            return Box::pin(async { Err(AdminError::unavailable("no reconciler runs in this process")) });
        };
        Box::pin(async move {
            let (reply, rx) = tokio::sync::oneshot::channel();
            tx.send(Trigger::Now(reply))
                .await
                .map_err(|_| AdminError::unavailable("the reconciler is stopping"))?;
            match rx.await {
                Ok(Ok(report)) => serde_json::to_value(&report).map_err(|e| AdminError::failed(e.to_string())),
                Ok(Err(e)) => Err(AdminError {
                    status: 409,
                    message: e,
                }),
                Err(_) => Err(AdminError::unavailable("the reconciler is stopping")),
            }
        })
    }

    fn status(&self) -> AdminResult {
        let lag: serde_json::Map<String, serde_json::Value> = self
            .lag
            .lock()
            .expect("lag lock")
            .iter()
            .map(|(p, l)| (p.to_string(), json!(l)))
            .collect();
        let mut body = json!({
            "role": self.role,
            "version": env!("CARGO_PKG_VERSION"),
            "ready": self.health.ready(),
            "components": self.health.components(),
            "lag": lag,
        });
        let local = self.last_report.lock().expect("report lock").clone();
        let leases = self.leases.clone();
        let dest = self.dest.clone();
        let report_key = self.config.keys.report_key();
        Box::pin(async move {
            let mut lease_info = serde_json::Map::new();
            for l in &leases {
                let holder = l.current_holder().await;
                lease_info.insert(
                    l.name().to_string(),
                    json!({ "holder": holder, "held_by_me": holder.as_deref() == Some(l.holder()), "me": l.holder() }),
                );
            }
            body["lease"] = serde_json::Value::Object(lease_info);
            body["last_reconcile"] = match (local, dest) {
                (Some(r), _) => {
                    let mut v = serde_json::to_value(&r).unwrap_or_default();
                    if let Some(flows) = v.get_mut("flows").and_then(|f| f.as_array_mut()) {
                        flows.truncate(100);
                    }
                    v
                }
                (None, Some(d)) => redmirror_reconcile::service::stored_report(&d, &report_key)
                    .await
                    .unwrap_or(serde_json::Value::Null),
                (None, None) => serde_json::Value::Null,
            };
            Ok(body)
        })
    }
}

/// Publishes a fresh snapshot event for each flow (origin `resync`).
pub async fn resync(
    config: &Config,
    source: &fred::prelude::Client,
    publisher: &Publisher,
    ids: &[Bytes],
) -> anyhow::Result<usize> {
    use redmirror_core::rules::Decision;
    let reader = redmirror_redis::source::SourceReader::new(config.keys.clone());
    let read = reader
        .read(source, ids)
        .await
        .context("reading the flows from the source")?;
    let mut n = 0;
    for (id, state) in read.flows {
        match config.rules.decide(
            id.clone(),
            state,
            read.time_us,
            redmirror_core::event::Origin::Resync,
            "resync",
        ) {
            Decision::Publish(ev) => {
                publisher.publish(&ev).await?;
                n += 1;
            }
            Decision::TooLarge { bytes } => {
                anyhow::bail!(
                    "flow {} is {bytes} bytes, over REDMIRROR_MAX_FLOW_BYTES",
                    redmirror_core::text::lossy(&id)
                )
            }
        }
    }
    Ok(n)
}

/// Starts the roles, the HTTP server and (if configured) the embedded broker.
pub async fn start(config: Config, roles: Roles) -> anyhow::Result<Running> {
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
    let admin = Arc::new(LateAdmin::default());
    let state = HttpState {
        metrics,
        health: health.clone(),
        admin: Some(admin.clone()),
        admin_token: config.admin_token.clone(),
    };
    let s = shutdown.clone();
    tasks.spawn(role("the HTTP listener", shutdown.clone(), async move {
        redmirror_telemetry::http::serve(listener, state, s).await?;
        Ok(())
    }));

    // A server down at start-up is waited for (SPEC section 7); only what
    // retrying cannot fix (bad credentials, TLS set-up) ends the process.
    health.register(HEALTH_KAFKA);
    let (kafka, broker) = until_up("Kafka (REDMIRROR_KAFKA_BROKERS)", || kafka(&config), kafka_retryable).await?;
    health.set(HEALTH_KAFKA, true);
    let source = match &config.source {
        Some(s) if roles.capture || roles.reconcile => {
            Some(connect_when_up(&health, HEALTH_SOURCE, "the source (REDMIRROR_SOURCE_URL)", s).await?)
        }
        _ => None,
    };
    // capture uses the destination only for its lease and the gap signal.
    let dest = match &config.dest {
        Some(d) => Some(connect_when_up(&health, HEALTH_DEST, "the destination (REDMIRROR_DEST_URL)", d).await?),
        None => None,
    };
    if let (Some(s), Some(d)) = (&source, &dest) {
        refuse_same_server(s, d).await?;
    }
    // Idle connections that silently died are found and made again before
    // a role needs them (redmirror_redis::liveness).
    for client in source.iter().chain(&dest) {
        let (c, s) = (client.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = s.cancelled() => {}
                _ = redmirror_redis::heartbeat(c) => {}
            }
        });
    }
    let publisher = if roles.capture || roles.reconcile {
        Some(Publisher::new(&kafka, &config.topic)?)
    } else {
        None
    };
    let gap_signal = dest.as_ref().map(|d| GapSignal::new(d.clone(), config.keys.gap_key()));
    let mut leases = Vec::new();
    let last_report = Arc::new(Mutex::new(None));
    let mut reconcile_tx = None;

    if roles.capture {
        let opts = CaptureOptions {
            source: config.source.clone().context("REDMIRROR_SOURCE_URL is not set")?,
            keys: config.keys.clone(),
            rules: config.rules.clone(),
            batch: config.capture_batch,
            pending_max: config.capture_pending_max,
            configure_notifications: config.configure_notifications,
            shutdown_timeout: config.shutdown_timeout,
        };
        // Fail fast on the notification check before serving.
        let client = source.clone().expect("source client");
        redmirror_capture::notify::ensure(&client, &opts.source, opts.configure_notifications)
            .await
            .map_err(|e| Refusal(e.to_string()))?;
        let lease = dest
            .as_ref()
            .map(|d| Lease::new(d.clone(), "capture", config.keys.lease_key("capture"), config.lease_ttl));
        if lease.is_none() {
            tracing::warn!(
                "REDMIRROR_DEST_URL is not set for capture: no capture lease (run one capture only) and gaps \
                 cannot reach a reconciler in another process"
            );
        }
        leases.extend(lease.clone());
        let (p, h, s, g) = (
            publisher.clone().expect("capture publisher"),
            health.clone(),
            shutdown.clone(),
            gap_signal.clone(),
        );
        let progress = dest.as_ref().map(|d| redmirror_capture::ProgressReport {
            client: d.clone(),
            key: config.keys.capture_progress_key(),
        });
        tasks.spawn(role("capture", shutdown.clone(), async move {
            capture_with_lease(opts, p, h, lease, g, progress, s).await
        }));
    }

    if roles.apply {
        let engine = ApplyEngine::new(
            dest.clone().expect("dest client"),
            config.keys.clone(),
            config.rules.clone(),
        );
        let opts = ApplyOptions {
            topic: config.topic.clone(),
            dlq_topic: config.dlq_topic(),
            group_id: config.group_id.clone(),
            batch: config.apply_batch,
            pause_key: config.keys.pause_key(),
            members_key: config.keys.apply_members_key(),
        };
        let (k, h, s) = (kafka.clone(), health.clone(), shutdown.clone());
        tasks.spawn(role("apply", shutdown.clone(), async move {
            Ok(redmirror_apply::run(engine, &k, opts, h, s).await?)
        }));
        let (k, g, t, l, s) = (
            kafka.clone(),
            config.group_id.clone(),
            config.topic.clone(),
            lag.clone(),
            shutdown.clone(),
        );
        tasks.spawn(role("apply lag tracking", shutdown.clone(), async move {
            redmirror_apply::lag::track(k, g, t, Duration::from_secs(5), l, s).await;
            Ok(())
        }));
    }

    if roles.reconcile {
        let (src, dst) = (
            source.clone().context("REDMIRROR_SOURCE_URL is not set")?,
            dest.clone().context("REDMIRROR_DEST_URL is not set")?,
        );
        let reconciler = Reconciler::new(
            src,
            dst.clone(),
            bulk_sides(&config)?,
            publisher.clone().expect("reconcile publisher"),
            kafka.clone(),
            config.group_id.clone(),
            config.keys.clone(),
            config.rules.clone(),
        );
        let lease = Lease::new(dst, "reconcile", config.keys.lease_key("reconcile"), config.lease_ttl);
        leases.push(lease.clone());
        let service = Service {
            reconciler,
            lease,
            opts: pass_options(&config, false),
            interval: config.reconcile_interval,
            gaps: gap_signal.clone().expect("destination connected"),
            requests: GapSignal::new(
                dest.clone().expect("destination connected"),
                config.keys.reconcile_request_key(),
            ),
            report_key: config.keys.report_key(),
            last: last_report.clone(),
        };
        let (tx, rx) = mpsc::channel(16);
        reconcile_tx = Some(tx);
        let s = shutdown.clone();
        tasks.spawn(role("reconcile", shutdown.clone(), async move {
            service.run(rx, s).await;
            Ok(())
        }));
    }

    let process_admin = ProcessAdmin {
        role: roles.name(),
        health: health.clone(),
        lag,
        publisher,
        source,
        dest,
        leases,
        reconcile: reconcile_tx,
        last_report,
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

/// Reconcile pass settings from the configuration.
pub fn pass_options(config: &Config, dry_run: bool) -> PassOptions {
    PassOptions {
        batch: config.reconcile_batch,
        rate_limit: config.reconcile_rate_limit,
        dry_run,
        barrier_timeout: config.reconcile_barrier_timeout,
    }
}

/// Capture, active only while this instance holds the capture lease (when
/// there is one); gaps are signalled to the reconciler through the destination.
async fn capture_with_lease(
    opts: CaptureOptions,
    publisher: Publisher,
    health: Health,
    lease: Option<Lease>,
    gaps: Option<GapSignal>,
    progress: Option<redmirror_capture::ProgressReport>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        if let Some(l) = &lease {
            if l.acquire(&shutdown).await.is_none() {
                return Ok(());
            }
        }
        let active = shutdown.child_token();
        let stop_keep = CancellationToken::new();
        let keeper = lease.clone().map(|l| {
            let (s, a) = (stop_keep.clone(), active.clone());
            tokio::spawn(async move { l.keep(s, a).await })
        });
        let (gap_tx, mut gap_rx) = mpsc::unbounded_channel();
        let signal = gaps.clone();
        let forward = tokio::spawn(async move {
            while let Some(g) = gap_rx.recv().await {
                tracing::debug!(gap = ?g, "Capture gap.");
                if let Some(s) = &signal {
                    s.signal().await;
                }
            }
        });
        let result = redmirror_capture::run(
            opts.clone(),
            publisher.clone(),
            health.clone(),
            gap_tx,
            progress.clone(),
            active.clone(),
        )
        .await;
        stop_keep.cancel();
        if let Some(k) = keeper {
            let _ = k.await;
        }
        let _ = forward.await;
        result?;
        if shutdown.is_cancelled() {
            if let Some(l) = &lease {
                l.release().await;
            }
            return Ok(());
        }
        tracing::warn!("Capture lease lost: standing by.");
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
            eprintln!("redmirror: {e:#}");
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
pub(crate) fn bulk_sides(config: &Config) -> anyhow::Result<Sides<Bulk>> {
    Ok(Sides {
        source: Bulk::new(config.source.as_ref().context("REDMIRROR_SOURCE_URL is not set")?)?,
        dest: Bulk::new(config.dest.as_ref().context("REDMIRROR_DEST_URL is not set")?)?,
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
