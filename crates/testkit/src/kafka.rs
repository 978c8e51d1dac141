//! An Apache Kafka broker process: single-node KRaft (one process is both
//! broker and controller), its own directory and two free ports, killed on
//! drop. Restartable on the same log directory, so a `kill -9` and a start
//! again keep every record, group and committed offset, as a real broker
//! does.
//!
//! The jars come from `tests/kafka/pom.xml`, gathered by
//! `scripts/install-test-deps` into `.tools/kafka/libs` (or
//! `$REDMIRROR_KAFKA_LIBS`). Each start runs `kafka.tools.StorageTool
//! format` once for a new directory, then `kafka.Kafka server.properties`.
//!
//! Every broker process is spawned from one long-lived thread with
//! `PR_SET_PDEATHSIG`, so it dies with the test process even when that
//! process is killed or aborts; the shared broker ([`KafkaBroker::shared`])
//! is also killed and its directory removed at a normal exit.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::{free_port, wait_port, workspace_root, INSTALL_HINT};

/// The Apache Kafka version the tests run against; keep in step with
/// `kafka.version` in `tests/kafka/pom.xml`.
pub const KAFKA_VERSION: &str = "4.1.2";

/// The broker's JVM heap (`-Xmx`); `$REDMIRROR_TEST_KAFKA_HEAP` overrides.
const DEFAULT_HEAP: &str = "512m";

/// How long a start may take before the broker's log is printed.
const START_DEADLINE: Duration = Duration::from_secs(90);

/// The directory holding the broker's jars: `$REDMIRROR_KAFKA_LIBS`, else
/// `.tools/kafka/libs` in the workspace. Panics with the install command when
/// the broker's jar is missing.
pub fn kafka_libs() -> PathBuf {
    let dir = std::env::var_os("REDMIRROR_KAFKA_LIBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/kafka/libs"));
    let jar = dir.join(format!("kafka_2.13-{KAFKA_VERSION}.jar"));
    assert!(
        jar.is_file(),
        "Apache Kafka {KAFKA_VERSION} is missing ({} not found): {INSTALL_HINT}",
        jar.display()
    );
    dir
}

/// What the spawner thread starts: a program, its arguments and where its
/// output goes.
struct Spawn {
    program: String,
    args: Vec<String>,
    log: PathBuf,
    reply: mpsc::Sender<std::io::Result<Child>>,
}

/// Sends `spawn` to the one thread that starts broker processes. That thread
/// never ends, so `PR_SET_PDEATHSIG` (which fires when the *thread* that
/// forked dies) fires exactly when the test process goes away.
pub(crate) fn spawn_detached(program: &str, args: Vec<String>, log: &Path) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Spawn>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Spawn>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for s in rx {
                    let _ = s.reply.send(spawn_here(&s));
                }
                // The sender lives in a static: never reached, but park
                // rather than exit so children keep their parent thread.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (reply, rx) = mpsc::channel();
    tx.lock()
        .expect("spawner")
        .send(Spawn {
            program: program.into(),
            args,
            log: log.into(),
            reply,
        })
        .expect("spawner thread alive");
    rx.recv().expect("spawner reply")
}

fn spawn_here(s: &Spawn) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new().create(true).append(true).open(&s.log)?;
    let mut cmd = Command::new(&s.program);
    cmd.args(&s.args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: the closure runs in the forked child before exec and calls
    // only prctl(2), which is async-signal-safe and touches no memory of
    // the parent.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// A Kafka cluster id: 16 bytes, base64url without padding (what
/// `kafka-storage random-uuid` prints).
fn cluster_id() -> String {
    use base64::Engine;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut bytes = (nanos ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    // Version 4 / variant bits, as a random UUID has.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    // The first character comes from the top six bits of the first byte:
    // keep it a letter. One id in 64 started with '-', which the storage
    // tool's argument parser reads as an option ("--cluster-id: expected
    // one argument").
    bytes[0] &= 0x3f;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The owner of a broker's directory: a temporary one removed on drop, or
/// (for the shared broker) one removed at process exit.
enum Dir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Kept(p) => p,
        }
    }
}

