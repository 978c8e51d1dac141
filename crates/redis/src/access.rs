//! The permissions the source user needs (SPEC section 2), checked at start:
//! a missing one is refused with the exact `ACL SETUSER` line that grants
//! it, never retried for ever. On a cluster source every master is asked.
//!
//! Redis has no way for a user to ask what it may do (`ACL DRYRUN` needs
//! admin rights), so the check runs each command capture and reconcile use
//! once, harmlessly (reads of a key that does not exist, an empty
//! transaction, a subscription dropped at once), and reads the `NOPERM`
//! refusals: each names the command, or says a key or a channel is out of
//! reach.

use fred::error::Error;
use redmirror_config::RedisEndpoint;
use redmirror_core::KeyLayout;

use crate::bulk::{Bulk, Pipeline, Reply};
use crate::RedisError;

/// What the source user lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The user (from the URL; `default` without one).
    pub user: String,
    /// ACL rules that grant what is missing (`+multi`, `%R~client:*`, ...).
    pub grants: Vec<String>,
    /// The server's refusals, as it worded them.
    pub refusals: Vec<String>,
}

impl Missing {
    /// The `ACL SETUSER` line to run on the source.
    pub fn acl_line(&self) -> String {
        format!("ACL SETUSER {} {}", self.user, self.grants.join(" "))
    }
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the source user {:?} lacks permissions capture and reconcile need ({}); grant them on the source: {}",
            self.user,
            self.refusals.join("; "),
            self.acl_line()
        )
    }
}

/// Runs every source command once and collects the refusals; `Ok(None)`
/// when everything is allowed.
/// On a cluster source every master is checked (each node keeps its own
/// users), with the cluster commands capture also uses (`CLUSTER SHARDS`
/// and `CLUSTER SLOTS` to find the masters, `CLUSTER INFO` (the cluster
/// client's health check), `ASKING` to read a slot
/// being migrated).
pub async fn check_source(endpoint: &RedisEndpoint, keys: &KeyLayout) -> Result<Option<Missing>, RedisError> {
    let mut refusals = Vec::new();
    let seed = Bulk::new(endpoint)?;
    if !crate::cluster::is_cluster_node(&seed).await.unwrap_or(false) {
        // Standalone, or INFO refused (the probe names it).
        refusals = refusals_on(endpoint, &seed, keys, false).await?;
    } else {
        // Every master, or the configured node alone when the masters
        // cannot be listed (CLUSTER SHARDS refused: the probe names it).
        let nodes: Vec<Bulk> = match crate::cluster::Cluster::detect(endpoint).await {
            Ok(Some(cluster)) => cluster
                .topology()
                .shards
                .iter()
                .map(|s| cluster.bulk(&s.addr))
                .collect::<Result<_, _>>()?,
            _ => vec![seed],
        };
        for bulk in &nodes {
            for r in refusals_on(endpoint, bulk, keys, true).await? {
                if !refusals.contains(&r) {
                    refusals.push(r);
                }
            }
        }
    }
    if refusals.is_empty() {
        return Ok(None);
    }
    let prefix = String::from_utf8_lossy(&keys.scan_pattern()).into_owned();
    let channel = format!("__keyevent@{}__:*", endpoint.db());
    let mut grants: Vec<String> = Vec::new();
    for r in &refusals {
        let grant = grant_for(r, &prefix, &channel);
        if !grants.contains(&grant) {
            grants.push(grant);
        }
    }
    Ok(Some(Missing {
        user: user_of(endpoint),
        grants,
        refusals,
    }))
}

/// The `NOPERM` refusals of one server.
async fn refusals_on(
    endpoint: &RedisEndpoint,
    bulk: &Bulk,
    keys: &KeyLayout,
    cluster: bool,
) -> Result<Vec<String>, RedisError> {
    let wrap = |e: Error| RedisError::new(endpoint, e);
    let probe = keys.flow_key(b"redmirror-permission-probe");
    let pattern = keys.scan_pattern();
    let mut p = Pipeline::new();
    p.cmd(&[b"PING".as_ref()])
        .cmd(&[b"TIME".as_ref()])
        .cmd(&[b"INFO".as_ref(), b"server"])
        .cmd(&[b"CONFIG".as_ref(), b"GET", b"notify-keyspace-events"])
        .cmd(&[b"SCAN".as_ref(), b"0", b"MATCH", &pattern, b"COUNT", b"1"])
        .key_cmd(b"HGETALL", &probe)
        .key_cmd(b"EXISTS", &probe)
        // EXEC alone first: without MULTI it is refused (NOPERM) or fails
        // (`ERR EXEC without MULTI`), so both halves are checked even when
        // MULTI is refused.
        .cmd(&[b"EXEC".as_ref()])
        .cmd(&[b"MULTI".as_ref()])
        .cmd(&[b"EXEC".as_ref()]);
    if cluster {
        p.cmd(&[b"CLUSTER".as_ref(), b"SHARDS"])
            .cmd(&[b"CLUSTER".as_ref(), b"SLOTS"])
            .cmd(&[b"CLUSTER".as_ref(), b"INFO"])
            .cmd(&[b"ASKING".as_ref()]);
    }
    let mut refusals = Vec::new();
    bulk.run(&p, |_, r| {
        // A refused EXEC reads `EXECABORT ... because of: NOPERM ...`.
        if let Reply::Error(e) = r {
            if let Some(refused) = crate::refusal(e) {
                refusals.push(String::from_utf8_lossy(refused).into_owned());
            }
        }
    })
    .await
    .map_err(wrap)?;
    let channel = format!("__keyevent@{}__:*", endpoint.db());
    if let Err(e) = bulk.psubscribe(channel.as_bytes()).await {
        if crate::is_refused(&e) {
            refusals.push(e.details().to_string());
        } else {
            return Err(wrap(e));
        }
    }
    Ok(refusals)
}

/// The ACL rule that lifts one `NOPERM` refusal.
fn grant_for(refusal: &str, key_pattern: &str, channel: &str) -> String {
    let lower = refusal.to_ascii_lowercase();
    if let Some(cmd) = lower.split('\'').nth(1).filter(|c| !c.is_empty()) {
        return format!("+{cmd}");
    }
    if lower.contains("channel") {
        format!("&{channel}")
    } else {
        format!("%R~{key_pattern}")
    }
}

fn user_of(endpoint: &RedisEndpoint) -> String {
    fred::types::config::Config::from_url(&endpoint.url)
        .ok()
        .and_then(|c| c.username)
        .unwrap_or_else(|| "default".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_maps_to_the_rule_that_lifts_it() {
        let g = |r| grant_for(r, "client:*", "__keyevent@0__:*");
        assert_eq!(
            g("NOPERM User ro has no permissions to run the 'multi' command"),
            "+multi"
        );
        assert_eq!(
            g("NOPERM this user has no permissions to run the 'config|get' command"),
            "+config|get"
        );
        assert_eq!(g("NOPERM No permissions to access a key"), "%R~client:*");
        assert_eq!(
            g("NOPERM this user has no permissions to access one of the channels used as arguments"),
            "&__keyevent@0__:*"
        );
        let m = Missing {
            user: "ro".into(),
            grants: vec!["+multi".into(), "+exec".into()],
            refusals: vec![],
        };
        assert_eq!(m.acl_line(), "ACL SETUSER ro +multi +exec");
    }
}
