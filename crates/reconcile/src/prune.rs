//! Pruning the watermarks of flows that are gone.
//!
//! The watermark hash ([`KeyLayout::watermark_key`], or on a cluster one
//! per slot, [`KeyLayout::watermark_key_in`]) gains a field for every
//! flow apply ever wrote or deleted, filtered and deleted ones included.
//! [`prune_watermarks`] removes the fields of flows absent from the
//! destination whose watermark is older than a given source time; the
//! reconcile service runs it after each pass with the change topic's
//! `delete.retention.ms` as the age, so the hash holds the flows that exist
//! plus those deleted within that window.
//!
//! # Why it is safe
//! A watermark of an absent flow matters only against an older event of that
//! flow arriving later. Such an event comes from the topic, where it precedes
//! the flow's delete in its partition, so any reader (apply, replay) applies
//! the delete after it. Apply's script writes the watermark when it applies
//! a delete to an absent flow (`HSET` of the watermark before the delete, see
//! `redmirror_write::engine`), so the delete puts the watermark back before
//! the older event can matter, and even two replay batches landing out of
//! order stay safe. Once an entry is older than the topic's
//! `delete.retention.ms`, Kafka may already have dropped the flow's
//! tombstone, but only after compaction removed the older records of that
//! key. The age also covers the events that follow a delete in the topic yet
//! carry an older order (a repair or a resync read just before the delete
//! and published just after it): apply meets them within moments of the
//! delete, long before its watermark is old enough to go, and the service
//! prunes only after a pass whose barrier was reached (apply had caught up
//! with the topic). The age is judged by the watermark's source time; the
//! epoch is not a clock.
//!
//! Entries of flows that exist on the destination are never pruned. Each
//! removal is atomic against a concurrent apply: one script per chunk
//! deletes a field only while the flow key is absent, the index has no field
//! for the flow (the pass's index phase needs the watermark to tell an index
//! entry the mirror wrote) and the watermark still holds the value the scan
//! read. On a Redis Cluster the index lives in another slot than the
//! watermarks, so its entries are read (`HMGET`) just before each call and
//! only unindexed flows go into it: an index entry written between the two
//! is the one case the script cannot see. A value that is not an order is kept, counted in
//! [`PruneReport::unreadable`] and logged.
//!
//! A cluster destination also keeps, in the index's slot, the order of the
//! event behind each flow's last index change
//! ([`KeyLayout::index_order_key`], written by apply's index step). It is
//! pruned by the same rule, in the same report, with the index field
//! standing for the flow (the flow keys are in other slots): an old entry
//! goes while the index has no field for its flow and the entry is
//! unchanged.

use bytes::Bytes;
use fred::prelude::*;
use fred::types::Value;
use redmirror_core::{slot, KeyLayout, Order};
use redmirror_redis::Script;
use redmirror_telemetry::metrics as m;

use crate::dest_read::index_entries;
use crate::error::{kind, malformed, on, PassError, Side};
use crate::scan::hscan_pairs;

/// Kafka's default `delete.retention.ms` (one day): the age used when the
/// topic's own setting cannot be read.
pub const DEFAULT_DELETE_RETENTION_MS: i64 = 86_400_000;

/// Entries per `HSCAN` page and most entries per prune script call.
pub const PRUNE_BATCH: usize = 1000;

/// Removes watermarks of absent flows. KEYS: watermarks, index (mode `i`
/// only), then the flow key of each entry; ARGV: mode (`i`: the index is
/// checked here; `s`: one cluster slot, the caller checked the index),
/// then per entry the flow id and the watermark value the scan read. Reply (contract, checked by [`removed_count`]): the
/// number of fields removed, an integer from 0 to the number of entries.
const PRUNE: &str = include_str!("prune.lua");

/// What one pruning run found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Watermark entries read (an entry can be read twice when the hash is
    /// rehashed during the scan).
    pub scanned: u64,
    /// Entries removed.
    pub pruned: u64,
    /// Entries kept because their value is not an order.
    pub unreadable: u64,
}

