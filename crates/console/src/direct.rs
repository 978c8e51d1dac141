//! Reading the mirror's state straight from Kafka and the destination,
//! with the configured settings, when no process is asked: the leases,
//! the source epoch, the hold, the last reconcile report, the gap counter
//! and the live apply instances (all under `redmirror:` on the
//! destination), and the offsets ([`crate::offsets`]).

use std::time::Duration;

use fred::interfaces::{HashesInterface, KeysInterface};
use fred::prelude::Client;
use redmirror_config::Config;
use redmirror_core::LeaseName;
use redmirror_state::hold::Hold;

use crate::offsets::Offsets;

/// How long connecting to the destination, or one Kafka call, may take.
pub const DIRECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the destination holds about the mirror.
#[derive(Debug, Clone)]
pub struct DestState {
    /// Lease name → holder (`None`: nobody holds it).
    pub leases: Vec<(String, Option<String>)>,
    /// The shared source epoch (`None`: never written).
    pub epoch: Option<u64>,
    /// The hold, or why it cannot be read (a malformed hold).
    pub hold: Result<Option<Hold>, String>,
    /// The last reconcile report (JSON as stored).
    pub report: Option<serde_json::Value>,
    /// The capture gap counter.
    pub gaps: u64,
    /// Apply instances that announced themselves in the last 3 s.
    pub apply_instances: usize,
}

/// One direct look.
#[derive(Debug, Clone)]
pub struct Direct {
    /// The destination's state, or why it cannot be read.
    pub dest: Result<DestState, DestError>,
    /// Kafka's offsets, or why they cannot be read.
    pub kafka: Result<Offsets, String>,
}

/// Why the destination's state could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestError {
    /// No connection (refused, timed out, bad credentials...).
    #[error("unreachable ({0})")]
    Unreachable(String),
    /// Connected, but a read failed (a permission the user lacks, a key of
    /// the wrong type).
    #[error("reading redmirror's keys failed ({0})")]
    Read(String),
}

/// Connects to the destination (bounded by [`DIRECT_TIMEOUT`]).
pub async fn connect(config: &Config) -> Result<Client, DestError> {
    let Some(ep) = &config.dest else {
        return Err(DestError::Unreachable("REDMIRROR_DEST_URL is not set".into()));
    };
    match tokio::time::timeout(DIRECT_TIMEOUT, redmirror_redis::connect(ep, "destination")).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(DestError::Unreachable(e.source.to_string())),
        Err(_) => Err(DestError::Unreachable(format!(
            "no answer within {}s",
            DIRECT_TIMEOUT.as_secs()
        ))),
    }
}

/// Reads both sides at the same time. `dest` is a destination client
/// kept from an earlier look (`top`); without one, one is connected. The
/// client comes back for the next look, unless the destination failed.
pub async fn look(config: &Config, dest: Option<Client>) -> (Direct, Option<Client>) {
    let kafka = {
        let k = redmirror_kafka::Kafka::new(
            config
                .kafka_brokers
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            config.kafka_properties.clone(),
        );
        let (topic, dlq, group) = (config.topic.clone(), config.dlq_topic(), config.group_id.clone());
        async move {
            tokio::task::spawn_blocking(move || crate::offsets::read(&k, &topic, &dlq, &group, DIRECT_TIMEOUT))
                .await
                .unwrap_or_else(|e| Err(format!("the Kafka reader failed: {e}")))
        }
    };
    let dest = async {
        let client = match dest {
            Some(c) => c,
            None => connect(config).await?,
        };
        let state = dest_state(config, &client).await?;
        Ok::<_, DestError>((state, client))
    };
    let (dest, kafka) = tokio::join!(dest, kafka);
    match dest {
        Ok((state, client)) => (Direct { dest: Ok(state), kafka }, Some(client)),
        Err(e) => (Direct { dest: Err(e), kafka }, None),
    }
}

async fn dest_state(config: &Config, c: &Client) -> Result<DestState, DestError> {
    let read = async {
        let keys = &config.keys;
        let mut leases = Vec::new();
        for name in LeaseName::ALL {
            let holder: Option<String> = c.get(keys.lease_key(name)).await?;
            leases.push((name.to_string(), holder));
        }
        let epoch: Option<String> = c.hget(keys.source_epoch_key(), "epoch").await?;
        let gaps: Option<String> = c.get(keys.gap_key()).await?;
        let hold = match redmirror_state::hold::read(c, &keys.hold_key()).await {
            Ok(h) => Ok(h),
            Err(redmirror_state::hold::HoldError::Redis(e)) => return Err(e),
            Err(e) => Err(e.to_string()),
        };
        let report = redmirror_reconcile::service::stored_report(c, &keys.report_key()).await;
        let apply = redmirror_state::members::live_members(c, &keys.apply_members_key()).await?;
        Ok::<_, fred::error::Error>(DestState {
            leases,
            epoch: epoch.and_then(|e| e.parse().ok()),
            hold,
            report,
            gaps: gaps.and_then(|g| g.parse().ok()).unwrap_or(0),
            apply_instances: apply.len(),
        })
    };
    match tokio::time::timeout(DIRECT_TIMEOUT, read).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) if matches!(e.kind(), fred::error::ErrorKind::IO | fred::error::ErrorKind::Timeout) => {
            Err(DestError::Unreachable(redmirror_redis::describe(&e)))
        }
        Ok(Err(e)) => Err(DestError::Read(redmirror_redis::describe(&e))),
        Err(_) => Err(DestError::Unreachable(format!(
            "no answer within {}s",
            DIRECT_TIMEOUT.as_secs()
        ))),
    }
}
