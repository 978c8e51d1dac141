//! `redmirror status`: the on-call's one-screen answer, from a running
//! process ([`crate::process`]) or straight from Kafka and the destination
//! ([`crate::direct`]). Each finding that needs attention becomes one
//! problem line that says what to do next; `--json` prints the same as one
//! object with `healthy` and `problems`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use redmirror_config::Config;
use redmirror_core::LeaseName;
use redmirror_telemetry::metrics as m;
use redmirror_telemetry::Component as HealthComponent;
use serde::Serialize;
use serde_json::Value;

use crate::direct::{DestError, Direct};
use crate::process::{AdminStatus, Process, Scrape};

/// Where the status was read.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Origin {
    /// From a running process's HTTP listener.
    Process {
        /// Its base URL.
        url: String,
    },
    /// Straight from Kafka and the destination.
    Direct {
        /// The destination (URL without secrets).
        destination: String,
        /// The bootstrap servers.
        kafka: String,
        /// The change topic.
        topic: String,
        /// The apply consumer group.
        group: String,
    },
}

/// A component's readiness.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Component {
    /// Up or not.
    pub ready: bool,
    /// Why it is down, when known.
    pub reason: Option<String>,
}

/// Who holds a lease.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LeaseView {
    /// The holder's id (`host-pid-random`); `None`: nobody.
    pub holder: Option<String>,
    /// True when the process asked holds it (`None` when read directly).
    pub this_process: Option<bool>,
}

/// The last reconcile pass.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReconcileView {
    /// When it began (RFC 3339).
    pub started_at: String,
    /// How long ago it began, in seconds (when `started_at` parses).
    pub ago_seconds: Option<f64>,
    /// How long it took.
    pub duration_seconds: f64,
    /// A dry run (nothing repaired).
    pub dry_run: bool,
    /// Whether the barrier was reached.
    pub barrier: redmirror_reconcile::Barrier,
    /// Drift found, by kind.
    pub drift: BTreeMap<String, u64>,
    /// Repair events published.
    pub repaired: u64,
    /// Flows scanned on the source.
    pub source_flows: u64,
    /// Flows scanned on the destination.
    pub dest_flows: u64,
    /// The source time (RFC 3339) up to which the destination is proven
    /// equal to the source (`None`: no proof yet).
    pub verified_as_of: Option<String>,
    /// How long ago that source time was, in seconds.
    pub verified_ago_seconds: Option<f64>,
    /// Flows the proving pass compared on the source.
    pub verified_flows: Option<u64>,
}

fn seconds_ago(t: SystemTime) -> f64 {
    SystemTime::now().duration_since(t).unwrap_or_default().as_secs_f64()
}

impl ReconcileView {
    /// The view of a report as stored (`null` or not a report: `None`).
    pub fn from_json(v: &Value) -> Option<ReconcileView> {
        if !v.is_object() {
            return None;
        }
        let r: redmirror_reconcile::Report = serde_json::from_value(v.clone()).ok()?;
        Some(ReconcileView::from_report(r))
    }

    /// The view of a report.
    pub fn from_report(r: redmirror_reconcile::Report) -> ReconcileView {
        let ago = humantime::parse_rfc3339_weak(&r.started_at).ok().map(seconds_ago);
        let verified = r.verified_source_time_us.map(|us| {
            let t = SystemTime::UNIX_EPOCH + Duration::from_micros(us.max(0) as u64);
            (redmirror_core::text::rfc3339_us(us), seconds_ago(t))
        });
        ReconcileView {
            verified_as_of: verified.as_ref().map(|(t, _)| t.clone()),
            verified_ago_seconds: verified.map(|(_, a)| a),
            verified_flows: r.verified_flows,
            started_at: r.started_at,
            ago_seconds: ago,
            duration_seconds: r.duration_seconds,
            dry_run: r.dry_run,
            barrier: r.barrier,
            drift: r.drift,
            repaired: r.repaired,
            source_flows: r.source_flows,
            dest_flows: r.dest_flows,
        }
    }

    /// "staging matched production as of 10:04:31, 3 min ago, 1,203,455
    /// flows", or that nothing is proven yet.
    pub fn verified_sentence(&self) -> String {
        match (&self.verified_as_of, self.verified_ago_seconds) {
            (Some(t), Some(a)) => {
                let clock = t.get(11..19).unwrap_or(t);
                let flows = self
                    .verified_flows
                    .map(|n| format!(", {} flows", thousands(n)))
                    .unwrap_or_default();
                format!("staging matched production as of {clock} UTC, {}{flows} ({t})", ago(a))
            }
            _ => "staging is not proven to match production yet: no pass has ended without drift".into(),
        }
    }

