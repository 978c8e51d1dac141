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
use redmirror_console::demo::local::{demo_dir, LocalRedis};
use redmirror_console::demo::script::{hgetall, hset, redis_installed, rows, steps};
use redmirror_console::demo::{self as console, Counts, DemoScreen};

/// `redmirror demo`'s flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop by itself after this long (for example 20s); default: until Ctrl-C.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

/// Runs the demo until Ctrl-C or `--for`.
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
    let mut running = crate::app::start(crate::app::Roles::All(config.both_sides()?), config.clone()).await?;
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
    let interrupted = redmirror_telemetry::wait::signal();
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
