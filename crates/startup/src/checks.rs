//! The start-up validations that need the servers, shared by `run` (and
//! every role) and `check` (SPEC section 7: `check` refuses everything
//! `run` would refuse at start). Each is one function both call: `run`
//! waits for the server behind it, `check` gives it a deadline; a
//! [`Refusal`] is exit 2 for both.

use redmirror_config::{Config, RedisEndpoint};
use redmirror_kafka::topics::RecordLimit;
use redmirror_kafka::Kafka;

/// A bad-configuration failure found at start-up (exit 2): the message
/// names the setting and the fix.
#[derive(Debug)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// Refuses a `REDMIRROR_MAX_FLOW_BYTES` over what Kafka carries (`limit`);
/// else the largest record Kafka takes, for `rules.max_record_bytes`.
pub fn check_record_limit(config: &Config, limit: RecordLimit) -> Result<usize, Refusal> {
    let mut rules = config.rules.clone();
    limit.apply_to(&mut rules, &config.topic).map_err(Refusal)?;
    Ok(rules.max_record_bytes)
}

/// Reads the change topic's record limit for this producer and checks
/// `REDMIRROR_MAX_FLOW_BYTES` against it ([`check_record_limit`]); a
/// missing topic (`check` before the first start) is judged by the
/// producer's limit alone.
pub async fn record_limit(config: &Config, kafka: &Kafka) -> anyhow::Result<usize> {
    let limit = redmirror_kafka::topics::record_limit(kafka, &config.topic).await?;
    Ok(check_record_limit(config, limit)?)
}

/// The same check for a change topic that does not exist yet.
pub fn record_limit_without_topic(config: &Config, kafka: &Kafka) -> Result<usize, Refusal> {
    check_record_limit(
        config,
        RecordLimit {
            producer: kafka.producer_max_message_bytes(),
            topic: None,
        },
    )
}

/// Refuses when the source user lacks a permission capture or reconcile
/// needs, with the `ACL SETUSER` line that grants it.
pub async fn permissions(config: &Config, endpoint: &RedisEndpoint) -> anyhow::Result<()> {
    match redmirror_redis::access::check_source(endpoint, &config.keys).await? {
        Some(m) => Err(Refusal(m.to_string()).into()),
        None => Ok(()),
    }
}

/// Refuses when source and destination are the same server (same run_id).
pub async fn distinct_servers(source: &fred::prelude::Client, dest: &fred::prelude::Client) -> anyhow::Result<()> {
    match redmirror_redis::same_server(source, dest).await? {
        Some(why) => Err(Refusal(why.into()).into()),
        None => Ok(()),
    }
}

/// True when `e` is a [`Refusal`] (exit 2).
pub fn is_refusal(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Refusal>().is_some()
}
