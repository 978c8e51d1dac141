//! `redmirror check`: pre-flight findings, one per line; exit 1 on any failure.
//! Nothing here runs a role: it reads what the roles would need and says
//! what is missing.

use std::process::ExitCode;
use std::time::Duration;

use redmirror_config::{Config, RedisEndpoint};

struct Report {
    failed: bool,
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
            r.fail(what, e);
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
    let mut r = Report { failed: false };
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
            Err(e @ redmirror_capture::notify::NotifyError::Missing { .. }) => r.fail("notifications", e),
            Err(redmirror_capture::notify::NotifyError::Unreadable { message, .. }) => r.fail(
                "notifications",
                format!("cannot read notify-keyspace-events: {message}"),
            ),
        }
    }
    if let (Some(_), Some(ep)) = (&source, &config.source) {
        match redmirror_redis::access::check_source(ep, &config.keys).await {
            Ok(None) => r.ok(
                "permissions",
                "the source user may run every command capture and reconcile use",
            ),
            Ok(Some(missing)) => r.fail("permissions", missing),
            Err(e) => r.fail("permissions", e),
        }
    }
    if let (Some(s), Some(d)) = (&source, &dest) {
        match redmirror_redis::same_server(s, d).await {
            Ok(None) => r.ok("servers", "source and destination are different servers"),
            Ok(Some(why)) => r.fail("servers", why),
            Err(e) => r.fail("servers", e),
        }
    }
    match config.kafka_brokers.as_deref() {
        None => r.fail("kafka", "not configured (REDMIRROR_KAFKA_BROKERS)"),
        Some(redmirror_config::EMBEDDED_BROKER) => r.warn(
            "kafka",
            "embedded in-process broker: for demos and development only; it keeps little history \
             (about 5 MiB per partition, lost on exit), so replay and rebuild are not possible",
        ),
        Some(brokers) => {
            let kafka = redmirror_kafka::Kafka::new(brokers, config.kafka_properties.clone());
            for topic in [config.topic.clone(), config.dlq_topic()] {
                let k = kafka.clone();
                let t = topic.clone();
                match tokio::task::spawn_blocking(move || redmirror_kafka::topics::partition_count(&k, &t)).await? {
                    Ok(Some(n)) => {
                        r.ok("topic", format!("{topic} present, {n} partitions"));
                        if topic == config.topic {
                            let lag = config.topic_min_compaction_lag.as_millis() as i64;
                            for w in redmirror_kafka::topics::risky_settings(&kafka, &topic, lag).await {
                                r.warn("topic", format!("{topic}: {w}"));
                            }
                        }
                    }
                    Ok(None) => r.ok("topic", format!("{topic} missing; it will be created at start-up")),
                    Err(e) => r.fail("kafka", e),
                }
            }
        }
    }
    if r.failed {
        println!("check failed");
        Ok(ExitCode::from(1))
    } else {
        println!("check passed");
        Ok(ExitCode::SUCCESS)
    }
}
