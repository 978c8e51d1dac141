//! Bulk reads on either kind of server: one [`Bulk`] for a standalone
//! server, one per master for a Redis Cluster, each key's command sent to
//! the master owning its slot.
//!
//! Whether the server is a cluster is found on first use. A reply that
//! says a key lives elsewhere (`MOVED`, `ASK`, `CLUSTERDOWN`, `TRYAGAIN`)
//! is followed by [`Routed::scatter`]: it reads the map again and runs the
//! read again, a few times; past that it is the caller's error (the pass
//! fails and is retried), and [`Routed::refresh_after`] has read the map
//! again, so the next run is routed right.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fred::error::Error;
use redmirror_config::RedisEndpoint;

use crate::bulk::Bulk;
use crate::cluster::{Cluster, NodeAddr};
use crate::RedisError;

/// Bulk reads routed by slot on a cluster (see the module docs).
#[derive(Debug)]
pub struct Routed {
    endpoint: RedisEndpoint,
    mode: tokio::sync::OnceCell<Mode>,
}

#[derive(Debug)]
enum Mode {
    Single(Arc<Bulk>),
    Cluster {
        cluster: Arc<Cluster>,
        nodes: Mutex<HashMap<NodeAddr, Arc<Bulk>>>,
    },
}

impl Routed {
    /// Reads on `endpoint`; nothing is connected yet.
    pub fn new(endpoint: &RedisEndpoint) -> Result<Self, RedisError> {
        Bulk::new(endpoint)?;
        Ok(Routed {
            endpoint: endpoint.clone(),
            mode: tokio::sync::OnceCell::new(),
        })
    }

    async fn mode(&self) -> Result<&Mode, Error> {
        self.mode
            .get_or_try_init(|| async {
                Ok::<_, RedisError>(match Cluster::detect(&self.endpoint).await? {
                    Some(cluster) => Mode::Cluster {
                        cluster,
                        nodes: Mutex::new(HashMap::new()),
                    },
                    None => Mode::Single(Arc::new(Bulk::new(&self.endpoint)?)),
                })
            })
            .await
            .map_err(|e| e.source.0)
    }

    /// The cluster, when the server is one.
    pub async fn cluster(&self) -> Result<Option<Arc<Cluster>>, Error> {
        Ok(match self.mode().await? {
            Mode::Cluster { cluster, .. } => Some(cluster.clone()),
            Mode::Single(_) => None,
        })
    }

    fn node(
        cluster: &Cluster,
        nodes: &Mutex<HashMap<NodeAddr, Arc<Bulk>>>,
        addr: &NodeAddr,
    ) -> Result<Arc<Bulk>, Error> {
        let mut nodes = nodes.lock().expect("bulk nodes lock");
        if let Some(b) = nodes.get(addr) {
            return Ok(b.clone());
        }
        let b = Arc::new(cluster.bulk(addr).map_err(|e| e.source.0)?);
        nodes.insert(addr.clone(), b.clone());
        Ok(b)
    }

    /// Every master (one connection set each; the server itself when
    /// standalone), for commands over the whole keyspace (`SCAN`).
    pub async fn masters(&self) -> Result<Vec<Arc<Bulk>>, Error> {
        match self.mode().await? {
            Mode::Single(b) => Ok(vec![b.clone()]),
            Mode::Cluster { cluster, nodes } => cluster
                .topology()
                .shards
                .iter()
                .map(|s| Self::node(cluster, nodes, &s.addr))
                .collect(),
        }
    }

    /// The masters serving any of `slots` (the server itself when
    /// standalone, where slots do not narrow the scan).
    pub async fn masters_of(&self, slots: &std::collections::BTreeSet<u16>) -> Result<Vec<Arc<Bulk>>, Error> {
        match self.mode().await? {
            Mode::Single(b) => Ok(vec![b.clone()]),
            Mode::Cluster { cluster, nodes } => {
                let topology = cluster.topology();
                let mut addrs: Vec<&NodeAddr> = slots
                    .iter()
                    .filter_map(|&s| topology.owner(s).map(|o| &o.addr))
                    .collect();
                addrs.sort();
                addrs.dedup();
                addrs.into_iter().map(|a| Self::node(cluster, nodes, a)).collect()
            }
        }
    }

    /// Where the command for `key` goes.
    pub async fn for_key(&self, key: &[u8]) -> Result<Arc<Bulk>, Error> {
        match self.mode().await? {
            Mode::Single(b) => Ok(b.clone()),
            Mode::Cluster { cluster, nodes } => {
                let slot = redmirror_core::slot::of(key);
                let topology = cluster.topology();
                let owner = topology.owner(slot).ok_or_else(|| unserved(slot))?;
                Self::node(cluster, nodes, &owner.addr)
            }
        }
    }

