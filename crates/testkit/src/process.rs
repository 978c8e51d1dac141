//! A `redmirror` process started by a test, the benchmarks or the fault
//! suite: spawned with its own environment and its output in a log file,
//! killed and reaped on drop; its HTTP listener asked over plain HTTP/1.0
//! (`/metrics` read with the one Prometheus text parser,
//! `redmirror-promtext`); its peak RSS and CPU time read from `/proc`.
//!
//! A [`Launch`] says what to run; [`Process::spawn`] runs it. Restarting is
//! spawning the same [`Launch`] again.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use redmirror_promtext::Metrics;

/// Which of this process's own `REDMIRROR_*` variables the child keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inherit {
    /// None: the child sees only the variables the [`Launch`] sets.
    Nothing,
    /// Kafka client properties (`REDMIRROR_KAFKA_*` other than
    /// `REDMIRROR_KAFKA_BROKERS`), so settings can be compared under the
    /// same load; the servers are always the launcher's own.
    KafkaProperties,
}

/// A command for `bin` with the inherited `REDMIRROR_*` variables removed
/// as `inherit` says.
pub fn command(bin: &Path, inherit: Inherit) -> Command {
    let mut c = Command::new(bin);
    for (k, _) in std::env::vars() {
        let kafka_property = k.starts_with("REDMIRROR_KAFKA_") && k != "REDMIRROR_KAFKA_BROKERS";
        let keep = inherit == Inherit::KafkaProperties && kafka_property;
        if k.starts_with("REDMIRROR_") && !keep {
            c.env_remove(k);
        }
    }
    c
}

/// How the log file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    /// A fresh file.
    Truncate,
    /// Appended to, so one file holds every start of a restarted process.
    Append,
}

/// What to run: binary, arguments, environment, HTTP address, log file.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The binary.
    pub bin: PathBuf,
    /// Its arguments (`run`, `reconcile --once`, ...).
    pub args: Vec<String>,
    /// Variables set on top of what [`Inherit`] keeps.
    pub env: Vec<(String, String)>,
    /// Inherited `REDMIRROR_*` variables kept.
    pub inherit: Inherit,
    /// Its port on 127.0.0.1, given as `REDMIRROR_HTTP_ADDR` (after `env`).
    pub http_port: u16,
    /// Where stdout and stderr go.
    pub log: PathBuf,
    /// How `log` is opened.
    pub log_mode: LogMode,
}

impl Launch {
    /// `bin args` on a free HTTP port, logging to `log` (truncated), with no
    /// inherited `REDMIRROR_*` variable.
    pub fn new(bin: impl Into<PathBuf>, args: &[&str], log: impl Into<PathBuf>) -> Launch {
        Launch {
            bin: bin.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            inherit: Inherit::Nothing,
            http_port: crate::free_port(),
            log: log.into(),
            log_mode: LogMode::Truncate,
        }
    }

    /// Replaces (or adds) one variable.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    /// Adds these variables (later ones win).
    pub fn envs<K: AsRef<str>, V: AsRef<str>>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Launch {
        for (k, v) in vars {
            self.set_env(k.as_ref(), v.as_ref());
        }
        self
    }

    /// The HTTP address, `127.0.0.1:port`.
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }
}

/// A signal sent with `kill(1)` (the workspace denies unsafe code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Graceful stop.
    Term,
    /// kill -9.
    Kill,
    /// Freeze (`SIGSTOP`).
    Stop,
    /// Thaw (`SIGCONT`).
    Cont,
}

impl Signal {
    /// The name `kill(1)` takes.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
        }
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: Signal) -> std::io::Result<()> {
    let st = Command::new("kill")
        .arg(format!("-{}", sig.name()))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !st.success() {
        return Err(std::io::Error::other(format!(
            "kill -{} {pid} failed ({st})",
            sig.name()
        )));
    }
    Ok(())
}

/// An HTTP method of the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST` (with an empty body).
    Post,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// An HTTP request to a process.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET` or `POST`.
    pub method: Method,
    /// `/metrics`, `/v1/status`, ...
    pub path: &'a str,
    /// The admin bearer token, if any.
    pub token: Option<&'a str>,
    /// Read deadline.
    pub timeout: Duration,
}

