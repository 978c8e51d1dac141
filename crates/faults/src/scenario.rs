//! The scenarios: servers, broker and redmirror processes started fresh for
//! each, a steady write load, faults injected at random moments, then a
//! bounded wait for the invariant to hold again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redmirror_testkit::invariant::{self, Rules};
use redmirror_testkit::proxy::Proxy;
use redmirror_testkit::{Broker, RedisOptions, RedisServer};
use serde_json::{json, Value};

use crate::load::{self, NativeCtl, Stats};
use crate::procs::{self, Proc, ADMIN_TOKEN};

/// Every scenario, in run order.
pub const ALL: [&str; 14] = [
    "kill-run",
    "kill-capture",
    "kill-apply",
    "broker-freeze",
    "broker-restart",
    "dest-restart",
    "dest-down",
    "source-restart",
    "pubsub-cut",
    "net-cut",
    "source-blackhole",
    "source-failover",
    "rebalance",
    "duplicates",
];

/// Sizes and times of a run.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Load time per scenario.
    pub load: Duration,
    /// Source changes per second.
    pub rate: u32,
    /// Native writes per second on the destination.
    pub native_rate: u32,
    /// Plain flow ids in the pool (`f0..`).
    pub pool: u32,
    /// Flows written before the mirror starts.
    pub preload: u32,
    /// Bound on convergence after the load stops.
    pub converge: Duration,
    /// Seconds between injections (uniform in this range).
    pub gap: (f64, f64),
    /// Broker freeze (and durable-broker outage) length range, seconds.
    pub freeze: (f64, f64),
    /// Long destination outage range (`dest-down`), seconds.
    pub outage: (f64, f64),
    /// `REDMIRROR_RECONCILE_INTERVAL`.
    pub reconcile_interval: String,
    /// Where logs go.
    pub out_dir: PathBuf,
}

/// What one scenario measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Scenario name.
    pub name: String,
    /// Its seed.
    pub seed: u64,
    /// Load seconds (including injections that ran over).
    pub load_secs: f64,
    /// Faults injected.
    pub injections: u32,
    /// Source writes acknowledged.
    pub events: u64,
    /// Native writes acknowledged on the destination.
    pub native_writes: u64,
    /// Seconds from the end of the load until the invariant held (None: never within the bound).
    pub converge_secs: Option<f64>,
    /// Violations at the end.
    pub violations: u64,
    /// The checker's last report.
    pub report: String,
    /// Highest peak RSS of any redmirror process, MiB.
    pub peak_rss_mib: f64,
    /// What was injected, when.
    pub log: Vec<String>,
    /// Processes that exited by themselves.
    pub unplanned_exits: Vec<String>,
    /// Graceful stops that were slow or had to be killed.
    pub slow_stops: Vec<String>,
    /// Longest time from a fault to the destination holding a change made
    /// just after it, seconds (scenarios that measure it: `source-blackhole`).
    pub max_recover_secs: Option<f64>,
    /// Capture re-subscriptions seen in the logs.
    pub resubscriptions: u32,
    /// Longest time capture was not subscribed (subscription lost → re-subscribed), seconds.
    pub max_blind_secs: f64,
    /// The final reconcile pass (drift found and repaired).
    pub reconcile: Value,
    /// Why the scenario could not run to the end.
    pub error: Option<String>,
    /// Wall time of the whole scenario.
    pub wall_secs: f64,
    /// Where the process logs are.
    pub log_dir: String,
}

