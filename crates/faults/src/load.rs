//! The write load: a source writer (every kind of change the mirror must
//! follow) and a destination writer of native flows (which the mirror must
//! never touch), each on its own thread, paced, surviving server restarts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redmirror_testkit::cluster::{is_conn_error, ClusterWriter};
use redmirror_testkit::flows::Hash;
use redmirror_testkit::invariant::Natives;

/// Organisations never mirrored (passed as `REDMIRROR_FILTERED_ORGS`).
pub const FILTERED_ORGS: [&str; 2] = ["org-hello", "org-demo"];
const ORGS: [&str; 3] = ["org-1", "org-2", "org-3"];
/// Ids `n0..n{NATIVE_SEEDED}` are native on the destination from the start.
pub const NATIVE_SEEDED: u32 = 30;
/// Ids `n{NATIVE_SEEDED}..n{NATIVE_IDS}` may become native during the run.
pub const NATIVE_IDS: u32 = 80;
const FIELDS: [&[u8]; 7] = [
    b"name",
    b"status",
    b"n",
    b"payload",
    b"updatedAt",
    b"flowConfigHistory",
    b"bin\x00\xff",
];

/// Counters shared with the harness.
#[derive(Debug, Default)]
pub struct Stats {
    /// Source write commands acknowledged (a MULTI counts each command).
    pub writes: AtomicU64,
    /// Source commands the server refused (WRONGTYPE, no such key): expected.
    pub refused: AtomicU64,
    /// Source connection failures (server down).
    pub conn_errors: AtomicU64,
    /// Native writes acknowledged on the destination.
    pub native_writes: AtomicU64,
    /// Native writes whose outcome was unsure and had to be read back.
    pub native_unsure: AtomicU64,
}

/// A source flow key.
pub fn key(id: &[u8]) -> Vec<u8> {
    let mut k = b"client:".to_vec();
    k.extend_from_slice(id);
    k
}

/// A flow id from the pool: plain, shared with natives, or not UTF-8.
pub fn flow_id(rng: &mut StdRng, pool: u32) -> Vec<u8> {
    let r: f64 = rng.random();
    if r < 0.85 {
        format!("f{}", rng.random_range(0..pool)).into_bytes()
    } else if r < 0.95 {
        format!("n{}", rng.random_range(0..NATIVE_IDS)).into_bytes()
    } else {
        let mut id = b"\xff\xfeb".to_vec();
        id.extend_from_slice(rng.random_range(0..20u32).to_string().as_bytes());
        id
    }
}

fn text(rng: &mut StdRng, min: usize, max: usize) -> Vec<u8> {
    let n = rng.random_range(min..=max);
    (0..n).map(|_| rng.random_range(b'a'..=b'z')).collect()
}

fn bytes(rng: &mut StdRng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.random()).collect()
}

fn org(rng: &mut StdRng, filtered: f64) -> &'static str {
    if rng.random_bool(filtered) {
        FILTERED_ORGS[rng.random_range(0..FILTERED_ORGS.len())]
    } else {
        ORGS[rng.random_range(0..ORGS.len())]
    }
}

fn full_flow(rng: &mut StdRng, seq: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut f = vec![
        (b"name".to_vec(), text(rng, 3, 12)),
        (b"status".to_vec(), b"active".to_vec()),
        (b"n".to_vec(), seq.to_string().into_bytes()),
        (b"clerkOrganizationId".to_vec(), org(rng, 0.1).as_bytes().to_vec()),
        (b"updatedAt".to_vec(), seq.to_string().into_bytes()),
    ];
    let payload = if rng.random_bool(0.02) { 5000 } else { 300 };
    f.push((b"payload".to_vec(), text(rng, 10, payload)));
    if rng.random_bool(0.2) {
        f.push((b"flowConfigHistory".to_vec(), text(rng, 50, 500)));
    }
    if rng.random_bool(0.05) {
        let v: &[u8] = if rng.random_bool(0.5) { b"true" } else { b"false" };
        f.push((b"isSyncCopy".to_vec(), v.to_vec()));
    }
    if rng.random_bool(0.1) {
        f.push((b"bin\x00\xff".to_vec(), bytes(rng, 16)));
    }
    f
}

