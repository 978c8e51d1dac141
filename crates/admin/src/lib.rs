//! The admin API of a running process (`POST /v1/resync`, `/v1/reconcile`,
//! `/v1/resume`, `GET /v1/status`, the flow API and the dead letters): hands
//! each request to the role that answers it. [`LateAdmin`] answers 503
//! until the roles have started; [`ProcessAdmin`] then answers from their
//! handles.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redmirror_api::{DeadLetters, FlowHistory, FlowView, Redriven, Resumed, Status};
use redmirror_config::{Config, RedisEndpoint};
use redmirror_kafka::Publisher;
use redmirror_reconcile::Trigger;
use redmirror_redis::epoch::SourceEpoch;
use redmirror_redis::source::SourceReader;
use redmirror_state::hold::{Hold, HoldWatch};
use redmirror_state::lease::Lease;
use redmirror_telemetry::errors::Chain;
use redmirror_telemetry::http::{unavailable, Admin, AdminError, AdminResult};
use redmirror_telemetry::requests::Ticket;
use redmirror_telemetry::Health;
use serde_json::json;
use tokio::sync::mpsc;

/// The admin actions once the roles have started; until then every call
/// answers 503 ("starting").
#[derive(Default)]
pub struct LateAdmin(pub std::sync::OnceLock<Arc<dyn Admin>>);

impl LateAdmin {
    fn get(&self) -> Result<&Arc<dyn Admin>, AdminError> {
        self.0.get().ok_or_else(|| {
            AdminError::unavailable("starting: waiting for Kafka, the source or the destination (see /readyz)")
        })
    }
}

impl Admin for LateAdmin {
    fn resync(&self, flow_id: Bytes, ticket: Ticket) -> Result<(), AdminError> {
        self.get()?.resync(flow_id, ticket)
    }
    fn reconcile(&self, ticket: Ticket) -> Result<(), AdminError> {
        self.get()?.reconcile(ticket)
    }
    fn status(&self) -> AdminResult<Status> {
        match self.get() {
            Ok(a) => a.status(),
            Err(e) => Box::pin(async { Err(e) }),
        }
    }
    fn resume(&self) -> AdminResult<Resumed> {
        match self.get() {
            Ok(a) => a.resume(),
            Err(e) => Box::pin(async { Err(e) }),
        }
    }
    fn flow(&self, flow_id: Bytes) -> AdminResult<FlowView> {
        match self.get() {
            Ok(a) => a.flow(flow_id),
            Err(e) => Box::pin(async { Err(e) }),
        }
    }
    fn history(&self, flow_id: Bytes, limit: usize) -> AdminResult<FlowHistory> {
        match self.get() {
            Ok(a) => a.history(flow_id, limit),
            Err(e) => Box::pin(async { Err(e) }),
        }
    }
    fn dead_letters(&self, limit: usize) -> AdminResult<DeadLetters> {
        match self.get() {
            Ok(a) => a.dead_letters(limit),
            Err(e) => Box::pin(async { Err(e) }),
        }
    }
    fn redrive(&self, flow_id: Option<Bytes>) -> AdminResult<Redriven> {
        match self.get() {
            Ok(a) => a.redrive(flow_id),
            Err(e) => Box::pin(async { Err(e) }),
        }
    }
}

