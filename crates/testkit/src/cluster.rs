//! A Redis Cluster for tests: three masters with one replica each, six
//! [`RedisServer`] processes on free ports, killed on drop.
//!
//! Every change of shape ([`RedisCluster::start`], [`RedisCluster::failover`],
//! [`RedisCluster::migrate_slot`]) returns only once every node says
//! `cluster_state:ok`, every node's `CLUSTER NODES` describes the same
//! cluster (the same masters, each with its replica attached and in sync,
//! the same slot map, nothing failing or in a handshake) and no slot is left
//! importing or migrating. Anything that does not settle within its deadline
//! panics with what the nodes said.
//!
//! Commands on a key go to the master that owns the key's slot
//! ([`RedisCluster::cmd_key`], [`RedisCluster::hset`], ...), following a
//! `MOVED` or `ASK` redirect to the node it names.

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::Range;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{wait_for, RedisOptions, RedisServer, INSTALL_HINT};

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// How long a change of the cluster's shape may take to settle.
const SETTLE: Duration = Duration::from_secs(60);

/// CRC16/XMODEM (polynomial 0x1021, initial 0), the checksum Redis Cluster
/// hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of a key: CRC16 of the key, or of its hash tag (the bytes
/// between the first `{` and the next `}`, when not empty), mod 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS
}

/// One line of `CLUSTER NODES`, as much of it as the tests care about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClusterNode {
    /// The node id.
    pub id: String,
    /// The client port.
    pub port: u16,
    /// True for a master.
    pub master: bool,
    /// A replica's master id.
    pub master_id: Option<String>,
    /// Slot ranges served (inclusive), masters only; importing and
    /// migrating markers are left out.
    pub slots: Vec<(u16, u16)>,
    /// Flags other than `myself`, `master`, `slave` (`fail?`, `fail`,
    /// `handshake`, `noaddr`, `nofailover`, ...).
    pub flags: Vec<String>,
    /// `connected` or `disconnected`.
    pub link: String,
}

/// Parses `CLUSTER NODES`; the second value is true when the node reports a
/// slot importing or migrating.
fn parse_nodes(text: &str) -> (Vec<ClusterNode>, bool) {
    let mut nodes = Vec::new();
    let mut moving = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        // 127.0.0.1:7000@17000[,hostname]
        let port = f[1]
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let flags: Vec<&str> = f[2].split(',').collect();
        let mut slots = Vec::new();
        for s in &f[8..] {
            if s.starts_with('[') {
                moving = true;
                continue;
            }
            let range = match s.split_once('-') {
                Some((a, b)) => a.parse().ok().zip(b.parse().ok()),
                None => s.parse().ok().map(|a| (a, a)),
            };
            if let Some(r) = range {
                slots.push(r);
            }
        }
        slots.sort_unstable();
        nodes.push(ClusterNode {
            id: f[0].to_string(),
            port,
            master: flags.contains(&"master"),
            master_id: (f[3] != "-").then(|| f[3].to_string()),
            slots,
            flags: flags
                .iter()
                .filter(|x| !matches!(**x, "myself" | "master" | "slave"))
                .map(|x| x.to_string())
                .collect(),
            link: f[7].to_string(),
        });
    }
    nodes.sort();
    (nodes, moving)
}