/// Removes every watermark whose source time is before `older_than_us`
/// (microseconds since the Unix epoch) and whose flow key does not exist on
/// `dest` (see the module docs for why that is safe). The hash is read
/// with `HSCAN` ([`PRUNE_BATCH`] a page, the next page read while the
/// current one is pruned) and pruned with one script call per page. On a
/// Redis Cluster every slot's watermark hash
/// ([`KeyLayout::watermark_key_in`]) that exists is pruned in turn, with the
/// index entries read before each call (the script touches one slot).
pub async fn prune_watermarks(dest: &Client, keys: &KeyLayout, older_than_us: i64) -> Result<PruneReport, PassError> {
    let script = Script::new(PRUNE);
    let hashes = if redmirror_redis::is_cluster(dest) {
        watermark_hashes(dest, keys).await?
    } else {
        vec![Bytes::from(keys.watermark_key())]
    };
    let mut report = PruneReport::default();
    for wm in hashes {
        prune_hash(dest, &script, keys, Pruned::Watermarks(wm), older_than_us, &mut report).await?;
    }
    // A cluster's index step keeps the order behind each flow's last index
    // change in the index's slot (redmirror_write::engine): the same rule
    // prunes it, with the index field standing for the flow.
    if redmirror_redis::is_cluster(dest) {
        let order = Bytes::from(keys.index_order_key());
        let exists: i64 = dest.exists(order.clone()).await.map_err(on(Side::Destination))?;
        if exists > 0 {
            prune_hash(
                dest,
                &script,
                keys,
                Pruned::IndexOrder(order),
                older_than_us,
                &mut report,
            )
            .await?;
        }
    }
    Ok(report)
}

/// A hash the prune walks.
#[derive(Debug, Clone)]
enum Pruned {
    /// A watermark hash (on a cluster, one slot's).
    Watermarks(Bytes),
    /// A cluster's index-order hash ([`KeyLayout::index_order_key`]).
    IndexOrder(Bytes),
}

impl Pruned {
    fn key(&self) -> &Bytes {
        match self {
            Pruned::Watermarks(k) | Pruned::IndexOrder(k) => k,
        }
    }
}

/// Slots probed per pipeline when looking for a cluster's watermark hashes.
const SLOTS_PER_PROBE: u16 = 1024;

/// The per-slot watermark hashes that exist on a cluster destination
/// (`EXISTS` of every slot's key, pipelined).
async fn watermark_hashes(dest: &Client, keys: &KeyLayout) -> Result<Vec<Bytes>, PassError> {
    let mut found = Vec::new();
    for first in (0..slot::SLOTS).step_by(SLOTS_PER_PROBE as usize) {
        let names: Vec<Bytes> = (first..first.saturating_add(SLOTS_PER_PROBE).min(slot::SLOTS))
            .map(|s| Bytes::from(keys.watermark_key_in(s)))
            .collect();
        let pipeline = dest.pipeline();
        for name in &names {
            let _: () = pipeline.exists(name.clone()).await.map_err(on(Side::Destination))?;
        }
        let replies: Vec<Value> = pipeline.all().await.map_err(on(Side::Destination))?;
        if replies.len() != names.len() {
            return Err(PassError::Malformed {
                side: Side::Destination,
                command: "EXISTS",
                detail: format!("{} replies for {} keys", replies.len(), names.len()),
            });
        }
        found.extend(
            names
                .into_iter()
                .zip(replies)
                .filter(|(_, r)| matches!(r, Value::Integer(n) if *n > 0))
                .map(|(n, _)| n),
        );
    }
    Ok(found)
}

