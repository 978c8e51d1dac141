//! The scenarios: servers, broker and redmirror processes started fresh for
//! each, a steady write load, faults injected at random moments, then a
//! bounded wait for the invariant to hold again.
//!
//! # Layout
//! - [`Scenario`]: every scenario by name (the `--only` names), what it
//!   needs before the mirror starts ([`Needs`]) and its injection.
//! - One module per scenario with its injection; a scenario whose
//!   injections alternate names what each turn does with a `Turn` enum and
//!   `Turn::of(turn)`. `kill` serves the three `kill-*` scenarios (one
//!   injection on different roles).
//! - [`run`]: one scenario from start to [`Outcome`]: set-up, load,
//!   injections, convergence judged by the independent checker.

mod broker_freeze;
mod broker_restart;
mod cluster;
mod cluster_silent_failover;
mod dest_down;
mod dest_restart;
mod duplicates;
mod kill;
mod net_cut;
mod pending_overflow;
mod pubsub_cut;
mod rebalance;
mod slow_dest;
mod source_blackhole;
mod source_failover;
mod source_restart;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redmirror_testkit::cluster::RedisCluster;
use redmirror_testkit::invariant::{self, Rules};
use redmirror_testkit::process::{self, Request, Response, Signal};
use redmirror_testkit::proxy::Proxy;
use redmirror_testkit::{Broker, RedisOptions, RedisServer};
use serde_json::{json, Value};

use crate::load::{self, NativeCtl, Stats};
use crate::procs::{self, Proc, Role, ADMIN_TOKEN};

/// One fault scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// kill -9 `redmirror run`, restart it.
    KillRun,
    /// kill -9 the `capture` process of a split topology, restart it.
    KillCapture,
    /// kill -9 the `apply` process of a split topology, restart it.
    KillApply,
    /// SIGSTOP the broker for a while.
    BrokerFreeze,
    /// kill -9 the broker, start it again on its log.
    BrokerRestart,
    /// Restart the destination (SAVE, or a short outage with an AOF).
    DestRestart,
    /// A long destination outage.
    DestDown,
    /// Restart the source (SAVE, or a short outage with an AOF).
    SourceRestart,
    /// Overflow capture's pub/sub buffer so the source drops it.
    PubsubCut,
    /// Cut, stall or refuse the destination's connections.
    NetCut,
    /// The destination slow for a minute; apply catches up under the write limit.
    SlowDest,
    /// Make every source connection silent.
    SourceBlackhole,
    /// Fail the source over to a replica whose clock is behind.
    SourceFailover,
    /// A Redis Cluster source: failovers and slot migrations.
    Cluster,
    /// A Redis Cluster source: failovers onto replicas without keyspace
    /// notifications (capture configured to set them).
    ClusterSilentFailover,
    /// A broker outage long enough to fill capture's (small) pending set.
    PendingOverflow,
    /// A second apply joins and leaves the group.
    Rebalance,
    /// Apply re-reads the whole topic in a fresh group.
    Duplicates,
}

impl Scenario {
    /// Every scenario, in run order.
    pub const ALL: [Scenario; 18] = [
        Scenario::KillRun,
        Scenario::KillCapture,
        Scenario::KillApply,
        Scenario::BrokerFreeze,
        Scenario::BrokerRestart,
        Scenario::DestRestart,
        Scenario::DestDown,
        Scenario::SourceRestart,
        Scenario::PubsubCut,
        Scenario::NetCut,
        Scenario::SlowDest,
        Scenario::SourceBlackhole,
        Scenario::SourceFailover,
        Scenario::Cluster,
        Scenario::ClusterSilentFailover,
        Scenario::PendingOverflow,
        Scenario::Rebalance,
        Scenario::Duplicates,
    ];

