//! redmirror processes: one per role, restarted like a supervisor would
//! when it exits by itself, over `redmirror_testkit::process` (spawn,
//! kill -9, SIGTERM, `/metrics`, peak RSS from /proc).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use redmirror_testkit::process::{Inherit, Launch, LogMode, Process, Stopped};

/// The admin token given to every process.
pub const ADMIN_TOKEN: &str = "faults-admin-token-0123456789";

/// `REDMIRROR_SHUTDOWN_TIMEOUT` given to every process; redmirror bounds a
/// graceful stop by it plus 5 s.
pub const SHUTDOWN_TIMEOUT: &str = "10s";
/// How long a SIGTERM may take before kill -9 (the bound above, plus margin).
pub const STOP_GRACE: Duration = Duration::from_secs(20);
/// A graceful stop slower than this is reported.
pub const SLOW_STOP: Duration = Duration::from_secs(5);

/// The `redmirror` binary next to this one (same target directory).
pub fn redmirror_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.parent().context("exe dir")?.join("redmirror");
    if !bin.is_file() {
        bail!("{} not found: build it first (scripts/faults does)", bin.display());
    }
    Ok(bin)
}

/// One redmirror process of a scenario: its name in logs and tables and
/// the subcommand it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `redmirror run`: capture, apply and reconcile in one process.
    Run,
    /// `redmirror capture`.
    Capture,
    /// `redmirror apply`.
    Apply,
    /// `redmirror reconcile`.
    Reconcile,
    /// A second `redmirror apply` in the same group (`rebalance`).
    SecondApply,
}

