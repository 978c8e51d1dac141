//! Redis access shared by every role.
//!
//! # Layout
//! - [`connect`]: a fred client for a configured endpoint (TLS files,
//!   endless reconnect with backoff, command timeout), connected and checked
//!   with `PING` before it is returned (fail fast at start-up); a clustered
//!   client when the endpoint is a Redis Cluster node ([`is_cluster`]).
//! - [`bulk`]: pipelined per-key reads on a connection of their own, with
//!   replies parsed in place (the reconcile pass's hot path), and the
//!   notification subscription.
//! - [`cluster`]: a Redis Cluster source: its masters, the owner of every
//!   slot, and the changes of that map.
//! - [`liveness`]: TCP keepalive, read deadlines and subscription probes,
//!   so a connection that silently stops carrying bytes is noticed.
//! - [`Script`]: a Lua script run with `EVALSHA`, loaded on `NOSCRIPT`; the
//!   [`script`] module lists every script and the shared guard fragment.
//! - [`source`]: the atomic read of flows plus the source clock
//!   (`MULTI`, `TIME`, `HGETALL`..., `EXEC`; no scripting).
//! - [`access`]: the source user's permissions, checked at start.
//! - [`epoch`]: the source epoch, which orders events across a failover,
//!   a restart or a clock step back.
//! - [`routed`]: bulk reads routed to the master owning each key on a
//!   cluster (one connection set on a standalone server).
//! - [`value`]: turning fred values into bytes.
//!
//! The mirror's own bookkeeping on the destination (leases, the hold,
//! apply members, signals) is `redmirror_state`'s.

use std::time::Duration;

use fred::prelude::*;
use redmirror_config::RedisEndpoint;

pub mod access;
pub mod bulk;
pub mod cluster;
pub mod epoch;
pub mod liveness;
pub mod routed;
pub mod script;
pub mod source;
pub mod value;

pub use script::Script;

/// A Redis failure: the endpoint it concerns (URL redacted); what the
/// server or the operating system said is its `source()` ([`Cause`]).
#[derive(Debug, thiserror::Error)]
#[error("redis {endpoint}")]
pub struct RedisError {
    /// Redacted URL.
    pub endpoint: String,
    /// Cause.
    #[source]
    pub source: Cause,
}

/// A fred error as people read it ([`describe`]). fred's own text of an
/// I/O error is Rust's `Debug` of it (`IO Error: Os { code: 111, kind:
/// ConnectionRefused, .. }`), which is not for people; the error itself is
/// kept for classifying ([`RedisError::is_retryable`]).
#[derive(Debug)]
pub struct Cause(pub fred::error::Error);

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe(&self.0))
    }
}

impl std::error::Error for Cause {}

/// A fred error in a few words: what the server or the operating system
/// said (`connection refused`, `WRONGPASS invalid username-password pair`),
/// without fred's kind prefix or Rust's `Debug` of an I/O error.
pub fn describe(e: &fred::error::Error) -> String {
    let d = e.details().trim();
    let d = d.strip_prefix("IO Error: ").unwrap_or(d);
    // `Os { .., message: "Connection refused" }` or
    // `Custom { kind: .., error: "Connection refused" }`.
    let said = ["message: \"", "error: \""]
        .iter()
        .find_map(|k| d.split_once(k))
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or(d, |(m, _)| m);
    if said.is_empty() {
        return format!("{:?}", e.kind()).to_lowercase();
    }
    // "Connection refused" -> "connection refused"; "WRONGPASS ..." stays.
    let mut chars = said.chars();
    match (chars.next(), chars.next()) {
        (Some(a), Some(b)) if a.is_uppercase() && b.is_lowercase() => {
            a.to_lowercase().chain(said[1..].chars()).collect()
        }
        _ => said.to_string(),
    }
}

impl RedisError {
    /// Wraps a fred error.
    pub fn new(endpoint: &RedisEndpoint, source: fred::error::Error) -> Self {
        RedisError {
            endpoint: endpoint.redacted(),
            source: Cause(source),
        }
    }
}

