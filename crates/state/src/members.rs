//! Apply's members on the destination: every apply instance announces
//! itself in a sorted set (score: when, in ms) so a rewind knows which
//! instances must stop writing before it starts, and `redmirror status`
//! counts them; each instance records in a hash which hold it stopped
//! writing for.
//!
//! Every score is the destination's clock (`TIME`, read inside the script
//! that writes or reads the set), never a host's: instances on hosts whose
//! clocks differ by seconds are judged alike, so a live instance on a host
//! behind is never taken for dead.

use std::collections::HashMap;
use std::time::Duration;

use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface};
use fred::prelude::Client;
use fred::types::Value;
use tokio_util::sync::CancellationToken;

use crate::hold::Hold;
use redmirror_redis::Script;

/// Announces `ARGV[1]` in `KEYS[1]` at the destination's time and forgets
/// members older than `ARGV[2]` ms; replies that time (ms).
const ANNOUNCE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return now
"#;

/// The members of `KEYS[1]` announced within `ARGV[1]` ms of the
/// destination's time.
const LIVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
"#;

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
    let script = Script::new(ANNOUNCE);
    loop {
        let r = script
            .call(
                &client,
                &[members_key.as_bytes()],
                vec![Value::from(member.as_str()), Value::from(MEMBER_TTL_MS)],
            )
            .await;
        if let Err(e) = r {
            tracing::debug!(key = %members_key, error = %redmirror_redis::describe(&e), "Heartbeat not written.");
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

/// Apply instances that announced themselves within the last 3 s, by the
/// destination's clock.
pub async fn live_members(client: &Client, members_key: &str) -> Result<Vec<String>, fred::error::Error> {
    let reply = Script::read_only(LIVE)
        .call(client, &[members_key.as_bytes()], vec![Value::from(LIVE_WITHIN_MS)])
        .await?;
    match reply {
        Value::Array(items) => Ok(items.into_iter().filter_map(|v| v.into_string()).collect()),
        Value::Null => Ok(Vec::new()),
        other => Err(fred::error::Error::new(
            fred::error::ErrorKind::Parse,
            format!("unexpected reply from the live members script: {other:?}"),
        )),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use fred::interfaces::ClientLike;
    use redmirror_config::{RedisEndpoint, TlsFiles};
    use redmirror_testkit::RedisServer;

    /// Liveness is judged by the destination's clock: a heartbeat scored 2 s
    /// ago by it is live, one 10 s ago is not, and `announce` scores by it.
    /// The destination's clock is an hour ahead of this host's, so neither
    /// holds when the host's clock scores or judges.
    #[tokio::test]
    async fn members_are_scored_and_judged_by_the_destination_clock() {
        let server = RedisServer::start_with(redmirror_testkit::RedisOptions {
            clock_offset_us: 3_600_000_000,
            ..Default::default()
        });
        let endpoint = RedisEndpoint {
            url: server.url(),
            tls: TlsFiles::default(),
        };
        let client = redmirror_redis::connect(&endpoint, "destination")
            .await
            .expect("connect");
        let key = "redmirror:apply:members";
        let (secs, micros): (i64, i64) = {
            let t: Vec<String> = client
                .custom(
                    fred::types::CustomCommand::new_static("TIME", None, false),
                    Vec::<Value>::new(),
                )
                .await
                .unwrap();
            (t[0].parse().unwrap(), t[1].parse().unwrap())
        };
        let dest_ms = secs * 1000 + micros / 1000;
        let _: () = client
            .zadd(
                key,
                None,
                None,
                false,
                false,
                vec![
                    ((dest_ms - 2_000) as f64, "recent"),
                    ((dest_ms - 10_000) as f64, "gone"),
                ],
            )
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(announce(client.clone(), key.into(), "me".into(), stop.clone()));
        let live = redmirror_testkit::wait_for_async("the announcement", Duration::from_secs(10), || async {
            let live = live_members(&client, key).await.ok()?;
            live.contains(&"me".to_string()).then_some(live)
        })
        .await;
        assert!(
            live.contains(&"recent".to_string()) && !live.contains(&"gone".to_string()),
            "{live:?}"
        );
        let score: f64 = client.zscore(key, "me").await.unwrap();
        assert!(
            (score - dest_ms as f64).abs() < 5_000.0,
            "scored {score}, destination time {dest_ms}"
        );
        stop.cancel();
        task.await.unwrap();
    }
}
