//! A Redis Cluster source: which master owns which slots (SPEC section 2,
//! "Redis Cluster").
//!
//! The configured URL names any one node. [`Cluster::detect`] asks it
//! (`INFO cluster`); on a cluster it reads the shards (`CLUSTER SHARDS`)
//! and from then on every node is reached with the URL's credentials and
//! TLS settings at the address the cluster announces for it
//! ([`crate::bulk::Bulk::at`]).
//!
//! The map is refreshed by [`Cluster::refresh`]: on a schedule by capture's
//! topology watch, and at once by a reader that met a redirection (`MOVED`,
//! or `CLUSTERDOWN`/`TRYAGAIN` while the cluster settles). A refresh that
//! finds slots served by another master than before returns them as a
//! [`Change`] and bumps [`Cluster::version`]: that is a gap for those slots
//! (changes made while they moved may not have been notified to us) and,
//! because the new master has a clock of its own, a new source epoch.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use fred::error::{Error, ErrorKind};
use redmirror_config::RedisEndpoint;
use redmirror_core::slot::SLOTS;
use tokio::sync::watch;

pub use crate::bulk::NodeAddr;
use crate::bulk::{Bulk, Pipeline, Reply};
use crate::RedisError;

/// One master and the slot ranges it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The master's node id.
    pub id: String,
    /// The master's address.
    pub addr: NodeAddr,
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
}

/// The masters of a cluster and the owner of every slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Masters serving at least one slot, by address.
    pub shards: Vec<Shard>,
    /// Index into `shards` of each slot's master (`u16::MAX`: unserved).
    owner: Vec<u16>,
}

impl Topology {
    /// A topology from its shards.
    pub fn new(mut shards: Vec<Shard>) -> Self {
        shards.sort_by(|a, b| a.addr.cmp(&b.addr));
        let mut owner = vec![u16::MAX; SLOTS as usize];
        for (i, s) in shards.iter().enumerate() {
            for &(a, b) in &s.slots {
                for slot in a..=b.min(SLOTS - 1) {
                    owner[slot as usize] = i as u16;
                }
            }
        }
        Topology { shards, owner }
    }

    /// The master serving `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<&Shard> {
        self.shards.get(*self.owner.get(slot as usize)? as usize)
    }

    /// Slots whose master (by node id and address) differs between `self`
    /// and `newer`, in order.
    pub fn moved_slots(&self, newer: &Topology) -> Vec<u16> {
        let key = |t: &Topology, slot: u16| t.owner(slot).map(|s| (s.id.clone(), s.addr.clone()));
        (0..SLOTS).filter(|&s| key(self, s) != key(newer, s)).collect()
    }

    /// The slots `shard` serves.
    pub fn slots_of(&self, addr: &NodeAddr) -> BTreeSet<u16> {
        self.shards
            .iter()
            .filter(|s| &s.addr == addr)
            .flat_map(|s| s.slots.iter().flat_map(|&(a, b)| a..=b))
            .collect()
    }
}

/// Slots that changed master, found by a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The slots concerned, in order.
    pub slots: Vec<u16>,
    /// For logs: what changed (`"3 masters, 5461 slots moved"`).
    pub summary: String,
}

/// A cluster source's shared map (see the module docs). One per process
/// and side, shared by every reader of that side.
#[derive(Debug)]
pub struct Cluster {
    endpoint: RedisEndpoint,
    topology: RwLock<Arc<Topology>>,
    version: watch::Sender<u64>,
    refreshing: tokio::sync::Mutex<()>,
}

