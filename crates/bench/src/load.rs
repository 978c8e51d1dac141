//! Load generators (Rust, pipelined) and the independent latency observer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn conn(url: &str) -> anyhow::Result<redis::Connection> {
    Ok(redis::Client::open(url)?.get_connection()?)
}

/// The 10 fields of a benchmark flow (about 450 bytes).
pub fn flow_fields(seed: u64) -> Vec<(String, String)> {
    (0..10)
        .map(|i| (format!("field{i}"), format!("value-{seed:016}-{i}-{}", "x".repeat(20))))
        .collect()
}

fn hset_flow(pipe: &mut redis::Pipeline, key: &str, seed: u64, marker: bool) {
    let c = pipe.cmd("HSET").arg(key);
    for (f, v) in flow_fields(seed) {
        c.arg(f).arg(v);
    }
    if marker {
        c.arg("isSyncCopy").arg("true");
    }
    c.ignore();
}

/// Writes `n` unique flows as fast as the source takes them (`threads` connections).
pub fn write_burst(url: &str, prefix: &str, n: u64, threads: u64) -> anyhow::Result<()> {
    let jobs = (0..threads)
        .map(|t| (url.to_string(), (t..n).step_by(threads as usize).collect()))
        .collect();
    write_flows(jobs, prefix)
}

/// Writes flows `client:{prefix}-{i}`, one thread per `(url, ids)` job,
/// 500 `HSET`s per round trip.
fn write_flows(jobs: Vec<(String, Vec<u64>)>, prefix: &str) -> anyhow::Result<()> {
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|(url, ids)| {
            let prefix = prefix.to_string();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut c = conn(&url)?;
                for chunk in ids.chunks(500) {
                    let mut pipe = redis::pipe();
                    for &i in chunk {
                        hset_flow(&mut pipe, &format!("client:{prefix}-{i}"), i, false);
                    }
                    let _: () = pipe.query(&mut c)?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    Ok(())
}

/// [`write_burst`] on a cluster: the same flows (`client:{prefix}-{i}`),
/// grouped by the master owning each key's slot, one pipelining connection
/// per master (500 `HSET`s per round trip).
pub fn write_burst_cluster(
    cluster: &redmirror_testkit::cluster::RedisCluster,
    prefix: &str,
    n: u64,
) -> anyhow::Result<()> {
    use redmirror_testkit::cluster::key_slot;
    let masters = cluster.masters();
    let nodes = cluster.topology(masters[0]);
    let owner = |slot: u16| {
        nodes
            .iter()
            .find(|m| m.master && m.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|m| m.port)
    };
    let mut slot_owner = vec![0u16; 16384];
    for (slot, o) in slot_owner.iter_mut().enumerate() {
        *o = owner(slot as u16).ok_or_else(|| anyhow::anyhow!("no master serves slot {slot}"))?;
    }
    let mut per_master: std::collections::BTreeMap<u16, Vec<u64>> = Default::default();
    for i in 0..n {
        let key = format!("client:{prefix}-{i}");
        per_master
            .entry(slot_owner[key_slot(key.as_bytes()) as usize])
            .or_default()
            .push(i);
    }
    let jobs = per_master
        .into_iter()
        .map(|(port, ids)| (format!("redis://127.0.0.1:{port}"), ids))
        .collect();
    write_flows(jobs, prefix)
}

/// Writes unique flows at a steady `rate` per second for `secs`, in 1 ms
/// ticks; each key carries its write time: `client:{prefix}{seq}-{micros}`.
pub fn write_steady(url: &str, prefix: &str, rate: u64, secs: u64, threads: u64) -> anyhow::Result<u64> {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (url, prefix) = (url.to_string(), prefix.to_string());
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut c = conn(&url)?;
                let per_ms = rate as f64 / threads as f64 / 1000.0;
                let start = Instant::now();
                let ticks = secs * 1000;
                let mut owed = 0.0;
                let mut sent = 0u64;
                for tick in 0..ticks {
                    let due = start + Duration::from_millis(tick);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now); // pacing the offered load
                    }
                    owed += per_ms;
                    let k = owed as u64;
                    owed -= k as f64;
                    if k == 0 {
                        continue;
                    }
                    let mut pipe = redis::pipe();
                    for _ in 0..k {
                        let seq = sent * threads + t;
                        hset_flow(&mut pipe, &format!("client:{prefix}{seq}-{}", now_us()), seq, false);
                        sent += 1;
                    }
                    let _: () = pipe.query(&mut c)?;
                }
                Ok(sent)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    Ok(total)
}

