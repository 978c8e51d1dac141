//! Starting `redmirror` processes against test servers, and reading the result.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use redmirror_testkit::process::{Inherit, Launch, Process, Request, Stopped};

pub use redmirror_testkit::flows::{exists, hash, hexists, hgetall, hset, Hash};
pub use redmirror_testkit::{wait_for, Broker, RedisOptions, RedisServer};

/// Deadline for the mirror to converge in tests.
pub const CONVERGE: Duration = Duration::from_secs(60);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique name (topic, group) for this test.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A `redmirror` child process, killed on drop; its output goes to a log file
/// printed when the test fails.
pub struct Mirror {
    process: Process,
    pub log: PathBuf,
    pub http: String,
    pub topic: String,
    pub group: String,
    _dir: tempfile::TempDir,
}

/// The whole set-up of one test: source, destination, broker, mirror.
pub struct Setup {
    pub source: RedisServer,
    pub dest: RedisServer,
    pub broker: &'static Broker,
    pub mirror: Mirror,
}

/// The binary under test: this build's, or `REDMIRROR_TEST_BIN` (to run a
/// new test against an older build and see it fail).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("REDMIRROR_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_redmirror").into()))
}

/// A command for the binary with the inherited REDMIRROR_* variables removed.
pub fn command() -> Command {
    redmirror_testkit::process::command(bin().as_ref(), Inherit::Nothing)
}

/// The environment for a mirror on these servers (unique topic and group).
pub fn mirror_env(source: &str, dest: &str, brokers: &str) -> BTreeMap<String, String> {
    let topic = unique("flows");
    let mut env = BTreeMap::new();
    for (k, v) in [
        ("REDMIRROR_SOURCE_URL", source.to_string()),
        ("REDMIRROR_DEST_URL", dest.to_string()),
        ("REDMIRROR_KAFKA_BROKERS", brokers.to_string()),
        ("REDMIRROR_GROUP_ID", unique("group")),
        ("REDMIRROR_TOPIC", topic),
        ("REDMIRROR_TOPIC_PARTITIONS", "3".to_string()),
        (
            "REDMIRROR_HTTP_ADDR",
            format!("127.0.0.1:{}", redmirror_testkit::free_port()),
        ),
        ("REDMIRROR_FILTERED_ORGS", "org_hello,org_demo".to_string()),
        ("REDMIRROR_KAFKA_SESSION_TIMEOUT_MS", "6000".to_string()),
        ("REDMIRROR_LOG", "info".to_string()),
        ("REDMIRROR_SHUTDOWN_TIMEOUT", "10s".to_string()),
    ] {
        env.insert(k.to_string(), v);
    }
    env
}

impl Mirror {
    /// Starts `redmirror {args}` with `env`, which names its HTTP address
    /// (`REDMIRROR_HTTP_ADDR`, `127.0.0.1:{port}`).
    pub fn start(args: &[&str], env: &BTreeMap<String, String>) -> Mirror {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("redmirror.log");
        let addr = &env["REDMIRROR_HTTP_ADDR"];
        let mut launch = Launch::new(bin(), args, &log).envs(env);
        launch.http_port = addr
            .strip_prefix("127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("REDMIRROR_HTTP_ADDR={addr}: tests listen on 127.0.0.1:{{port}}"));
        let process = Process::spawn(&launch).expect("spawn redmirror");
        Mirror {
            process,
            log,
            http: format!("http://{addr}"),
            topic: env["REDMIRROR_TOPIC"].clone(),
            group: env["REDMIRROR_GROUP_ID"].clone(),
            _dir: dir,
        }
    }

    /// The process's output so far.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        self.process.running()
    }