    /// Its name on the command line, in tables, results and log directories.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::KillRun => "kill-run",
            Scenario::KillCapture => "kill-capture",
            Scenario::KillApply => "kill-apply",
            Scenario::BrokerFreeze => "broker-freeze",
            Scenario::BrokerRestart => "broker-restart",
            Scenario::DestRestart => "dest-restart",
            Scenario::DestDown => "dest-down",
            Scenario::SourceRestart => "source-restart",
            Scenario::PubsubCut => "pubsub-cut",
            Scenario::NetCut => "net-cut",
            Scenario::SlowDest => "slow-dest",
            Scenario::SourceBlackhole => "source-blackhole",
            Scenario::SourceFailover => "source-failover",
            Scenario::Cluster => "cluster",
            Scenario::ClusterSilentFailover => "cluster-silent-failover",
            Scenario::PendingOverflow => "pending-overflow",
            Scenario::Rebalance => "rebalance",
            Scenario::Duplicates => "duplicates",
        }
    }

    /// What it needs before the mirror starts.
    fn needs(self) -> Needs {
        let base = Needs::default();
        match self {
            Scenario::KillCapture | Scenario::KillApply | Scenario::Duplicates => Needs {
                topology: Topology::Split,
                ..base
            },
            // Data survives a kill -9 in the AOF (the other turns SAVE).
            Scenario::SourceRestart => Needs {
                source: base.source.arg("appendonly", "yes"),
                ..base
            },
            // A burst of notifications overflows this at once.
            Scenario::PubsubCut => Needs {
                source: base.source.arg("client-output-buffer-limit", "pubsub 64kb 32kb 1"),
                ..base
            },
            Scenario::DestRestart | Scenario::DestDown => Needs {
                dest: base.dest.arg("appendonly", "yes"),
                ..base
            },
            Scenario::NetCut | Scenario::SlowDest => Needs {
                dest_proxy: true,
                ..base
            },
            Scenario::SourceBlackhole => Needs {
                source_proxy: true,
                ..base
            },
            Scenario::Cluster | Scenario::ClusterSilentFailover => Needs { cluster: true, ..base },
            Scenario::KillRun
            | Scenario::BrokerFreeze
            | Scenario::BrokerRestart
            | Scenario::SourceFailover
            | Scenario::PendingOverflow
            | Scenario::Rebalance => base,
        }
    }

    /// Settings of its own, on top of every scenario's.
    fn settings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Scenario::ClusterSilentFailover => cluster_silent_failover::SETTINGS,
            Scenario::PendingOverflow => pending_overflow::SETTINGS,
            Scenario::SlowDest => slow_dest::SETTINGS,
            _ => &[],
        }
    }

    /// One injection (`turn` counts them from 1); a description of what was done.
    fn inject(self, env: &mut Env, rng: &mut StdRng, turn: u32) -> anyhow::Result<String> {
        match self {
            Scenario::KillRun => kill::inject(env, rng, Role::Run),
            Scenario::KillCapture => kill::inject(env, rng, Role::Capture),
            Scenario::KillApply => kill::inject(env, rng, Role::Apply),
            Scenario::BrokerFreeze => broker_freeze::inject(env, rng),
            Scenario::BrokerRestart => broker_restart::inject(env, rng),
            Scenario::DestRestart => dest_restart::inject(env, rng, turn),
            Scenario::DestDown => dest_down::inject(env, rng),
            Scenario::SourceRestart => source_restart::inject(env, rng, turn),
            Scenario::PubsubCut => pubsub_cut::inject(env, rng),
            Scenario::NetCut => net_cut::inject(env, rng, turn),
            Scenario::SlowDest => slow_dest::inject(env),
            Scenario::SourceBlackhole => source_blackhole::inject(env, turn),
            Scenario::SourceFailover => source_failover::inject(env, turn),
            Scenario::Cluster => cluster::inject(env, rng, turn),
            Scenario::ClusterSilentFailover => cluster_silent_failover::inject(env, rng, turn),
            Scenario::PendingOverflow => pending_overflow::inject(env, rng),
            Scenario::Rebalance => rebalance::inject(env, turn),
            Scenario::Duplicates => duplicates::inject(env, turn),
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a scenario's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScenario(pub String);

impl std::fmt::Display for UnknownScenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        write!(f, "unknown scenario {:?}; known: {}", self.0, known.join(", "))
    }
}

impl std::error::Error for UnknownScenario {}

impl std::str::FromStr for Scenario {
    type Err = UnknownScenario;

    fn from_str(s: &str) -> Result<Scenario, UnknownScenario> {
        Scenario::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownScenario(s.to_string()))
    }
}