impl Outcome {
    /// JSON for results.json.
    pub fn json(&self) -> Value {
        json!({
            "name": self.name,
            "seed": self.seed,
            "load_secs": self.load_secs,
            "injections": self.injections,
            "events": self.events,
            "native_writes": self.native_writes,
            "converge_secs": self.converge_secs,
            "violations": self.violations,
            "report": self.report,
            "peak_rss_mib": self.peak_rss_mib,
            "injection_log": self.log,
            "unplanned_exits": self.unplanned_exits,
            "slow_stops": self.slow_stops,
            "resubscriptions": self.resubscriptions,
            "max_capture_blind_secs": self.max_blind_secs,
            "max_recover_secs": self.max_recover_secs,
            "final_reconcile": self.reconcile,
            "error": self.error,
            "wall_secs": self.wall_secs,
            "log_dir": self.log_dir,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Topology {
    /// One `redmirror run`.
    Run,
    /// `capture`, `apply` and `reconcile` processes.
    Split,
}

/// Everything one scenario runs on.
struct Env {
    name: String,
    source: RedisServer,
    dest: RedisServer,
    broker: Broker,
    /// In front of the destination (`net-cut`).
    proxy: Option<Proxy>,
    /// In front of the source (`source-blackhole`); the load and the
    /// checker go to the source directly.
    source_proxy: Option<Proxy>,
    topic: String,
    group: String,
    log_dir: PathBuf,
    procs: Vec<Proc>,
    stats: Arc<Stats>,
    natives: NativeCtl,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    t0: Instant,
    log: Vec<String>,
    opts: Opts,
    /// Scenario-specific counter (alternation of injection kinds).
    turn: u32,
    /// Longest fault-to-recovery time measured so far (`source-blackhole`).
    max_recover: Option<f64>,
}

impl Env {
    fn base_env(&self) -> Vec<(String, String)> {
        let dest_url = match &self.proxy {
            Some(p) => p.url(),
            None => self.dest.url(),
        };
        let source_url = match &self.source_proxy {
            Some(p) => p.url(),
            None => self.source.url(),
        };
        [
            ("REDMIRROR_SOURCE_URL", source_url),
            ("REDMIRROR_DEST_URL", dest_url),
            ("REDMIRROR_KAFKA_BROKERS", self.broker.bootstrap()),
            ("REDMIRROR_TOPIC", self.topic.clone()),
            ("REDMIRROR_GROUP_ID", self.group.clone()),
            ("REDMIRROR_FILTERED_ORGS", load::FILTERED_ORGS.join(",")),
            ("REDMIRROR_RECONCILE_INTERVAL", self.opts.reconcile_interval.clone()),
            ("REDMIRROR_LEASE_TTL", "2s".into()),
            ("REDMIRROR_KAFKA_SESSION_TIMEOUT_MS", "6000".into()),
            ("REDMIRROR_ADMIN_TOKEN", ADMIN_TOKEN.into()),
            (
                "REDMIRROR_LOG",
                std::env::var("REDMIRROR_FAULTS_LOG").unwrap_or_else(|_| "info".into()),
            ),
            ("REDMIRROR_SHUTDOWN_TIMEOUT", procs::SHUTDOWN_TIMEOUT.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn add_proc(&mut self, name: &str, role: &str) -> anyhow::Result<()> {
        let mut p = Proc::new(name, &[role], self.base_env(), &self.log_dir);
        p.start()?;
        self.procs.push(p);
        Ok(())
    }

    fn proc(&mut self, name: &str) -> &mut Proc {
        self.procs.iter_mut().find(|p| p.name == name).expect("known process")
    }

    fn note(&mut self, what: String) {
        let line = format!("t={:6.1}s {what}", self.t0.elapsed().as_secs_f64());
        println!("  {line}");
        self.log.push(line);
    }

    /// Waits `d` while supervising the processes (restart on unplanned
    /// exit) and sampling their RSS.
    fn idle(&mut self, d: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + d;
        loop {
            for p in &mut self.procs {
                p.supervise()?;
            }
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(200)));
        }
    }

    /// Writes a probe on the source and waits until it reaches the destination.
    fn wait_ready(&mut self, deadline: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + deadline;
        let mut src = load::connect(&self.source.url()).context("connect source")?;
        let mut n = 0u64;
        loop {
            if n.is_multiple_of(25) {
                redis::cmd("HSET")
                    .arg("client:probe")
                    .arg("n")
                    .arg(n)
                    .query::<()>(&mut src)?;
            }
            n += 1;
            let mut dst = load::connect(&self.dest.url()).context("connect destination")?;
            if redmirror_testkit::flows::exists(&mut dst, b"client:probe") {
                redis::cmd("DEL").arg("client:probe").query::<()>(&mut src)?;
                return Ok(());
            }
            if Instant::now() > end {
                let logs: Vec<String> = self
                    .procs
                    .iter()
                    .map(|p| format!("{}:\n{}", p.name, p.log_tail(30)))
                    .collect();
                bail!(
                    "the mirror did not carry a probe within {deadline:?}:\n{}",
                    logs.join("\n")
                );
            }
            self.idle(Duration::from_millis(200))?;
        }
    }

    fn capture_gaps(&self) -> f64 {
        self.procs
            .iter()
            .filter(|p| p.name == "run" || p.name == "capture")
            .filter_map(|p| p.metric("redmirror_capture_gaps_total"))
            .sum()
    }
}

/// Waits until the replica on `replica` has caught up with `primary` (link
/// up, its offset at least the primary's when the wait began); seconds taken.
fn wait_in_sync(primary: &RedisServer, replica: &mut redis::Connection) -> anyhow::Result<f64> {
    let t = Instant::now();
    let field = |info: &str, name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(|v| v.trim().to_string()))
    };
    let mut pc = load::connect(&primary.url()).context("connect primary")?;
    let info: String = redis::cmd("INFO").arg("replication").query(&mut pc)?;
    let target: u64 = field(&info, "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    loop {
        let info: String = redis::cmd("INFO").arg("replication").query(replica)?;
        let up = field(&info, "master_link_status").as_deref() == Some("up");
        let at: u64 = field(&info, "slave_repl_offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if up && at >= target {
            return Ok(t.elapsed().as_secs_f64());
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the replica did not catch up within 30 s: {info}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the server answers PING (not LOADING).
fn wait_loaded(url: &str) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(mut c) = load::connect(url) {
            if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                return Ok(());
            }
        }
        if Instant::now() > end {
            bail!("{url} not loaded within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn topology(name: &str) -> Topology {
    match name {
        "kill-capture" | "kill-apply" | "duplicates" => Topology::Split,
        _ => Topology::Run,
    }
}

/// How long `source-blackhole` and `source-failover` wait for the mirror to
/// carry a change made after the fault (SPEC: a dead link is noticed within
/// about 30 s, a failover's changes are mirrored within seconds; the target
/// for the whole recovery is 30 s).
const RECOVER_BOUND: Duration = Duration::from_secs(60);

/// Writes `key` (field `turn`) on the source now and waits, up to
/// [`RECOVER_BOUND`], for the destination to hold it; `each` runs on every
/// poll with the seconds since `since`. Records the time (from `since`) in
/// the scenario's *recover* column; `None` when it never arrived.
fn probe_recovery(
    env: &mut Env,
    key: &str,
    turn: u32,
    since: Instant,
    mut each: impl FnMut(&Env, f64),
) -> anyhow::Result<Option<f64>> {
    let mut src = load::connect(&env.source.url()).context("connect source")?;
    redis::cmd("HSET")
        .arg(key)
        .arg("turn")
        .arg(turn)
        .query::<()>(&mut src)?;
    let mut recovered = None;
    while since.elapsed() < RECOVER_BOUND && recovered.is_none() {
        env.idle(Duration::from_millis(200))?;
        each(env, since.elapsed().as_secs_f64());
        let on_dest = load::connect(&env.dest.url()).and_then(|mut d| {
            redis::cmd("HGET")
                .arg(key)
                .arg("turn")
                .query::<Option<u32>>(&mut d)
                .ok()
        });
        if on_dest == Some(Some(turn)) {
            recovered = Some(since.elapsed().as_secs_f64());
        }
    }
    let worst = recovered.unwrap_or(f64::INFINITY);
    env.max_recover = Some(env.max_recover.map_or(worst, |m| m.max(worst)));
    Ok(recovered)
}

fn rand_secs(rng: &mut StdRng, (lo, hi): (f64, f64)) -> Duration {
    Duration::from_secs_f64(if hi > lo { rng.random_range(lo..hi) } else { lo })
}

/// One injection; a description of what was done.
fn inject(env: &mut Env, rng: &mut StdRng) -> anyhow::Result<String> {
    env.turn += 1;
    let turn = env.turn;
    let name = env.name.clone();
    match name.as_str() {
        "kill-run" | "kill-capture" | "kill-apply" => {
            let role = name.trim_start_matches("kill-").to_string();
            let pause = rand_secs(rng, (0.0, 1.5));
            let p = env.proc(&role);
            let pid = p.pid().unwrap_or(0);
            p.kill();
            env.idle(pause)?;
            env.proc(&role).start()?;
            Ok(format!(
                "kill -9 {role} (pid {pid}), restarted after {:.1}s",
                pause.as_secs_f64()
            ))
        }
        "broker-freeze" => {
            let pid = env.broker.pid().context("broker pid")?;
            let d = rand_secs(rng, env.opts.freeze);
            procs::signal(pid, "STOP")?;
            let r = env.idle(d);
            procs::signal(pid, "CONT")?;
            r?;
            Ok(format!("SIGSTOP broker for {:.1}s, SIGCONT", d.as_secs_f64()))
        }
        "broker-restart" => {
            if !env.broker.durable() {
                bail!("broker-restart needs a broker whose log survives a kill (Apache Kafka, not Tansu)");
            }
            let d = rand_secs(rng, env.opts.freeze);
            let pid = env.broker.pid().unwrap_or(0);
            env.broker.kill();
            let r = env.idle(d);
            let t = Instant::now();
            env.broker.start_again();
            r?;
            Ok(format!(
                "broker kill -9 (pid {pid}), down {:.1}s, started again on the same log directory (ready after {:.1}s)",
                d.as_secs_f64(),
                t.elapsed().as_secs_f64()
            ))
        }
        "dest-down" => {
            // A long outage: the source keeps writing, Kafka holds the
            // backlog, every process must stay bounded in memory.
            let gate = env.natives.gate.clone();
            let _g = gate.lock().expect("gate");
            let d = rand_secs(rng, env.opts.outage);
            let before: Vec<(String, f64)> = env.procs.iter().map(|p| (p.name.clone(), p.peak_rss)).collect();
            env.dest.stop();
            let r = env.idle(d);
            let during: Vec<String> = env
                .procs
                .iter()
                .map(|p| {
                    let b = before.iter().find(|(n, _)| *n == p.name).map_or(0.0, |(_, r)| *r);
                    format!("{} {:.0}->{:.0} MiB", p.name, b, p.peak_rss)
                })
                .collect();
            env.dest.start_again();
            r?;
            env.natives.epoch.fetch_add(1, Ordering::SeqCst);
            wait_loaded(&env.dest.url())?;
            Ok(format!(
                "destination kill -9, down {:.1}s while the source kept writing (peak rss {}), started again (AOF)",
                d.as_secs_f64(),
                during.join(", ")
            ))
        }
        "dest-restart" => {
            let gate = env.natives.gate.clone();
            let _g = gate.lock().expect("gate");
            let t = Instant::now();
            let what = if turn % 2 == 1 {
                env.dest.restart();
                "destination SAVE + kill -9 + start".to_string()
            } else {
                let d = rand_secs(rng, (4.5, 5.5));
                env.dest.stop();
                env.idle(d)?;
                env.dest.start_again();
                format!("destination kill -9, down {:.1}s, started again (AOF)", d.as_secs_f64())
            };
            env.natives.epoch.fetch_add(1, Ordering::SeqCst);
            // The native writer resumes once the data is loaded.
            wait_loaded(&env.dest.url())?;
            Ok(format!(
                "{what}; back and loaded after {:.1}s",
                t.elapsed().as_secs_f64()
            ))
        }
        "source-restart" => {
            if turn % 2 == 1 {
                let t = Instant::now();
                env.source.restart();
                Ok(format!(
                    "source SAVE + kill -9 + start ({:.1}s)",
                    t.elapsed().as_secs_f64()
                ))
            } else {
                let d = rand_secs(rng, (1.0, 4.0));
                env.source.stop();
                env.idle(d)?;
                env.source.start_again();
                Ok(format!(
                    "source kill -9, down {:.1}s, started again (AOF)",
                    d.as_secs_f64()
                ))
            }
        }
        "pubsub-cut" => {
            let before = env.capture_gaps();
            let n = rng.random_range(3000..6000);
            let mut c = load::connect(&env.source.url()).context("connect source")?;
            let w = load::burst(&mut c, rng, env.opts.pool, n)?;
            env.stats.writes.fetch_add(w, Ordering::Relaxed);
            let t = Instant::now();
            let mut after = before;
            while t.elapsed() < Duration::from_secs(5) && after <= before {
                env.idle(Duration::from_millis(100))?;
                after = env.capture_gaps();
            }
            Ok(format!(
                "burst of {n} changes in one MULTI; capture gaps {before} -> {after}{}",
                if after > before {
                    ""
                } else {
                    " (no gap seen within 5 s)"
                }
            ))
        }
        "net-cut" => {
            let proxy = env.proxy.as_ref().context("proxy")?;
            match turn % 3 {
                1 => {
                    proxy.cut();
                    Ok(format!(
                        "proxy: dropped every destination connection ({} accepted so far)",
                        proxy.accepted()
                    ))
                }
                2 => {
                    let d = rand_secs(rng, (3.0, 8.0));
                    proxy.stall(true);
                    let r = env.idle(d);
                    env.proxy.as_ref().context("proxy")?.stall(false);
                    r?;
                    Ok(format!(
                        "proxy: stalled all destination traffic {:.1}s",
                        d.as_secs_f64()
                    ))
                }
                _ => {
                    let d = rand_secs(rng, (2.0, 5.0));
                    proxy.refuse(true);
                    proxy.cut();
                    let r = env.idle(d);
                    env.proxy.as_ref().context("proxy")?.refuse(false);
                    r?;
                    Ok(format!(
                        "proxy: destination unreachable {:.1}s (cut + refuse)",
                        d.as_secs_f64()
                    ))
                }
            }
        }
        "source-failover" => {
            // A failover to a replica whose clock is behind (one more hour
            // each time): the replica takes the data over replication, the
            // primary dies, and the promoted replica serves at the
            // primary's address, as behind a Sentinel-managed name. Fresh
            // changes then carry older source times than what was applied.
            let t = Instant::now();
            let behind_us = -i64::from(turn) * 3_600_000_000;
            let replica = RedisServer::start_with(RedisOptions {
                clock_offset_us: behind_us,
                ..RedisOptions::with_notifications()
            });
            let mut rc = load::connect(&replica.url()).context("connect replica")?;
            redis::cmd("REPLICAOF")
                .arg("127.0.0.1")
                .arg(env.source.port())
                .query::<()>(&mut rc)?;
            let synced = wait_in_sync(&env.source, &mut rc)?;
            env.source.stop();
            let down = Instant::now();
            redis::cmd("REPLICAOF").arg("NO").arg("ONE").query::<()>(&mut rc)?;
            redis::cmd("SAVE").query::<()>(&mut rc)?;
            drop(rc);
            std::fs::copy(replica.dir().join("dump.rdb"), env.source.dir().join("dump.rdb"))
                .context("copy the replica's data")?;
            drop(replica);
            env.source.set_clock_offset_us(behind_us);
            env.source.start_again();
            wait_loaded(&env.source.url())?;
            let serving = down.elapsed().as_secs_f64();
            let recovered = probe_recovery(env, "client:failover-probe", turn, down, |_, _| {})?;
            Ok(format!(
                "failover: primary kill -9, its replica ({} h behind, in sync after {synced:.1}s) promoted and \
                 serving at the primary's address {serving:.1}s later; a change made then on the destination {} \
                 after the kill ({:.1}s in all)",
                -behind_us / 3_600_000_000,
                recovered.map_or_else(
                    || format!("not within {}s", RECOVER_BOUND.as_secs()),
                    |s| format!("{s:.1}s")
                ),
                t.elapsed().as_secs_f64()
            ))
        }
        "source-blackhole" => {
            // Every connection to the source goes silent for ever (no FIN,
            // no RST) while new ones work: capture must notice, reconnect
            // and have the gap repaired. The probe flow is written just
            // after the fault, so its notification is lost with the link.
            let before = env.capture_gaps();
            let proxy = env.source_proxy.as_ref().context("source proxy")?;
            let t = Instant::now();
            let holed = proxy.blackhole();
            let mut noticed = None;
            let recovered = probe_recovery(env, "client:blackhole-probe", turn, t, |env, at| {
                if noticed.is_none() && env.capture_gaps() > before {
                    noticed = Some(at);
                }
            })?;
            let accepted = env.source_proxy.as_ref().map_or(0, Proxy::accepted);
            let show = |v: Option<f64>| {
                v.map_or_else(
                    || format!("not within {}s", RECOVER_BOUND.as_secs()),
                    |s| format!("{s:.1}s"),
                )
            };
            Ok(format!(
                "proxy: black-holed the {holed} source connections made so far; capture gap counted after {}, \
                 change made after the fault on the destination after {} ({} connections accepted by then)",
                show(noticed),
                show(recovered),
                accepted.saturating_sub(holed)
            ))
        }
        "rebalance" => {
            if env.procs.iter().all(|p| p.name != "apply-2") {
                env.add_proc("apply-2", "apply")?;
                return Ok("second apply joins the group".into());
            }
            let p = env.proc("apply-2");
            if !p.running() {
                p.start()?;
                Ok("second apply joins the group".into())
            } else if turn % 4 == 2 {
                p.term();
                Ok("second apply leaves (SIGTERM)".into())
            } else {
                p.kill();
                Ok("second apply leaves (kill -9)".into())
            }
        }
        "duplicates" => {
            let group = format!("{}-rewound-{turn}", env.group);
            let m = |o: &str| format!("redmirror_apply_events_total{{outcome=\"{o}\"}}");
            let (applied, stale) = {
                let p = env.proc("apply");
                (
                    p.metric(&m("applied")).unwrap_or(0.0),
                    p.metric(&m("skipped_stale")).unwrap_or(0.0),
                )
            };
            let how = if turn % 2 == 1 {
                env.proc("apply").kill();
                "kill -9"
            } else {
                env.proc("apply").term();
                "SIGTERM"
            };
            env.proc("reconcile").term();
            for n in ["apply", "reconcile"] {
                let p = env.proc(n);
                p.set_env("REDMIRROR_GROUP_ID", &group);
                p.start()?;
            }
            Ok(format!(
                "apply stopped ({how}; it had applied {applied} and skipped {stale} stale events); apply + reconcile \
                 restarted in fresh group {group} (re-reads the topic from the start)"
            ))
        }
        other => bail!("unknown scenario {other}"),
    }
}

/// Runs one scenario to the end; errors become `Outcome::error`.
pub fn run(name: &str, seed: u64, opts: &Opts) -> Outcome {
    let t = Instant::now();
    let mut out = Outcome {
        name: name.into(),
        seed,
        ..Outcome::default()
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_inner(name, seed, opts, &mut out)));
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => out.error = Some(format!("{e:#}")),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            out.error = Some(format!("panicked: {msg}"));
        }
    }
    out.wall_secs = t.elapsed().as_secs_f64();
    out
}

fn log_dir(base: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let d = base.join("logs").join(name);
    if d.exists() {
        std::fs::remove_dir_all(&d)?;
    }
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn run_inner(name: &str, seed: u64, opts: &Opts, out: &mut Outcome) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut src_opts = RedisOptions::with_notifications();
    let mut dst_opts = RedisOptions::default();
    match name {
        "source-restart" => src_opts = src_opts.arg("appendonly", "yes"),
        "pubsub-cut" => src_opts = src_opts.arg("client-output-buffer-limit", "pubsub 64kb 32kb 1"),
        "dest-restart" | "dest-down" => dst_opts = dst_opts.arg("appendonly", "yes"),
        _ => {}
    }
    let source = RedisServer::start_with(src_opts);
    let dest = RedisServer::start_with(dst_opts);
    let tag = format!("{}-{}", std::process::id(), name);
    let topic = format!("faults.{tag}");
    let broker = Broker::start();
    let proxy = if name == "net-cut" {
        Some(Proxy::start(dest.port())?)
    } else {
        None
    };
    let source_proxy = if name == "source-blackhole" {
        Some(Proxy::start(source.port())?)
    } else {
        None
    };
    let dir = log_dir(&opts.out_dir, name)?;
    out.log_dir = dir.display().to_string();

    // Data before the mirror starts: flows on the source, natives on the destination.
    let mut sc = load::connect(&source.url()).context("connect source")?;
    load::preload(&mut sc, seed ^ 0x5eed, opts.preload)?;
    let mut dc = load::connect(&dest.url()).context("connect destination")?;
    let model = load::seed_natives(&mut dc)?;

    let mut env = Env {
        name: name.into(),
        source,
        dest,
        broker,
        proxy,
        source_proxy,
        topic,
        group: format!("faults-{tag}"),
        log_dir: dir,
        procs: Vec::new(),
        stats: Arc::new(Stats::default()),
        natives: NativeCtl {
            model: Arc::new(Mutex::new(model)),
            ..NativeCtl::default()
        },
        stop: Arc::new(AtomicBool::new(false)),
        threads: Vec::new(),
        t0: Instant::now(),
        log: Vec::new(),
        opts: opts.clone(),
        turn: 0,
        max_recover: None,
    };
    let result = drive(&mut env, &mut rng, out);
    // Always: stop the load, then the processes (gracefully), then the servers.
    env.stop.store(true, Ordering::SeqCst);
    if let Some(pid) = env.broker.pid() {
        let _ = procs::signal(pid, "CONT");
    }
    for t in env.threads.drain(..) {
        let _ = t.join();
    }
    for p in &mut env.procs {
        p.term();
        out.peak_rss_mib = out.peak_rss_mib.max(p.peak_rss);
        out.unplanned_exits.extend(p.unplanned_exits.iter().cloned());
        out.slow_stops.extend(p.slow_stops.iter().cloned());
        if p.name == "run" || p.name == "capture" {
            let w = procs::blind_windows(p.log_path());
            out.resubscriptions += w.len() as u32;
            out.max_blind_secs = w.iter().copied().fold(out.max_blind_secs, f64::max);
        }
    }
    if env.broker.exited() {
        out.unplanned_exits
            .push(format!("the broker ({}) exited by itself", env.broker.name()));
    }
    if let Some(log) = env.broker.server_log() {
        let _ = std::fs::copy(log, env.log_dir.join("broker.log"));
    }
    out.log = std::mem::take(&mut env.log);
    out.max_recover_secs = env.max_recover;
    result
}

fn drive(env: &mut Env, rng: &mut StdRng, out: &mut Outcome) -> anyhow::Result<()> {
    let name = env.name.clone();
    match topology(&name) {
        Topology::Run => env.add_proc("run", "run")?,
        Topology::Split => {
            env.add_proc("capture", "capture")?;
            env.add_proc("apply", "apply")?;
            env.add_proc("reconcile", "reconcile")?;
        }
    }
    env.wait_ready(Duration::from_secs(90))?;
    env.note(format!(
        "mirror ready ({}); load {} changes/s on the source, {} native writes/s on the destination",
        env.procs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
        env.opts.rate,
        env.opts.native_rate
    ));

    env.threads.push(load::spawn_source_writer(
        env.source.url(),
        env.opts.rate,
        env.opts.pool,
        rng.random(),
        env.stats.clone(),
        env.stop.clone(),
    ));
    env.threads.push(load::spawn_native_writer(
        env.dest.url(),
        env.opts.native_rate,
        rng.random(),
        env.natives.clone(),
        env.stats.clone(),
        env.stop.clone(),
    ));

    let load_start = Instant::now();
    let load_end = load_start + env.opts.load;
    let mut next = Instant::now() + rand_secs(rng, env.opts.gap);
    while Instant::now() < load_end {
        env.idle(Duration::from_millis(200))?;
        let now = Instant::now();
        if now >= next && now + Duration::from_secs(2) < load_end {
            let what = inject(env, rng)?;
            out.injections += 1;
            env.note(format!("#{} {what}", out.injections));
            next = Instant::now() + rand_secs(rng, env.opts.gap);
        }
    }
    // Stop the load.
    env.stop.store(true, Ordering::SeqCst);
    for t in env.threads.drain(..) {
        let _ = t.join();
    }
    out.load_secs = load_start.elapsed().as_secs_f64();
    out.events = env.stats.writes.load(Ordering::Relaxed);
    out.native_writes = env.stats.native_writes.load(Ordering::Relaxed);
    let load_stop = Instant::now();
    env.note(format!(
        "load stopped: {} source writes ({} refused by the server, {} connection errors), {} native writes ({} read back)",
        out.events,
        env.stats.refused.load(Ordering::Relaxed),
        env.stats.conn_errors.load(Ordering::Relaxed),
        out.native_writes,
        env.stats.native_unsure.load(Ordering::Relaxed),
    ));

    converge(env, out, load_stop)
}

/// After the load: one reconcile pass on demand, then the checker until the
/// invariant holds (and still holds 3 s later) or the bound passes.
fn converge(env: &mut Env, out: &mut Outcome, load_stop: Instant) -> anyhow::Result<()> {
    let deadline = load_stop + env.opts.converge;
    let reconciler = if env.procs.iter().any(|p| p.name == "reconcile") {
        "reconcile"
    } else {
        "run"
    };
    // The reconcile request is followed on its own thread while the checker
    // polls: `POST /v1/reconcile` answers 202 with a request id at once, and
    // `GET /v1/status` shows the request until it is done (or failed: then
    // it is asked again).
    let port = env.proc(reconciler).http_port();
    let posted: Arc<Mutex<Option<Value>>> = Arc::new(Mutex::new(None));
    let p2 = posted.clone();
    let bound = env.opts.converge;
    let poster = std::thread::spawn(move || {
        let end = Instant::now() + bound;
        let mut last = String::new();
        let mut tries = 0;
        let mut request: Option<String> = None;
        while Instant::now() < end {
            let Some(id) = request.clone() else {
                tries += 1;
                match procs::http(
                    port,
                    "POST",
                    "/v1/reconcile",
                    Some(ADMIN_TOKEN),
                    Duration::from_secs(10),
                ) {
                    Ok((202, body)) => {
                        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        match v["id"].as_str() {
                            Some(id) => request = Some(id.to_string()),
                            None => last = format!("HTTP 202 without a request id: {}", body.trim()),
                        }
                        continue;
                    }
                    Ok((code, body)) => last = format!("HTTP {code}: {}", body.trim()),
                    Err(e) => last = format!("{e:#}"),
                }
                std::thread::sleep(Duration::from_millis(500));
                continue;
            };
            match procs::http(port, "GET", "/v1/status", Some(ADMIN_TOKEN), Duration::from_secs(10)) {
                Ok((200, body)) => {
                    let status: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let found = status["requests"]
                        .as_array()
                        .and_then(|a| a.iter().find(|r| r["id"] == id.as_str()).cloned());
                    match found {
                        Some(r) if r["state"] == "done" => {
                            let v = &r["result"];
                            *p2.lock().expect("posted") = Some(json!({
                                "tries": tries,
                                "request": id,
                                "barrier": v["barrier"],
                                "drift": v["drift"],
                                "repaired": v["repaired"],
                                "native": v["native"],
                                "source_flows": v["source_flows"],
                                "dest_flows": v["dest_flows"],
                                "duration_seconds": v["duration_seconds"],
                                "first_flows": v["flows"].as_array().map(|a| a.iter().take(5).cloned().collect::<Vec<_>>()),
                            }));
                            return;
                        }
                        Some(r) if r["state"] == "failed" => {
                            last = format!("request {id} failed: {}", r["error"]);
                            request = None;
                        }
                        Some(_) => {}
                        None => {
                            // The process restarted: its requests are gone.
                            last = format!("request {id} no longer listed");
                            request = None;
                        }
                    }
                }
                Ok((code, body)) => last = format!("GET /v1/status: HTTP {code}: {}", body.trim()),
                Err(e) => last = format!("GET /v1/status: {e:#}"),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        *p2.lock().expect("posted") = Some(json!({ "error": last, "tries": tries }));
    });

    let rules = Rules::with_filtered_orgs(&load::FILTERED_ORGS);
    let model = env.natives.model.lock().expect("model").clone();
    let mut first_ok: Option<Instant> = None;
    let mut last: Option<invariant::Report> = None;
    let mut last_err = String::new();
    loop {
        let done = posted.lock().expect("posted").is_some();
        let now = Instant::now();
        match (load::connect(&env.source.url()), load::connect(&env.dest.url())) {
            (Some(mut s), Some(mut d)) => {
                match invariant::check_with(&mut s, &mut d, &rules, &model.hashes, Some(&model.index)) {
                    Ok(r) => {
                        if r.ok() {
                            first_ok.get_or_insert(now);
                        } else {
                            first_ok = None;
                        }
                        last = Some(r);
                    }
                    Err(e) => last_err = e.to_string(),
                }
            }
            _ => last_err = "cannot connect to a server".into(),
        }
        if let (Some(t), true) = (first_ok, done) {
            if now.duration_since(t) >= Duration::from_secs(3) {
                out.converge_secs = Some(t.duration_since(load_stop).as_secs_f64());
                break;
            }
        }
        if now > deadline {
            break;
        }
        env.idle(Duration::from_millis(500))?;
    }
    let _ = poster.join();
    out.reconcile = posted.lock().expect("posted").take().unwrap_or(Value::Null);
    match last {
        Some(r) => {
            out.violations = r.total();
            out.report = r.to_string();
        }
        None => bail!("the invariant checker never ran: {last_err}"),
    }
    if out.violations == 0 && out.reconcile.get("error").is_some() {
        bail!("POST /v1/reconcile never succeeded: {}", out.reconcile);
    }
    match out.converge_secs {
        Some(s) => env.note(format!(
            "converged {s:.1}s after the load stopped; final reconcile {}",
            out.reconcile
        )),
        None => {
            env.note(format!(
                "NOT converged within {:?}; final reconcile {}\n{}",
                env.opts.converge, out.reconcile, out.report
            ));
            for p in &env.procs {
                println!(
                    "  --- {} ({}) warnings:\n{}",
                    p.name,
                    p.log_path().display(),
                    p.log_tail(20)
                );
            }
        }
    }
    Ok(())
}