    /// "12s ago: no drift, 0 repaired, barrier reached, 12 source flows in 0.04s".
    pub fn summary(&self) -> String {
        let drift: u64 = self.drift.values().sum();
        let drift = if drift == 0 {
            "no drift".to_string()
        } else {
            let kinds: Vec<String> = self
                .drift
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            format!("drift {}", kinds.join(", "))
        };
        format!(
            "{}{}: {drift}, {} repaired, barrier {}, {} source / {} destination flows in {:.2}s",
            self.ago_seconds.map_or_else(|| self.started_at.clone(), ago),
            if self.dry_run { " (dry run)" } else { "" },
            self.repaired,
            self.barrier,
            self.source_flows,
            self.dest_flows,
            self.duration_seconds,
        )
    }
}

/// Dead letters.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DeadLetters {
    /// The dead-letter topic.
    pub topic: Option<String>,
    /// Messages in it (`None`: not read).
    pub waiting: Option<u64>,
    /// `redmirror_dlq_events_total` of the process asked, since it started.
    pub by_process: Option<u64>,
}

/// Everything `redmirror status` shows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    /// No problem found.
    pub healthy: bool,
    /// What needs attention, one line each, saying what to do.
    pub problems: Vec<String>,
    /// What could not be shown and why, and other remarks (no action needed).
    pub notes: Vec<String>,
    /// Where this was read.
    pub origin: Origin,
    /// The role of the process asked (`run`, `capture`, ...).
    pub role: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// Readiness of each component.
    pub components: BTreeMap<String, Component>,
    /// Lease name → holder.
    pub leases: BTreeMap<String, LeaseView>,
    /// The source epoch.
    pub source_epoch: Option<u64>,
    /// A rewind holds the mirror (`None`: unknown).
    pub held: Option<bool>,
    /// The point in time it holds the mirror at.
    pub held_at: Option<String>,
    /// Since when.
    pub held_since: Option<String>,
    /// Lag (messages) per partition.
    pub lag: BTreeMap<i32, i64>,
    /// The last reconcile pass.
    pub last_reconcile: Option<ReconcileView>,
    /// Capture gaps (process: since it started; direct: the shared counter).
    pub capture_gaps: Option<u64>,
    /// Dead letters.
    pub dead_letters: DeadLetters,
    /// Apply instances alive (direct only).
    pub apply_instances: Option<usize>,
    /// The field rules in effect (SPEC section 8): the process's, from
    /// `/v1/status`; read directly, this configuration's.
    pub rules: Option<redmirror_core::RulesSummary>,
    /// Apply's write limit (events per second, 0 = none) and whether it
    /// holds writes back now (process only, with apply).
    pub write_limit: Option<redmirror_api::WriteLimit>,
}

/// What status judges by.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Lag on one partition above which it is a problem.
    pub max_lag: i64,
}

impl Status {
    fn new(origin: Origin) -> Status {
        Status {
            healthy: true,
            problems: Vec::new(),
            notes: Vec::new(),
            origin,
            role: None,
            version: None,
            components: BTreeMap::new(),
            leases: BTreeMap::new(),
            source_epoch: None,
            held: None,
            held_at: None,
            held_since: None,
            lag: BTreeMap::new(),
            last_reconcile: None,
            capture_gaps: None,
            dead_letters: DeadLetters::default(),
            apply_instances: None,
            rules: None,
            write_limit: None,
        }
    }

    fn problem(&mut self, p: impl Into<String>) {
        self.problems.push(p.into());
        self.healthy = false;
    }

