//! The atomic source read: the source clock and the state of a batch of
//! flows in one transaction (`MULTI`, `TIME`, `HGETALL`..., `EXEC`), so every
//! state comes with the instant it was true at. Never writes, and needs no
//! scripting: a read-only ACL user with `+@read +@transaction +time +info`
//! is enough (SPEC section 2).
//!
//! Sent as one pipeline on the bulk connections ([`crate::bulk`]) and parsed
//! in place. When asked, the transaction also carries `INFO server`, so the
//! server's `run_id` is known for exactly the instant of the read (the
//! source epoch moves when it changes, see [`crate::epoch`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fred::error::{Error, ErrorKind};
use redmirror_config::RedisEndpoint;
use redmirror_core::{KeyLayout, Order, SourceFlow};

use crate::bulk::{Bulk, Pipeline, Reply};
use crate::cluster::{Cluster, NodeAddr};
use crate::epoch::{EpochReader, SourceEpoch};
pub use crate::value::info_field;
use crate::RedisError;

/// Reads flows from the source atomically together with its clock, each
/// read ordered in the source epoch ([`crate::epoch`]). On a cluster
/// source each master is read on a connection of its own, one transaction
/// per slot (a transaction may not span slots), ordered by that master's
/// clock.
#[derive(Debug)]
pub struct SourceReader {
    endpoint: RedisEndpoint,
    keys: KeyLayout,
    epoch: EpochReader,
    /// Found on first use: whether the source is a cluster.
    mode: tokio::sync::OnceCell<Mode>,
}

#[derive(Debug)]
enum Mode {
    Single(Box<Bulk>),
    Cluster(ClusterReads),
}

#[derive(Debug)]
struct ClusterReads {
    cluster: Arc<Cluster>,
    epoch: SourceEpoch,
    sequential: bool,
    nodes: Mutex<HashMap<NodeAddr, Arc<NodeReader>>>,
    /// Slots an `ASK` sent reads of to another node since the map last
    /// changed (see [`ClusterReads::asked`]).
    asked: Mutex<std::collections::HashSet<u16>>,
}

#[derive(Debug)]
struct NodeReader {
    bulk: Bulk,
    epoch: EpochReader,
}

/// One flow of a read: its state and the source epoch and clock (`TIME`)
/// of the transaction that read it.
#[derive(Debug, Clone)]
pub struct ReadFlow {
    /// Flow id.
    pub id: Bytes,
    /// Its state on the source.
    pub state: SourceFlow,
    /// When it was true.
    pub order: Order,
}

/// One atomic read of a batch of flows (on a cluster: one per slot).
#[derive(Debug, Clone)]
pub struct SourceRead {
    /// The flows, in the order asked.
    pub flows: Vec<ReadFlow>,
}

/// What one transaction returned.
#[derive(Debug)]
struct Raw {
    time_us: i64,
    run_id: Option<String>,
    flows: Vec<(Bytes, SourceFlow)>,
}

/// Attempts of a cluster read while slots move (each after a refresh of
/// the map, or on the node an `ASK` names).
const CLUSTER_ATTEMPTS: usize = 5;

impl SourceReader {
    /// A reader for this endpoint and key layout, ordering its reads with
    /// `epoch` (per master on a cluster source, with the same shared epoch
    /// and sequence); nothing is connected yet. Whether the source is a
    /// cluster is found on first use ([`SourceReader::detect`]).
    pub fn new(endpoint: &RedisEndpoint, keys: KeyLayout, epoch: EpochReader) -> Result<Self, RedisError> {
        // Fails here, not at first use, on a URL no connection can be made from.
        Bulk::new(endpoint)?;
        Ok(SourceReader {
            endpoint: endpoint.clone(),
            keys,
            epoch,
            mode: tokio::sync::OnceCell::new(),
        })
    }

    /// Asks the source whether it is a cluster (once; later calls return
    /// the first answer). `Some` with its map on a cluster.
    pub async fn detect(&self) -> Result<Option<Arc<Cluster>>, RedisError> {
        let mode = self
            .mode
            .get_or_try_init(|| async {
                Ok::<_, RedisError>(match Cluster::detect(&self.endpoint).await? {
                    Some(cluster) => Mode::Cluster(ClusterReads {
                        cluster,
                        epoch: self.epoch.epoch().clone(),
                        sequential: self.epoch.is_sequential(),
                        nodes: Mutex::new(HashMap::new()),
                        asked: Mutex::new(Default::default()),
                    }),
                    None => Mode::Single(Box::new(Bulk::new(&self.endpoint)?)),
                })
            })
            .await?;
        Ok(match mode {
            Mode::Cluster(c) => Some(c.cluster.clone()),
            Mode::Single(_) => None,
        })
    }

    /// The source epoch this reader orders its reads with.
    pub fn epoch(&self) -> &SourceEpoch {
        self.epoch.epoch()
    }