/// Prunes one watermark hash, adding to `report`.
async fn prune_hash(
    dest: &Client,
    script: &Script,
    keys: &KeyLayout,
    hash: Pruned,
    older_than_us: i64,
    report: &mut PruneReport,
) -> Result<(), PassError> {
    let wm = hash.key().clone();
    let mut unreadable = 0;
    let mut unreadable_example: Option<Bytes> = None;
    let mut page = hscan_pairs(dest, &wm, &Bytes::from_static(b"0"), PRUNE_BATCH).await?;
    loop {
        let (next, pairs) = page;
        report.scanned += pairs.len() as u64;
        let mut old = Vec::new();
        for (id, value) in pairs {
            match Order::parse(&value) {
                Some(order) if order.time_us < older_than_us => old.push((id, value)),
                Some(_) => {}
                None => {
                    unreadable += 1;
                    unreadable_example.get_or_insert(id);
                }
            }
        }
        let more = next.as_ref() != b"0";
        let fetch_next = async {
            if more {
                Some(hscan_pairs(dest, &wm, &next, PRUNE_BATCH).await)
            } else {
                None
            }
        };
        let remove = async {
            let mut removed = 0;
            for chunk in old.chunks(PRUNE_BATCH) {
                removed += remove_chunk(dest, script, keys, &hash, chunk).await?;
            }
            Ok::<_, PassError>(removed)
        };
        let (next_page, removed) = tokio::join!(fetch_next, remove);
        report.pruned += removed?;
        match next_page {
            Some(p) => page = p?,
            None => break,
        }
    }
    report.unreadable += unreadable;
    if let Some(id) = unreadable_example {
        tracing::warn!(
            key = %String::from_utf8_lossy(&wm),
            count = unreadable,
            flow_id = %redmirror_core::text::lossy(&id),
            "Watermarks that are not an order (\"{{time}}\" or \"{{epoch}}:{{time}}\") are kept; \
             flow_id names one of them."
        );
    }
    Ok(())
}

/// One script call: removes the entries of `chunk` (flow id, value read)
/// whose flow is absent and unindexed and whose watermark is unchanged; how
/// many it removed. On a cluster the index is in another slot than `wm`:
/// its entries are read first (`HMGET`) and only the unindexed ids go to
/// the script, which still checks the flow key and the watermark.
async fn remove_chunk(
    dest: &Client,
    script: &Script,
    keys: &KeyLayout,
    hash: &Pruned,
    chunk: &[(Bytes, Bytes)],
) -> Result<u64, PassError> {
    let wm = match hash {
        Pruned::Watermarks(wm) => wm,
        Pruned::IndexOrder(order) => return remove_order_chunk(dest, script, keys, order, chunk).await,
    };
    let clustered = redmirror_redis::is_cluster(dest);
    let unindexed: Vec<(Bytes, Bytes)>;
    let chunk = if clustered {
        let ids: Vec<Bytes> = chunk.iter().map(|(id, _)| id.clone()).collect();
        let indexed = index_entries(dest, keys, &ids).await?;
        unindexed = chunk
            .iter()
            .zip(indexed)
            .filter(|(_, indexed)| !indexed)
            .map(|(e, _)| e.clone())
            .collect();
        if unindexed.is_empty() {
            return Ok(0);
        }
        &unindexed[..]
    } else {
        chunk
    };
    let flow_keys: Vec<Bytes> = chunk.iter().map(|(id, _)| keys.flow_key(id)).collect();
    let mut script_keys: Vec<&[u8]> = vec![wm];
    if !clustered {
        script_keys.push(&keys.index_key);
    }
    script_keys.extend(flow_keys.iter().map(|k| k.as_ref()));
    let mode = if clustered { "s" } else { "i" };
    call_prune(dest, script, &script_keys, mode, chunk, "the watermark prune script").await
}

/// One script call on the index's slot: removes the entries of `chunk`
/// (flow id, order read) of the index-order hash whose flow has no index
/// field and whose entry is unchanged; how many it removed.
async fn remove_order_chunk(
    dest: &Client,
    script: &Script,
    keys: &KeyLayout,
    order: &Bytes,
    chunk: &[(Bytes, Bytes)],
) -> Result<u64, PassError> {
    let script_keys: Vec<&[u8]> = vec![order, &keys.index_key];
    call_prune(dest, script, &script_keys, "o", chunk, "the index-order prune script").await
}