/// A Redis Cluster of three masters with one replica each; every process is
/// killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six cluster nodes (keyspace notifications `KEA` on), joins
    /// them with `redis-cli --cluster create ... --cluster-replicas 1`, and
    /// waits until every node agrees on the cluster. Panics with
    /// `redis-cli`'s output or the nodes' views when it does not come up.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_with(RedisOptions {
                    cluster: true,
                    ..RedisOptions::with_notifications()
                })
            })
            .collect();
        let c = RedisCluster { nodes };
        let mut cli = Command::new(crate::ServerKind::from_env().cli());
        cli.arg("--cluster").arg("create");
        for n in &c.nodes {
            cli.arg(format!("127.0.0.1:{}", n.port()));
        }
        cli.arg("--cluster-replicas").arg("1").arg("--cluster-yes");
        let out = run_with_deadline(cli, Duration::from_secs(60));
        if !out.0 || !out.1.contains("[OK] All 16384 slots covered") {
            panic!("--cluster create failed (exit ok: {}):\n{}", out.0, out.1);
        }
        c.wait_settled("the new cluster", |_| true);
        c
    }

    /// `redis://127.0.0.1:{port}` of a master (the lowest port that is a
    /// master now). Any node's URL works for a cluster client.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.masters()[0])
    }

    /// Every node's port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Ports of the nodes that say they are masters now (sorted).
    pub fn masters(&self) -> Vec<u16> {
        self.by_role(true)
    }

    /// Ports of the nodes that say they are replicas now (sorted).
    pub fn replicas(&self) -> Vec<u16> {
        self.by_role(false)
    }

    fn by_role(&self, master: bool) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| {
                let info: String = n.cmd(&[b"INFO", b"replication"]);
                info.lines().any(|l| l.trim() == "role:master") == master
            })
            .map(RedisServer::port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The node on this port. Panics on a port that is not one of ours.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port} (nodes: {:?})", self.ports()))
    }

    /// Runs a command on the node on this port (no redirects followed).
    pub fn cmd_on<T: redis::FromRedisValue>(&self, port: u16, args: &[&[u8]]) -> T {
        self.node(port).cmd(args)
    }

    /// The cluster as the node on this port describes it (`CLUSTER NODES`).
    pub fn topology(&self, port: u16) -> Vec<ClusterNode> {
        let text: String = self.cmd_on(port, &[b"CLUSTER", b"NODES"]);
        parse_nodes(&text).0
    }

    /// The port of the master serving this slot now.
    pub fn slot_owner(&self, slot: u16) -> u16 {
        let port = self.masters()[0];
        self.topology(port)
            .into_iter()
            .find(|n| n.master && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot} (asked port {port})"))
    }

    /// The port of the master owning the key's slot now.
    pub fn master_of(&self, key: &[u8]) -> u16 {
        self.slot_owner(key_slot(key))
    }

    /// Runs a command on one key on the master owning it, following
    /// `MOVED` and `ASK` redirects. `args` is the whole command; `key` is
    /// the key it touches.
    pub fn cmd_key<T: redis::FromRedisValue>(&self, key: &[u8], args: &[&[u8]]) -> T {
        let mut port = self.master_of(key);
        let mut asking = false;
        for _ in 0..10 {
            let mut conn = self.node(port).conn();
            if asking {
                let _: () = redis::cmd("ASKING")
                    .query(&mut conn)
                    .unwrap_or_else(|e| panic!("ASKING on {port}: {e}"));
            }
            let mut c = redis::cmd(std::str::from_utf8(args[0]).expect("command name"));
            for a in &args[1..] {
                c.arg(*a);
            }
            match c.query::<T>(&mut conn) {
                Ok(v) => return v,
                Err(e) => match e.redirect_node() {
                    Some((addr, _slot)) => {
                        asking = e.kind() == redis::ErrorKind::Ask;
                        port = addr
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse().ok())
                            .unwrap_or_else(|| panic!("redirect to {addr}: {e}"));
                    }
                    None => panic!(
                        "{:?} on {port} for key {:?}: {e}",
                        String::from_utf8_lossy(args[0]),
                        String::from_utf8_lossy(key)
                    ),
                },
            }
        }
        panic!("too many redirects for key {:?}", String::from_utf8_lossy(key));
    }

    /// `HSET key field value ...` on the key's master.
    pub fn hset(&self, key: &[u8], fields: &[(&[u8], &[u8])]) {
        let mut args: Vec<&[u8]> = vec![b"HSET", key];
        for (f, v) in fields {
            args.push(f);
            args.push(v);
        }
        let _: i64 = self.cmd_key(key, &args);
    }

    /// `DEL key` on the key's master.
    pub fn del(&self, key: &[u8]) {
        let _: i64 = self.cmd_key(key, &[b"DEL", key]);
    }

    /// `HGETALL key` from the key's master, sorted by field.
    pub fn hgetall(&self, key: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut v: Vec<(Vec<u8>, Vec<u8>)> = self.cmd_key(key, &[b"HGETALL", key]);
        v.sort();
        v
    }

    /// Runs `CLUSTER FAILOVER` on a replica of the master on `master_port`
    /// and waits until that replica is a master, the old master its
    /// replica, and every node agrees.
    pub fn failover(&self, master_port: u16) {
        let topo = self.topology(master_port);
        let master = topo
            .iter()
            .find(|n| n.port == master_port && n.master)
            .unwrap_or_else(|| panic!("port {master_port} is not a master: {topo:#?}"))
            .clone();
        let replica = topo
            .iter()
            .find(|n| n.master_id.as_deref() == Some(master.id.as_str()))
            .unwrap_or_else(|| panic!("master {master_port} has no replica: {topo:#?}"))
            .clone();
        let _: () = self.cmd_on(replica.port, &[b"CLUSTER", b"FAILOVER"]);
        // A manual failover the replica could not finish in time (it must
        // catch up with the paused master within a few seconds) is given up
        // silently: ask again when it has not happened after a while.
        let asked = std::cell::Cell::new(Instant::now());
        self.wait_settled(&format!("failover of {master_port} to {}", replica.port), |view| {
            let done = view
                .iter()
                .any(|n| n.id == replica.id && n.master && n.slots == master.slots)
                && view
                    .iter()
                    .any(|n| n.id == master.id && n.master_id.as_deref() == Some(replica.id.as_str()));
            if !done && asked.get().elapsed() > Duration::from_secs(10) {
                let _ = query::<()>(replica.port, &[b"CLUSTER", b"FAILOVER"]);
                asked.set(Instant::now());
            }
            done
        });
    }

    /// Moves one slot, keys and all, to the master on `to_port`, the way
    /// `redis-cli --cluster reshard` does, and waits until every node agrees.
    pub fn migrate_slot(&self, slot: u16, to_port: u16) {
        self.migrate_slots(slot..slot + 1, to_port)
    }

    /// Moves these slots, keys and all, to the master on `to_port`, and waits
    /// until every node agrees.
    pub fn migrate_slots(&self, slots: Range<u16>, to_port: u16) {
        let topo = self.topology(to_port);
        let target = topo
            .iter()
            .find(|n| n.port == to_port && n.master)
            .unwrap_or_else(|| panic!("port {to_port} is not a master: {topo:#?}"))
            .clone();
        let masters: Vec<ClusterNode> = topo.iter().filter(|n| n.master).cloned().collect();
        let mut conns: BTreeMap<u16, redis::Connection> =
            masters.iter().map(|m| (m.port, self.node(m.port).conn())).collect();
        let run = |c: &mut redis::Connection, port: u16, args: Vec<Vec<u8>>| -> redis::Value {
            let mut cmd = redis::cmd(std::str::from_utf8(&args[0]).expect("command name"));
            for a in &args[1..] {
                cmd.arg(a);
            }
            cmd.query(c).unwrap_or_else(|e| {
                panic!(
                    "{:?} on {port}: {e}",
                    args.iter().map(|a| String::from_utf8_lossy(a)).collect::<Vec<_>>()
                )
            })
        };
        let b = |s: &str| s.as_bytes().to_vec();
        for slot in slots.clone() {
            let source = masters
                .iter()
                .find(|n| n.slots.iter().any(|&(a, z)| (a..=z).contains(&slot)))
                .unwrap_or_else(|| panic!("no master serves slot {slot}: {topo:#?}"));
            if source.id == target.id {
                continue;
            }
            let s = slot.to_string();
            run(
                conn_for(&mut conns, to_port),
                to_port,
                vec![b("CLUSTER"), b("SETSLOT"), b(&s), b("IMPORTING"), b(&source.id)],
            );
            run(
                conn_for(&mut conns, source.port),
                source.port,
                vec![b("CLUSTER"), b("SETSLOT"), b(&s), b("MIGRATING"), b(&target.id)],
            );
            loop {
                let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(100)
                    .query(conn_for(&mut conns, source.port))
                    .unwrap_or_else(|e| panic!("GETKEYSINSLOT {slot} on {}: {e}", source.port));
                if keys.is_empty() {
                    break;
                }
                let mut args = vec![
                    b("MIGRATE"),
                    b("127.0.0.1"),
                    b(&to_port.to_string()),
                    Vec::new(),
                    b("0"),
                    b("10000"),
                    b("KEYS"),
                ];
                args.extend(keys);
                run(conn_for(&mut conns, source.port), source.port, args);
            }
            let setnode = vec![b("CLUSTER"), b("SETSLOT"), b(&s), b("NODE"), b(&target.id)];
            run(conn_for(&mut conns, to_port), to_port, setnode.clone());
            run(conn_for(&mut conns, source.port), source.port, setnode.clone());
            for m in &masters {
                if m.port != to_port && m.port != source.port {
                    run(conn_for(&mut conns, m.port), m.port, setnode.clone());
                }
            }
        }
        self.wait_settled(&format!("slots {slots:?} moved to {to_port}"), |view| {
            view.iter().any(|n| {
                n.id == target.id
                    && slots
                        .clone()
                        .all(|s| n.slots.iter().any(|&(a, z)| (a..=z).contains(&s)))
            })
        });
    }

    /// Waits until every node agrees on a settled cluster that also passes
    /// `done` (given the agreed view); panics after [`SETTLE`] with each
    /// node's view.
    fn wait_settled(&self, what: &str, done: impl Fn(&[ClusterNode]) -> bool) {
        let started = Instant::now();
        let mut last = String::new();
        let settled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(what, SETTLE, || match self.settled_view() {
                Ok(view) if done(&view) => Some(()),
                Ok(view) => {
                    last = format!("agreed view not there yet: {view:#?}");
                    None
                }
                Err(e) => {
                    last = e;
                    None
                }
            })
        }));
        if settled.is_err() {
            panic!("cluster did not settle ({what}) within {:?}: {last}", started.elapsed());
        }
    }

    /// The view every node agrees on, when the cluster is settled; else
    /// why not.
    fn settled_view(&self) -> Result<Vec<ClusterNode>, String> {
        let mut agreed: Option<(u16, Vec<ClusterNode>)> = None;
        for n in &self.nodes {
            let port = n.port();
            let info: String = query(port, &[b"CLUSTER", b"INFO"])?;
            if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Err(format!("node {port}: {info}"));
            }
            let text: String = query(port, &[b"CLUSTER", b"NODES"])?;
            let (view, moving) = parse_nodes(&text);
            if moving {
                return Err(format!("node {port} has a slot importing or migrating:\n{text}"));
            }
            if view.len() != self.nodes.len() {
                return Err(format!("node {port} knows {} nodes:\n{text}", view.len()));
            }
            if let Some(bad) = view
                .iter()
                .find(|v| !v.flags.iter().all(|f| f == "nofailover") || v.link != "connected")
            {
                return Err(format!("node {port} sees {bad:?}:\n{text}"));
            }
            let masters: Vec<&ClusterNode> = view.iter().filter(|v| v.master).collect();
            if masters.len() != 3 {
                return Err(format!("node {port} sees {} masters:\n{text}", masters.len()));
            }
            for m in &masters {
                let replicas = view
                    .iter()
                    .filter(|v| v.master_id.as_deref() == Some(m.id.as_str()))
                    .count();
                if replicas != 1 {
                    return Err(format!(
                        "node {port}: master {} has {replicas} replicas:\n{text}",
                        m.port
                    ));
                }
            }
            let covered: u32 = masters
                .iter()
                .flat_map(|m| m.slots.iter())
                .map(|&(a, b)| u32::from(b - a) + 1)
                .sum();
            if covered != u32::from(SLOTS) {
                return Err(format!("node {port} sees {covered} slots served:\n{text}"));
            }
            let me = view.iter().find(|v| v.port == port).expect("a node sees itself");
            if !me.master {
                let repl: String = query(port, &[b"INFO", b"replication"])?;
                if !repl.lines().any(|l| l.trim() == "master_link_status:up") {
                    return Err(format!("replica {port} not in sync: {repl}"));
                }
            }
            match &agreed {
                None => agreed = Some((port, view)),
                Some((p, a)) if *a != view => {
                    return Err(format!("node {port} and node {p} disagree:\n{view:#?}\nvs\n{a:#?}"));
                }
                Some(_) => {}
            }
        }
        Ok(agreed.map(|(_, v)| v).unwrap_or_default())
    }
}

