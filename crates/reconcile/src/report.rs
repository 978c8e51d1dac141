//! The result of a reconcile pass.

use std::collections::BTreeMap;

use redmirror_core::diff::{Drift, DriftKind};
use serde::Serialize;

/// Most per-flow entries kept in a report (the counts are always complete).
pub const MAX_LISTED: usize = 10_000;

/// One drifted flow.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FlowDrift {
    /// Flow id (text, or `base64:...`).
    pub flow_id: String,
    /// What differs.
    #[serde(flatten)]
    pub drift: Drift,
}

/// A pass's result.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// Start, RFC 3339.
    pub started_at: String,
    /// Duration in seconds.
    pub duration_seconds: f64,
    /// True when nothing was published.
    pub dry_run: bool,
    /// Whether the barrier (apply caught up with the topic) was reached.
    pub barrier: String,
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
    /// Seconds spent in each phase (barrier, source scan, destination scan, index scan).
    pub phase_seconds: BTreeMap<String, f64>,
    /// Per-flow drift (at most [`MAX_LISTED`]).
    pub flows: Vec<FlowDrift>,
    /// True when more flows drifted than are listed.
    pub truncated: bool,
}

impl Report {
    /// Records one drifted flow.
    pub fn add(&mut self, flow_id: &[u8], drift: Drift) {
        *self.drift.entry(drift.kind.label().to_string()).or_default() += 1;
        if self.flows.len() < MAX_LISTED {
            self.flows.push(FlowDrift {
                flow_id: redmirror_core::text::lossy(flow_id),
                drift,
            });
        } else {
            self.truncated = true;
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
