//! The keyevent subscription, one session at a time.
//!
//! Keyevent channels (`__keyevent@{db}__:{event}`) carry the key as the
//! message body, so flow ids arrive byte for byte (a keyspace channel name
//! would have to be UTF-8). Every session after the first is a gap. The
//! connection is read directly ([`redmirror_redis::bulk::Subscription`]),
//! so no in-process buffer can overflow and drop notifications.

use std::sync::Arc;
use std::time::Duration;

use redmirror_config::RedisEndpoint;
use redmirror_core::KeyLayout;
use redmirror_redis::cluster::{Cluster, NodeAddr};
use redmirror_telemetry::errors::Chain;
use redmirror_telemetry::metrics as m;
use redmirror_telemetry::{Component, Health};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::pending::{Added, Cause, Pending};
use crate::Gap;
use redmirror_core::backoff::Backoff;

/// How a session ended.
#[derive(Debug)]
enum SessionEnd {
    Shutdown,
    Disconnected(String),
}

/// Runs sessions until `stop`, with backoff between failed attempts (reset
/// after every session that subscribed). `subscribed` is notified after
/// every subscription (the notification setting is checked then). `scope`:
/// the whole source, or one master of a cluster source.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    source: RedisEndpoint,
    scope: Scope,
    keys: KeyLayout,
    pending: Arc<Pending>,
    gaps: mpsc::UnboundedSender<Gap>,
    health: Health,
    subscribed: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut sessions = 0u64;
    let mut retry = Retry::default();
    loop {
        let before = sessions;
        match session(
            &source,
            &scope,
            &keys,
            &pending,
            &gaps,
            &health,
            &subscribed,
            &mut sessions,
            &stop,
        )
        .await
        {
            SessionEnd::Shutdown => return,
            SessionEnd::Disconnected(reason) => {
                health.set(Component::Source, false);
                tracing::warn!(reason = %reason, node = %scope, "Subscription to the source lost; re-subscribing.");
            }
        }
        let delay = retry.next(sessions > before);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// What one subscription follows, and so what its gaps cover.
#[derive(Debug, Clone)]
pub enum Scope {
    /// A standalone source.
    Whole,
    /// One master of a cluster source; `joined`: it became a master (or was
    /// found) after capture started following the cluster.
    Master {
        /// The cluster's map.
        cluster: Arc<Cluster>,
        /// The master.
        addr: NodeAddr,
        /// Found after the start.
        joined: bool,
    },
}

impl Scope {
    fn node(&self) -> Option<&NodeAddr> {
        match self {
            Scope::Whole => None,
            Scope::Master { addr, .. } => Some(addr),
        }
    }

    /// The gap a subscription (`first`: the first of this scope) reports:
    /// the whole keyspace at start and for a standalone source; the
    /// master's slots for a master that joined or re-subscribed.
    fn gap(&self, first: bool) -> Gap {
        match self {
            Scope::Whole if first => Gap::Start,
            Scope::Whole => Gap::Resubscribed,
            Scope::Master { joined: false, .. } if first => Gap::Start,
            Scope::Master { cluster, addr, .. } => Gap::Slots {
                master: addr.to_string(),
                slots: cluster.topology().slots_of(addr).into_iter().collect(),
            },
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Whole => Ok(()),
            Scope::Master { addr, .. } => write!(f, "{addr}"),
        }
    }
}

/// On a cluster source: one subscription per master ([`run`] for each),
/// started and stopped as masters come and go. A master that appears
/// (a failover, a node added) reports its first subscription as a gap of
/// its slots, so what changed there before it was followed is reconciled.
/// Runs until `stop`.
#[allow(clippy::too_many_arguments)]
pub async fn run_cluster(
    cluster: Arc<Cluster>,
    keys: KeyLayout,
    pending: Arc<Pending>,
    gaps: mpsc::UnboundedSender<Gap>,
    health: Health,
    subscribed: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut running: std::collections::HashMap<NodeAddr, (CancellationToken, tokio::task::JoinHandle<()>)> =
        Default::default();
    let mut version = cluster.version();
    let mut joined = false;
    loop {
        let masters: std::collections::HashSet<NodeAddr> =
            cluster.topology().shards.iter().map(|s| s.addr.clone()).collect();
        let gone: Vec<NodeAddr> = running.keys().filter(|a| !masters.contains(*a)).cloned().collect();
        for addr in gone {
            if let Some((token, task)) = running.remove(&addr) {
                tracing::info!(node = %addr, "No longer a master of the source: its subscription stops.");
                token.cancel();
                let _ = task.await;
            }
        }
        for addr in masters {
            if running.contains_key(&addr) {
                continue;
            }
            let token = stop.child_token();
            let task = tokio::spawn(run(
                cluster.endpoint().clone(),
                Scope::Master {
                    cluster: cluster.clone(),
                    addr: addr.clone(),
                    joined,
                },
                keys.clone(),
                pending.clone(),
                gaps.clone(),
                health.clone(),
                subscribed.clone(),
                token.clone(),
            ));
            running.insert(addr, (token, task));
        }
        joined = true;
        tokio::select! {
            _ = stop.cancelled() => break,
            r = version.changed() => if r.is_err() { break },
        }
    }
    for (_, (token, task)) in running {
        token.cancel();
        let _ = task.await;
    }
}

/// Delay before the next subscribe attempt: 100 ms after a session that
/// subscribed (it was healthy, and every moment unsubscribed is a window
/// only the reconciler covers), doubling up to 5 s while attempts fail.
#[derive(Debug)]
struct Retry(Backoff);

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

impl Default for Retry {
    fn default() -> Self {
        Retry(Backoff::new(RETRY_FIRST, RETRY_MAX))
    }
}

impl Retry {
    /// The delay to wait now; `subscribed`: the session that just ended had subscribed.
    fn next(&mut self, subscribed: bool) -> Duration {
        if subscribed {
            self.0.reset();
        }
        self.0.next_delay()
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    source: &RedisEndpoint,
    scope: &Scope,
    keys: &KeyLayout,
    pending: &Pending,
    gaps: &mpsc::UnboundedSender<Gap>,
    health: &Health,
    subscribed: &Notify,
    sessions: &mut u64,
    stop: &CancellationToken,
) -> SessionEnd {
    let prefix = format!("__keyevent@{}__:", source.db());
    let pattern = format!("{prefix}*");
    let bulk = match scope.node() {
        Some(addr) => redmirror_redis::bulk::Bulk::at(source, addr),
        None => redmirror_redis::bulk::Bulk::new(source),
    };
    let attempt = match bulk {
        Ok(bulk) => bulk.psubscribe(pattern.as_bytes()).await,
        Err(e) => return SessionEnd::Disconnected(Chain(&e).to_string()),
    };
    let mut sub = match attempt {
        Ok(sub) => sub,
        Err(e) => return SessionEnd::Disconnected(Chain(&redmirror_redis::RedisError::new(source, e)).to_string()),
    };
    // Subscribed: the source is reachable and followed again, whether or not
    // anything is written (readiness reflects the subscription, not traffic).
    // Anything that changed before now and after the previous subscription (or
    // before start) is unknown: ask for a reconcile pass.
    health.set(Component::Source, true);
    // Notifications may have been lost with the connection (a source
    // restart without them in its config): check the setting now.
    subscribed.notify_one();
    *sessions += 1;
    if *sessions == 1 {
        tracing::info!(pattern = %pattern, node = %scope, "Subscribed to source notifications.");
    }
    scope.gap(*sessions == 1).report(gaps);
    // Per notification: no URL parse and no metric registry lookup; the id
    // is copied only when the flow is new to the pending set.
    let notifications = metrics::counter!(m::CAPTURE_NOTIFICATIONS);
    let coalesced = metrics::counter!(m::CAPTURE_COALESCED);
    let mut on_message = |channel: &[u8], key: &[u8]| {
        let Some(event) = channel.strip_prefix(prefix.as_bytes()) else {
            return;
        };
        let Some(id) = keys.flow_id(key) else { return };
        notifications.increment(1);
        let cause = Cause::of(std::str::from_utf8(event).unwrap_or("other"));
        // A flow refused by a full set is counted by the set: its episode
        // is reported once, when it ends ([`Pending::overflowed`]).
        if pending.add(id, cause) == Added::Coalesced {
            coalesced.increment(1);
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break SessionEnd::Shutdown,
            r = sub.recv(&mut on_message) => {
                if let Err(e) = r {
                    break SessionEnd::Disconnected(e.details().to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_attempts_back_off_to_five_seconds() {
        let mut r = Retry::default();
        let got: Vec<u64> = (0..8).map(|_| r.next(false).as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn every_session_that_subscribed_resets_the_backoff() {
        // A source restarted several times in a row must be followed again
        // within 100 ms of being back: any session that subscribed, however
        // short, resets the backoff.
        let mut r = Retry::default();
        for _ in 0..6 {
            r.next(false);
        }
        assert_eq!(r.next(true), RETRY_FIRST);
        assert_eq!(r.next(false), RETRY_FIRST * 2);
        for _ in 0..6 {
            r.next(false);
        }
        assert_eq!(r.next(true), RETRY_FIRST, "a short healthy session resets too");
    }
}