/// Keys seen and their latencies (µs).
type Seen = Arc<Mutex<(HashSet<Vec<u8>>, Vec<u64>)>>;

/// Latencies observed by a keyevent subscriber (µs).
pub struct Latencies {
    stop: Arc<AtomicBool>,
    seen: Seen,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Summary of observed latencies.
pub struct Summary {
    sorted: Vec<u64>,
    pub missing: u64,
}

impl Summary {
    /// Percentile in ms.
    pub fn p(&self, pct: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let i = ((pct / 100.0) * (self.sorted.len() - 1) as f64).round() as usize;
        self.sorted[i.min(self.sorted.len() - 1)] as f64 / 1000.0
    }
    /// Max in ms.
    pub fn max(&self) -> f64 {
        self.sorted.last().map(|v| *v as f64 / 1000.0).unwrap_or(f64::NAN)
    }
    /// As JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"p50_ms": self.p(50.0), "p99_ms": self.p(99.0), "p999_ms": self.p(99.9), "max_ms": self.max(), "observed": self.sorted.len(), "missing": self.missing})
    }
}

impl Latencies {
    /// Subscribes to hash keyevents on `url` and records, for each new key
    /// starting with `client:{prefix}`, now minus the time in its name.
    pub fn observe(url: &str, prefix: &str) -> anyhow::Result<Latencies> {
        let mut c = conn(url)?;
        c.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Seen = Arc::default();
        let want = format!("client:{prefix}").into_bytes();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut ps = c.as_pubsub();
                let ok = ps.psubscribe("__keyevent@0__:hset").is_ok();
                let _ = ready_tx.send(ok);
                while !stop.load(Ordering::Relaxed) {
                    let Ok(msg) = ps.get_message() else { continue };
                    let now = now_us();
                    let key: Vec<u8> = msg.get_payload_bytes().to_vec();
                    if !key.starts_with(&want) {
                        continue;
                    }
                    let Some(ts) = std::str::from_utf8(&key)
                        .ok()
                        .and_then(|k| k.rsplit_once('-'))
                        .and_then(|(_, t)| t.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    let mut g = seen.lock().expect("lock");
                    if g.0.insert(key) {
                        g.1.push(now.saturating_sub(ts));
                    }
                }
            })
        };
        if !ready_rx.recv_timeout(Duration::from_secs(10)).unwrap_or(false) {
            bail!("cannot subscribe to keyevents on {url}");
        }
        Ok(Latencies {
            stop,
            seen,
            thread: Some(thread),
        })
    }

    /// Waits until `expected` keys were seen (or `deadline`), then summarises.
    pub fn finish(mut self, expected: u64, deadline: Duration) -> Summary {
        let end = Instant::now() + deadline;
        while Instant::now() < end && (self.seen.lock().expect("lock").1.len() as u64) < expected {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut sorted = std::mem::take(&mut self.seen.lock().expect("lock").1);
        sorted.sort_unstable();
        let missing = expected.saturating_sub(sorted.len() as u64);
        Summary { sorted, missing }
    }
}