    /// Waits (up to `deadline`) for the process to exit by itself; its exit code.
    #[track_caller]
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let what = "redmirror to exit by itself";
        let status = wait_for(what, deadline, || self.process.try_wait().ok().flatten());
        status.code()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid().expect("running")
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        match self.process.terminate(Duration::from_secs(30)) {
            Stopped::NotRunning => None,
            Stopped::Exited { status, .. } => status.code(),
            Stopped::Killed => panic!("redmirror did not stop within 30 s of SIGTERM:\n{}", self.output()),
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// The status code of `GET /readyz` (0 when it does not answer).
    pub fn readyz(&self) -> u16 {
        self.process.http(Request::get("/readyz")).map_or(0, |r| r.status)
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        self.process
            .http(Request::get("/metrics"))
            .map(|r| r.body)
            .unwrap_or_default()
    }

    /// Value of a counter/gauge sample line (`name{labels}`), 0 if absent.
    pub fn metric(&self, sample: &str) -> f64 {
        self.process.metric(sample).unwrap_or(0.0)
    }
}

/// The value of one sample (`name{labels}` as the exposition writes it) in
/// Prometheus text, 0 if absent.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    redmirror_testkit::process::Metrics::parse(text)
        .ok()
        .and_then(|m| m.sample(sample))
        .unwrap_or(0.0)
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- redmirror output ----\n{}\n---- end ----", self.output());
        }
    }
}

/// Minimal blocking HTTP GET for tests (no extra client dependency).
pub mod http {
    pub fn blocking_get(url: &str) -> Option<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            let r = ::reqwest::get(url).await.ok()?;
            r.text().await.ok()
        })
    }
}

impl Setup {
    /// Source with notifications, plain destination, a broker process, and
    /// `redmirror run` on them.
    pub fn run() -> Setup {
        Self::run_with(|_| {})
    }

    /// Same, with changes to the mirror's environment.
    pub fn run_with(f: impl FnOnce(&mut BTreeMap<String, String>)) -> Setup {
        let source = RedisServer::start();
        let url = source.url();
        Self::run_on(source, &url, f).0
    }

    /// `redmirror run` on this source, reached at `source_url` (through a
    /// proxy, as another user), a plain destination and the shared broker,
    /// once ready; with the mirror's environment, for other commands on the
    /// same set-up.
    pub fn run_on(
        source: RedisServer,
        source_url: &str,
        f: impl FnOnce(&mut BTreeMap<String, String>),
    ) -> (Setup, BTreeMap<String, String>) {
        let dest = RedisServer::start_with(RedisOptions::default());
        let broker = Broker::shared();
        let mut env = mirror_env(source_url, &dest.url(), &broker.bootstrap());
        f(&mut env);
        let mirror = Mirror::start(&["run"], &env);
        let s = Setup {
            source,
            dest,
            broker,
            mirror,
        };
        s.wait_ready();
        (s, env)
    }

    /// Waits until a probe flow written on the source reaches the destination
    /// (capture subscribed, apply joined its group), then removes the probe.
    pub fn wait_ready(&self) {
        let mut src = self.source.conn();
        let mut dst = self.dest.conn();
        let probe = unique("probe");
        let key = format!("client:{probe}");
        hset(&mut src, key.as_bytes(), &[(b"probe", b"1")]);
        let mut n = 0;
        wait_for(
            "the mirror to copy a probe flow (capture and apply running)",
            CONVERGE,
            || {
                n += 1;
                if n % 50 == 0 {
                    // Notifications before the subscription are lost by design: touch it again.
                    hset(&mut src, key.as_bytes(), &[(b"probe", n.to_string().as_bytes())]);
                }
                exists(&mut dst, key.as_bytes()).then_some(())
            },
        );
        let _: i64 = redis::cmd("DEL").arg(&key).query(&mut src).expect("DEL");
        wait_for("the probe's deletion to be mirrored", CONVERGE, || {
            (!exists(&mut dst, key.as_bytes())).then_some(())
        });
    }

