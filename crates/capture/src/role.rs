//! Capture as a process runs it: only on the holder of the capture lease,
//! with its gaps signalled to the reconciler through the destination; and
//! the on-demand resync of named flows.

use bytes::Bytes;
use redmirror_config::RedisEndpoint;
use redmirror_core::event::Origin;
use redmirror_core::rules::Decision;
use redmirror_core::MirrorRules;
use redmirror_kafka::Publisher;
use redmirror_redis::source::SourceReader;
use redmirror_state::lease::{run_while_leased, Lease, LeasedRole};
use redmirror_state::signal::GapScope;
use redmirror_state::signal::GapSignal;
use redmirror_telemetry::Health;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{CaptureError, CaptureOptions, ProgressReport};

/// The capture role of a process.
pub struct Leased {
    /// Capture settings.
    pub opts: CaptureOptions,
    /// The change topic's producer.
    pub publisher: Publisher,
    /// Readiness.
    pub health: Health,
    /// The capture lease; `None` without a destination (run one capture only).
    pub lease: Option<Lease>,
    /// Where gaps are signalled for the reconciler; `None` without a destination.
    pub gaps: Option<GapSignal>,
    /// Where progress is reported for the reconciler's barrier.
    pub progress: Option<ProgressReport>,
}

impl Leased {
    /// Runs capture while this instance holds the capture lease (always,
    /// without one), until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), CaptureError> {
        let lease = self.lease.clone();
        run_while_leased(lease.as_ref(), &mut self, &shutdown).await
    }
}

impl LeasedRole for Leased {
    type Error = CaptureError;

    async fn run(&mut self, active: CancellationToken) -> Result<(), CaptureError> {
        let (gap_tx, mut gap_rx) = mpsc::unbounded_channel::<crate::Gap>();
        let signal = self.gaps.clone();
        let forward = tokio::spawn(async move {
            // Gaps that queued while the previous signal was written are
            // one signal: the pass it asks for covers them all.
            while let Some(g) = gap_rx.recv().await {
                tracing::debug!(gap = ?g, "Capture gap.");
                let mut scope = g.scope();
                while let Ok(more) = gap_rx.try_recv() {
                    tracing::debug!(gap = ?more, "Capture gap.");
                    scope = merge(scope, more.scope());
                }
                if let Some(s) = &signal {
                    s.signal_scope(&scope).await;
                }
            }
        });
        let result = crate::run(
            self.opts.clone(),
            self.publisher.clone(),
            self.health.clone(),
            gap_tx,
            self.progress.clone(),
            active,
        )
        .await;
        let _ = forward.await;
        result
    }
}

/// One scope covering both: the whole keyspace if either is, else the
/// slots of both.
fn merge(a: GapScope, b: GapScope) -> GapScope {
    match (a, b) {
        (GapScope::Slots(mut x), GapScope::Slots(y)) => {
            x.extend(y);
            x.sort_unstable();
            x.dedup();
            GapScope::Slots(x)
        }
        _ => GapScope::Whole,
    }
}

/// Why a resync did not publish every flow it was asked for.
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    /// The source could not be read (retryable errors are waited out first).
    #[error("reading the flows from the source")]
    Read(#[source] anyhow::Error),
    /// Kafka refused the event.
    #[error(transparent)]
    Publish(#[from] redmirror_kafka::Error),
    /// The flow's event would be larger than Kafka takes.
    #[error("flow {flow} is {bytes} bytes, over {which} ({limit} bytes); not published")]
    TooLarge {
        /// The flow id, as text.
        flow: String,
        /// Its event's size.
        bytes: usize,
        /// The limit it is over.
        limit: usize,
        /// Which setting that limit is.
        which: &'static str,
    },
}

/// Publishes a fresh snapshot event for each flow (origin `resync`), read
/// in the source epoch; waits for a source that is down, until `stop`.
/// Returns how many events were published.
pub async fn resync(
    rules: &MirrorRules,
    endpoint: &RedisEndpoint,
    reader: &SourceReader,
    publisher: &Publisher,
    ids: &[Bytes],
    stop: &tokio_util::sync::CancellationToken,
) -> Result<usize, ResyncError> {
    let read = redmirror_telemetry::wait::until_up(
        "the source (REDMIRROR_SOURCE_URL), to read the flows to resync",
        stop,
        || async {
            Ok(reader
                .read(ids)
                .await
                .map_err(|e| redmirror_redis::RedisError::new(endpoint, e))?)
        },
        |e| redmirror_redis::retryable_in(e.chain()),
    )
    .await
    .map_err(ResyncError::Read)?;
    let mut n = 0;
    for redmirror_redis::source::ReadFlow { id, state, order } in read.flows {
        match rules.decide(id.clone(), state, order, Origin::Resync, "resync") {
            Decision::Publish(ev) => {
                publisher.publish(&ev).await?;
                n += 1;
            }
            Decision::TooLarge { bytes, limit, which } => {
                return Err(ResyncError::TooLarge {
                    flow: redmirror_core::text::lossy(&id),
                    bytes,
                    limit,
                    which,
                })
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_gaps_merge_into_one_scope() {
        assert_eq!(
            merge(GapScope::Slots(vec![3, 1]), GapScope::Slots(vec![1, 2])),
            GapScope::Slots(vec![1, 2, 3])
        );
        assert_eq!(merge(GapScope::Slots(vec![1]), GapScope::Whole), GapScope::Whole);
        assert_eq!(merge(GapScope::Whole, GapScope::Slots(vec![1])), GapScope::Whole);
    }
}