/// Rewrites `flows` flows as fast as possible for `secs`; returns writes made.
pub fn write_hot(url: &str, flows: u64, secs: u64, threads: u64) -> anyhow::Result<u64> {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let url = url.to_string();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut c = conn(&url)?;
                let end = Instant::now() + Duration::from_secs(secs);
                let mut n = 0u64;
                while Instant::now() < end {
                    let mut pipe = redis::pipe();
                    for _ in 0..200 {
                        let id = (n * threads + t) % flows;
                        pipe.cmd("HSET")
                            .arg(format!("client:hot-{id}"))
                            .arg("v")
                            .arg(n)
                            .arg("writer")
                            .arg(t)
                            .arg("payload")
                            .arg("p".repeat(300))
                            .ignore();
                        n += 1;
                    }
                    let _: () = pipe.query(&mut c)?;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    Ok(total)
}

/// True once every hot flow on the destination equals the source (+ marker).
pub fn wait_hot_converged(src: &str, dst: &str, flows: u64, deadline: Duration) -> anyhow::Result<bool> {
    let (mut s, mut d) = (conn(src)?, conn(dst)?);
    let end = Instant::now() + deadline;
    loop {
        let mut ok = true;
        for id in 0..flows {
            let key = format!("client:hot-{id}");
            let mut a: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL").arg(&key).query(&mut s)?;
            let b: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL").arg(&key).query(&mut d)?;
            a.insert(b"isSyncCopy".to_vec(), b"true".to_vec());
            if a != b {
                ok = false;
                break;
            }
        }
        if ok {
            return Ok(true);
        }
        if Instant::now() > end {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` flows on the source and their exact sync copies (and index) on the destination.
pub fn fill_in_sync(src: &str, dst: &str, prefix: &str, n: u64) -> anyhow::Result<()> {
    let jobs: Vec<(String, bool)> = vec![(src.to_string(), false), (dst.to_string(), true)];
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|(url, dest)| {
            let prefix = prefix.to_string();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut c = conn(&url)?;
                let mut i = 0;
                while i < n {
                    let mut pipe = redis::pipe();
                    for _ in 0..1000 {
                        if i >= n {
                            break;
                        }
                        hset_flow(&mut pipe, &format!("client:{prefix}-{i}"), i, dest);
                        if dest {
                            pipe.cmd("HSET")
                                .arg("clients")
                                .arg(format!("{prefix}-{i}"))
                                .arg("1")
                                .ignore();
                        }
                        i += 1;
                    }
                    let _: () = pipe.query(&mut c)?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("filler panicked"))??;
    }
    Ok(())
}

/// Changes one field of every `every`-th flow's copy on the destination.
pub fn drift(dst: &str, prefix: &str, n: u64, every: u64) -> anyhow::Result<()> {
    let mut c = conn(dst)?;
    let mut pipe = redis::pipe();
    for i in (0..n).step_by(every as usize) {
        pipe.cmd("HSET")
            .arg(format!("client:{prefix}-{i}"))
            .arg("field0")
            .arg("drifted")
            .ignore();
        if pipe.cmd_iter().count() >= 1000 {
            let _: () = pipe.query(&mut c)?;
            pipe = redis::pipe();
        }
    }
    let _: () = pipe.query(&mut c)?;
    Ok(())
}

/// The old batch job's shape: per flow, HGETALL on the source, DEL and HSET
/// on the destination, one round trip each. Returns flows per second.
pub fn plain_loop(src: &str, dst: &str, prefix: &str, n: u64) -> anyhow::Result<f64> {
    let (mut s, mut d) = (conn(src)?, conn(dst)?);
    let t0 = Instant::now();
    for i in 0..n {
        let key = format!("client:{prefix}-{i}");
        let fields: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL").arg(&key).query(&mut s)?;
        let _: i64 = redis::cmd("DEL").arg(&key).query(&mut d)?;
        let mut c = redis::cmd("HSET");
        c.arg(&key);
        for (f, v) in &fields {
            c.arg(f).arg(v);
        }
        c.arg("isSyncCopy").arg("true");
        let _: i64 = c.query(&mut d)?;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// Produces `n` upsert events (10 fields each) to `topic`.
pub fn produce_events(bootstrap: &str, topic: &str, n: u64) -> anyhow::Result<()> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use redmirror_core::event::Origin;
    use redmirror_core::FlowEvent;
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("compression.type", "lz4")
        .set("allow.auto.create.topics", "true")
        .create()?;
    for i in 0..n {
        let id = format!("rp-{i}");
        let fields = flow_fields(i)
            .into_iter()
            .map(|(f, v)| (bytes::Bytes::from(f), bytes::Bytes::from(v)))
            .collect();
        let ev = FlowEvent::upsert(
            bytes::Bytes::from(id.clone()),
            fields,
            (now_us()) as i64,
            Origin::Capture,
            "bench",
        );
        let payload = ev.encode_to_bytes();
        let mut rec = BaseRecord::to(topic).key(id.as_str()).payload(&payload);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    rec = r;
                    p.poll(Duration::from_millis(10));
                }
                Err((e, _)) => bail!("produce: {e}"),
            }
        }
        if i % 1000 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(300))?;
    Ok(())
}

/// Keys matching `pattern`.
pub fn count_keys(url: &str, pattern: &str) -> anyhow::Result<u64> {
    let mut c = conn(url)?;
    let mut cursor = 0u64;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(10_000)
            .query(&mut c)?;
        n += keys.len() as u64;
        cursor = next;
        if cursor == 0 {
            return Ok(n);
        }
    }
}
