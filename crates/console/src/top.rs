//! `redmirror top`: `status` as a live view, refreshed every second, with
//! rates (counter deltas between two looks) and end-to-end latency
//! percentiles (from the histogram's bucket deltas). On a terminal it
//! redraws in place; otherwise it prints one compact line per refresh.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};

use crossterm::{cursor, queue, style::Print, terminal};
use redmirror_config::Config;
use redmirror_telemetry::metrics as m;

use crate::direct::Direct;
use crate::process::{AdminStatus, Process, Scrape};
use crate::prom::Metrics;
use crate::status::{ago, ReconcileView};
use crate::Error;

/// How often the view refreshes.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Where the looks come from.
enum Source {
    Process(Process),
    Direct {
        config: Box<Config>,
        dest: Option<fred::prelude::Client>,
    },
}

/// One look.
enum Look {
    Process(Box<Scrape>),
    Direct(Box<Direct>),
}

struct Sample {
    at: Instant,
    wall: SystemTime,
    look: Look,
}

impl Source {
    async fn look(&mut self) -> Result<Sample, Error> {
        let look = match self {
            Source::Process(p) => Look::Process(Box::new(p.scrape().await?)),
            Source::Direct { config, dest } => {
                let (d, client) = crate::direct::look(config, dest.take()).await;
                *dest = client;
                Look::Direct(Box::new(d))
            }
        };
        Ok(Sample {
            at: Instant::now(),
            wall: SystemTime::now(),
            look,
        })
    }

    fn title(&self) -> String {
        match self {
            Source::Process(p) => format!("process {}", p.url()),
            Source::Direct { config, .. } => format!(
                "destination {}, Kafka {} (topic {}, group {})",
                config.dest.as_ref().map(|d| d.redacted()).unwrap_or_default(),
                config
                    .kafka_brokers
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                config.topic,
                config.group_id
            ),
        }
    }
}

/// One refresh: the full view (lines) and the compact line.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The view on a terminal, one entry per line.
    pub lines: Vec<String>,
    /// The same in one line, for a log or a pipe.
    pub line: String,
}

/// A counter's increase per second between two looks (a counter that went
/// down was reset by a restart: its whole value is new).
pub fn rate(before: f64, after: f64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    let d = if after < before { after } else { after - before };
    d / seconds
}

