//! Metric names (the public contract of SPEC section 6), descriptions and
//! the Prometheus recorder.
//!
//! Contract: every name and label value below is public (dashboards and
//! alerts match them); change one only through an issue.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Keyspace notifications received by capture for flow keys.
pub const CAPTURE_NOTIFICATIONS: &str = "redmirror_capture_notifications_total";
/// Notifications merged into an already pending read (coalescing).
pub const CAPTURE_COALESCED: &str = "redmirror_capture_coalesced_total";
/// Events published by capture, `op` = upsert|delete.
pub const CAPTURE_EVENTS: &str = "redmirror_capture_events_total";
/// Possible gaps in the notification stream: a subscription lost and
/// re-made, notifications dropped, or notifications back after missing.
pub const CAPTURE_GAPS: &str = "redmirror_capture_gaps_total";
/// FLUSHDB, FLUSHALL and SWAPDB calls seen on the source, `command` = flushdb|flushall|swapdb.
pub const CAPTURE_SOURCE_FLUSHES: &str = "redmirror_capture_source_flushes_total";
/// 1 while the source lacks the keyspace notification classes capture needs.
pub const CAPTURE_NOTIFICATIONS_MISSING: &str = "redmirror_capture_notifications_missing";
/// Flows capture skipped, `reason` = too_large|not_a_hash.
pub const CAPTURE_SKIPPED: &str = "redmirror_capture_skipped_total";
/// Distinct flows waiting to be read by capture.
pub const CAPTURE_PENDING: &str = "redmirror_capture_pending_flows";
/// Messages waiting in the producer's queue.
pub const PRODUCER_QUEUE: &str = "redmirror_producer_queue_messages";
/// Publish attempts that failed and were retried, by `reason` ([`PublishRetry`]).
pub const PUBLISH_RETRIES: &str = "redmirror_publish_retries_total";
/// Events applied, `outcome` = applied|deleted|skipped_native|skipped_filtered|skipped_stale|skipped_rules|dead_lettered.
pub const APPLY_EVENTS: &str = "redmirror_apply_events_total";
/// Destination round trips retried after a transient error.
pub const APPLY_RETRIES: &str = "redmirror_apply_retries_total";
/// Events read from Kafka and not yet written.
pub const APPLY_IN_FLIGHT: &str = "redmirror_apply_in_flight_events";
/// Apply consumers closed and replaced because they were stuck.
pub const APPLY_CONSUMER_RESTARTS: &str = "redmirror_apply_consumer_restarts_total";
/// Source time to applied on destination.
pub const END_TO_END: &str = "redmirror_end_to_end_seconds";
/// Messages between the committed position and the end of each partition.
pub const CONSUMER_LAG: &str = "redmirror_consumer_lag_messages";
/// Reconcile passes completed.
pub const RECONCILE_RUNS: &str = "redmirror_reconcile_runs_total";
/// Drift found, `kind` = missing|extra|different.
pub const RECONCILE_DRIFT: &str = "redmirror_reconcile_drift_total";
/// Duration of reconcile passes.
pub const RECONCILE_DURATION: &str = "redmirror_reconcile_duration_seconds";
/// Watermarks of absent flows removed by the reconciler.
pub const WATERMARKS_PRUNED: &str = "redmirror_watermarks_pruned_total";
/// Events dead-lettered.
pub const DLQ_EVENTS: &str = "redmirror_dlq_events_total";
/// Build information, `version`.
pub const BUILD_INFO: &str = "redmirror_build_info";
/// 1 when a component is ready, `component`.
pub const READY: &str = "redmirror_ready";
/// 1 while this process holds a lease, `lease`.
pub const LEASE_HELD: &str = "redmirror_lease_held";
/// The current source epoch (see `redmirror_core::Order`).
pub const SOURCE_EPOCH: &str = "redmirror_source_epoch";
/// 1 while a rewind holds the mirror (gauge).
pub const HELD: &str = "redmirror_held";
/// The source time (seconds since the Unix epoch) up to which the
/// destination is proven equal to the source; 0 before the first proof.
pub const VERIFIED_SOURCE_TIME: &str = "redmirror_verified_source_time_seconds";
/// Tombstones without an epoch header (a tool's or an operator's delete) applied.
pub const APPLY_EXTERNAL_TOMBSTONES: &str = "redmirror_apply_external_tombstones_total";
/// Admin API calls, `route` (the route pattern) and `status` (HTTP code).
pub const ADMIN_REQUESTS: &str = "redmirror_admin_requests_total";

