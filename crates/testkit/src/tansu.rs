//! Tansu, a Kafka-compatible broker, as an optional second target
//! (`REDMIRROR_TEST_BROKER=tansu`). Its log is in memory: a kill loses it,
//! so it cannot be restarted with its log, and its fetch and watermark
//! behaviour differ from Apache Kafka's (see docs/reliability.md).

use std::path::PathBuf;
use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

use crate::{free_port, kafka::spawn_detached, wait_port, workspace_root};

/// The install command for Tansu.
const TANSU_HINT: &str = "run REDMIRROR_TEST_BROKER=tansu scripts/install-test-deps (installs the pinned Tansu broker)";

/// The Tansu binary: `$TANSU_BIN`, else `.tools/tansu` in the workspace.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let p = workspace_root().join(".tools/tansu");
    assert!(
        p.is_file(),
        "the Tansu broker is missing at {}: {TANSU_HINT}",
        p.display()
    );
    p
}

/// A Tansu broker process (in-memory storage) on a free port; killed on drop.
pub struct TansuBroker {
    child: Mutex<Option<Child>>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TansuBroker {
    /// Starts a broker.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = TansuBroker {
            child: Mutex::new(None),
            port: free_port(),
            log: dir.path().join("tansu.log"),
            _dir: dir,
        };
        let url = format!("tcp://127.0.0.1:{}", b.port);
        let args = vec![
            "broker".into(),
            "--listener-url".into(),
            url.clone(),
            "--advertised-listener-url".into(),
            url,
            "--storage-engine".into(),
            "memory://tansu/".into(),
        ];
        let child = spawn_detached(&tansu_bin().display().to_string(), args, &b.log)
            .unwrap_or_else(|e| panic!("cannot start the broker ({e}): {TANSU_HINT}"));
        *b.child.lock().expect("child") = Some(child);
        if !wait_port(b.port, Duration::from_secs(20)) {
            b.kill_now();
            panic!(
                "broker on port {} did not start:\n{}",
                b.port,
                std::fs::read_to_string(&b.log).unwrap_or_default()
            );
        }
        b
    }

    /// `127.0.0.1:{port}` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn kill_now(&self) {
        if let Some(mut c) = self.child.lock().map(|mut g| g.take()).unwrap_or(None) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id, for SIGSTOP/SIGCONT fault injection.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().expect("child").as_ref().map(Child::id)
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        self.kill_now();
    }
}
