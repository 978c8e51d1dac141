//! Creating the change and dead-letter topics; spotting risky settings.

use rdkafka::admin::{AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;
use redmirror_telemetry::errors::Chain;

use crate::{Error, Kafka, ADMIN_TIMEOUT};

/// Retention under which a non-compacted change topic is risky: replay and
/// rebuild need the history.
pub const MIN_SAFE_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// What was found or done for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicReport {
    /// Topic name.
    pub topic: String,
    /// True when redmirror created it now.
    pub created: bool,
    /// Partition count.
    pub partitions: usize,
    /// Warnings about risky settings (empty when sane).
    pub warnings: Vec<String>,
}

/// Number of partitions of `topic`, `None` when it does not exist.
pub fn partition_count(kafka: &Kafka, topic: &str) -> Result<Option<usize>, Error> {
    partition_count_within(kafka, topic, ADMIN_TIMEOUT)
}

/// [`partition_count`], waiting at most `timeout` for the brokers (a
/// pre-flight check that should say quickly that nothing answers).
pub fn partition_count_within(
    kafka: &Kafka,
    topic: &str,
    timeout: std::time::Duration,
) -> Result<Option<usize>, Error> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = kafka.client_config(&[]).create().map_err(|source| Error::Client {
        what: "metadata client",
        source: source.into(),
    })?;
    let md = c.fetch_metadata(Some(topic), timeout).map_err(|e| Error::Metadata {
        topic: topic.to_string(),
        brokers: kafka.bootstrap.clone(),
        source: e.into(),
    })?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len()))
}

/// [`partition_count`] on a blocking thread: librdkafka's metadata call
/// blocks until the brokers answer or its timeout (10 s) ends, and on the
/// runtime it would stop the caller from saying that it waits.
async fn partition_count_off_runtime(kafka: &Kafka, topic: &str) -> Result<Option<usize>, Error> {
    let (k, t) = (kafka.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || partition_count(&k, &t))
        .await
        .map_err(|e| Error::Topic {
            topic: topic.to_string(),
            message: format!("the metadata request did not finish: {e}"),
        })?
}

/// Creates the change topic (compacted) and the dead-letter topic when they
/// are missing, and reports risky settings of existing ones.
///
/// The change topic is created with `min.compaction.lag.ms` =
/// `min_compaction_lag_ms`: compaction leaves every record younger than
/// that alone, which is what makes a rewind within that window exact.
pub async fn ensure(
    kafka: &Kafka,
    topic: &str,
    dlq: &str,
    partitions: i32,
    replication: i32,
    min_compaction_lag_ms: i64,
) -> Result<Vec<TopicReport>, Error> {
    let lag = min_compaction_lag_ms.to_string();
    let change = ensure_one(
        kafka,
        topic,
        partitions,
        replication,
        &[("cleanup.policy", "compact"), ("min.compaction.lag.ms", &lag)],
        Some(min_compaction_lag_ms),
    )
    .await?;
    let dead = ensure_one(
        kafka,
        dlq,
        1,
        replication,
        &[("cleanup.policy", "delete"), ("retention.ms", "2592000000")],
        None,
    )
    .await?;
    Ok(vec![change, dead])
}

