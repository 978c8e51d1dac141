//! `GET /v1/status`, `GET /readyz`, the `202` ticket of an accepted
//! request, an admin error, and `POST /v1/resume`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::report::Report;

/// `GET /v1/status`: what this process runs and what it knows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Status {
    /// `run`, `capture`, `apply` or `reconcile`.
    pub role: String,
    /// The binary's version.
    pub version: String,
    /// Whether `/readyz` answers 200.
    pub ready: bool,
    /// Readiness per component.
    pub components: BTreeMap<String, bool>,
    /// Apply's consumer lag per partition (messages).
    pub lag: BTreeMap<String, i64>,
    /// The current source epoch (null in a process without a source).
    pub source_epoch: Option<u64>,
    /// The change topic.
    pub topic: String,
    /// The dead-letter topic.
    pub dlq_topic: String,
    /// Apply's consumer group.
    pub group_id: String,
    /// A rewind's hold (`held`, `held_at`, `held_since`).
    #[serde(flatten)]
    pub hold: HoldState,
    /// The leases this process takes part in, by name (`capture`, `reconcile`).
    pub lease: BTreeMap<String, LeaseStatus>,
    /// The last reconcile pass (this process's, or the one stored on the
    /// destination by any reconciler); null when none is known.
    pub last_reconcile: Option<Report>,
    /// The source time (RFC 3339) up to which the destination is proven
    /// equal to the source; null before the first proof.
    pub verified_as_of: Option<String>,
    /// The field rules in effect (SPEC section 8): names and methods, never the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<crate::RulesSummary>,
    /// Apply's destination write limit (SPEC section 9); null in a process
    /// without apply.
    #[serde(default)]
    pub write_limit: Option<WriteLimit>,
    /// This process's admin requests, newest first.
    #[serde(default)]
    pub requests: Vec<RequestEntry>,
}

/// The destination write limit as `/v1/status` shows it (`write_limit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteLimit {
    /// Events per second per process; 0 = no limit.
    pub apply_max_rate: u64,
    /// True while writes are held back by the limit (a wait in the last second).
    pub throttled: bool,
}

/// A rewind's hold as `/v1/status` shows it (flattened into it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct HoldState {
    /// True while a rewind holds the mirror.
    pub held: bool,
    /// The time the destination was rewound to (RFC 3339).
    pub held_at: Option<String>,
    /// When the hold began (RFC 3339).
    pub held_since: Option<String>,
}

/// One lease as `/v1/status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct LeaseStatus {
    /// Whether this process holds it.
    pub held_by_me: bool,
    /// The holder (null when nobody holds it or it could not be read in time).
    pub holder: Option<String>,
    /// This process's holder name.
    pub me: String,
}

/// One admin request in `/v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RequestEntry {
    /// Request id (as in the `202` answer).
    pub id: String,
    /// `reconcile` or `resync`.
    pub action: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// When it was accepted (RFC 3339).
    pub requested_at: String,
    /// When the work started.
    pub started_at: Option<String>,
    /// When it finished.
    pub finished_at: Option<String>,
    /// The flow of a resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<String>,
    /// The result once `done` (a pass's report, a resync's flow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The error once `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Readiness {
    /// True when every component is up.
    pub ready: bool,
    /// Readiness per component.
    pub components: BTreeMap<String, bool>,
    /// Why components are down, for those that said.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<String, String>,
}

/// The `202` answer to `POST /v1/reconcile` and `POST /v1/resync/{flowId}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Accepted {
    /// Request id, listed in `/v1/status` `requests`.
    pub id: String,
    /// `reconcile` or `resync`.
    pub action: String,
    /// `queued` or `running`.
    pub state: String,
    /// Where to follow it (`/v1/status`).
    pub status: String,
}

/// An admin call's error body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ErrorBody {
    /// What went wrong (no secrets).
    pub error: String,
}

/// `POST /v1/resume` (and `redmirror resume`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Resumed {
    /// True when a hold was ended.
    pub resumed: bool,
    /// The time the ended hold had rewound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_at: Option<String>,
    /// When the ended hold began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since: Option<String>,
    /// Why nothing was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_reads_and_writes_the_wire_shape() {
        let wire = json!({
            "role": "run", "version": "0.1.0", "ready": true,
            "components": { "destination": true },
            "lag": { "0": 3 },
            "source_epoch": 2, "topic": "t", "dlq_topic": "t.dlq", "group_id": "g",
            "held": false, "held_at": null, "held_since": null,
            "lease": { "reconcile": { "held_by_me": true, "holder": "h1", "me": "h1" } },
            "last_reconcile": null,
            "verified_as_of": null,
            "write_limit": { "apply_max_rate": 100, "throttled": false },
            "rules": { "excluded_fields": ["flowConfigHistory"], "included_fields": [],
                "masked_fields": { "email": "email" }, "fingerprint": "0123456789abcdef" },
            "requests": [{ "id": "a-1", "action": "resync", "state": "done",
                "requested_at": "x", "started_at": "y", "finished_at": "z",
                "flow_id": "f1", "result": { "resynced": "f1" } }],
        });
        let s: Status = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(s.lag["0"], 3);
        assert_eq!(s.lease["reconcile"].holder.as_deref(), Some("h1"));
        assert_eq!(s.write_limit.map(|w| w.apply_max_rate), Some(100));
        assert_eq!(
            s.rules.as_ref().map(|r| r.masked_fields["email"].as_str()),
            Some("email")
        );
        assert_eq!(serde_json::to_value(&s).unwrap(), wire);
        // A process without apply says `"write_limit": null`.
        let none = serde_json::to_value(Status::default()).unwrap();
        assert!(
            none["write_limit"].is_null() && none.get("write_limit").is_some(),
            "{none}"
        );
    }

    #[test]
    fn optional_parts_are_left_out_as_before() {
        let r = Readiness {
            ready: true,
            ..Readiness::default()
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({ "ready": true, "components": {} })
        );
        let not = Resumed {
            resumed: false,
            message: Some("the mirror was not held".into()),
            ..Resumed::default()
        };
        assert_eq!(
            serde_json::to_value(&not).unwrap(),
            json!({ "resumed": false, "message": "the mirror was not held" })
        );
    }
}
