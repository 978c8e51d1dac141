//! `redmirror`: the command line. Glue only: parse flags, load and validate
//! the configuration, start the roles from the library crates, map errors to
//! exit codes (0 success, 1 runtime failure, 2 bad usage or configuration).

mod admin;
mod alloc;
mod app;
mod demo;
mod history;
mod oneshot;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use redmirror_config::settings::{Setting, DEST_URL, KAFKA_BROKERS, SOURCE_URL};
use redmirror_config::{ConfigError, Layers};

/// Keeps a staging Redis in step with a production Redis through Kafka.
#[derive(Debug, Parser)]
#[command(name = "redmirror", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// TOML configuration file (overridden by REDMIRROR_* variables, then by flags).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Source Redis URL (REDMIRROR_SOURCE_URL).
    #[arg(long, global = true)]
    source_url: Option<String>,
    /// Destination Redis URL (REDMIRROR_DEST_URL).
    #[arg(long, global = true)]
    dest_url: Option<String>,
    /// Kafka bootstrap servers or `embedded` (REDMIRROR_KAFKA_BROKERS).
    #[arg(long, global = true)]
    kafka_brokers: Option<String>,
    /// Change topic (REDMIRROR_TOPIC).
    #[arg(long, global = true)]
    topic: Option<String>,
    /// Apply consumer group (REDMIRROR_GROUP_ID).
    #[arg(long, global = true)]
    group_id: Option<String>,
    /// HTTP listener (REDMIRROR_HTTP_ADDR).
    #[arg(long, global = true)]
    http_addr: Option<String>,
    /// Log filter (REDMIRROR_LOG).
    #[arg(long, global = true)]
    log: Option<String>,
    /// Set notify-keyspace-events on the source if classes are missing.
    #[arg(long, global = true)]
    configure_notifications: bool,
    /// Any setting by its TOML key: --set reconcile_interval=30s (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Capture, apply and the reconciler in one process (the simple deployment).
    Run,
    /// Follow the source and publish change events.
    Capture,
    /// Consume change events and write the destination.
    Apply,
    /// Compare both sides and repair drift: on a schedule, or once with --once.
    Reconcile(oneshot::ReconcileArgs),
    /// Publish fresh snapshot events for these flows now (`base64:...` for binary ids).
    Resync(oneshot::ResyncArgs),
    /// Re-apply history from Kafka (or rewind with --force --until, which holds the mirror there).
    Replay(history::ReplayArgs),
    /// End a rewind's hold: apply catches up and a reconcile pass brings the destination up to date.
    Resume,
    /// Dead letters: list or re-drive.
    #[command(subcommand)]
    Dlq(history::DlqCommand),
    /// Print events from the change topic as JSON lines.
    Inspect(history::InspectArgs),
    /// Pre-flight checks: connectivity, notifications, distinct servers, topics.
    Check,
    /// Show the whole thing working on this machine (local Redis servers, embedded broker).
    Demo(demo::DemoArgs),
    /// The on-call's one-screen answer: exit 0 when healthy, 1 naming what needs attention.
    Status(redmirror_console::StatusArgs),
    /// `status` as a live view refreshed every second: rates, lag, latency percentiles.
    Top(redmirror_console::TopArgs),
}

impl Command {
    /// Settings this command cannot do without.
    fn needs(&self) -> &'static [&'static Setting] {
        match self {
            Command::Run => &[&SOURCE_URL, &DEST_URL, &KAFKA_BROKERS],
            Command::Capture => &[&SOURCE_URL, &KAFKA_BROKERS],
            Command::Apply => &[&DEST_URL, &KAFKA_BROKERS],
            Command::Reconcile(_) => &[&SOURCE_URL, &DEST_URL, &KAFKA_BROKERS],
            Command::Resync(_) => &[&SOURCE_URL, &KAFKA_BROKERS],
            Command::Replay(_) => &[&DEST_URL, &KAFKA_BROKERS],
            Command::Resume => &[&DEST_URL],
            Command::Dlq(_) | Command::Inspect(_) => &[&KAFKA_BROKERS],
            Command::Check => &[&SOURCE_URL, &DEST_URL, &KAFKA_BROKERS],
            Command::Demo(_) => &[],
            Command::Status(a) => a.needs(),
            Command::Top(a) => a.needs(),
        }
    }
}

