//! redmirror's terminal views: `redmirror status`, `redmirror top`,
//! `redmirror check` and the demo's screen.
//!
//! They read what an operator's own tools read: a running process's
//! `GET /v1/status` (bearer token), `GET /readyz` and `GET /metrics`, or,
//! without a process to ask, Kafka and the destination directly with the
//! configured settings. The binary only parses the flags and calls
//! [`status()`] or [`top()`].
//!
//! # Layout
//! - [`prom`]: the Prometheus text format parser (`redmirror-promtext`,
//!   shared with the test kit); samples by name and labels, histograms and
//!   their quantiles.
//! - [`process`]: the HTTP calls to a running process.
//! - [`offsets`]: the change topic's, the apply group's and the
//!   dead-letter topic's offsets, read from Kafka with a deadline.
//! - [`direct`]: the mirror's state on the destination (leases, source
//!   epoch, hold, last reconcile report, gaps, live apply instances) and
//!   the offsets, read together.
//! - [`status`](mod@status): the one-screen answer, its problems (each
//!   says what to do next) and its JSON.
//! - [`top`](mod@top): the live view.
//! - [`check`]: `redmirror check`, the pre-flight findings before a
//!   deploy (servers, notifications, permissions, topics).
//! - [`demo`]: the demo's screen: both sides of each sample flow, live
//!   counts from the metrics, the narration.

pub mod check;
pub mod demo;
pub mod direct;
pub mod offsets;
pub mod process;
pub mod status;
pub mod top;

pub use redmirror_promtext as prom;

use redmirror_config::settings::{Setting, DEST_URL, KAFKA_BROKERS};
use redmirror_config::Config;

/// What `status` and `top` can fail with. Everything found unreachable or
/// wrong is not an error but a problem in the status; these are the cases
/// where there is no status to show.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad usage or configuration (exit 2); names the flag or setting.
    #[error("{0}")]
    Usage(String),
    /// Writing the view failed.
    #[error("writing to the terminal")]
    Terminal(#[source] std::io::Error),
}

impl Error {
    /// True for bad usage or configuration (exit 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Usage(_))
    }
}

/// `redmirror status` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Ask a running process at this address (its REDMIRROR_HTTP_ADDR, for example
    /// http://127.0.0.1:9464), with REDMIRROR_ADMIN_TOKEN as the token. Without it: straight
    /// from Kafka and the destination, with the configured settings.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Print one JSON object (with `healthy` and `problems`) for scripts.
    #[arg(long)]
    pub json: bool,
    /// Lag on one partition (messages) above which status says it needs attention.
    #[arg(long, value_name = "MESSAGES", default_value_t = 1000)]
    pub max_lag: i64,
}

/// `redmirror top` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// Watch a running process at this address (its REDMIRROR_HTTP_ADDR), with
    /// REDMIRROR_ADMIN_TOKEN as the token when set. Without it: straight from Kafka and the
    /// destination (no latency percentiles).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Stop after this many refreshes (default: until Ctrl-C).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

impl StatusArgs {
    /// The settings this command cannot do without.
    pub fn needs(&self) -> &'static [&'static Setting] {
        needs(self.url.is_some())
    }
}

impl TopArgs {
    /// The settings this command cannot do without.
    pub fn needs(&self) -> &'static [&'static Setting] {
        needs(self.url.is_some())
    }
}

fn needs(url: bool) -> &'static [&'static Setting] {
    if url {
        &[]
    } else {
        &[&DEST_URL, &KAFKA_BROKERS]
    }
}

/// `redmirror status`: prints the status; `Ok(true)` when healthy (exit
/// 0), `Ok(false)` when something needs attention (exit 1).
pub async fn status(config: &Config, args: &StatusArgs) -> Result<bool, Error> {
    status::run(
        config,
        args.url.as_deref(),
        args.json,
        status::Thresholds { max_lag: args.max_lag },
    )
    .await
}

/// `redmirror top`: the live view until Ctrl-C or `--count` refreshes.
pub async fn top(config: &Config, args: &TopArgs) -> Result<(), Error> {
    top::run(config, args.url.as_deref(), args.count).await
}

/// The embedded broker lives inside the process that runs it: nothing else
/// can read it, so the direct mode refuses and names the command that can.
fn refuse_embedded(config: &Config) -> Result<(), Error> {
    if config.embedded_broker() {
        return Err(Error::Usage(format!(
            "REDMIRROR_KAFKA_BROKERS=embedded: the broker runs inside the redmirror process and cannot be read from \
             here; ask that process instead: --url http://{}",
            config.http_addr
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::prom::Metrics;

    #[test]
    fn the_exporters_own_text_parses() {
        let text = redmirror_telemetry::metrics::install().render();
        let m = Metrics::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(m.get(redmirror_telemetry::metrics::BUILD_INFO, &[]), Some(1.0));
        for outcome in redmirror_telemetry::metrics::APPLY_OUTCOMES {
            let v = m.get(redmirror_telemetry::metrics::APPLY_EVENTS, &[("outcome", outcome)]);
            assert!(v.is_some(), "{outcome}: {text}");
        }
    }
}
