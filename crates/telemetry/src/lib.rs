//! Observability for every redmirror process.
//!
//! # Layout
//! - [`metrics`](mod@metrics): every metric name and description in one place, the
//!   Prometheus recorder (installed once) and start-up registration so each
//!   name is present at 0 before its first event.
//! - [`health`]: named readiness checks (source, destination, Kafka, leases).
//! - [`http`]: the HTTP server: `/metrics`, `/healthz`, `/readyz` and the
//!   token-guarded admin API of SPEC section 5, and the web console
//!   (`redmirror-web`) at `/`.
//! - [`series`]: the last 30 minutes of end-to-end p50/p99 and capture
//!   and apply rates, sampled in memory for the web console's chart.
//! - [`audit`]: the gate every admin call passes through: token check, one
//!   audit log line, `redmirror_admin_requests_total`, wrong-token blocking.
//! - [`requests`]: admin requests, answered at once and run in the
//!   background; their states and results for `GET /v1/status`.
//! - [`events`]: internal events, each logged and counted from the same
//!   fields, rate-limited on hot paths.
//! - [`errors`]: an error and its causes, printed once where people read
//!   them.
//! - [`wait`]: waiting for a server that is down, with backoff, saying
//!   what is waited for and why.
//! - [`logging`]: tracing set-up, text or JSON lines.
//! - [`progress`]: a progress line on a terminal for long one-shot commands.

pub mod audit;
pub mod errors;
pub mod events;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod progress;
pub mod requests;
pub mod series;
pub mod wait;

pub use health::{Component, Health};
