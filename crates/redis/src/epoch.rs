//! The source epoch (SPEC section 2): the first half of every event's
//! [`Order`].
//!
//! It moves forward when a read finds
//! - a different server (`run_id` changed: a failover, a restart), or
//! - the source clock behind: for a reader whose reads are sequential
//!   (capture), any step back between two of its own reads; for readers
//!   that run side by side (the phases of a reconcile pass, another
//!   process), more than [`BEHIND_TOLERANCE`] behind the latest time any
//!   reader saw, because replies of concurrent reads arrive in any order.
//!
//! One [`SourceEpoch`] per process is shared by capture, reconcile and
//! resync. Processes agree through a hash on the destination
//! ([`redmirror_core::KeyLayout::source_epoch_key`]): loaded at start,
//! written at once after a bump and every second otherwise, and a newer
//! epoch found there is adopted. Without a destination (capture alone) the
//! epoch lives in memory.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redmirror_core::Order;
use redmirror_telemetry::metrics as m;
use tokio_util::sync::CancellationToken;

/// How far behind the latest time seen a concurrent reader's time may be
/// before it counts as a clock step back.
pub const BEHIND_TOLERANCE: Duration = Duration::from_secs(1);
/// How often the shared epoch is written (and a newer one looked for).
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How often a reader asks the server for its `run_id` with a read.
pub const IDENTITY_EVERY: Duration = Duration::from_secs(1);

/// The epoch as processes share it: the number, the server it names, and
/// the latest source time read in it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Shared {
    /// The epoch.
    pub epoch: u64,
    /// The source server's `run_id` in it, if known.
    pub run_id: Option<String>,
    /// The latest source time read in it (µs).
    pub latest_us: i64,
}

/// Where processes share the epoch. [`EpochStore::merge`] gives the store
/// this process's epoch and returns what the store keeps after it: a newer
/// stored epoch wins (and is adopted), else the store takes ours.
pub trait EpochStore: std::fmt::Debug + Send + Sync {
    /// Merges `mine` into the store; returns the stored epoch after it.
    fn merge(&self, mine: Shared) -> futures::future::BoxFuture<'_, Result<Shared, fred::error::Error>>;
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct State {
    epoch: u64,
    run_id: Option<String>,
    /// The latest source time read in this epoch.
    latest_us: i64,
    /// The same two, per master of a cluster source (by address): each
    /// master has its own clock and `run_id`. Kept in memory only.
    shards: std::collections::HashMap<String, (Option<String>, i64)>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    store: Option<Box<dyn EpochStore>>,
    bumped: tokio::sync::Notify,
}

/// The process's view of the source epoch (see the module docs).
#[derive(Debug, Clone)]
pub struct SourceEpoch(Arc<Inner>);

impl SourceEpoch {
    /// An epoch kept in memory only, starting at 0.
    pub fn in_memory() -> Self {
        Self::with(State::default(), None)
    }

    /// The epoch `shared` (as loaded from `store`), kept in step with
    /// `store` by [`SourceEpoch::sync`].
    pub fn shared(shared: Shared, store: Box<dyn EpochStore>) -> Self {
        tracing::debug!(epoch = shared.epoch, run_id = ?shared.run_id, "Loaded the source epoch.");
        let state = State {
            epoch: shared.epoch,
            run_id: shared.run_id,
            latest_us: shared.latest_us,
            shards: Default::default(),
        };
        Self::with(state, Some(store))
    }

    fn with(state: State, store: Option<Box<dyn EpochStore>>) -> Self {
        metrics::gauge!(m::SOURCE_EPOCH).set(state.epoch as f64);
        SourceEpoch(Arc::new(Inner {
            state: Mutex::new(state),
            store,
            bumped: tokio::sync::Notify::new(),
        }))
    }

    /// The current epoch.
    pub fn current(&self) -> u64 {
        self.0.state.lock().expect("epoch lock").epoch
    }