impl RedisError {
    /// True when waiting for the server may help: it is down, refusing,
    /// loading or timing out; not bad credentials, a bad URL, TLS set-up or a
    /// command the server will never accept.
    pub fn is_retryable(&self) -> bool {
        use fred::error::ErrorKind;
        !is_permanent(&self.source.0)
            && !matches!(
                self.source.0.kind(),
                ErrorKind::Auth | ErrorKind::Config | ErrorKind::Tls | ErrorKind::Url
            )
    }
}

/// True when a failure (its cause chain, as `anyhow::Error::chain` gives
/// it) is a Redis connection error worth waiting out
/// ([`RedisError::is_retryable`]).
pub fn retryable_in<'a>(mut chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>) -> bool {
    chain
        .find_map(|c| c.downcast_ref::<RedisError>())
        .is_some_and(RedisError::is_retryable)
}

/// The `NOPERM ...` refusal in a server error's text, alone or inside
/// another (`EXECABORT ... because of: NOPERM ...`, a script's error), if
/// there is one: from `NOPERM` to the end.
pub fn refusal(detail: &[u8]) -> Option<&[u8]> {
    detail.windows(6).position(|w| w == b"NOPERM").map(|at| &detail[at..])
}

/// True when the server refused `e` for want of a permission (`NOPERM`):
/// the same call is refused until an ACL grants it. Set-up and checks
/// report it at once, with the grant to add; the write paths keep retrying
/// it ([`is_permanent`] says no), so fixing the ACL resumes them.
pub fn is_refused(e: &fred::error::Error) -> bool {
    refusal(e.details().as_bytes()).is_some()
}

/// True for errors that retrying cannot fix: the command or its data is
/// wrong (`WRONGTYPE`, a script error, an unparseable reply). Everything else
/// (connection lost, timeout, `LOADING`, `BUSY`, `OOM`, `NOPERM` until the
/// ACL is fixed, ...) is transient: retry with backoff, never skip.
pub fn is_permanent(e: &fred::error::Error) -> bool {
    use fred::error::ErrorKind::*;
    match e.kind() {
        InvalidArgument | InvalidCommand | Parse => true,
        Unknown => e.details().starts_with("ERR"),
        _ => false,
    }
}

/// Builds, connects and pings a client for `endpoint`. `name` is sent as
/// `CLIENT SETNAME` material in logs only.
///
/// When the server is a Redis Cluster node (`INFO cluster` says
/// `cluster_enabled:1`), the client returned is a clustered one seeded with
/// that node (same TLS, credentials, timeouts and reconnect policy): it
/// discovers the other nodes, routes each command by hash slot and follows
/// `MOVED`/`ASK` ([`is_cluster`] tells it apart). A cluster has only
/// database 0: a URL naming another one is a configuration error. A
/// standalone server gets the client [`build`] makes.
pub async fn connect(endpoint: &RedisEndpoint, name: &str) -> Result<Client, RedisError> {
    let db = endpoint.db();
    // A standalone client SELECTs the URL's database when it connects,
    // which a cluster node refuses: with a database in the URL, ask a probe
    // without one first.
    let client = if db == 0 {
        build(endpoint, name)?
    } else {
        let mut config = base_config(endpoint)?;
        config.database = None;
        let probe = build_from(endpoint, config, 1)?;
        let clustered = init_and_probe(endpoint, &probe).await;
        let _ = probe.quit().await;
        if clustered? {
            return Err(cluster_db_error(endpoint, db));
        }
        build(endpoint, name)?
    };
    if !init_and_probe(endpoint, &client).await? {
        tracing::debug!(endpoint = %endpoint.redacted(), name, "Connected to Redis.");
        return Ok(client);
    }
    // A clustered client finds the nodes with CLUSTER SLOTS: a user that
    // may not run it is refused here, by name, not retried for ever.
    let slots: Result<fred::types::Value, _> = client
        .custom(fred::cmd!("CLUSTER"), vec![fred::types::Value::from("SLOTS")])
        .await;
    let _ = client.quit().await;
    if let Err(e) = slots {
        if is_refused(&e) {
            return Err(RedisError::new(
                endpoint,
                fred::error::Error::new(
                    fred::error::ErrorKind::Auth,
                    format!(
                        "{}: a Redis Cluster client needs CLUSTER SLOTS to find the nodes; grant it on every node: \
                         ACL SETUSER {} +cluster|slots",
                        e.details(),
                        fred::types::config::Config::from_url(&endpoint.url)
                            .ok()
                            .and_then(|c| c.username)
                            .unwrap_or_else(|| "default".into())
                    ),
                ),
            ));
        }
    }
    let clustered = build_clustered(endpoint)?;
    clustered.init().await.map_err(|e| {
        // A refused set-up command will be refused again: say so, do not wait.
        let e = if is_refused(&e) {
            fred::error::Error::new(fred::error::ErrorKind::Auth, e.details().to_string())
        } else {
            e
        };
        RedisError::new(endpoint, e)
    })?;
    let _: String = clustered.ping(None).await.map_err(|e| RedisError::new(endpoint, e))?;
    tracing::debug!(endpoint = %endpoint.redacted(), name, "Connected to Redis Cluster.");
    Ok(clustered)
}

