//! Leases in the destination Redis, and running a role only while its
//! lease is held ([`run_while_leased`]).

use std::future::Future;
use std::time::Duration;

use redmirror_core::{KeyLayout, LeaseName};

use crate::lease_script::{self, Held, LeaseArgs, RELEASE, RENEW};
use fred::prelude::*;
use fred::types::Value;
use redmirror_redis::Script;
use tokio_util::sync::CancellationToken;

/// A named lease: `SET key holder NX PX ttl`; renewed while held.
#[derive(Clone, Debug)]
pub struct Lease {
    client: Client,
    key: String,
    name: LeaseName,
    holder: String,
    ttl: Duration,
    renew: Script,
    release: Script,
}

impl Lease {
    /// The lease `name` under `keys`' state prefix, held for `ttl` between
    /// renewals.
    pub fn new(client: Client, name: LeaseName, keys: &KeyLayout, ttl: Duration) -> Self {
        let holder = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
            std::process::id(),
            rand::random::<u32>()
        );
        Lease {
            client,
            key: keys.lease_key(name),
            name,
            holder,
            ttl,
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
        }
    }

    /// This instance's holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Which lease this is.
    pub fn name(&self) -> LeaseName {
        self.name
    }

    /// Tries to take the lease once. `Ok(true)` when this instance holds it.
    pub async fn try_acquire(&self) -> Result<bool, fred::error::Error> {
        let r: Value = self
            .client
            .custom(
                fred::types::CustomCommand::new_static("SET", fred::types::ClusterHash::FirstKey, false),
                vec![
                    Value::from(self.key.as_str()),
                    Value::from(self.holder.as_str()),
                    Value::from("NX"),
                    Value::from("PX"),
                    Value::from(self.ttl.as_millis() as i64),
                ],
            )
            .await?;
        if !r.is_null() {
            self.set_gauge(true);
            return Ok(true);
        }
        // Already ours (after a restart of the loop)?
        let cur: Option<String> = self.client.get(&self.key).await?;
        Ok(cur.as_deref() == Some(self.holder.as_str()))
    }

    /// Extends the lease. `Ok(false)`: someone else holds it now.
    pub async fn renew(&self) -> Result<bool, fred::error::Error> {
        let held = lease_script::renew(&self.renew, &self.client, self.args(), self.ttl).await? == Held::Yes;
        self.set_gauge(held);
        Ok(held)
    }

    /// Gives the lease up (if held).
    pub async fn release(&self) {
        let _ = lease_script::release(&self.release, &self.client, self.args()).await;
        self.set_gauge(false);
    }

    /// The lease as `GET /v1/status` shows it: `{"holder", "held_by_me",
    /// "me"}`, with `holder` null when it cannot be read within `within`.
    pub async fn status(&self, within: Duration) -> redmirror_api::LeaseStatus {
        let holder = tokio::time::timeout(within, self.current_holder())
            .await
            .unwrap_or_default();
        redmirror_api::LeaseStatus {
            held_by_me: holder.as_deref() == Some(self.holder()),
            holder,
            me: self.holder().to_string(),
        }
    }

    /// Current holder, if any.
    pub async fn current_holder(&self) -> Option<String> {
        self.client.get(&self.key).await.ok().flatten()
    }

    /// Waits until this instance holds the lease (retrying every third of
    /// the TTL). `None` when `stop` fired first.
    pub async fn acquire(&self, stop: &CancellationToken) -> Option<()> {
        let mut logged = false;
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, holder = %self.holder, "Lease acquired.");
                    return Some(());
                }
                Ok(false) => {
                    if !logged {
                        tracing::info!(lease = %self.name, "Another instance holds the lease; standing by.");
                        logged = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %redmirror_redis::describe(&e), "Lease not acquired: the destination failed; retrying (check REDMIRROR_DEST_URL).")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(self.ttl / 3) => {}
            }
        }
    }

    /// Renews every third of the TTL until `stop`, or until the lease is
    /// lost, which cancels `lost`: another holder has it, or no renewal was
    /// confirmed within the TTL (less a tenth, for clock rates and the time
    /// the last reply took). The second is self-fencing: a holder that
    /// cannot reach the destination stops its role by the time the lease
    /// may have expired there and another instance may have taken it.
    pub async fn keep(&self, stop: CancellationToken, lost: CancellationToken) {
        let fence_after = self.ttl - self.ttl / 10;
        // Conservative: the lease was set (acquired or renewed) just before.
        let mut confirmed = tokio::time::Instant::now();
        loop {
            let deadline = confirmed + fence_after;
            let wake = (tokio::time::Instant::now() + self.ttl / 3).min(deadline);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(wake) => {}
            }
            let sent = tokio::time::Instant::now();
            let renewed = if sent >= deadline {
                None
            } else {
                tokio::time::timeout_at(deadline, self.renew()).await.ok()
            };
            match renewed {
                Some(Ok(true)) => confirmed = sent,
                Some(Ok(false)) => {
                    tracing::warn!(lease = %self.name, "Lease lost to another instance.");
                    lost.cancel();
                    return;
                }
                Some(Err(e)) => {
                    tracing::warn!(lease = %self.name, error = %redmirror_redis::describe(&e), "Lease renewal failed (destination error); retrying until the lease's TTL runs out (check REDMIRROR_DEST_URL).")
                }
                None => {
                    tracing::warn!(
                        lease = %self.name,
                        ttl = ?self.ttl,
                        "No lease renewal confirmed within the lease's TTL: stopping the role, since the lease may \
                         have expired and another instance may hold it (check REDMIRROR_DEST_URL)."
                    );
                    self.set_gauge(false);
                    lost.cancel();
                    return;
                }
            }
        }
    }

    fn args(&self) -> LeaseArgs<'_> {
        LeaseArgs {
            key: &self.key,
            holder: &self.holder,
        }
    }

    fn set_gauge(&self, held: bool) {
        metrics::gauge!(redmirror_telemetry::metrics::LEASE_HELD, "lease" => self.name.name()).set(if held {
            1.0
        } else {
            0.0
        });
    }
}

