//! Configuration: parse, layer, then validate into a typed [`Config`].
//!
//! # Layout
//! - [`SETTINGS`]: the one table of every setting (TOML key, variable,
//!   default, meaning). `docs/configuration.md` is checked against it.
//! - [`Layers`]: raw values from the TOML file, then `REDMIRROR_*`
//!   environment variables, then flags; later layers win.
//! - [`Config`]: the validated result. Every error names the setting as its
//!   variable (`REDMIRROR_SOURCE_URL`), so the operator knows what to fix.
//! - [`redact_url`]: URLs with their password removed, for logs and errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use redmirror_core::field_rules::{parse_mask, FieldRules, FieldRulesError};
use redmirror_core::{KeyLayout, MirrorRules};

pub mod ends;
pub mod settings;

pub use ends::{BothSides, DestSide, SourceSide};
use settings::*;
pub use settings::{markdown as settings_markdown, Setting, SETTINGS};

/// Prefix of every environment variable.
pub const ENV_PREFIX: &str = "REDMIRROR_";
/// The value of `REDMIRROR_KAFKA_BROKERS` that starts the in-process broker.
pub const EMBEDDED_BROKER: &str = "embedded";

/// Where Kafka is (`REDMIRROR_KAFKA_BROKERS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Brokers {
    /// The in-process broker ([`EMBEDDED_BROKER`]): demos and development
    /// only; nothing outside the process can reach it.
    Embedded,
    /// Bootstrap servers, `host:port,host:port`.
    Bootstrap(String),
}

impl Brokers {
    /// The setting's value, trimmed: [`EMBEDDED_BROKER`] or a server list.
    pub fn parse(value: &str) -> Brokers {
        match value.trim() {
            EMBEDDED_BROKER => Brokers::Embedded,
            list => Brokers::Bootstrap(list.to_string()),
        }
    }
}

impl std::fmt::Display for Brokers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Brokers::Embedded => f.write_str(EMBEDDED_BROKER),
            Brokers::Bootstrap(list) => f.write_str(list),
        }
    }
}

/// A configuration error. Display names the setting and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}")]
    ReadFile {
        /// File path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Toml {
        /// File path.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A setting nobody knows.
    #[error("unknown setting {name}{hint}")]
    Unknown {
        /// The key or variable as written.
        name: String,
        /// "did you mean" hint, or empty.
        hint: String,
    },
    /// A setting needed by this command is missing.
    #[error("missing setting {var} (TOML key `{key}`): {doc}")]
    Missing {
        /// Variable name.
        var: String,
        /// TOML key.
        key: &'static str,
        /// What it is for.
        doc: &'static str,
    },
    /// A setting has a value that does not parse or breaks a constraint.
    #[error("invalid setting {var}={value}: {constraint}")]
    Invalid {
        /// Variable name.
        var: String,
        /// The (redacted) value.
        value: String,
        /// What is expected.
        constraint: String,
    },
}

/// Where a raw value came from (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Built-in default.
    Default,
    /// TOML file.
    File,
    /// Environment variable.
    Env,
    /// Command-line flag.
    Flag,
}

/// Raw setting values, layered. Keys are TOML keys (`source_url`).
#[derive(Debug, Clone, Default)]
pub struct Layers {
    values: BTreeMap<&'static str, (String, Layer)>,
    kafka_properties: BTreeMap<String, String>,
}

fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

fn hint_for(name: &str) -> String {
    let lower = name.trim_start_matches(ENV_PREFIX).to_ascii_lowercase();
    SETTINGS
        .iter()
        .find(|s| s.key.contains(lower.as_str()) || lower.contains(s.key) || strsim_close(s.key, &lower))
        .map(|s| format!(" (did you mean {}?)", s.var()))
        .unwrap_or_default()
}

/// Cheap closeness: same length ±1 and at most 2 differing positions.
fn strsim_close(a: &str, b: &str) -> bool {
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    a.bytes().zip(b.bytes()).filter(|(x, y)| x != y).count() <= 2
}

