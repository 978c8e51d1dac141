//! A reconcile pass's result: drift by kind and per flow, counts, timings,
//! and the proof it carries ([`Report::verified_source_time_us`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most drifted flows listed in `GET /v1/status` (and in the report stored
/// on the destination); the counts are always complete.
pub const STATUS_FLOWS: usize = 100;

/// The kind of a difference, as in `redmirror_reconcile_drift_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// The source flow has no copy on the destination.
    Missing,
    /// A sync copy (or mirror-written index entry) whose source is gone or filtered.
    Extra,
    /// The copy differs from the source.
    Different,
}

impl DriftKind {
    /// Every kind.
    pub const ALL: [DriftKind; 3] = [DriftKind::Missing, DriftKind::Extra, DriftKind::Different];

    /// Label value.
    pub fn label(self) -> &'static str {
        match self {
            DriftKind::Missing => "missing",
            DriftKind::Extra => "extra",
            DriftKind::Different => "different",
        }
    }
}

/// One flow's drift: its kind and, for `Different`, the fields that differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// Kind of drift.
    pub kind: DriftKind,
    /// Names of differing fields (for `Different`); `<index>` when only the
    /// index entry is wrong.
    pub fields: Vec<String>,
}

/// Most per-flow entries kept in a report (the counts are always complete).
pub const MAX_LISTED: usize = 10_000;

/// One drifted flow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlowDrift {
    /// Flow id (text, or `base64:...`).
    pub flow_id: String,
    /// What differs.
    #[serde(flatten)]
    pub drift: Drift,
}

/// Whether a pass's barrier was reached before it compared (a report's
/// `barrier`: `"reached"`, `"timed_out"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Barrier {
    /// Apply had passed the end offsets noted when the pass started.
    Reached,
    /// The pass compared anyway after `REDMIRROR_RECONCILE_BARRIER_TIMEOUT`:
    /// events still in flight may show as drift and be repaired twice.
    TimedOut,
    /// Not recorded (an empty report, or a value this version does not know).
    #[default]
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Barrier::Reached => "reached",
            Barrier::TimedOut => "timed_out",
            Barrier::Unknown => "unknown",
        })
    }
}

/// A pass's result (also read back from the destination by `reconcile
/// --once`, so fields added later default when absent).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default)]
pub struct Report {
    /// Start, RFC 3339.
    pub started_at: String,
    /// Duration in seconds.
    pub duration_seconds: f64,
    /// True when nothing was published.
    pub dry_run: bool,
    /// Whether the barrier (apply caught up with the topic) was reached.
    pub barrier: Barrier,
    /// Flow keys scanned on the source.
    pub source_flows: u64,
    /// Flow keys scanned on the destination.
    pub dest_flows: u64,
    /// Flows compared per second.
    pub flows_per_second: f64,
    /// Drift counts by kind (`missing`, `extra`, `different`).
    pub drift: BTreeMap<String, u64>,
    /// Repair events published.
    pub repaired: u64,
    /// Native copies seen (never drift).
    pub native: u64,
    /// Seconds spent in each phase: `barrier`, then `source_scan`,
    /// `dest_scan` and `index_scan`, which run at the same time.
    pub phase_seconds: BTreeMap<String, f64>,
    /// Per-flow drift (at most [`MAX_LISTED`]).
    pub flows: Vec<FlowDrift>,
    /// True when more flows drifted than are listed.
    pub truncated: bool,
    /// The pass request (`redmirror:reconcile:requests`) this pass answered:
    /// a `reconcile --once` waits for a report with at least its number.
    /// 0 when no request was waiting.
    pub request: u64,
    /// How many hash slots a targeted pass covered (after a gap on some
    /// masters of a cluster source); absent for a pass over every flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<usize>,
    /// The source time (µs since the Unix epoch) up to which the
    /// destination is proven equal to the source, as of this pass's end:
    /// the start of the latest full pass after which no drift remained.
    /// Carried from pass to pass (a pass that proves nothing keeps the
    /// previous proof); absent before the first proof.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_source_time_us: Option<i64>,
    /// The source epoch of [`Report::verified_source_time_us`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_source_epoch: Option<u64>,
    /// Flows the proving pass compared on the source (with
    /// [`Report::verified_source_time_us`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_flows: Option<u64>,
    /// This pass's start on the source's clock (µs since the Unix epoch),
    /// in the order of the source epoch [`Report::source_epoch`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_started_us: Option<i64>,
    /// The source epoch the pass's start time belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_epoch: Option<u64>,
}

impl Report {
    /// The report as `GET /v1/status` shows it: at most [`STATUS_FLOWS`]
    /// flows listed, `truncated` when there were more.
    pub fn for_status(&self) -> Report {
        let mut r = self.clone();
        if r.flows.len() > STATUS_FLOWS {
            r.flows.truncate(STATUS_FLOWS);
            r.truncated = true;
        }
        r
    }