/// True when `client` is a clustered client ([`connect`] met a Redis
/// Cluster node): commands go to the node owning their key's slot, and a
/// script may only touch keys of one slot.
pub fn is_cluster(client: &Client) -> bool {
    client.is_clustered()
}

/// The nodes a server-wide command (`CONFIG GET`, `INFO`) must be sent to
/// so it covers the whole keyspace: every primary of a clustered client
/// (as the client last saw the cluster), else the one server (`None`).
pub fn primaries(client: &Client) -> Vec<Option<fred::types::config::Server>> {
    if !client.is_clustered() {
        return vec![None];
    }
    client
        .cached_cluster_state()
        .map(|s| s.unique_primary_nodes().into_iter().map(Some).collect())
        .unwrap_or_else(|| vec![None])
}

/// Connects `client`, pings it and tells whether the server is a cluster node.
async fn init_and_probe(endpoint: &RedisEndpoint, client: &Client) -> Result<bool, RedisError> {
    client.init().await.map_err(|e| RedisError::new(endpoint, e))?;
    let _: String = client.ping(None).await.map_err(|e| RedisError::new(endpoint, e))?;
    // A server that refuses INFO (renamed, or an ACL without it) is taken
    // for a standalone one, as before cluster support: nothing else breaks.
    match client.info::<String>(Some(fred::types::InfoKind::Cluster)).await {
        Ok(info) => Ok(cluster_enabled(&info)),
        Err(e) => {
            tracing::debug!(endpoint = %endpoint.redacted(), error = %e, "INFO cluster failed; taking the server for a standalone one.");
            Ok(false)
        }
    }
}

/// True when an `INFO cluster` reply says cluster mode is on.
fn cluster_enabled(info: &str) -> bool {
    info.lines()
        .filter_map(|l| l.strip_prefix("cluster_enabled:"))
        .any(|v| v.trim() == "1")
}

fn cluster_db_error(endpoint: &RedisEndpoint, db: u8) -> RedisError {
    RedisError::new(
        endpoint,
        fred::error::Error::new(
            fred::error::ErrorKind::Config,
            format!(
                "{} is a Redis Cluster node, which has only database 0, but the URL names database {db}: drop                  the /{db} from the URL",
                endpoint.redacted()
            ),
        ),
    )
}

/// The URL's configuration with its TLS files.
fn base_config(endpoint: &RedisEndpoint) -> Result<Config, RedisError> {
    let mut config = Config::from_url(&endpoint.url).map_err(|e| RedisError::new(endpoint, e))?;
    if endpoint.is_tls() {
        config.tls = Some(tls_connector(endpoint)?.into());
    }
    Ok(config)
}