impl Layers {
    /// Loads defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut layers = Layers::default();
        for s in SETTINGS {
            if let Some(d) = s.default {
                layers.values.insert(s.key, (d.to_string(), Layer::Default));
            }
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                path: path.to_path_buf(),
                source,
            })?;
            layers.apply_toml(path, &text)?;
        }
        layers.apply_env(env)?;
        Ok(layers)
    }

    fn apply_toml(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Toml {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        for (key, value) in table {
            if key == "kafka" {
                let props = value
                    .as_table()
                    .and_then(|t| t.get("properties"))
                    .and_then(|p| p.as_table())
                    .filter(|_| value.as_table().is_some_and(|t| t.len() == 1))
                    .ok_or_else(|| ConfigError::Invalid {
                        var: "kafka".into(),
                        value: "<table>".into(),
                        constraint: "expected only a [kafka.properties] table of librdkafka properties".into(),
                    })?;
                for (k, v) in props {
                    self.kafka_properties.insert(k.clone(), toml_scalar(v));
                }
                continue;
            }
            let s = setting(&key).ok_or_else(|| ConfigError::Unknown {
                hint: hint_for(&key),
                name: format!("`{key}` in {}", path.display()),
            })?;
            let v = match &value {
                toml::Value::Array(items) => items.iter().map(toml_scalar).collect::<Vec<_>>().join(","),
                other => toml_scalar(other),
            };
            self.values.insert(s.key, (v, Layer::File));
        }
        Ok(())
    }

    fn apply_env(&mut self, env: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = rest.to_ascii_lowercase();
            if let Some(s) = setting(&key) {
                self.values.insert(s.key, (value, Layer::Env));
            } else if let Some(prop) = key.strip_prefix("kafka_") {
                self.kafka_properties.insert(prop.replace('_', "."), value);
            } else {
                return Err(ConfigError::Unknown {
                    hint: hint_for(&name),
                    name,
                });
            }
        }
        Ok(())
    }

    /// Sets a value from a flag, by TOML key.
    pub fn set_flag(&mut self, key: &str, value: impl Into<String>) -> Result<(), ConfigError> {
        let s = setting(key).ok_or_else(|| ConfigError::Unknown {
            hint: hint_for(key),
            name: format!("--set {key}"),
        })?;
        self.values.insert(s.key, (value.into(), Layer::Flag));
        Ok(())
    }

    /// The raw value of a setting, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str())
    }

    /// Validates into a [`Config`]. `needs` lists the settings this command
    /// requires (for example [`settings::SOURCE_URL`]).
    pub fn validate(&self, needs: &[&Setting]) -> Result<Config, ConfigError> {
        Validator { layers: self }.build(needs)
    }
}

fn toml_scalar(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// TLS options for one Redis connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle (PEM) to verify the server.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub key_file: Option<PathBuf>,
}

/// A Redis endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisEndpoint {
    /// Full URL (may contain a password: never print it, use [`RedisEndpoint::redacted`]).
    pub url: String,
    /// TLS files (used with `rediss://`).
    pub tls: TlsFiles,
}

impl std::fmt::Debug for RedisEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEndpoint")
            .field("url", &self.redacted())
            .field("tls", &self.tls)
            .finish()
    }
}

