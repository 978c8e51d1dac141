//! `redmirror demo`'s parts: its screen (what it shows and how it reaches
//! the terminal), its local Redis servers ([`local`]) and its sample steps
//! ([`script`]). The binary starts the roles, runs the steps and hands
//! each state to [`Output::show`].

pub mod local;
pub mod script;

use std::collections::BTreeMap;
use std::io::Write;

use crate::prom::Metrics;

/// A flow as read from Redis: field to value, binary safe.
pub type Hash = BTreeMap<Vec<u8>, Vec<u8>>;

/// Everything the demo shows.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DemoScreen {
    /// The source's URL.
    pub source: String,
    /// The destination's URL.
    pub dest: String,
    /// What broker runs.
    pub broker: String,
    /// Where the metrics are served.
    pub metrics: String,
    /// The product's log file.
    pub log: String,
    /// The line to paste to write to the source by hand.
    pub try_it: String,
    /// The flows shown, one row each.
    pub flows: Vec<FlowRow>,
    /// Live counts.
    pub counts: Counts,
    /// The steps taken so far, numbered.
    pub narration: Vec<String>,
    /// Every scripted step has run.
    pub done: bool,
}

/// One flow on both sides.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlowRow {
    /// Flow id.
    pub id: String,
    /// Its state on the source.
    pub source: String,
    /// Its state on the destination.
    pub dest: String,
    /// What the mirror did with it.
    pub verdict: String,
}

impl FlowRow {
    fn line(&self) -> String {
        format!(
            "{:<10} {:<26} {:<30} {}",
            cut(&self.id, 10),
            cut(&self.source, 26),
            cut(&self.dest, 30),
            self.verdict
        )
    }
}

/// The flow's state on each side, and what the mirror did with it.
pub fn flow_row(id: &str, src: &Hash, dst: &Hash, native_untouched: bool) -> FlowRow {
    let field = |h: &Hash, k: &str| h.get(k.as_bytes()).map(|v| String::from_utf8_lossy(v).into_owned());
    let describe = |h: &Hash| match field(h, "name") {
        Some(n) => format!("name={n:?} ({})", fields(h.len())),
        None => fields(h.len()),
    };
    let sync_copy = field(dst, "isSyncCopy").as_deref() == Some("true");
    let filtered = field(src, "clerkOrganizationId").as_deref() == Some("org_hello");
    let source = if src.is_empty() {
        "absent".to_string()
    } else {
        describe(src)
    };
    let dest = if dst.is_empty() {
        "absent".to_string()
    } else if sync_copy {
        format!("copy: {}", describe(dst))
    } else {
        format!("native: {}", describe(dst))
    };
    let verdict = if !dst.is_empty() && !sync_copy {
        if native_untouched {
            "native staging flow: untouched".to_string()
        } else {
            "native staging flow (changed on staging)".to_string()
        }
    } else if src.is_empty() && dst.is_empty() {
        "absent on both".to_string()
    } else if src.is_empty() {
        "copy about to be removed".to_string()
    } else if filtered {
        if dst.is_empty() {
            "filtered organisation: never copied".to_string()
        } else {
            "filtered organisation: copy about to be removed".to_string()
        }
    } else if dst.is_empty() {
        "waiting to be mirrored".to_string()
    } else {
        let mut want = src.clone();
        let excluded = want.remove(&b"flowConfigHistory"[..]).is_some();
        want.insert(b"isSyncCopy".to_vec(), b"true".to_vec());
        match (&want == dst, excluded) {
            (true, true) => "mirrored (flowConfigHistory excluded)".to_string(),
            (true, false) => "mirrored".to_string(),
            (false, _) => "catching up".to_string(),
        }
    };
    FlowRow {
        id: id.to_string(),
        source,
        dest,
        verdict,
    }
}

