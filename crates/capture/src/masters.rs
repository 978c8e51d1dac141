//! The masters of a cluster source as capture's own map has them now, each
//! with a connection of its own, for the server-wide commands that must
//! reach every master (`CONFIG GET`/`SET notify-keyspace-events`, `INFO
//! commandstats`).
//!
//! The map is [`Cluster::topology`], read again every second by the
//! topology watch: a replica promoted by a failover or a master added is a
//! master here within about a second, and a master gone is dropped (with
//! its connection). A fred client's cached cluster state is not used: a
//! client that never meets a `MOVED` keeps asking the old nodes.

use std::collections::HashMap;
use std::sync::Arc;

use fred::error::{Error, ErrorKind};
use redmirror_redis::bulk::{Bulk, Pipeline, Reply};
use redmirror_redis::cluster::{Cluster, NodeAddr};

/// One master: its node id and address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Master {
    /// The node id (a replaced master has another).
    pub id: String,
    /// Where it listens.
    pub addr: NodeAddr,
}

/// Connections to the masters of a cluster source (see the module docs).
#[derive(Debug)]
pub struct Masters {
    cluster: Arc<Cluster>,
    conns: HashMap<NodeAddr, Bulk>,
}

impl Masters {
    /// Nothing is connected yet.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Masters {
            cluster,
            conns: HashMap::new(),
        }
    }

    /// The cluster's map.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The masters now, by address; connections to nodes that are no
    /// longer masters are dropped.
    pub fn current(&mut self) -> Vec<Master> {
        let topology = self.cluster.topology();
        let mut out: Vec<Master> = topology
            .shards
            .iter()
            .map(|s| Master {
                id: s.id.clone(),
                addr: s.addr.clone(),
            })
            .collect();
        out.dedup();
        self.conns.retain(|a, _| out.iter().any(|m| &m.addr == a));
        out
    }

    /// Runs one command on the master at `addr`: its reply as strings (a
    /// string or an integer gives one, an array its items, nil none); an
    /// error reply is an error.
    pub async fn call(&mut self, addr: &NodeAddr, args: &[&[u8]]) -> Result<Vec<String>, Error> {
        if !self.conns.contains_key(addr) {
            let bulk = self.cluster.bulk(addr).map_err(|e| e.source.0)?;
            self.conns.insert(addr.clone(), bulk);
        }
        let bulk = &self.conns[addr];
        let mut p = Pipeline::new();
        p.cmd(args);
        let mut out = Err(Error::new(ErrorKind::Parse, "no reply"));
        bulk.run(&p, |_, r| out = strings(r)).await?;
        out
    }
}

fn strings(r: Reply<'_>) -> Result<Vec<String>, Error> {
    let one = |s: &[u8]| String::from_utf8_lossy(s).into_owned();
    match r {
        Reply::Nil => Ok(vec![]),
        Reply::Int(i) => Ok(vec![i.to_string()]),
        Reply::Str(s) => Ok(vec![one(s)]),
        Reply::Error(e) => Err(Error::new(ErrorKind::Unknown, one(e))),
        Reply::Array(items) => Ok(items
            .into_iter()
            .map(|i| match i {
                Reply::Str(s) => one(s),
                Reply::Int(i) => i.to_string(),
                _ => String::new(),
            })
            .collect()),
    }
}
