//! `redmirror-faults`: the fault-injection suite. Each scenario starts its
//! own source and destination Redis, a broker and `redmirror` processes (the
//! binary next to this one), runs a steady mixed write load (creates,
//! updates, field removals, deletes, expiries, renames, moves into and out
//! of filtered organisations on the source; native-flow writes on the
//! destination), injects one kind of fault at random moments (seeded RNG),
//! stops the load and gives the mirror a bounded time to converge, judged
//! by the independent checker in `redmirror_testkit::invariant`.
//!
//! Run it as `scripts/faults --short` (every scenario once), `scripts/faults
//! --soak MINUTES` (cycle until the time is up) or with `--only a,b`. Prints
//! a table and one final `faults:` line; exits non-zero on any violation or
//! scenario error; writes `target/faults/results.json` and the process logs
//! under `target/faults/logs/`.

mod load;
mod procs;
mod scenario;

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use scenario::{Opts, Outcome, Scenario};

#[derive(Debug, Parser)]
#[command(about = "redmirror fault-injection suite")]
struct Args {
    /// Every scenario once with short loads (about 18 minutes in all).
    #[arg(long, conflicts_with = "soak")]
    short: bool,
    /// Cycle through the scenarios, with longer loads, until MINUTES have passed.
    #[arg(long, value_name = "MINUTES")]
    soak: Option<f64>,
    /// Only these scenarios (comma list; see --list).
    #[arg(long, value_delimiter = ',', value_enum, hide_possible_values = true)]
    only: Vec<Scenario>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Seed of the random choices (printed; default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Load seconds per scenario (default: 40 with --short, 120 with --soak, 60 otherwise).
    #[arg(long)]
    load_secs: Option<f64>,
    /// Source changes per second.
    #[arg(long, default_value_t = 400)]
    rate: u32,
    /// Bound on convergence after the load stops, seconds.
    #[arg(long, default_value_t = 90.0)]
    converge_secs: f64,
}

fn target_dir() -> anyhow::Result<std::path::PathBuf> {
    // target/release/redmirror-faults → target/
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .and_then(|p| p.parent())
        .context("target directory")?
        .to_path_buf())
}

