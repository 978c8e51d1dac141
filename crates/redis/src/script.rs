//! Lua scripts: `EVALSHA`, and `SCRIPT LOAD` on `NOSCRIPT`.
//!
//! Every script is a `.lua` file next to its Rust wrapper, loaded with
//! `include_str!`, and parsed by that wrapper into a type (any other reply
//! is an error):
//! - `flow.lua` (here): the guard fragment, the state of a destination flow
//!   key (`TYPE`, then the marker). Not a script itself: `apply.lua`
//!   (`redmirror_write`) and `dest_read.lua` (`redmirror_reconcile`) start
//!   with it, composed with `concat!`, so the guard is written once;
//! - `lease_renew.lua`, `lease_release.lua` (`redmirror_state::lease`);
//! - `epoch_sync.lua` (`redmirror_state::epoch`);
//! - `gap_take.lua` (`redmirror_state::signal`);
//! - `prune.lua` (`redmirror_reconcile::prune`).
//!
//! No script writes the marker value: it comes from
//! `redmirror_core::rules::MARKER_VALUE` as an argument.
//!
//! # Contract
//! A script's keys, arguments and reply are documented on its wrapper and
//! are the contract between the `.lua` file and that wrapper: change them
//! together. What a script writes is public (the destination's flows, its
//! index and the `redmirror:*` keys of `redmirror_core::keys`).

use fred::interfaces::{ClientLike, LuaInterface};
use fred::prelude::*;
use fred::types::{CustomCommand, Value};

/// A Lua script and its SHA1.
#[derive(Debug, Clone)]
pub struct Script {
    body: &'static str,
    sha: String,
    read_only: bool,
}

fn sha1_hex(body: &str) -> String {
    // SHA1 as Redis computes it, so EVALSHA works before any SCRIPT LOAD.
    sha1_smol::Sha1::from(body).digest().to_string()
}

impl Script {
    /// A script run with `EVALSHA`.
    pub fn new(body: &'static str) -> Self {
        Script {
            body,
            sha: sha1_hex(body),
            read_only: false,
        }
    }

    /// A read-only script run with `EVALSHA_RO` (works for read-only ACL users).
    pub fn read_only(body: &'static str) -> Self {
        Script {
            read_only: true,
            ..Script::new(body)
        }
    }

    /// The SHA1.
    pub fn sha(&self) -> &str {
        &self.sha
    }

    /// The `EVALSHA`/`EVALSHA_RO` command of a call whose first key
    /// (`KEYS[1]`) is `first_key`. On a clustered client it goes to the node
    /// owning that key's slot (fred would hash the SHA, the first string
    /// argument, otherwise): every key of one call must be in that slot.
    pub fn command(&self, first_key: Option<&[u8]>) -> CustomCommand {
        let hash = match first_key {
            Some(k) => fred::types::ClusterHash::Custom(redmirror_core::slot::of(k)),
            None => fred::types::ClusterHash::Random,
        };
        CustomCommand::new_static(if self.read_only { "EVALSHA_RO" } else { "EVALSHA" }, hash, false)
    }

    /// The arguments of one call: sha, number of keys, keys, args.
    pub fn args(&self, keys: &[&[u8]], args: Vec<Value>) -> Vec<Value> {
        let mut v = Vec::with_capacity(2 + keys.len() + args.len());
        v.push(Value::from(self.sha.as_str()));
        v.push(Value::from(keys.len() as i64));
        v.extend(keys.iter().map(|k| Value::Bytes(bytes::Bytes::copy_from_slice(k))));
        v.extend(args);
        v
    }

    /// `EVALSHA` arguments from owned keys and arguments (no copies).
    pub fn args_owned(&self, keys: Vec<bytes::Bytes>, args: Vec<Value>) -> Vec<Value> {
        let mut v = Vec::with_capacity(2 + keys.len() + args.len());
        v.push(Value::from(self.sha.as_str()));
        v.push(Value::from(keys.len() as i64));
        v.extend(keys.into_iter().map(Value::Bytes));
        v.extend(args);
        v
    }

    /// Loads the script (`SCRIPT LOAD`); on a clustered client, on every
    /// primary (a call may land on any of them).
    pub async fn load<C: ClientLike + LuaInterface>(&self, client: &C) -> Result<(), fred::error::Error> {
        if client.is_clustered() {
            let _: String = client.script_load_cluster(self.body).await?;
            return Ok(());
        }
        let _: String = client
            .custom(
                CustomCommand::new_static("SCRIPT", fred::types::ClusterHash::Random, false),
                vec!["LOAD", self.body],
            )
            .await?;
        Ok(())
    }

    /// Runs once, loading the script first if the server does not know it
    /// (then retrying once: a second `NOSCRIPT` is an error).
    pub async fn call(&self, client: &Client, keys: &[&[u8]], args: Vec<Value>) -> Result<Value, fred::error::Error> {
        match client
            .custom::<Value, Value>(self.command(keys.first().copied()), self.args(keys, args.clone()))
            .await
        {
            Err(e) if is_noscript(&e) => {
                self.load(client).await?;
                client
                    .custom(self.command(keys.first().copied()), self.args(keys, args))
                    .await
            }
            other => other,
        }
    }

    /// Runs several calls (keys, arguments) in one pipeline and returns their
    /// replies in order; the first error fails them all. On `NOSCRIPT` (a
    /// restarted node, or a cluster node that never saw the script) the
    /// script is loaded (everywhere, on a cluster) and the whole pipeline is
    /// sent once more, so the calls must be safe to repeat. On a clustered
    /// client each call goes to the node of its slot.
    pub async fn call_all(
        &self,
        client: &Client,
        calls: Vec<(Vec<bytes::Bytes>, Vec<Value>)>,
    ) -> Result<Vec<Value>, fred::error::Error> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let mut loaded = false;
        loop {
            let pipeline = client.pipeline();
            for (keys, args) in &calls {
                let _: () = pipeline
                    .custom(
                        self.command(keys.first().map(|k| k.as_ref())),
                        self.args_owned(keys.clone(), args.clone()),
                    )
                    .await?;
            }
            let results = pipeline.try_all::<Value>().await;
            if !loaded && results.iter().any(|r| matches!(r, Err(e) if is_noscript(e))) {
                self.load(client).await?;
                loaded = true;
                continue;
            }
            return results.into_iter().collect();
        }
    }
}

/// True when the server does not know the script (after a restart or `SCRIPT FLUSH`).
pub fn is_noscript(e: &fred::error::Error) -> bool {
    e.details().starts_with("NOSCRIPT")
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha1_matches_known_vectors() {
        assert_eq!(super::sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