    /// The status of a process from one [`Scrape`]; `dlq` is the
    /// dead-letter topic and its message count (or why it could not be
    /// counted) when Kafka is configured here.
    pub fn of_process(
        url: &str,
        scrape: &Scrape,
        dlq: Option<(String, Result<Option<u64>, String>)>,
        t: Thresholds,
    ) -> Status {
        let mut s = Status::new(Origin::Process { url: url.to_string() });
        if let Some(e) = scrape.unreachable() {
            s.problem(format!(
                "process unreachable: {e} — is it running, and is this its REDMIRROR_HTTP_ADDR?"
            ));
            return s;
        }
        let status = match &scrape.status {
            AdminStatus::Ok(v) => Some(v),
            AdminStatus::NoToken => {
                s.notes.push(
                    "REDMIRROR_ADMIN_TOKEN is not set here: the role, the lease holders and the last reconcile \
                     come from GET /v1/status, which needs the process's token"
                        .into(),
                );
                None
            }
            AdminStatus::Off => {
                s.notes.push(
                    "the process has no admin API (its REDMIRROR_ADMIN_TOKEN is unset): the role, the lease \
                     holders and the last reconcile are not shown"
                        .into(),
                );
                None
            }
            AdminStatus::Unavailable(msg) => {
                s.notes.push(format!("GET /v1/status: {msg}"));
                None
            }
            AdminStatus::Failed(e) => {
                s.notes.push(format!("GET /v1/status: {e}"));
                None
            }
        };
        let metrics = scrape.metrics.as_ref().ok();
        if let Err(e) = &scrape.metrics {
            s.notes.push(format!("GET /metrics: {e}"));
        }
        let metric = |name: &str| metrics.and_then(|mm| mm.get(name, &[]));

        // Readiness: /readyz (with reasons), else /v1/status's components.
        match &scrape.readiness {
            Ok(r) => {
                for (c, up) in &r.components {
                    s.components.insert(
                        c.clone(),
                        Component {
                            ready: *up,
                            reason: r.reasons.get(c).cloned(),
                        },
                    );
                }
            }
            Err(e) => {
                s.notes.push(format!("GET /readyz: {e}"));
                if let Some(v) = status {
                    for (c, up) in &v.components {
                        s.components.insert(
                            c.clone(),
                            Component {
                                ready: *up,
                                reason: None,
                            },
                        );
                    }
                }
            }
        }

        if let Some(v) = status {
            s.role = Some(v.role.clone());
            s.version = Some(v.version.clone());
            s.source_epoch = v.source_epoch;
            s.held = Some(v.hold.held);
            s.held_at = v.hold.held_at.clone();
            s.held_since = v.hold.held_since.clone();
            s.lag = v.lag.iter().filter_map(|(p, n)| Some((p.parse().ok()?, *n))).collect();
            for (name, l) in &v.lease {
                s.leases.insert(
                    name.clone(),
                    LeaseView {
                        holder: l.holder.clone(),
                        this_process: Some(l.held_by_me),
                    },
                );
            }
            s.last_reconcile = v.last_reconcile.clone().map(ReconcileView::from_report);
            s.rules = v.rules.clone();
            s.write_limit = v.write_limit;
        } else if let Some(mm) = metrics {
            s.held = metric(m::HELD).map(|h| h > 0.0);
            s.lag = mm
                .by_label(m::CONSUMER_LAG, "partition")
                .into_iter()
                .filter_map(|(p, n)| Some((p.parse().ok()?, n as i64)))
                .collect();
            for (name, held) in mm.by_label(m::LEASE_HELD, "lease") {
                if held > 0.0 {
                    s.leases.insert(
                        name,
                        LeaseView {
                            holder: None,
                            this_process: Some(true),
                        },
                    );
                }
            }
        }
        s.capture_gaps = metric(m::CAPTURE_GAPS).map(|g| g as u64);
        s.dead_letters.by_process = metric(m::DLQ_EVENTS).map(|g| g as u64);
        if let Some((topic, waiting)) = dlq {
            s.dead_letters.topic = Some(topic);
            match waiting {
                Ok(n) => s.dead_letters.waiting = n,
                Err(e) => s.notes.push(format!("dead letters not counted: {e}")),
            }
        }

        s.judge_readiness();
        // The leases live on the destination: while the process cannot
        // reach it, their holders are unknown, not absent.
        let dest_down = s
            .components
            .get(HealthComponent::Destination.name())
            .is_some_and(|c| !c.ready);
        if status.is_some() && dest_down && !s.leases.is_empty() {
            s.notes.push(
                "lease holders are unknown while the process cannot reach the destination, which keeps them".into(),
            );
            s.leases.clear();
        } else if status.is_some() {
            // A lease the process holds by its own account (its
            // redmirror_lease_held gauge) whose holder /v1/status could not
            // read: the destination did not answer within its 1 s.
            let own = metrics
                .map(|mm| mm.by_label(m::LEASE_HELD, "lease"))
                .unwrap_or_default();
            let unread: Vec<String> = s
                .leases
                .iter_mut()
                .filter(|(name, l)| l.holder.is_none() && own.get(*name).is_some_and(|v| *v > 0.0))
                .map(|(name, l)| {
                    l.this_process = Some(true);
                    name.clone()
                })
                .collect();
            if !unread.is_empty() {
                s.problem(format!(
                    "destination: the process could not read the {} lease holder{} from it within 1 s: the \
                     destination is slow or unreachable — check REDMIRROR_DEST_URL and that the server is up",
                    unread.join(" and "),
                    plural(unread.len() as u64)
                ));
            }
            s.judge_leases();
        }
        s.judge_lag(t, "");
        s.judge_dead_letters();
        s
    }

