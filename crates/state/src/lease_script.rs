//! The lease's compare-and-expire and compare-and-delete scripts
//! (`lease_renew.lua`, `lease_release.lua`) behind a typed wrapper: the
//! lease and holder in, [`Held`] out, any other reply an error.
//!
//! # Contract
//! Replies: the integer 1 (this holder held the lease: renewed or released)
//! or 0 (it did not). The lease keys live under `redmirror:` (see
//! `redmirror_core::keys`); other instances take them with `SET NX PX`.

use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;

use redmirror_redis::Script;

/// Extends the lease while this holder holds it.
pub(crate) const RENEW: &str = include_str!("lease_renew.lua");
/// Deletes the lease while this holder holds it.
pub(crate) const RELEASE: &str = include_str!("lease_release.lua");

/// A lease and its would-be holder, as both scripts take them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaseArgs<'a> {
    /// The lease key.
    pub key: &'a str,
    /// This instance's holder id.
    pub holder: &'a str,
}

/// Whether this holder held the lease when the script ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// It did (and the lease was renewed or released).
    Yes,
    /// Another holder, or nobody.
    No,
}

impl Held {
    fn parse(reply: &Value, script: &str) -> Result<Held, fred::error::Error> {
        match reply {
            Value::Integer(1) => Ok(Held::Yes),
            Value::Integer(0) => Ok(Held::No),
            other => Err(fred::error::Error::new(
                fred::error::ErrorKind::Parse,
                format!("unexpected reply from the lease {script} script: {other:?}"),
            )),
        }
    }
}

/// Renews the lease for `ttl` if `args.holder` holds it.
pub(crate) async fn renew(
    script: &Script,
    client: &Client,
    args: LeaseArgs<'_>,
    ttl: Duration,
) -> Result<Held, fred::error::Error> {
    let reply = script
        .call(
            client,
            &[args.key.as_bytes()],
            vec![Value::from(args.holder), Value::from(ttl.as_millis() as i64)],
        )
        .await?;
    Held::parse(&reply, "renew")
}

/// Releases the lease if `args.holder` holds it.
pub(crate) async fn release(script: &Script, client: &Client, args: LeaseArgs<'_>) -> Result<Held, fred::error::Error> {
    let reply = script
        .call(client, &[args.key.as_bytes()], vec![Value::from(args.holder)])
        .await?;
    Held::parse(&reply, "release")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_zero_and_one_are_replies() {
        assert_eq!(Held::parse(&Value::Integer(1), "renew").ok(), Some(Held::Yes));
        assert_eq!(Held::parse(&Value::Integer(0), "renew").ok(), Some(Held::No));
        for bad in [Value::Integer(2), Value::Null, Value::from("1")] {
            assert!(Held::parse(&bad, "renew").is_err(), "{bad:?} was accepted");
        }
    }
}
