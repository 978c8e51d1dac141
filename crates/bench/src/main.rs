//! `redmirror-bench`: measures redmirror next to native Redis replication on
//! servers it starts itself (source, replica, destination, broker), every
//! figure with its yardstick from the same run. Run it as `scripts/bench
//! [--quick]`; results go to stdout (a table and one `bench:` line) and to
//! `target/bench/` (JSON and the latency CSV for the plot).

mod kafka_lat;
mod load;
mod procs;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use load::{flow_fields, Latencies};
use procs::{Proc, Servers};

#[derive(Debug, Parser)]
#[command(about = "redmirror benchmarks, side by side with native Redis replication")]
struct Args {
    /// Smaller sizes and shorter steps (finishes within 10 minutes).
    #[arg(long)]
    quick: bool,
    /// Use the embedded broker for the latency scenario (isolates the broker's share).
    #[arg(long)]
    embedded: bool,
    /// Only these scenarios (comma list: broker,latency,native,sustained,hot,stages,capture-rules,capture-cluster,apply-cluster,reconcile,replay,group).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

struct Sizes {
    latency_secs: u64,
    native_flows: u64,
    step_secs: u64,
    rates: Vec<u64>,
    hot_secs: u64,
    stage_flows: u64,
    reconcile_flows: u64,
    plain_flows: u64,
    replay_events: u64,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                latency_secs: 10,
                native_flows: 100_000,
                step_secs: 10,
                rates: vec![10_000, 20_000, 30_000, 40_000],
                hot_secs: 5,
                stage_flows: 50_000,
                reconcile_flows: 200_000,
                plain_flows: 10_000,
                replay_events: 200_000,
            }
        } else {
            Sizes {
                latency_secs: 30,
                native_flows: 300_000,
                step_secs: 60,
                rates: vec![10_000, 20_000, 25_000, 30_000, 40_000, 50_000],
                hot_secs: 20,
                stage_flows: 200_000,
                reconcile_flows: 1_000_000,
                plain_flows: 20_000,
                replay_events: 1_000_000,
            }
        }
    }
}

/// A process's peak memory and CPU in one scenario.
#[derive(serde::Serialize)]
struct ProcUse {
    scenario: String,
    process: String,
    peak_rss_mib: f64,
    cpu_s: f64,
}