impl<'a> Request<'a> {
    /// `GET path` without a token, 5 s deadline.
    pub fn get(path: &'a str) -> Request<'a> {
        Request {
            method: Method::Get,
            path,
            token: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// `POST path` without a token, 5 s deadline.
    pub fn post(path: &'a str) -> Request<'a> {
        Request {
            method: Method::Post,
            ..Request::get(path)
        }
    }

    /// With the admin bearer token.
    pub fn token(self, token: &'a str) -> Request<'a> {
        Request {
            token: Some(token),
            ..self
        }
    }

    /// With another read deadline.
    pub fn timeout(self, timeout: Duration) -> Request<'a> {
        Request { timeout, ..self }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body, lossily decoded.
    pub body: String,
}

/// One HTTP/1.0 request to 127.0.0.1:`port` (no client library: the
/// server closes the connection, so the body is everything after the
/// headers).
pub fn http(port: u16, req: Request<'_>) -> std::io::Result<Response> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    c.set_read_timeout(Some(req.timeout))?;
    c.set_write_timeout(Some(Duration::from_secs(5)))?;
    let auth = req
        .token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    // One write: `write!` on a socket sends each formatted piece on its own.
    let request = format!(
        "{} {} HTTP/1.0\r\nHost: localhost\r\n{auth}Content-Length: 0\r\n\r\n",
        req.method.as_str(),
        req.path
    );
    c.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status line"))?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("").to_string();
    Ok(Response { status, body })
}

/// `GET /metrics` on `port`, parsed; `None` when unreachable, not 200 or
/// not Prometheus text.
pub fn scrape(port: u16) -> Option<Metrics> {
    let r = http(port, Request::get("/metrics")).ok()?;
    if r.status != 200 {
        return None;
    }
    Metrics::parse(&r.body).ok()
}

/// How a [`Process::terminate`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running.
    NotRunning,
    /// It exited after SIGTERM, this long after (zero: it had exited already).
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Time from SIGTERM to the exit.
        after: Duration,
    },
    /// It was still running when the grace time ended, and was killed.
    Killed,
}

/// A running (or exited, not yet reaped) process; killed and reaped on drop.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    http_port: u16,
    log: PathBuf,
    /// Sampled through `&self`, so a process borrowed for its metrics can
    /// report its resources too.
    peak_rss: Cell<f64>,
    cpu: Cell<f64>,
}

impl Process {
    /// Starts `launch`.
    pub fn spawn(launch: &Launch) -> std::io::Result<Process> {
        let out = match launch.log_mode {
            LogMode::Truncate => File::create(&launch.log)?,
            LogMode::Append => OpenOptions::new().create(true).append(true).open(&launch.log)?,
        };
        let child = command(&launch.bin, launch.inherit)
            .args(&launch.args)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env("REDMIRROR_HTTP_ADDR", launch.http_addr())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(Process {
            child: Some(child),
            http_port: launch.http_port,
            log: launch.log.clone(),
            peak_rss: Cell::new(0.0),
            cpu: Cell::new(0.0),
        })
    }

    /// Its process id, until it is reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its HTTP port on 127.0.0.1.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything in its log file so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status once it has exited by itself (reaped, and the same
    /// status on every later call); `None` while it runs or after
    /// [`kill`](Self::kill) or [`terminate`](Self::terminate).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.sample();
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Ok(None),
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.is_some() && matches!(self.try_wait(), Ok(None))
    }

    /// kill -9 and reap (after a last RSS and CPU sample).
    pub fn kill(&mut self) {
        self.sample();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then kill -9 when it has not exited within `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Stopped {
        self.sample();
        let Some(mut c) = self.child.take() else {
            return Stopped::NotRunning;
        };
        let t = Instant::now();
        // A process already reaped is not signalled: its pid may be another's by now.
        if let Ok(Some(status)) = c.try_wait() {
            return Stopped::Exited {
                status,
                after: Duration::ZERO,
            };
        }
        let _ = signal(c.id(), Signal::Term);
        while t.elapsed() < grace {
            if let Ok(Some(status)) = c.try_wait() {
                return Stopped::Exited {
                    status,
                    after: t.elapsed(),
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        Stopped::Killed
    }

    /// One request to its HTTP listener.
    pub fn http(&self, req: Request<'_>) -> std::io::Result<Response> {
        http(self.http_port, req)
    }

    /// `GET /metrics`, parsed (see [`scrape`]).
    pub fn scrape(&self) -> Option<Metrics> {
        scrape(self.http_port)
    }

    /// One sample written as `name{labels}` (labels in any order); `None`
    /// when absent or unreachable.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        self.scrape()?.sample(sample)
    }

    /// Reads its peak RSS and CPU time from `/proc` while it runs (the last
    /// values are kept after it is gone).
    pub fn sample(&self) {
        if let Some(pid) = self.pid() {
            if let Some(m) = peak_rss_mib(pid) {
                self.peak_rss.set(self.peak_rss.get().max(m));
            }
            if let Some(s) = cpu_seconds(pid) {
                self.cpu.set(s);
            }
        }
    }

    /// Peak resident set (VmHWM), MiB: sampled now while it runs, else the
    /// last sample.
    pub fn peak_rss_mib(&self) -> f64 {
        self.sample();
        self.peak_rss.get()
    }

    /// User + system CPU seconds: sampled now while it runs, else the last
    /// sample.
    pub fn cpu_seconds(&self) -> f64 {
        self.sample();
        self.cpu.get()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Peak resident set (VmHWM) of a process, MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
}

/// User + system CPU seconds of a process (`/proc/{pid}/stat`, 100 ticks a
/// second).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    if f.len() <= 13 {
        return None;
    }
    let ticks = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
    Some(ticks / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot HTTP/1.0 server on a free port answering `reply` once.
    fn answer_once(reply: &'static str) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            if let Some(Ok(mut s)) = l.incoming().next() {
                // The whole request first: a reply sent and the socket
                // closed with request bytes unread makes the kernel reset
                // the connection, and the client reads an error.
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let (mut request, mut buf) = (Vec::new(), [0u8; 1024]);
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(reply.as_bytes());
            }
        });
        port
    }

    #[test]
    fn a_metric_is_read_from_the_scraped_text() {
        let port = answer_once(
            "HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\n# TYPE x counter\nx{b=\"2\",a=\"1\"} 7\ny 1\n",
        );
        let m = scrape(port).expect("scraped");
        assert_eq!(m.sample("x{a=\"1\",b=\"2\"}"), Some(7.0));
        assert_eq!(m.sample("y"), Some(1.0));
        assert_eq!(m.sample("z"), None);
    }

    #[test]
    fn a_response_has_its_status_and_body() {
        let port = answer_once("HTTP/1.0 401 Unauthorized\r\n\r\nno");
        let r = http(port, Request::post("/v1/reconcile").token("t")).expect("answer");
        assert_eq!(
            r,
            Response {
                status: 401,
                body: "no".into()
            }
        );
    }

    #[test]
    fn a_process_is_killed_on_drop_and_its_output_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("out.log");
        let mut launch = Launch::new("/bin/sh", &["-c", "echo started; exec sleep 30"], &log);
        launch.set_env("REDMIRROR_X", "1");
        let mut p = Process::spawn(&launch).expect("spawn");
        let pid = p.pid().expect("pid");
        assert!(p.running());
        crate::wait_for("the output", Duration::from_secs(5), || {
            p.output().contains("started").then_some(())
        });
        drop(p);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "killed and reaped");
    }

    #[test]
    fn an_exit_status_is_kept_once_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let launch = Launch::new("/bin/sh", &["-c", "exit 3"], dir.path().join("log"));
        let mut p = Process::spawn(&launch).expect("spawn");
        let status = crate::wait_for("the exit", Duration::from_secs(5), || p.try_wait().ok().flatten());
        assert_eq!(status.code(), Some(3));
        assert!(!p.running());
        assert_eq!(p.try_wait().expect("status").and_then(|s| s.code()), Some(3));
    }

    #[test]
    fn terminate_reports_how_the_process_ended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let launch = Launch::new("/bin/sh", &["-c", "exec sleep 30"], dir.path().join("log"));
        let mut p = Process::spawn(&launch).expect("spawn");
        assert!(matches!(p.terminate(Duration::from_secs(5)), Stopped::Exited { .. }));
        assert_eq!(p.terminate(Duration::from_secs(5)), Stopped::NotRunning);
    }
}