    /// Runs `each(bulk, positions)` for the keys' positions grouped by the
    /// master owning them (all positions at once on a standalone server),
    /// concurrently, and puts each group's results back at its positions.
    /// `each` returns one result per position it was given.
    ///
    /// On a cluster, a read that meets a redirection (the map changed
    /// under it: a failover, a slot migrating) reads the map again and
    /// runs again, up to [`REDIRECT_ATTEMPTS`] times with a short backoff.
    pub async fn scatter<T, F, Fut>(&self, keys: &[Bytes], each: F) -> Result<Vec<T>, Error>
    where
        F: Fn(Arc<Bulk>, Vec<usize>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<T>, Error>>,
    {
        let mut backoff = redmirror_core::backoff::Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        let mut attempt = 1;
        loop {
            match self.scatter_once(keys, &each).await {
                Err(e) if attempt < REDIRECT_ATTEMPTS && self.is_cluster() && is_redirection(&e) => {
                    tracing::debug!(error = %e, attempt, "Redirected: reading the cluster map again.");
                    self.refresh_after(&e).await;
                    tokio::time::sleep(backoff.next_delay()).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    async fn scatter_once<T, F, Fut>(&self, keys: &[Bytes], each: &F) -> Result<Vec<T>, Error>
    where
        F: Fn(Arc<Bulk>, Vec<usize>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<T>, Error>>,
    {
        let groups = self.groups(keys).await?;
        let runs = groups.into_iter().map(|(bulk, positions)| {
            let fut = each(bulk, positions.clone());
            async move { fut.await.map(|r| (positions, r)) }
        });
        let mut out: Vec<Option<T>> = (0..keys.len()).map(|_| None).collect();
        for r in futures::future::join_all(runs).await {
            let (positions, results) = r?;
            if results.len() != positions.len() {
                return Err(Error::new(fred::error::ErrorKind::Parse, "a routed read lost replies"));
            }
            for (p, v) in positions.into_iter().zip(results) {
                out[p] = Some(v);
            }
        }
        out.into_iter()
            .map(|v| v.ok_or_else(|| Error::new(fred::error::ErrorKind::Parse, "a routed read lost replies")))
            .collect()
    }

    /// The keys' positions grouped by the connection that serves them.
    pub async fn groups(&self, keys: &[Bytes]) -> Result<Vec<(Arc<Bulk>, Vec<usize>)>, Error> {
        match self.mode().await? {
            Mode::Single(b) => Ok(vec![(b.clone(), (0..keys.len()).collect())]),
            Mode::Cluster { cluster, nodes } => {
                let topology = cluster.topology();
                let mut by_node: BTreeMap<NodeAddr, Vec<usize>> = BTreeMap::new();
                for (i, k) in keys.iter().enumerate() {
                    let slot = redmirror_core::slot::of(k);
                    let owner = topology.owner(slot).ok_or_else(|| unserved(slot))?;
                    by_node.entry(owner.addr.clone()).or_default().push(i);
                }
                by_node
                    .into_iter()
                    .map(|(addr, ps)| Ok((Self::node(cluster, nodes, &addr)?, ps)))
                    .collect()
            }
        }
    }

    /// On a cluster, reads the map again (before a pass: slots may have
    /// moved since the last one).
    pub async fn refresh(&self) -> Result<(), Error> {
        if let Mode::Cluster { cluster, .. } = self.mode().await? {
            cluster.refresh().await.map_err(|e| e.source.0)?;
        }
        Ok(())
    }

    /// True on a cluster (after first use; false before it).
    pub fn is_cluster(&self) -> bool {
        matches!(self.mode.get(), Some(Mode::Cluster { .. }))
    }

    /// After a failed read: on a cluster, reads the map again so the next
    /// attempt is routed to the masters serving the slots now.
    pub async fn refresh_after(&self, failure: &Error) {
        if let Some(Mode::Cluster { cluster, .. }) = self.mode.get() {
            if is_redirection(failure) || failure.kind() == &fred::error::ErrorKind::IO {
                let _ = cluster.refresh().await;
            }
        }
    }
}

/// Attempts of a routed read that meets redirections (see [`Routed::scatter`]).
pub const REDIRECT_ATTEMPTS: usize = 6;

/// A reply saying the key lives elsewhere, or the cluster is between states.
fn is_redirection(e: &Error) -> bool {
    let d = e.details().as_bytes();
    crate::cluster::is_redirect(d) || d.starts_with(b"ASK ")
}

fn unserved(slot: u16) -> Error {
    Error::new(
        fred::error::ErrorKind::Unknown,
        format!("CLUSTERDOWN no master serves slot {slot}"),
    )
}
