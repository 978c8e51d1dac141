//! Apply's view of its consumer lag (end of each partition minus the
//! group's committed offset, read with [`redmirror_kafka::offsets`]): the
//! lag metric, readiness when it cannot be measured, and the latest
//! measurement shared with the status endpoint and the stall watch.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redmirror_kafka::{offsets, Kafka};
use redmirror_telemetry::errors::Chain;
use redmirror_telemetry::metrics as m;
use redmirror_telemetry::{Component, Health};
use tokio_util::sync::CancellationToken;

/// Lag (end offset minus committed offset; everything when nothing is
/// committed) and committed offsets per partition, now.
pub fn measure(kafka: &Kafka, group: &str, topic: &str) -> Result<Measured, redmirror_kafka::Error> {
    let ends = offsets::end_offsets(kafka, topic)?;
    let committed = offsets::committed(kafka, group, topic)?;
    Ok(Measured {
        per_partition: offsets::lag(&ends, &committed),
        committed,
        at: Some(Instant::now()),
    })
}

/// A lag measurement: per partition, the group's committed offsets, and
/// when it was taken.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    /// Lag per partition.
    pub per_partition: BTreeMap<i32, i64>,
    /// The group's committed offset per partition (none: nothing committed).
    pub committed: BTreeMap<i32, i64>,
    /// When it was measured (`None`: never).
    pub at: Option<Instant>,
}

impl Measured {
    /// Whether this was measured after `since`.
    pub fn fresh_after(&self, since: Instant) -> bool {
        self.at.is_some_and(|at| at > since)
    }

    /// Events not yet committed on these partitions (all of them when
    /// `partitions` is `None`).
    pub fn unread(&self, partitions: Option<&[i32]>) -> i64 {
        self.per_partition
            .iter()
            .filter(|(p, _)| partitions.is_none_or(|ps| ps.contains(p)))
            .map(|(_, l)| l)
            .sum()
    }
}

/// Latest lag, shared with the status endpoint and apply's stall watch.
pub type SharedLag = std::sync::Arc<std::sync::Mutex<Measured>>;

/// Refreshes `redmirror_consumer_lag_messages{partition}` every `every` until shutdown.
pub async fn track(
    kafka: Kafka,
    group: String,
    topic: String,
    every: Duration,
    shared: SharedLag,
    health: Health,
    shutdown: CancellationToken,
) {
    // Failed measurements in a row, and the reason given to readiness.
    let mut failed = 0u32;
    loop {
        let (k, g, t) = (kafka.clone(), group.clone(), topic.clone());
        match tokio::task::spawn_blocking(move || measure(&k, &g, &t)).await {
            Ok(Ok(l)) => {
                for (p, v) in &l.per_partition {
                    metrics::gauge!(m::CONSUMER_LAG, "partition" => p.to_string()).set(*v as f64);
                }
                *shared.lock().expect("lag lock") = l;
                failed = 0;
                health.set_up_if_down_by(Component::Kafka, LAG_CHECK);
            }
            Ok(Err(e)) => {
                failed += 1;
                tracing::debug!(error = %Chain(&e), failed, "Lag not measured.");
                // A broker that takes connections but cannot say where its
                // partitions end (no leader, a coordinator that never
                // loads) also stops apply: readiness says so.
                if failed >= UNMEASURED_DOWN {
                    let reason = format!(
                        "the end offsets and committed offsets of {topic} cannot be read ({} failures in a row): {}",
                        failed,
                        Chain(&e)
                    );
                    health.set_down_by(Component::Kafka, LAG_CHECK, &reason);
                }
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// The check name lag tracking marks Kafka down under.
const LAG_CHECK: &str = "lag";

/// Failed lag measurements in a row that mark Kafka down.
const UNMEASURED_DOWN: u32 = 3;