/// A role that runs on one instance at a time: the holder of its lease.
pub trait LeasedRole {
    /// Why the role failed (ends [`run_while_leased`]).
    type Error;

    /// Does the role's work while this instance holds the lease. `active`
    /// fires when the lease is lost or the process stops; return then.
    fn run(&mut self, active: CancellationToken) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Called while another instance holds the lease, raced against the
    /// next attempt to take it: it may return after handling one thing (the
    /// next attempt follows at once) or never. By default it waits forever.
    fn standby(&mut self, lease: &Lease) -> impl Future<Output = ()> + Send {
        let _ = lease;
        std::future::pending()
    }
}

/// Runs `role` whenever this instance holds `lease`, until `shutdown`:
/// stands by while another instance holds it, renews it while the role
/// runs, stops the role when it is lost (and stands by again), and hands
/// it over at shutdown. With no lease (no destination to keep one in) the
/// role runs once, unguarded.
///
/// Returns the role's error, or `Ok` at shutdown, or `Ok` when the role
/// returned by itself without a lease to lose (the caller decides whether
/// that is a failure).
pub async fn run_while_leased<R: LeasedRole>(
    lease: Option<&Lease>,
    role: &mut R,
    shutdown: &CancellationToken,
) -> Result<(), R::Error> {
    loop {
        if let Some(l) = lease {
            let acquired = tokio::select! {
                r = l.acquire(shutdown) => r.is_some(),
                _ = role.standby(l) => continue,
            };
            if !acquired {
                return Ok(());
            }
        }
        let active = shutdown.child_token();
        let stop_keep = CancellationToken::new();
        let keeper = lease.cloned().map(|l| {
            let (s, a) = (stop_keep.clone(), active.clone());
            tokio::spawn(async move { l.keep(s, a).await })
        });
        let result = role.run(active).await;
        stop_keep.cancel();
        if let Some(k) = keeper {
            let _ = k.await;
        }
        result?;
        match lease {
            Some(l) if shutdown.is_cancelled() => {
                l.release().await;
                return Ok(());
            }
            Some(l) => tracing::warn!(lease = %l.name, "The {} lease was lost: standing by.", l.name),
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redmirror_config::{RedisEndpoint, TlsFiles};
    use redmirror_testkit::RedisServer;

    /// A holder that cannot reach the destination stops within the TTL
    /// (the lease may have expired there and been taken by another).
    #[tokio::test]
    async fn a_holder_that_cannot_renew_stops_within_the_ttl() {
        let mut server = RedisServer::start();
        let endpoint = RedisEndpoint {
            url: server.url(),
            tls: TlsFiles::default(),
        };
        let client = redmirror_redis::connect(&endpoint, "destination")
            .await
            .expect("connect");
        let ttl = Duration::from_millis(1500);
        let lease = Lease::new(client, LeaseName::Capture, &KeyLayout::default(), ttl);
        assert!(lease.try_acquire().await.unwrap());
        let (stop, lost) = (CancellationToken::new(), CancellationToken::new());
        let keeper = tokio::spawn({
            let (l, s, x) = (lease.clone(), stop.clone(), lost.clone());
            async move { l.keep(s, x).await }
        });
        // Renewed while the destination answers.
        tokio::time::sleep(ttl * 2).await;
        assert!(!lost.is_cancelled(), "lost while renewals succeed");
        server.stop();
        let stopped = tokio::time::Instant::now();
        tokio::time::timeout(ttl * 3, lost.cancelled())
            .await
            .expect("the holder kept running past its TTL without a confirmed renewal");
        assert!(
            stopped.elapsed() <= ttl,
            "stopped {:?} after the destination went",
            stopped.elapsed()
        );
        keeper.await.unwrap();
        stop.cancel();
    }
}
