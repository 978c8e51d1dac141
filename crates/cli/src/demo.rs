//! `redmirror demo`: two local Redis servers, the embedded broker, sample
//! flows, and a live view of what was mirrored and what was protected.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use redmirror_config::Layers;
use redmirror_testkit::flows::{exists, hgetall, hset};
use redmirror_testkit::{RedisOptions, RedisServer};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop by itself after this long (for example 20s); default: until Ctrl-C.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

/// One scripted write to the source.
type SampleWrite = Box<dyn Fn(&mut redis::Connection)>;

fn redis_installed() -> bool {
    std::process::Command::new("redis-server")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if !redis_installed() {
        eprintln!(
            "redmirror demo: redis-server is not installed. Install the Debian/Ubuntu package: \
             sudo apt-get install -y redis-server"
        );
        return Ok(ExitCode::from(1));
    }
    redmirror_telemetry::logging::init("warn", false);
    let source = RedisServer::start_with(RedisOptions::with_notifications());
    let dest = RedisServer::start_with(RedisOptions::default());
    println!("redmirror demo");
    println!("  source      redis-server at {}", source.url());
    println!("  destination redis-server at {}", dest.url());
    println!("  broker      embedded (in-process; for demos and development only, keeps little history)");

    let env = vec![
        ("REDMIRROR_SOURCE_URL".to_string(), source.url()),
        ("REDMIRROR_DEST_URL".to_string(), dest.url()),
        ("REDMIRROR_KAFKA_BROKERS".to_string(), "embedded".to_string()),
        ("REDMIRROR_FILTERED_ORGS".to_string(), "org_hello".to_string()),
        ("REDMIRROR_HTTP_ADDR".to_string(), "127.0.0.1:0".to_string()),
        ("REDMIRROR_TOPIC_PARTITIONS".to_string(), "3".to_string()),
    ];
    let config = Layers::load(None, env)?.validate(&["source_url", "dest_url", "kafka_brokers"])?;
    let mut running = crate::app::start(config, crate::app::Roles::all()).await?;
    println!("  metrics     http://{}/metrics", running.http_addr);
    println!();

    // A native staging flow the mirror must never touch.
    let mut d = dest.conn();
    hset(
        &mut d,
        b"client:native-1",
        &[(b"name", b"staging-only flow"), (b"owner", b"qa-team")],
    );
    let native_before = hgetall(&mut d, b"client:native-1");

    let mut s = source.conn();
    let writes: Vec<(&str, SampleWrite)> = vec![
        (
            "create flow-1 and flow-2",
            Box::new(|c| {
                hset(
                    c,
                    b"client:flow-1",
                    &[
                        (b"name", b"Checkout"),
                        (b"clerkOrganizationId", b"org_acme"),
                        (b"flowConfigHistory", b"[v1,v2]"),
                    ],
                );
                hset(
                    c,
                    b"client:flow-2",
                    &[(b"name", b"Signup"), (b"clerkOrganizationId", b"org_acme")],
                );
                let _: i64 = redis::cmd("HSET")
                    .arg("clients")
                    .arg("flow-1")
                    .arg("1")
                    .arg("flow-2")
                    .arg("1")
                    .query(c)
                    .unwrap_or(0);
            }),
        ),
        (
            "create demo-1 in the filtered organisation org_hello",
            Box::new(|c| {
                hset(
                    c,
                    b"client:demo-1",
                    &[(b"name", b"Hello demo"), (b"clerkOrganizationId", b"org_hello")],
                );
            }),
        ),
        (
            "write native-1 on the source too (the staging copy is native: protected)",
            Box::new(|c| {
                hset(c, b"client:native-1", &[(b"name", b"production version")]);
            }),
        ),
        (
            "update flow-1",
            Box::new(|c| hset(c, b"client:flow-1", &[(b"name", b"Checkout v2"), (b"steps", b"3")])),
        ),
        (
            "delete flow-2",
            Box::new(|c| {
                let _: i64 = redis::cmd("DEL").arg("client:flow-2").query(c).unwrap_or(0);
            }),
        ),
    ];

    let stop_at = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut step = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1000));
    let interrupted = crate::app::signal();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => break,
            r = running.wait(std::future::pending()) => { r?; break; }
            _ = tick.tick() => {}
        }
        if let Some((what, write)) = writes.get(step) {
            println!("source: {what}");
            write(&mut s);
            step += 1;
        } else if step == writes.len() {
            println!(
                "\n(all sample writes done; write to {} yourself, Ctrl-C to stop)\n",
                source.url()
            );
            step += 1;
        }
        show(&mut d, &native_before);
        if stop_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
            break;
        }
    }
    running.stop().await?;
    println!("demo stopped");
    Ok(ExitCode::SUCCESS)
}

fn show(d: &mut redis::Connection, native_before: &redmirror_testkit::flows::Hash) {
    let text = |h: &redmirror_testkit::flows::Hash, k: &str| {
        h.get(k.as_bytes()).map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let f1 = hgetall(d, b"client:flow-1");
    let line = |name: &str, state: String| println!("    {name:<9} {state}");
    println!("  destination now:");
    line(
        "flow-1",
        if f1.is_empty() {
            "not yet mirrored".into()
        } else {
            format!(
                "mirrored: name={:?} isSyncCopy={:?} flowConfigHistory {}",
                text(&f1, "name").unwrap_or_default(),
                text(&f1, "isSyncCopy").unwrap_or_default(),
                if f1.contains_key(&b"flowConfigHistory"[..]) {
                    "COPIED (bug)"
                } else {
                    "excluded"
                }
            )
        },
    );
    line(
        "flow-2",
        if exists(d, b"client:flow-2") {
            "mirrored".into()
        } else {
            "absent (not yet created, or deleted)".into()
        },
    );
    line(
        "demo-1",
        if exists(d, b"client:demo-1") {
            "COPIED (bug)".into()
        } else {
            "never copied (filtered organisation)".into()
        },
    );
    let native = hgetall(d, b"client:native-1");
    line(
        "native-1",
        if &native == native_before {
            "native staging flow, untouched".into()
        } else {
            "CHANGED (bug)".into()
        },
    );
}