    /// The order of a read at `time_us` (with the server's `run_id` when it
    /// was asked for) from `shard` (a cluster master's address; `None` for
    /// a standalone source); `own` is the reader's previous read, for a
    /// reader whose reads are sequential. Moves the epoch forward when the
    /// read shows a change of source (see the module docs).
    fn observe(&self, shard: Option<&str>, run_id: Option<&str>, time_us: i64, own: Option<Order>) -> Order {
        let mut guard = self.0.state.lock().expect("epoch lock");
        let State {
            epoch,
            run_id: main_run_id,
            latest_us: main_latest,
            shards,
        } = &mut *guard;
        let (known, latest) = match shard {
            None => (main_run_id, main_latest),
            Some(k) => {
                let (r, l) = shards.entry(k.to_string()).or_insert((None, time_us));
                (r, l)
            }
        };
        let tolerance = BEHIND_TOLERANCE.as_micros() as i64;
        let why = match (run_id, known.as_deref()) {
            (Some(new), Some(old)) if new != old => Some(format!("the source server changed (run_id {old} -> {new})")),
            _ => match own {
                Some(prev) if prev.epoch == *epoch && time_us < prev.time_us => Some(format!(
                    "the source clock went back {} ms between two reads",
                    (prev.time_us - time_us) / 1000
                )),
                _ if time_us < latest.saturating_sub(tolerance) => Some(format!(
                    "the source clock is {} ms behind the latest time read from it",
                    (*latest - time_us) / 1000
                )),
                _ => None,
            },
        };
        if let Some(why) = why {
            *latest = time_us;
            // A clock step seen without the server's identity: the next
            // identity read names the server of this epoch (a failover shows
            // both, and is one new epoch, not two).
            if run_id.is_none() {
                *known = None;
            }
            Self::bumped(epoch, &why, shard);
            self.0.bumped.notify_one();
        } else {
            *latest = (*latest).max(time_us);
        }
        if let Some(r) = run_id {
            if known.as_deref() != Some(r) {
                *known = Some(r.to_string());
            }
        }
        Order::new(*epoch, time_us)
    }

    fn bumped(epoch: &mut u64, why: &str, shard: Option<&str>) {
        *epoch += 1;
        metrics::gauge!(m::SOURCE_EPOCH).set(*epoch as f64);
        tracing::warn!(
            epoch = *epoch,
            reason = %why,
            shard = shard.unwrap_or(""),
            "New source epoch: {why}. Changes from now on win over everything applied before, whatever their source times."
        );
    }

    /// Moves the epoch forward for a reason found outside a read: a cluster
    /// source's slots changed master (the new master's clock may be behind
    /// the old one's), or capture started on a cluster source, whose
    /// masters' identities are not kept across restarts.
    pub fn bump(&self, why: &str) {
        let mut s = self.0.state.lock().expect("epoch lock");
        Self::bumped(&mut s.epoch, why, None);
        // Every master's clock starts afresh in the new epoch.
        s.shards.clear();
        drop(s);
        self.0.bumped.notify_one();
    }

    /// Writes this process's epoch to the shared hash and adopts a newer
    /// one found there. Without a destination: nothing to do.
    pub async fn sync(&self) -> Result<(), fred::error::Error> {
        let Some(store) = &self.0.store else {
            return Ok(());
        };
        let mine = {
            let s = self.0.state.lock().expect("epoch lock");
            Shared {
                epoch: s.epoch,
                run_id: s.run_id.clone(),
                latest_us: s.latest_us,
            }
        };
        let Shared {
            epoch,
            run_id,
            latest_us: time_us,
        } = store.merge(mine).await?;
        let run_id = run_id.unwrap_or_default();
        let mut s = self.0.state.lock().expect("epoch lock");
        if epoch > s.epoch {
            tracing::info!(
                from = s.epoch,
                to = epoch,
                "Adopted a newer source epoch found by another process."
            );
            *s = State {
                epoch,
                run_id: Some(run_id).filter(|r| !r.is_empty()),
                latest_us: time_us,
                shards: Default::default(),
            };
            metrics::gauge!(m::SOURCE_EPOCH).set(epoch as f64);
        }
        Ok(())
    }

    /// Syncs every [`SYNC_EVERY`], and at once after a bump, until `stop`.
    pub async fn keep_synced(self, stop: CancellationToken) {
        let mut failing = false;
        loop {
            match self.sync().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("Source epoch written to the destination again.");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %crate::describe(&e), "Cannot write the source epoch to the destination; retrying.");
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.0.bumped.notified() => {}
                _ = tokio::time::sleep(SYNC_EVERY) => {}
            }
        }
    }
}

/// Reads through a [`crate::source::SourceReader`] ordered by this epoch:
/// `sequential` readers (one read at a time, capture) are checked against
/// their own previous read; others against the latest time any reader saw.
#[derive(Debug)]
pub struct EpochReader {
    epoch: SourceEpoch,
    sequential: bool,
    shard: Option<String>,
    own: Mutex<(Option<Order>, Option<Instant>)>,
}

impl EpochReader {
    /// A reader's view of `epoch`.
    pub fn new(epoch: SourceEpoch, sequential: bool) -> Self {
        EpochReader {
            epoch,
            sequential,
            shard: None,
            own: Mutex::new((None, None)),
        }
    }

    /// A reader of one master of a cluster source (its address), whose
    /// clock and `run_id` are its own.
    pub fn for_shard(epoch: SourceEpoch, sequential: bool, shard: String) -> Self {
        EpochReader {
            shard: Some(shard),
            ..Self::new(epoch, sequential)
        }
    }

    /// True for a reader whose reads are sequential.
    pub fn is_sequential(&self) -> bool {
        self.sequential
    }

    /// The shared epoch.
    pub fn epoch(&self) -> &SourceEpoch {
        &self.epoch
    }