    /// The status read straight from Kafka and the destination.
    pub fn of_direct(config: &Config, d: &Direct, t: Thresholds) -> Status {
        let dest_url = config.dest.as_ref().map(|d| d.redacted()).unwrap_or_default();
        let brokers = config
            .kafka_brokers
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let mut s = Status::new(Origin::Direct {
            destination: dest_url.clone(),
            kafka: brokers.clone(),
            topic: config.topic.clone(),
            group: config.group_id.clone(),
        });
        s.rules = Some(config.rules.fields.summary());
        match &d.dest {
            Ok(st) => {
                s.components.insert(
                    "destination".into(),
                    Component {
                        ready: true,
                        reason: None,
                    },
                );
                for (name, holder) in &st.leases {
                    s.leases.insert(
                        name.clone(),
                        LeaseView {
                            holder: holder.clone(),
                            this_process: None,
                        },
                    );
                }
                s.source_epoch = st.epoch;
                match &st.hold {
                    Ok(h) => {
                        s.held = Some(h.is_some());
                        s.held_at = h.map(|h| redmirror_state::hold::rfc3339(h.at_us));
                        s.held_since = h.map(|h| redmirror_state::hold::rfc3339(h.since_us));
                    }
                    Err(e) => s.problem(format!("the hold cannot be read: {e}")),
                }
                s.last_reconcile = st.report.as_ref().and_then(ReconcileView::from_json);
                s.capture_gaps = Some(st.gaps);
                s.apply_instances = Some(st.apply_instances);
            }
            Err(e) => {
                s.components.insert(
                    "destination".into(),
                    Component {
                        ready: false,
                        reason: Some(e.to_string()),
                    },
                );
                s.problem(match e {
                    DestError::Unreachable(_) => {
                        format!("destination: {e} — check REDMIRROR_DEST_URL ({dest_url}) and that the server is up")
                    }
                    DestError::Read(_) => format!(
                        "destination: {e} — check that the user in REDMIRROR_DEST_URL ({dest_url}) has the \
                         permissions in docs/operations.md (Least-privilege Redis users)"
                    ),
                });
            }
        }
        match &d.kafka {
            Ok(o) => {
                s.components.insert(
                    "kafka".into(),
                    Component {
                        ready: true,
                        reason: None,
                    },
                );
                if o.topic.is_none() {
                    s.problem(format!(
                        "topic {} does not exist on {brokers} — check REDMIRROR_TOPIC; `redmirror run` or `redmirror \
                         capture` creates it",
                        config.topic
                    ));
                }
                s.lag = o.lag();
                s.dead_letters.topic = Some(config.dlq_topic());
                s.dead_letters.waiting = o.dead_letters();
            }
            Err(e) => {
                s.components.insert(
                    "kafka".into(),
                    Component {
                        ready: false,
                        reason: Some(e.clone()),
                    },
                );
                s.problem(format!(
                    "kafka: unreachable ({e}) — check REDMIRROR_KAFKA_BROKERS ({brokers}) and that the brokers are up"
                ));
            }
        }
        if d.dest.is_ok() {
            s.judge_leases();
            if s.apply_instances == Some(0) {
                s.problem(
                    "no apply instance is running (none announced itself on the destination in the last 3 s): \
                     changes reach Kafka but not the destination — start `redmirror apply` or `redmirror run`",
                );
            }
            s.judge_reconcile_age(config.reconcile_interval);
        }
        if d.kafka.is_ok() {
            s.judge_lag(t, &format!(" of group {}", config.group_id));
            s.judge_dead_letters();
        }
        s
    }

    fn judge_readiness(&mut self) {
        let down: Vec<(String, Option<String>)> = self
            .components
            .iter()
            .filter(|(_, c)| !c.ready)
            .map(|(n, c)| (n.clone(), c.reason.clone()))
            .collect();
        for (name, reason) in down {
            let why = reason.unwrap_or_else(|| match HealthComponent::from_name(&name) {
                Some(c @ (HealthComponent::Destination | HealthComponent::Source)) => format!(
                    "the process cannot reach it — check {} and that the server is up",
                    c.setting()
                ),
                Some(c @ HealthComponent::Kafka) => format!(
                    "the process cannot reach the brokers — check {} and that they are up",
                    c.setting()
                ),
                _ => "down (see the process's log)".into(),
            });
            self.problem(format!("not ready: {name} — {why}"));
        }
    }

