//! `redmirror`: the command line. Glue only: parse flags, load and validate
//! the configuration, start the roles from the library crates, map errors to
//! exit codes (0 success, 1 runtime failure, 2 bad usage or configuration).

mod alloc;
mod app;
mod demo;
mod oneshot;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use redmirror_config::settings::{Setting, DEST_URL, KAFKA_BROKERS, SOURCE_URL};
use redmirror_config::{ConfigError, Layers};
use redmirror_history::commands;

/// Keeps a staging Redis in step with a production Redis through Kafka.
#[derive(Debug, Parser)]
#[command(name = "redmirror", version)]
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
    Replay(commands::ReplayArgs),
    /// End a rewind's hold: apply catches up and a reconcile pass brings the destination up to date.
    Resume,
    /// Dead letters: list or re-drive.
    #[command(subcommand)]
    Dlq(commands::DlqCommand),
    /// Print events from the change topic as JSON lines.
    Inspect(commands::InspectArgs),
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

impl Command {
    /// True when the command logs through `tracing` (the services and the
    /// one-shot tools); `check`, `status`, `top` and `demo` print for
    /// people instead.
    fn logs(&self) -> bool {
        !matches!(
            self,
            Command::Demo(_) | Command::Check | Command::Status(_) | Command::Top(_)
        )
    }
}

fn main() -> ExitCode {
    alloc::limit_arenas();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("redmirror: {}", redmirror_telemetry::errors::chain(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// 2 for what the operator must change (usage, configuration, a refusal
/// at start), 1 for everything else.
fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(h) = e.downcast_ref::<redmirror_history::Error>() {
        return h.exit_code();
    }
    let usage = e.downcast_ref::<ConfigError>().is_some()
        || e.downcast_ref::<app::Refusal>().is_some()
        || e.downcast_ref::<redmirror_console::Error>()
            .is_some_and(redmirror_console::Error::is_usage);
    if usage {
        2
    } else {
        1
    }
}

/// Loads and validates the configuration, then runs the command.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = match &cli.command {
        Command::Demo(_) => None,
        c => Some(
            layers(&cli.global)
                .and_then(|l| l.validate(c.needs()))
                .map_err(|e| anyhow::Error::new(e).context("configuration error"))?,
        ),
    };
    for w in config.iter().flat_map(redmirror_config::Config::warnings) {
        eprintln!("redmirror: warning: {w}");
    }
    if let (Some(c), true) = (&config, cli.command.logs()) {
        redmirror_telemetry::logging::init(&c.log, c.log_format == redmirror_config::LogFormat::Json);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let Some(c) = config else {
            return match cli.command {
                Command::Demo(args) => demo::run(args).await,
                _ => unreachable!("only demo runs without a configuration"),
            };
        };
        match cli.command {
            Command::Demo(_) => unreachable!("demo has no configuration"),
            Command::Check => redmirror_console::check::run(&c).await,
            Command::Status(args) => Ok(match redmirror_console::status(&c, &args).await? {
                true => ExitCode::SUCCESS,
                false => ExitCode::from(1),
            }),
            Command::Top(args) => {
                redmirror_console::top(&c, &args).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Reconcile(args) if args.once => oneshot::reconcile_once(c.both_sides()?, c, args).await,
            Command::Replay(args) => commands::replay(c.dest_side()?, c, args).await,
            Command::Resume => commands::resume(c.dest_endpoint()?, c).await,
            Command::Dlq(cmd) => commands::dlq(c.brokers()?, c, cmd).await,
            Command::Inspect(args) => commands::inspect(c.brokers()?, c, args).await,
            Command::Resync(args) => oneshot::resync(c.source_side()?, c, args).await,
            Command::Run => app::run(app::Roles::All(c.both_sides()?), c).await,
            Command::Capture => app::run(app::Roles::Capture(c.source_side()?), c).await,
            Command::Apply => app::run(app::Roles::Apply(c.dest_side()?), c).await,
            Command::Reconcile(_) => app::run(app::Roles::Reconcile(c.both_sides()?), c).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `--help` opens with what the tool does for its user, not with the
    /// crate's description for developers.
    #[test]
    fn help_opens_with_what_the_tool_does() {
        let about = |c: &clap::Command| c.get_about().map(|s| s.to_string()).unwrap_or_default();
        let cli = super::Cli::command();
        assert!(
            about(&cli).starts_with("Keeps a staging Redis in step"),
            "{}",
            about(&cli)
        );
        let run = cli.find_subcommand("run").map(about).unwrap_or_default();
        assert!(run.contains("reconciler"), "{run}");
    }
}