/// Live counts, from the process's own metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    /// Events capture published.
    pub captured: f64,
    /// Upserts apply wrote.
    pub applied: f64,
    /// Deletes apply wrote.
    pub deleted: f64,
    /// Events skipped: the destination copy is native.
    pub skipped_native: f64,
    /// Events skipped: filtered organisation.
    pub skipped_filtered: f64,
    /// Events skipped: older than what was applied.
    pub stale: f64,
    /// Events dead-lettered.
    pub dead_lettered: f64,
    /// End-to-end latency percentiles (seconds, interpolated within their
    /// histogram bucket as PromQL does); `None` before the first event.
    pub p50: Option<f64>,
    /// See `p50`.
    pub p99: Option<f64>,
    /// Messages apply is behind, all partitions.
    pub lag: f64,
}

impl Counts {
    /// Reads the counts from the process's own Prometheus text.
    pub fn from_metrics(text: &str) -> Counts {
        let m = Metrics::parse(text).unwrap_or_default();
        let outcome = |o: &str| m.get("redmirror_apply_events_total", &[("outcome", o)]).unwrap_or(0.0);
        let latency = m.histogram("redmirror_end_to_end_seconds");
        Counts {
            captured: m.sum("redmirror_capture_events_total").unwrap_or(0.0),
            applied: outcome("applied"),
            deleted: outcome("deleted"),
            skipped_native: outcome("skipped_native"),
            skipped_filtered: outcome("skipped_filtered"),
            stale: outcome("skipped_stale"),
            dead_lettered: outcome("dead_lettered"),
            p50: latency.as_ref().and_then(|h| h.quantile(0.5)),
            p99: latency.as_ref().and_then(|h| h.quantile(0.99)),
            lag: m.sum("redmirror_consumer_lag_messages").unwrap_or(0.0),
        }
    }

    fn lines(&self) -> [String; 2] {
        let ms = |v: Option<f64>| match v {
            None => "-".to_string(),
            Some(s) if s.is_infinite() => "over the largest bucket".to_string(),
            Some(s) => format!("{:.1} ms", s * 1000.0),
        };
        [
            format!(
                "captured {}   applied {}   deleted {}   skipped: native {}, filtered {}, stale {}   dead-lettered {}",
                self.captured,
                self.applied,
                self.deleted,
                self.skipped_native,
                self.skipped_filtered,
                self.stale,
                self.dead_lettered
            ),
            format!(
                "end-to-end p50 {}   p99 {}   lag {} messages",
                ms(self.p50),
                ms(self.p99),
                self.lag
            ),
        ]
    }
}