/// Declares the values of a metric label as an enum: `ALL` (every value,
/// in order), `LABELS` (the same, as label strings) and `label()`. Metrics
/// are registered at zero from `ALL`, so a value exists in one place.
macro_rules! label_values {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $label:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &[$name] = &[$($name::$variant,)*];
            /// Every value's label, in the order of `ALL`.
            pub const LABELS: &[&str] = &[$($label,)*];

            /// The label value.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }
        }
    };
}

label_values! {
    /// `outcome` of `redmirror_apply_events_total`.
    ApplyOutcome {
        /// The sync copy was written.
        Applied => "applied",
        /// The sync copy was removed.
        Deleted => "deleted",
        /// A native staging flow was left alone.
        SkippedNative => "skipped_native",
        /// A flow of a filtered organisation (its copy, if any, removed).
        SkippedFiltered => "skipped_filtered",
        /// Older than what the destination holds.
        SkippedStale => "skipped_stale",
        /// Made under other field rules than the current ones: never written.
        SkippedRules => "skipped_rules",
        /// Sent to the dead-letter topic.
        DeadLettered => "dead_lettered",
    }
}

label_values! {
    /// `op` of `redmirror_capture_events_total`.
    CaptureOp {
        /// The flow exists: its state was published.
        Upsert => "upsert",
        /// The flow is gone: a delete was published.
        Delete => "delete",
    }
}

label_values! {
    /// `reason` of `redmirror_capture_skipped_total`.
    SkipReason {
        /// Over `REDMIRROR_MAX_FLOW_BYTES` or what Kafka takes.
        TooLarge => "too_large",
        /// The flow key holds another type than a hash.
        NotAHash => "not_a_hash",
    }
}

label_values! {
    /// `command` of `redmirror_capture_source_flushes_total`.
    SourceFlush {
        /// `FLUSHDB`.
        FlushDb => "flushdb",
        /// `FLUSHALL`.
        FlushAll => "flushall",
        /// `SWAPDB`.
        SwapDb => "swapdb",
    }
}

label_values! {
    /// `reason` of `redmirror_publish_retries_total`.
    PublishRetry {
        /// The producer's queue was full: the send waits and is tried again.
        QueueFull => "queue_full",
        /// The broker did not acknowledge a flow's event: the flow is read
        /// and published again.
        DeliveryFailed => "delivery_failed",
    }
}

/// Outcomes of `redmirror_apply_events_total`.
pub const APPLY_OUTCOMES: &[&str] = ApplyOutcome::LABELS;

/// Buckets for `redmirror_end_to_end_seconds`: half a millisecond to five minutes.
pub const END_TO_END_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Buckets for `redmirror_reconcile_duration_seconds`: 10 ms to an hour.
pub const RECONCILE_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often recorded histogram samples are folded into their buckets.
///
/// The recorder keeps every raw sample until upkeep or a scrape drains it
/// (`tests/upkeep.rs` measures the bytes a sample costs). Without upkeep, a
/// process nobody scraped would grow with every applied event for ever, and
/// one scraped once a minute would hold a minute of samples.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Installs the Prometheus recorder (once per process; later calls return
/// the same handle), describes every metric and registers each at 0, and
/// starts the thread that runs the recorder's upkeep every
/// [`UPKEEP_INTERVAL`].
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(END_TO_END.into()), END_TO_END_BUCKETS)
                .expect("valid buckets")
                .set_buckets_for_metric(Matcher::Full(RECONCILE_DURATION.into()), RECONCILE_BUCKETS)
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            // A thread, not a task: install runs before (and outside) any
            // runtime, and the upkeep is a short synchronous drain.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                })
                .expect("spawn the metrics upkeep thread");
            // A recorder installed earlier (tests embedding several roles) is fine.
            let _ = metrics::set_global_recorder(recorder);
            describe_all();
            register_all();
            crate::series::start(handle.clone());
            handle
        })
        .clone()
}