/// A clustered client seeded with the node `endpoint` names.
fn build_clustered(endpoint: &RedisEndpoint) -> Result<Client, RedisError> {
    let mut config = base_config(endpoint)?;
    let db = endpoint.db();
    if db != 0 {
        return Err(cluster_db_error(endpoint, db));
    }
    config.database = None;
    if let ServerConfig::Centralized { server } = &config.server {
        config.server = ServerConfig::Clustered {
            hosts: vec![server.clone()],
            policy: fred::types::config::ClusterDiscoveryPolicy::default(),
        };
    }
    build_from(endpoint, config, CLUSTER_COMMAND_ATTEMPTS)
}

/// Attempts per command on a clustered client. fred counts following a
/// `MOVED` or `ASK` redirect as an attempt: with one, the first command
/// after a slot moved fails ("Too many failed write attempts") instead of
/// being redirected. Three follow an `ASK` during a migration and the
/// `MOVED` after it. (A standalone client makes one attempt: callers
/// retry.)
const CLUSTER_COMMAND_ATTEMPTS: u32 = 3;

/// Builds a standalone client without connecting it. Reconnects forever with
/// exponential backoff (100 ms to 5 s). Its sockets have TCP keepalive and
/// a user timeout, and a command left without a reply for
/// [`liveness::UNRESPONSIVE`] closes its connection, which is then made
/// again: a link that silently died is replaced, not waited on for ever.
/// Its event channels keep fred's default 32 slots each: no client here
/// subscribes through fred (capture's notification stream is read by
/// [`bulk::Bulk::psubscribe`]). [`connect`] uses the same settings for a
/// clustered client.
pub fn build(endpoint: &RedisEndpoint, _name: &str) -> Result<Client, RedisError> {
    build_from(endpoint, base_config(endpoint)?, 1)
}

fn build_from(endpoint: &RedisEndpoint, config: Config, attempts: u32) -> Result<Client, RedisError> {
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
            c.internal_command_timeout = Duration::from_secs(10);
            c.max_command_attempts = attempts;
            c.tcp = fred::types::config::TcpConfig {
                keepalive: Some(liveness::tcp_keepalive()),
                user_timeout: Some(liveness::TCP_USER_TIMEOUT),
                ..Default::default()
            };
            c.unresponsive = fred::types::config::UnresponsiveConfig {
                max_timeout: Some(liveness::UNRESPONSIVE),
                interval: liveness::UNRESPONSIVE_CHECK,
            };
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(30);
        });
    builder.set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
    builder.build().map_err(|e| RedisError::new(endpoint, e))
}

fn tls_connector(endpoint: &RedisEndpoint) -> Result<fred::types::config::TlsConnector, RedisError> {
    Ok(fred::types::config::TlsConnector::from(tls_config(endpoint)?))
}

