//! `replay`, `dlq list`, `dlq redrive`, `inspect`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use redmirror_apply::ApplyEngine;
use redmirror_config::Config;
use redmirror_history::replay::{self, ReplayOptions};
use redmirror_history::{reader, Start, TopicReader};

/// Where to start reading.
#[derive(Debug, Args, Clone)]
#[group(required = false, multiple = false)]
pub struct From {
    /// From the oldest event kept.
    #[arg(long)]
    pub from_beginning: bool,
    /// From the first event at or after this time (RFC 3339, UTC: 2026-11-21T10:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    pub from_timestamp: Option<String>,
    /// From these offsets: PARTITION:OFFSET,... (other partitions are not read).
    #[arg(long, value_name = "P:O,...")]
    pub from_offsets: Option<String>,
}

impl From {
    fn start(&self, default: Option<Start>) -> anyhow::Result<Start> {
        Ok(if self.from_beginning {
            Start::Beginning
        } else if let Some(t) = &self.from_timestamp {
            Start::Timestamp(reader::parse_time_ms(t)?)
        } else if let Some(o) = &self.from_offsets {
            Start::parse_offsets(o)?
        } else {
            default.ok_or_else(|| {
                crate::app::Refusal("say where to start: --from-beginning, --from-timestamp or --from-offsets".into())
            })?
        })
    }
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub from: From,
    /// Only events whose source time is at or before this (RFC 3339, UTC).
    #[arg(long, value_name = "RFC3339")]
    pub until: Option<String>,
    /// Show what would change, per flow, without writing.
    #[arg(long)]
    pub dry_run: bool,
    /// Apply older snapshots too: rewind sync copies to their state at --until.
    #[arg(long)]
    pub force: bool,
    /// With --force: pause live apply instances while the rewind runs.
    #[arg(long)]
    pub pause_apply: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters: reason, flow id, original topic/partition/offset, time.
    List {
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-submit dead letters to the change topic (after fixing the cause).
    Redrive {
        /// Only this flow's dead letters (`base64:...` for binary ids).
        #[arg(long, conflicts_with = "all")]
        flow: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub from: From,
    /// Only this flow's events (`base64:...` for binary ids).
    #[arg(long)]
    pub flow: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<u64>,
}

async fn kafka(config: &Config) -> anyhow::Result<redmirror_kafka::Kafka> {
    let (kafka, broker) = crate::app::kafka(config).await?;
    if broker.is_some() {
        anyhow::bail!("the embedded broker keeps no history across processes: point REDMIRROR_KAFKA_BROKERS at the broker the mirror uses");
    }
    Ok(kafka)
}

pub async fn replay(config: Config, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let start = args.from.start(None)?;
    let until_us = args
        .until
        .as_deref()
        .map(reader::parse_time_ms)
        .transpose()?
        .map(|ms| ms * 1000);
    let kafka = kafka(&config).await?;
    let dest = redmirror_redis::connect(config.dest.as_ref().context("destination")?, "destination").await?;
    let rewinding = args.force && !args.dry_run;
    let pause_key = config.keys.pause_key();
    if rewinding {
        // Live apply instances: from the broker's group membership and from
        // their heartbeats on the destination (some brokers report no members).
        let (k, g) = (kafka.clone(), config.group_id.clone());
        let from_group = tokio::task::spawn_blocking(move || replay::active_members(&k, &g)).await?;
        let from_dest = redmirror_apply::consumer::live_members(&dest, &config.keys.apply_members_key()).await;
        let active = match (from_group, from_dest) {
            (Ok(a), Ok(b)) => Ok(a.max(b as usize)),
            (_, Ok(b)) if b > 0 => Ok(b as usize),
            (Err(e), _) => Err(e.to_string()),
            (Ok(_), Err(e)) => Err(e.to_string()),
        };
        match (active, args.pause_apply) {
            (Ok(0), _) => {}
            (_, true) => {
                use fred::interfaces::KeysInterface;
                let _: () = dest
                    .set(
                        pause_key.as_str(),
                        "rewind",
                        Some(fred::types::Expiration::PX(30_000)),
                        None,
                        false,
                    )
                    .await?;
                // Live apply checks the pause key every PAUSE_POLL; let the batch in hand finish.
                tokio::time::sleep(redmirror_apply::consumer::PAUSE_POLL * 3).await;
                eprintln!("replay: live apply paused for the rewind");
            }
            (Ok(n), false) => {
                eprintln!(
                    "redmirror: refusing to rewind: {n} apply consumer(s) are active in group {} and would \
                     fight the rewind. Stop them, or pass --pause-apply to hold their writes while it runs \
                     (see docs/operations.md, Rewind).",
                    config.group_id
                );
                return Ok(ExitCode::from(2));
            }
            (Err(e), false) => {
                eprintln!(
                    "redmirror: refusing to rewind: cannot tell whether apply consumers are active ({e}). Stop \
                     them and pass --pause-apply, which holds any live apply's writes while the rewind runs."
                );
                return Ok(ExitCode::from(2));
            }
        }
    }
    let engine = ApplyEngine::new(dest.clone(), config.keys.clone(), config.rules.clone());
    let opts = ReplayOptions {
        topic: config.topic.clone(),
        start,
        until_us,
        dry_run: args.dry_run,
        force: args.force,
        batch: config.apply_batch,
        progress: !args.json,
    };
    // Keep the pause alive while the rewind runs.
    let keeper = (rewinding && args.pause_apply).then(|| {
        let (d, k) = (dest.clone(), pause_key.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let _: Result<i64, _> = fred::interfaces::KeysInterface::pexpire(&d, k.as_str(), 30_000, None).await;
            }
        })
    });
    let result = replay::replay(&kafka, &engine, &config.keys, &config.rules, &opts).await;
    if let Some(k) = keeper {
        k.abort();
        let _: Result<i64, _> = fred::interfaces::KeysInterface::del(&dest, pause_key.as_str()).await;
    }
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "replay{}: {} events read in {:.1}s ({:.0}/s); {} after --until",
            if args.dry_run { " (dry run)" } else { "" },
            report.read,
            report.seconds,
            report.per_second,
            report.after_until
        );
        for (k, v) in &report.outcomes {
            println!("  {k:<16} {v}");
        }
        if report.rewound_away > 0 {
            println!("  removed (did not exist at --until): {}", report.rewound_away);
        }
        if args.dry_run {
            println!("{} flow(s) would change", report.changes.len());
            for c in &report.changes {
                println!("  {:<40} {:<7} {}", c.flow_id, c.action, c.fields.join(", "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn dlq(config: Config, cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    let kafka = kafka(&config).await?;
    match cmd {
        DlqCommand::List { json } => {
            let entries = redmirror_history::dlq::list(&kafka, &config.dlq_topic()).await?;
            if json {
                for e in &entries {
                    println!("{}", serde_json::to_string(e)?);
                }
            } else {
                println!("{:<21} {:<16} {:<24} {:<28} reason", "time", "code", "flow", "origin");
                for e in &entries {
                    println!(
                        "{:<21} {:<16} {:<24} {:<28} {}",
                        e.time,
                        e.reason_code,
                        e.flow_id,
                        format!("{}/{}@{}", e.topic, e.partition, e.offset),
                        e.reason
                    );
                }
                println!("{} dead letter(s)", entries.len());
            }
        }
        DlqCommand::Redrive { flow, all } => {
            let flow = flow
                .as_deref()
                .map(redmirror_core::text::parse_flow_id)
                .transpose()
                .context("bad --flow")?;
            if flow.is_none() && !all {
                return Err(
                    crate::app::Refusal("say which dead letters to re-drive: --flow ID or --all".into()).into(),
                );
            }
            let n =
                redmirror_history::dlq::redrive(&kafka, &config.dlq_topic(), &config.topic, flow.as_deref()).await?;
            println!("re-drove {n} dead letter(s) to {}", config.topic);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn inspect(config: Config, args: InspectArgs) -> anyhow::Result<ExitCode> {
    let start = args.from.start(Some(Start::Beginning))?;
    let flow = args
        .flow
        .as_deref()
        .map(redmirror_core::text::parse_flow_id)
        .transpose()
        .context("bad --flow")?;
    let kafka = kafka(&config).await?;
    let mut reader = TopicReader::open(&kafka, &config.topic, &start).await?;
    let mut shown = 0u64;
    while let Some(m) = reader.next().await? {
        if let Some(f) = &flow {
            if rdkafka::message::Message::key(&m) != Some(f.as_ref()) {
                continue;
            }
        }
        println!("{}", redmirror_history::inspect::to_json(&m));
        shown += 1;
        if args.limit.is_some_and(|l| shown >= l) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