fn describe_all() {
    describe_counter!(CAPTURE_NOTIFICATIONS, "Keyspace notifications received for flow keys.");
    describe_counter!(CAPTURE_COALESCED, "Notifications merged into a read already pending.");
    describe_counter!(CAPTURE_EVENTS, "State events published by capture, by op.");
    describe_counter!(
        CAPTURE_GAPS,
        "Possible gaps in the notification stream (subscription lost and re-made, notifications dropped or \
         missing for a while); each triggers a reconcile pass."
    );
    describe_gauge!(
        CAPTURE_NOTIFICATIONS_MISSING,
        "1 while the source lacks the keyspace notification classes capture needs."
    );
    describe_counter!(
        CAPTURE_SOURCE_FLUSHES,
        "FLUSHDB, FLUSHALL and SWAPDB calls seen on the source (no per-key notification); each triggers a reconcile pass."
    );
    describe_counter!(CAPTURE_SKIPPED, "Flows capture did not publish, by reason.");
    describe_gauge!(CAPTURE_PENDING, "Distinct changed flows waiting to be read.");
    describe_gauge!(PRODUCER_QUEUE, "Messages in the Kafka producer's queue.");
    describe_counter!(
        PUBLISH_RETRIES,
        "Publishes retried, by reason: queue_full (the producer queue was full) or delivery_failed (the flow is read and published again)."
    );
    describe_counter!(APPLY_EVENTS, "Events handled by apply, by outcome.");
    describe_counter!(
        APPLY_RETRIES,
        "Destination round trips retried after a transient error."
    );
    describe_gauge!(APPLY_IN_FLIGHT, "Events read from Kafka and not yet written.");
    describe_counter!(
        APPLY_CONSUMER_RESTARTS,
        "Kafka consumers apply closed and replaced because they received nothing while events waited unread."
    );
    describe_histogram!(END_TO_END, Unit::Seconds, "Source time to applied on the destination.");
    describe_gauge!(
        CONSUMER_LAG,
        "Messages between the consumer position and the partition end."
    );
    describe_counter!(RECONCILE_RUNS, "Reconcile passes completed.");
    describe_counter!(RECONCILE_DRIFT, "Drift found by reconcile passes, by kind.");
    describe_histogram!(RECONCILE_DURATION, Unit::Seconds, "Duration of reconcile passes.");
    describe_counter!(
        WATERMARKS_PRUNED,
        "Watermarks of flows absent from the destination for longer than the change topic's delete.retention.ms, \
         removed after reconcile passes."
    );
    describe_counter!(DLQ_EVENTS, "Events sent to the dead-letter topic.");
    describe_gauge!(BUILD_INFO, "Build information.");
    describe_gauge!(READY, "1 when a component's connection is up.");
    describe_gauge!(LEASE_HELD, "1 while this process holds the lease.");
    describe_gauge!(
        SOURCE_EPOCH,
        "The current source epoch: moves forward on a change of source server or a source clock step back."
    );
    describe_counter!(
        APPLY_EXTERNAL_TOMBSTONES,
        "Kafka tombstones without a redmirror-source-epoch header (written by a tool or an operator) that apply \
         wrote as deletes of their flows, whatever was applied to the flow before."
    );
    describe_counter!(
        ADMIN_REQUESTS,
        "Admin API calls, by route pattern and HTTP status (401, 404 and 429 included)."
    );
    describe_gauge!(
        HELD,
        "1 while a rewind holds the mirror at a point in time (until `redmirror resume`), else 0."
    );
    describe_gauge!(
        VERIFIED_SOURCE_TIME,
        Unit::Seconds,
        "The source time up to which the destination is proven equal to the source: the start of the latest \
         full reconcile pass after which no drift remained. 0 before the first proof."
    );
}

