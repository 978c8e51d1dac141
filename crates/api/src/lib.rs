//! The bodies of redmirror's HTTP admin API, as types.
//!
//! The server builds them, and the console views (`redmirror status`,
//! `redmirror top`), the fault suite and the end-to-end tests read them back
//! with the same types, so a field renamed on one side fails to compile on
//! the other instead of reading as missing. Serde and nothing else: no I/O.
//!
//! # Layout
//!
//! - [`report`]: a reconcile pass's result (`last_reconcile`, a pass
//!   request's result, the report stored on the destination).
//! - [`status`]: `GET /v1/status`, `GET /readyz`, the `202` request ticket,
//!   an error body, `POST /v1/resume`.
//! - [`rules`]: the field rules in effect (names and methods, never the key).
//! - [`flows`]: `GET /v1/flows/{flowId}`, its history, the dead letters.
//!
//! Optional blocks added later (field rules, write limits) go in as
//! `Option` fields with `#[serde(default, skip_serializing_if =
//! "Option::is_none")]`, so older bodies still read.

pub mod flows;
pub mod report;
pub mod rules;
pub mod status;

pub use flows::{
    DeadLetter, DeadLetters, FieldValue, FlowHistory, FlowView, HistoryEvent, Redriven, Verdict, Watermark,
};
pub use report::{Barrier, Drift, DriftKind, FlowDrift, Report, MAX_LISTED, STATUS_FLOWS};
pub use rules::{MaskedFields, RulesSummary};
pub use status::{Accepted, ErrorBody, HoldState, LeaseStatus, Readiness, RequestEntry, Resumed, Status, WriteLimit};