/// The admin actions of a started process: each one hands the request to
/// the role that runs it.
pub struct ProcessAdmin {
    /// The subcommand that runs these roles (`/v1/status` `role`).
    pub role: &'static str,
    /// Each component's readiness.
    pub health: Health,
    /// Apply's lag per partition (empty without apply).
    pub lag: redmirror_apply::lag::SharedLag,
    /// The source's side, with capture or reconcile.
    pub reads: Option<SourceReads>,
    /// The destination, when this process uses one.
    pub dest: Option<fred::prelude::Client>,
    /// The leases this process takes (capture's, the reconciler's).
    pub leases: Vec<Lease>,
    /// Where to ask the reconciler for a pass (with reconcile).
    pub reconcile: Option<mpsc::Sender<Trigger>>,
    /// This process's latest pass, if it ran one.
    pub last_report: Arc<Mutex<Option<redmirror_reconcile::Report>>>,
    /// The hold a rewind left, as this process sees it.
    pub hold: Option<HoldWatch>,
    /// Reads the change and dead-letter topics (flow history, dead letters).
    pub kafka: redmirror_kafka::Kafka,
    /// Apply's write limit (`None` without apply).
    pub write_limit: Option<redmirror_apply::engine::Throttle>,
    /// The process's settings.
    pub config: Config,
    /// The process's stop: a resync waiting for the source ends with it.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// What a process that reads the source (capture, reconcile) lends the
/// admin API: `POST /v1/resync` and the flow API read flows through it.
#[derive(Clone)]
pub struct SourceReads {
    /// The source.
    pub source: RedisEndpoint,
    /// Publishes snapshot events.
    pub publisher: Publisher,
    /// The source epoch the reads are ordered in.
    pub epoch: SourceEpoch,
    /// One read at a time.
    pub reader: Arc<SourceReader>,
}

/// Longest wait for one destination read behind `GET /v1/status` (a
/// lease holder, the stored report); past it the field is `null`.
const STATUS_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest wait for the two reads behind `GET /v1/flows/{flowId}`.
const FLOW_READ_TIMEOUT: Duration = Duration::from_secs(5);

impl Admin for ProcessAdmin {
    fn resync(&self, flow_id: Bytes, ticket: Ticket) -> Result<(), AdminError> {
        let Some(r) = self.reads.clone() else {
            return Err(AdminError::unavailable("this process does not run capture"));
        };
        let (rules, stop) = (self.config.rules.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            ticket.running();
            let result = redmirror_capture::role::resync(
                &rules,
                &r.source,
                &r.reader,
                &r.publisher,
                std::slice::from_ref(&flow_id),
                &stop,
            )
            .await
            .map_err(|e| Chain(&e).to_string());
            ticket.finish(result.map(|_| json!({ "resynced": redmirror_core::text::json_bytes(&flow_id) })));
        });
        Ok(())
    }

    fn reconcile(&self, ticket: Ticket) -> Result<(), AdminError> {
        let Some(tx) = self.reconcile.clone() else {
            return Err(AdminError::unavailable("no reconciler runs in this process"));
        };
        let (started, started_rx) = tokio::sync::oneshot::channel();
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.try_send(Trigger::Now { started, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                AdminError::too_many("too many reconcile requests are queued; see GET /v1/status")
            }
            mpsc::error::TrySendError::Closed(_) => AdminError::unavailable("the reconciler is stopping"),
        })?;
        tokio::spawn(async move {
            if started_rx.await.is_ok() {
                ticket.running();
            }
            ticket.finish(match rx.await {
                Ok(Ok(report)) => Ok(report.status_json()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("the reconciler stopped before the pass finished".into()),
            });
        });
        Ok(())
    }

