//! `redmirror check`: pre-flight findings, one per line. Exit 2 when it
//! finds what `run` refuses at start (the same functions decide:
//! [`redmirror_startup::checks`] and the notification check; SPEC section 7), else 1
//! on any other failure (a server that cannot be reached).
//! Nothing here runs a role: it reads what the roles would need and says
//! what is missing.

use std::process::ExitCode;
use std::time::Duration;

use redmirror_config::{Config, RedisEndpoint};
use redmirror_telemetry::errors::Chain;

struct Report {
    failed: bool,
    refused: bool,
}

impl Report {
    fn ok(&self, what: &str, detail: impl std::fmt::Display) {
        println!("ok    {what}: {detail}");
    }
    fn warn(&self, what: &str, detail: impl std::fmt::Display) {
        println!("warn  {what}: {detail}");
    }
    fn fail(&mut self, what: &str, detail: impl std::fmt::Display) {
        self.failed = true;
        println!("FAIL  {what}: {detail}");
    }
    /// What `run` refuses at start (exit 2).
    fn refuse(&mut self, what: &str, detail: impl std::fmt::Display) {
        self.refused = true;
        self.fail(what, detail);
    }
    /// A refusal (exit 2) or another failure (exit 1).
    fn error(&mut self, what: &str, e: anyhow::Error) {
        let text = redmirror_telemetry::errors::chain(&e);
        if redmirror_startup::checks::is_refusal(&e) {
            self.refuse(what, text);
        } else {
            self.fail(what, text);
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

async fn connect(r: &mut Report, what: &str, ep: Option<&RedisEndpoint>) -> Option<fred::prelude::Client> {
    let Some(ep) = ep else {
        r.fail(
            what,
            format!("not configured (REDMIRROR_{}_URL)", what.to_ascii_uppercase()),
        );
        return None;
    };
    match tokio::time::timeout(TIMEOUT, redmirror_redis::connect(ep, what)).await {
        Ok(Ok(c)) => {
            r.ok(what, format!("{} reachable", ep.redacted()));
            Some(c)
        }
        Ok(Err(e)) => {
            r.fail(what, Chain(&e));
            None
        }
        Err(_) => {
            r.fail(what, format!("{} did not answer within {TIMEOUT:?}", ep.redacted()));
            None
        }
    }
}

/// Runs every check and prints one line per finding; exit 1 when any failed.
pub async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let mut r = Report {
        failed: false,
        refused: false,
    };
    r.ok("config", "valid");
    let source = connect(&mut r, "source", config.source.as_ref()).await;
    let dest = connect(&mut r, "dest", config.dest.as_ref()).await;
    if let (Some(c), Some(ep)) = (&source, &config.source) {
        // Every master of a cluster source (notifications are node-local).
        match redmirror_capture::notify::check(c, ep, false).await {
            Ok(_) => {
                let flags = redmirror_capture::notify::current(c, None).await.unwrap_or_default();
                let masters = redmirror_redis::primaries(c).len();
                let on = if redmirror_redis::is_cluster(c) {
                    format!(" on every master ({masters})")
                } else {
                    String::new()
                };
                r.ok("notifications", format!("notify-keyspace-events={flags:?}{on}"));
            }
            Err(e @ redmirror_capture::notify::NotifyError::Missing { .. }) => r.refuse("notifications", e),
            Err(redmirror_capture::notify::NotifyError::Unreadable { message, .. }) => r.fail(
                "notifications",
                format!("cannot read notify-keyspace-events: {message}"),
            ),
        }
    }
    if let (Some(_), Some(ep)) = (&source, &config.source) {
        match redmirror_startup::checks::permissions(config, ep).await {
            Ok(()) => r.ok(
                "permissions",
                "the source user may run every command capture and reconcile use",
            ),
            Err(e) => r.error("permissions", e),
        }
    }
    if let (Some(s), Some(d)) = (&source, &dest) {
        match redmirror_startup::checks::distinct_servers(s, d).await {
            Ok(()) => r.ok("servers", "source and destination are different servers"),
            Err(e) => r.error("servers", e),
        }
    }
    match config.kafka_brokers.as_ref() {
        None => r.fail("kafka", "not configured (REDMIRROR_KAFKA_BROKERS)"),
        Some(redmirror_config::Brokers::Embedded) => {
            r.warn(
                "kafka",
                "embedded in-process broker: for demos and development only; it keeps little history \
                 (about 5 MiB per partition, lost on exit), so replay and rebuild are not possible",
            );
            let kafka = redmirror_kafka::Kafka::new("", config.kafka_properties.clone());
            match redmirror_startup::checks::record_limit_without_topic(config, &kafka) {
                Ok(limit) => r.ok("record size", record_size(config, limit)),
                Err(e) => r.refuse("record size", e),
            }
        }
        Some(redmirror_config::Brokers::Bootstrap(brokers)) => {
            let kafka = redmirror_kafka::Kafka::new(brokers, config.kafka_properties.clone());
            for topic in [config.topic.clone(), config.dlq_topic()] {
                let k = kafka.clone();
                let t = topic.clone();
                let count = tokio::task::spawn_blocking(move || {
                    redmirror_kafka::topics::partition_count_within(&k, &t, TIMEOUT)
                })
                .await?;
                match count {
                    Ok(Some(n)) => {
                        r.ok("topic", format!("{topic} present, {n} partitions"));
                        if topic == config.topic {
                            let lag = config.topic_min_compaction_lag.as_millis() as i64;
                            for w in redmirror_kafka::topics::risky_settings(&kafka, &topic, lag).await {
                                r.warn("topic", format!("{topic}: {w}"));
                            }
                            match tokio::time::timeout(TIMEOUT, redmirror_startup::checks::record_limit(config, &kafka))
                                .await
                            {
                                Ok(Ok(limit)) => r.ok("record size", record_size(config, limit)),
                                Ok(Err(e)) => r.error("record size", e),
                                Err(_) => r.fail("record size", format!("Kafka did not answer within {TIMEOUT:?}")),
                            }
                        }
                    }
                    Ok(None) => {
                        r.ok("topic", format!("{topic} missing; it will be created at start-up"));
                        if topic == config.topic {
                            match redmirror_startup::checks::record_limit_without_topic(config, &kafka) {
                                Ok(limit) => r.ok("record size", record_size(config, limit)),
                                Err(e) => r.refuse("record size", e),
                            }
                        }
                    }
                    Err(e) => {
                        // Nothing answered (or refused): the next topic's
                        // probe would only wait as long again.
                        r.fail("kafka", unreachable_kafka(brokers, &e));
                        break;
                    }
                }
            }
        }
    }
    if r.refused {
        println!("check failed: redmirror would refuse to start with this configuration");
        Ok(ExitCode::from(2))
    } else if r.failed {
        println!("check failed");
        Ok(ExitCode::from(1))
    } else {
        println!("check passed");
        Ok(ExitCode::SUCCESS)
    }
}

fn record_size(config: &Config, limit: usize) -> String {
    format!(
        "REDMIRROR_MAX_FLOW_BYTES={} fits the {limit}-byte records Kafka takes",
        config.rules.max_flow_bytes
    )
}

/// What `check` says when the brokers give no metadata: which addresses it
/// tried and for how long, then librdkafka's reason. When none answered,
/// that sentence replaces the error's own message (the topic whose
/// metadata was asked for, from where).
fn unreachable_kafka(brokers: &str, e: &redmirror_kafka::Error) -> String {
    match std::error::Error::source(e) {
        Some(said) if e.is_unreachable() => format!(
            "no broker at {brokers} answered within {TIMEOUT:?} (nothing listens there, or it is unreachable): {}",
            Chain(said)
        ),
        _ => format!("brokers {brokers}: {}", Chain(e)),
    }
}