    /// On a cluster source, reads the map again and moves the epoch
    /// forward when slots changed master; `Some` with the change.
    pub async fn refresh_topology(&self) -> Result<Option<crate::cluster::Change>, RedisError> {
        match self.mode.get() {
            Some(Mode::Cluster(c)) => c.refresh().await,
            _ => Ok(None),
        }
    }

    /// Reads these flows (by id) and the source time in one transaction
    /// (on a cluster, one per slot).
    pub async fn read(&self, ids: &[Bytes]) -> Result<SourceRead, Error> {
        self.detect().await.map_err(|e| e.source.0)?;
        match self.mode.get().expect("detected") {
            Mode::Single(bulk) => {
                let raw = transaction(bulk, &self.keys, ids, self.epoch.wants_identity(), false).await?;
                let order = self.epoch.order(raw.run_id.as_deref(), raw.time_us);
                Ok(SourceRead {
                    flows: raw
                        .flows
                        .into_iter()
                        .map(|(id, state)| ReadFlow { id, state, order })
                        .collect(),
                })
            }
            Mode::Cluster(c) => c.read(&self.keys, ids).await,
        }
    }
}

/// Where one slot's flows are read, and how.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Route {
    addr: NodeAddr,
    /// Sent with `ASKING`: the slot is being imported there.
    asking: bool,
}

/// How one slot's transaction ended.
enum Block {
    Read(Raw),
    Ask(NodeAddr),
    Moved,
}

impl ClusterReads {
    fn node(&self, addr: &NodeAddr) -> Result<Arc<NodeReader>, Error> {
        let mut nodes = self.nodes.lock().expect("node readers lock");
        if let Some(n) = nodes.get(addr) {
            return Ok(n.clone());
        }
        let bulk = self.cluster.bulk(addr).map_err(|e| e.source.0)?;
        let n = Arc::new(NodeReader {
            bulk,
            epoch: EpochReader::for_shard(self.epoch.clone(), self.sequential, addr.to_string()),
        });
        nodes.insert(addr.clone(), n.clone());
        Ok(n)
    }

