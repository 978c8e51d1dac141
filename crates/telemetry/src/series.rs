//! A short in-memory history of this process's own metrics, for the web
//! console's chart (`GET /v1/series`, admin token).
//!
//! Every [`INTERVAL`] a thread renders the Prometheus recorder, and records
//! one [`Point`]: the end-to-end latency's p50 and p99 over that interval
//! (from the change of `redmirror_end_to_end_seconds`' buckets, as PromQL's
//! `histogram_quantile` over a `rate` does) and the capture and apply rates.
//! The last [`KEEP`] points (30 minutes) are kept in a bounded ring; nothing
//! is written anywhere, so a restart starts a new series.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::PrometheusHandle;
use redmirror_promtext::{Histogram, Metrics};
use serde_json::{json, Value};

use crate::metrics::{ApplyOutcome, APPLY_EVENTS, CAPTURE_EVENTS, END_TO_END};

/// Time between two points.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Points kept: 30 minutes at one per [`INTERVAL`].
pub const KEEP: usize = 360;

/// One sample of the series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// When it was taken, Unix seconds.
    pub t: f64,
    /// End-to-end p50 over the interval, seconds; `None` when nothing was applied.
    pub p50: Option<f64>,
    /// End-to-end p99 over the interval, seconds; `None` when nothing was applied.
    pub p99: Option<f64>,
    /// Events published by capture per second over the interval.
    pub captured_per_second: f64,
    /// Events applied (written or deleted) per second over the interval.
    pub applied_per_second: f64,
}

/// The counters a point is the difference of.
#[derive(Debug, Clone)]
struct Totals {
    t: f64,
    end_to_end: Option<Histogram>,
    captured: f64,
    applied: f64,
}

impl Totals {
    fn read(t: f64, m: &Metrics) -> Totals {
        let applied = [ApplyOutcome::Applied, ApplyOutcome::Deleted]
            .iter()
            .filter_map(|o| m.get(APPLY_EVENTS, &[("outcome", o.label())]))
            .sum();
        Totals {
            t,
            end_to_end: m.histogram(END_TO_END),
            captured: m.sum(CAPTURE_EVENTS).unwrap_or(0.0),
            applied,
        }
    }
}

/// The ring of points and the totals of the previous sample.
#[derive(Debug, Default)]
pub struct Series {
    last: Option<Totals>,
    points: VecDeque<Point>,
}

impl Series {
    /// Folds in one scrape taken at `t` (Unix seconds); the first scrape
    /// only sets the base. A scrape that does not parse is ignored.
    pub fn observe(&mut self, t: f64, exposition: &str) {
        let Ok(m) = Metrics::parse(exposition) else {
            return;
        };
        let now = Totals::read(t, &m);
        if let Some(prev) = self.last.as_ref() {
            let dt = t - prev.t;
            if dt > 0.0 {
                let delta = match (&now.end_to_end, &prev.end_to_end) {
                    (Some(n), Some(p)) => Some(n.since(p)),
                    (Some(n), None) => Some(n.clone()),
                    _ => None,
                };
                let quantile = |q| delta.as_ref().and_then(|h| h.quantile(q)).filter(|v| v.is_finite());
                let rate = |n: f64, p: f64| ((n - p) / dt).max(0.0);
                self.points.push_back(Point {
                    t,
                    p50: quantile(0.5),
                    p99: quantile(0.99),
                    captured_per_second: rate(now.captured, prev.captured),
                    applied_per_second: rate(now.applied, prev.applied),
                });
                while self.points.len() > KEEP {
                    self.points.pop_front();
                }
            }
        }
        self.last = Some(now);
    }

    /// The points, oldest first.
    pub fn points(&self) -> impl Iterator<Item = &Point> {
        self.points.iter()
    }

    /// The body of `GET /v1/series`.
    pub fn to_json(&self) -> Value {
        let samples: Vec<Value> = self
            .points
            .iter()
            .map(|p| {
                json!({
                    "t": p.t,
                    "p50": p.p50,
                    "p99": p.p99,
                    "captured_per_second": p.captured_per_second,
                    "applied_per_second": p.applied_per_second,
                })
            })
            .collect();
        json!({
            "interval_seconds": INTERVAL.as_secs(),
            "keep": KEEP,
            "metric": END_TO_END,
            "samples": samples,
        })
    }
}