    /// [`Report::for_status`] as JSON (a request's result).
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::to_value(self.for_status()).unwrap_or_default()
    }

    /// Records one drifted flow (`flow_id` as text, or `base64:...`).
    pub fn add(&mut self, flow_id: String, drift: Drift) {
        *self.drift.entry(drift.kind.label().to_string()).or_default() += 1;
        if self.flows.len() < MAX_LISTED {
            self.flows.push(FlowDrift { flow_id, drift });
        } else {
            self.truncated = true;
        }
    }

    /// Adds a phase's counts, drift and timings to this report.
    pub fn absorb(&mut self, part: Report) {
        self.source_flows += part.source_flows;
        self.dest_flows += part.dest_flows;
        self.repaired += part.repaired;
        self.native += part.native;
        for (kind, n) in part.drift {
            *self.drift.entry(kind).or_default() += n;
        }
        self.phase_seconds.extend(part.phase_seconds);
        let room = MAX_LISTED.saturating_sub(self.flows.len());
        self.truncated |= part.truncated || part.flows.len() > room;
        self.flows.extend(part.flows.into_iter().take(room));
    }

    /// Keeps `earlier`'s proof when this report proves nothing newer (a
    /// pass that proves nothing leaves the last proof standing). Proofs
    /// are ordered by (source epoch, source time).
    pub fn carry_proof(&mut self, earlier: &Report) {
        let order = |r: &Report| {
            r.verified_source_time_us
                .map(|t| (r.verified_source_epoch.unwrap_or(0), t))
        };
        if order(earlier) > order(self) {
            self.verified_source_time_us = earlier.verified_source_time_us;
            self.verified_source_epoch = earlier.verified_source_epoch;
            self.verified_flows = earlier.verified_flows;
        }
    }

    /// Drift of one kind.
    pub fn count(&self, kind: DriftKind) -> u64 {
        self.drift.get(kind.label()).copied().unwrap_or(0)
    }

    /// Total drift.
    pub fn total_drift(&self) -> u64 {
        self.drift.values().sum()
    }

    /// A readable table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "reconcile {}: {} source flows, {} destination flows in {:.2}s ({:.0} flows/s), barrier {}\n",
            if self.dry_run { "dry run" } else { "pass" },
            self.source_flows,
            self.dest_flows,
            self.duration_seconds,
            self.flows_per_second,
            self.barrier,
        );
        s.push_str(&format!(
            "drift: missing {}, extra {}, different {}; native copies left alone: {}; repair events published: {}\n",
            self.count(DriftKind::Missing),
            self.count(DriftKind::Extra),
            self.count(DriftKind::Different),
            self.native,
            self.repaired
        ));
        if !self.flows.is_empty() {
            s.push_str(&format!("\n{:<40} {:<10} fields\n", "flow", "drift"));
            for f in &self.flows {
                s.push_str(&format!(
                    "{:<40} {:<10} {}\n",
                    f.flow_id,
                    f.drift.kind.label(),
                    f.drift.fields.join(", ")
                ));
            }
            if self.truncated {
                s.push_str(&format!("(only the first {MAX_LISTED} flows are listed)\n"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drift(kind: DriftKind) -> Drift {
        Drift {
            kind,
            fields: Vec::new(),
        }
    }

    #[test]
    fn a_stored_report_reads_back_and_older_ones_default_the_request() {
        let mut r = Report {
            request: 7,
            source_flows: 3,
            ..Report::default()
        };
        r.add("base64:Zv8=".into(), drift(DriftKind::Missing));
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.request, 7);
        assert_eq!(back.flows, r.flows);
        assert_eq!(back.count(DriftKind::Missing), 1);
        let old: Report = serde_json::from_str(r#"{"source_flows": 2, "drift": {"extra": 1}}"#).unwrap();
        assert_eq!((old.request, old.source_flows, old.count(DriftKind::Extra)), (0, 2, 1));
    }

    #[test]
    fn phases_add_up_and_the_listing_stays_bounded() {
        let mut total = Report::default();
        let mut source = Report {
            source_flows: 10,
            native: 2,
            repaired: 1,
            ..Report::default()
        };
        source.phase_seconds.insert("source_scan".into(), 1.5);
        for i in 0..MAX_LISTED - 1 {
            source.add(format!("s{i}"), drift(DriftKind::Different));
        }
        let mut dest = Report {
            dest_flows: 7,
            native: 1,
            repaired: 3,
            ..Report::default()
        };
        dest.phase_seconds.insert("dest_scan".into(), 0.5);
        dest.add("d1".into(), drift(DriftKind::Extra));
        dest.add("d2".into(), drift(DriftKind::Extra));
        total.absorb(source);
        assert!(!total.truncated);
        total.absorb(dest);
        assert_eq!((total.source_flows, total.dest_flows), (10, 7));
        assert_eq!((total.native, total.repaired), (3, 4));
        assert_eq!(total.count(DriftKind::Different), (MAX_LISTED - 1) as u64);
        assert_eq!(total.count(DriftKind::Extra), 2, "counts stay complete");
        assert_eq!(total.flows.len(), MAX_LISTED);
        assert_eq!(total.flows.last().map(|f| f.flow_id.as_str()), Some("d1"));
        assert!(total.truncated, "d2 was not listed");
        assert_eq!(total.phase_seconds.len(), 2);
    }

    #[test]
    fn the_barrier_reads_and_writes_as_the_strings_operators_see() {
        for (b, text) in [(Barrier::Reached, "reached"), (Barrier::TimedOut, "timed_out")] {
            assert_eq!(serde_json::to_value(b).unwrap(), serde_json::json!(text));
            assert_eq!(b.to_string(), text);
            let r: Report = serde_json::from_value(serde_json::json!({ "barrier": text })).unwrap();
            assert_eq!(r.barrier, b);
        }
        let absent: Report = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(absent.barrier, Barrier::Unknown);
        let other: Report = serde_json::from_value(serde_json::json!({ "barrier": "skipped" })).unwrap();
        assert_eq!(
            other.barrier,
            Barrier::Unknown,
            "a value from another version still reads"
        );
    }
}