/// The commands that write `n` flows (`f0..`) and the ids shared with natives.
fn preload_cmds(seed: u64, n: u32) -> Vec<redis::Cmd> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = Vec::new();
    let ids = (0..n)
        .map(|i| format!("f{i}").into_bytes())
        .chain((0..NATIVE_IDS).map(|i| format!("n{i}").into_bytes()));
    for id in ids {
        let mut c = redis::cmd("HSET");
        c.arg(key(&id));
        for (f, v) in full_flow(&mut rng, 0) {
            c.arg(f).arg(v);
        }
        v.push(c);
        let mut i = redis::cmd("HSET");
        i.arg("clients").arg(&id).arg("1");
        v.push(i);
    }
    v
}

/// Writes `n` flows (`f0..`) and the ids shared with natives, before the mirror starts.
pub fn preload(conn: &mut redis::Connection, seed: u64, n: u32) -> anyhow::Result<u64> {
    let cmds = preload_cmds(seed, n);
    let mut p = redis::pipe();
    for c in &cmds {
        p.add_command(c.clone()).ignore();
    }
    p.query::<()>(conn)?;
    Ok(cmds.len() as u64 / 2)
}

/// [`preload`] on a cluster, each command on the master owning its key.
pub fn preload_cluster(conn: &mut ClusterConn, seed: u64, n: u32) -> anyhow::Result<u64> {
    let cmds = preload_cmds(seed, n);
    for c in &cmds {
        if !SourceConn::run(conn, std::slice::from_ref(c))? {
            anyhow::bail!("the cluster refused a preload write");
        }
    }
    Ok(cmds.len() as u64 / 2)
}

/// A connection with timeouts, or None.
pub fn connect(url: &str) -> Option<redis::Connection> {
    let c = redis::Client::open(url)
        .ok()?
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    c.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    Some(c)
}

/// Connects, retrying until `stop`.
fn reconnect(url: &str, stop: &AtomicBool) -> Option<redis::Connection> {
    loop {
        if let Some(c) = connect(url) {
            return Some(c);
        }
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One random source change as a list of commands (more than one: MULTI).
/// With `same_slot_renames` (a cluster source, where `RENAME` works only
/// within a slot) a rename goes from and to flows whose ids share a hash
/// tag (`{t3}1`, `{t3}4`, ...).
fn source_op(rng: &mut StdRng, pool: u32, seq: u64, same_slot_renames: bool) -> Vec<redis::Cmd> {
    let id = flow_id(rng, pool);
    let k = key(&id);
    let w: u32 = rng.random_range(0..100);
    let mut c = redis::Cmd::new();
    match w {
        0..30 => {
            c.arg("HSET").arg(&k);
            for (f, v) in full_flow(rng, seq) {
                c.arg(f).arg(v);
            }
        }
        30..45 => {
            let f = FIELDS[rng.random_range(0..FIELDS.len())];
            c.arg("HSET").arg(&k).arg(f).arg(text(rng, 1, 40));
        }
        45..50 => {
            c.arg("HINCRBY").arg(&k).arg("n").arg(1);
        }
        50..60 => {
            let f = FIELDS[rng.random_range(0..FIELDS.len())];
            c.arg("HDEL").arg(&k).arg(f);
        }
        60..67 => {
            c.arg("DEL").arg(&k);
        }
        67..72 => {
            c.arg("PEXPIRE").arg(&k).arg(rng.random_range(50..1500));
        }
        72..77 if same_slot_renames => {
            let tag = rng.random_range(0..10u32);
            let from = format!("{{t{tag}}}{}", rng.random_range(0..5u32));
            let to = format!("{{t{tag}}}{}", rng.random_range(0..5u32));
            // The renamed flow is written first: these ids get no other writes.
            let mut h = redis::Cmd::new();
            h.arg("HSET").arg(key(from.as_bytes()));
            for (f, v) in full_flow(rng, seq) {
                h.arg(f).arg(v);
            }
            c.arg("RENAME").arg(key(from.as_bytes())).arg(key(to.as_bytes()));
            return vec![h, c];
        }
        72..77 => {
            c.arg("RENAME").arg(&k).arg(key(&flow_id(rng, pool)));
        }
        77..82 => {
            let o = FILTERED_ORGS[rng.random_range(0..FILTERED_ORGS.len())];
            c.arg("HSET").arg(&k).arg("clerkOrganizationId").arg(o);
        }
        82..87 => {
            c.arg("HSET").arg(&k).arg("clerkOrganizationId").arg(org(rng, 0.0));
        }
        87..91 => {
            c.arg("HSET").arg(&k).arg("flowConfigHistory").arg(text(rng, 20, 200));
        }
        91..93 => {
            if rng.random_bool(0.5) {
                c.arg("HDEL").arg(&k).arg("isSyncCopy");
            } else {
                c.arg("HSET")
                    .arg(&k)
                    .arg("isSyncCopy")
                    .arg(if rng.random_bool(0.5) { "true" } else { "false" });
            }
        }
        93..96 => {
            if rng.random_bool(0.5) {
                c.arg("HSET").arg("clients").arg(&id).arg("1");
            } else {
                c.arg("HDEL").arg("clients").arg(&id);
            }
        }
        96 => {
            // A key of the wrong type: the mirror treats it as absent.
            c.arg("SET").arg(&k).arg("not a hash").arg("NX");
        }
        _ => {
            let mut v = Vec::new();
            for _ in 0..3 {
                let k = key(&flow_id(rng, pool));
                let mut c = redis::Cmd::new();
                if rng.random_bool(0.3) {
                    c.arg("DEL").arg(k);
                } else {
                    c.arg("HSET").arg(k).arg("n").arg(seq).arg("status").arg("batch");
                }
                v.push(c);
            }
            return v;
        }
    }
    vec![c]
}

/// Where the source writer's changes go: one server, or a cluster routed by slot.
pub trait SourceConn: Send + 'static {
    /// Runs one change's commands; Ok(false) when the server refused them
    /// (WRONGTYPE, no such key), Err on a connection failure.
    fn run(&mut self, cmds: &[redis::Cmd]) -> redis::RedisResult<bool>;
    /// (Re)connects, retrying until `stop`; false when stopped first.
    fn reconnect(&mut self, stop: &AtomicBool) -> bool;
    /// Whether renames must stay within a hash slot.
    fn same_slot_renames(&self) -> bool {
        false
    }
}

/// A standalone source: one connection, a change of several commands in MULTI.
pub struct Standalone {
    url: String,
    conn: Option<redis::Connection>,
}

impl Standalone {
    /// Not connected yet ([`SourceConn::reconnect`] connects).
    pub fn new(url: String) -> Standalone {
        Standalone { url, conn: None }
    }
}

impl SourceConn for Standalone {
    fn run(&mut self, cmds: &[redis::Cmd]) -> redis::RedisResult<bool> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::NotConnected)))?;
        run(conn, cmds)
    }

    fn reconnect(&mut self, stop: &AtomicBool) -> bool {
        self.conn = reconnect(&self.url, stop);
        self.conn.is_some()
    }
}