fn register_all() {
    metrics::counter!(CAPTURE_NOTIFICATIONS).absolute(0);
    metrics::counter!(CAPTURE_COALESCED).absolute(0);
    for op in CaptureOp::LABELS {
        metrics::counter!(CAPTURE_EVENTS, "op" => *op).absolute(0);
    }
    metrics::counter!(CAPTURE_GAPS).absolute(0);
    for command in SourceFlush::LABELS {
        metrics::counter!(CAPTURE_SOURCE_FLUSHES, "command" => *command).absolute(0);
    }
    metrics::gauge!(CAPTURE_NOTIFICATIONS_MISSING).set(0.0);
    for reason in SkipReason::LABELS {
        metrics::counter!(CAPTURE_SKIPPED, "reason" => *reason).absolute(0);
    }
    metrics::gauge!(CAPTURE_PENDING).set(0.0);
    metrics::gauge!(PRODUCER_QUEUE).set(0.0);
    for reason in PublishRetry::LABELS {
        metrics::counter!(PUBLISH_RETRIES, "reason" => *reason).absolute(0);
    }
    for outcome in ApplyOutcome::LABELS {
        metrics::counter!(APPLY_EVENTS, "outcome" => *outcome).absolute(0);
    }
    metrics::counter!(APPLY_RETRIES).absolute(0);
    metrics::gauge!(APPLY_IN_FLIGHT).set(0.0);
    metrics::counter!(APPLY_CONSUMER_RESTARTS).absolute(0);
    let _ = metrics::histogram!(END_TO_END);
    metrics::gauge!(CONSUMER_LAG, "partition" => "0").set(0.0);
    metrics::counter!(RECONCILE_RUNS).absolute(0);
    for kind in redmirror_core::diff::DriftKind::ALL {
        metrics::counter!(RECONCILE_DRIFT, "kind" => kind.label()).absolute(0);
    }
    let _ = metrics::histogram!(RECONCILE_DURATION);
    metrics::counter!(WATERMARKS_PRUNED).absolute(0);
    metrics::counter!(DLQ_EVENTS).absolute(0);
    metrics::gauge!(SOURCE_EPOCH).set(0.0);
    metrics::gauge!(HELD).set(0.0);
    metrics::gauge!(VERIFIED_SOURCE_TIME).set(0.0);
    metrics::counter!(APPLY_EXTERNAL_TOMBSTONES).absolute(0);
    for (route, ok) in crate::http::ADMIN_ROUTES {
        for status in [*ok, "401"] {
            metrics::counter!(ADMIN_REQUESTS, "route" => *route, "status" => status).absolute(0);
        }
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Counts one apply outcome.
pub fn apply_outcome(outcome: ApplyOutcome, n: u64) {
    metrics::counter!(APPLY_EVENTS, "outcome" => outcome.label()).increment(n);
}

#[cfg(test)]
mod tests {
    /// `docs/metrics.md` names every metric this file defines and every
    /// label value of its label enums, so the reference cannot fall behind
    /// the code.
    #[test]
    fn docs_metrics_md_lists_every_metric_and_label_value() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md"))
            .expect("read docs/metrics.md");
        let code = include_str!("metrics.rs");
        let mut missing = Vec::new();
        for line in code.lines() {
            let line = line.trim();
            // `pub const NAME: &str = "redmirror_...";` and `Variant => "label",`
            let metric = line.starts_with("pub const ") && line.contains(": &str = \"redmirror_");
            let label = line.contains(" => \"") && line.ends_with("\",") && !line.starts_with("//");
            let quoted = if metric || label { line.split('"').nth(1) } else { None };
            if let Some(name) = quoted {
                if !docs.contains(&format!("`{name}`")) {
                    missing.push(name.to_string());
                }
            }
        }
        assert!(
            missing.is_empty(),
            "docs/metrics.md does not name (in backticks): {missing:?}"
        );
    }
}