fn conn_for(conns: &mut BTreeMap<u16, redis::Connection>, port: u16) -> &mut redis::Connection {
    conns.get_mut(&port).expect("a master's connection")
}

/// A command on a node, errors returned (a connection refused included).
fn query<T: redis::FromRedisValue>(port: u16, args: &[&[u8]]) -> Result<T, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| format!("connect to {port}: {e}"))?;
    let mut c = redis::cmd(std::str::from_utf8(args[0]).expect("command name"));
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(&mut conn).map_err(|e| format!("{port}: {e}"))
}

/// Runs a command, killing it after `deadline`; (exited 0, stdout+stderr).
fn run_with_deadline(mut cmd: Command, deadline: Duration) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?} ({e}): {INSTALL_HINT}", cmd.get_program()));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + deadline;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = format!(
        "{}{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
        if status.is_none() {
            format!("\n(killed after {deadline:?})")
        } else {
            String::new()
        }
    );
    (status.is_some_and(|s| s.success()), text)
}

/// True when a cluster command failing with `e` may succeed later: the
/// connection broke, or the cluster is between states or the key elsewhere
/// (not a refusal of the command itself, such as `WRONGTYPE`).
pub fn is_transient(e: &redis::RedisError) -> bool {
    is_conn_error(e)
        || matches!(
            e.kind(),
            redis::ErrorKind::Moved
                | redis::ErrorKind::Ask
                | redis::ErrorKind::TryAgain
                | redis::ErrorKind::ClusterDown
                | redis::ErrorKind::MasterDown
                | redis::ErrorKind::BusyLoadingError
                | redis::ErrorKind::ReadOnly
        )
}

