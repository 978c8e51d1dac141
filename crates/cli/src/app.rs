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
}

impl Roles {
    pub fn all() -> Self {
        Roles {
            capture: true,
            apply: true,
        }
    }
    pub fn capture() -> Self {
        Roles {
            capture: true,
            apply: false,
        }
    }
    pub fn apply() -> Self {
        Roles {
            capture: false,
            apply: true,
        }
    }
    fn name(&self) -> &'static str {
        match (self.capture, self.apply) {
            (true, true) => "run",
            (true, false) => "capture",
            (false, true) => "apply",
            _ => "none",
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
    pub async fn wait(
        &mut self,
        until: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
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
        let broker = EmbeddedBroker::start(&[
            (config.topic.clone(), config.topic_partitions),
            (config.dlq_topic(), 1),
        ])?;
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
pub async fn refuse_same_server(
    source: &fred::prelude::Client,
    dest: &fred::prelude::Client,
) -> anyhow::Result<()> {
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
    config: Config,
}

impl Admin for ProcessAdmin {
    fn resync(&self, flow_id: Bytes) -> AdminResult {
        let (Some(p), Some(s)) = (self.publisher.clone(), self.source.clone()) else {
            return Box::pin(async {
                Err(AdminError::unavailable("this process does not run capture"))
            });
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
        Box::pin(async {
            Err(AdminError::unavailable(
                "no reconciler runs in this process",
            ))
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
        let body = json!({
            "role": self.role,
            "version": env!("CARGO_PKG_VERSION"),
            "ready": self.health.ready(),
            "components": self.health.components(),
            "lag": lag,
            "lease": serde_json::Value::Null,
            "last_reconcile": serde_json::Value::Null,
        });
        Box::pin(async move { Ok(body) })
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
        .with_context(|| {
            format!(
                "cannot listen on {} (REDMIRROR_HTTP_ADDR)",
                config.http_addr
            )
        })?;
    let http_addr = listener.local_addr()?;
    let (kafka, broker) = kafka(&config).await?;
    let health = Health::new();
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let lag: redmirror_apply::lag::SharedLag = Arc::new(Mutex::new(Default::default()));

    let source = match &config.source {
        Some(s) if roles.capture => Some(redmirror_redis::connect(s, "source").await?),
        _ => None,
    };
    let dest = match &config.dest {
        Some(d) if roles.apply => Some(redmirror_redis::connect(d, "destination").await?),
        _ => None,
    };
    if let (Some(s), Some(d)) = (&source, &dest) {
        refuse_same_server(s, d).await?;
    }
    let publisher = if roles.capture {
        Some(Publisher::new(&kafka, &config.topic)?)
    } else {
        None
    };

    if roles.capture {
        let opts = CaptureOptions {
            source: config
                .source
                .clone()
                .context("REDMIRROR_SOURCE_URL is not set")?,
            keys: config.keys.clone(),
            rules: config.rules.clone(),
            batch: config.capture_batch,
            pending_max: config.capture_pending_max,
            configure_notifications: config.configure_notifications,
            shutdown_timeout: config.shutdown_timeout,
        };
        // Gaps go to the reconciler when one runs here; otherwise they are
        // counted and logged by capture.
        let (gap_tx, mut gap_rx) = mpsc::unbounded_channel();
        tasks.spawn(async move {
            while let Some(g) = gap_rx.recv().await {
                tracing::debug!(gap = ?g, "Capture gap.");
            }
            Ok(())
        });
        let (p, h, s) = (
            publisher.clone().expect("capture publisher"),
            health.clone(),
            shutdown.clone(),
        );
        // Fail fast on the notification check before serving.
        let client = source.clone().expect("source client");
        redmirror_capture::notify::ensure(&client, &opts.source, opts.configure_notifications)
            .await
            .map_err(|e| Refusal(e.to_string()))?;
        tasks.spawn(async move { Ok(redmirror_capture::run(opts, p, h, gap_tx, s).await?) });
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
        };
        let (k, h, s) = (kafka.clone(), health.clone(), shutdown.clone());
        tasks.spawn(async move { Ok(redmirror_apply::run(engine, &k, opts, h, s).await?) });
        let (k, g, t, l, s) = (
            kafka.clone(),
            config.group_id.clone(),
            config.topic.clone(),
            lag.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            redmirror_apply::lag::track(k, g, t, Duration::from_secs(5), l, s).await;
            Ok(())
        });
    }

    let admin = ProcessAdmin {
        role: roles.name(),
        health: health.clone(),
        lag,
        publisher,
        source,
        config: config.clone(),
    };
    let state = HttpState {
        metrics,
        health,
        admin: Some(Arc::new(admin)),
        admin_token: config.admin_token.clone(),
    };
    let s = shutdown.clone();
    tasks.spawn(async move {
        redmirror_telemetry::http::serve(listener, state, s).await?;
        Ok(())
    });
    tracing::info!(role = roles.name(), http = %http_addr, embedded_broker = kafka.embedded, "redmirror started.");
    Ok(Running {
        http_addr,
        shutdown,
        tasks,
        timeout: config.shutdown_timeout,
        _broker: broker,
    })
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
    let mut running = match start(config, roles).await {
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
