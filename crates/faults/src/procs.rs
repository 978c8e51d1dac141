//! redmirror processes: spawn, kill -9, SIGTERM, restart (like a supervisor
//! would), peak RSS from /proc, metrics and the admin API over raw HTTP/1.0.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

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

/// Sends a signal with `kill(1)` (the workspace forbids unsafe code).
pub fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("run kill(1)")?;
    if !st.success() {
        bail!("kill -{sig} {pid} failed ({st})");
    }
    Ok(())
}

/// Peak resident set (VmHWM) of a process, MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
}

/// One redmirror process (a role), restartable; killed on drop.
pub struct Proc {
    /// Name in logs and tables.
    pub name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    http: u16,
    log: PathBuf,
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
    /// A process description; not started.
    pub fn new(name: &str, args: &[&str], env: Vec<(String, String)>, log_dir: &Path) -> Proc {
        Proc {
            name: name.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env,
            child: None,
            http: redmirror_testkit::free_port(),
            log: log_dir.join(format!("{name}.log")),
            peak_rss: 0.0,
            starts: 0,
            unplanned_exits: Vec::new(),
            slow_stops: Vec::new(),
        }
    }

    /// Replaces (or adds) one environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    /// Its HTTP port (metrics, admin).
    pub fn http_port(&self) -> u16 {
        self.http
    }

    /// Its log file (appended to across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Starts it (no-op when running).
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let mut f = OpenOptions::new().create(true).append(true).open(&self.log)?;
        self.starts += 1;
        writeln!(
            f,
            "===== faults: start #{} of `redmirror {}` at {:?} =====",
            self.starts,
            self.args.join(" "),
            std::time::SystemTime::now()
        )?;
        let mut c = Command::new(redmirror_bin()?);
        // The servers are the scenario's own; Kafka client properties
        // (`REDMIRROR_KAFKA_*`, e.g. `REDMIRROR_KAFKA_GROUP_PROTOCOL`) pass
        // through so settings can be compared under faults.
        for (k, _) in std::env::vars() {
            if k.starts_with("REDMIRROR_") && (!k.starts_with("REDMIRROR_KAFKA_") || k == "REDMIRROR_KAFKA_BROKERS") {
                c.env_remove(k);
            }
        }
        let child = c
            .args(&self.args)
            .envs(self.env.iter().cloned())
            .env("REDMIRROR_HTTP_ADDR", format!("127.0.0.1:{}", self.http))
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("spawn {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is running (as far as we started it).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Updates the peak RSS from /proc.
    pub fn sample(&mut self) {
        if let Some(m) = self.pid().and_then(peak_rss_mib) {
            self.peak_rss = self.peak_rss.max(m);
        }
    }

    /// Restarts the process if it exited on its own; records why.
    pub fn supervise(&mut self) -> anyhow::Result<()> {
        self.sample();
        let exited = match self.child.as_mut() {
            Some(c) => c.try_wait()?,
            None => None,
        };
        if let Some(status) = exited {
            self.child = None;
            let msg = format!("{} exited on its own ({status}); restarted", self.name);
            println!("  ! {msg} (log {})", self.log.display());
            self.unplanned_exits.push(msg);
            std::thread::sleep(Duration::from_millis(500));
            self.start()?;
        }
        Ok(())
    }

    /// kill -9.
    pub fn kill(&mut self) {
        self.sample();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then kill -9 after [`STOP_GRACE`]; a stop slower than
    /// [`SLOW_STOP`] is recorded in `slow_stops`.
    pub fn term(&mut self) {
        self.sample();
        let Some(mut c) = self.child.take() else {
            return;
        };
        let t = Instant::now();
        let _ = signal(c.id(), "TERM");
        while t.elapsed() < STOP_GRACE {
            if let Ok(Some(status)) = c.try_wait() {
                if t.elapsed() > SLOW_STOP {
                    self.slow_stops.push(format!(
                        "{}: stopping on SIGTERM took {:.1}s ({status})",
                        self.name,
                        t.elapsed().as_secs_f64()
                    ));
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.slow_stops.push(format!(
            "{}: still running {}s after SIGTERM (REDMIRROR_SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT}); killed",
            self.name,
            STOP_GRACE.as_secs()
        ));
        let _ = c.kill();
        let _ = c.wait();
    }

    /// A sample from `/metrics` (None when absent or unreachable).
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (code, body) = http(self.http, "GET", "/metrics", None, Duration::from_secs(5)).ok()?;
        if code != 200 {
            return None;
        }
        body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == sample).then(|| v.parse().ok()).flatten()
        })
    }

    /// The last lines of its log that mention a warning or an error.
    pub fn log_tail(&self, lines: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
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

/// A raw HTTP/1.0 request to 127.0.0.1:`port`: status code and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let mut c = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    c.set_read_timeout(Some(timeout))?;
    c.set_write_timeout(Some(Duration::from_secs(5)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        c,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{auth}Content-Length: 0\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("").to_string();
    Ok((code, body))
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