fn mix(seed: u64, scenario: Scenario, round: u64) -> u64 {
    // FNV-1a over the name, mixed with the run seed and the round.
    let mut h: u64 = 0xcbf29ce484222325 ^ seed.rotate_left(17) ^ round.wrapping_mul(0x9e3779b97f4a7c15);
    for b in scenario.name().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn row(o: &Outcome) -> String {
    let mut status = match &o.error {
        Some(e) => format!("ERROR: {}", e.lines().next().unwrap_or("")),
        None if o.violations > 0 => "VIOLATIONS".into(),
        None if o.converge_secs.is_none() => "NOT CONVERGED".into(),
        None => "ok".into(),
    };
    if !o.unplanned_exits.is_empty() {
        status.push_str(&format!(" ({} unplanned exits)", o.unplanned_exits.len()));
    }
    if !o.slow_stops.is_empty() {
        status.push_str(&format!(" ({} slow stops)", o.slow_stops.len()));
    }
    format!(
        "{:<16} {:>6} {:>6.0} {:>10} {:>8} {:>9} {:>10} {:>8} {:>8.1} {:>8} {:>9}  {}",
        o.name,
        o.injections,
        o.load_secs,
        o.events,
        o.native_writes,
        o.converge_secs.map_or("-".into(), |s| format!("{s:.1}")),
        o.violations,
        o.reconcile["repaired"].as_u64().map_or("-".into(), |r| r.to_string()),
        o.peak_rss_mib,
        if o.resubscriptions > 0 {
            format!("{:.1}", o.max_blind_secs)
        } else {
            "-".into()
        },
        match o.max_recover_secs {
            None => "-".into(),
            Some(s) if s.is_finite() => format!("{s:.1}"),
            Some(_) => "never".into(),
        },
        status
    )
}

const HEADER: &str =
    "scenario         inject   load     events  natives  converge violations repaired  rss MiB  blind s recover s  status\n\
     ---------------- ------ ------ ---------- -------- --------- ---------- -------- -------- -------- ---------  ------";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.list {
        for s in Scenario::ALL {
            println!("{s}");
        }
        return Ok(());
    }
    let scenarios: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| args.only.is_empty() || args.only.contains(s))
        .collect();
    procs::redmirror_bin()?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let out_dir = target_dir()?.join("faults");
    std::fs::create_dir_all(&out_dir)?;
    let load = args.load_secs.unwrap_or(if args.short {
        40.0
    } else if args.soak.is_some() {
        120.0
    } else {
        60.0
    });
    let opts = Opts {
        load: Duration::from_secs_f64(load),
        rate: args.rate,
        native_rate: 20,
        pool: 1500,
        preload: 1000,
        converge: Duration::from_secs_f64(args.converge_secs),
        gap: if args.short { (3.0, 7.0) } else { (4.0, 12.0) },
        freeze: if args.short { (5.0, 12.0) } else { (5.0, 60.0) },
        outage: if args.short { (20.0, 30.0) } else { (60.0, 150.0) },
        reconcile_interval: "10m".into(),
        out_dir: out_dir.clone(),
    };
    let broker = redmirror_testkit::BrokerKind::from_env().name();
    println!(
        "redmirror-faults: seed {seed} (rerun with --seed {seed}); broker {broker}; {} scenario(s); load {load:.0}s at {} changes/s; logs in {}",
        scenarios.len(),
        opts.rate,
        out_dir.join("logs").display()
    );

    let started = Instant::now();
    let soak_end = args.soak.map(|m| started + Duration::from_secs_f64(m * 60.0));
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut round = 0u64;
    'rounds: loop {
        for &scenario in &scenarios {
            if let Some(end) = soak_end {
                if Instant::now() >= end {
                    break 'rounds;
                }
            }
            let s = mix(seed, scenario, round);
            println!("\n== {scenario} (round {}, seed {s}) ==", round + 1);
            let o = scenario::run(scenario, s, &opts);
            println!("{HEADER}\n{}", row(&o));
            if let Some(e) = &o.error {
                println!("  error: {e}");
            }
            if o.violations > 0 {
                println!("  {}", o.report.replace('\n', "\n  "));
            }
            for n in o.unplanned_exits.iter().chain(&o.slow_stops) {
                println!("  note: {n}");
            }
            outcomes.push(o);
        }
        round += 1;
        if soak_end.is_none() {
            break;
        }
    }

    let injections: u32 = outcomes.iter().map(|o| o.injections).sum();
    let events: u64 = outcomes.iter().map(|o| o.events).sum();
    let max_converge = outcomes.iter().filter_map(|o| o.converge_secs).fold(0.0, f64::max);
    let max_recover = outcomes.iter().filter_map(|o| o.max_recover_secs).reduce(f64::max);
    let rss = outcomes.iter().map(|o| o.peak_rss_mib).fold(0.0, f64::max);
    let violations: u64 = outcomes.iter().map(|o| o.violations).sum();
    let errors = outcomes.iter().filter(|o| o.error.is_some()).count();
    let unconverged = outcomes
        .iter()
        .filter(|o| o.error.is_none() && o.converge_secs.is_none())
        .count();

    println!("\n{HEADER}");
    for o in &outcomes {
        println!("{}", row(o));
    }
    let wall = started.elapsed().as_secs_f64();
    println!("total {wall:.0}s, seed {seed}");
    let summary = serde_json::json!({
        "seed": seed,
        "broker": broker,
        "mode": if args.short { "short" } else if args.soak.is_some() { "soak" } else { "default" },
        "load_secs": load,
        "rate": opts.rate,
        "wall_secs": wall,
        "injections": injections,
        "events": events,
        "max_converge_secs": max_converge,
        "max_recover_secs": max_recover,
        "peak_rss_mib": rss,
        "violations": violations,
        "errors": errors,
        "scenarios": outcomes.iter().map(Outcome::json).collect::<Vec<_>>(),
    });
    std::fs::write(out_dir.join("results.json"), serde_json::to_string_pretty(&summary)?)?;
    let recover = match max_recover {
        Some(s) if s.is_finite() => format!(", max recover {s:.1} s"),
        Some(_) => ", max recover: never".into(),
        None => String::new(),
    };
    println!(
        "faults: broker={broker} {injections} injections, {events} events, max converge {max_converge:.1} s{recover}, peak rss {rss:.0} MiB, {violations} violations"
    );
    if violations > 0 || errors > 0 || unconverged > 0 {
        std::process::exit(1);
    }
    Ok(())
}
