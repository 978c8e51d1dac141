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

/// `source_url`.
pub const SOURCE_URL: Setting = s(
    "source_url",
    None,
    "source Redis (production), redis:// or rediss:// URL; /N selects the database",
);
/// `dest_url`.
pub const DEST_URL: Setting = s(
    "dest_url",
    None,
    "destination Redis (staging), redis:// or rediss:// URL",
);
/// `source_tls_ca_file`.
pub const SOURCE_TLS_CA_FILE: Setting = s(
    "source_tls_ca_file",
    None,
    "CA bundle (PEM) to verify the source over rediss://",
);
/// `source_tls_cert_file`.
pub const SOURCE_TLS_CERT_FILE: Setting = s("source_tls_cert_file", None, "client certificate (PEM) for the source");
/// `source_tls_key_file`.
pub const SOURCE_TLS_KEY_FILE: Setting = s("source_tls_key_file", None, "client private key (PEM) for the source");
/// `dest_tls_ca_file`.
pub const DEST_TLS_CA_FILE: Setting = s(
    "dest_tls_ca_file",
    None,
    "CA bundle (PEM) to verify the destination over rediss://",
);
/// `dest_tls_cert_file`.
pub const DEST_TLS_CERT_FILE: Setting = s(
    "dest_tls_cert_file",
    None,
    "client certificate (PEM) for the destination",
);
/// `dest_tls_key_file`.
pub const DEST_TLS_KEY_FILE: Setting = s(
    "dest_tls_key_file",
    None,
    "client private key (PEM) for the destination",
);
/// `kafka_brokers`.
pub const KAFKA_BROKERS: Setting = s("kafka_brokers", None, "Kafka bootstrap servers; `embedded` runs an in-process broker (demos and development only: it keeps little history)");
/// `topic`.
pub const TOPIC: Setting = s(
    "topic",
    Some("redmirror.flows"),
    "change topic; the dead-letter topic is `{topic}.dlq`",
);
/// `topic_partitions`.
pub const TOPIC_PARTITIONS: Setting = s(
    "topic_partitions",
    Some("6"),
    "partitions when redmirror creates the change topic",
);
/// `topic_replication_factor`.
pub const TOPIC_REPLICATION_FACTOR: Setting = s(
    "topic_replication_factor",
    Some("1"),
    "replication factor when redmirror creates topics",
);
/// `topic_min_compaction_lag`.
pub const TOPIC_MIN_COMPACTION_LAG: Setting = s("topic_min_compaction_lag", Some("7d"), "`min.compaction.lag.ms` when redmirror creates the change topic: the window a rewind is exact in; an existing topic with less gets a warning");
/// `group_id`.
pub const GROUP_ID: Setting = s("group_id", Some("redmirror-apply"), "apply consumer group");
/// `http_addr`.
pub const HTTP_ADDR: Setting = s(
    "http_addr",
    Some("127.0.0.1:9464"),
    "metrics, health and admin listener",
);
/// `admin_token`.
pub const ADMIN_TOKEN: Setting = Setting {
    key: "admin_token",
    default: None,
    doc: "bearer token for the admin API (at least 16 characters); unset = admin API off",
    secret: true,
};
/// `excluded_fields`.
pub const EXCLUDED_FIELDS: Setting = s(
    "excluded_fields",
    Some("flowConfigHistory"),
    "comma list of fields never copied",
);
/// `included_fields`.
pub const INCLUDED_FIELDS: Setting = s(
    "included_fields",
    Some(""),
    "comma list: when set, an allow-list: only these fields are copied (after the excluded fields are dropped); empty = every field",
);
/// `masked_fields`.
pub const MASKED_FIELDS: Setting = s(
    "masked_fields",
    Some(""),
    "comma list of `FIELD:METHOD`: the copy holds the field's value masked: `hash` (first 32 hex characters of HMAC-SHA256(key, value)), `email` (first 16 hex characters of HMAC-SHA256(key, lowercased value) + `@example.invalid`) or `redact` (`REDACTED`); needs `REDMIRROR_MASK_KEY`",
);
/// `mask_key`.
pub const MASK_KEY: Setting = Setting {
    key: "mask_key",
    default: None,
    doc: "secret key (at least 16 bytes) of the keyed mask methods; required with `REDMIRROR_MASKED_FIELDS`; changing it rewrites every copy in the next pass",
    secret: true,
};
/// `filtered_orgs`.
pub const FILTERED_ORGS: Setting = s(
    "filtered_orgs",
    Some(""),
    "comma list of organisation ids never mirrored",
);
/// `org_field`.
pub const ORG_FIELD: Setting = s(
    "org_field",
    Some("clerkOrganizationId"),
    "field holding a flow's organisation id",
);
/// `marker_field`.
pub const MARKER_FIELD: Setting = s(
    "marker_field",
    Some("isSyncCopy"),
    "field marking a sync copy (value \"true\"); hashes without it are native",
);
/// `flow_key_prefix`.
pub const FLOW_KEY_PREFIX: Setting = s(
    "flow_key_prefix",
    Some("client:"),
    "prefix of flow hashes: `client:{flowId}`",
);
/// `index_key`.
pub const INDEX_KEY: Setting = s(
    "index_key",
    Some("clients"),
    "index hash of flows: field `{flowId}` -> \"1\"",
);
/// `state_prefix`.
pub const STATE_PREFIX: Setting = s(
    "state_prefix",
    Some("redmirror:"),
    "prefix of redmirror's own keys on the destination (watermarks, leases, reports)",
);
/// `max_flow_bytes`.
pub const MAX_FLOW_BYTES: Setting = s("max_flow_bytes", Some("900000"), "largest flow mirrored, in bytes of field names and values; larger flows are skipped at capture and dead-lettered at apply");
/// `reconcile_interval`.
pub const RECONCILE_INTERVAL: Setting = s(
    "reconcile_interval",
    Some("15m"),
    "time between scheduled reconcile passes (30s, 15m, 4h)",
);
/// `reconcile_barrier_timeout`.
pub const RECONCILE_BARRIER_TIMEOUT: Setting = s(
    "reconcile_barrier_timeout",
    Some("30s"),
    "longest wait, before a pass compares, for apply to reach the topic's end offsets",
);
/// `reconcile_batch`.
pub const RECONCILE_BATCH: Setting = s(
    "reconcile_batch",
    Some("1000"),
    "keys per SCAN and pipelined read in the reconciler",
);
/// `reconcile_rate_limit`.
pub const RECONCILE_RATE_LIMIT: Setting = s(
    "reconcile_rate_limit",
    Some("0"),
    "reconciler speed limit in keys per second on each side; 0 = unlimited",
);
/// `capture_batch`.
pub const CAPTURE_BATCH: Setting = s(
    "capture_batch",
    Some("256"),
    "flows read per atomic source read in capture",
);
/// `capture_pending_max`.
pub const CAPTURE_PENDING_MAX: Setting = s("capture_pending_max", Some("100000"), "most distinct changed flows waiting to be read; beyond it capture stops reading and marks a gap for the reconciler");
/// `apply_batch`.
pub const APPLY_BATCH: Setting = s(
    "apply_batch",
    Some("512"),
    "events per pipelined destination round trip in apply",
);
/// `apply_max_rate`.
pub const APPLY_MAX_RATE: Setting = s(
    "apply_max_rate",
    Some("0"),
    "most events per second one apply process writes to the destination (a backlog waits in Kafka, nothing is skipped; `replay --max-rate` defaults to it); 0 = no limit",
);
/// `lease_ttl`.
pub const LEASE_TTL: Setting = s(
    "lease_ttl",
    Some("10s"),
    "lease time-to-live for the reconciler and the active capture; renewed at a third of it",
);
/// `configure_notifications`.
pub const CONFIGURE_NOTIFICATIONS: Setting = s("configure_notifications", Some("false"), "let capture run CONFIG SET notify-keyspace-events on the source when classes are missing, at start and whenever a later check finds them missing");
/// `shutdown_timeout`.
pub const SHUTDOWN_TIMEOUT: Setting = s(
    "shutdown_timeout",
    Some("30s"),
    "bound on a graceful stop (finish writes, commit offsets, flush the producer)",
);
/// `log`.
pub const LOG: Setting = s(
    "log",
    Some("info"),
    "log filter (tracing EnvFilter syntax: info, redmirror_apply=debug, ...)",
);
/// `log_format`.
pub const LOG_FORMAT: Setting = s("log_format", Some("text"), "text or json (JSON lines)");