/// True when `e` says the connection broke (not that the server refused
/// the command): make the connection again.
pub fn is_conn_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

/// A client for steady writes to a cluster (load generators): the slot map
/// is read once and again only after a redirection, with one connection
/// per master. Each command goes to the master owning its key (its first
/// argument), following `MOVED` and `ASK`; a cluster between states
/// (`CLUSTERDOWN`, `TRYAGAIN`, a node refusing while it fails over) is
/// waited out for up to [`ClusterWriter::SETTLE`]. A refusal by the server
/// (`WRONGTYPE`) is returned at once.
pub struct ClusterWriter {
    seeds: Vec<u16>,
    owner: Vec<u16>,
    conns: BTreeMap<u16, redis::Connection>,
}

impl RedisCluster {
    /// A [`ClusterWriter`] on this cluster.
    pub fn writer(&self) -> ClusterWriter {
        ClusterWriter::new(self.ports())
    }
}

impl ClusterWriter {
    /// Longest wait for one command while the cluster settles.
    pub const SETTLE: Duration = Duration::from_secs(30);

    /// A writer on the cluster whose nodes listen on `seeds`; reads the slot map.
    pub fn new(seeds: Vec<u16>) -> ClusterWriter {
        let mut w = ClusterWriter {
            seeds,
            owner: vec![0; SLOTS as usize],
            conns: BTreeMap::new(),
        };
        w.refresh();
        w
    }