/// The `--only` names: clap lists them on an unknown one.
impl clap::ValueEnum for Scenario {
    fn value_variants<'a>() -> &'a [Scenario] {
        &Scenario::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

/// What a scenario needs before the mirror starts.
struct Needs {
    topology: Topology,
    /// Options of the source (keyspace notifications on).
    source: RedisOptions,
    /// Options of the destination.
    dest: RedisOptions,
    /// A proxy in front of the destination (redmirror's connections only).
    dest_proxy: bool,
    /// A proxy in front of the source (redmirror's connections only; the
    /// load and the checker go to the source directly).
    source_proxy: bool,
    /// The source is a Redis Cluster (three masters with a replica each;
    /// `source` above is not used).
    cluster: bool,
}

impl Default for Needs {
    fn default() -> Needs {
        Needs {
            topology: Topology::Run,
            source: RedisOptions::with_notifications(),
            dest: RedisOptions::default(),
            dest_proxy: false,
            source_proxy: false,
            cluster: false,
        }
    }
}

/// The source of a scenario: one server, or a Redis Cluster.
enum Source {
    Server(RedisServer),
    Cluster(RedisCluster),
}

impl Source {
    /// The URL redmirror is given (a cluster: one of its masters).
    fn url(&self) -> String {
        match self {
            Source::Server(s) => s.url(),
            Source::Cluster(c) => c.url(),
        }
    }

    /// The standalone server; scenarios on a standalone source only.
    fn server(&mut self) -> &mut RedisServer {
        match self {
            Source::Server(s) => s,
            Source::Cluster(_) => panic!("a standalone-source scenario on a cluster source"),
        }
    }

    /// The cluster; the `cluster` scenario only.
    fn cluster(&self) -> &RedisCluster {
        match self {
            Source::Cluster(c) => c,
            Source::Server(_) => panic!("the cluster scenario on a standalone source"),
        }
    }

    /// Runs one command on the source (on a cluster: on the master owning
    /// its key, following redirects).
    fn cmd(&self, cmd: &redis::Cmd) -> anyhow::Result<()> {
        match self {
            Source::Server(s) => {
                let mut c = load::connect(&s.url()).context("connect source")?;
                cmd.query::<()>(&mut c)?;
            }
            Source::Cluster(c) => {
                load::ClusterConn::new(c.ports()).try_run(cmd)?;
            }
        }
        Ok(())
    }

    /// Connections to every (current) master of the source, for the checker.
    fn masters(&self) -> Option<Vec<redis::Connection>> {
        match self {
            Source::Server(s) => Some(vec![load::connect(&s.url())?]),
            Source::Cluster(c) => c
                .masters()
                .into_iter()
                .map(|p| load::connect(&c.node(p).url()))
                .collect(),
        }
    }
}

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

/// Which redmirror processes a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    /// One `redmirror run`.
    Run,
    /// `capture`, `apply` and `reconcile` processes.
    Split,
}

/// Everything one scenario runs on.
struct Env {
    scenario: Scenario,
    source: Source,
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
    /// Injections so far; the scenario's `Turn::of` says what each does.
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
        .chain(self.scenario.settings().iter().map(|(k, v)| (*k, v.to_string())))
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn add_proc(&mut self, role: Role) -> anyhow::Result<()> {
        let mut p = Proc::new(role, self.base_env(), &self.log_dir)?;
        p.start()?;
        self.procs.push(p);
        Ok(())
    }