/// Every setting redmirror reads, in the order the reference lists them.
/// Extra librdkafka properties are not listed: every other `REDMIRROR_KAFKA_*`
/// variable and the `[kafka.properties]` table pass through to librdkafka.
pub const SETTINGS: &[Setting] = &[
    SOURCE_URL,
    DEST_URL,
    SOURCE_TLS_CA_FILE,
    SOURCE_TLS_CERT_FILE,
    SOURCE_TLS_KEY_FILE,
    DEST_TLS_CA_FILE,
    DEST_TLS_CERT_FILE,
    DEST_TLS_KEY_FILE,
    KAFKA_BROKERS,
    TOPIC,
    TOPIC_PARTITIONS,
    TOPIC_REPLICATION_FACTOR,
    TOPIC_MIN_COMPACTION_LAG,
    GROUP_ID,
    HTTP_ADDR,
    ADMIN_TOKEN,
    EXCLUDED_FIELDS,
    INCLUDED_FIELDS,
    MASKED_FIELDS,
    MASK_KEY,
    FILTERED_ORGS,
    ORG_FIELD,
    MARKER_FIELD,
    FLOW_KEY_PREFIX,
    INDEX_KEY,
    STATE_PREFIX,
    MAX_FLOW_BYTES,
    RECONCILE_INTERVAL,
    RECONCILE_BARRIER_TIMEOUT,
    RECONCILE_BATCH,
    RECONCILE_RATE_LIMIT,
    CAPTURE_BATCH,
    CAPTURE_PENDING_MAX,
    APPLY_BATCH,
    APPLY_MAX_RATE,
    LEASE_TTL,
    CONFIGURE_NOTIFICATIONS,
    SHUTDOWN_TIMEOUT,
    LOG,
    LOG_FORMAT,
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
         properties whose names contain `password`, `secret` or `token` are never printed. \
         `REDMIRROR_KAFKA_PARTITIONER` must hash the key (`consistent_random`, the default, `consistent`, \
         `murmur2_random`, `murmur2`, `fnv1a_random` or `fnv1a`): every event of a flow must land in one \
         partition for per-flow order and flow history, so `random` is refused.\n",
    );
    s
}
