//! Servers and redmirror processes for the benchmarks (over
//! `redmirror_testkit::process`), with their peak RSS and CPU time read
//! from /proc.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redmirror_testkit::cluster::RedisCluster;
use redmirror_testkit::process::{Inherit, Launch, Process};
use redmirror_testkit::{free_port, Broker, RedisOptions, RedisServer};

/// Source, its replica (the yardstick), destination and broker; a
/// [`RedisCluster`] in place of the source or the destination when asked
/// for (the standalone server is then started but left idle).
pub struct Servers {
    pub source: RedisServer,
    pub replica: RedisServer,
    pub dest: RedisServer,
    pub broker: Broker,
    pub topic: String,
    pub group: String,
    pub source_cluster: Option<RedisCluster>,
    pub dest_cluster: Option<RedisCluster>,
}

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Servers {
    /// Starts everything; `observe` turns on hash keyevents on the replica and destination.
    pub fn start(observe: bool) -> anyhow::Result<Servers> {
        Self::start_shaped(observe, false, false)
    }

    /// Like [`Servers::start`], with a 3-master cluster as the source and/or
    /// the destination. A destination cluster's keyspace notifications are
    /// turned off, as on the standalone destination.
    pub fn start_shaped(observe: bool, source_cluster: bool, dest_cluster: bool) -> anyhow::Result<Servers> {
        let source = RedisServer::start();
        let notify = |o: RedisOptions| {
            if observe {
                RedisOptions {
                    notify: Some("Eh".into()),
                    ..o
                }
            } else {
                o
            }
        };
        let replica = RedisServer::start_with(notify(
            RedisOptions::default().arg("replicaof", &format!("127.0.0.1 {}", source.port())),
        ));
        let dest = RedisServer::start_with(notify(RedisOptions::default()));
        let broker = Broker::start();
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let s = Servers {
            source,
            replica,
            dest,
            broker,
            topic: format!("bench-{}-{seq}", std::process::id()),
            group: format!("bench-group-{}-{seq}", std::process::id()),
            source_cluster: source_cluster.then(RedisCluster::start),
            dest_cluster: dest_cluster.then(RedisCluster::start),
        };
        if let Some(c) = &s.dest_cluster {
            for port in c.ports() {
                let _: () = c.cmd_on(port, &[b"CONFIG", b"SET", b"notify-keyspace-events", b""]);
            }
        }
        s.wait_replica_caught_up(Duration::from_secs(30))?;
        Ok(s)
    }

    fn repl_offset(server: &RedisServer, field: &str) -> i64 {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut server.conn())
            .unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1)
    }

    /// Waits until the replica has everything the source has now.
    pub fn wait_replica_caught_up(&self, deadline: Duration) -> anyhow::Result<()> {
        let want = Self::repl_offset(&self.source, "master_repl_offset");
        let end = Instant::now() + deadline;
        loop {
            let link: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut self.replica.conn())
                .unwrap_or_default();
            if link.contains("master_link_status:up") && Self::repl_offset(&self.replica, "master_repl_offset") >= want
            {
                return Ok(());
            }
            if Instant::now() > end {
                bail!("replica did not catch up within {deadline:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The URL redmirror reads from: the cluster's when there is one.
    pub fn source_url(&self) -> String {
        self.source_cluster
            .as_ref()
            .map_or_else(|| self.source.url(), RedisCluster::url)
    }

    /// The URL redmirror writes to: the cluster's when there is one.
    pub fn dest_url(&self) -> String {
        self.dest_cluster
            .as_ref()
            .map_or_else(|| self.dest.url(), RedisCluster::url)
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("REDMIRROR_SOURCE_URL".into(), self.source_url()),
            ("REDMIRROR_DEST_URL".into(), self.dest_url()),
            ("REDMIRROR_KAFKA_BROKERS".into(), self.broker.bootstrap()),
            ("REDMIRROR_TOPIC".into(), self.topic.clone()),
            ("REDMIRROR_GROUP_ID".into(), self.group.clone()),
            ("REDMIRROR_KAFKA_SESSION_TIMEOUT_MS".into(), "6000".into()),
            ("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into()),
            ("REDMIRROR_LOG".into(), "warn".into()),
        ]
    }
}

/// The `redmirror` binary next to this one (same target directory).
pub fn redmirror_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.parent().context("exe dir")?.join("redmirror");
    if !bin.is_file() {
        bail!("{} not found: build it first (scripts/bench does)", bin.display());
    }
    Ok(bin)
}

/// A redmirror process; killed on drop.
pub struct Proc {
    pub name: String,
    process: Process,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Starts `redmirror {role}`.
    pub fn role(s: &Servers, name: &str, role: &str, extra: &[(&str, &str)]) -> anyhow::Result<Proc> {
        let http = free_port();
        Self::spawn(s, name, &[role], http, extra)
    }

    /// Starts `redmirror {args}`.
    pub fn spawn(s: &Servers, name: &str, args: &[&str], http: u16, extra: &[(&str, &str)]) -> anyhow::Result<Proc> {
        let dir = tempfile::tempdir()?;
        let mut launch = Launch::new(redmirror_bin()?, args, dir.path().join("log"))
            .envs(s.env())
            .envs(extra.iter().copied());
        launch.http_port = http;
        // The servers are the bench's own; Kafka client properties
        // (`REDMIRROR_KAFKA_*`, e.g. `REDMIRROR_KAFKA_LINGER_MS`) pass
        // through so settings can be compared.
        launch.inherit = Inherit::KafkaProperties;
        let process = Process::spawn(&launch).with_context(|| format!("spawn {name}"))?;
        Ok(Proc {
            name: name.into(),
            process,
            _dir: dir,
        })
    }

    /// Peak resident set (VmHWM), MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.process.peak_rss_mib()
    }

    /// User + system CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.process.cpu_seconds()
    }

    /// A sample from `/metrics` (0 when absent or unreachable).
    pub fn metric(&self, sample: &str) -> f64 {
        self.process.metric(sample).unwrap_or(0.0)
    }

    /// Waits until a probe written on the source reaches the destination.
    pub fn wait_ready(&self, s: &Servers) -> anyhow::Result<()> {
        let key: &[u8] = b"client:bench-probe";
        let mut src = Side::new(&s.source, s.source_cluster.as_ref())?;
        let mut dst = Side::new(&s.dest, s.dest_cluster.as_ref())?;
        let end = Instant::now() + Duration::from_secs(60);
        let mut n = 0u64;
        loop {
            if n.is_multiple_of(100) {
                let _: i64 = src.run(key, redis::cmd("HSET").arg(key).arg("n").arg(n))?;
            }
            n += 1;
            let e: i64 = dst.run(key, redis::cmd("EXISTS").arg(key))?;
            if e == 1 {
                let _: i64 = src.run(key, redis::cmd("DEL").arg(key))?;
                return Ok(());
            }
            if Instant::now() > end {
                bail!("{} not ready within 60 s:\n{}", self.name, self.process.output());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// kill -9 (after recording RSS and CPU).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM, then waits up to 30 s for the exit (kill -9 after that).
    pub fn terminate(&mut self) {
        self.process.terminate(Duration::from_secs(30));
    }

    /// Waits for the process to exit; its output.
    pub fn wait_output(&mut self, deadline: Duration) -> anyhow::Result<String> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.process.try_wait()? {
                let out = std::fs::read_to_string(self.process.log_path())?;
                if !status.success() {
                    bail!("{} failed ({status}):\n{out}", self.name);
                }
                return Ok(out);
            }
            if Instant::now() > end {
                self.kill();
                bail!("{} did not finish within {deadline:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One side (source or destination), a server or a cluster, for single-key commands.
enum Side {
    Server(redis::Connection),
    Cluster(redmirror_testkit::cluster::ClusterWriter),
}

impl Side {
    fn new(server: &RedisServer, cluster: Option<&RedisCluster>) -> anyhow::Result<Side> {
        Ok(match cluster {
            Some(c) => Side::Cluster(c.writer()),
            None => Side::Server(server.conn()),
        })
    }

    fn run<T: redis::FromRedisValue>(&mut self, key: &[u8], cmd: &redis::Cmd) -> anyhow::Result<T> {
        Ok(match self {
            Side::Server(c) => cmd.query(c)?,
            Side::Cluster(w) => w.run(key, cmd),
        })
    }
}

/// Waits until a metric reaches `target`; the time it took.
pub fn wait_metric(p: &Proc, sample: &str, target: f64, deadline: Duration) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    loop {
        if p.metric(sample) >= target {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > deadline {
            bail!(
                "{sample} did not reach {target} within {deadline:?} (at {})",
                p.metric(sample)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// When a counter first moved and when it reached `target`.
pub fn time_metric_span(p: &Proc, sample: &str, target: f64, deadline: Duration) -> anyhow::Result<(Instant, Instant)> {
    let t0 = Instant::now();
    let mut first = None;
    loop {
        let v = p.metric(sample);
        let now = Instant::now();
        if v > 0.0 && first.is_none() {
            first = Some(now);
        }
        if v >= target {
            return Ok((first.unwrap_or(now), now));
        }
        if t0.elapsed() > deadline {
            bail!("{sample} did not reach {target} within {deadline:?} (at {v})");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn json_out(out: &str) -> anyhow::Result<serde_json::Value> {
    let start = out
        .find("\n{")
        .map(|i| i + 1)
        .or_else(|| out.starts_with('{').then_some(0))
        .context("no JSON in output")?;
    let end = out.rfind('}').context("no JSON end")?;
    Ok(serde_json::from_str(&out[start..=end])?)
}

/// CPU seconds (user + system) a redis-server has used so far (`INFO cpu`).
pub fn redis_cpu(server: &RedisServer) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query(&mut server.conn())?;
    Ok(info
        .lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_user:")
                .or_else(|| l.strip_prefix("used_cpu_sys:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum())
}

/// CPU seconds (user + system) a cluster's masters have used so far, summed.
pub fn cluster_cpu(c: &RedisCluster) -> anyhow::Result<f64> {
    c.masters().into_iter().map(|p| redis_cpu(c.node(p))).sum()
}

/// One command's line of `INFO commandstats`.
#[derive(Debug, serde::Serialize)]
pub struct CommandStat {
    /// The command, lower case.
    pub command: String,
    /// How many times it ran.
    pub calls: u64,
    /// Its total run time, in µs.
    pub usec: u64,
}

/// `INFO commandstats`, most expensive first.
pub fn command_stats(server: &RedisServer) -> anyhow::Result<Vec<CommandStat>> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut server.conn())?;
    let mut out: Vec<CommandStat> = info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |k: &str| -> Option<u64> {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
            };
            Some(CommandStat {
                command: name.to_string(),
                calls: field("calls")?,
                usec: field("usec")?,
            })
        })
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.usec));
    Ok(out)
}

/// Clears a server's command statistics (`CONFIG RESETSTAT`).
pub fn reset_stats(server: &RedisServer) -> anyhow::Result<()> {
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut server.conn())?;
    Ok(())
}

/// `redmirror reconcile --once --dry-run --json`: the report and the process.
pub fn reconcile_once(s: &Servers, name: &str) -> anyhow::Result<(serde_json::Value, Proc)> {
    let mut p = Proc::spawn(
        s,
        name,
        &["reconcile", "--once", "--dry-run", "--json"],
        free_port(),
        &[("REDMIRROR_RECONCILE_BARRIER_TIMEOUT", "1s")],
    )?;
    let out = p.wait_output(Duration::from_secs(1800))?;
    Ok((json_out(&out)?, p))
}

/// `redmirror replay --from-beginning --json` on `topic`.
pub fn replay(s: &Servers, topic: &str) -> anyhow::Result<(serde_json::Value, Proc)> {
    let mut p = Proc::spawn(
        s,
        "replay",
        &["replay", "--from-beginning", "--json"],
        free_port(),
        &[("REDMIRROR_TOPIC", topic)],
    )?;
    let out = p.wait_output(Duration::from_secs(1800))?;
    Ok((json_out(&out)?, p))
}