async fn ensure_one(
    kafka: &Kafka,
    topic: &str,
    partitions: i32,
    replication: i32,
    config: &[(&str, &str)],
    change_topic_lag: Option<i64>,
) -> Result<TopicReport, Error> {
    let err = |message: String| Error::Topic {
        topic: topic.to_string(),
        message,
    };
    if let Some(n) = partition_count_off_runtime(kafka, topic).await? {
        let warnings = match change_topic_lag {
            Some(lag) => risky_settings(kafka, topic, lag).await,
            None => Vec::new(),
        };
        for w in &warnings {
            tracing::warn!(topic, warning = %w, "Risky topic settings.");
        }
        return Ok(TopicReport {
            topic: topic.to_string(),
            created: false,
            partitions: n,
            warnings,
        });
    }
    let admin = kafka.admin()?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    for (k, v) in config {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(|e| err(format!("create: {e}")))?;
    for r in results {
        match r {
            Ok(_) => tracing::info!(topic, partitions, "Created topic."),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(err(format!("create: {code}"))),
        }
    }
    // Wait until the metadata shows it.
    let deadline = std::time::Instant::now() + ADMIN_TIMEOUT;
    loop {
        if let Some(n) = partition_count_off_runtime(kafka, topic).await? {
            return Ok(TopicReport {
                topic: topic.to_string(),
                created: true,
                partitions: n,
                warnings: Vec::new(),
            });
        }
        if std::time::Instant::now() > deadline {
            return Err(err("created but not visible in metadata".into()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Warnings for an existing change topic: not compacted and keeping
/// little history (replay cannot rebuild), or compacted sooner than
/// `min_compaction_lag_ms` (a rewind within that window may be approximate).
pub async fn risky_settings(kafka: &Kafka, topic: &str, min_compaction_lag_ms: i64) -> Vec<String> {
    let settings = match settings(kafka, topic).await {
        Ok(s) => s,
        Err(e) => return vec![format!("could not read topic settings ({})", Chain(&e))],
    };
    let get = |name: &str| settings.get(name).cloned();
    let policy = get("cleanup.policy").unwrap_or_else(|| "delete".into());
    let retention: i64 = get("retention.ms").and_then(|v| v.parse().ok()).unwrap_or(-1);
    let lag: i64 = get("min.compaction.lag.ms").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut warnings = Vec::new();
    if !policy.contains("compact") && (0..MIN_SAFE_RETENTION_MS).contains(&retention) {
        warnings.push(format!(
            "cleanup.policy={policy} and retention.ms={retention}: history older than {} h is lost, so replay \
             cannot rebuild the destination; set cleanup.policy=compact (or retention.ms=-1)",
            retention / 3_600_000
        ));
    }
    if policy.contains("compact") && lag < min_compaction_lag_ms {
        warnings.push(format!(
            "min.compaction.lag.ms={lag}: compaction may remove a flow's older records as soon as a newer one \
             exists, so a rewind is exact only {} back (REDMIRROR_TOPIC_MIN_COMPACTION_LAG asks for {}); set it \
             with kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config \
             min.compaction.lag.ms={min_compaction_lag_ms}",
            human_ms(lag),
            human_ms(min_compaction_lag_ms)
        ));
    }
    warnings
}

fn human_ms(ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// The topic's `max.message.bytes` (the largest record batch the broker
/// accepts for it), `None` when the broker does not say.
pub async fn max_message_bytes(kafka: &Kafka, topic: &str) -> Result<Option<usize>, Error> {
    Ok(settings(kafka, topic)
        .await?
        .get("max.message.bytes")
        .and_then(|v| v.parse().ok()))
}

/// Every setting the broker reports for `topic` (name to value; settings
/// without a value are left out).
pub async fn settings(kafka: &Kafka, topic: &str) -> Result<std::collections::BTreeMap<String, String>, Error> {
    let err = |message: String| Error::Topic {
        topic: topic.to_string(),
        message,
    };
    let admin = kafka.admin()?;
    let opts = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
    let mut r = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
        .await
        .map_err(|e| err(format!("describe configs: {e}")))?;
    match r.pop() {
        Some(Ok(res)) => Ok(res
            .entries
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect()),
        Some(Err(e)) => Err(err(format!("describe configs: {e}"))),
        None => Ok(Default::default()),
    }
}

/// A setting of `topic` in milliseconds (`None` when absent or not a number).
pub async fn setting_ms(kafka: &Kafka, topic: &str, name: &str) -> Result<Option<i64>, Error> {
    Ok(settings(kafka, topic).await?.get(name).and_then(|v| v.parse().ok()))
}

/// The largest record Kafka takes on the change topic from redmirror's
/// producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimit {
    /// The producer's `message.max.bytes`.
    pub producer: usize,
    /// The topic's `max.message.bytes` (not read from the embedded broker).
    pub topic: Option<usize>,
}

impl RecordLimit {
    /// The smaller of the two, in bytes.
    pub fn bytes(&self) -> usize {
        self.topic.map_or(self.producer, |t| t.min(self.producer))
    }

    /// Sets `rules.max_record_bytes`, so a flow whose event would be larger
    /// is skipped at capture instead of refused by Kafka over and over.
    /// `Err` with the fix when `REDMIRROR_MAX_FLOW_BYTES` is over what Kafka
    /// can carry (`topic` names the change topic in it).
    pub fn apply_to(&self, rules: &mut redmirror_core::MirrorRules, topic: &str) -> Result<(), String> {
        let limit = self.bytes();
        let most = limit.saturating_sub(redmirror_core::rules::RECORD_OVERHEAD);
        if rules.max_flow_bytes > most {
            let producer = self.producer;
            let topic_says = self.topic.map_or_else(String::new, |t| {
                format!(" and topic {topic} takes records up to {t} bytes (max.message.bytes)")
            });
            return Err(format!(
                "REDMIRROR_MAX_FLOW_BYTES={} is more than Kafka can carry: the producer sends records up to \
                 {producer} bytes (message.max.bytes){topic_says}; set REDMIRROR_MAX_FLOW_BYTES to at most {most}, \
                 or raise those limits (REDMIRROR_KAFKA_MESSAGE_MAX_BYTES and the topic's max.message.bytes)",
                rules.max_flow_bytes
            ));
        }
        rules.max_record_bytes = limit;
        Ok(())
    }
}

/// The record limit of `topic` for `kafka`'s producer.
pub async fn record_limit(kafka: &Kafka, topic: &str) -> Result<RecordLimit, Error> {
    Ok(RecordLimit {
        producer: kafka.producer_max_message_bytes(),
        topic: if kafka.embedded {
            None
        } else {
            max_message_bytes(kafka, topic).await?
        },
    })
}

/// Kafka as `config` says: the embedded broker when `brokers` is
/// `embedded` (started here, with both topics), otherwise the configured
/// brokers, with the change and dead-letter topics created if missing.
pub async fn connect(
    config: &redmirror_config::Config,
    brokers: &redmirror_config::Brokers,
) -> Result<(Kafka, Option<crate::EmbeddedBroker>), Error> {
    let list = match brokers {
        redmirror_config::Brokers::Embedded => {
            let broker = crate::EmbeddedBroker::start(&[
                (config.topic.clone(), config.topic_partitions),
                (config.dlq_topic(), 1),
            ])?;
            let mut kafka = Kafka::new(broker.bootstrap(), config.kafka_properties.clone());
            kafka.embedded = true;
            return Ok((kafka, Some(broker)));
        }
        redmirror_config::Brokers::Bootstrap(list) => list,
    };
    let kafka = Kafka::new(list.clone(), config.kafka_properties.clone());
    ensure(
        &kafka,
        &config.topic,
        &config.dlq_topic(),
        config.topic_partitions,
        config.topic_replication_factor,
        config.topic_min_compaction_lag.as_millis() as i64,
    )
    .await?;
    Ok((kafka, None))
}

#[cfg(test)]
mod record_limit {
    use super::RecordLimit;

    #[test]
    fn the_smaller_limit_wins_and_a_flow_limit_over_it_is_refused_with_the_fix() {
        let mut rules = redmirror_core::MirrorRules::default();
        let limit = RecordLimit {
            producer: 1_000_000,
            topic: Some(500_000),
        };
        assert_eq!(limit.bytes(), 500_000);
        rules.max_flow_bytes = 900_000;
        let e = limit.apply_to(&mut rules, "flows").unwrap_err();
        assert!(e.contains("topic flows takes records up to 500000 bytes"), "{e}");
        assert!(e.contains("REDMIRROR_MAX_FLOW_BYTES to at most"), "{e}");
        rules.max_flow_bytes = 1_000;
        limit.apply_to(&mut rules, "flows").unwrap();
        assert_eq!(rules.max_record_bytes, 500_000);
    }
}
