//! One progress line on a terminal for long one-shot commands (replay,
//! `reconcile --once`): done / total, rate, ETA, redrawn in place on
//! stderr at most four times a second.

use std::io::IsTerminal;
use std::time::Instant;

/// A progress line (silent when stderr is not a terminal or when off).
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    label: &'static str,
    unit: &'static str,
    started: Instant,
    last: Option<Instant>,
    total: u64,
}

impl Progress {
    /// A line `"{label}: {done} / ~{total} {unit}, {rate}/s, ETA {eta}s"`;
    /// `total` is an estimate.
    pub fn new(label: &'static str, unit: &'static str, total: u64, on: bool) -> Self {
        Progress {
            enabled: on && std::io::stderr().is_terminal(),
            label,
            unit,
            started: Instant::now(),
            last: None,
            total,
        }
    }

    /// Redraws the line (at most every 250 ms unless `last`, which ends it).
    pub fn tick(&mut self, done: u64, last: bool) {
        if !self.enabled || (!last && self.last.is_some_and(|t| t.elapsed().as_millis() < 250)) {
            return;
        }
        self.last = Some(Instant::now());
        eprint!(
            "\r{}   ",
            line(
                self.label,
                self.unit,
                done,
                self.total,
                self.started.elapsed().as_secs_f64()
            )
        );
        if last {
            eprintln!();
        }
    }
}

/// The text of a progress line.
pub fn line(label: &str, unit: &str, done: u64, total: u64, secs: f64) -> String {
    let rate = done as f64 / secs.max(1e-3);
    let total = total.max(done);
    let eta = if rate > 0.0 { (total - done) as f64 / rate } else { 0.0 };
    format!("{label}: {done} / ~{total} {unit}, {rate:.0}/s, ETA {eta:.0}s")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_line_has_done_total_rate_and_eta() {
        assert_eq!(
            super::line("replay", "events", 500, 2000, 2.0),
            "replay: 500 / ~2000 events, 250/s, ETA 6s"
        );
        // A total that was an underestimate never shows less than done.
        assert_eq!(
            super::line("reconcile", "flows", 30, 10, 1.0),
            "reconcile: 30 / ~30 flows, 30/s, ETA 0s"
        );
    }
}
