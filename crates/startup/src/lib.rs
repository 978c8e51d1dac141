//! What every command does before its work: wait for Kafka and each Redis
//! server (readiness says which one is missing meanwhile), refuse what
//! retrying cannot fix ([`checks`]: permissions, the same server on both
//! sides, a record size Kafka cannot carry), and set up what the roles
//! share (the source epoch, the source reader). Every wait ends when
//! its `stop` fires ([`redmirror_telemetry::wait::Stopped`]).

pub mod checks;

use anyhow::Context as _;
use redmirror_config::{Brokers, Config, RedisEndpoint};
use redmirror_kafka::{EmbeddedBroker, Kafka};
use redmirror_redis::epoch::{EpochReader, SourceEpoch};
use redmirror_redis::source::SourceReader;
use redmirror_telemetry::wait::until_up;
use redmirror_telemetry::{Component, Health};
use tokio_util::sync::CancellationToken;

pub use checks::{distinct_servers, is_refusal, permissions, Refusal};

/// Connects to a Redis server once it is up, with `component` not ready
/// until then.
pub async fn connect_when_up(
    health: &Health,
    component: Component,
    endpoint: &redmirror_config::RedisEndpoint,
    stop: &CancellationToken,
) -> anyhow::Result<fred::prelude::Client> {
    health.register(component);
    let what = format!("{} ({})", component.for_people(), component.setting());
    let c = until_up(
        &what,
        stop,
        || async { Ok(redmirror_redis::connect(endpoint, component.name()).await?) },
        redis_retryable,
    )
    .await?;
    health.set(component, true);
    Ok(c)
}

/// A Kafka set-up error worth retrying: the broker is unreachable or
/// timing out (not a bad client setting).
pub fn kafka_retryable(e: &anyhow::Error) -> bool {
    redmirror_kafka::retryable_in(e.chain())
}

/// A Redis connection error worth retrying: the server is down, refusing,
/// loading or timing out; not bad credentials, a bad URL or TLS set-up.
pub fn redis_retryable(e: &anyhow::Error) -> bool {
    redmirror_redis::retryable_in(e.chain())
}

/// Starts Kafka: the embedded broker or the configured one, with the topics.
pub async fn kafka(config: &Config, brokers: &Brokers) -> anyhow::Result<(Kafka, Option<EmbeddedBroker>)> {
    redmirror_kafka::topics::connect(config, brokers)
        .await
        .context("preparing the Kafka topics")
}

/// Sets the largest record Kafka takes on the change topic (see
/// [`redmirror_kafka::topics::RecordLimit`]); refuses (exit 2) a
/// `REDMIRROR_MAX_FLOW_BYTES` over it ([`checks`],
/// which `check` runs too).
pub async fn record_limit(config: &mut Config, kafka: &Kafka, stop: &CancellationToken) -> anyhow::Result<()> {
    let limit = until_up(
        "Kafka (REDMIRROR_KAFKA_BROKERS), for the change topic's max.message.bytes",
        stop,
        || checks::record_limit(config, kafka),
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
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    until_up(
        "the source (REDMIRROR_SOURCE_URL)",
        stop,
        || checks::permissions(config, endpoint),
        redis_retryable,
    )
    .await
}

/// The source epoch shared through the destination (waited for like the
/// destination itself), or one kept in memory when there is no destination.
pub async fn source_epoch(
    config: &Config,
    dest: Option<&fred::prelude::Client>,
    stop: &CancellationToken,
) -> anyhow::Result<SourceEpoch> {
    match dest {
        Some(d) => {
            let key = config.keys.source_epoch_key();
            until_up(
                "the destination (REDMIRROR_DEST_URL), for the source epoch",
                stop,
                || async { Ok(redmirror_state::epoch::load(d.clone(), key.clone()).await?) },
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
pub fn source_reader(
    source: &RedisEndpoint,
    config: &Config,
    epoch: &SourceEpoch,
    sequential: bool,
) -> anyhow::Result<SourceReader> {
    Ok(SourceReader::new(
        source,
        config.keys.clone(),
        EpochReader::new(epoch.clone(), sequential),
    )?)
}