fn fields(n: usize) -> String {
    if n == 1 {
        "1 field".to_string()
    } else {
        format!("{n} fields")
    }
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

impl DemoScreen {
    /// The whole screen, line by line.
    pub fn frame(&self) -> Vec<String> {
        let mut l = vec![
            "redmirror demo: production → Kafka → staging, live. Ctrl-C stops it and removes what it started."
                .to_string(),
            format!("  source       {}", self.source),
            format!("  destination  {}", self.dest),
            format!("  broker       {}", self.broker),
            format!("  metrics      {}", self.metrics),
            format!("  log          {}", self.log),
            String::new(),
            format!(
                "{:<10} {:<26} {:<30} {}",
                "flow", "source", "destination", "what the mirror did"
            ),
        ];
        l.extend(self.flows.iter().map(FlowRow::line));
        l.push(String::new());
        l.extend(self.counts.lines());
        l.push(String::new());
        l.push("steps".to_string());
        l.extend(self.narration.iter().map(|n| format!("  {n}")));
        if self.done {
            l.push(String::new());
            l.push("All sample steps done. Write to the source yourself and watch it here:".to_string());
            l.push(format!("  {}", self.try_it));
        }
        l
    }
}

/// Where the screen goes: redrawn in place on a terminal (only when it
/// changed), or an append-only log of steps and changes.
pub struct Output {
    terminal: bool,
    last: Vec<String>,
    narrated: usize,
    rows: Vec<FlowRow>,
    counts_shown: Option<[String; 2]>,
}

impl Output {
    /// Redrawn in place when `terminal`, else an append-only log.
    pub fn new(terminal: bool) -> Self {
        Output {
            terminal,
            last: Vec::new(),
            narrated: 0,
            rows: Vec::new(),
            counts_shown: None,
        }
    }

    /// Shows the screen if anything on it changed.
    pub fn show(&mut self, screen: &DemoScreen) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.terminal {
            let frame = screen.frame();
            if frame != self.last {
                use crossterm::{cursor, queue, style::Print, terminal};
                // Home, clear to the end, then the frame (\r\n: the
                // terminal may not translate \n).
                queue!(
                    out,
                    cursor::MoveTo(0, 0),
                    terminal::Clear(terminal::ClearType::FromCursorDown),
                    Print(format!("{}\r\n", frame.join("\r\n")))
                )?;
                out.flush()?;
                self.last = frame;
            }
            return Ok(());
        }
        if self.last.is_empty() {
            self.last = screen.frame()[..6].to_vec();
            writeln!(out, "{}", self.last.join("\n"))?;
        }
        for n in &screen.narration[self.narrated..] {
            writeln!(out, "step {n}")?;
        }
        self.narrated = screen.narration.len();
        for row in &screen.flows {
            if !self.rows.contains(row) {
                writeln!(
                    out,
                    "  {}: source {}; destination {}; {}",
                    row.id, row.source, row.dest, row.verdict
                )?;
            }
        }
        self.rows = screen.flows.clone();
        out.flush()
    }

    /// The final state (not a terminal: the table and the counts once).
    pub fn finish(&mut self, screen: &DemoScreen) -> std::io::Result<()> {
        if self.terminal {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        let counts = screen.counts.lines();
        if self.counts_shown.as_ref() != Some(&counts) {
            writeln!(out, "\nfinal state:")?;
            for row in &screen.flows {
                writeln!(out, "  {}", row.line())?;
            }
            writeln!(out, "{}\n{}", counts[0], counts[1])?;
            self.counts_shown = Some(counts);
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Hash {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn rows_say_what_the_mirror_did() {
        let src = h(&[("name", "A"), ("flowConfigHistory", "x")]);
        let copy = h(&[("name", "A"), ("isSyncCopy", "true")]);
        assert_eq!(
            flow_row("f", &src, &copy, false).verdict,
            "mirrored (flowConfigHistory excluded)"
        );
        assert_eq!(
            flow_row("f", &src, &Hash::new(), false).verdict,
            "waiting to be mirrored"
        );
        let filtered = h(&[("name", "D"), ("clerkOrganizationId", "org_hello")]);
        assert_eq!(
            flow_row("d", &filtered, &Hash::new(), false).verdict,
            "filtered organisation: never copied"
        );
        let native = h(&[("name", "staging")]);
        assert_eq!(
            flow_row("n", &src, &native, true).verdict,
            "native staging flow: untouched"
        );
        assert_eq!(
            flow_row("g", &Hash::new(), &Hash::new(), false).verdict,
            "absent on both"
        );
    }

    #[test]
    fn counts_and_percentiles_come_from_the_metrics_text() {
        let text = "\
# TYPE redmirror_apply_events_total counter
redmirror_apply_events_total{outcome=\"applied\"} 5
redmirror_apply_events_total{outcome=\"skipped_native\"} 1
redmirror_capture_events_total{op=\"upsert\"} 6
redmirror_capture_events_total{op=\"delete\"} 2
redmirror_consumer_lag_messages{partition=\"0\"} 3
redmirror_end_to_end_seconds_bucket{le=\"0.005\"} 50
redmirror_end_to_end_seconds_bucket{le=\"0.01\"} 99
redmirror_end_to_end_seconds_bucket{le=\"0.05\"} 100
redmirror_end_to_end_seconds_bucket{le=\"+Inf\"} 100
";
        let c = Counts::from_metrics(text);
        assert_eq!((c.captured, c.applied, c.skipped_native, c.lag), (8.0, 5.0, 1.0, 3.0));
        assert_eq!(c.p50, Some(0.005));
        assert_eq!(c.p99, Some(0.01));
        assert_eq!(Counts::from_metrics("").p50, None);
    }
}
