//! `redmirror demo`: two local Redis servers, the embedded broker, sample
//! flows written step by step, and a view of both sides with live counts.
//!
//! On a terminal the view is redrawn in place, and only when something on
//! it changed (so an idle demo writes nothing); otherwise the demo prints an
//! append-only log of its steps and of each change on the screen. The
//! product's own log goes to a file in the demo's directory.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use redmirror_config::settings::{DEST_URL, KAFKA_BROKERS, SOURCE_URL};
use redmirror_config::Layers;
use redmirror_console::demo::{self as console, Counts, DemoScreen, FlowRow, Hash};

mod local;

use local::{demo_dir, LocalRedis};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop by itself after this long (for example 20s); default: until Ctrl-C.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

/// One scripted step: what it does (narrated) and the writes.
struct Step {
    says: &'static str,
    write: fn(&mut redis::Connection) -> redis::RedisResult<()>,
}

/// The flows the view always lists (more appear as they are written).
const SAMPLES: [&str; 7] = ["flow-1", "flow-2", "flow-3", "flow-4", "flow-5", "demo-1", "native-1"];

fn redis_installed() -> bool {
    std::process::Command::new("redis-server")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn cmd(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<()> {
    let mut command = redis::cmd(args[0]);
    for a in &args[1..] {
        command.arg(*a);
    }
    command.query::<redis::Value>(c).map(drop)
}

/// `HSET key f v ...`.
fn hset(c: &mut redis::Connection, key: &[u8], fields: &[(&[u8], &[u8])]) -> redis::RedisResult<()> {
    let mut command = redis::cmd("HSET");
    command.arg(key);
    for (f, v) in fields {
        command.arg(*f).arg(*v);
    }
    command.query::<i64>(c).map(drop)
}

/// `HGETALL key` (empty when absent or unreadable: the view shows what it can).
fn hgetall(c: &mut redis::Connection, key: &[u8]) -> Hash {
    redis::cmd("HGETALL").arg(key).query(c).unwrap_or_default()
}

fn steps() -> Vec<Step> {
    vec![
        Step {
            says: "create flow-1 and flow-2 on the source (HSET): both are mirrored, flowConfigHistory excluded",
            write: |s| {
                hset(
                    s,
                    b"client:flow-1",
                    &[
                        (b"name", b"Checkout"),
                        (b"clerkOrganizationId", b"org_acme"),
                        (b"flowConfigHistory", b"[v1,v2]"),
                    ],
                )?;
                hset(
                    s,
                    b"client:flow-2",
                    &[(b"name", b"Signup"), (b"clerkOrganizationId", b"org_acme")],
                )?;
                cmd(s, &["HSET", "clients", "flow-1", "1", "flow-2", "1"])
            },
        },
        Step {
            says: "update flow-1 on the source: the copy follows within milliseconds",
            write: |s| hset(s, b"client:flow-1", &[(b"name", b"Checkout v2"), (b"steps", b"3")]),
        },
        Step {
            says: "write native-1 on the source: staging has its own native-1, which is never overwritten",
            write: |s| hset(s, b"client:native-1", &[(b"name", b"production version")]),
        },
        Step {
            says: "create demo-1 in organisation org_hello: filtered, never copied",
            write: |s| {
                hset(
                    s,
                    b"client:demo-1",
                    &[(b"name", b"Hello demo"), (b"clerkOrganizationId", b"org_hello")],
                )
            },
        },
        Step {
            says: "rename flow-2 to flow-3 (RENAME): flow-2's copy goes, flow-3's appears",
            write: |s| cmd(s, &["RENAME", "client:flow-2", "client:flow-3"]),
        },
        Step {
            says: "create flow-4 with a 2-second expiry (EXPIRE): its copy goes when it expires",
            write: |s| {
                hset(s, b"client:flow-4", &[(b"name", b"Short-lived")])?;
                cmd(s, &["EXPIRE", "client:flow-4", "2"])
            },
        },
        Step {
            says: "create flow-5, then delete it (DEL): the copy is removed",
            write: |s| {
                hset(s, b"client:flow-5", &[(b"name", b"Mistake")])?;
                cmd(s, &["DEL", "client:flow-5"])
            },
        },
    ]
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if !redis_installed() {
        eprintln!(
            "redmirror demo: redis-server is not installed. Install the Debian/Ubuntu package: \
             sudo apt-get install -y redis-server"
        );
        return Ok(ExitCode::from(1));
    }
    let dir = demo_dir()?;
    let log = dir.join("redmirror.log");
    redmirror_telemetry::logging::init_file("info", &log)?;
    let source = LocalRedis::start(&dir, "source", Some("KEA"))?;
    let dest = LocalRedis::start(&dir, "destination", None)?;
    let env = vec![
        ("REDMIRROR_SOURCE_URL".to_string(), source.url()),
        ("REDMIRROR_DEST_URL".to_string(), dest.url()),
        ("REDMIRROR_KAFKA_BROKERS".to_string(), "embedded".to_string()),
        ("REDMIRROR_FILTERED_ORGS".to_string(), "org_hello".to_string()),
        ("REDMIRROR_HTTP_ADDR".to_string(), "127.0.0.1:0".to_string()),
        ("REDMIRROR_TOPIC_PARTITIONS".to_string(), "3".to_string()),
    ];
    let config = Layers::load(None, env)?.validate(&[&SOURCE_URL, &DEST_URL, &KAFKA_BROKERS])?;
    let mut running = crate::app::start(config.clone(), crate::app::Roles::ALL).await?;
    let metrics = redmirror_telemetry::metrics::install();

    // A native staging flow the mirror must never touch.
    let mut d = dest.conn()?;
    hset(
        &mut d,
        b"client:native-1",
        &[(b"name", b"staging-only flow"), (b"owner", b"qa-team")],
    )?;
    let native_before = hgetall(&mut d, b"client:native-1");

    let mut screen = DemoScreen {
        source: source.url(),
        dest: dest.url(),
        broker: "embedded (in-process; for demos and development only)".into(),
        metrics: format!("http://{}/metrics", running.http_addr),
        log: log.display().to_string(),
        try_it: format!(
            "redis-cli -p {} HSET client:mine name hello clerkOrganizationId org_acme",
            source.port()
        ),
        ..DemoScreen::default()
    };
    let terminal = std::io::stdout().is_terminal();
    let mut out = console::Output::new(terminal);
    let mut s = source.conn()?;
    let steps = steps();
    let stop_at = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut next_step = tokio::time::Instant::now() + Duration::from_millis(500);
    let mut step = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let interrupted = crate::app::signal();
    tokio::pin!(interrupted);
    let stopped_by = loop {
        tokio::select! {
            _ = &mut interrupted => break "Ctrl-C",
            r = running.wait(std::future::pending()) => { r?; break "a failure" }
            _ = tick.tick() => {}
        }
        if step < steps.len() && tokio::time::Instant::now() >= next_step {
            let st = &steps[step];
            (st.write)(&mut s)
                .map_err(|e| anyhow::anyhow!("the demo's step {} failed on the source: {e}", step + 1))?;
            screen.narration.push(format!("{}. {}", step + 1, st.says));
            step += 1;
            next_step = tokio::time::Instant::now() + Duration::from_millis(1500);
            if step == steps.len() {
                screen.done = true;
            }
        }
        screen.flows = rows(&mut s, &mut d, &native_before);
        screen.counts = Counts::from_metrics(&metrics.render());
        out.show(&screen)?;
        if stop_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
            break "--for";
        }
    };
    out.finish(&screen)?;
    running.stop().await?;
    drop((source, dest));
    println!(
        "demo stopped ({stopped_by}); servers removed; the log stays at {}",
        log.display()
    );
    std::io::stdout().flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The sample flows and any other flow on either side (at most 14 rows).
fn rows(s: &mut redis::Connection, d: &mut redis::Connection, native_before: &Hash) -> Vec<FlowRow> {
    let mut ids: Vec<String> = SAMPLES.iter().map(|s| s.to_string()).collect();
    for c in [&mut *s, &mut *d] {
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("client:*").query(c).unwrap_or_default();
        for k in keys {
            let id = String::from_utf8_lossy(&k["client:".len()..]).into_owned();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids.truncate(14);
    ids.into_iter()
        .map(|id| {
            let key = format!("client:{id}");
            let src = hgetall(s, key.as_bytes());
            let dst = hgetall(d, key.as_bytes());
            console::flow_row(&id, &src, &dst, id == "native-1" && &dst == native_before)
        })
        .collect()
}