    /// Waits until destination `key` equals `want` (None: absent).
    #[track_caller]
    pub fn wait_dest(&self, key: &[u8], want: Option<&Hash>) {
        let mut dst = self.dest.conn();
        let what = format!(
            "destination {} to be {:?}",
            String::from_utf8_lossy(key),
            want.map(|w| w.len())
        );
        wait_for(&what, CONVERGE, || {
            let got = hgetall(&mut dst, key);
            match want {
                None => got.is_empty().then_some(()),
                Some(w) => (&got == w).then_some(()),
            }
        });
    }
}

/// `want` plus `isSyncCopy=true`.
pub fn copy_of(want: &Hash) -> Hash {
    let mut h = want.clone();
    h.insert(b"isSyncCopy".to_vec(), b"true".to_vec());
    h
}

/// Kafka helpers for tests that inject or read messages by hand.
pub mod kafka {
    use std::time::Duration;

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    /// A message read back: key, payload, headers.
    #[derive(Debug, Clone)]
    pub struct Read {
        pub partition: i32,
        pub key: Vec<u8>,
        pub payload: Vec<u8>,
        pub headers: Vec<(String, Vec<u8>)>,
    }

    impl Read {
        pub fn header(&self, name: &str) -> Option<String> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        }
    }

    /// Produces messages (key, payload) and waits until the broker has
    /// acknowledged every one (a refused record fails the test).
    pub fn produce(bootstrap: &str, topic: &str, messages: &[(Vec<u8>, Vec<u8>)]) {
        for (k, v) in messages {
            try_produce(bootstrap, topic, k, v).unwrap_or_else(|e| panic!("producing to {topic}: {e}"));
        }
    }

    /// Produces one record (no key when `key` is empty) and returns the
    /// broker's answer.
    pub fn try_produce(bootstrap: &str, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), String> {
        send(bootstrap, topic, key, payload, None)
    }

    /// Produces one record with an explicit CreateTime (milliseconds).
    pub fn produce_at(bootstrap: &str, topic: &str, key: &[u8], payload: &[u8], timestamp_ms: i64) {
        send(bootstrap, topic, key, payload, Some(timestamp_ms))
            .unwrap_or_else(|e| panic!("producing to {topic} at {timestamp_ms}: {e}"));
    }

    fn send(bootstrap: &str, topic: &str, key: &[u8], payload: &[u8], timestamp_ms: Option<i64>) -> Result<(), String> {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let p: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("message.timeout.ms", "10000")
            .create()
            .expect("producer");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(payload);
            if !key.is_empty() {
                r = r.key(key);
            }
            if let Some(t) = timestamp_ms {
                r = r.timestamp(t);
            }
            p.send(r, Duration::from_secs(10))
                .await
                .map(|_| ())
                .map_err(|(e, _)| e.to_string())
        })
    }

    /// Sets one config of `topic` (AdminClient `IncrementalAlterConfigs`).
    pub fn alter_topic(bootstrap: &str, topic: &str, name: &str, value: &str) {
        use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .expect("admin client");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let res = rt
            .block_on(admin.alter_configs(
                &[AlterConfig::new(ResourceSpecifier::Topic(topic)).set(name, value)],
                &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
            ))
            .expect("alter_configs");
        for r in res {
            r.unwrap_or_else(|(t, e)| panic!("setting {name}={value} on {t:?}: {e}"));
        }
    }

    /// Produces tombstones: these keys with no payload at all (not an
    /// empty one).
    pub fn produce_tombstones(bootstrap: &str, topic: &str, keys: &[&[u8]]) {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .expect("producer");
        for k in keys {
            let r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(*k);
            p.send(r).map_err(|(e, _)| e).expect("send");
        }
        p.flush(Duration::from_secs(30)).expect("flush");
    }

    /// A consumer in `group` that commits nothing, and the partitions of `topic`.
    fn client_and_partitions(bootstrap: &str, group: &str, topic: &str, eof: bool) -> (BaseConsumer, Vec<i32>) {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", if eof { "true" } else { "false" })
            .create()
            .expect("consumer");
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let parts = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
        (c, parts)
    }

    /// How many members the broker counts in `group`, and the group's
    /// state (`Empty`, `Stable`, `PreparingRebalance`, ...).
    pub fn group_members(bootstrap: &str, group: &str) -> (usize, String) {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .expect("consumer");
        let list = c
            .fetch_group_list(Some(group), Duration::from_secs(10))
            .expect("group list");
        list.groups()
            .iter()
            .find(|g| g.name() == group)
            .map_or((0, "Dead".to_string()), |g| (g.members().len(), g.state().to_string()))
    }

    /// The broker's own end offsets (high watermarks) of every partition of
    /// `topic`, and `group`'s committed offsets (absent: none committed),
    /// read by an independent client.
    pub fn end_and_committed(
        bootstrap: &str,
        group: &str,
        topic: &str,
    ) -> (
        std::collections::BTreeMap<i32, i64>,
        std::collections::BTreeMap<i32, i64>,
    ) {
        let (c, parts) = client_and_partitions(bootstrap, group, topic, false);
        let mut ends = std::collections::BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            let (_, high) = c
                .fetch_watermarks(topic, *p, Duration::from_secs(10))
                .expect("watermarks");
            ends.insert(*p, high);
            tpl.add_partition(topic, *p);
        }
        let got = c
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        let committed = got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect();
        (ends, committed)
    }

    /// Reads every message of `topic` (all partitions) up to partition EOF.
    pub fn read_all(bootstrap: &str, topic: &str) -> Vec<Read> {
        let (c, parts) = client_and_partitions(bootstrap, "e2e-reader", topic, true);
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition_offset(topic, *p, Offset::Beginning).unwrap();
        }
        c.assign(&tpl).expect("assign");
        let mut eof = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while eof.len() < parts.len() {
            assert!(std::time::Instant::now() < deadline, "reading {topic} timed out");
            match c.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    eof.insert(p);
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                Some(Ok(m)) => {
                    eof.remove(&m.partition());
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|x| (x.key.to_string(), x.value.unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(Read {
                        partition: m.partition(),
                        key: m.key().unwrap_or_default().to_vec(),
                        payload: m.payload().unwrap_or_default().to_vec(),
                        headers,
                    });
                }
            }
        }
        out
    }
}