    fn conn(&mut self, port: u16) -> redis::RedisResult<&mut redis::Connection> {
        match self.conns.entry(port) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(e) => {
                let c = redis::Client::open(format!("redis://127.0.0.1:{port}"))?
                    .get_connection_with_timeout(Duration::from_secs(2))?;
                c.set_read_timeout(Some(Duration::from_secs(10)))?;
                c.set_write_timeout(Some(Duration::from_secs(10)))?;
                Ok(e.insert(c))
            }
        }
    }

    /// Reads the slot map (`CLUSTER SLOTS`) from the first node that
    /// answers; false when none did.
    pub fn refresh(&mut self) -> bool {
        for port in self.seeds.clone() {
            let Ok(c) = self.conn(port) else { continue };
            let Ok(slots) = redis::cmd("CLUSTER").arg("SLOTS").query::<Vec<redis::Value>>(c) else {
                self.conns.remove(&port);
                continue;
            };
            for range in slots {
                let redis::Value::Array(r) = range else { continue };
                let (Some(redis::Value::Int(a)), Some(redis::Value::Int(b)), Some(redis::Value::Array(m))) =
                    (r.first(), r.get(1), r.get(2))
                else {
                    continue;
                };
                let Some(redis::Value::Int(p)) = m.get(1) else { continue };
                for s in *a..=*b {
                    self.owner[s as usize] = *p as u16;
                }
            }
            return true;
        }
        false
    }

    /// Runs one command on the master owning its key (see the type's docs).
    pub fn try_run(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        let key = match cmd.args_iter().nth(1) {
            Some(redis::Arg::Simple(k)) => k.to_vec(),
            _ => Vec::new(),
        };
        let slot = key_slot(&key);
        let end = Instant::now() + Self::SETTLE;
        let mut ask: Option<u16> = None;
        loop {
            let port = ask.unwrap_or(self.owner[usize::from(slot)]);
            let asking = ask.is_some();
            let r = self.conn(port).and_then(|c| {
                if asking {
                    redis::cmd("ASKING").query::<()>(c)?;
                }
                cmd.query::<redis::Value>(c)
            });
            let e = match r {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            ask = None;
            match e.kind() {
                redis::ErrorKind::Ask => {
                    ask = e.redirect_node().and_then(|(a, _)| a.rsplit(':').next()?.parse().ok());
                    continue;
                }
                redis::ErrorKind::Moved => {
                    self.refresh();
                }
                _ if is_transient(&e) => {
                    if is_conn_error(&e) {
                        self.conns.remove(&port);
                    }
                    // Poll interval while the cluster settles (deadline: SETTLE).
                    std::thread::sleep(Duration::from_millis(50));
                    self.refresh();
                }
                _ => return Err(e),
            }
            if Instant::now() > end {
                return Err(e);
            }
        }
    }

    /// [`ClusterWriter::try_run`], panicking on failure (tests).
    pub fn run<T: redis::FromRedisValue>(&mut self, key: &[u8], cmd: &redis::Cmd) -> T {
        let v = self
            .try_run(cmd)
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(key)));
        redis::from_redis_value(&v).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(key)))
    }

    /// `HSET key field value ...`.
    pub fn hset(&mut self, key: &[u8], fields: &[(&[u8], &[u8])]) {
        let mut c = redis::cmd("HSET");
        c.arg(key);
        for (f, v) in fields {
            c.arg(*f).arg(*v);
        }
        let _: i64 = self.run(key, &c);
    }

    /// `DEL key`.
    pub fn del(&mut self, key: &[u8]) {
        let _: i64 = self.run(key, redis::cmd("DEL").arg(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_redis() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn cluster_nodes_lines_parse() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001,host myself,master - 0 0 1 connected 0-5460 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
";
        let (nodes, moving) = parse_nodes(text);
        assert!(moving);
        assert_eq!(nodes.len(), 2);
        let m = nodes.iter().find(|n| n.master).expect("master");
        assert_eq!(m.port, 30001);
        assert_eq!(m.slots, vec![(0, 5460)]);
        assert!(m.flags.is_empty());
        let r = nodes.iter().find(|n| !n.master).expect("replica");
        assert_eq!(r.master_id.as_deref(), Some(m.id.as_str()));
    }
}
