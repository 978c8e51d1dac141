//! The test harness, written once and shared by every test suite.
//!
//! # Layout
//! - [`free_port`]: a free loopback port (never a fixed one).
//! - [`RedisServer`]: a `redis-server` process on a free port, in its own
//!   temporary directory, killed and reaped on drop; restartable with its
//!   data kept. Start-up failure panics with the server's log.
//! - [`Broker`]: a Tansu (Kafka-compatible) broker process, same guarantees.
//! - [`wait_for`]: poll a condition until a deadline, then fail with a message.
//! - [`flows`]: reading flows through an independent client (the `redis` crate).
//!
//! Everything fails loudly when a dependency is missing: a test that cannot
//! find `redis-server` or the broker panics, naming the install command.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod flows;
pub mod invariant;

/// The install command printed when a dependency is missing.
pub const INSTALL_HINT: &str = "run scripts/install-test-deps (installs redis-server and the pinned Tansu broker)";

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn wait_port(port: u16, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Options for a [`RedisServer`].
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `notify-keyspace-events` at start (None: the server's default, off).
    pub notify: Option<String>,
    /// Extra `--name value` arguments.
    pub args: Vec<(String, String)>,
}

impl RedisOptions {
    /// Keyspace notifications on, as capture needs them.
    pub fn with_notifications() -> Self {
        RedisOptions {
            notify: Some("KEA".into()),
            args: Vec::new(),
        }
    }

    /// Adds `--name value`.
    pub fn arg(mut self, name: &str, value: &str) -> Self {
        self.args.push((name.into(), value.into()));
        self
    }
}

/// A `redis-server` process on a free port; killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    opts: RedisOptions,
}

impl RedisServer {
    /// A server with keyspace notifications on (the source's usual shape).
    pub fn start() -> Self {
        Self::start_with(RedisOptions::with_notifications())
    }

    /// A server with these options.
    pub fn start_with(opts: RedisOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir,
            opts,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--logfile")
            .arg(&log);
        if let Some(n) = &self.opts.notify {
            cmd.arg("--notify-keyspace-events").arg(n);
        }
        for (k, v) in &self.opts.args {
            cmd.arg(format!("--{k}")).arg(v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): {INSTALL_HINT}"));
        self.child = Some(child);
        if !wait_port(self.port, Duration::from_secs(10)) {
            let mut err = String::new();
            if let Some(mut c) = self.child.take() {
                kill(&mut c);
                if let Some(mut e) = c.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
            }
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "redis-server on port {} did not start.\nstderr: {err}\nlog:\n{log}",
                self.port
            );
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A new connection through the independent `redis` crate client.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()))
    }

    /// Runs a command and returns its reply.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&[u8]]) -> T {
        let mut c = redis::cmd(std::str::from_utf8(args[0]).expect("command name"));
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(&mut self.conn())
            .unwrap_or_else(|e| panic!("{:?} on {}: {e}", String::from_utf8_lossy(args[0]), self.url()))
    }

    /// Stops the server now (kill -9); data not saved is lost.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// Saves the data, stops the server, and starts it again on the same
    /// port with the same data.
    pub fn restart(&mut self) {
        let _: () = redis::cmd("SAVE").query(&mut self.conn()).expect("SAVE");
        self.stop();
        self.start_again();
    }

    /// Starts a stopped server again (same port, same directory: data saved
    /// by `SAVE` comes back).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "server is running");
        self.spawn();
    }

    /// The server's directory (config, dumps, log).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Tansu binary: `$TANSU_BIN`, else `.tools/tansu` in the workspace.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let p = workspace_root().join(".tools/tansu");
    assert!(
        p.is_file(),
        "the Tansu broker is missing at {}: {INSTALL_HINT}",
        p.display()
    );
    p
}

/// A Kafka-compatible broker process (Tansu, in-memory storage) on a free
/// port; killed on drop.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Broker {
            child: None,
            port: free_port(),
            log: dir.path().join("tansu.log"),
            _dir: dir,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(&self.log).expect("broker log");
        let child = Command::new(tansu_bin())
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .env_remove("STORAGE_ENGINE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the broker ({e}): {INSTALL_HINT}"));
        self.child = Some(child);
        if !wait_port(self.port, Duration::from_secs(20)) {
            self.stop();
            panic!(
                "broker on port {} did not start:\n{}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// `127.0.0.1:{port}` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (its in-memory log is lost).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// The process id, for SIGSTOP/SIGCONT fault injection.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after
/// `deadline` with `what` and the last observation.
#[track_caller]
pub fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async version of [`wait_for`]: `check` is polled every 20 ms.
#[track_caller]
pub fn wait_for_async<'a, T, F, Fut>(
    what: &'a str,
    deadline: Duration,
    mut check: F,
) -> impl std::future::Future<Output = T> + 'a
where
    F: FnMut() -> Fut + 'a,
    Fut: std::future::Future<Output = Option<T>> + 'a,
    T: 'a,
{
    let caller = std::panic::Location::caller();
    async move {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if tokio::time::Instant::now() > end {
                panic!("timed out after {deadline:?} waiting for: {what} (at {caller})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
