//! The history commands as the command line runs them: `replay`,
//! `resume`, `dlq list`, `dlq redrive`, `inspect`. Their flags, and what
//! each prints for people.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use redmirror_config::{Brokers, Config, DestSide, RedisEndpoint};
use redmirror_state::hold;
use redmirror_write::ApplyEngine;

use crate::replay::{self, ReplayOptions};
use crate::{reader, rewind, Error, Start, TopicReader};

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
                Error::Usage("say where to start: --from-beginning, --from-timestamp or --from-offsets".into())
            })?
        })
    }
}

/// `redmirror replay`'s flags.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Where to start reading.
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
    /// Has no effect: a rewind always holds live apply (see `redmirror resume`).
    #[arg(long, hide = true)]
    pub pause_apply: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Most events written per second; 0 = no limit (default: REDMIRROR_APPLY_MAX_RATE).
    #[arg(long, value_name = "N")]
    pub max_rate: Option<u64>,
}

/// `redmirror dlq`'s subcommands.
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

/// `redmirror inspect`'s flags.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Where to start reading.
    #[command(flatten)]
    pub from: From,
    /// Only this flow's events (`base64:...` for binary ids).
    #[arg(long)]
    pub flow: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<u64>,
}

/// The broker the mirror uses (the embedded one keeps no history to read).
async fn kafka(config: &Config, brokers: &Brokers) -> anyhow::Result<redmirror_kafka::Kafka> {
    if *brokers == Brokers::Embedded {
        return Err(Error::Usage(
            "the embedded broker keeps no history across processes: point REDMIRROR_KAFKA_BROKERS at the broker \
             the mirror uses"
                .into(),
        )
        .into());
    }
    let (kafka, _) = redmirror_kafka::topics::connect(config, brokers)
        .await
        .context("preparing the Kafka topics")?;
    Ok(kafka)
}

/// A `--flow` argument (`base64:...` for a binary id).
fn flow_arg(arg: Option<&str>) -> Result<Option<bytes::Bytes>, Error> {
    arg.map(|f| {
        redmirror_core::text::parse_flow_id(f)
            .map_err(|e| Error::Usage(format!("--flow {f:?}: not valid base64 ({e})")))
    })
    .transpose()
}