/// An Apache Kafka broker process; killed on drop.
pub struct KafkaBroker {
    child: Mutex<Option<Child>>,
    port: u16,
    controller_port: u16,
    dir: Dir,
}

impl KafkaBroker {
    /// Starts a broker of its own (fresh directory, free ports), ready when
    /// its client port accepts and metadata answers. For tests that stop,
    /// pause or restart the broker; others use [`KafkaBroker::shared`].
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("redmirror-kafka-")
            .tempdir()
            .expect("tempdir");
        let b = KafkaBroker::new(Dir::Temp(dir));
        b.format();
        b.spawn();
        b
    }

    /// The broker shared by every test of this process, started on first
    /// use. Tests on it use their own topics and groups; none may stop it.
    pub fn shared() -> &'static KafkaBroker {
        static SHARED: OnceLock<KafkaBroker> = OnceLock::new();
        SHARED.get_or_init(|| {
            let dir = tempfile::Builder::new()
                .prefix("redmirror-kafka-")
                .tempdir()
                .expect("tempdir")
                .keep();
            let b = KafkaBroker::new(Dir::Kept(dir));
            b.format();
            b.spawn();
            extern "C" fn at_exit() {
                if let Some(b) = SHARED.get() {
                    b.kill_now();
                    if let Dir::Kept(p) = &b.dir {
                        let _ = std::fs::remove_dir_all(p);
                    }
                }
            }
            // SAFETY: registers a plain `extern "C" fn` with no captured
            // state; it runs once at exit and only kills and reaps our child
            // and removes its directory.
            #[allow(unsafe_code)]
            unsafe {
                libc::atexit(at_exit);
            }
            b
        })
    }

    fn new(dir: Dir) -> Self {
        let port = free_port();
        let mut controller_port = free_port();
        while controller_port == port {
            controller_port = free_port();
        }
        let b = KafkaBroker {
            child: Mutex::new(None),
            port,
            controller_port,
            dir,
        };
        b.write_config();
        b
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let data = d.join("data");
        let props = format!(
            "# Written by redmirror-testkit: one process, broker and controller.\n\
             process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{cport}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             log.dirs={data}\n\
             num.partitions=1\n\
             auto.create.topics.enable=false\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=1\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             transaction.state.log.num.partitions=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             share.coordinator.state.topic.num.partitions=1\n\
             group.initial.rebalance.delay.ms=0\n\
             log.cleaner.dedupe.buffer.size=8388608\n\
             log.cleaner.threads=1\n\
             num.network.threads=2\n\
             num.io.threads=4\n\
             num.recovery.threads.per.data.dir=1\n\
             background.threads=4\n\
             # A restarted node re-registers only once the controller has\n\
             # fenced its previous incarnation: 2 s rather than 9 s.\n\
             broker.session.timeout.ms=2000\n\
             broker.heartbeat.interval.ms=500\n",
            port = self.port,
            cport = self.controller_port,
            data = data.display(),
        );
        std::fs::write(d.join("server.properties"), props).expect("write server.properties");
        let log4j = format!(
            "status = warn\n\
             appender.file.type = File\n\
             appender.file.name = file\n\
             appender.file.fileName = {}\n\
             appender.file.layout.type = PatternLayout\n\
             appender.file.layout.pattern = [%d] %p %m (%c)%n\n\
             rootLogger.level = INFO\n\
             rootLogger.appenderRef.file.ref = file\n\
             logger.kafka.name = kafka\n\
             logger.kafka.level = INFO\n\
             logger.state.name = state.change.logger\n\
             logger.state.level = WARN\n",
            d.join("server.log").display()
        );
        std::fs::write(d.join("log4j2.properties"), log4j).expect("write log4j2.properties");
    }

    fn java_args(&self, main: &str) -> Vec<String> {
        let d = self.dir.path();
        let heap = std::env::var("REDMIRROR_TEST_KAFKA_HEAP").unwrap_or_else(|_| DEFAULT_HEAP.into());
        vec![
            format!("-Xmx{heap}"),
            "-Xms128m".into(),
            "-XX:+UseSerialGC".into(),
            "-Djava.awt.headless=true".into(),
            format!("-Dlog4j2.configurationFile={}", d.join("log4j2.properties").display()),
            format!("-Dkafka.logs.dir={}", d.display()),
            "-cp".into(),
            format!("{}/*", kafka_libs().display()),
            main.into(),
        ]
    }

    fn java() -> String {
        match std::env::var_os("JAVA_HOME") {
            Some(h) if Path::new(&h).join("bin/java").is_file() => Path::new(&h).join("bin/java").display().to_string(),
            _ => "java".into(),
        }
    }

    /// `kafka.tools.StorageTool format` on the new directory.
    fn format(&self) {
        let d = self.dir.path();
        let mut args = self.java_args("kafka.tools.StorageTool");
        args.extend([
            "format".into(),
            "-t".into(),
            cluster_id(),
            "-c".into(),
            d.join("server.properties").display().to_string(),
        ]);
        let out = Command::new(Self::java())
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run java ({e}): {INSTALL_HINT}"));
        assert!(
            out.status.success(),
            "formatting the Kafka log directory {} failed ({}):\n{}{}",
            d.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn(&self) {
        let d = self.dir.path();
        let mut args = self.java_args("kafka.Kafka");
        args.push(d.join("server.properties").display().to_string());
        let stdout = d.join("stdout.log");
        let _ = writeln!(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&stdout)
                .expect("stdout.log"),
            "---- start ----"
        );
        let child = spawn_detached(&Self::java(), args, &stdout)
            .unwrap_or_else(|e| panic!("cannot start the Kafka broker ({e}): {INSTALL_HINT}"));
        *self.child.lock().expect("child") = Some(child);
        let t0 = Instant::now();
        let ready =
            wait_port(self.port, START_DEADLINE) && self.metadata_answers(START_DEADLINE.saturating_sub(t0.elapsed()));
        if !ready {
            self.kill_now();
            panic!(
                "Apache Kafka on port {} did not become ready within {START_DEADLINE:?}.\nstdout:\n{}\nserver.log (tail):\n{}",
                self.port,
                std::fs::read_to_string(&stdout).unwrap_or_default(),
                tail(&std::fs::read_to_string(d.join("server.log")).unwrap_or_default(), 60),
            );
        }
    }

    /// True once a metadata request lists this broker.
    fn metadata_answers(&self, deadline: Duration) -> bool {
        let end = Instant::now() + deadline;
        let consumer: BaseConsumer = match ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("log_level", "3")
            .create()
        {
            Ok(c) => c,
            Err(_) => return false,
        };
        while Instant::now() < end {
            if let Ok(md) = consumer.fetch_metadata(None, Duration::from_secs(2)) {
                if md.brokers().iter().any(|b| b.id() == 1) {
                    return true;
                }
            }
            if !self.running() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn running(&self) -> bool {
        let mut g = self.child.lock().expect("child");
        match g.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// True when the process was started and has exited by itself.
    pub fn exited(&self) -> bool {
        let mut g = self.child.lock().expect("child");
        match g.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => false,
        }
    }

    fn kill_now(&self) {
        if let Some(mut c) = self.child.lock().map(|mut g| g.take()).unwrap_or(None) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `127.0.0.1:{port}` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the broker now (`kill -9`); its log directory stays, so
    /// [`KafkaBroker::start_again`] brings every record back.
    pub fn kill(&mut self) {
        self.kill_now();
    }

    /// Starts a killed broker again on the same directory and ports, and
    /// waits until it is ready.
    pub fn start_again(&mut self) {
        assert!(!self.running(), "the broker is running");
        self.spawn();
    }

    /// The process id, for SIGSTOP/SIGCONT fault injection.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().expect("child").as_ref().map(Child::id)
    }

    /// The broker's directory (config, `server.log`, `data/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of `server.log`.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(
            &std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default(),
            lines,
        )
    }
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.kill_now();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cluster_id_never_reads_as_an_option() {
        for _ in 0..10_000 {
            let id = super::cluster_id();
            assert_eq!(id.len(), 22, "{id}");
            assert!(id.starts_with(|c: char| c.is_ascii_uppercase()), "{id}");
        }
    }
}