    /// True when the next read should also ask for the server's `run_id`.
    pub fn wants_identity(&self) -> bool {
        let g = self.own.lock().expect("epoch reader lock");
        g.1.is_none_or(|at| at.elapsed() >= IDENTITY_EVERY)
    }

    /// The order of a read at `time_us` (see [`SourceEpoch`]).
    pub fn order(&self, run_id: Option<&str>, time_us: i64) -> Order {
        let mut g = self.own.lock().expect("epoch reader lock");
        let own = if self.sequential { g.0 } else { None };
        let order = self.epoch.observe(self.shard.as_deref(), run_id, time_us, own);
        g.0 = Some(order);
        if run_id.is_some() {
            g.1 = Some(Instant::now());
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_US: i64 = 3_600_000_000;
    const T: i64 = 1_764_590_400_000_000;

    #[test]
    fn a_clock_an_hour_behind_after_a_failover_starts_a_new_epoch() {
        let e = SourceEpoch::in_memory();
        let capture = EpochReader::new(e.clone(), true);
        assert_eq!(capture.order(Some("old"), T), Order::new(0, T));
        assert_eq!(capture.order(None, T + 5), Order::new(0, T + 5));
        // The replica took over; its clock is an hour behind.
        let after = capture.order(Some("new"), T - HOUR_US);
        assert_eq!(after, Order::new(1, T - HOUR_US));
        assert!(after > Order::new(0, T + 5), "a later change wins");
        // And its later reads stay in that epoch.
        assert_eq!(capture.order(None, T - HOUR_US + 10), Order::new(1, T - HOUR_US + 10));
        assert_eq!(capture.order(Some("new"), T - HOUR_US + 20).epoch, 1);
    }

    #[test]
    fn a_step_back_on_the_same_server_is_caught_exactly_for_a_sequential_reader() {
        let e = SourceEpoch::in_memory();
        let capture = EpochReader::new(e.clone(), true);
        capture.order(Some("a"), T);
        assert_eq!(capture.order(None, T - 1).epoch, 1, "one microsecond back");
        // Concurrent readers get a tolerance: reply order is not read order.
        let pass = EpochReader::new(e.clone(), false);
        assert_eq!(
            pass.order(None, T - 500_000).epoch,
            1,
            "half a second behind another reader"
        );
        assert_eq!(
            pass.order(None, T - 1 - 2 * BEHIND_TOLERANCE.as_micros() as i64).epoch,
            2
        );
        assert_eq!(e.current(), 2);
    }

    #[test]
    fn a_reader_does_not_bump_again_for_a_step_another_reader_already_counted() {
        let e = SourceEpoch::in_memory();
        let capture = EpochReader::new(e.clone(), true);
        let pass = EpochReader::new(e.clone(), false);
        capture.order(Some("a"), T);
        // The pass sees the server change first.
        assert_eq!(pass.order(Some("b"), T - HOUR_US).epoch, 1);
        // capture's next read is behind its own previous one, but that read
        // was in the old epoch: the step is already counted.
        assert_eq!(capture.order(None, T - HOUR_US + 3).epoch, 1);
    }

    #[test]
    fn a_failover_seen_first_by_its_clock_then_by_its_run_id_is_one_new_epoch() {
        let capture = EpochReader::new(SourceEpoch::in_memory(), true);
        capture.order(Some("old"), T);
        assert_eq!(capture.order(None, T - HOUR_US).epoch, 1, "the clock shows it first");
        assert_eq!(
            capture.order(Some("new"), T - HOUR_US + 5).epoch,
            1,
            "then the run_id: same epoch"
        );
        assert_eq!(
            capture.order(Some("other"), T - HOUR_US + 9).epoch,
            2,
            "a later change of server counts"
        );
    }

    #[test]
    fn masters_of_a_cluster_keep_their_own_clocks() {
        let e = SourceEpoch::in_memory();
        let a = EpochReader::for_shard(e.clone(), true, "a:1".into());
        let b = EpochReader::for_shard(e.clone(), true, "b:2".into());
        assert_eq!(a.order(Some("ra"), T).epoch, 0);
        // Another master, an hour behind: its own clock, not a step back.
        assert_eq!(b.order(Some("rb"), T - HOUR_US).epoch, 0);
        assert_eq!(a.order(None, T + 1).epoch, 0);
        assert_eq!(b.order(None, T - HOUR_US + 1).epoch, 0);
        // A step back on one master still counts.
        assert_eq!(b.order(None, T - 2 * HOUR_US).epoch, 1);
        // As does another server behind a master's address.
        assert_eq!(a.order(Some("ra2"), T + 2).epoch, 2);
        // And a bump from outside (slots changed master).
        e.bump("slots moved");
        assert_eq!(a.order(None, T + 3).epoch, 3);
    }

    #[test]
    fn identity_is_asked_for_on_the_first_read_then_once_a_second() {
        let r = EpochReader::new(SourceEpoch::in_memory(), true);
        assert!(r.wants_identity());
        r.order(Some("a"), T);
        assert!(!r.wants_identity());
    }
}