impl Cluster {
    /// `Some` when `endpoint` is a cluster node (`cluster_enabled:1`), with
    /// the shards it knows of.
    pub async fn detect(endpoint: &RedisEndpoint) -> Result<Option<Arc<Cluster>>, RedisError> {
        let bulk = Bulk::new(endpoint)?;
        if !is_cluster_node(&bulk).await.map_err(|e| RedisError::new(endpoint, e))? {
            return Ok(None);
        }
        if endpoint.db() != 0 {
            return Err(RedisError::new(
                endpoint,
                Error::new(
                    ErrorKind::Config,
                    "a Redis Cluster has database 0 only: remove the database number from the URL",
                ),
            ));
        }
        let topology = shards(&bulk).await.map_err(|e| RedisError::new(endpoint, e))?;
        tracing::info!(
            endpoint = %endpoint.redacted(),
            masters = topology.shards.len(),
            "The source is a Redis Cluster: following every master."
        );
        Ok(Some(Arc::new(Cluster {
            endpoint: endpoint.clone(),
            topology: RwLock::new(Arc::new(topology)),
            version: watch::channel(0).0,
            refreshing: tokio::sync::Mutex::new(()),
        })))
    }

    /// The configured endpoint (credentials and TLS for every node).
    pub fn endpoint(&self) -> &RedisEndpoint {
        &self.endpoint
    }