impl RedisEndpoint {
    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }

    /// The logical database number from the URL path (default 0).
    pub fn db(&self) -> u8 {
        url::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.path().trim_start_matches('/').parse().ok())
            .unwrap_or(0)
    }

    /// True for `rediss://`.
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Source Redis (production). `None` when the command does not need it.
    pub source: Option<RedisEndpoint>,
    /// Destination Redis (staging).
    pub dest: Option<RedisEndpoint>,
    /// Where Kafka is. `None` when the command does not need it.
    pub kafka_brokers: Option<Brokers>,
    /// Extra librdkafka properties (secrets inside: never log values).
    pub kafka_properties: BTreeMap<String, String>,
    /// Change topic.
    pub topic: String,
    /// Partitions when the change topic is created.
    pub topic_partitions: i32,
    /// Replication factor when topics are created.
    pub topic_replication_factor: i32,
    /// `min.compaction.lag.ms` of the change topic when it is created: a
    /// rewind to a time within this window is exact.
    pub topic_min_compaction_lag: Duration,
    /// Apply consumer group.
    pub group_id: String,
    /// HTTP listener.
    pub http_addr: SocketAddr,
    /// Admin bearer token (`None`: admin API off).
    pub admin_token: Option<String>,
    /// Key names.
    pub keys: KeyLayout,
    /// Mirror rules.
    pub rules: MirrorRules,
    /// Reconcile schedule.
    pub reconcile_interval: Duration,
    /// Longest wait for apply to catch up before a pass compares.
    pub reconcile_barrier_timeout: Duration,
    /// Keys per SCAN/read batch in the reconciler.
    pub reconcile_batch: usize,
    /// Reconciler rate limit, keys per second (0 = unlimited).
    pub reconcile_rate_limit: u64,
    /// Flow ids read per atomic source read in capture.
    pub capture_batch: usize,
    /// Most distinct flows waiting to be read; beyond, capture marks a gap.
    pub capture_pending_max: usize,
    /// Events per destination pipeline in apply.
    pub apply_batch: usize,
    /// Most events per second one apply process (or replay) writes; 0 = no limit.
    pub apply_max_rate: u64,
    /// Lease time-to-live (reconciler, capture).
    pub lease_ttl: Duration,
    /// Set `notify-keyspace-events` on the source if classes are missing.
    pub configure_notifications: bool,
    /// Bound on graceful shutdown.
    pub shutdown_timeout: Duration,
    /// Log filter.
    pub log: String,
    /// Log format.
    pub log_format: LogFormat,
}

impl Config {
    /// True when the embedded (in-process) broker is configured.
    pub fn embedded_broker(&self) -> bool {
        self.kafka_brokers == Some(Brokers::Embedded)
    }

    /// Settings that are valid but probably not what was meant, one line
    /// each, naming the setting (printed at start by every command).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let both = self.rules.fields.allowed_but_excluded();
        if !both.is_empty() {
            w.push(format!(
                "{} names {} that {} also excludes: excluded wins, {} never copied",
                INCLUDED_FIELDS.var(),
                both.join(", "),
                EXCLUDED_FIELDS.var(),
                if both.len() == 1 { "it is" } else { "they are" }
            ));
        }
        let dropped = self.rules.fields.masked_but_dropped();
        if !dropped.is_empty() {
            w.push(format!(
                "{} masks {}, which the excluded fields or the allow-list ({}) drop: never copied",
                MASKED_FIELDS.var(),
                dropped.join(", "),
                INCLUDED_FIELDS.var()
            ));
        }
        w
    }

    /// The dead-letter topic: `{topic}.dlq`.
    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.topic)
    }
}

struct Validator<'a> {
    layers: &'a Layers,
}