/// What a run found: printed rows as it goes, then the summary line and
/// `results.json`.
#[derive(Default)]
struct Report {
    summary: BTreeMap<&'static str, f64>,
    rss: Vec<ProcUse>,
    json: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    fn row(&mut self, scenario: &str, figure: String, yardstick: String, ratio: String) {
        println!("  {scenario:<34} {figure:<44} {yardstick:<34} {ratio}");
    }
    fn procs(&mut self, scenario: &str, procs: &[&Proc]) {
        for p in procs {
            let (rss, cpu) = (p.peak_rss_mib(), p.cpu_seconds());
            // Gaps (lost subscriptions, overflowed notification buffers or
            // pending sets) each cost a reconcile pass: worth seeing.
            let gaps = match p.name.as_str() {
                "run" | "capture" => format!(", capture gaps {}", p.metric("redmirror_capture_gaps_total")),
                _ => String::new(),
            };
            println!("    {scenario}: {} peak RSS {rss:.1} MiB, CPU {cpu:.1} s{gaps}", p.name);
            self.rss.push(ProcUse {
                scenario: scenario.into(),
                process: p.name.clone(),
                peak_rss_mib: rss,
                cpu_s: cpu,
            });
        }
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sizes = Sizes::new(args.quick);
    let want = |s: &str| args.only.is_empty() || args.only.iter().any(|o| o == s);
    let out_dir = redmirror_testkit::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let broker_name = redmirror_testkit::BrokerKind::from_env().name();
    println!(
        "redmirror bench ({}) on {} cores against {broker_name}; every server and client shares them",
        if args.quick { "quick" } else { "full" },
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!(
        "  {:<34} {:<44} {:<34} ratio",
        "scenario", "redmirror", "yardstick (same run)"
    );
    let mut r = Report::default();
    let started = Instant::now();

    if want("broker") {
        broker(&mut r)?;
    }
    if want("native") || want("sustained") {
        native(&sizes, &mut r)?;
    }
    if want("latency") {
        latency(&sizes, &mut r, &out_dir, args.embedded)?;
    }
    if want("sustained") {
        sustained(&sizes, &mut r, &out_dir)?;
    }
    if want("hot") {
        hot_keys(&sizes, &mut r)?;
    }
    if want("stages") {
        stages(&sizes, &mut r, Shape::Standalone)?;
    }
    if want("capture-rules") {
        capture_rules(&sizes, &mut r)?;
    }
    if want("capture-cluster") {
        stages(&sizes, &mut r, Shape::CaptureCluster)?;
    }
    if want("apply-cluster") {
        stages(&sizes, &mut r, Shape::ApplyCluster)?;
    }
    if want("reconcile") {
        reconcile(&sizes, &mut r)?;
    }
    if want("replay") {
        replay(&sizes, &mut r)?;
    }
    // Minutes of steady load per protocol: in a full run, or when asked for.
    if (!args.quick && want("group")) || args.only.iter().any(|o| o == "group") {
        group(&mut r)?;
    }

    let max_rss = r.rss.iter().map(|x| x.peak_rss_mib).fold(0.0, f64::max);
    r.summary.insert("max_rss_mib", max_rss);
    let keys = [
        "e2e_p50_ms",
        "e2e_p99_ms",
        "sustained_per_s",
        "native_per_s",
        "apply_per_s",
        "hot_writes_per_s",
        "reconcile_flows_per_s",
        "plain_loop_flows_per_s",
        "replay_per_s",
        "cpu_us_per_change_1k",
        "cpu_us_per_change_5k",
        "native_cpu_us_per_change",
        "idle_cpu_ms_per_s",
        "capture_rules_cpu_ratio",
        "max_rss_mib",
    ];
    let line: Vec<String> = std::iter::once(format!("broker={broker_name}"))
        .chain(keys.iter().map(|k| match r.summary.get(k) {
            Some(v) if *v >= 100.0 => format!("{k}={v:.0}"),
            Some(v) => format!("{k}={v:.2}"),
            None => format!("{k}=na"),
        }))
        .collect();
    r.json.insert(
        "summary".into(),
        serde_json::to_value(
            r.summary
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
        )?,
    );
    r.json.insert("rss".into(), serde_json::to_value(&r.rss)?);
    r.json
        .insert("broker".into(), serde_json::Value::String(broker_name.clone()));
    std::fs::write(out_dir.join("results.json"), serde_json::to_string_pretty(&r.json)?)?;
    println!(
        "  (took {:.0} s; details in target/bench/results.json)",
        started.elapsed().as_secs_f64()
    );
    println!("bench: {}", line.join(" "));
    Ok(())
}

/// Consumer-group recovery, per group protocol: two `apply` processes share
/// the partitions under a steady load of unique flows; one is killed
/// (`kill -9`), then the survivor's partner is started again and stopped
/// with SIGTERM (a graceful leave). The longest end-to-end latency of the
/// changes written around each event is how long some partitions went
/// unserved. Both use redmirror's defaults: classic with its 10 s session
/// timeout, `consumer` (KIP-848) with the broker's
/// `group.consumer.session.timeout.ms` (45 s by default).
fn group(r: &mut Report) -> anyhow::Result<()> {
    const RATE: u64 = 500;
    for proto in ["classic", "consumer"] {
        let s = Servers::start(true)?;
        let extra = [
            ("REDMIRROR_KAFKA_GROUP_PROTOCOL", proto),
            ("REDMIRROR_KAFKA_SESSION_TIMEOUT_MS", "10000"),
        ];
        let capture = Proc::role(&s, "capture", "capture", &extra)?;
        let a = Proc::role(&s, "apply-a", "apply", &extra)?;
        a.wait_ready(&s)?;
        let mut measured = Vec::new();
        for (step, how) in [(0, "kill -9"), (1, "SIGTERM")] {
            let b = Proc::role(&s, "apply-b", "apply", &extra)?;
            // Until b has a share of the partitions and applies from it.
            let applied = "redmirror_apply_events_total{outcome=\"applied\"}";
            let t = Instant::now();
            while b.metric(applied) < 1.0 {
                if t.elapsed() > Duration::from_secs(90) {
                    anyhow::bail!("apply-b ({proto}) got no partitions within 90 s");
                }
                load::write_steady(&s.source.url(), &format!("grp{step}warm-"), RATE, 1, 1)?;
            }
            let prefix = format!("grp{step}-");
            let obs = Latencies::observe(&s.dest.url(), &prefix)?;
            let (url, pfx) = (s.source.url(), prefix.clone());
            let writer = std::thread::spawn(move || load::write_steady(&url, &pfx, RATE, 60, 1));
            // The member goes once the measured load is flowing through it.
            let before = b.metric(applied);
            let t = Instant::now();
            while b.metric(applied) < before + 500.0 {
                if t.elapsed() > Duration::from_secs(60) {
                    anyhow::bail!("apply-b ({proto}) applied none of the measured load within 60 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut b = b;
            if step == 0 {
                b.kill();
            } else {
                b.terminate();
            }
            let sent = writer.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
            let lat = obs.finish(sent, Duration::from_secs(90));
            measured.push((how, lat.max() / 1000.0, lat.p(99.0), lat.missing));
        }
        r.row(
            &format!("group.protocol={proto}: a member leaves"),
            measured
                .iter()
                .map(|(how, max_s, _, _)| format!("{how}: unserved {max_s:.1} s"))
                .collect::<Vec<_>>()
                .join(", "),
            "-".into(),
            "-".into(),
        );
        r.json.insert(
            format!("group_{proto}"),
            serde_json::json!(measured
                .iter()
                .map(|(how, max_s, p99, missing)| serde_json::json!({"leave": how, "max_e2e_s": max_s, "p99_ms": p99, "missing": missing}))
                .collect::<Vec<_>>()),
        );
        r.procs(&format!("group-{proto}"), &[&capture, &a]);
    }
    Ok(())
}

/// The broker's own share of latency (produce → consume), for the analysis.
fn broker(r: &mut Report) -> anyhow::Result<()> {
    let s = Servers::start(false)?;
    let mut init = Proc::spawn(
        &s,
        "topic-init",
        &["resync", "bench-init"],
        redmirror_testkit::free_port(),
        &[],
    )?;
    init.wait_output(Duration::from_secs(60))?;
    let kafka = redmirror_kafka::Kafka::new(s.broker.bootstrap(), Default::default());
    // The same probe through librdkafka's in-process mock cluster (the embedded broker).
    let mock = rdkafka::mocking::MockCluster::new(1)?;
    mock.create_topic("lat-probe", 6, 1)?;
    let mut embedded = redmirror_kafka::Kafka::new(mock.bootstrap_servers(), Default::default());
    embedded.embedded = true;
    for rate in [1_000u64, 5_000] {
        let (p50, p99) = kafka_lat::measure(&kafka, &s.topic, rate, 8)?;
        let (m50, m99) = kafka_lat::measure(&embedded, "lat-probe", rate, 8)?;
        r.row(
            &format!("broker alone, produce->consume @ {rate}/s"),
            format!("{} p50 {p50:.2} p99 {p99:.2} ms", s.broker.name()),
            format!("embedded p50 {m50:.2} p99 {m99:.2} ms"),
            "-".into(),
        );
        r.json.insert(
            format!("broker_{rate}"),
            serde_json::json!({"broker": s.broker.name(), "broker_p50_ms": p50, "broker_p99_ms": p99, "embedded_p50_ms": m50, "embedded_p99_ms": m99}),
        );
    }
    Ok(())
}

/// Native replication throughput of 10-field hashes (the ceiling).
fn native(sizes: &Sizes, r: &mut Report) -> anyhow::Result<()> {
    let s = Servers::start(false)?;
    let n = sizes.native_flows;
    let t0 = Instant::now();
    load::write_burst(&s.source.url(), "native", n, 2)?;
    let wrote = t0.elapsed();
    s.wait_replica_caught_up(Duration::from_secs(120))?;
    let secs = t0.elapsed().as_secs_f64();
    let per_s = n as f64 / secs;
    r.summary.insert("native_per_s", per_s);
    r.json.insert(
        "native".into(),
        serde_json::json!({"flows": n, "seconds": secs, "per_s": per_s, "source_write_s": wrote.as_secs_f64()}),
    );
    r.row(
        "native replication (ceiling)",
        "-".into(),
        format!("{per_s:.0} hashes/s replicated"),
        "-".into(),
    );
    Ok(())
}

/// Steady 1,000 and 5,000 changes/s: source write → destination has it,
/// observed by keyevent subscribers on the destination and on the replica.
fn latency(sizes: &Sizes, r: &mut Report, out: &std::path::Path, embedded: bool) -> anyhow::Result<()> {
    let s = Servers::start(true)?;
    let extra: &[(&str, &str)] = if embedded {
        &[("REDMIRROR_KAFKA_BROKERS", "embedded")]
    } else {
        &[]
    };
    let mirror = Proc::role(&s, "run", "run", extra)?;
    mirror.wait_ready(&s)?;
    // What each process costs with no change at all (timers, heartbeats,
    // empty fetches): the part of a change's cost that does not grow with
    // the rate.
    let idle0 = CpuMeter::read(&s, &mirror)?;
    let idle_secs = sizes.latency_secs.min(10);
    std::thread::sleep(Duration::from_secs(idle_secs));
    let idle = CpuMeter::read(&s, &mirror)?.per_second_ms(&idle0, idle_secs as f64);
    println!(
        "    idle CPU: redmirror {:.1} ms/s; source Redis {:.1}, destination Redis {:.1}, broker {:.1} ms/s",
        idle.redmirror, idle.source, idle.dest, idle.broker
    );
    r.json
        .insert("latency_idle_cpu_ms_per_s".into(), serde_json::to_value(idle)?);
    r.summary.insert("idle_cpu_ms_per_s", idle.redmirror);
    let mut csv = String::from("offered_per_s,system,p50_ms,p99_ms,p999_ms,max_ms\n");
    for rate in [1_000u64, 5_000] {
        let dest_obs = Latencies::observe(&s.dest.url(), &format!("lat{rate}-"))?;
        let repl_obs = Latencies::observe(&s.replica.url(), &format!("lat{rate}-"))?;
        let cpu0 = CpuMeter::read(&s, &mirror)?;
        let sent = load::write_steady(&s.source.url(), &format!("lat{rate}-"), rate, sizes.latency_secs, 1)?;
        let dest = dest_obs.finish(sent, Duration::from_secs(30));
        let repl = repl_obs.finish(sent, Duration::from_secs(30));
        let cpu = CpuMeter::read(&s, &mirror)?.per_change_us(&cpu0, sent);
        println!(
            "    CPU per change @ {rate}/s: redmirror {:.0} us; source Redis {:.0}, destination Redis {:.0}, \
             broker {:.0} us; native replication (replica) {:.0} us; redmirror / native {}",
            cpu.redmirror,
            cpu.source,
            cpu.dest,
            cpu.broker,
            cpu.replica,
            ratio(cpu.redmirror, cpu.replica)
        );
        r.json
            .insert(format!("latency_{rate}_cpu_us_per_change"), serde_json::to_value(cpu)?);
        match rate {
            1_000 => {
                r.summary.insert("cpu_us_per_change_1k", cpu.redmirror);
                r.summary.insert("native_cpu_us_per_change", cpu.replica);
            }
            5_000 => {
                r.summary.insert("cpu_us_per_change_5k", cpu.redmirror);
            }
            _ => {}
        }
        r.row(
            &format!("e2e latency @ {rate}/s"),
            format!(
                "p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.1} ms",
                dest.p(50.0),
                dest.p(99.0),
                dest.p(99.9),
                dest.max()
            ),
            format!("replica p50 {:.2} p99 {:.2} ms", repl.p(50.0), repl.p(99.0)),
            format!("p99 {}", ratio(dest.p(99.0), repl.p(99.0))),
        );
        if dest.missing > 0 {
            println!(
                "    WARNING: {} of {sent} flows not observed on the destination",
                dest.missing
            );
        }
        // Where the time goes: capture (source read -> handed to the
        // producer) against the rest (Kafka, apply, the destination).
        if !embedded {
            let mut cap = kafka_lat::capture_stage(&s.broker.bootstrap(), &s.topic, &format!("lat{rate}-"))?;
            cap.sort_by(f64::total_cmp);
            let pct = |v: &[f64], p: f64| {
                v.get(((v.len() as f64 - 1.0) * p / 100.0) as usize)
                    .copied()
                    .unwrap_or(f64::NAN)
            };
            println!(
                "    stages @ {rate}/s: capture (source read -> producer) p50 {:.2} p99 {:.2} ms over {} events; \
                 the rest (notification wait, Kafka, apply, destination) is e2e minus that",
                pct(&cap, 50.0),
                pct(&cap, 99.0),
                cap.len()
            );
            r.json.insert(
                format!("latency_{rate}_capture_stage"),
                serde_json::json!({"p50_ms": pct(&cap, 50.0), "p99_ms": pct(&cap, 99.0), "events": cap.len()}),
            );
        }
        for (name, l) in [("redmirror", &dest), ("replica", &repl)] {
            csv.push_str(&format!(
                "{rate},{name},{:.3},{:.3},{:.3},{:.3}\n",
                l.p(50.0),
                l.p(99.0),
                l.p(99.9),
                l.max()
            ));
        }
        r.json.insert(
            format!("latency_{rate}"),
            serde_json::json!({"redmirror": dest.json(), "replica": repl.json(), "sent": sent}),
        );
        if rate == 5_000 {
            r.summary.insert("e2e_p50_ms", dest.p(50.0));
            r.summary.insert("e2e_p99_ms", dest.p(99.0));
        }
    }
    std::fs::write(out.join("latency.csv"), &csv)?;
    r.procs("latency", &[&mirror]);
    Ok(())
}

/// CPU seconds used so far by each process a change passes through: the
/// redmirror process (`/proc`), the source, destination and replica Redis
/// (`INFO cpu`) and the broker's JVM (`/proc`).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct CpuMeter {
    redmirror: f64,
    source: f64,
    dest: f64,
    replica: f64,
    broker: f64,
}

impl CpuMeter {
    fn read(s: &Servers, mirror: &Proc) -> anyhow::Result<CpuMeter> {
        Ok(CpuMeter {
            redmirror: mirror.cpu_seconds(),
            source: procs::redis_cpu(&s.source)?,
            dest: procs::redis_cpu(&s.dest)?,
            replica: procs::redis_cpu(&s.replica)?,
            broker: s
                .broker
                .pid()
                .and_then(redmirror_testkit::process::cpu_seconds)
                .unwrap_or(f64::NAN),
        })
    }

    /// Milliseconds of CPU per second between `before` and this reading,
    /// `secs` apart.
    fn per_second_ms(&self, before: &CpuMeter, secs: f64) -> CpuMeter {
        self.since(before, 1e3 / secs)
    }

    /// Microseconds of CPU per change between `before` and this reading.
    /// The source's figure includes taking the writes themselves and
    /// feeding the replica; the replica's alone is native replication's
    /// cost on the receiving side, the yardstick for redmirror's.
    fn per_change_us(&self, before: &CpuMeter, changes: u64) -> CpuMeter {
        self.since(before, 1e6 / changes.max(1) as f64)
    }

    /// Each process's CPU seconds since `before`, times `scale`.
    fn since(&self, before: &CpuMeter, scale: f64) -> CpuMeter {
        let per = |a: f64, b: f64| (a - b) * scale;
        CpuMeter {
            redmirror: per(self.redmirror, before.redmirror),
            source: per(self.source, before.source),
            dest: per(self.dest, before.dest),
            replica: per(self.replica, before.replica),
            broker: per(self.broker, before.broker),
        }
    }
}

/// Highest rate of unique-flow changes at which lag stays bounded.
fn sustained(sizes: &Sizes, r: &mut Report, out: &std::path::Path) -> anyhow::Result<()> {
    let s = Servers::start(true)?;
    let mirror = Proc::role(&s, "run", "run", &[])?;
    mirror.wait_ready(&s)?;
    let mut best = 0u64;
    let mut csv = std::fs::read_to_string(out.join("latency.csv"))
        .unwrap_or_else(|_| "offered_per_s,system,p50_ms,p99_ms,p999_ms,max_ms\n".into());
    for &rate in &sizes.rates {
        let prefix = format!("sus{rate}-");
        let obs = Latencies::observe(&s.dest.url(), &prefix)?;
        let cpu0 = CpuMeter::read(&s, &mirror)?;
        let sent = load::write_steady(&s.source.url(), &prefix, rate, sizes.step_secs, 2)?;
        let achieved = sent as f64 / sizes.step_secs as f64;
        let l = obs.finish(sent, Duration::from_secs(20));
        let cpu = CpuMeter::read(&s, &mirror)?.per_change_us(&cpu0, sent);
        let bounded = l.missing == 0 && l.p(99.0) < 1_000.0 && achieved >= rate as f64 * 0.95;
        println!(
            "    step {rate}/s: offered {achieved:.0}/s, p50 {:.1} p99 {:.1} max {:.0} ms, missing {}, \
             CPU per change redmirror {:.0} us (replica {:.0} us) -> {}",
            l.p(50.0),
            l.p(99.0),
            l.max(),
            l.missing,
            cpu.redmirror,
            cpu.replica,
            if bounded { "bounded" } else { "NOT bounded" }
        );
        r.json.insert(
            format!("sustained_{rate}_cpu_us_per_change"),
            serde_json::to_value(cpu)?,
        );
        csv.push_str(&format!(
            "{rate},redmirror,{:.3},{:.3},{:.3},{:.3}\n",
            l.p(50.0),
            l.p(99.0),
            l.p(99.9),
            l.max()
        ));
        if bounded {
            best = rate;
        } else {
            break;
        }
    }
    std::fs::write(out.join("latency.csv"), &csv)?;
    let native = r.summary.get("native_per_s").copied().unwrap_or(0.0);
    r.summary.insert("sustained_per_s", best as f64);
    r.json.insert(
        "sustained".into(),
        serde_json::json!({"per_s": best, "step_secs": sizes.step_secs}),
    );
    r.row(
        "max sustained unique-flow changes",
        format!("{best}/s with lag bounded ({} s steps)", sizes.step_secs),
        format!("native {native:.0}/s"),
        ratio(best as f64, native),
    );
    r.procs("sustained", &[&mirror]);
    Ok(())
}

/// 1,000 flows rewritten as fast as the source takes them.
fn hot_keys(sizes: &Sizes, r: &mut Report) -> anyhow::Result<()> {
    let s = Servers::start(false)?;
    let mirror = Proc::role(&s, "run", "run", &[])?;
    mirror.wait_ready(&s)?;
    let events0 = mirror.metric("redmirror_capture_events_total{op=\"upsert\"}");
    let t0 = Instant::now();
    let writes = load::write_hot(&s.source.url(), 1_000, sizes.hot_secs, 2)?;
    let secs = t0.elapsed().as_secs_f64();
    let stop = Instant::now();
    let converged = load::wait_hot_converged(&s.source.url(), &s.dest.url(), 1_000, Duration::from_secs(60))?;
    let drain = stop.elapsed().as_secs_f64();
    let events = mirror.metric("redmirror_capture_events_total{op=\"upsert\"}") - events0;
    let wps = writes as f64 / secs;
    r.summary.insert("hot_writes_per_s", wps);
    r.json.insert(
        "hot".into(),
        serde_json::json!({"writes": writes, "seconds": secs, "events": events, "converged": converged, "drain_s": drain}),
    );
    r.row(
        "hot keys (1,000 flows)",
        format!("{wps:.0} writes/s absorbed, {:.0} events/s", events / secs),
        format!("final state {}", if converged { "exact" } else { "WRONG" }),
        format!("coalesced {}", ratio(writes as f64, events)),
    );
    println!("    hot keys: caught up {drain:.2} s after the writers stopped");
    r.procs("hot", &[&mirror]);
    Ok(())
}

/// Which servers the stage measurements run on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One source server and one destination server: both rows.
    Standalone,
    /// A 3-master cluster as the source: the capture row only.
    CaptureCluster,
    /// A 3-master cluster as the destination: the apply row only.
    ApplyCluster,
}

/// Redis CPU seconds of one side so far: the server, or the cluster's masters summed.
fn side_cpu(
    server: &redmirror_testkit::RedisServer,
    cluster: Option<&redmirror_testkit::cluster::RedisCluster>,
) -> anyhow::Result<f64> {
    match cluster {
        Some(c) => procs::cluster_cpu(c),
        None => procs::redis_cpu(server),
    }
}

/// `INFO commandstats` of one side, summed over a cluster's masters, most expensive first.
fn side_stats(
    server: &redmirror_testkit::RedisServer,
    cluster: Option<&redmirror_testkit::cluster::RedisCluster>,
) -> anyhow::Result<Vec<procs::CommandStat>> {
    let Some(c) = cluster else {
        return procs::command_stats(server);
    };
    let mut sum: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for port in c.masters() {
        for st in procs::command_stats(c.node(port))? {
            let e = sum.entry(st.command).or_default();
            e.0 += st.calls;
            e.1 += st.usec;
        }
    }
    let mut out: Vec<procs::CommandStat> = sum
        .into_iter()
        .map(|(command, (calls, usec))| procs::CommandStat { command, calls, usec })
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.usec));
    Ok(out)
}

fn reset_side(
    server: &redmirror_testkit::RedisServer,
    cluster: Option<&redmirror_testkit::cluster::RedisCluster>,
) -> anyhow::Result<()> {
    match cluster {
        Some(c) => c.masters().into_iter().try_for_each(|p| procs::reset_stats(c.node(p))),
        None => procs::reset_stats(server),
    }
}

fn top_stats(st: &[procs::CommandStat]) -> String {
    st.iter()
        .take(6)
        .map(|c| format!("{} {} calls {:.2} s", c.command, c.calls, c.usec as f64 / 1e6))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Field rules of the `capture-rules` measurement: eight of the ten bench
/// fields allow-listed, three of them masked, one with each method. The
/// readiness probe's field `n` is allowed too, so the probe flow reaches the
/// destination with something in it.
const FIELD_RULES: &[(&str, &str)] = &[
    (
        "REDMIRROR_INCLUDED_FIELDS",
        "n,field0,field1,field2,field3,field4,field5,field6,field7",
    ),
    ("REDMIRROR_MASKED_FIELDS", "field1:hash,field2:email,field3:redact"),
    ("REDMIRROR_MASK_KEY", "bench-mask-key-0123456789"),
];

/// Capture's CPU per event without field rules and with [`FIELD_RULES`],
/// against the same servers (each capture on flows of its own), and their
/// ratio: what the rules cost. The two alternate twice (plain, ruled,
/// plain, ruled) and each keeps its lower figure, so neither gains from
/// going first or from a busy moment of the shared cores.
fn capture_rules(sizes: &Sizes, r: &mut Report) -> anyhow::Result<()> {
    let s = Servers::start(false)?;
    let n = sizes.stage_flows;
    let pending_max = (n + 1000).to_string();
    let (mut plain, mut ruled) = (f64::INFINITY, f64::INFINITY);
    for round in 0..4 {
        let (name, rules) = if round % 2 == 0 {
            ("plain", &[][..])
        } else {
            ("ruled", FIELD_RULES)
        };
        let mut env = vec![("REDMIRROR_CAPTURE_PENDING_MAX", pending_max.as_str())];
        env.extend_from_slice(rules);
        let mut capture = Proc::role(&s, &format!("capture-{name}-{round}"), "capture", &env)?;
        let mut apply = Proc::role(&s, &format!("apply-{name}-{round}"), "apply", rules)?;
        capture.wait_ready(&s)?;
        apply.kill();
        let published = "redmirror_capture_events_total{op=\"upsert\"}";
        let before = capture.metric(published);
        let cpu0 = capture.cpu_seconds();
        let t0 = Instant::now();
        load::write_burst(&s.source.url(), &format!("rules-{round}"), n, 2)?;
        procs::wait_metric(&capture, published, before + n as f64, Duration::from_secs(300))?;
        let secs = t0.elapsed().as_secs_f64();
        let cpu_k = (capture.cpu_seconds() - cpu0) / n as f64 * 1000.0;
        r.json.insert(
            format!("capture_rules_{round}_{name}"),
            serde_json::json!({"flows": n, "capture_s": secs, "capture_per_s": n as f64 / secs,
                "capture_cpu_s_per_1000": cpu_k}),
        );
        println!("    capture-rules round {round} ({name}): {cpu_k:.3} CPU-s/1k events");
        r.procs(&format!("capture-rules ({name})"), &[&capture]);
        // A graceful stop gives up the capture lease at once (the next
        // capture would wait out its TTL), and the probe flow goes, so the
        // next readiness probe has to travel the pipeline again.
        capture.terminate();
        for side in [&s.source, &s.dest] {
            let _: i64 = redis::cmd("DEL").arg("client:bench-probe").query(&mut side.conn())?;
        }
        let best = if name == "plain" { &mut plain } else { &mut ruled };
        *best = best.min(cpu_k);
    }
    let cost = ruled / plain;
    r.summary.insert("capture_rules_cpu_ratio", cost);
    r.row(
        "capture field rules' cost",
        format!("{ruled:.3} vs {plain:.3} CPU-s/1k events with / without 3 masks + allow-list"),
        "target at most 1.20x".to_string(),
        format!("{cost:.2}x"),
    );
    Ok(())
}

/// Each stage alone: capture with apply stopped (from the first source
/// write to the last event published), then apply on the backlog (from the
/// first applied event to the last). CPU per 1,000 events is the process's
/// over the stage; Redis CPU per event is `INFO cpu` over the stage, summed
/// over a cluster's masters (the source's includes the writes themselves).
fn stages(sizes: &Sizes, r: &mut Report, shape: Shape) -> anyhow::Result<()> {
    let s = Servers::start_shaped(false, shape == Shape::CaptureCluster, shape == Shape::ApplyCluster)?;
    let (label, key) = match shape {
        Shape::Standalone => ("", "stages"),
        Shape::CaptureCluster => (", cluster source (3 masters)", "stages_capture_cluster"),
        Shape::ApplyCluster => (", cluster destination (3 masters)", "stages_apply_cluster"),
    };
    // The whole burst must fit the pending set, or the overflow becomes a
    // gap for the reconciler (not running here) and never reaches the topic.
    let pending_max = (sizes.stage_flows + 1000).to_string();
    let capture = Proc::role(
        &s,
        "capture",
        "capture",
        &[("REDMIRROR_CAPTURE_PENDING_MAX", &pending_max)],
    )?;
    let mut apply = Proc::role(&s, "apply", "apply", &[])?;
    capture.wait_ready(&s)?;
    apply.kill();
    let n = sizes.stage_flows;
    let published = "redmirror_capture_events_total{op=\"upsert\"}";
    let before = capture.metric(published);
    let src = (&s.source, s.source_cluster.as_ref());
    reset_side(src.0, src.1)?;
    let (cap_cpu0, src_cpu0) = (capture.cpu_seconds(), side_cpu(src.0, src.1)?);
    let t0 = Instant::now();
    match &s.source_cluster {
        Some(c) => load::write_burst_cluster(c, "stage", n)?,
        None => load::write_burst(&s.source.url(), "stage", n, 2)?,
    }
    let source_secs = t0.elapsed().as_secs_f64();
    let after_writes = procs::wait_metric(&capture, published, before + n as f64, Duration::from_secs(300))?;
    let cap_secs = t0.elapsed().as_secs_f64();
    let cap_rate = n as f64 / cap_secs;
    let cap_cpu_k = (capture.cpu_seconds() - cap_cpu0) / n as f64 * 1000.0;
    let src_us = (side_cpu(src.0, src.1)? - src_cpu0) / n as f64 * 1e6;
    let src_stats = side_stats(src.0, src.1)?;
    let notes = capture.metric("redmirror_capture_notifications_total");
    r.json.insert(
        format!("{key}_capture"),
        serde_json::json!({"flows": n, "source_write_s": source_secs, "capture_s": cap_secs,
            "capture_after_writes_s": after_writes.as_secs_f64(), "capture_per_s": cap_rate,
            "capture_cpu_s_per_1000": cap_cpu_k, "source_redis_cpu_us_per_event": src_us,
            "notifications": notes, "source_commandstats": src_stats}),
    );
    if shape != Shape::ApplyCluster {
        r.row(
            &format!("capture alone{label}"),
            format!(
                "{cap_rate:.0} events/s ({n} unique flows), {cap_cpu_k:.3} CPU-s/1k, source Redis {src_us:.1} us/event"
            ),
            format!("source took them at {:.0}/s", n as f64 / source_secs),
            ratio(cap_rate, n as f64 / source_secs),
        );
        println!(
            "    capture{label}: last event published {:.2} s after the last write; source commands: {}",
            after_writes.as_secs_f64(),
            top_stats(&src_stats)
        );
    }
    if shape == Shape::CaptureCluster {
        r.procs(key, &[&capture]);
        return Ok(());
    }
    // Apply alone on the backlog (from the first applied event to the last).
    let dst = (&s.dest, s.dest_cluster.as_ref());
    reset_side(dst.0, dst.1)?;
    let dst_cpu0 = side_cpu(dst.0, dst.1)?;
    let apply2 = Proc::role(&s, "apply2", "apply", &[])?;
    let (first, last) = procs::time_metric_span(
        &apply2,
        "redmirror_apply_events_total{outcome=\"applied\"}",
        n as f64,
        Duration::from_secs(300),
    )?;
    let apply_rate = n as f64 / (last - first).as_secs_f64().max(1e-3);
    let apply_cpu_k = apply2.cpu_seconds() / n as f64 * 1000.0;
    let dst_us = (side_cpu(dst.0, dst.1)? - dst_cpu0) / n as f64 * 1e6;
    let dst_stats = side_stats(dst.0, dst.1)?;
    if shape == Shape::Standalone {
        r.summary.insert("apply_per_s", apply_rate);
    }
    r.json.insert(
        format!("{key}_apply"),
        serde_json::json!({"events": n, "apply_per_s": apply_rate, "apply_cpu_s_per_1000": apply_cpu_k,
            "dest_redis_cpu_us_per_event": dst_us, "dest_commandstats": dst_stats}),
    );
    let native = r.summary.get("native_per_s").copied().unwrap_or(0.0);
    r.row(
        &format!("apply alone (backlog){label}"),
        format!("{apply_rate:.0} events/s, {apply_cpu_k:.3} CPU-s/1k, destination Redis {dst_us:.1} us/event"),
        format!("native {native:.0}/s"),
        ratio(apply_rate, native),
    );
    println!("    apply{label}: destination commands: {}", top_stats(&dst_stats));
    r.procs(key, &[&capture, &apply2]);
    Ok(())
}

/// Full reconcile passes (dry run: compare only) in sync and with 10 % drift,
/// next to a plain one-round-trip-per-call loop.
fn reconcile(sizes: &Sizes, r: &mut Report) -> anyhow::Result<()> {
    let s = Servers::start(false)?;
    let n = sizes.reconcile_flows;
    let small = n / 10;
    load::fill_in_sync(&s.source.url(), &s.dest.url(), "rc", small)?;
    let (small_report, small_proc) = procs::reconcile_once(&s, "reconcile-small")?;
    load::fill_in_sync(&s.source.url(), &s.dest.url(), "rc", n)?;
    procs::reset_stats(&s.source)?;
    procs::reset_stats(&s.dest)?;
    let servers_before = [procs::redis_cpu(&s.source)?, procs::redis_cpu(&s.dest)?];
    let (report, p1) = procs::reconcile_once(&s, "reconcile-in-sync")?;
    let servers_cpu = [
        procs::redis_cpu(&s.source)? - servers_before[0],
        procs::redis_cpu(&s.dest)? - servers_before[1],
    ];
    let stats = [procs::command_stats(&s.source)?, procs::command_stats(&s.dest)?];
    let secs = report["duration_seconds"].as_f64().unwrap_or(f64::NAN);
    let in_sync = n as f64 / secs;
    load::drift(&s.dest.url(), "rc", n, 10)?;
    let (drifted, p2) = procs::reconcile_once(&s, "reconcile-10pct")?;
    let secs2 = drifted["duration_seconds"].as_f64().unwrap_or(f64::NAN);
    let drift_rate = n as f64 / secs2;
    let plain = load::plain_loop(&s.source.url(), &s.dest.url(), "rc", sizes.plain_flows)?;
    r.summary.insert("reconcile_flows_per_s", in_sync);
    r.summary.insert("plain_loop_flows_per_s", plain);
    r.json.insert(
        "reconcile".into(),
        serde_json::json!({
            "flows": n, "in_sync_s": secs, "in_sync_per_s": in_sync, "drift_10pct_s": secs2, "drift_per_s": drift_rate,
            "drift_found": drifted["drift"], "plain_loop_per_s": plain, "phases_in_sync": report["phase_seconds"], "phases_drift": drifted["phase_seconds"],
            "rss_small_mib": small_proc.peak_rss_mib(), "rss_full_mib": p1.peak_rss_mib(),
            "small_flows": small, "small_s": small_report["duration_seconds"],
            "in_sync_source_redis_cpu_s": servers_cpu[0], "in_sync_dest_redis_cpu_s": servers_cpu[1],
            "in_sync_source_commandstats": stats[0], "in_sync_dest_commandstats": stats[1],
        }),
    );
    r.row(
        &format!("reconcile pass, {n} flows in sync"),
        format!("{in_sync:.0} flows/s"),
        format!("plain loop {plain:.0} flows/s"),
        ratio(in_sync, plain),
    );
    r.row(
        "reconcile pass, 10 % differ",
        format!("{drift_rate:.0} flows/s, drift {}", drifted["drift"]),
        format!("plain loop {plain:.0} flows/s"),
        ratio(drift_rate, plain),
    );
    r.row(
        "reconcile memory vs flows",
        format!("{:.1} MiB at {n}", p1.peak_rss_mib()),
        format!("{:.1} MiB at {small}", small_proc.peak_rss_mib()),
        ratio(p1.peak_rss_mib(), small_proc.peak_rss_mib()),
    );
    r.procs("reconcile", &[&small_proc, &p1, &p2]);
    println!(
        "    reconcile: during the in-sync pass, source redis-server CPU {:.1} s, destination redis-server CPU {:.1} s",
        servers_cpu[0], servers_cpu[1]
    );
    for (side, st) in ["source", "destination"].iter().zip(&stats) {
        let top: Vec<String> = st
            .iter()
            .take(5)
            .map(|c| format!("{} {} calls {:.2} s", c.command, c.calls, c.usec as f64 / 1e6))
            .collect();
        println!("    reconcile: {side} commands (in-sync pass): {}", top.join(", "));
    }
    Ok(())
}

/// Replay of N events onto a wiped destination.
fn replay(sizes: &Sizes, r: &mut Report) -> anyhow::Result<()> {
    let s = Servers::start(false)?;
    let n = sizes.replay_events;
    let topic = "replay-bench";
    // Create the topics the way redmirror does (a resync of a flow that does not exist).
    let mut init = Proc::spawn(
        &s,
        "topic-init",
        &["resync", "bench-init"],
        redmirror_testkit::free_port(),
        &[("REDMIRROR_TOPIC", topic)],
    )?;
    init.wait_output(Duration::from_secs(60))?;
    let t0 = Instant::now();
    load::produce_events(&s.broker.bootstrap(), topic, n)?;
    println!("    replay: produced {n} events in {:.1} s", t0.elapsed().as_secs_f64());
    let (report, p) = procs::replay(&s, topic)?;
    let per_s = report["per_second"].as_f64().unwrap_or(0.0);
    let copies = load::count_keys(&s.dest.url(), "client:*")?;
    r.summary.insert("replay_per_s", per_s);
    r.json.insert(
        "replay".into(),
        serde_json::json!({"events": n, "report": report, "copies": copies}),
    );
    let native = r.summary.get("native_per_s").copied().unwrap_or(0.0);
    r.row(
        &format!("replay {n} events, wiped destination"),
        format!("{per_s:.0} events/s ({copies} copies)"),
        format!("native {native:.0}/s"),
        ratio(per_s, native),
    );
    r.procs("replay", &[&p]);
    let _ = flow_fields;
    Ok(())
}