    async fn read(&self, keys: &KeyLayout, ids: &[Bytes]) -> Result<SourceRead, Error> {
        let mut out: Vec<Option<ReadFlow>> = vec![None; ids.len()];
        let mut todo: Vec<usize> = (0..ids.len()).collect();
        let mut asks: HashMap<u16, NodeAddr> = HashMap::new();
        for attempt in 0..CLUSTER_ATTEMPTS {
            let topology = self.cluster.topology();
            // Route → slot → positions in `ids`.
            let mut routes: BTreeMap<Route, BTreeMap<u16, Vec<usize>>> = BTreeMap::new();
            for &i in &todo {
                let slot = redmirror_core::slot::of(&keys.flow_key(&ids[i]));
                let route = match asks.get(&slot) {
                    Some(addr) => Route {
                        addr: addr.clone(),
                        asking: true,
                    },
                    None => match topology.owner(slot) {
                        Some(s) => Route {
                            addr: s.addr.clone(),
                            asking: false,
                        },
                        None => {
                            return Err(Error::new(
                                ErrorKind::Unknown,
                                format!("CLUSTERDOWN no master serves slot {slot} of the source"),
                            ))
                        }
                    },
                };
                routes.entry(route).or_default().entry(slot).or_default().push(i);
            }
            let runs = routes.into_iter().map(|(route, slots)| async move {
                let node = self.node(&route.addr)?;
                let blocks: Vec<(u16, Vec<Bytes>)> = slots
                    .iter()
                    .map(|(slot, is)| (*slot, is.iter().map(|&i| ids[i].clone()).collect()))
                    .collect();
                let identity = node.epoch.wants_identity();
                let results = transactions(&node.bulk, keys, &blocks, identity, route.asking).await?;
                Ok::<_, Error>((node, slots, results))
            });
            let mut moved = false;
            let mut next = Vec::new();
            for r in futures::future::join_all(runs).await {
                let (node, slots, results) = r?;
                for ((slot, positions), block) in slots.into_iter().zip(results) {
                    match block {
                        Block::Read(raw) => {
                            let order = node.epoch.order(raw.run_id.as_deref(), raw.time_us);
                            for (i, (id, state)) in positions.into_iter().zip(raw.flows) {
                                out[i] = Some(ReadFlow { id, state, order });
                            }
                            asks.remove(&slot);
                        }
                        Block::Ask(addr) => {
                            self.asked(slot, &addr);
                            asks.insert(slot, addr);
                            next.extend(positions);
                        }
                        Block::Moved => {
                            asks.remove(&slot);
                            moved = true;
                            next.extend(positions);
                        }
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            if moved {
                tracing::debug!(
                    attempt,
                    flows = next.len(),
                    "Source slots moved; reading the cluster map again."
                );
                let _ = self.refresh().await;
            }
            todo = next;
        }
        if out.iter().any(Option::is_none) {
            return Err(Error::new(
                ErrorKind::Unknown,
                "TRYAGAIN the source's slots are still moving (redirected on every attempt)",
            ));
        }
        Ok(SourceRead {
            flows: out.into_iter().map(|f| f.expect("every flow read")).collect(),
        })
    }

    /// A read of `slot` was sent by `ASK` to `addr`, the node importing
    /// it during a slot migration. Its flows are read there with that
    /// node's clock, which may be behind the clock of the node they were
    /// read on so far: the first `ASK` for a slot (since the map last
    /// changed) moves the source epoch forward, so those reads win over
    /// what was read on the old node instead of being skipped as stale
    /// until a pass.
    fn asked(&self, slot: u16, addr: &NodeAddr) {
        let first = self.asked.lock().expect("asked slots lock").insert(slot);
        if first {
            self.epoch.bump(&format!(
                "slot {slot} of the source is migrating to {addr}: its flows are read there, with that node's clock"
            ));
        }
    }

    /// Reads the map again; a change moves the source epoch forward (the
    /// masters now serving those slots have clocks of their own).
    async fn refresh(&self) -> Result<Option<crate::cluster::Change>, RedisError> {
        let change = self.cluster.refresh().await?;
        if let Some(change) = &change {
            // A migration that ended is in the new map: a later one of the
            // same slot moves the epoch again.
            self.asked.lock().expect("asked slots lock").clear();
            self.epoch.bump(&format!(
                "the source cluster's slots changed master ({})",
                change.summary
            ));
        }
        Ok(change)
    }
}

/// `MULTI`, `TIME`, (`INFO server`), `HGETALL`..., `EXEC` as one pipeline.
async fn transaction(bulk: &Bulk, keys: &KeyLayout, ids: &[Bytes], identity: bool, asking: bool) -> Result<Raw, Error> {
    let block = [(0u16, ids.to_vec())];
    match transactions(bulk, keys, &block, identity, asking).await?.pop() {
        Some(Block::Read(raw)) => Ok(raw),
        Some(Block::Ask(_) | Block::Moved) | None => Err(refusal("MOVED the source is a cluster node")),
    }
}

/// One transaction per block (`MULTI`, `TIME`, (`INFO server`),
/// `HGETALL`..., `EXEC`), all in one pipeline; with `asking`, each is
/// preceded by `ASKING` (a slot being imported by this node).
async fn transactions(
    bulk: &Bulk,
    keys: &KeyLayout,
    blocks: &[(u16, Vec<Bytes>)],
    identity: bool,
    asking: bool,
) -> Result<Vec<Block>, Error> {
    let mut p = Pipeline::new();
    // The index of each block's EXEC.
    let mut execs = Vec::with_capacity(blocks.len());
    for (n, (_, ids)) in blocks.iter().enumerate() {
        if asking {
            p.cmd(&[b"ASKING"]);
        }
        p.cmd(&[b"MULTI"]).cmd(&[b"TIME"]);
        // The server's identity once per pipeline: one node answers it all.
        if identity && n == 0 {
            p.cmd(&[b"INFO".as_ref(), b"server"]);
        }
        for id in ids {
            p.key_cmd(b"HGETALL", &keys.flow_key(id));
        }
        p.cmd(&[b"EXEC"]);
        execs.push(p.len() - 1);
    }
    let mut out: Vec<Option<Result<Block, Error>>> = Vec::with_capacity(blocks.len());
    let mut refused: Option<String> = None;
    let mut b = 0;
    bulk.run(&p, |i, reply| {
        if i == execs[b] {
            let ids = &blocks[b].1;
            out.push(Some(match (refused.take(), reply) {
                (Some(e), _) => Ok(redirected(&e)).transpose().unwrap_or_else(|| Err(refusal(&e))),
                (None, Reply::Error(e)) => {
                    let e = String::from_utf8_lossy(e);
                    Ok(redirected(&e)).transpose().unwrap_or_else(|| Err(refusal(&e)))
                }
                (None, Reply::Array(items)) => parse(items, ids, identity && b == 0).map(Block::Read),
                (None, _) => Err(bad("EXEC")),
            }));
            b += 1;
        } else if let Reply::Error(e) = reply {
            // A command refused while queueing (NOPERM, unknown command,
            // MOVED): EXEC then aborts; the first refusal is the cause.
            refused.get_or_insert_with(|| String::from_utf8_lossy(e).into_owned());
        }
    })
    .await?;
    if out.len() != blocks.len() {
        return Err(bad("EXEC"));
    }
    out.into_iter().map(|o| o.unwrap_or_else(|| Err(bad("EXEC")))).collect()
}

/// A block refused because its slot lives elsewhere, as the next step.
fn redirected(e: &str) -> Option<Block> {
    if let Some(addr) = crate::cluster::ask_target(e.as_bytes()) {
        return Some(Block::Ask(addr));
    }
    crate::cluster::is_redirect(e.as_bytes()).then_some(Block::Moved)
}

fn bad(what: &str) -> Error {
    Error::new(
        ErrorKind::Parse,
        format!("unexpected reply to {what} in the source read"),
    )
}

fn refusal(e: &str) -> Error {
    Error::new(ErrorKind::Unknown, e.to_string())
}

fn parse(items: Vec<Reply<'_>>, ids: &[Bytes], identity: bool) -> Result<Raw, Error> {
    if items.len() != 1 + usize::from(identity) + ids.len() {
        return Err(bad("EXEC"));
    }
    let mut it = items.into_iter();
    let time_us = match it.next() {
        Some(Reply::Array(t)) => match t.as_slice() {
            [Reply::Str(s), Reply::Str(u)] => {
                let n = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<i64>().ok();
                n(s).zip(n(u))
                    .map(|(s, u)| s * 1_000_000 + u)
                    .ok_or_else(|| bad("TIME"))?
            }
            _ => return Err(bad("TIME")),
        },
        Some(Reply::Error(e)) => return Err(refusal(&String::from_utf8_lossy(e))),
        _ => return Err(bad("TIME")),
    };
    let run_id = if identity {
        match it.next() {
            Some(Reply::Str(info)) => Some(info_field(info, "run_id").ok_or_else(|| bad("INFO server"))?),
            Some(Reply::Error(e)) => return Err(refusal(&String::from_utf8_lossy(e))),
            _ => return Err(bad("INFO server")),
        }
    } else {
        None
    };
    let mut flows = Vec::with_capacity(ids.len());
    for (id, reply) in ids.iter().zip(it) {
        let state = match reply {
            // Redis removes a hash with its last field: empty means absent.
            Reply::Array(a) if a.is_empty() => SourceFlow::Absent,
            Reply::Array(a) if a.len() % 2 == 0 => {
                let mut fields = Vec::with_capacity(a.len() / 2);
                for pair in a.chunks(2) {
                    let [Reply::Str(n), Reply::Str(v)] = pair else {
                        return Err(bad("HGETALL"));
                    };
                    fields.push((Bytes::copy_from_slice(n), Bytes::copy_from_slice(v)));
                }
                SourceFlow::Hash(fields)
            }
            Reply::Error(e) if e.starts_with(b"WRONGTYPE") => SourceFlow::NotAHash,
            Reply::Error(e) => return Err(refusal(&String::from_utf8_lossy(e))),
            _ => return Err(bad("HGETALL")),
        };
        flows.push((id.clone(), state));
    }
    Ok(Raw { time_us, run_id, flows })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn parses_time_identity_and_every_kind_of_flow() {
        let items = vec![
            Reply::Array(vec![Reply::Str(b"1700000000"), Reply::Str(b"000042")]),
            Reply::Str(b"# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\n"),
            Reply::Array(vec![Reply::Str(b"a"), Reply::Str(b"\xff")]),
            Reply::Array(vec![]),
            Reply::Error(b"WRONGTYPE Operation against a key holding the wrong kind of value"),
        ];
        let r = parse(items, &[b("h"), b("n"), b("x")], true).unwrap();
        assert_eq!(r.time_us, 1_700_000_000_000_042);
        assert_eq!(r.run_id.as_deref(), Some("abc123"));
        assert_eq!(
            r.flows[0].1,
            SourceFlow::Hash(vec![(b("a"), Bytes::from_static(b"\xff"))])
        );
        assert_eq!(r.flows[1].1, SourceFlow::Absent);
        assert_eq!(r.flows[2].1, SourceFlow::NotAHash);
    }

    #[test]
    fn refuses_short_odd_and_failed_replies() {
        let time = || Reply::Array(vec![Reply::Str(b"1"), Reply::Str(b"2")]);
        assert!(parse(vec![time()], &[b("a")], false).is_err(), "a reply missing");
        assert!(
            parse(vec![time(), Reply::Array(vec![Reply::Str(b"a")])], &[b("a")], false).is_err(),
            "odd field list"
        );
        let e = parse(vec![time(), Reply::Error(b"NOPERM no")], &[b("a")], false).unwrap_err();
        assert!(e.details().contains("NOPERM"), "{e}");
        assert!(parse(vec![Reply::Int(1)], &[], false).is_err(), "TIME not an array");
    }

    #[test]
    fn info_fields_by_exact_name() {
        let info = b"run_id_x:no\r\nrun_id:yes\r\n";
        assert_eq!(info_field(info, "run_id").as_deref(), Some("yes"));
        assert_eq!(info_field(info, "missing"), None);
    }
}