    fn proc(&mut self, role: Role) -> &mut Proc {
        self.procs.iter_mut().find(|p| p.role == role).expect("known process")
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

    /// Writes a probe on the source (on a cluster: one on every master) and
    /// waits until it reaches the destination.
    fn wait_ready(&mut self, deadline: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + deadline;
        let probes: Vec<String> = match &self.source {
            Source::Server(_) => vec!["client:probe".into()],
            Source::Cluster(c) => {
                let masters = c.masters();
                let mut seen = std::collections::BTreeSet::new();
                (0..)
                    .map(|i| format!("client:probe-{i}"))
                    .filter(|k| seen.insert(c.master_of(k.as_bytes())))
                    .take(masters.len())
                    .collect()
            }
        };
        let mut n = 0u64;
        loop {
            if n.is_multiple_of(25) {
                for p in &probes {
                    self.source.cmd(redis::cmd("HSET").arg(p).arg("n").arg(n))?;
                }
            }
            n += 1;
            let mut dst = load::connect(&self.dest.url()).context("connect destination")?;
            if probes
                .iter()
                .all(|p| redmirror_testkit::flows::exists(&mut dst, p.as_bytes()))
            {
                for p in &probes {
                    self.source.cmd(redis::cmd("DEL").arg(p))?;
                }
                return Ok(());
            }
            if Instant::now() > end {
                let logs: Vec<String> = self
                    .procs
                    .iter()
                    .map(|p| format!("{}:\n{}", p.role, p.log_tail(30)))
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
            .filter(|p| p.role.captures())
            .filter_map(|p| p.metric("redmirror_capture_gaps_total"))
            .sum()
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
    env.source.cmd(redis::cmd("HSET").arg(key).arg("turn").arg(turn))?;
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

/// What a restart scenario (`dest-restart`, `source-restart`) does to its
/// server on one injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RestartTurn {
    /// SAVE, kill -9, start at once (odd turns).
    SaveAndRestart,
    /// kill -9, down a few seconds, start again from the AOF (even turns).
    Outage,
}

impl RestartTurn {
    fn of(turn: u32) -> RestartTurn {
        if turn % 2 == 1 {
            RestartTurn::SaveAndRestart
        } else {
            RestartTurn::Outage
        }
    }
}

fn rand_secs(rng: &mut StdRng, (lo, hi): (f64, f64)) -> Duration {
    Duration::from_secs_f64(if hi > lo { rng.random_range(lo..hi) } else { lo })
}

/// Runs one scenario to the end; errors become `Outcome::error`.
pub fn run(scenario: Scenario, seed: u64, opts: &Opts) -> Outcome {
    let t = Instant::now();
    let mut out = Outcome {
        name: scenario.name().into(),
        seed,
        ..Outcome::default()
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_inner(scenario, seed, opts, &mut out)
    }));
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

fn run_inner(scenario: Scenario, seed: u64, opts: &Opts, out: &mut Outcome) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let needs = scenario.needs();
    let mut source = if needs.cluster {
        Source::Cluster(RedisCluster::start())
    } else {
        Source::Server(RedisServer::start_with(needs.source))
    };
    let dest = RedisServer::start_with(needs.dest);
    let tag = format!("{}-{}", std::process::id(), scenario.name());
    let topic = format!("faults.{tag}");
    let broker = Broker::start();
    let proxy = if needs.dest_proxy {
        Some(Proxy::start(dest.port())?)
    } else {
        None
    };
    let source_proxy = if needs.source_proxy {
        Some(Proxy::start(source.server().port())?)
    } else {
        None
    };
    let dir = log_dir(&opts.out_dir, scenario.name())?;
    out.log_dir = dir.display().to_string();

    // Data before the mirror starts: flows on the source, natives on the destination.
    match &source {
        Source::Server(s) => {
            let mut sc = load::connect(&s.url()).context("connect source")?;
            load::preload(&mut sc, seed ^ 0x5eed, opts.preload)?;
        }
        Source::Cluster(c) => {
            load::preload_cluster(&mut load::ClusterConn::new(c.ports()), seed ^ 0x5eed, opts.preload)?;
        }
    }
    let mut dc = load::connect(&dest.url()).context("connect destination")?;
    let model = load::seed_natives(&mut dc)?;

    let mut env = Env {
        scenario,
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
    let result = drive(&mut env, needs.topology, &mut rng, out);
    // Always: stop the load, then the processes (gracefully), then the servers.
    env.stop.store(true, Ordering::SeqCst);
    if let Some(pid) = env.broker.pid() {
        let _ = process::signal(pid, Signal::Cont);
    }
    for t in env.threads.drain(..) {
        let _ = t.join();
    }
    for p in &mut env.procs {
        p.term();
        out.peak_rss_mib = out.peak_rss_mib.max(p.peak_rss);
        out.unplanned_exits.extend(p.unplanned_exits.iter().cloned());
        out.slow_stops.extend(p.slow_stops.iter().cloned());
        if p.role.captures() {
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

fn drive(env: &mut Env, topology: Topology, rng: &mut StdRng, out: &mut Outcome) -> anyhow::Result<()> {
    match topology {
        Topology::Run => env.add_proc(Role::Run)?,
        Topology::Split => {
            env.add_proc(Role::Capture)?;
            env.add_proc(Role::Apply)?;
            env.add_proc(Role::Reconcile)?;
        }
    }
    env.wait_ready(Duration::from_secs(90))?;
    env.note(format!(
        "mirror ready ({}); load {} changes/s on the source, {} native writes/s on the destination",
        env.procs.iter().map(|p| p.role.name()).collect::<Vec<_>>().join(", "),
        env.opts.rate,
        env.opts.native_rate
    ));

    env.threads.push(match &env.source {
        Source::Server(s) => load::spawn_source_writer(
            s.url(),
            env.opts.rate,
            env.opts.pool,
            rng.random(),
            env.stats.clone(),
            env.stop.clone(),
        ),
        Source::Cluster(c) => load::spawn_source_writer_on(
            load::ClusterConn::new(c.ports()),
            env.opts.rate,
            env.opts.pool,
            rng.random(),
            env.stats.clone(),
            env.stop.clone(),
        ),
    });
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
            env.turn += 1;
            let what = env.scenario.inject(env, rng, env.turn)?;
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
    let reconciler = if env.procs.iter().any(|p| p.role == Role::Reconcile) {
        Role::Reconcile
    } else {
        Role::Run
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
                let post = Request::post("/v1/reconcile")
                    .token(ADMIN_TOKEN)
                    .timeout(Duration::from_secs(10));
                match process::http(port, post) {
                    Ok(Response { status: 202, body }) => {
                        match serde_json::from_str::<redmirror_api::Accepted>(&body) {
                            Ok(a) => request = Some(a.id),
                            Err(e) => last = format!("HTTP 202 without a request ticket ({e}): {}", body.trim()),
                        }
                        continue;
                    }
                    Ok(Response { status, body }) => last = format!("HTTP {status}: {}", body.trim()),
                    Err(e) => last = format!("{e:#}"),
                }
                std::thread::sleep(Duration::from_millis(500));
                continue;
            };
            let get = Request::get("/v1/status")
                .token(ADMIN_TOKEN)
                .timeout(Duration::from_secs(10));
            match process::http(port, get) {
                Ok(Response { status: 200, body }) => {
                    let status = match serde_json::from_str::<redmirror_api::Status>(&body) {
                        Ok(s) => s,
                        Err(e) => {
                            last = format!("GET /v1/status: not a status body ({e})");
                            continue;
                        }
                    };
                    let found = status.requests.into_iter().find(|r| r.id == id);
                    match found {
                        Some(r) if r.state == "done" => {
                            let v = r
                                .result
                                .and_then(|v| serde_json::from_value::<redmirror_api::Report>(v).ok())
                                .unwrap_or_default();
                            *p2.lock().expect("posted") = Some(json!({
                                "tries": tries,
                                "request": id,
                                "barrier": v.barrier,
                                "drift": v.drift,
                                "repaired": v.repaired,
                                "native": v.native,
                                "source_flows": v.source_flows,
                                "dest_flows": v.dest_flows,
                                "duration_seconds": v.duration_seconds,
                                "first_flows": v.flows.iter().take(5).cloned().collect::<Vec<_>>(),
                            }));
                            return;
                        }
                        Some(r) if r.state == "failed" => {
                            last = format!("request {id} failed: {}", r.error.unwrap_or_default());
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
                Ok(Response { status, body }) => last = format!("GET /v1/status: HTTP {status}: {}", body.trim()),
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
        match (env.source.masters(), load::connect(&env.dest.url())) {
            (Some(mut s), Some(mut d)) => {
                let mut s: Vec<&mut redis::Connection> = s.iter_mut().collect();
                match invariant::check_on(&mut s, &mut [&mut d], &rules, &model.hashes, Some(&model.index)) {
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
                    p.role,
                    p.log_path().display(),
                    p.log_tail(20)
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_turns_alternate_starting_with_a_save() {
        let turns: Vec<RestartTurn> = (1..=4).map(RestartTurn::of).collect();
        assert_eq!(
            turns,
            [
                RestartTurn::SaveAndRestart,
                RestartTurn::Outage,
                RestartTurn::SaveAndRestart,
                RestartTurn::Outage
            ]
        );
    }

    #[test]
    fn every_name_parses_back_to_its_scenario() {
        for s in Scenario::ALL {
            assert_eq!(s.name().parse::<Scenario>(), Ok(s));
            assert_eq!(s.to_string(), s.name());
        }
        let names: std::collections::BTreeSet<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), Scenario::ALL.len());
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_known_ones() {
        let e = "kill-everything".parse::<Scenario>().unwrap_err().to_string();
        assert!(e.contains("\"kill-everything\""), "{e}");
        assert!(e.contains("kill-run, kill-capture") && e.ends_with("duplicates"), "{e}");
    }
}