/// Runs `cmds` (in MULTI when more than one); Ok(false) when the server refused.
fn run(conn: &mut redis::Connection, cmds: &[redis::Cmd]) -> redis::RedisResult<bool> {
    let r = if cmds.len() == 1 {
        cmds[0].query::<redis::Value>(conn).map(|_| ())
    } else {
        let mut p = redis::pipe();
        p.atomic();
        for c in cmds {
            p.add_command(c.clone()).ignore();
        }
        p.query::<()>(conn)
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if is_conn_error(&e) => Err(e),
        Err(_) => Ok(false),
    }
}

/// A cluster source: the test kit's [`ClusterWriter`], each command on the
/// master owning its key. A change of several commands runs them one by
/// one (their keys are in different slots).
pub type ClusterConn = ClusterWriter;

impl SourceConn for ClusterConn {
    fn run(&mut self, cmds: &[redis::Cmd]) -> redis::RedisResult<bool> {
        let mut ok = true;
        for c in cmds {
            match self.try_run(c) {
                Ok(_) => {}
                Err(e) if redmirror_testkit::cluster::is_transient(&e) => return Err(e),
                Err(_) => ok = false,
            }
        }
        Ok(ok)
    }

    fn reconnect(&mut self, stop: &AtomicBool) -> bool {
        while !self.refresh() {
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    fn same_slot_renames(&self) -> bool {
        true
    }
}

/// The source writer on a standalone source: `rate` changes per second until `stop`.
pub fn spawn_source_writer(
    url: String,
    rate: u32,
    pool: u32,
    seed: u64,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    spawn_source_writer_on(Standalone::new(url), rate, pool, seed, stats, stop)
}

/// The source writer: `rate` changes per second through `conn` until `stop`.
pub fn spawn_source_writer_on<C: SourceConn>(
    mut conn: C,
    rate: u32,
    pool: u32,
    seed: u64,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("source-writer".into())
        .spawn(move || {
            let mut rng = StdRng::seed_from_u64(seed);
            if !conn.reconnect(&stop) {
                return;
            }
            let same_slot = conn.same_slot_renames();
            let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let mut next = Instant::now();
            let mut seq = 1u64;
            while !stop.load(Ordering::SeqCst) {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                next += period;
                if Instant::now() > next + Duration::from_secs(1) {
                    next = Instant::now(); // fell behind (server down): no catch-up burst
                }
                let cmds = source_op(&mut rng, pool, seq, same_slot);
                seq += 1;
                match conn.run(&cmds) {
                    Ok(true) => {
                        stats.writes.fetch_add(cmds.len() as u64, Ordering::Relaxed);
                    }
                    Ok(false) => {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        stats.conn_errors.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(100));
                        if !conn.reconnect(&stop) {
                            return;
                        }
                    }
                }
            }
        })
        .expect("spawn the source writer")
}

/// A burst of `n` changes in one MULTI/EXEC: all its notifications land in
/// the subscriber's output buffer in one go.
pub fn burst(conn: &mut redis::Connection, rng: &mut StdRng, pool: u32, n: u32) -> redis::RedisResult<u64> {
    let mut p = redis::pipe();
    p.atomic();
    for i in 0..n {
        let k = key(&flow_id(rng, pool));
        match rng.random_range(0..10) {
            0..6 => p.cmd("HSET").arg(k).arg("n").arg(i).arg("status").arg("burst").ignore(),
            6..8 => p.cmd("DEL").arg(k).ignore(),
            8 => p.cmd("HDEL").arg(k).arg("status").ignore(),
            _ => p
                .cmd("HSET")
                .arg(k)
                .arg("clerkOrganizationId")
                .arg(FILTERED_ORGS[0])
                .ignore(),
        };
    }
    // EXEC runs every command; one refused by the server (WRONGTYPE on a
    // key the writer made a string) does not undo the others.
    match p.query::<()>(conn) {
        Err(e) if is_conn_error(&e) => Err(e),
        _ => Ok(n as u64),
    }
}

/// What the native flows on the destination must be: their hashes and
/// their index fields, as the destination's own users left them.
#[derive(Debug, Default, Clone)]
pub struct NativeModel {
    /// id → hash.
    pub hashes: Natives,
    /// id → index field value (None: absent).
    pub index: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

fn native_hash(owner: &str, v: u64) -> Hash {
    [("owner", owner), ("v", &v.to_string())]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// Creates the seeded natives `n0..n{NATIVE_SEEDED}` (before the mirror
/// starts); even ids also get an index field "1", odd ids none.
pub fn seed_natives(dest: &mut redis::Connection) -> anyhow::Result<NativeModel> {
    let mut m = NativeModel::default();
    for i in 0..NATIVE_SEEDED {
        let id = format!("n{i}").into_bytes();
        let h = native_hash("staging", 0);
        let mut c = redis::cmd("HSET");
        c.arg(key(&id));
        for (f, v) in &h {
            c.arg(f).arg(v);
        }
        c.query::<()>(dest)?;
        let idx = if i % 2 == 0 {
            redis::cmd("HSET").arg("clients").arg(&id).arg("1").query::<()>(dest)?;
            Some(b"1".to_vec())
        } else {
            None
        };
        m.hashes.insert(id.clone(), h);
        m.index.insert(id, idx);
    }
    Ok(m)
}

/// A native write whose outcome is unknown (the connection failed): the
/// flow is read back and must be in one of these two states.
struct Unsure {
    error: redis::RedisError,
    id: Vec<u8>,
    /// The hash before (None: the write made a new native, so its index
    /// field is read back too).
    before: Option<Hash>,
    after: Hash,
}

/// What the native writer shares with the harness.
#[derive(Clone, Default)]
pub struct NativeCtl {
    /// The expected natives.
    pub model: Arc<Mutex<NativeModel>>,
    /// Held during each native write; the harness takes it while the destination is down.
    pub gate: Arc<Mutex<()>>,
    /// Bumped by the harness on each destination restart (the writer reconnects).
    pub epoch: Arc<AtomicU64>,
}

/// The destination writer of native flows: edits natives (never removing
/// `owner`, so they never vanish) and now and then makes a new native out
/// of an id that may hold a sync copy, atomically (`MULTI DEL HSET HGET
/// clients EXEC`, recording the index field it found).
pub fn spawn_native_writer(
    url: String,
    rate: u32,
    seed: u64,
    ctl: NativeCtl,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("native-writer".into())
        .spawn(move || {
            let NativeCtl { model, gate, epoch } = ctl;
            let mut rng = StdRng::seed_from_u64(seed);
            let Some(mut conn) = reconnect(&url, &stop) else { return };
            let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let mut v = 1u64;
            let mut seen = epoch.load(Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(period);
                let _g = gate.lock().expect("gate");
                if epoch.load(Ordering::SeqCst) != seen {
                    // The destination was restarted: a fresh connection, so
                    // no write goes to a dead socket with an unsure outcome.
                    seen = epoch.load(Ordering::SeqCst);
                    match reconnect(&url, &stop) {
                        Some(c) => conn = c,
                        None => return,
                    }
                }
                v += 1;
                let mut m = model.lock().expect("model");
                let convert = rng.random_bool(0.15) && (m.hashes.len() as u32) < NATIVE_IDS;
                let outcome = if convert {
                    let id = loop {
                        let id = format!("n{}", rng.random_range(NATIVE_SEEDED..NATIVE_IDS)).into_bytes();
                        if !m.hashes.contains_key(&id) {
                            break id;
                        }
                    };
                    let h = native_hash("staging-new", v);
                    let k = key(&id);
                    let mut p = redis::pipe();
                    p.atomic().cmd("DEL").arg(&k).ignore().cmd("HSET").arg(&k);
                    for (f, val) in &h {
                        p.arg(f).arg(val);
                    }
                    p.ignore().cmd("HGET").arg("clients").arg(&id);
                    match p.query::<(Option<Vec<u8>>,)>(&mut conn) {
                        Ok((idx,)) => {
                            m.hashes.insert(id.clone(), h);
                            m.index.insert(id, idx);
                            Ok(())
                        }
                        Err(error) => Err(Unsure {
                            error,
                            id,
                            before: None,
                            after: h,
                        }),
                    }
                } else {
                    let ids: Vec<&Vec<u8>> = m.hashes.keys().collect();
                    let id = ids[rng.random_range(0..ids.len())].clone();
                    let before = m.hashes[&id].clone();
                    let mut after = before.clone();
                    let mut c = redis::Cmd::new();
                    match rng.random_range(0..3) {
                        0 => {
                            c.arg("HSET").arg(key(&id)).arg("v").arg(v);
                            after.insert(b"v".to_vec(), v.to_string().into_bytes());
                        }
                        1 => {
                            let note = text(&mut rng, 1, 30);
                            c.arg("HSET").arg(key(&id)).arg("note").arg(&note);
                            after.insert(b"note".to_vec(), note);
                        }
                        _ => {
                            c.arg("HDEL").arg(key(&id)).arg("note");
                            after.remove(b"note".as_slice());
                        }
                    }
                    match c.query::<redis::Value>(&mut conn) {
                        Ok(_) => {
                            m.hashes.insert(id, after);
                            Ok(())
                        }
                        Err(error) => Err(Unsure {
                            error,
                            id,
                            before: Some(before),
                            after,
                        }),
                    }
                };
                match outcome {
                    Ok(()) => {
                        stats.native_writes.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Unsure {
                        error,
                        id,
                        before,
                        after,
                    }) => {
                        // Unsure whether it happened: read back, accept
                        // either the old or the new state, nothing else.
                        stats.native_unsure.fetch_add(1, Ordering::Relaxed);
                        eprintln!(
                            "  native writer: {error}; reading {} back",
                            String::from_utf8_lossy(&id)
                        );
                        drop(m);
                        let Some(c) = reconnect(&url, &stop) else { return };
                        conn = c;
                        let mut m = model.lock().expect("model");
                        let read = |conn: &mut redis::Connection| -> redis::RedisResult<(Hash, Option<Vec<u8>>)> {
                            let mut p = redis::pipe();
                            p.atomic()
                                .cmd("HGETALL")
                                .arg(key(&id))
                                .cmd("HGET")
                                .arg("clients")
                                .arg(&id);
                            p.query(conn)
                        };
                        let (got, idx) = loop {
                            match read(&mut conn) {
                                Ok(r) => break r,
                                Err(_) if stop.load(Ordering::SeqCst) => return,
                                Err(_) => {
                                    std::thread::sleep(Duration::from_millis(100));
                                    if let Some(c) = connect(&url) {
                                        conn = c;
                                    }
                                }
                            }
                        };
                        if got == after {
                            if before.is_none() {
                                m.index.insert(id.clone(), idx);
                            }
                            m.hashes.insert(id, after);
                        } else if before.as_ref() != Some(&got) && before.is_some() {
                            eprintln!(
                                "  native writer: native {} is neither its old nor its new state",
                                String::from_utf8_lossy(&id)
                            );
                        }
                    }
                }
            }
        })
        .expect("spawn the native writer")
}