    fn judge_leases(&mut self) {
        let free: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, l)| l.holder.is_none() && l.this_process != Some(true))
            .map(|(n, _)| n.clone())
            .collect();
        for name in free {
            let what = match LeaseName::from_name(&name) {
                Some(LeaseName::Capture) => {
                    "so no capture is running and changes on the source are not published — start `redmirror capture` \
                     or `redmirror run`"
                }
                Some(LeaseName::Reconcile) => {
                    "so no reconciler is running and nothing repairs drift — start `redmirror reconcile` or \
                     `redmirror run`"
                }
                _ => "— see the log of the processes that take it",
            };
            self.problem(format!("nobody holds the {name} lease, {what}"));
        }
    }

    fn judge_lag(&mut self, t: Thresholds, group: &str) {
        if self.held == Some(true) {
            return;
        }
        let over: Vec<(i32, i64)> = self
            .lag
            .iter()
            .filter(|(_, n)| **n > t.max_lag)
            .map(|(p, n)| (*p, *n))
            .collect();
        for (p, n) in over {
            self.problem(format!(
                "lag {n} on partition {p}{group} (over {}): apply is behind — watch it with `redmirror top`; check \
                 apply's readiness and the destination, or scale apply up to the partition count",
                t.max_lag
            ));
        }
    }

    fn judge_dead_letters(&mut self) {
        let topic = self
            .dead_letters
            .topic
            .clone()
            .unwrap_or_else(|| "the dead-letter topic".into());
        match (self.dead_letters.waiting, self.dead_letters.by_process) {
            (Some(n), _) if n > 0 => self.problem(format!(
                "{n} dead letter{} waiting in {topic}: `redmirror dlq list` shows why; fix the cause, then `redmirror dlq \
                 redrive`",
                plural(n)
            )),
            (None, Some(n)) if n > 0 => self.problem(format!(
                "{n} event{} dead-lettered by this process since it started: `redmirror dlq list` shows why; fix the \
                 cause, then `redmirror dlq redrive`",
                plural(n)
            )),
            _ => {}
        }
    }

    fn judge_reconcile_age(&mut self, interval: Duration) {
        if self.held == Some(true) {
            return;
        }
        let Some(a) = self.last_reconcile.as_ref().and_then(|r| r.ago_seconds) else {
            return;
        };
        if a > 2.0 * interval.as_secs_f64() + 60.0 {
            let p = format!(
                "the last reconcile pass began {}, more than twice REDMIRROR_RECONCILE_INTERVAL ({}): is a \
                 reconciler running? `redmirror reconcile --once` runs a pass now",
                ago(a),
                humantime::format_duration(interval)
            );
            self.problem(p);
        }
    }

    /// The screen: what needs attention first, then the details.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let origin = match &self.origin {
            Origin::Process { url } => {
                let who = match (&self.role, &self.version) {
                    (Some(r), Some(v)) => format!(" (role {r}, version {v})"),
                    (Some(r), None) => format!(" (role {r})"),
                    _ => String::new(),
                };
                format!("process {url}{who}")
            }
            Origin::Direct {
                destination,
                kafka,
                topic,
                group,
            } => format!("destination {destination}, Kafka {kafka} (topic {topic}, group {group})"),
        };
        let _ = writeln!(o, "redmirror status: {origin}");
        if self.healthy {
            let _ = writeln!(o, "HEALTHY");
        } else {
            let n = self.problems.len();
            let _ = writeln!(o, "NEEDS ATTENTION: {n} problem{}", plural(n as u64));
            for p in &self.problems {
                let _ = writeln!(o, "  - {p}");
            }
        }
        let _ = writeln!(o);
        let row = |o: &mut String, k: &str, v: String| {
            let _ = writeln!(o, "{k:<13} {v}");
        };
        if !self.components.is_empty() {
            let parts: Vec<String> = self
                .components
                .iter()
                .map(|(n, c)| match (c.ready, &c.reason) {
                    (true, _) => format!("{n} ok"),
                    (false, Some(_)) => format!("{n} DOWN (see above)"),
                    (false, None) => format!("{n} DOWN"),
                })
                .collect();
            row(&mut o, "ready", parts.join(", "));
        }
        if !self.leases.is_empty() {
            let parts: Vec<String> = self
                .leases
                .iter()
                .map(|(n, l)| match (&l.holder, l.this_process) {
                    (Some(h), Some(true)) => format!("{n}: this process ({h})"),
                    (None, Some(true)) => format!("{n}: this process"),
                    (Some(h), Some(false)) => format!("{n}: {h} (this process stands by)"),
                    (Some(h), None) => format!("{n}: {h}"),
                    (None, _) => format!("{n}: nobody"),
                })
                .collect();
            row(&mut o, "leases", parts.join("; "));
        }
        if let Some(e) = self.source_epoch {
            row(&mut o, "source epoch", e.to_string());
        }
        if let Some(r) = &self.rules {
            row(&mut o, "rules", r.line());
        }
        match self.held {
            Some(true) => row(
                &mut o,
                "hold",
                format!(
                    "HELD at {} since {} (a rewind: apply and repairs paused, capture goes on; `redmirror resume` ends it)",
                    self.held_at.as_deref().unwrap_or("?"),
                    self.held_since.as_deref().unwrap_or("?")
                ),
            ),
            Some(false) => row(&mut o, "hold", "not held".into()),
            None => {}
        }
        if !self.lag.is_empty() {
            let total: i64 = self.lag.values().sum();
            let parts: Vec<String> = self.lag.iter().map(|(p, n)| format!("{p}: {n}")).collect();
            row(
                &mut o,
                "lag",
                format!(
                    "{total} message{} (partition {})",
                    plural(total as u64),
                    parts.join(", ")
                ),
            );
        }
        if let Some(n) = self.apply_instances {
            row(&mut o, "apply", format!("{n} live instance{}", plural(n as u64)));
        }
        match self.write_limit.map(|w| (w.apply_max_rate, w.throttled)) {
            Some((0, _)) => row(&mut o, "write limit", "none (REDMIRROR_APPLY_MAX_RATE=0)".into()),
            Some((rate, true)) => row(
                &mut o,
                "write limit",
                format!("{rate} events/s, THROTTLED now (the backlog waits in Kafka; lag shows it)"),
            ),
            Some((rate, false)) => row(&mut o, "write limit", format!("{rate} events/s, not reached")),
            None => {}
        }
        match &self.last_reconcile {
            Some(r) => {
                row(&mut o, "reconcile", format!("last pass {}", r.summary()));
                row(&mut o, "verified", r.verified_sentence());
            }
            // Known to be absent only when its store was read: /v1/status
            // answered, or the destination did.
            None if self.role.is_some() || self.apply_instances.is_some() => {
                row(&mut o, "reconcile", "no pass has finished yet".into())
            }
            None => {}
        }
        if let Some(g) = self.capture_gaps {
            let when = match self.origin {
                Origin::Process { .. } => " since the process started",
                Origin::Direct { .. } => " in all (redmirror:capture:gaps); each one triggers a reconcile pass",
            };
            row(&mut o, "capture gaps", format!("{g}{when}"));
        }
        let dl = &self.dead_letters;
        if dl.waiting.is_some() || dl.by_process.is_some() {
            let mut parts = Vec::new();
            if let Some(n) = dl.waiting {
                parts.push(format!(
                    "{n} in {}",
                    dl.topic.as_deref().unwrap_or("the dead-letter topic")
                ));
            }
            if let Some(n) = dl.by_process {
                parts.push(format!("{n} dead-lettered by this process since it started"));
            }
            row(&mut o, "dead letters", parts.join("; "));
        }
        for n in &self.notes {
            let _ = writeln!(o, "note: {n}");
        }
        o
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// "1,203,455".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "12s ago", "3m ago", "2h 5m ago".
pub fn ago(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    let d = match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    };
    format!("{d} ago")
}