impl Validator<'_> {
    fn raw(&self, key: &'static Setting) -> Option<&str> {
        self.layers.get(key.key).filter(|v| !v.trim().is_empty())
    }

    fn invalid(&self, key: &'static Setting, constraint: impl Into<String>) -> ConfigError {
        let s = key;
        let value = self.layers.get(key.key).unwrap_or_default();
        let value = if s.secret { "***".to_string() } else { redact_url(value) };
        ConfigError::Invalid {
            var: s.var(),
            value,
            constraint: constraint.into(),
        }
    }

    fn missing(key: &'static Setting) -> ConfigError {
        ends::missing(key)
    }

    fn string(&self, key: &'static Setting) -> Result<String, ConfigError> {
        self.raw(key).map(str::to_string).ok_or_else(|| Self::missing(key))
    }

    fn number<T>(&self, key: &'static Setting, min: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let v: T = self
            .string(key)?
            .trim()
            .parse()
            .map_err(|_| self.invalid(key, "expected a whole number"))?;
        if v < min {
            return Err(self.invalid(key, format!("must be at least {min}")));
        }
        Ok(v)
    }

    fn duration(&self, key: &'static Setting) -> Result<Duration, ConfigError> {
        let d = humantime::parse_duration(self.string(key)?.trim())
            .map_err(|e| self.invalid(key, format!("expected a duration like 30s, 15m or 4h ({e})")))?;
        if d.is_zero() {
            return Err(self.invalid(key, "must be longer than zero"));
        }
        Ok(d)
    }

    fn boolean(&self, key: &'static Setting) -> Result<bool, ConfigError> {
        match self.string(key)?.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(self.invalid(key, "expected true or false")),
        }
    }

    /// The field rules (SPEC section 8). Each error names its setting and
    /// never quotes the mask key.
    fn field_rules(&self) -> Result<FieldRules, ConfigError> {
        let strict = |key: &'static Setting| -> Result<Option<Vec<Bytes>>, ConfigError> {
            let Some(raw) = self.raw(key) else { return Ok(None) };
            raw.split(',')
                .map(str::trim)
                .map(|f| {
                    if f.is_empty() {
                        Err(self.invalid(key, FieldRulesError::EmptyName.to_string()))
                    } else {
                        Ok(Bytes::copy_from_slice(f.as_bytes()))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        };
        let included = strict(&INCLUDED_FIELDS)?;
        let masked = match self.raw(&MASKED_FIELDS) {
            None => Vec::new(),
            Some(raw) => raw
                .split(',')
                .map(|e| parse_mask(e).map_err(|e| self.invalid(&MASKED_FIELDS, e.to_string())))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let key = self.layers.get(MASK_KEY.key).filter(|k| !k.is_empty());
        FieldRules::new(self.list(&EXCLUDED_FIELDS), included, masked, key.map(str::as_bytes)).map_err(|e| {
            let setting = match e {
                FieldRulesError::KeyMissing | FieldRulesError::KeyTooShort { .. } => &MASK_KEY,
                FieldRulesError::EmptyName => &INCLUDED_FIELDS,
                _ => &MASKED_FIELDS,
            };
            let constraint = match &e {
                FieldRulesError::KeyMissing => format!(
                    "required when {} is set: the secret key (at least 16 bytes) of the mask methods",
                    MASKED_FIELDS.var()
                ),
                other => other.to_string(),
            };
            match (e, self.layers.get(setting.key)) {
                (FieldRulesError::KeyMissing, None) => ConfigError::Invalid {
                    var: setting.var(),
                    value: "(unset)".into(),
                    constraint,
                },
                _ => self.invalid(setting, constraint),
            }
        })
    }

    fn list(&self, key: &'static Setting) -> Vec<Bytes> {
        self.raw(key)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    fn path(&self, key: &'static Setting) -> Result<Option<PathBuf>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(p) => {
                let p = PathBuf::from(p);
                if !p.is_file() {
                    return Err(self.invalid(key, "file does not exist"));
                }
                Ok(Some(p))
            }
        }
    }

    fn redis(
        &self,
        key: &'static Setting,
        tls_files: [&'static Setting; 3],
        needed: bool,
    ) -> Result<Option<RedisEndpoint>, ConfigError> {
        let Some(url) = self.raw(key) else {
            return if needed { Err(Self::missing(key)) } else { Ok(None) };
        };
        if let Some(c) = unescaped_userinfo(url) {
            return Err(self.invalid(
                key,
                format!(
                    "the user or password holds `{c}` unescaped; inside a URL write / # ? @ as %2F %23 %3F %40 \
                     (the value is not shown: it may hold a password)"
                ),
            ));
        }
        let parsed = url::Url::parse(url).map_err(|e| {
            self.invalid(
                key,
                format!(
                    "not a URL ({e}); a password holding / # ? @ must be written %2F %23 %3F %40 (the value is not \
                     shown: it may hold a password)"
                ),
            )
        })?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(self.invalid(key, "expected a redis:// or rediss:// URL"));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(self.invalid(key, "the URL has no host"));
        }
        let db = parsed.path().trim_start_matches('/');
        if !db.is_empty() && db.parse::<u8>().is_err() {
            return Err(self.invalid(key, "the path must be a database number (redis://host:6379/0)"));
        }
        let [ca, cert, key_file] = tls_files;
        let tls = TlsFiles {
            ca_file: self.path(ca)?,
            cert_file: self.path(cert)?,
            key_file: self.path(key_file)?,
        };
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(self.invalid(
                key,
                format!("set both {} and {} for client certificates", cert.var(), key_file.var()),
            ));
        }
        Ok(Some(RedisEndpoint {
            url: url.to_string(),
            tls,
        }))
    }

    fn build(&self, needs: &[&Setting]) -> Result<Config, ConfigError> {
        let need = |s: &Setting| needs.iter().any(|n| n.key == s.key);
        let source = self.redis(
            &SOURCE_URL,
            [&SOURCE_TLS_CA_FILE, &SOURCE_TLS_CERT_FILE, &SOURCE_TLS_KEY_FILE],
            need(&SOURCE_URL),
        )?;
        let dest = self.redis(
            &DEST_URL,
            [&DEST_TLS_CA_FILE, &DEST_TLS_CERT_FILE, &DEST_TLS_KEY_FILE],
            need(&DEST_URL),
        )?;
        // Per-flow order and flow history need every event of a flow in
        // one partition: only a key-hashing partitioner will do.
        let partitioner = self.layers.kafka_properties.get("partitioner");
        if let Err(why) = redmirror_core::partition::Partitioner::from_property(partitioner.map(String::as_str)) {
            return Err(ConfigError::Invalid {
                var: format!("{ENV_PREFIX}KAFKA_PARTITIONER"),
                value: partitioner.cloned().unwrap_or_default(),
                constraint: why,
            });
        }
        let kafka_brokers = match self.raw(&KAFKA_BROKERS) {
            Some(b) => Some(Brokers::parse(b)),
            None if need(&KAFKA_BROKERS) => return Err(Self::missing(&KAFKA_BROKERS)),
            None => None,
        };
        let topic = self.string(&TOPIC)?;
        if !valid_topic(&topic) {
            return Err(self.invalid(&TOPIC, "a Kafka topic name: 1-240 characters of [a-zA-Z0-9._-]"));
        }
        let group_id = self.string(&GROUP_ID)?;
        let http_addr = self
            .string(&HTTP_ADDR)?
            .parse()
            .map_err(|_| self.invalid(&HTTP_ADDR, "expected host:port, like 127.0.0.1:9464"))?;
        let log_format = match self.string(&LOG_FORMAT)?.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(self.invalid(&LOG_FORMAT, "expected text or json")),
        };
        let admin_token = self.raw(&ADMIN_TOKEN).map(str::to_string);
        if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(self.invalid(&ADMIN_TOKEN, "must be at least 16 characters"));
        }
        let marker = self.string(&MARKER_FIELD)?;
        let keys = KeyLayout {
            flow_prefix: Bytes::from(self.string(&FLOW_KEY_PREFIX)?),
            index_key: Bytes::from(self.string(&INDEX_KEY)?),
            state_prefix: self.string(&STATE_PREFIX)?,
        };
        if keys.flow_prefix.starts_with(keys.state_prefix.as_bytes())
            || keys.state_prefix.as_bytes().starts_with(&keys.flow_prefix)
        {
            return Err(self.invalid(&STATE_PREFIX, "must not overlap REDMIRROR_FLOW_KEY_PREFIX"));
        }
        let rules = MirrorRules {
            fields: self.field_rules()?,
            filtered_orgs: self.list(&FILTERED_ORGS).into_iter().collect(),
            org_field: Bytes::from(self.string(&ORG_FIELD)?),
            marker_field: Bytes::from(marker),
            max_flow_bytes: self.number(&MAX_FLOW_BYTES, 1usize)?,
            max_record_bytes: usize::MAX,
        };
        if let (Some(s), Some(d)) = (&source, &dest) {
            if s.url == d.url {
                return Err(self.invalid(&DEST_URL, "the destination is the same URL as REDMIRROR_SOURCE_URL"));
            }
        }
        let lease_ttl = self.duration(&LEASE_TTL)?;
        if lease_ttl < Duration::from_secs(1) {
            return Err(self.invalid(&LEASE_TTL, "must be at least 1s"));
        }
        Ok(Config {
            source,
            dest,
            kafka_brokers,
            kafka_properties: self.layers.kafka_properties.clone(),
            topic,
            topic_partitions: self.number(&TOPIC_PARTITIONS, 1i32)?,
            topic_replication_factor: self.number(&TOPIC_REPLICATION_FACTOR, 1i32)?,
            topic_min_compaction_lag: self.duration(&TOPIC_MIN_COMPACTION_LAG)?,
            group_id,
            http_addr,
            admin_token,
            keys,
            rules,
            reconcile_interval: self.duration(&RECONCILE_INTERVAL)?,
            reconcile_barrier_timeout: self.duration(&RECONCILE_BARRIER_TIMEOUT)?,
            reconcile_batch: self.number(&RECONCILE_BATCH, 1usize)?,
            reconcile_rate_limit: self.number(&RECONCILE_RATE_LIMIT, 0u64)?,
            capture_batch: self.number(&CAPTURE_BATCH, 1usize)?,
            capture_pending_max: self.number(&CAPTURE_PENDING_MAX, 1usize)?,
            apply_batch: self.number(&APPLY_BATCH, 1usize)?,
            apply_max_rate: self.number(&APPLY_MAX_RATE, 0u64)?,
            lease_ttl,
            configure_notifications: self.boolean(&CONFIGURE_NOTIFICATIONS)?,
            shutdown_timeout: self.duration(&SHUTDOWN_TIMEOUT)?,
            log: self.string(&LOG)?,
            log_format,
        })
    }
}

fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 240
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// What [`redact_url`] prints for a value it cannot show safely.
pub const HIDDEN_URL: &str = "<hidden: not a well-formed URL, and it may hold a password>";

/// Replaces the password (and a lone user-info token) in a URL with `***`.
/// A value that is not a well-formed URL (it does not parse, or has a
/// query, a fragment or a path other than a database number: the marks of
/// a password with `/ # ?` unescaped) is never shown: [`HIDDEN_URL`].
pub fn redact_url(s: &str) -> String {
    let Ok(mut u) = url::Url::parse(s) else {
        return HIDDEN_URL.to_string();
    };
    let path = u.path().trim_start_matches('/');
    let plain_path = path.is_empty() || path.bytes().all(|b| b.is_ascii_digit());
    if u.query().is_some() || u.fragment().is_some() || !plain_path || unescaped_userinfo(s).is_some() {
        return HIDDEN_URL.to_string();
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    } else if !u.username().is_empty() && u.scheme().starts_with("redis") {
        // redis://secret@host: a lone token is a password.
        let _ = u.set_username("***");
    }
    u.to_string()
}

/// The first character of a URL's user information (its user and
/// password, before the last `@`) that a URL must escape, if any: `/`, `#`
/// or `?` there end the host part early, so the password is cut and read as
/// host, port, path or fragment.
fn unescaped_userinfo(url: &str) -> Option<char> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (userinfo, _) = rest.rsplit_once('@')?;
    userinfo.chars().find(|c| matches!(c, '/' | '#' | '?'))
}

/// True when a librdkafka property holds a secret (its value is never printed).
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password")
        || n.contains("secret")
        || n.contains("key.pem")
        || n.ends_with(".key")
        || n.contains("token")
}

#[cfg(test)]
mod tests;