/// The rustls client configuration for a `rediss://` endpoint: its CA file
/// (or the system's roots) and, when both are given, its client certificate.
fn tls_config(endpoint: &RedisEndpoint) -> Result<rustls::ClientConfig, RedisError> {
    let fail = |msg: String| RedisError::new(endpoint, fred::error::Error::new(fred::error::ErrorKind::Tls, msg));
    let mut roots = rustls::RootCertStore::empty();
    match &endpoint.tls.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| fail(format!("CA file {}: {e}", path.display())))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| fail(format!("CA file {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| fail(format!("CA file {}: {e}", path.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_root_certificates(roots);
    let config = match (&endpoint.tls.cert_file, &endpoint.tls.key_file) {
        (Some(cert), Some(key)) => {
            let certs = std::fs::read(cert).map_err(|e| fail(format!("cert file {}: {e}", cert.display())))?;
            let certs: Vec<_> = rustls_pemfile::certs(&mut certs.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| fail(format!("cert file {}: {e}", cert.display())))?;
            let keyb = std::fs::read(key).map_err(|e| fail(format!("key file {}: {e}", key.display())))?;
            let key = rustls_pemfile::private_key(&mut keyb.as_slice())
                .map_err(|e| fail(format!("key file {}: {e}", key.display())))?
                .ok_or_else(|| fail(format!("key file {}: no private key", key.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| fail(e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// Pings `client` every [`liveness::HEARTBEAT`], for ever: an idle
/// connection that silently died then fails its ping's reply deadline and
/// is made again before a caller needs it. Run it beside a long-lived
/// client, in a `select!` with the owner's stop signal. Failures are the
/// callers' to report (the connection is down for them too): logged at
/// DEBUG only. See [`watch`] for a heartbeat that also drives readiness.
pub async fn heartbeat(client: Client) {
    loop {
        tokio::time::sleep(liveness::HEARTBEAT).await;
        if let Err(e) = ping_within(&client).await {
            tracing::debug!(error = %e, "Heartbeat PING failed.");
        }
    }
}

/// [`heartbeat`] that also marks `component` down in `health` when a
/// `PING` goes unanswered for [`liveness::UNRESPONSIVE`], and up again
/// once one is answered: an idle process learns that its server is gone
/// before the first command that needs it. It only lifts what it set, so
/// a component another check holds down (a failing write) stays down.
pub async fn watch(
    client: Client,
    health: redmirror_telemetry::Health,
    component: redmirror_telemetry::Component,
    what: &'static str,
) {
    loop {
        tokio::time::sleep(liveness::HEARTBEAT).await;
        match ping_within(&client).await {
            Ok(()) => health.set_up_if_down_by(component, HEARTBEAT_CHECK),
            Err(e) => {
                // `set_down_by` logs the change once, with what to check.
                health.set_down_by(
                    component,
                    HEARTBEAT_CHECK,
                    &format!("{what} does not answer PING: {}", describe(&e)),
                );
            }
        }
    }
}

/// The check name [`watch`] marks its component down under.
const HEARTBEAT_CHECK: &str = "heartbeat";

/// One `PING`, failed when unanswered for [`liveness::UNRESPONSIVE`].
async fn ping_within(client: &Client) -> Result<(), fred::error::Error> {
    match tokio::time::timeout(liveness::UNRESPONSIVE, client.ping::<String>(None)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(fred::error::Error::new(
            fred::error::ErrorKind::Timeout,
            format!("no reply in {} s", liveness::UNRESPONSIVE.as_secs()),
        )),
    }
}

/// The server's `run_id` (tells two servers apart even behind different URLs).
pub async fn run_id(client: &Client) -> Result<String, fred::error::Error> {
    let info: String = client.info(Some(fred::types::InfoKind::Server)).await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// Why the source and the destination may not be the same server (the same
/// `run_id`) or, when both are Redis Clusters, the same cluster (they share
/// a node id: two URLs naming two nodes of one cluster): `None` when they
/// are different (or one does not say).
pub async fn same_server(source: &Client, dest: &Client) -> Result<Option<&'static str>, fred::error::Error> {
    if source.is_clustered() && dest.is_clustered() {
        let (a, b) = (cluster_node_ids(source).await?, cluster_node_ids(dest).await?);
        return Ok((!a.is_disjoint(&b)).then_some(
            "the source and the destination are the same Redis Cluster (they share node ids): refusing to start; \
             check REDMIRROR_SOURCE_URL and REDMIRROR_DEST_URL",
        ));
    }
    let (a, b) = (run_id(source).await?, run_id(dest).await?);
    Ok((!a.is_empty() && a == b).then_some(
        "the source and the destination are the same Redis server (same run_id): refusing to start; check \
         REDMIRROR_SOURCE_URL and REDMIRROR_DEST_URL",
    ))
}

/// The ids of every node of the cluster a clustered client is on (`CLUSTER
/// SHARDS`, which the documented cluster ACL grants; any node knows them all).
async fn cluster_node_ids(client: &Client) -> Result<std::collections::BTreeSet<String>, fred::error::Error> {
    let reply: fred::types::Value = client
        .custom(fred::cmd!("CLUSTER"), vec![fred::types::Value::from("SHARDS")])
        .await?;
    let mut ids = std::collections::BTreeSet::new();
    collect_ids(&reply, &mut ids);
    Ok(ids)
}

/// Every value named `id` in a `CLUSTER SHARDS` reply (RESP2 flat arrays
/// of name, value, or RESP3 maps).
fn collect_ids(v: &fred::types::Value, ids: &mut std::collections::BTreeSet<String>) {
    use fred::types::Value;
    match v {
        Value::Array(items) => {
            for pair in items.chunks(2) {
                if let [k, Value::String(id)] = pair {
                    if k.as_str().as_deref() == Some("id") {
                        ids.insert(id.to_string());
                    }
                }
            }
            for item in items {
                collect_ids(item, ids);
            }
        }
        Value::Map(map) => {
            for (k, value) in map.clone().inner() {
                match (k.as_str() == Some("id"), &value) {
                    (true, Value::String(id)) => {
                        ids.insert(id.to_string());
                    }
                    _ => collect_ids(&value, ids),
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod cluster_tests {
    #[test]
    fn node_ids_are_read_from_cluster_shards() {
        use fred::types::Value;
        let node = |id: &str| Value::Array(vec!["id".into(), id.into(), "port".into(), Value::Integer(7000)]);
        let reply = Value::Array(vec![Value::Array(vec![
            "slots".into(),
            Value::Array(vec![Value::Integer(0), Value::Integer(16383)]),
            "nodes".into(),
            Value::Array(vec![node("a1"), node("a2")]),
        ])]);
        let mut ids = Default::default();
        super::collect_ids(&reply, &mut ids);
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["a1", "a2"]);
    }

    #[test]
    fn cluster_mode_is_read_from_info_cluster() {
        assert!(super::cluster_enabled("# Cluster\r\ncluster_enabled:1\r\n"));
        assert!(!super::cluster_enabled("# Cluster\r\ncluster_enabled:0\r\n"));
        assert!(!super::cluster_enabled(""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_found_alone_or_inside_another_error() {
        let e = |d: &str| fred::error::Error::new(fred::error::ErrorKind::Unknown, d.to_string());
        assert!(is_refused(&e(
            "NOPERM User ro has no permissions to run the 'multi' command"
        )));
        assert_eq!(
            refusal(b"EXECABORT Transaction discarded because of: NOPERM no 'exec'"),
            Some(&b"NOPERM no 'exec'"[..])
        );
        assert!(!is_refused(&e("ERR unknown command 'exec'")));
        assert!(!is_refused(&e("Connection refused")));
        assert_eq!(refusal(b""), None);
    }

    #[test]
    fn a_redis_error_is_said_in_a_few_words() {
        let io = fred::error::Error::new(
            fred::error::ErrorKind::IO,
            r#"Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }"#,
        );
        assert_eq!(describe(&io), "connection refused");
        let auth = fred::error::Error::new(fred::error::ErrorKind::Auth, "WRONGPASS invalid username-password pair");
        assert_eq!(describe(&auth), "WRONGPASS invalid username-password pair");
    }

    /// What `redmirror check` and the logs print for a server that is down:
    /// a sentence naming the address and the cause once, no Rust `Debug`.
    #[test]
    fn a_refused_connection_reads_as_a_sentence() {
        let endpoint = RedisEndpoint {
            url: "redis://user:secret@127.0.0.1:1".into(),
            tls: Default::default(),
        };
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = RedisError::new(&endpoint, fred::error::Error::from(io));
        assert!(
            e.source.0.details().contains("Custom {"),
            "fred keeps Rust's Debug: {}",
            e.source.0
        );
        assert_eq!(
            e.to_string(),
            "redis redis://user:***@127.0.0.1:1",
            "what failed, without its cause"
        );
        assert_eq!(
            redmirror_telemetry::errors::Chain(&e).to_string(),
            "redis redis://user:***@127.0.0.1:1: connection refused"
        );
        let os = fred::error::Error::from(std::io::Error::from_raw_os_error(111));
        assert_eq!(
            redmirror_telemetry::errors::Chain(&RedisError::new(&endpoint, os)).to_string(),
            "redis redis://user:***@127.0.0.1:1: connection refused"
        );
        assert!(e.is_retryable());
    }
}