/// Runs `redmirror status` and prints it; whether it is healthy.
pub async fn run(config: &Config, url: Option<&str>, json: bool, t: Thresholds) -> Result<bool, crate::Error> {
    let status = match url {
        Some(u) => {
            let p = Process::new(u, config.admin_token.clone())?;
            let scrape = p.scrape().await?;
            // The dead-letter topic the process names, else the configured one.
            let named = match &scrape.status {
                AdminStatus::Ok(v) => Some(v.dlq_topic.clone()),
                _ => None,
            };
            let dlq = dlq_count(config, named).await;
            Status::of_process(p.url(), &scrape, dlq, t)
        }
        None => {
            crate::refuse_embedded(config)?;
            let (d, client) = crate::direct::look(config, None).await;
            if let Some(c) = client {
                let _ = fred::interfaces::ClientLike::quit(&c).await;
            }
            Status::of_direct(config, &d, t)
        }
    };
    let text = if json {
        let mut j = serde_json::to_string_pretty(&status).unwrap_or_default();
        j.push('\n');
        j
    } else {
        status.text()
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        // The reader went away (`redmirror status | head -3`): what it read stands.
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(crate::Error::Terminal(e)),
    }
    Ok(status.healthy)
}

/// The message count of the dead-letter topic (`topic`, else the
/// configured one) when Kafka is configured here and is not the embedded
/// broker: `(topic, count)`; `None` when it cannot be read from here.
async fn dlq_count(config: &Config, topic: Option<String>) -> Option<(String, Result<Option<u64>, String>)> {
    let Some(redmirror_config::Brokers::Bootstrap(brokers)) = config.kafka_brokers.clone() else {
        return None;
    };
    let topic = topic.unwrap_or_else(|| config.dlq_topic());
    let kafka = redmirror_kafka::Kafka::new(brokers, config.kafka_properties.clone());
    let t = topic.clone();
    let n = tokio::task::spawn_blocking(move || crate::offsets::messages(&kafka, &t, crate::direct::DIRECT_TIMEOUT))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    Some((topic, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Readiness;
    use crate::prom::Metrics;
    use serde_json::json;

    const T: Thresholds = Thresholds { max_lag: 1000 };

    fn scrape(components: &[(&str, bool)], metrics: &str, status: Option<Value>) -> Scrape {
        Scrape {
            readiness: Ok(Readiness {
                ready: components.iter().all(|(_, up)| *up),
                components: components.iter().map(|(c, up)| (c.to_string(), *up)).collect(),
                reasons: BTreeMap::new(),
            }),
            metrics: Ok(Metrics::parse(metrics).unwrap()),
            status: status.map_or(AdminStatus::NoToken, |v| {
                AdminStatus::Ok(Box::new(serde_json::from_value(v).expect("a status body")))
            }),
        }
    }

    fn status_body(holder: Option<&str>, lag: i64, held: bool) -> Value {
        json!({
            "role": "run", "version": "0.1.0",
            "lease": { "reconcile": { "holder": holder, "held_by_me": holder.is_some(), "me": "me-1" } },
            "lag": { "0": 0, "2": lag },
            "held": held, "held_at": if held { json!("2026-01-01T00:00:00Z") } else { json!(null) },
            "held_since": null, "source_epoch": 3, "last_reconcile": null,
            "ready": true, "components": { "destination": true },
            "topic": "flows", "dlq_topic": "flows.dlq", "group_id": "g",
        })
    }

    #[test]
    fn the_proof_is_said_in_words() {
        let three_min_ago = SystemTime::now() - Duration::from_secs(180);
        let us = three_min_ago
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        let r = redmirror_reconcile::Report {
            verified_source_time_us: Some(us),
            verified_flows: Some(1_203_455),
            ..redmirror_reconcile::Report::default()
        };
        let said = ReconcileView::from_report(r).verified_sentence();
        assert!(said.starts_with("staging matched production as of "), "{said}");
        assert!(said.contains("3m 0s ago") && said.contains("1,203,455 flows"), "{said}");
        let none = ReconcileView::from_report(redmirror_reconcile::Report::default()).verified_sentence();
        assert!(none.contains("not proven"), "{none}");
        assert_eq!(
            (thousands(0), thousands(999), thousands(1000)),
            ("0".into(), "999".into(), "1,000".into())
        );
    }

    #[test]
    fn a_healthy_process_has_no_problem() {
        let s = Status::of_process(
            "http://x",
            &scrape(&[("destination", true)], "", Some(status_body(Some("me-1"), 3, false))),
            None,
            T,
        );
        assert!(s.healthy, "{:?}", s.problems);
        assert_eq!((s.role.as_deref(), s.source_epoch), (Some("run"), Some(3)));
        assert!(s.text().contains("reconcile: this process (me-1)"), "{}", s.text());
    }

    #[test]
    fn the_rules_in_effect_are_one_line() {
        let mut body = status_body(Some("me-1"), 3, false);
        let rules = redmirror_core::FieldRules::new(
            ["flowConfigHistory".into()],
            Some(vec!["email".into()]),
            [("email".into(), redmirror_core::MaskMethod::Email)],
            Some(b"sixteen-byte-key!"),
        )
        .unwrap()
        .summary();
        body["rules"] = serde_json::to_value(&rules).unwrap();
        let s = Status::of_process("http://x", &scrape(&[("destination", true)], "", Some(body)), None, T);
        assert_eq!(s.rules.as_ref(), Some(&rules));
        let line = s
            .text()
            .lines()
            .find(|l| l.starts_with("rules"))
            .unwrap_or_default()
            .to_string();
        assert!(
            line.contains("only email") && line.contains("masked email:email"),
            "{line}"
        );
        assert!(line.contains(&rules.fingerprint), "{line}");
    }

    #[test]
    fn each_problem_says_what_to_do() {
        let s = Status::of_process(
            "http://x",
            &scrape(
                &[("destination", true), ("source", false)],
                "redmirror_dlq_events_total 2\n",
                Some(status_body(None, 12000, false)),
            ),
            Some(("flows.dlq".into(), Ok(Some(3)))),
            T,
        );
        assert!(!s.healthy);
        assert_eq!(
            s.problems,
            vec![
                "not ready: source — the process cannot reach it — check REDMIRROR_SOURCE_URL and that the server is up",
                "nobody holds the reconcile lease, so no reconciler is running and nothing repairs drift — start \
                 `redmirror reconcile` or `redmirror run`",
                "lag 12000 on partition 2 (over 1000): apply is behind — watch it with `redmirror top`; check apply's \
                 readiness and the destination, or scale apply up to the partition count",
                "3 dead letters waiting in flows.dlq: `redmirror dlq list` shows why; fix the cause, then `redmirror \
                 dlq redrive`",
            ]
        );
        assert!(s.text().starts_with("redmirror status: process http://x (role run, version 0.1.0)\nNEEDS ATTENTION: 4 problems\n  - not ready: source"));
    }

    #[test]
    fn a_hold_is_shown_and_quiets_the_lag() {
        let s = Status::of_process(
            "http://x",
            &scrape(&[], "", Some(status_body(Some("me-1"), 50_000, true))),
            None,
            T,
        );
        assert!(s.healthy, "{:?}", s.problems);
        assert!(s.text().contains("HELD at 2026-01-01T00:00:00Z"), "{}", s.text());
    }

    #[test]
    fn lease_holders_the_process_cannot_read_point_at_the_destination() {
        let own = "redmirror_lease_held{lease=\"reconcile\"} 1\n";
        let s = Status::of_process(
            "http://x",
            &scrape(&[("destination", true)], own, Some(status_body(None, 0, false))),
            None,
            T,
        );
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
        assert!(s.problems[0].starts_with("destination: the process could not read the reconcile lease holder"));
        // With the destination known down, that is the one problem.
        let s = Status::of_process(
            "http://x",
            &scrape(&[("destination", false)], own, Some(status_body(None, 0, false))),
            None,
            T,
        );
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
        assert!(s.problems[0].starts_with("not ready: destination"));
        assert!(s.leases.is_empty());
    }

    #[test]
    fn without_the_token_the_metrics_still_tell_readiness_lag_and_dead_letters() {
        let m =
            "redmirror_consumer_lag_messages{partition=\"1\"} 5000\nredmirror_held 0\nredmirror_dlq_events_total 1\n";
        let s = Status::of_process("http://x", &scrape(&[("kafka", true)], m, None), None, T);
        assert_eq!(s.lag, BTreeMap::from([(1, 5000)]));
        assert_eq!(s.held, Some(false));
        assert_eq!(s.problems.len(), 2, "{:?}", s.problems);
        assert!(s.problems[1].starts_with("1 event dead-lettered by this process since it started"));
        assert!(s.notes[0].starts_with("REDMIRROR_ADMIN_TOKEN is not set here"));
    }

    fn config() -> Config {
        let env = [
            ("REDMIRROR_DEST_URL", "redis://staging:6379"),
            ("REDMIRROR_KAFKA_BROKERS", "kafka-1:9092"),
            ("REDMIRROR_RECONCILE_INTERVAL", "15m"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        redmirror_config::Layers::load(None, env)
            .unwrap()
            .validate(&[
                &redmirror_config::settings::DEST_URL,
                &redmirror_config::settings::KAFKA_BROKERS,
            ])
            .unwrap()
    }

    #[test]
    fn read_directly_the_fleet_is_judged_from_the_destination_and_kafka() {
        use crate::direct::DestState;
        use crate::offsets::Offsets;
        let config = config();
        let two_hours_ago =
            humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(7200)).to_string();
        let d = Direct {
            dest: Ok(DestState {
                leases: vec![("capture".into(), Some("host-1-a".into())), ("reconcile".into(), None)],
                epoch: Some(2),
                hold: Ok(None),
                report: Some(json!({ "started_at": two_hours_ago, "barrier": "reached" })),
                gaps: 4,
                apply_instances: 0,
            }),
            kafka: Ok(Offsets {
                topic: Some(BTreeMap::from([(0, (0, 10)), (1, (0, 5000))])),
                committed: BTreeMap::from([(0, 10), (1, 100)]),
                dlq: Some(BTreeMap::from([(0, (0, 2))])),
            }),
        };
        let s = Status::of_direct(&config, &d, T);
        let starts: Vec<&str> = s.problems.iter().map(|p| p.split([',', ':']).next().unwrap()).collect();
        assert_eq!(
            starts,
            vec![
                "nobody holds the reconcile lease",
                "no apply instance is running (none announced itself on the destination in the last 3 s)",
                "the last reconcile pass began 2h 0m ago",
                "lag 4900 on partition 1 of group redmirror-apply (over 1000)",
                "2 dead letters waiting in redmirror.flows.dlq",
            ],
            "{:#?}",
            s.problems
        );
        assert_eq!(
            (s.source_epoch, s.capture_gaps, s.held),
            (Some(2), Some(4), Some(false))
        );

        let down = Direct {
            dest: Err(crate::direct::DestError::Unreachable("connection refused".into())),
            kafka: Err("no answer from the brokers within 5s (timed out)".into()),
        };
        let s = Status::of_direct(&config, &down, T);
        assert_eq!(
            s.problems,
            vec![
                "destination: unreachable (connection refused) — check REDMIRROR_DEST_URL (redis://staging:6379) and \
                 that the server is up",
                "kafka: unreachable (no answer from the brokers within 5s (timed out)) — check REDMIRROR_KAFKA_BROKERS \
                 (kafka-1:9092) and that the brokers are up",
            ]
        );
        assert!(!s.text().contains("reconcile "), "{}", s.text());
    }
}
