//! Commands that do one thing and exit: `reconcile --once`, `resync`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use redmirror_config::{BothSides, Config, SourceSide};
use redmirror_core::LeaseName;
use redmirror_kafka::Publisher;
use redmirror_reconcile::{Reconciler, Report};
use redmirror_state::lease::Lease;
use tokio_util::sync::CancellationToken;

/// `redmirror reconcile`'s flags.
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

/// `redmirror resync`'s flags.
#[derive(Debug, Args)]
pub struct ResyncArgs {
    /// Flow ids (`base64:...` for ids that are not UTF-8).
    #[arg(required = true, value_name = "FLOW_ID")]
    pub flow_ids: Vec<String>,
}

/// `redmirror reconcile --once`: one pass (or a dry run), its report printed.
pub async fn reconcile_once(both: BothSides, mut config: Config, args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let (kafka, _broker) = redmirror_startup::kafka(&config, &both.brokers).await?;
    redmirror_startup::record_limit(&mut config, &kafka, &CancellationToken::new()).await?;
    let source = redmirror_redis::connect(&both.source, "source").await?;
    let dest = redmirror_redis::connect(&both.dest, "destination").await?;
    if let Err(e) = redmirror_startup::distinct_servers(&source, &dest).await {
        eprintln!("redmirror: {}", redmirror_telemetry::errors::chain(&e));
        return Ok(ExitCode::from(2));
    }
    if !args.dry_run {
        if let Some(h) = redmirror_state::hold::read(&dest, &config.keys.hold_key()).await? {
            anyhow::bail!("{}", redmirror_reconcile::service::held_message(&h));
        }
    }
    let publisher = Publisher::new(&kafka, &config.topic)?;
    let epoch = redmirror_startup::source_epoch(&config, Some(&dest), &CancellationToken::new()).await?;
    let reconciler = Reconciler::new(
        source,
        dest.clone(),
        redmirror_reconcile::Sides::routed(&both)?,
        redmirror_startup::source_reader(&both.source, &config, &epoch, false)?,
        publisher.clone(),
        kafka,
        config.group_id.clone(),
        config.keys.clone(),
        config.rules.clone(),
    );
    // A dry run changes nothing, so it needs no lease; a repairing pass does.
    // When another process holds it, that process runs the pass for us.
    let lease = (!args.dry_run).then(|| Lease::new(dest.clone(), LeaseName::Reconcile, &config.keys, config.lease_ttl));
    if let Some(l) = &lease {
        if !l.try_acquire().await? {
            let asked = |holder: &str, n: u64| {
                eprintln!("redmirror: another reconciler holds the lease ({holder}); asked it for a pass (request {n})")
            };
            if let Some(report) = redmirror_reconcile::service::request_pass(&dest, &config.keys, l, asked).await? {
                print_report(&report, args.json)?;
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    // Progress on a terminal: flows scanned on both sides against their
    // key counts (an estimate: other keys count too).
    let mut opts = redmirror_reconcile::PassOptions::of(&config, args.dry_run);
    let total = {
        use fred::interfaces::ServerInterface;
        let s: u64 = reconciler.source.dbsize().await.unwrap_or(0);
        let d: u64 = dest.dbsize().await.unwrap_or(0);
        s + d
    };
    let mut progress = redmirror_telemetry::progress::Progress::new("reconcile", "flows", total, !args.json);
    let scanned = Arc::new(AtomicU64::new(0));
    opts.progress = Some(scanned.clone());
    // The lease is renewed while the pass runs; a pass that cannot renew it
    // within its TTL stops (another reconciler may hold it by then).
    let (stop_keep, lost) = (CancellationToken::new(), CancellationToken::new());
    let keeper = lease.clone().map(|l| {
        let (s, x) = (stop_keep.clone(), lost.clone());
        tokio::spawn(async move { l.keep(s, x).await })
    });
    let pass = reconciler.run_pass(&opts);
    tokio::pin!(pass);
    let result = loop {
        tokio::select! {
            r = &mut pass => break Some(r),
            _ = lost.cancelled() => break None,
            _ = tokio::time::sleep(Duration::from_millis(250)) => progress.tick(scanned.load(Relaxed), false),
        }
    };
    progress.tick(scanned.load(Relaxed), true);
    stop_keep.cancel();
    if let Some(k) = keeper {
        let _ = k.await;
    }
    let Some(result) = result else {
        anyhow::bail!(
            "the reconcile lease was lost during the pass (not renewed within REDMIRROR_LEASE_TTL, or taken by \
             another instance): the pass stopped; run it again"
        );
    };
    if let Some(l) = &lease {
        l.release().await;
    }
    let mut report = result?;
    publisher.flush(config.shutdown_timeout)?;
    // A dry run changes nothing, the stored report included.
    if !args.dry_run {
        redmirror_reconcile::service::keep_report(&dest, &config.keys.report_key(), &mut report).await;
    }
    print_report(&report, args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// `redmirror resync`: fresh snapshot events for these flows.
pub async fn resync(side: SourceSide, mut config: Config, args: ResyncArgs) -> anyhow::Result<ExitCode> {
    let ids = args
        .flow_ids
        .iter()
        .map(|a| redmirror_core::text::parse_flow_id(a).with_context(|| format!("bad flow id {a:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (kafka, _broker) = redmirror_startup::kafka(&config, &side.brokers).await?;
    redmirror_startup::record_limit(&mut config, &kafka, &CancellationToken::new()).await?;
    let dest = match &side.dest {
        Some(d) => Some(redmirror_redis::connect(d, "destination").await?),
        None => None,
    };
    let epoch = redmirror_startup::source_epoch(&config, dest.as_ref(), &CancellationToken::new()).await?;
    let reader = redmirror_startup::source_reader(&side.source, &config, &epoch, true)?;
    let publisher = Publisher::new(&kafka, &config.topic)?;
    let n = redmirror_capture::role::resync(
        &config.rules,
        &side.source,
        &reader,
        &publisher,
        &ids,
        &CancellationToken::new(),
    )
    .await?;
    publisher.flush(config.shutdown_timeout)?;
    println!("published {n} snapshot event(s)");
    Ok(ExitCode::SUCCESS)
}