/// One prune script call in `mode` on `script_keys` for the entries of
/// `chunk` (flow id, value read); how many it removed, counted in
/// `redmirror_watermarks_pruned_total`.
async fn call_prune(
    dest: &Client,
    script: &Script,
    script_keys: &[&[u8]],
    mode: &'static str,
    chunk: &[(Bytes, Bytes)],
    what: &'static str,
) -> Result<u64, PassError> {
    let mut args = vec![Value::from(mode)];
    args.extend(
        chunk
            .iter()
            .flat_map(|(id, value)| [Value::Bytes(id.clone()), Value::Bytes(value.clone())]),
    );
    let reply = script
        .call(dest, script_keys, args)
        .await
        .map_err(on(Side::Destination))?;
    let removed = removed_count(&reply, chunk.len()).map_err(malformed(Side::Destination, what))?;
    metrics::counter!(m::WATERMARKS_PRUNED).increment(removed);
    Ok(removed)
}

/// The prune script's reply for `n` entries: an integer from 0 to `n`.
fn removed_count(reply: &Value, n: usize) -> Result<u64, String> {
    match reply {
        Value::Integer(i) if (0..=n as i64).contains(i) => Ok(*i as u64),
        Value::Integer(i) => Err(format!("{i} fields removed of {n}")),
        other => Err(format!("expected an integer, got {}", kind(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redmirror_testkit::{RedisOptions, RedisServer};

    #[test]
    fn a_prune_reply_of_any_other_shape_is_an_error() {
        assert_eq!(removed_count(&Value::Integer(0), 3), Ok(0));
        assert_eq!(removed_count(&Value::Integer(3), 3), Ok(3));
        for bad in [
            Value::Integer(4),
            Value::Integer(-1),
            Value::Null,
            Value::Bytes(Bytes::from_static(b"2")),
            Value::Array(vec![Value::Integer(1)]),
        ] {
            assert!(removed_count(&bad, 3).is_err(), "{bad:?} was accepted");
        }
    }

    /// The script re-checks each entry when it runs: an entry whose flow
    /// came back, whose index field appeared or whose watermark moved since
    /// the scan read it stays.
    #[tokio::test]
    async fn an_entry_changed_since_the_scan_is_kept() {
        let server = RedisServer::start_with(RedisOptions::default());
        let endpoint = redmirror_config::RedisEndpoint {
            url: server.url(),
            tls: Default::default(),
        };
        let dest = redmirror_redis::connect(&endpoint, "prune-test")
            .await
            .expect("connect");
        let keys = KeyLayout::default();
        let wm = keys.watermark_key();
        for (id, v) in [("gone", "100"), ("back", "100"), ("moved", "200"), ("indexed", "100")] {
            server.cmd::<i64>(&[b"HSET", wm.as_bytes(), id.as_bytes(), v.as_bytes()]);
        }
        server.cmd::<i64>(&[b"HSET", b"client:back", b"isSyncCopy", b"true"]);
        server.cmd::<i64>(&[b"HSET", b"clients", b"indexed", b"1"]);
        // What the scan read: every entry at "100".
        let read: Vec<(Bytes, Bytes)> = ["gone", "back", "moved", "indexed"]
            .into_iter()
            .map(|id| (Bytes::from(id), Bytes::from_static(b"100")))
            .collect();
        let wm_key = Bytes::from(wm.clone());
        let removed = remove_chunk(
            &dest,
            &Script::new(PRUNE),
            &keys,
            &Pruned::Watermarks(wm_key.clone()),
            &read,
        )
        .await
        .expect("prune");
        assert_eq!(removed, 1);
        let left: std::collections::BTreeMap<String, String> = server.cmd(&[b"HGETALL", wm.as_bytes()]);
        assert_eq!(
            left,
            [("back", "100"), ("indexed", "100"), ("moved", "200")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        );
    }
}