impl Role {
    /// Its name in logs, tables and log file names.
    pub fn name(self) -> &'static str {
        match self {
            Role::Run => "run",
            Role::Capture => "capture",
            Role::Apply => "apply",
            Role::Reconcile => "reconcile",
            Role::SecondApply => "apply-2",
        }
    }

    /// The `redmirror` subcommand.
    pub fn subcommand(self) -> &'static str {
        match self {
            Role::SecondApply => "apply",
            r => r.name(),
        }
    }

    /// Whether it runs capture (its gaps and blind windows are counted).
    pub fn captures(self) -> bool {
        matches!(self, Role::Run | Role::Capture)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One redmirror process (a role), restartable; killed on drop.
pub struct Proc {
    /// Which one.
    pub role: Role,
    launch: Launch,
    process: Option<Process>,
    /// Highest VmHWM seen over all its incarnations, MiB.
    pub peak_rss: f64,
    /// Times started.
    pub starts: u32,
    /// Exits we did not cause (the supervisor restarted it).
    pub unplanned_exits: Vec<String>,
    /// Graceful stops that were slow or did not finish.
    pub slow_stops: Vec<String>,
}

impl Proc {
    /// A process description; not started. Its log, `{role}.log` in
    /// `log_dir`, is appended to across restarts.
    pub fn new(role: Role, env: Vec<(String, String)>, log_dir: &Path) -> anyhow::Result<Proc> {
        let mut launch = Launch::new(
            redmirror_bin()?,
            &[role.subcommand()],
            log_dir.join(format!("{}.log", role.name())),
        )
        .envs(env);
        // The servers are the scenario's own; Kafka client properties
        // (`REDMIRROR_KAFKA_*`, e.g. `REDMIRROR_KAFKA_GROUP_PROTOCOL`) pass
        // through so settings can be compared under faults.
        launch.inherit = Inherit::KafkaProperties;
        launch.log_mode = LogMode::Append;
        Ok(Proc {
            role,
            launch,
            process: None,
            peak_rss: 0.0,
            starts: 0,
            unplanned_exits: Vec::new(),
            slow_stops: Vec::new(),
        })
    }

    /// Replaces (or adds) one environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.launch.set_env(key, value);
    }

    /// Its HTTP port (metrics, admin).
    pub fn http_port(&self) -> u16 {
        self.launch.http_port
    }

    /// Its log file (appended to across restarts).
    pub fn log_path(&self) -> &Path {
        &self.launch.log
    }

    /// Starts it (no-op when running).
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        self.starts += 1;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.launch.log)?;
        writeln!(
            f,
            "===== faults: start #{} of `redmirror {}` at {:?} =====",
            self.starts,
            self.launch.args.join(" "),
            std::time::SystemTime::now()
        )?;
        let p = Process::spawn(&self.launch).with_context(|| format!("spawn {}", self.role))?;
        self.process = Some(p);
        Ok(())
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// Updates the peak RSS from /proc.
    pub fn sample(&mut self) {
        if let Some(p) = self.process.as_ref() {
            self.peak_rss = self.peak_rss.max(p.peak_rss_mib());
        }
    }

    /// Restarts the process if it exited on its own; records why.
    pub fn supervise(&mut self) -> anyhow::Result<()> {
        self.sample();
        let exited = match self.process.as_mut() {
            Some(p) => p.try_wait()?,
            None => None,
        };
        if let Some(status) = exited {
            self.process = None;
            let msg = format!("{} exited on its own ({status}); restarted", self.role);
            println!("  ! {msg} (log {})", self.log_path().display());
            self.unplanned_exits.push(msg);
            std::thread::sleep(Duration::from_millis(500));
            self.start()?;
        }
        Ok(())
    }

    /// kill -9.
    pub fn kill(&mut self) {
        self.sample();
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// SIGTERM, then kill -9 after [`STOP_GRACE`]; a stop slower than
    /// [`SLOW_STOP`] is recorded in `slow_stops`.
    pub fn term(&mut self) {
        self.sample();
        let Some(mut p) = self.process.take() else {
            return;
        };
        match p.terminate(STOP_GRACE) {
            Stopped::NotRunning => {}
            Stopped::Exited { status, after } => {
                if after > SLOW_STOP {
                    self.slow_stops.push(format!(
                        "{}: stopping on SIGTERM took {:.1}s ({status})",
                        self.role,
                        after.as_secs_f64()
                    ));
                }
            }
            Stopped::Killed => self.slow_stops.push(format!(
                "{}: still running {}s after SIGTERM (REDMIRROR_SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT}); killed",
                self.role,
                STOP_GRACE.as_secs()
            )),
        }
    }

    /// A sample from `/metrics` (None when absent or unreachable).
    pub fn metric(&self, sample: &str) -> Option<f64> {
        redmirror_testkit::process::scrape(self.http_port())?.sample(sample)
    }

    /// The last lines of its log that mention a warning or an error.
    pub fn log_tail(&self, lines: usize) -> String {
        let s = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let v: Vec<&str> = s
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("faults:") || l.contains("panick"))
            .collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Seconds of day of a log line's leading RFC 3339 UTC timestamp.
fn log_time(line: &str) -> Option<f64> {
    let t = line.get(11..26)?; // HH:MM:SS.ffffff
    let h: f64 = t.get(0..2)?.parse().ok()?;
    let m: f64 = t.get(3..5)?.parse().ok()?;
    let s: f64 = t.get(6..)?.trim_end_matches('Z').parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Capture's blind windows in a log: from "subscription lost" to
/// "re-subscribed", in seconds (a process restart ends a window unmeasured).
pub fn blind_windows(log: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out = Vec::new();
    let mut lost: Option<f64> = None;
    for line in text.lines() {
        if line.starts_with("===== faults: start") {
            lost = None;
        } else if line.contains("Subscription to the source lost") {
            if lost.is_none() {
                lost = log_time(line);
            }
        } else if line.contains("Re-subscribed to source notifications") {
            if let (Some(a), Some(b)) = (lost.take(), log_time(line)) {
                out.push(if b >= a { b - a } else { b + 86400.0 - a });
            }
        }
    }
    out
}
