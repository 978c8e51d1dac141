//! The flow API (`GET /v1/flows/{flowId}`, `GET
//! /v1/flows/{flowId}/history`) and the dead letters (`GET /v1/dlq`, `POST
//! /v1/dlq/redrive`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where one flow stands (SPEC section 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The destination copy equals the source after the field rules.
    InStep,
    /// A copy exists and differs (`differences` names the fields).
    Different,
    /// The source has the flow, the destination has no copy.
    Missing,
    /// A copy that should not exist: the source lacks the flow or it is filtered.
    Extra,
    /// The destination's own flow (no `isSyncCopy`): never touched.
    Native,
    /// The flow's organisation is filtered and there is no copy.
    Filtered,
    /// Neither side has the flow.
    Absent,
}

impl Verdict {
    /// Every verdict.
    pub const ALL: [Verdict; 7] = [
        Verdict::InStep,
        Verdict::Different,
        Verdict::Missing,
        Verdict::Extra,
        Verdict::Native,
        Verdict::Filtered,
        Verdict::Absent,
    ];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::InStep => "in_step",
            Verdict::Different => "different",
            Verdict::Missing => "missing",
            Verdict::Extra => "extra",
            Verdict::Native => "native",
            Verdict::Filtered => "filtered",
            Verdict::Absent => "absent",
        }
    }
}

/// A field value: text when UTF-8, else `{"base64": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// A UTF-8 value.
    Text(String),
    /// Any other bytes, base64 (standard alphabet, padded).
    Binary {
        /// The bytes.
        base64: String,
    },
}

/// A hash as the flow API shows it: field name (text, or `base64:...`) → value.
pub type FlowHash = BTreeMap<String, FieldValue>;

/// The per-flow applied order on the destination (apply's watermark).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// Source epoch of the last applied event.
    pub source_epoch: u64,
    /// Its source time (RFC 3339, microseconds).
    pub source_time: String,
    /// Its source time in microseconds since the Unix epoch.
    pub source_time_us: i64,
}

/// `GET /v1/flows/{flowId}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowView {
    /// The flow id (text, or `base64:...`).
    pub flow_id: String,
    /// Where the flow stands.
    pub verdict: Verdict,
    /// The source hash after the field rules (null when the source has no
    /// such hash or the flow is filtered).
    pub source: Option<FlowHash>,
    /// The destination hash as it is (null when absent).
    pub destination: Option<FlowHash>,
    /// Fields whose values differ or that one side lacks (empty unless
    /// `different`; `<index>` when only the destination index entry is wrong).
    pub differences: Vec<String>,
    /// The last applied order for this flow (null when apply never wrote it).
    pub watermark: Option<Watermark>,
}

/// One event of `GET /v1/flows/{flowId}/history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// Partition of the change topic.
    pub partition: i32,
    /// Offset in it.
    pub offset: i64,
    /// Source time (RFC 3339, microseconds).
    pub source_time: String,
    /// `capture`, `reconcile` or `resync`.
    pub origin: String,
    /// `upsert` or `delete`.
    pub op: String,
    /// Field names carried (text, or `base64:...`).
    pub fields: Vec<String>,
    /// The source epoch.
    pub source_epoch: u64,
}

/// `GET /v1/flows/{flowId}/history?limit=N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FlowHistory {
    /// The flow's events, newest first (at most `limit`).
    pub events: Vec<HistoryEvent>,
    /// The partition the flow's events go to.
    pub partition: i32,
    /// True when the read stopped at its bound before finding `limit`
    /// events or the start of the partition: older events may exist.
    pub truncated: bool,
    /// The oldest offset read.
    pub scanned_from_offset: i64,
    /// Records read.
    pub scanned: u64,
}

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeadLetter {
    /// Offset in the dead-letter topic.
    pub dlq_offset: i64,
    /// Flow id (Kafka key), text or `base64:...`.
    pub flow_id: String,
    /// Reason code (`undecodable`, `wrong_type`, `too_large`, ...).
    pub reason_code: String,
    /// Reason, for people.
    pub reason: String,
    /// The change topic the event came from.
    pub topic: String,
    /// Its partition there.
    pub partition: i64,
    /// Its offset there.
    pub offset: i64,
    /// When it was dead-lettered (RFC 3339).
    pub time: String,
}

/// `GET /v1/dlq?limit=N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeadLetters {
    /// The dead-letter topic.
    pub topic: String,
    /// Dead letters, newest first (at most `limit`).
    pub dead_letters: Vec<DeadLetter>,
    /// How many the topic holds.
    pub total: u64,
}

/// `POST /v1/dlq/redrive?flow=ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Redriven {
    /// Dead letters re-submitted to the change topic.
    pub redriven: u64,
    /// The flow asked for (null: every dead letter).
    pub flow_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn verdicts_and_values_have_their_wire_names() {
        for v in Verdict::ALL {
            assert_eq!(serde_json::to_value(v).unwrap(), json!(v.as_str()));
        }
        let text = FieldValue::Text("a".into());
        let bin = FieldValue::Binary { base64: "/w==".into() };
        assert_eq!(serde_json::to_value(&text).unwrap(), json!("a"));
        assert_eq!(serde_json::to_value(&bin).unwrap(), json!({ "base64": "/w==" }));
        assert_eq!(
            serde_json::from_value::<FieldValue>(json!({ "base64": "/w==" })).unwrap(),
            bin
        );
    }
}
