//! The demo's two Redis servers: `redis-server` processes on free ports of
//! 127.0.0.1, in the demo's directory, without persistence, killed when
//! dropped. The demo is a product command, so a server that cannot start
//! is an error that says why (its log), never a panic.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How long a server may take to answer its first `PING`.
const START_WITHIN: Duration = Duration::from_secs(10);

/// A local `redis-server`; killed on drop.
pub struct LocalRedis {
    child: Child,
    port: u16,
}

impl LocalRedis {
    /// Starts one in `dir/name`, with `notify` as its
    /// `notify-keyspace-events` when given. A port taken between choosing
    /// it and the server's bind is swapped for another (three tries).
    pub fn start(dir: &Path, name: &str, notify: Option<&str>) -> anyhow::Result<LocalRedis> {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let log = dir.join("redis.log");
        let mut last = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .context("cannot find a free port on 127.0.0.1")?
                .port();
            let mut cmd = Command::new("redis-server");
            cmd.args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log);
            if let Some(n) = notify {
                cmd.args(["--notify-keyspace-events", n]);
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start redis-server")?;
            let mut server = LocalRedis { child, port };
            if server.wait_ready() {
                return Ok(server);
            }
            drop(server);
            last = std::fs::read_to_string(&log).unwrap_or_default();
            if !last.contains("Address already in use") {
                break;
            }
        }
        Err(anyhow::anyhow!(
            "the demo's {name} redis-server did not start within {}s; its log ({}):\n{last}",
            START_WITHIN.as_secs(),
            log.display()
        ))
    }

    /// True once the server answers `PING`; false when it exited or did
    /// not answer within [`START_WITHIN`].
    fn wait_ready(&mut self) -> bool {
        let end = Instant::now() + START_WITHIN;
        while Instant::now() < end {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            if answers_ping(&self.url()) {
                return true;
            }
            // Polled until the deadline: a server starts in milliseconds.
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A connection to it.
    pub fn conn(&self) -> anyhow::Result<redis::Connection> {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .with_context(|| format!("cannot connect to the demo's server at {}", self.url()))
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `PING` on a fresh connection answered: the server is up (not
/// loading, and not something else on the port).
fn answers_ping(url: &str) -> bool {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

/// Where the demo keeps its servers' files and its log (kept after it
/// stops).
pub fn demo_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("redmirror-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