fn layers(g: &Global) -> Result<Layers, ConfigError> {
    let mut l = Layers::load(g.config.as_deref(), std::env::vars())?;
    let flags = [
        ("source_url", &g.source_url),
        ("dest_url", &g.dest_url),
        ("kafka_brokers", &g.kafka_brokers),
        ("topic", &g.topic),
        ("group_id", &g.group_id),
        ("http_addr", &g.http_addr),
        ("log", &g.log),
    ];
    for (k, v) in flags {
        if let Some(v) = v {
            l.set_flag(k, v.clone())?;
        }
    }
    if g.configure_notifications {
        l.set_flag("configure_notifications", "true")?;
    }
    for kv in &g.set {
        let (k, v) = kv.split_once('=').ok_or_else(|| ConfigError::Invalid {
            var: "--set".into(),
            value: kv.clone(),
            constraint: "expected KEY=VALUE".into(),
        })?;
        l.set_flag(k.trim(), v)?;
    }
    Ok(l)
}

fn main() -> ExitCode {
    alloc::limit_arenas();
    let cli = Cli::parse();
    let config = match layers(&cli.global).and_then(|l| match &cli.command {
        Command::Demo(_) => Ok(None),
        c => l.validate(c.needs()).map(Some),
    }) {
        Ok(c) => {
            for w in c.iter().flat_map(redmirror_config::Config::warnings) {
                eprintln!("redmirror: warning: {w}");
            }
            c
        }
        Err(e) => {
            eprintln!("redmirror: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("redmirror: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match (cli.command, config) {
            (Command::Demo(args), _) => demo::run(args).await,
            (Command::Check, Some(c)) => redmirror_console::check::run(&c).await,
            (Command::Status(args), Some(c)) => Ok(match redmirror_console::status(&c, &args).await? {
                true => ExitCode::SUCCESS,
                false => ExitCode::from(1),
            }),
            (Command::Top(args), Some(c)) => {
                redmirror_console::top(&c, &args).await?;
                Ok(ExitCode::SUCCESS)
            }
            (Command::Reconcile(args), Some(c)) if args.once => {
                redmirror_telemetry::logging::init(&c.log, c.log_format == redmirror_config::LogFormat::Json);
                oneshot::reconcile_once(c, args).await
            }
            (Command::Replay(args), Some(c)) => {
                redmirror_telemetry::logging::init(&c.log, c.log_format == redmirror_config::LogFormat::Json);
                history::replay(c, args).await
            }
            (Command::Resume, Some(c)) => {
                redmirror_telemetry::logging::init(&c.log, c.log_format == redmirror_config::LogFormat::Json);
                history::resume(c).await
            }
            (Command::Dlq(cmd), Some(c)) => {
                redmirror_telemetry::logging::init(&c.log, c.log_format == redmirror_config::LogFormat::Json);
                history::dlq(c, cmd).await
            }
            (Command::Inspect(args), Some(c)) => {
                redmirror_telemetry::logging::init(&c.log, c.log_format == redmirror_config::LogFormat::Json);
                history::inspect(c, args).await
            }
            (Command::Resync(args), Some(c)) => {
                redmirror_telemetry::logging::init(&c.log, c.log_format == redmirror_config::LogFormat::Json);
                oneshot::resync(c, args).await
            }
            (cmd, Some(c)) => {
                redmirror_telemetry::logging::init(&c.log, c.log_format == redmirror_config::LogFormat::Json);
                let roles = match cmd {
                    Command::Run => app::Roles::all(),
                    Command::Capture => app::Roles::capture(),
                    Command::Apply => app::Roles::apply(),
                    Command::Reconcile(_) => app::Roles::reconcile(),
                    _ => unreachable!("handled above"),
                };
                app::run(c, roles).await
            }
            (_, None) => unreachable!("validated above"),
        }
    });
    match result {
        Ok(code) => code,
        Err(e)
            if e.downcast_ref::<app::Refusal>().is_some()
                || e.downcast_ref::<redmirror_console::Error>()
                    .is_some_and(redmirror_console::Error::is_usage)
                || e.downcast_ref::<redmirror_history::Error>()
                    .is_some_and(|h| h.exit_code() == 2) =>
        {
            eprintln!("redmirror: {}", redmirror_telemetry::errors::chain(&e));
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("redmirror: {}", redmirror_telemetry::errors::chain(&e));
            ExitCode::from(1)
        }
    }
}