/// Every `client:*` hash and the index of a server, for before/after comparisons.
pub fn snapshot(server: &RedisServer) -> BTreeMap<Vec<u8>, Hash> {
    let mut c = server.conn();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("client*").query(&mut c).unwrap();
    keys.into_iter()
        .map(|k| {
            let h = hgetall(&mut c, &k);
            (k, h)
        })
        .collect()
}

/// `env` with a fresh free port for `REDMIRROR_HTTP_ADDR` (several processes, one set-up).
pub fn with_http_port(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut e = env.clone();
    e.insert(
        "REDMIRROR_HTTP_ADDR".into(),
        format!("127.0.0.1:{}", redmirror_testkit::free_port()),
    );
    e
}

/// Writes `key` on the source (again every second: notifications sent
/// before capture subscribed are lost by design) until it is on the destination.
pub fn wait_flowing(src: &mut redis::Connection, dst: &mut redis::Connection, key: &[u8]) {
    let mut n = 0u32;
    wait_for("the pipeline to carry a flow", CONVERGE, || {
        n += 1;
        if n % 50 == 1 {
            hset(src, key, &[(b"n", n.to_string().as_bytes())]);
        }
        exists(dst, key).then_some(())
    });
}

/// A point in time (RFC 3339, ms) strictly after everything the source has
/// done so far and strictly before anything it does next: waits, by the
/// source's own clock, until the boundary has passed.
pub fn clock_boundary(source: &RedisServer) -> String {
    let now_us = |c: &mut redis::Connection| {
        let (s, us): (u64, u64) = redis::cmd("TIME").query(c).unwrap();
        s * 1_000_000 + us
    };
    let mut c = source.conn();
    let boundary_ms = now_us(&mut c) / 1000 + 1;
    wait_for("the source clock to pass the boundary", CONVERGE, || {
        (now_us(&mut c) > (boundary_ms + 1) * 1000).then_some(())
    });
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(boundary_ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The admin API over HTTP (bearer token).
pub mod admin {
    use std::time::{Duration, Instant};

    use serde_json::Value;

    /// How long an admin call may take to answer: never a pass or a barrier.
    pub const PROMPT: Duration = Duration::from_secs(2);

    fn call(method: reqwest::Method, url: &str, token: &str) -> Result<(u16, Value, Duration), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let started = Instant::now();
            let r = reqwest::Client::new()
                .request(method, url)
                .bearer_auth(token)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .map_err(|e| format!("{url}: no answer after {:?}: {e}", started.elapsed()))?;
            let code = r.status().as_u16();
            let body = r.json().await.unwrap_or_default();
            Ok((code, body, started.elapsed()))
        })
    }

    /// `POST {http}{path}`: status, JSON body and the time it took to answer.
    pub fn post(http: &str, path: &str, token: &str) -> Result<(u16, Value, Duration), String> {
        call(reqwest::Method::POST, &format!("{http}{path}"), token)
    }

    /// `GET {http}/v1/status`.
    pub fn status(http: &str, token: &str) -> Result<(u16, Value, Duration), String> {
        call(reqwest::Method::GET, &format!("{http}/v1/status"), token)
    }

    /// `POST {http}{path}` answered 202 promptly with a request id: the id.
    #[track_caller]
    pub fn request(http: &str, path: &str, token: &str) -> String {
        let (code, body, took) = post(http, path, token).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(code, 202, "POST {path}: {body}");
        assert!(took <= PROMPT, "POST {path} took {took:?} to answer");
        eprintln!("POST {path} answered {code} in {took:?}");
        body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("POST {path}: no request id in {body}"))
            .to_string()
    }

    /// The request `id` as `GET /v1/status` shows it (`requests[]`).
    pub fn find(http: &str, token: &str, id: &str) -> Option<Value> {
        let (_, body, _) = status(http, token).ok()?;
        body["requests"].as_array()?.iter().find(|r| r["id"] == id).cloned()
    }

    /// Waits until request `id` has finished (`done` or `failed`); returns it.
    #[track_caller]
    pub fn finished(http: &str, token: &str, id: &str) -> Value {
        super::wait_for(&format!("admin request {id} to finish"), super::CONVERGE, || {
            find(http, token, id).filter(|r| r["state"] == "done" || r["state"] == "failed")
        })
    }

    /// `POST /v1/reconcile` and the finished request.
    #[track_caller]
    pub fn reconcile(http: &str, token: &str) -> Value {
        let id = request(http, "/v1/reconcile", token);
        finished(http, token, &id)
    }
}

/// Runs `redmirror {args}` to its end: exit code and stdout + stderr.
pub fn cli(args: &[&str], env: &BTreeMap<String, String>) -> (i32, String) {
    let out = command().args(args).envs(env).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Sync copies and index entries the destination should hold for the source.
pub fn expected(source: &RedisServer) -> BTreeMap<Vec<u8>, Hash> {
    snapshot(source)
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"client:"))
        .map(|(k, v)| (k, copy_of(&v)))
        .collect()
}

/// The sync copies on the destination.
pub fn sync_copies(dest: &RedisServer) -> BTreeMap<Vec<u8>, Hash> {
    snapshot(dest)
        .into_iter()
        .filter(|(k, v)| k.starts_with(b"client:") && v.get(&b"isSyncCopy"[..]).map(Vec::as_slice) == Some(b"true"))
        .collect()
}
