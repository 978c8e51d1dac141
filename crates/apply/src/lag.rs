//! Consumer lag: end of each partition minus the group's committed offset.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use redmirror_kafka::Kafka;
use redmirror_telemetry::metrics as m;
use tokio_util::sync::CancellationToken;

/// A metadata client and the partitions of `topic`.
pub(crate) fn partitions(
    kafka: &Kafka,
    topic: &str,
    extra: &[(&str, &str)],
) -> Result<(BaseConsumer, Vec<i32>), redmirror_kafka::Error> {
    let c: BaseConsumer = kafka
        .client_config(extra)
        .create()
        .map_err(|source| redmirror_kafka::Error::Client {
            what: "metadata client",
            source,
        })?;
    let md = c
        .fetch_metadata(Some(topic), redmirror_kafka::ADMIN_TIMEOUT)
        .map_err(|e| topic_error(topic, e))?;
    let ids = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    Ok((c, ids))
}

pub(crate) fn topic_error(topic: &str, e: rdkafka::error::KafkaError) -> redmirror_kafka::Error {
    redmirror_kafka::Error::Topic {
        topic: topic.to_string(),
        message: e.to_string(),
    }
}

/// End offsets (high watermarks) of every partition of `topic`.
pub fn end_offsets(kafka: &Kafka, topic: &str) -> Result<BTreeMap<i32, i64>, redmirror_kafka::Error> {
    let (c, ids) = partitions(kafka, topic, &[])?;
    let mut out = BTreeMap::new();
    for p in ids {
        let (_, high) = c
            .fetch_watermarks(topic, p, redmirror_kafka::ADMIN_TIMEOUT)
            .map_err(|e| topic_error(topic, e))?;
        out.insert(p, high);
    }
    Ok(out)
}

/// Lag per partition: end offset minus committed offset (everything when nothing is committed).
pub fn lag(kafka: &Kafka, group: &str, topic: &str) -> Result<BTreeMap<i32, i64>, redmirror_kafka::Error> {
    let ends = end_offsets(kafka, topic)?;
    let committed = crate::consumer::committed(kafka, group, topic)?;
    Ok(ends
        .into_iter()
        .map(|(p, end)| (p, (end - committed.get(&p).copied().unwrap_or(0)).max(0)))
        .collect())
}

/// Latest lag, shared with the status endpoint.
pub type SharedLag = std::sync::Arc<std::sync::Mutex<BTreeMap<i32, i64>>>;

/// Refreshes `redmirror_consumer_lag_messages{partition}` every `every` until shutdown.
pub async fn track(
    kafka: Kafka,
    group: String,
    topic: String,
    every: Duration,
    shared: SharedLag,
    shutdown: CancellationToken,
) {
    loop {
        let (k, g, t) = (kafka.clone(), group.clone(), topic.clone());
        match tokio::task::spawn_blocking(move || lag(&k, &g, &t)).await {
            Ok(Ok(l)) => {
                for (p, v) in &l {
                    metrics::gauge!(m::CONSUMER_LAG, "partition" => p.to_string()).set(*v as f64);
                }
                *shared.lock().expect("lag lock") = l;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "Lag not measured."),
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
