//! Commands that do one thing and exit: `reconcile --once`, `resync`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use redmirror_config::Config;
use redmirror_kafka::Publisher;
use redmirror_reconcile::{Lease, Reconciler};

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Run a single pass and exit.
    #[arg(long)]
    pub once: bool,
    /// Report drift without publishing repairs (with --once).
    #[arg(long, requires = "once")]
    pub dry_run: bool,
    /// Print the report as JSON (with --once).
    #[arg(long, requires = "once")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResyncArgs {
    /// Flow ids (`base64:...` for ids that are not UTF-8).
    #[arg(required = true, value_name = "FLOW_ID")]
    pub flow_ids: Vec<String>,
}

pub async fn reconcile_once(config: Config, args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let (kafka, _broker) = crate::app::kafka(&config).await?;
    let source = redmirror_redis::connect(config.source.as_ref().context("source")?, "source").await?;
    let dest = redmirror_redis::connect(config.dest.as_ref().context("destination")?, "destination").await?;
    if let Err(e) = crate::app::refuse_same_server(&source, &dest).await {
        eprintln!("redmirror: {e:#}");
        return Ok(ExitCode::from(2));
    }
    let publisher = Publisher::new(&kafka, &config.topic)?;
    let reconciler = Reconciler::new(
        source,
        dest.clone(),
        crate::app::bulk_sides(&config)?,
        publisher.clone(),
        kafka,
        config.group_id.clone(),
        config.keys.clone(),
        config.rules.clone(),
    );
    // A dry run changes nothing, so it needs no lease; a repairing pass does.
    let lease =
        (!args.dry_run).then(|| Lease::new(dest, "reconcile", config.keys.lease_key("reconcile"), config.lease_ttl));
    if let Some(l) = &lease {
        let deadline = tokio::time::Instant::now() + config.lease_ttl * 3;
        loop {
            if l.try_acquire().await? {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "another reconciler holds the lease ({}); it runs the passes",
                    l.current_holder().await.unwrap_or_default()
                );
            }
            tokio::time::sleep(config.lease_ttl / 3).await;
        }
    }
    let result = reconciler
        .run_pass(&crate::app::pass_options(&config, args.dry_run))
        .await;
    if let Some(l) = &lease {
        l.release().await;
    }
    let report = result?;
    publisher.flush(config.shutdown_timeout)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn resync(config: Config, args: ResyncArgs) -> anyhow::Result<ExitCode> {
    let ids = args
        .flow_ids
        .iter()
        .map(|a| redmirror_core::text::parse_flow_id(a).with_context(|| format!("bad flow id {a:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (kafka, _broker) = crate::app::kafka(&config).await?;
    let source = redmirror_redis::connect(config.source.as_ref().context("source")?, "source").await?;
    let publisher = Publisher::new(&kafka, &config.topic)?;
    let n = crate::app::resync(&config, &source, &publisher, &ids).await?;
    publisher.flush(config.shutdown_timeout)?;
    println!("published {n} snapshot event(s)");
    Ok(ExitCode::SUCCESS)
}
