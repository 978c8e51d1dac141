//! The source epoch shared by every process
//! ([`redmirror_redis::epoch`]), kept in a hash on the destination
//! ([`redmirror_core::KeyLayout::source_epoch_key`]: `epoch`, `run_id`,
//! `time_us`).

use fred::prelude::*;
use fred::types::Value;
use redmirror_redis::epoch::{EpochStore, Shared, SourceEpoch};
use redmirror_redis::Script;

/// Merges this process's epoch into the shared one. KEYS: the epoch hash.
/// ARGV: epoch, run_id (may be empty), time (µs). A newer stored epoch wins
/// and is returned for adoption; else the stored one becomes ours, keeping
/// the later time. Reply: `{epoch, run_id, time}` as stored.
const SYNC: &str = include_str!("epoch_sync.lua");

/// The destination hash behind the shared epoch.
#[derive(Debug)]
struct DestEpoch {
    client: Client,
    key: String,
    script: Script,
}

impl EpochStore for DestEpoch {
    fn merge(&self, mine: Shared) -> futures::future::BoxFuture<'_, Result<Shared, fred::error::Error>> {
        Box::pin(async move {
            let args = vec![
                Value::from(mine.epoch.to_string()),
                Value::from(mine.run_id.unwrap_or_default()),
                Value::from(mine.latest_us.to_string()),
            ];
            let key: &[u8] = self.key.as_bytes();
            let reply = self.script.call(&self.client, &[key], args).await?;
            parse_sync(&reply).ok_or_else(|| {
                fred::error::Error::new(
                    fred::error::ErrorKind::Parse,
                    "unexpected reply from the source epoch script",
                )
            })
        })
    }
}

/// The sync script's reply, `{epoch, run_id, time}` as stored; `None` for
/// any other shape.
fn parse_sync(reply: &Value) -> Option<Shared> {
    let Value::Array(v) = reply else { return None };
    let [e, r, t] = v.as_slice() else { return None };
    let text = |v: &Value| redmirror_redis::value::bytes(v).and_then(|b| String::from_utf8(b.to_vec()).ok());
    Some(Shared {
        epoch: text(e)?.parse().ok()?,
        run_id: Some(text(r)?).filter(|r| !r.is_empty()),
        latest_us: text(t)?.parse().ok()?,
    })
}

/// Loads the shared epoch from the destination hash `key`; the epoch then
/// syncs with it ([`SourceEpoch::sync`], [`SourceEpoch::keep_synced`]).
pub async fn load(dest: Client, key: String) -> Result<SourceEpoch, fred::error::Error> {
    let stored: std::collections::HashMap<String, String> = dest.hgetall(key.as_str()).await?;
    let shared = Shared {
        epoch: stored.get("epoch").and_then(|e| e.parse().ok()).unwrap_or(0),
        run_id: stored.get("run_id").filter(|r| !r.is_empty()).cloned(),
        latest_us: stored.get("time_us").and_then(|t| t.parse().ok()).unwrap_or(0),
    };
    Ok(SourceEpoch::shared(
        shared,
        Box::new(DestEpoch {
            client: dest,
            key,
            script: Script::new(SYNC),
        }),
    ))
}