/// `redmirror replay`: re-applies history, or rewinds with `--force --until`.
pub async fn replay(ends: DestSide, config: Config, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let start = args.from.start(None)?;
    let until_us = args
        .until
        .as_deref()
        .map(reader::parse_time_ms)
        .transpose()?
        .map(|ms| ms * 1000);
    let kafka = kafka(&config, &ends.brokers).await?;
    let dest = redmirror_redis::connect(&ends.dest, "destination").await?;
    let rewinding = args.force && !args.dry_run;
    if !args.force && !args.dry_run {
        if let Some(why) = rewind::refuse_if_held(&dest, &config.keys).await? {
            return Err(Error::Usage(why).into());
        }
    }
    let hold_now = if rewinding {
        // Held first: live apply stops writing (and says so), reconcile
        // repairs nothing, capture goes on publishing.
        let at_us = until_us.unwrap_or_else(redmirror_core::now_us);
        eprintln!(
            "replay: holding the mirror at {}: live apply writes nothing and reconcile repairs nothing until \
             `redmirror resume`",
            hold::rfc3339(at_us)
        );
        Some(rewind::begin(&dest, &config.keys, at_us, rewind::APPLY_HOLD_TIMEOUT).await?)
    } else {
        None
    };
    let max_rate = args.max_rate.unwrap_or(config.apply_max_rate);
    let engine = ApplyEngine::new(dest.clone(), config.keys.clone(), config.rules.clone())
        .with_throttle(redmirror_write::Throttle::new(max_rate));
    let opts = ReplayOptions {
        topic: config.topic.clone(),
        start,
        until_us,
        dry_run: args.dry_run,
        force: args.force,
        batch: config.apply_batch,
        progress: !args.json,
    };
    let result = replay::replay(&kafka, &engine, &config.keys, &config.rules, &opts).await;
    // Without --until the rewind rebuilt every flow to the end of its
    // history: nothing to hold, apply goes on from where it was.
    if let (Some(_), None, Ok(_)) = (hold_now, until_us, &result) {
        rewind::end(&dest, &config.keys).await?;
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
        if report.skipped_rules > 0 {
            println!(
                "  {} event(s) made under other field rules than the current ones {}skipped: the next \
                 reconcile pass (or `redmirror reconcile --once`) brings those flows back under the current rules",
                report.skipped_rules,
                if args.dry_run { "would be " } else { "were " }
            );
        }
        if report.rewound_away > 0 {
            println!("  removed (did not exist at --until): {}", report.rewound_away);
        }
        if report.superseded > 0 {
            println!(
                "  superseded (a later state at or before --until): {}",
                report.superseded
            );
        }
        if report.read_from_beginning {
            println!("  read from the beginning of the topic: a rewind rebuilds each flow from its whole history");
        }
        if report.approximate > 0 {
            println!(
                "  may be approximate: {} flow(s) have no record at or before --until and the topic keeps its full \
                 history only since {} (min.compaction.lag.ms); they were taken as created after --until: {}",
                report.approximate,
                report.exact_since.as_deref().unwrap_or("?"),
                report.approximate_flows.join(", ")
            );
        }
        if args.dry_run {
            println!("{} flow(s) would change", report.changes.len());
            for c in &report.changes {
                println!("  {:<40} {:<7} {}", c.flow_id, c.action, c.fields.join(", "));
            }
        }
    }
    if let (Some(h), Some(_)) = (hold_now, until_us) {
        eprintln!(
            "replay: the mirror stays held at {}; `redmirror resume` (or POST /v1/resume) ends the hold, then \
             apply catches up and a reconcile pass brings the destination to the source's current state",
            hold::rfc3339(h.at_us)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `redmirror resume`: ends the hold a rewind left.
pub async fn resume(dest: RedisEndpoint, config: Config) -> anyhow::Result<ExitCode> {
    let dest = redmirror_redis::connect(&dest, "destination").await?;
    let r = redmirror_state::hold::resume(&dest, &config.keys.hold_key())
        .await
        .context("ending the hold on the destination")?;
    if r.resumed {
        println!(
            "resumed: the hold at {} (since {}) ended; live apply catches up from its committed offsets and the \
             reconciler runs a pass to bring the destination to the source's current state",
            r.held_at.as_deref().unwrap_or("?"),
            r.held_since.as_deref().unwrap_or("?")
        );
    } else {
        println!("not held: nothing to resume");
    }
    Ok(ExitCode::SUCCESS)
}

/// `redmirror dlq list` and `redmirror dlq redrive`.
pub async fn dlq(brokers: Brokers, config: Config, cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DlqCommand::List { json } => {
            let kafka = kafka(&config, &brokers).await?;
            let entries = crate::dlq::list(&kafka, &config.dlq_topic()).await?;
            if json {
                for e in &entries {
                    println!("{}", serde_json::to_string(e)?);
                }
            } else {
                println!("{:<21} {:<16} {:<24} {:<28} reason", "time", "code", "flow", "origin");
                for e in entries.iter().map(|e| &e.letter) {
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
            let flow = flow_arg(flow.as_deref())?;
            if flow.is_none() && !all {
                return Err(Error::Usage("say which dead letters to re-drive: --flow ID or --all".into()).into());
            }
            let kafka = kafka(&config, &brokers).await?;
            let n = crate::dlq::redrive(&kafka, &config.dlq_topic(), &config.topic, flow.as_deref()).await?;
            println!("re-drove {n} dead letter(s) to {}", config.topic);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `redmirror inspect`: events as JSON lines.
pub async fn inspect(brokers: Brokers, config: Config, args: InspectArgs) -> anyhow::Result<ExitCode> {
    let start = args.from.start(Some(Start::Beginning))?;
    let flow = flow_arg(args.flow.as_deref())?;
    let kafka = kafka(&config, &brokers).await?;
    let mut reader = TopicReader::open(&kafka, &config.topic, &start).await?;
    let mut shown = 0u64;
    while let Some(m) = reader.next().await? {
        if let Some(f) = &flow {
            if rdkafka::message::Message::key(&m) != Some(f.as_ref()) {
                continue;
            }
        }
        println!("{}", crate::inspect::to_json(&m));
        shown += 1;
        if args.limit.is_some_and(|l| shown >= l) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