/// A duration in seconds for people: "0.42 ms", "12.3 ms", "1.20 s".
pub fn seconds(s: f64) -> String {
    if s < 0.001 {
        format!("{:.2} ms", s * 1000.0)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

fn per_second(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Counter rates of `name` by `label` between two scrapes.
fn rates_by(before: &Metrics, after: &Metrics, name: &str, label: &str, dt: f64) -> BTreeMap<String, f64> {
    let b = before.by_label(name, label);
    after
        .by_label(name, label)
        .into_iter()
        .map(|(k, v)| {
            let r = rate(b.get(&k).copied().unwrap_or(0.0), v, dt);
            (k, r)
        })
        .collect()
}

fn clock(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // "2026-01-01T10:00:01Z" -> "10:00:01Z"
    s.split_once('T').map_or(s.clone(), |(_, time)| time.to_string())
}

/// The frame for two process scrapes `dt` seconds apart.
pub fn process_frame(title: &str, before: &Scrape, after: &Scrape, dt: f64, now: SystemTime) -> Frame {
    let at = clock(now);
    if let Some(e) = after.unreachable() {
        let l = format!("{at}  process unreachable: {e}");
        return Frame {
            lines: vec![format!("redmirror top — {title} — {at}"), l.clone()],
            line: l,
        };
    }
    let mut lines = Vec::new();
    let mut compact = vec![at.clone()];
    let status = match &after.status {
        AdminStatus::Ok(v) => Some(v),
        _ => None,
    };
    let who = status.map(|v| format!(" (role {})", v.role)).unwrap_or_default();
    lines.push(format!(
        "redmirror top — {title}{who} — {at} — every {}s, Ctrl-C quits",
        REFRESH.as_secs()
    ));

    match &after.readiness {
        Ok(r) => {
            let down: Vec<String> = r
                .components
                .iter()
                .filter(|(_, up)| !**up)
                .map(|(c, _)| match r.reasons.get(c) {
                    Some(why) => format!("{c} ({why})"),
                    None => c.clone(),
                })
                .collect();
            let all: Vec<String> = r
                .components
                .iter()
                .map(|(c, up)| format!("{c} {}", if *up { "ok" } else { "DOWN" }))
                .collect();
            if r.ready {
                lines.push(format!("ready      yes: {}", all.join(", ")));
                compact.push("ready".into());
            } else {
                lines.push(format!("ready      NO: {}", all.join(", ")));
                compact.push(format!("NOT READY: {}", down.join(", ")));
            }
        }
        Err(e) => {
            lines.push(format!("ready      unknown ({e})"));
            compact.push("ready ?".into());
        }
    }

    match (&before.metrics, &after.metrics) {
        (Ok(b), Ok(a)) => {
            let capture = rates_by(b, a, m::CAPTURE_EVENTS, "op", dt);
            let capture_total: f64 = capture.values().sum();
            let gaps = a.get(m::CAPTURE_GAPS, &[]).unwrap_or(0.0);
            lines.push(format!(
                "capture    {} events/s   upsert {}/s  delete {}/s   gaps {gaps} since start",
                per_second(capture_total),
                per_second(capture.get("upsert").copied().unwrap_or(0.0)),
                per_second(capture.get("delete").copied().unwrap_or(0.0)),
            ));
            compact.push(format!("capture {}/s", per_second(capture_total)));

            let apply = rates_by(b, a, m::APPLY_EVENTS, "outcome", dt);
            let apply_total: f64 = apply.values().sum();
            let outcomes: Vec<String> = m::APPLY_OUTCOMES
                .iter()
                .map(|o| format!("{o} {}", per_second(apply.get(*o).copied().unwrap_or(0.0))))
                .collect();
            lines.push(format!(
                "apply      {} events/s   {}",
                per_second(apply_total),
                outcomes.join("  ")
            ));
            let busy: Vec<String> = m::APPLY_OUTCOMES
                .iter()
                .filter_map(|o| {
                    let r = apply.get(*o).copied().unwrap_or(0.0);
                    (r > 0.0).then(|| format!("{o} {}", per_second(r)))
                })
                .collect();
            compact.push(if busy.is_empty() {
                format!("applied {}/s", per_second(apply_total))
            } else {
                format!("applied {}/s ({})", per_second(apply_total), busy.join(", "))
            });

            let latency = match (b.histogram(m::END_TO_END), a.histogram(m::END_TO_END)) {
                (Some(hb), Some(ha)) => {
                    let d = ha.since(&hb);
                    match (d.quantile(0.5), d.quantile(0.99)) {
                        (Some(p50), Some(p99)) => Some((p50, p99, d.count)),
                        _ => None,
                    }
                }
                _ => None,
            };
            match latency {
                Some((p50, p99, n)) => {
                    lines.push(format!(
                        "latency    end to end p50 {}  p99 {}   ({n:.0} events in the last {dt:.1}s)",
                        seconds(p50),
                        seconds(p99)
                    ));
                    compact.push(format!("e2e p50 {} p99 {}", seconds(p50), seconds(p99)));
                }
                None => {
                    lines.push("latency    — (nothing applied in the last refresh)".into());
                    compact.push("e2e —".into());
                }
            }

            let lag = a.by_label(m::CONSUMER_LAG, "partition");
            let total: f64 = lag.values().sum();
            let parts: Vec<String> = lag.iter().map(|(p, n)| format!("{p}: {n}")).collect();
            lines.push(format!("lag        {total} messages (partition {})", parts.join(", ")));
            compact.push(format!("lag {total}"));

            let runs = a.get(m::RECONCILE_RUNS, &[]).unwrap_or(0.0);
            let last = status.and_then(|v| v.last_reconcile.clone().map(ReconcileView::from_report));
            let reconcile = match &last {
                Some(r) => format!("{runs} passes since start; last {}", r.summary()),
                None => format!("{runs} passes since start"),
            };
            lines.push(format!("reconcile  {reconcile}"));
            if let Some(r) = &last {
                lines.push(format!("verified   {}", r.verified_sentence()));
            }
            compact.push(match &last {
                Some(r) => format!(
                    "reconcile {runs} passes, last {}",
                    r.ago_seconds.map_or_else(|| r.started_at.clone(), ago)
                ),
                None => format!("reconcile {runs} passes"),
            });

            let held = a.get(m::HELD, &[]).unwrap_or(0.0) > 0.0;
            let hold = match status {
                Some(v) if held => format!(
                    "HELD at {} since {} (`redmirror resume` ends it)",
                    v.hold.held_at.as_deref().unwrap_or("?"),
                    v.hold.held_since.as_deref().unwrap_or("?")
                ),
                _ if held => "HELD (a rewind; `redmirror resume` ends it)".into(),
                _ => "not held".into(),
            };
            lines.push(format!("hold       {hold}"));
            if held {
                compact.push("HELD".into());
            }
            let dlq = a.get(m::DLQ_EVENTS, &[]).unwrap_or(0.0);
            lines.push(format!("dlq        {dlq} dead-lettered since start"));
            if dlq > 0.0 {
                compact.push(format!("dlq {dlq}"));
            }
        }
        (_, Err(e)) | (Err(e), _) => {
            lines.push(format!("metrics    unavailable ({e})"));
            compact.push(format!("metrics unavailable ({e})"));
        }
    }
    Frame {
        lines,
        line: compact.join("  "),
    }
}

/// The frame for two direct looks `dt` seconds apart.
fn direct_frame(title: &str, before: &Direct, after: &Direct, dt: f64, now: SystemTime) -> Frame {
    let at = clock(now);
    let mut lines = vec![format!(
        "redmirror top — {title} — {at} — every {}s, Ctrl-C quits",
        REFRESH.as_secs()
    )];
    let mut compact = vec![at];
    match (&before.kafka, &after.kafka) {
        (Ok(b), Ok(a)) => {
            let written = rate(b.written().unwrap_or(0) as f64, a.written().unwrap_or(0) as f64, dt);
            let done = rate(b.done() as f64, a.done() as f64, dt);
            lines.push(format!(
                "topic      {} events/s written (capture, repairs and resyncs)",
                per_second(written)
            ));
            lines.push(format!(
                "apply      {} events/s committed by the group (offsets are committed every second)",
                per_second(done)
            ));
            let lag = a.lag();
            let total: i64 = lag.values().sum();
            let parts: Vec<String> = lag.iter().map(|(p, n)| format!("{p}: {n}")).collect();
            lines.push(format!("lag        {total} messages (partition {})", parts.join(", ")));
            let dlq = a.dead_letters().unwrap_or(0);
            lines.push(format!("dlq        {dlq} waiting in the dead-letter topic"));
            compact.push(format!("topic {}/s", per_second(written)));
            compact.push(format!("committed {}/s", per_second(done)));
            compact.push(format!("lag {total}"));
            if dlq > 0 {
                compact.push(format!("dlq {dlq}"));
            }
        }
        (_, Err(e)) | (Err(e), _) => {
            lines.push(format!("kafka      unreachable ({e})"));
            compact.push(format!("kafka unreachable ({e})"));
        }
    }
    lines.push("latency    — (computed from a process's histogram: `redmirror top --url`)".into());
    match &after.dest {
        Ok(d) => {
            let last = d.report.as_ref().and_then(ReconcileView::from_json);
            lines.push(format!(
                "reconcile  {}",
                last.as_ref().map_or_else(
                    || "no pass has finished yet".to_string(),
                    |r| format!("last {}", r.summary())
                )
            ));
            if let Some(r) = &last {
                compact.push(format!(
                    "reconcile last {}",
                    r.ago_seconds.map_or_else(|| r.started_at.clone(), ago)
                ));
            }
            let hold = match &d.hold {
                Ok(Some(h)) => format!(
                    "HELD at {} since {}",
                    redmirror_state::hold::rfc3339(h.at_us),
                    redmirror_state::hold::rfc3339(h.since_us)
                ),
                Ok(None) => "not held".into(),
                Err(e) => format!("unreadable ({e})"),
            };
            lines.push(format!("hold       {hold}"));
            if matches!(d.hold, Ok(Some(_))) {
                compact.push("HELD".into());
            }
            let leases: Vec<String> = d
                .leases
                .iter()
                .map(|(n, h)| format!("{n}: {}", h.as_deref().unwrap_or("nobody")))
                .collect();
            lines.push(format!(
                "processes  {} apply instance(s) live; leases {}; capture gaps {}",
                d.apply_instances,
                leases.join(", "),
                d.gaps
            ));
            compact.push(format!("apply instances {}", d.apply_instances));
        }
        Err(e) => {
            lines.push(format!("destination {e}"));
            compact.push(format!("destination {e}"));
        }
    }
    Frame {
        lines,
        line: compact.join("  "),
    }
}

/// The terminal: redraws the view in place.
struct Screen {
    drawn: u16,
}

impl Screen {
    fn draw(&mut self, lines: &[String]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        // A terminal that does not say its width (0) gets 120 columns.
        let width = match terminal::size() {
            Ok((w, _)) if w > 0 => (w as usize).max(20),
            _ => 120,
        };
        if self.drawn > 0 {
            queue!(out, cursor::MoveToPreviousLine(self.drawn))?;
        } else {
            queue!(out, cursor::Hide)?;
        }
        for l in lines {
            let cut: String = l.chars().take(width - 1).collect();
            queue!(
                out,
                Print(cut),
                terminal::Clear(terminal::ClearType::UntilNewLine),
                Print("\n")
            )?;
        }
        queue!(out, terminal::Clear(terminal::ClearType::FromCursorDown))?;
        out.flush()?;
        self.drawn = lines.len() as u16;
        Ok(())
    }

    fn restore(&self) {
        let mut out = std::io::stdout();
        let _ = queue!(out, cursor::Show);
        let _ = out.flush();
    }
}

/// Runs `redmirror top` until Ctrl-C or `count` refreshes.
pub async fn run(config: &Config, url: Option<&str>, count: Option<u64>) -> Result<(), Error> {
    let mut source = match url {
        Some(u) => Source::Process(Process::new(u, config.admin_token.clone())?),
        None => {
            crate::refuse_embedded(config)?;
            Source::Direct {
                config: Box::new(config.clone()),
                dest: None,
            }
        }
    };
    let title = source.title();
    let tty = std::io::stdout().is_terminal();
    let mut screen = Screen { drawn: 0 };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut ticks = tokio::time::interval(REFRESH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut before = source.look().await?;
    let mut shown = 0u64;
    let result = loop {
        if count.is_some_and(|n| shown >= n) {
            break Ok(());
        }
        tokio::select! {
            _ = &mut ctrl_c => break Ok(()),
            _ = ticks.tick() => {}
        }
        let after = tokio::select! {
            _ = &mut ctrl_c => break Ok(()),
            s = source.look() => s?,
        };
        let dt = after.at.duration_since(before.at).as_secs_f64();
        let frame = match (&before.look, &after.look) {
            (Look::Process(b), Look::Process(a)) => process_frame(&title, b, a, dt, after.wall),
            (Look::Direct(b), Look::Direct(a)) => direct_frame(&title, b, a, dt, after.wall),
            _ => unreachable!("one source gives one kind of look"),
        };
        let drawn = if tty {
            screen.draw(&frame.lines)
        } else {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", frame.line).and_then(|_| out.flush())
        };
        match drawn {
            // The reader went away (`redmirror top | head -3`): done.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break Ok(()),
            Err(e) => break Err(Error::Terminal(e)),
            Ok(()) => {}
        }
        shown += 1;
        before = after;
    };
    if tty {
        screen.restore();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Readiness;

    fn scrape(text: &str) -> Scrape {
        Scrape {
            readiness: Ok(Readiness {
                ready: true,
                components: BTreeMap::from([("destination".into(), true), ("kafka".into(), true)]),
                reasons: BTreeMap::new(),
            }),
            metrics: Ok(Metrics::parse(text).unwrap()),
            status: AdminStatus::NoToken,
        }
    }

    #[test]
    fn rates_come_from_counter_deltas_and_latency_from_bucket_deltas() {
        let before = scrape(
            r#"redmirror_capture_events_total{op="upsert"} 100
redmirror_capture_events_total{op="delete"} 10
redmirror_apply_events_total{outcome="applied"} 90
redmirror_apply_events_total{outcome="skipped_stale"} 0
redmirror_end_to_end_seconds_bucket{le="0.001"} 50
redmirror_end_to_end_seconds_bucket{le="0.01"} 90
redmirror_end_to_end_seconds_bucket{le="+Inf"} 90
redmirror_end_to_end_seconds_count 90
redmirror_consumer_lag_messages{partition="0"} 4
"#,
        );
        let after = scrape(
            r#"redmirror_capture_events_total{op="upsert"} 300
redmirror_capture_events_total{op="delete"} 30
redmirror_apply_events_total{outcome="applied"} 290
redmirror_apply_events_total{outcome="skipped_stale"} 20
redmirror_end_to_end_seconds_bucket{le="0.001"} 50
redmirror_end_to_end_seconds_bucket{le="0.01"} 310
redmirror_end_to_end_seconds_bucket{le="+Inf"} 310
redmirror_end_to_end_seconds_count 310
redmirror_consumer_lag_messages{partition="0"} 1
"#,
        );
        let f = process_frame("process http://x", &before, &after, 2.0, SystemTime::UNIX_EPOCH);
        assert_eq!(
            f.line,
            "00:00:00Z  ready  capture 110/s  applied 110/s (applied 100, skipped_stale 10.0)  \
             e2e p50 5.5 ms p99 9.9 ms  lag 1  reconcile 0 passes",
            "{f:#?}"
        );
        assert!(
            f.lines
                .iter()
                .any(|l| l.starts_with("capture    110 events/s   upsert 100/s  delete 10.0/s")),
            "{f:#?}"
        );
        assert!(
            f.lines.iter().any(|l| l.contains("(220 events in the last 2.0s)")),
            "{f:#?}"
        );
    }

    #[test]
    fn an_idle_interval_has_no_latency_and_zero_rates() {
        let s = scrape(
            "redmirror_apply_events_total{outcome=\"applied\"} 5\nredmirror_end_to_end_seconds_bucket{le=\"+Inf\"} 5\n",
        );
        let f = process_frame("p", &s, &s, 1.0, SystemTime::UNIX_EPOCH);
        assert!(f.line.contains("applied 0.0/s  e2e —"), "{}", f.line);
    }

    #[test]
    fn a_reset_counter_counts_from_zero() {
        assert_eq!(rate(10.0, 30.0, 2.0), 10.0);
        assert_eq!(rate(100.0, 30.0, 2.0), 15.0);
        assert_eq!(rate(1.0, 2.0, 0.0), 0.0);
        assert_eq!(seconds(0.00042), "0.42 ms");
        assert_eq!(seconds(0.0123), "12.3 ms");
        assert_eq!(seconds(1.2), "1.20 s");
    }
}
