//! Apply's members on the destination: every apply instance announces
//! itself in a sorted set (score: when, in ms) so a rewind knows which
//! instances must stop writing before it starts, and `redmirror status`
//! counts them; each instance records in a hash which hold it stopped
//! writing for.

use std::collections::HashMap;
use std::time::Duration;

use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface};
use fred::prelude::Client;
use tokio_util::sync::CancellationToken;

use crate::hold::Hold;

/// How often an apply instance announces itself.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// A member (or hold acknowledgement) not refreshed for this long is
/// forgotten: 120 heartbeats, far past any pause of a live process.
pub const MEMBER_TTL_MS: i64 = 60_000;

/// A member announced within this long is live: six heartbeats.
const LIVE_WITHIN_MS: i64 = 3000;

/// A name for this process's member, unique across restarts.
pub fn member_name() -> String {
    format!("{}-{}", std::process::id(), redmirror_core::now_us())
}

/// Every [`HEARTBEAT`] until `shutdown`: announces `member` in
/// `members_key`, and forgets members that stopped announcing themselves
/// (crashed instances) so the set stays as small as the live group.
pub async fn announce(client: Client, members_key: String, member: String, shutdown: CancellationToken) {
    loop {
        let now_ms = redmirror_core::now_us() / 1000;
        let r: Result<(), fred::error::Error> = async {
            let _: i64 = client
                .zadd(
                    members_key.as_str(),
                    None,
                    None,
                    false,
                    false,
                    (now_ms as f64, member.as_str()),
                )
                .await?;
            let _: i64 = client
                .zremrangebyscore(members_key.as_str(), f64::NEG_INFINITY, (now_ms - MEMBER_TTL_MS) as f64)
                .await?;
            let _: () = client.pexpire(members_key.as_str(), MEMBER_TTL_MS, None).await?;
            Ok(())
        }
        .await;
        if let Err(e) = r {
            tracing::debug!(key = %members_key, error = %e, "Heartbeat not written.");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
}

/// Removes `member` from `members_key` (a clean stop).
pub async fn leave(client: &Client, members_key: &str, member: &str) -> Result<(), fred::error::Error> {
    let _: i64 = client.zrem(members_key, member).await?;
    Ok(())
}

/// Apply instances that announced themselves within the last 3 s.
pub async fn live_members(client: &Client, members_key: &str) -> Result<Vec<String>, fred::error::Error> {
    let since = (redmirror_core::now_us() / 1000 - LIVE_WITHIN_MS) as f64;
    client
        .zrangebyscore(members_key, since, f64::INFINITY, false, None)
        .await
}

/// The live apply instances that have not yet stopped writing for the
/// hold that began at `since_us` (empty: none is in a rewind's way).
pub async fn not_yet_held(
    client: &Client,
    members_key: &str,
    acks_key: &str,
    since_us: i64,
) -> Result<Vec<String>, fred::error::Error> {
    let live = live_members(client, members_key).await?;
    let acks: HashMap<String, String> = client.hgetall(acks_key).await?;
    let want = since_us.to_string();
    Ok(live.into_iter().filter(|m| acks.get(m) != Some(&want)).collect())
}

/// Records in `acks_key` that `member` stopped writing for `hold` (or,
/// with `None`, that it no longer holds).
pub async fn acknowledge_hold(
    client: &Client,
    acks_key: &str,
    member: &str,
    hold: Option<Hold>,
) -> Result<(), fred::error::Error> {
    match hold {
        Some(h) => {
            let _: () = client.hset(acks_key, (member, h.since_us.to_string())).await?;
            let _: () = client.pexpire(acks_key, MEMBER_TTL_MS, None).await?;
        }
        None => {
            let _: () = client.hdel(acks_key, member).await?;
        }
    }
    Ok(())
}