static SERIES: OnceLock<Mutex<Series>> = OnceLock::new();

fn global() -> &'static Mutex<Series> {
    SERIES.get_or_init(Default::default)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Starts the sampling thread (once per process; [`crate::metrics::install`]
/// calls it). A thread, not a task: like the recorder's upkeep it runs
/// before and outside any runtime, and a scrape is a short synchronous call.
pub fn start(handle: PrometheusHandle) {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("metrics-series".into())
            .spawn(move || loop {
                let text = handle.render();
                global().lock().expect("series lock").observe(unix_now(), &text);
                std::thread::sleep(INTERVAL);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "Cannot start the metrics series thread; the console's chart stays empty.");
        }
    });
}

/// The body of `GET /v1/series`: this process's series so far.
pub fn to_json() -> Value {
    global().lock().expect("series lock").to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(le_counts: &[(&str, u64)], count: u64, captured: u64, applied: u64) -> String {
        let mut s = String::new();
        for (le, n) in le_counts {
            s += &format!("{END_TO_END}_bucket{{le=\"{le}\"}} {n}\n");
        }
        s += &format!("{END_TO_END}_bucket{{le=\"+Inf\"}} {count}\n{END_TO_END}_sum 1\n{END_TO_END}_count {count}\n");
        s += &format!("{CAPTURE_EVENTS}{{op=\"upsert\"}} {captured}\n{CAPTURE_EVENTS}{{op=\"delete\"}} 0\n");
        s += &format!("{APPLY_EVENTS}{{outcome=\"applied\"}} {applied}\n{APPLY_EVENTS}{{outcome=\"deleted\"}} 0\n");
        s += &format!("{APPLY_EVENTS}{{outcome=\"skipped_stale\"}} 1000\n");
        s
    }

    #[test]
    fn points_are_quantiles_and_rates_of_each_interval() {
        let mut s = Series::default();
        s.observe(100.0, &exposition(&[("0.001", 0), ("0.01", 0), ("0.1", 0)], 0, 0, 0));
        assert_eq!(s.points().count(), 0, "the first scrape is the base");
        // 100 events in 5 s, all between 1 and 10 ms.
        s.observe(
            105.0,
            &exposition(&[("0.001", 0), ("0.01", 100), ("0.1", 100)], 100, 100, 100),
        );
        // Then 50, all between 10 and 100 ms: the point shows only those.
        s.observe(
            110.0,
            &exposition(&[("0.001", 0), ("0.01", 100), ("0.1", 150)], 150, 150, 150),
        );
        // Then nothing: no quantile, zero rates.
        s.observe(
            115.0,
            &exposition(&[("0.001", 0), ("0.01", 100), ("0.1", 150)], 150, 150, 150),
        );
        let p: Vec<Point> = s.points().copied().collect();
        assert_eq!(p.len(), 3);
        let p50 = p[0].p50.unwrap();
        assert!((0.001..=0.01).contains(&p50), "{p50}");
        assert_eq!((p[0].captured_per_second, p[0].applied_per_second), (20.0, 20.0));
        let p99 = p[1].p99.unwrap();
        assert!((0.01..=0.1).contains(&p99), "{p99}");
        assert_eq!(p[1].applied_per_second, 10.0);
        assert_eq!((p[2].p50, p[2].p99, p[2].applied_per_second), (None, None, 0.0));
        let body = s.to_json();
        assert_eq!(body["samples"].as_array().unwrap().len(), 3);
        assert_eq!(body["samples"][2]["p50"], Value::Null);
        assert_eq!(body["interval_seconds"], 5);
    }

    #[test]
    fn the_ring_is_bounded() {
        let mut s = Series::default();
        for i in 0..(KEEP + 50) {
            s.observe(
                i as f64 * 5.0,
                &exposition(&[("0.01", i as u64)], i as u64, 0, i as u64),
            );
        }
        assert_eq!(s.points().count(), KEEP);
        // KEEP + 50 scrapes make KEEP + 49 points: the first 49 are gone.
        assert_eq!(s.points().next().unwrap().t, 50.0 * 5.0);
    }

    #[test]
    fn garbage_is_ignored() {
        let mut s = Series::default();
        s.observe(1.0, "not { prometheus");
        s.observe(2.0, "");
        s.observe(3.0, "");
        assert_eq!(s.points().count(), 1);
        assert_eq!(s.points().next().unwrap().p50, None);
    }
}