    fn status(&self) -> AdminResult<Status> {
        let lag = self
            .lag
            .lock()
            .expect("lag lock")
            .per_partition
            .iter()
            .map(|(p, l)| (p.to_string(), *l))
            .collect();
        let hold = self.hold.as_ref().and_then(HoldWatch::current);
        let mut body = Status {
            role: self.role.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready: self.health.ready(),
            components: self.health.components(),
            lag,
            source_epoch: self.reads.as_ref().map(|r| r.epoch.current()),
            topic: self.config.topic.clone(),
            dlq_topic: self.config.dlq_topic(),
            group_id: self.config.group_id.clone(),
            hold: Hold::state(hold.as_ref()),
            rules: Some(self.config.rules.fields.summary()),
            write_limit: self.write_limit.as_ref().map(redmirror_apply::engine::Throttle::status),
            ..Status::default()
        };
        let local = self.last_report.lock().expect("report lock").clone();
        let leases = self.leases.clone();
        let dest = self.dest.clone();
        let report_key = self.config.keys.report_key();
        Box::pin(async move {
            for l in &leases {
                body.lease
                    .insert(l.name().to_string(), l.status(STATUS_READ_TIMEOUT).await);
            }
            let report = match (local, dest) {
                (Some(r), _) => Some(r),
                (None, Some(d)) => tokio::time::timeout(
                    STATUS_READ_TIMEOUT,
                    redmirror_reconcile::service::stored_report(&d, &report_key),
                )
                .await
                .ok()
                .flatten()
                .and_then(|v| serde_json::from_value::<redmirror_reconcile::Report>(v).ok()),
                (None, None) => None,
            };
            body.verified_as_of = report
                .as_ref()
                .and_then(|r| r.verified_source_time_us)
                .map(redmirror_core::text::rfc3339_us);
            body.last_reconcile = report.map(|r| r.for_status());
            Ok(body)
        })
    }

    fn resume(&self) -> AdminResult<Resumed> {
        let Some(dest) = self.dest.clone() else {
            return Box::pin(async {
                Err(AdminError::unavailable(
                    "this process has no destination (REDMIRROR_DEST_URL)",
                ))
            });
        };
        let key = self.config.keys.hold_key();
        Box::pin(async move {
            redmirror_state::hold::resume(&dest, &key)
                .await
                .map_err(|e| AdminError::failed(Chain(&e).to_string()))
        })
    }

    fn flow(&self, flow_id: Bytes) -> AdminResult<FlowView> {
        let (Some(reads), Some(dest)) = (self.reads.clone(), self.dest.clone()) else {
            return unavailable(
                "this process does not read both the source and the destination (it runs no capture or reconcile); \
                 ask a `run`, `capture` or `reconcile` process",
            );
        };
        let (keys, rules) = (self.config.keys.clone(), self.config.rules.clone());
        Box::pin(async move {
            tokio::time::timeout(
                FLOW_READ_TIMEOUT,
                redmirror_reconcile::flow::view(&reads.reader, &dest, &keys, &rules, flow_id),
            )
            .await
            .map_err(|_| AdminError::unavailable("the source or the destination did not answer within 5 s"))?
            .map_err(|e| AdminError::unavailable(Chain(&e).to_string()))
        })
    }

    fn history(&self, flow_id: Bytes, limit: usize) -> AdminResult<FlowHistory> {
        let (kafka, topic) = (self.kafka.clone(), self.config.topic.clone());
        Box::pin(async move {
            redmirror_history::flow::history(&kafka, &topic, &flow_id, limit)
                .await
                .map_err(|e| AdminError::unavailable(Chain(&e).to_string()))
        })
    }

    fn dead_letters(&self, limit: usize) -> AdminResult<DeadLetters> {
        let (kafka, topic) = (self.kafka.clone(), self.config.dlq_topic());
        Box::pin(async move {
            let (dead_letters, total) = redmirror_history::dlq::newest(&kafka, &topic, limit)
                .await
                .map_err(|e| AdminError::unavailable(Chain(&e).to_string()))?;
            Ok(DeadLetters {
                total,
                dead_letters,
                topic,
            })
        })
    }

    fn redrive(&self, flow_id: Option<Bytes>) -> AdminResult<Redriven> {
        let (kafka, dlq, topic) = (self.kafka.clone(), self.config.dlq_topic(), self.config.topic.clone());
        Box::pin(async move {
            let n = redmirror_history::dlq::redrive(&kafka, &dlq, &topic, flow_id.as_deref())
                .await
                .map_err(|e| AdminError::failed(Chain(&e).to_string()))?;
            tracing::info!(target: "redmirror::audit", redriven = n, "Dead letters re-driven.");
            Ok(Redriven {
                redriven: n as u64,
                flow_id: flow_id.as_deref().map(redmirror_core::text::lossy),
            })
        })
    }
}
