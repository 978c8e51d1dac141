//! The table of every setting. `docs/configuration.md` is tested against it.
//!
//! Contract: every key (and so every `REDMIRROR_*` variable) and default
//! here is public (SPEC section 4); change one only through an issue.

/// One setting: its TOML key, default and meaning. Its variable is
/// `REDMIRROR_` + the key in upper case.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// TOML key.
    pub key: &'static str,
    /// Default, if any.
    pub default: Option<&'static str>,
    /// What it means.
    pub doc: &'static str,
    /// The value is a secret (never printed).
    pub secret: bool,
}

impl Setting {
    /// The environment variable: `REDMIRROR_` + upper-case key.
    pub fn var(&self) -> String {
        format!("{}{}", crate::ENV_PREFIX, self.key.to_ascii_uppercase())
    }
}

const fn s(key: &'static str, default: Option<&'static str>, doc: &'static str) -> Setting {
    Setting {
        key,
        default,
        doc,
        secret: false,
    }
}

/// Every setting redmirror reads. Extra librdkafka properties are not listed:
/// every other `REDMIRROR_KAFKA_*` variable and the `[kafka.properties]` table
/// pass through to librdkafka.
pub const SETTINGS: &[Setting] = &[
    s("source_url", None, "source Redis (production), redis:// or rediss:// URL; /N selects the database"),
    s("dest_url", None, "destination Redis (staging), redis:// or rediss:// URL"),
    s("source_tls_ca_file", None, "CA bundle (PEM) to verify the source over rediss://"),
    s("source_tls_cert_file", None, "client certificate (PEM) for the source"),
    s("source_tls_key_file", None, "client private key (PEM) for the source"),
    s("dest_tls_ca_file", None, "CA bundle (PEM) to verify the destination over rediss://"),
    s("dest_tls_cert_file", None, "client certificate (PEM) for the destination"),
    s("dest_tls_key_file", None, "client private key (PEM) for the destination"),
    s("kafka_brokers", None, "Kafka bootstrap servers; `embedded` runs an in-process broker (demos and development only: it keeps little history)"),
    s("topic", Some("redmirror.flows"), "change topic; the dead-letter topic is `{topic}.dlq`"),
    s("topic_partitions", Some("6"), "partitions when redmirror creates the change topic"),
    s("topic_replication_factor", Some("1"), "replication factor when redmirror creates topics"),
    s("topic_min_compaction_lag", Some("7d"), "`min.compaction.lag.ms` when redmirror creates the change topic: the window a rewind is exact in; an existing topic with less gets a warning"),
    s("group_id", Some("redmirror-apply"), "apply consumer group"),
    s("http_addr", Some("127.0.0.1:9464"), "metrics, health and admin listener"),
    Setting {
        key: "admin_token",
        default: None,
        doc: "bearer token for the admin API (at least 16 characters); unset = admin API off",
        secret: true,
    },
    s("excluded_fields", Some("flowConfigHistory"), "comma list of fields never copied"),
    s("filtered_orgs", Some(""), "comma list of organisation ids never mirrored"),
    s("org_field", Some("clerkOrganizationId"), "field holding a flow's organisation id"),
    s("marker_field", Some("isSyncCopy"), "field marking a sync copy (value \"true\"); hashes without it are native"),
    s("flow_key_prefix", Some("client:"), "prefix of flow hashes: `client:{flowId}`"),
    s("index_key", Some("clients"), "index hash of flows: field `{flowId}` -> \"1\""),
    s("state_prefix", Some("redmirror:"), "prefix of redmirror's own keys on the destination (watermarks, leases, reports)"),
    s("max_flow_bytes", Some("900000"), "largest flow mirrored, in bytes of field names and values; larger flows are skipped at capture and dead-lettered at apply"),
    s("reconcile_interval", Some("15m"), "time between scheduled reconcile passes (30s, 15m, 4h)"),
    s("reconcile_barrier_timeout", Some("30s"), "longest wait, before a pass compares, for apply to reach the topic's end offsets"),
    s("reconcile_batch", Some("1000"), "keys per SCAN and pipelined read in the reconciler"),
    s("reconcile_rate_limit", Some("0"), "reconciler speed limit in keys per second on each side; 0 = unlimited"),
    s("capture_batch", Some("256"), "flows read per atomic source read in capture"),
    s("capture_pending_max", Some("100000"), "most distinct changed flows waiting to be read; beyond it capture stops reading and marks a gap for the reconciler"),
    s("apply_batch", Some("512"), "events per pipelined destination round trip in apply"),
    s("lease_ttl", Some("10s"), "lease time-to-live for the reconciler and the active capture; renewed at a third of it"),
    s("configure_notifications", Some("false"), "let capture run CONFIG SET notify-keyspace-events on the source when classes are missing, at start and whenever a later check finds them missing"),
    s("shutdown_timeout", Some("30s"), "bound on a graceful stop (finish writes, commit offsets, flush the producer)"),
    s("log", Some("info"), "log filter (tracing EnvFilter syntax: info, redmirror_apply=debug, ...)"),
    s("log_format", Some("text"), "text or json (JSON lines)"),
];

/// The configuration reference in Markdown (`docs/configuration.md`).
pub fn markdown() -> String {
    let mut s = String::from(
        "# Configuration reference\n\n\
         Generated from `crates/config/src/settings.rs` (a test fails when this file and the code differ; \
         regenerate with `UPDATE_DOCS=1 cargo test -p redmirror-config`).\n\n\
         Precedence: a TOML file (`--config PATH`, keys as below), overridden by `REDMIRROR_*` environment \
         variables, overridden by flags (`--source-url`, `--dest-url`, `--kafka-brokers`, `--topic`, \
         `--group-id`, `--http-addr`, `--log`, `--configure-notifications`, or any key with \
         `--set KEY=VALUE`). A bad or missing setting stops the command with exit code 2 and a message naming \
         the variable. An unknown `REDMIRROR_*` variable or TOML key is an error too (typos do not pass silently).\n\n\
         | variable | TOML key | default | meaning |\n|---|---|---|---|\n",
    );
    for st in SETTINGS {
        let default = match st.default {
            None => "—".to_string(),
            Some("") => "empty".to_string(),
            Some(d) => format!("`{d}`"),
        };
        s.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            st.var(),
            st.key,
            default,
            st.doc.replace('|', "\\|")
        ));
    }
    s.push_str(
        "\n## Kafka client properties\n\n\
         Every other `REDMIRROR_KAFKA_*` variable becomes a librdkafka property, lower-cased with underscores \
         as dots: `REDMIRROR_KAFKA_SESSION_TIMEOUT_MS=6000` → `session.timeout.ms=6000`, \
         `REDMIRROR_KAFKA_SECURITY_PROTOCOL=SASL_SSL` → `security.protocol=SASL_SSL`. In the TOML file, use a \
         table:\n\n```toml\n[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"/etc/redmirror/ca.pem\"\n```\n\n\
         Properties given this way override redmirror's defaults (for example `linger.ms`). Values of \
         properties whose names contain `password`, `secret` or `token` are never printed.\n",
    );
    s
}