    /// The current map.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.read().expect("topology lock").clone()
    }

    /// Bumped by every refresh that found a change.
    pub fn version(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// A bulk connection set to the node at `addr`.
    pub fn bulk(&self, addr: &NodeAddr) -> Result<Bulk, RedisError> {
        Bulk::at(&self.endpoint, addr)
    }

    /// Reads the shards again from the first node that answers (the known
    /// masters, then the configured URL) and installs them. `Some` when
    /// slots changed master. Concurrent calls run one at a time; a call
    /// that waited behind another reads again (the change may be newer).
    pub async fn refresh(&self) -> Result<Option<Change>, RedisError> {
        let _one = self.refreshing.lock().await;
        let old = self.topology();
        let mut last = None;
        let mut candidates: Vec<Option<NodeAddr>> = old.shards.iter().map(|s| Some(s.addr.clone())).collect();
        candidates.push(None);
        for addr in candidates {
            let bulk = match &addr {
                Some(a) => Bulk::at(&self.endpoint, a)?,
                None => Bulk::new(&self.endpoint)?,
            };
            match shards(&bulk).await {
                Ok(new) => return Ok(self.install(&old, new)),
                Err(e) => last = Some(e),
            }
        }
        Err(RedisError::new(
            &self.endpoint,
            last.unwrap_or_else(|| Error::new(ErrorKind::IO, "no cluster node answered")),
        ))
    }

    fn install(&self, old: &Topology, new: Topology) -> Option<Change> {
        if new.shards.is_empty() {
            return None; // a node that lost its view (starting up): keep ours
        }
        let slots = old.moved_slots(&new);
        if slots.is_empty() && old.shards == new.shards {
            return None;
        }
        let summary = format!(
            "{} masters ({}), {} slots changed master",
            new.shards.len(),
            new.shards
                .iter()
                .map(|s| s.addr.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            slots.len()
        );
        *self.topology.write().expect("topology lock") = Arc::new(new);
        self.version.send_modify(|v| *v += 1);
        Some(Change { slots, summary })
    }
}

/// True when the server on `bulk` runs in cluster mode (`INFO cluster`
/// says `cluster_enabled:1`).
pub async fn is_cluster_node(bulk: &Bulk) -> Result<bool, Error> {
    let mut p = Pipeline::new();
    p.cmd(&[b"INFO".as_ref(), b"cluster"]);
    let mut enabled = Ok(false);
    bulk.run(&p, |_, r| {
        enabled = match r {
            Reply::Str(info) => Ok(crate::value::info_field(info, "cluster_enabled").as_deref() == Some("1")),
            Reply::Error(e) => Err(Error::new(ErrorKind::Unknown, String::from_utf8_lossy(e).into_owned())),
            _ => Err(bad("INFO cluster")),
        }
    })
    .await?;
    enabled
}

/// True for a reply that says the key lives elsewhere or the cluster is
/// between states: the caller refreshes the map and retries.
pub fn is_redirect(e: &[u8]) -> bool {
    e.starts_with(b"MOVED ") || e.starts_with(b"CLUSTERDOWN") || e.starts_with(b"TRYAGAIN")
}

/// The target of an `ASK slot host:port` reply.
pub fn ask_target(e: &[u8]) -> Option<NodeAddr> {
    let rest = std::str::from_utf8(e.strip_prefix(b"ASK ")?).ok()?;
    let addr = rest.split_whitespace().nth(1)?;
    let (host, port) = addr.rsplit_once(':')?;
    Some(NodeAddr {
        host: host.to_string(),
        port: port.parse().ok()?,
    })
}

fn bad(what: &str) -> Error {
    Error::new(ErrorKind::Parse, format!("unexpected reply to {what}"))
}

/// `CLUSTER SHARDS` on one node.
async fn shards(bulk: &Bulk) -> Result<Topology, Error> {
    let mut p = Pipeline::new();
    p.cmd(&[b"CLUSTER".as_ref(), b"SHARDS"]);
    let mut parsed = Err(bad("CLUSTER SHARDS"));
    bulk.run(&p, |_, r| {
        parsed = match r {
            Reply::Array(items) => parse_shards(&items).map(Topology::new),
            Reply::Error(e) => Err(Error::new(ErrorKind::Unknown, String::from_utf8_lossy(e).into_owned())),
            _ => Err(bad("CLUSTER SHARDS")),
        }
    })
    .await?;
    parsed
}

/// A RESP2 map (a flat array of name, value) as pairs.
fn map<'r, 'a>(r: &'r Reply<'a>) -> Option<Vec<(&'a [u8], &'r Reply<'a>)>> {
    let Reply::Array(items) = r else { return None };
    items
        .chunks(2)
        .map(|kv| match kv {
            [Reply::Str(k), v] => Some((*k, v)),
            _ => None,
        })
        .collect()
}

fn text(r: &Reply<'_>) -> Option<String> {
    match r {
        Reply::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
        _ => None,
    }
}

/// The masters of a `CLUSTER SHARDS` reply that serve slots and are not
/// marked failed.
fn parse_shards(items: &[Reply<'_>]) -> Result<Vec<Shard>, Error> {
    let mut out = Vec::new();
    for shard in items {
        let fields = map(shard).ok_or_else(|| bad("CLUSTER SHARDS"))?;
        let get = |name: &[u8]| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let slots: Vec<(u16, u16)> = match get(b"slots") {
            Some(Reply::Array(s)) => s
                .chunks(2)
                .map(|p| match p {
                    [a, b] => Some((slot_number(a)?, slot_number(b)?)),
                    _ => None,
                })
                .collect::<Option<_>>()
                .ok_or_else(|| bad("CLUSTER SHARDS slots"))?,
            _ => return Err(bad("CLUSTER SHARDS slots")),
        };
        if slots.is_empty() {
            continue;
        }
        let Some(Reply::Array(nodes)) = get(b"nodes") else {
            return Err(bad("CLUSTER SHARDS nodes"));
        };
        for node in nodes {
            let f = map(node).ok_or_else(|| bad("CLUSTER SHARDS node"))?;
            let get = |name: &[u8]| f.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
            let role = get(b"role").and_then(text).unwrap_or_default();
            let health = get(b"health").and_then(text).unwrap_or_default();
            if role != "master" || health == "fail" {
                continue;
            }
            let host = get(b"ip")
                .and_then(text)
                .filter(|h| !h.is_empty() && h != "?")
                .or_else(|| get(b"endpoint").and_then(text))
                .ok_or_else(|| bad("CLUSTER SHARDS node address"))?;
            let port = get(b"tls-port")
                .or_else(|| get(b"port"))
                .and_then(|p| p.as_int())
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| bad("CLUSTER SHARDS node port"))?;
            out.push(Shard {
                id: get(b"id").and_then(text).unwrap_or_default(),
                addr: NodeAddr { host, port },
                slots: slots.clone(),
            });
        }
    }
    Ok(out)
}

fn slot_number(r: &Reply<'_>) -> Option<u16> {
    match r {
        Reply::Int(i) => u16::try_from(*i).ok(),
        Reply::Str(s) => std::str::from_utf8(s).ok()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node<'a>(id: &'a [u8], port: i64, role: &'a [u8], health: &'a [u8]) -> Reply<'a> {
        Reply::Array(vec![
            Reply::Str(b"id"),
            Reply::Str(id),
            Reply::Str(b"port"),
            Reply::Int(port),
            Reply::Str(b"ip"),
            Reply::Str(b"127.0.0.1"),
            Reply::Str(b"role"),
            Reply::Str(role),
            Reply::Str(b"health"),
            Reply::Str(health),
        ])
    }

    #[test]
    fn shards_give_each_slot_its_online_master() {
        let reply = vec![
            Reply::Array(vec![
                Reply::Str(b"slots"),
                Reply::Array(vec![Reply::Int(0), Reply::Int(8191)]),
                Reply::Str(b"nodes"),
                Reply::Array(vec![
                    node(b"a", 7000, b"master", b"online"),
                    node(b"a2", 7003, b"replica", b"online"),
                ]),
            ]),
            Reply::Array(vec![
                Reply::Str(b"slots"),
                Reply::Array(vec![
                    Reply::Int(8192),
                    Reply::Int(16000),
                    Reply::Int(16001),
                    Reply::Int(16383),
                ]),
                Reply::Str(b"nodes"),
                Reply::Array(vec![
                    node(b"b", 7001, b"master", b"fail"),
                    node(b"b2", 7004, b"master", b"online"),
                ]),
            ]),
            // A master with no slots (just added) serves nothing.
            Reply::Array(vec![
                Reply::Str(b"slots"),
                Reply::Array(vec![]),
                Reply::Str(b"nodes"),
                Reply::Array(vec![node(b"c", 7002, b"master", b"online")]),
            ]),
        ];
        let t = Topology::new(parse_shards(&reply).unwrap());
        assert_eq!(t.shards.len(), 2);
        assert_eq!(t.owner(0).unwrap().addr.port, 7000);
        assert_eq!(t.owner(8191).unwrap().id, "a");
        assert_eq!(t.owner(8192).unwrap().id, "b2", "the failed master is skipped");
        assert_eq!(t.owner(16383).unwrap().addr.port, 7004);
        assert_eq!(t.slots_of(&t.owner(0).unwrap().addr).len(), 8192);
    }

    #[test]
    fn moved_slots_are_the_ones_whose_master_changed() {
        let shard = |id: &str, port, a, b| Shard {
            id: id.into(),
            addr: NodeAddr { host: "h".into(), port },
            slots: vec![(a, b)],
        };
        let before = Topology::new(vec![shard("a", 1, 0, 9999), shard("b", 2, 10000, 16383)]);
        let after = Topology::new(vec![shard("a", 1, 0, 9997), shard("b", 2, 9998, 16383)]);
        assert_eq!(before.moved_slots(&after), vec![9998, 9999]);
        // A failover: same slots, another node.
        let failed_over = Topology::new(vec![shard("a", 1, 0, 9999), shard("b2", 3, 10000, 16383)]);
        assert_eq!(before.moved_slots(&failed_over).len(), 6384);
        assert!(before.moved_slots(&before).is_empty());
    }

    #[test]
    fn redirections_are_told_apart() {
        assert!(is_redirect(b"MOVED 3999 127.0.0.1:6381"));
        assert!(is_redirect(b"CLUSTERDOWN The cluster is down"));
        assert!(is_redirect(b"TRYAGAIN Multiple keys request during rehashing of slot"));
        assert!(!is_redirect(b"WRONGTYPE Operation against a key"));
        assert_eq!(
            ask_target(b"ASK 3999 127.0.0.1:6381"),
            Some(NodeAddr {
                host: "127.0.0.1".into(),
                port: 6381
            })
        );
        assert_eq!(ask_target(b"MOVED 3999 127.0.0.1:6381"), None);
    }
}
