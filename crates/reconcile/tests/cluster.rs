//! Reconcile's destination reads on a Redis Cluster (three masters, real
//! `redis-server` processes): the guard's view of each flow, read per slot
//! with the index read apart, and the watermark prune over every slot's
//! watermark hash.

use bytes::Bytes;
use fred::prelude::Client;
use redmirror_config::RedisEndpoint;
use redmirror_core::diff::DestFlow;
use redmirror_core::{slot, KeyLayout, MirrorRules};
use redmirror_reconcile::dest_read::{DestRead, DestReader};
use redmirror_reconcile::{prune_watermarks, PruneReport};
use redmirror_testkit::cluster::RedisCluster;

const CUT: i64 = 1_700_000_000_000_000;

async fn connect(c: &RedisCluster) -> Client {
    let endpoint = RedisEndpoint {
        url: c.url(),
        tls: Default::default(),
    };
    let client = redmirror_redis::connect(&endpoint, "cluster-reconcile-test")
        .await
        .expect("connect to the cluster");
    assert!(redmirror_redis::is_cluster(&client));
    client
}

fn wm_of(keys: &KeyLayout, id: &[u8]) -> String {
    keys.watermark_key_in(slot::of(&keys.flow_key(id)))
}

fn set_wm(c: &RedisCluster, keys: &KeyLayout, id: &[u8], v: &str) {
    let wm = wm_of(keys, id);
    c.hset(wm.as_bytes(), &[(id, v.as_bytes())]);
}

fn has_wm(c: &RedisCluster, keys: &KeyLayout, id: &[u8]) -> bool {
    let wm = wm_of(keys, id);
    c.cmd_key::<i64>(wm.as_bytes(), &[b"HEXISTS", wm.as_bytes(), id]) == 1
}

#[tokio::test]
async fn destination_reads_and_the_prune_work_slot_by_slot() {
    let c = RedisCluster::start();
    let client = connect(&c).await;
    let keys = KeyLayout::default();
    let rules = MirrorRules::default();
    let index = keys.index_key.clone();

    // Flows in every state, on every master.
    let sync: &[u8] = b"sync-1";
    let sync_unindexed: &[u8] = b"sync-2";
    let native: &[u8] = b"native-1";
    let wrong: &[u8] = b"wrong-1";
    let gone: &[u8] = b"gone-1";
    let never: &[u8] = b"never-1";
    c.hset(&keys.flow_key(sync), &[(b"a", b"1"), (b"isSyncCopy", b"true")]);
    c.hset(&keys.flow_key(sync_unindexed), &[(b"isSyncCopy", b"true")]);
    c.hset(&keys.flow_key(native), &[(b"own", b"x")]);
    let wk = keys.flow_key(wrong);
    c.cmd_key::<i64>(&wk, &[b"RPUSH", &wk, b"x"]);
    c.hset(&index, &[(sync, b"1"), (native, b"1")]);
    for id in [sync, sync_unindexed, gone] {
        set_wm(&c, &keys, id, "100");
    }
    let ids: Vec<Bytes> = [sync, sync_unindexed, native, wrong, gone, never]
        .into_iter()
        .map(Bytes::copy_from_slice)
        .collect();
    let masters: std::collections::BTreeSet<u16> = ids.iter().map(|id| c.master_of(&keys.flow_key(id))).collect();
    assert!(masters.len() >= 2, "the flows span several masters: {masters:?}");

    let reader = DestReader::new(keys.clone(), &rules);
    let states = reader.states(&client, &ids).await.expect("states");
    let want = |flow, indexed, watermarked| DestRead {
        flow,
        indexed,
        watermarked,
    };
    assert_eq!(
        states,
        vec![
            want(DestFlow::SyncCopy(()), true, true),
            want(DestFlow::SyncCopy(()), false, true),
            want(DestFlow::Native, true, false),
            want(DestFlow::WrongType, false, false),
            want(DestFlow::Absent, false, true),
            want(DestFlow::Absent, false, false),
        ]
    );
    let flows = reader.flows(&client, &ids).await.expect("flows");
    let DestFlow::SyncCopy(fields) = &flows[0].flow else {
        panic!("{:?}", flows[0]);
    };
    let mut fields = fields.clone();
    fields.sort();
    assert_eq!(
        fields,
        vec![
            (Bytes::from_static(b"a"), Bytes::from_static(b"1")),
            (Bytes::from_static(b"isSyncCopy"), Bytes::from_static(b"true")),
        ]
    );
    assert!(flows[0].indexed && flows[0].watermarked);
    assert_eq!(flows[2].flow, DestFlow::Native);

    // Prune: spread over many slots, old entries of absent flows go; an
    // entry whose flow exists, whose index field exists, or that is recent
    // or not an order stays.
    let old = (CUT - 1).to_string();
    let recent = (CUT + 1).to_string();
    let absent: Vec<Vec<u8>> = (0..40).map(|i| format!("deleted-{i}").into_bytes()).collect();
    for id in &absent {
        set_wm(&c, &keys, id, &old);
    }
    let indexed_only: &[u8] = b"indexed-without-copy";
    set_wm(&c, &keys, indexed_only, &old);
    c.hset(&index, &[(indexed_only, b"1")]);
    set_wm(&c, &keys, b"exists", &old);
    c.hset(&keys.flow_key(b"exists"), &[(b"a", b"1")]);
    set_wm(&c, &keys, b"recent", &recent);
    set_wm(&c, &keys, b"not-an-order", "yesterday");
    let slots: std::collections::BTreeSet<u16> = absent.iter().map(|id| slot::of(&keys.flow_key(id))).collect();
    assert!(slots.len() > 20, "the absent flows span many slots");

    let report = prune_watermarks(&client, &keys, CUT).await.expect("prune");
    // Scanned: the 3 written first, the 40 absent, the 4 others. Pruned:
    // the 40 absent and "gone" (old, absent, unindexed); the sync copies
    // exist and stay.
    assert_eq!(
        report,
        PruneReport {
            scanned: 47,
            pruned: 41,
            unreadable: 1,
        }
    );
    for id in &absent {
        assert!(!has_wm(&c, &keys, id), "{id:?} pruned");
    }
    assert!(!has_wm(&c, &keys, gone));
    for id in [
        sync,
        sync_unindexed,
        indexed_only,
        b"exists",
        b"recent",
        b"not-an-order",
    ] {
        assert!(has_wm(&c, &keys, id), "{:?} kept", String::from_utf8_lossy(id));
    }
    // Nothing else was touched, and a second run finds nothing more.
    assert_eq!(c.cmd_key::<i64>(&index, &[b"HEXISTS", &index, indexed_only]), 1);
    let again = prune_watermarks(&client, &keys, CUT).await.expect("prune again");
    assert_eq!(again.pruned, 0);
    assert_eq!(again.scanned, 6);
}

/// The index-order hash a cluster's index step keeps (in the index's slot)
/// is pruned by the same rule as the watermarks: an old entry of a flow
/// without an index field goes; one whose flow is indexed, one that is
/// recent, and one that is not an order stay.
#[tokio::test]
async fn the_index_order_hash_is_pruned_like_the_watermarks() {
    let c = RedisCluster::start();
    let client = connect(&c).await;
    let keys = KeyLayout::default();
    let index = keys.index_key.clone();
    let order = keys.index_order_key();
    let (old, recent) = ((CUT - 1).to_string(), (CUT + 1).to_string());
    let gone: Vec<Vec<u8>> = (0..30).map(|i| format!("gone-{i}").into_bytes()).collect();
    for id in &gone {
        c.hset(order.as_bytes(), &[(id, old.as_bytes())]);
    }
    c.hset(
        order.as_bytes(),
        &[
            (b"indexed", old.as_bytes()),
            (b"recent", recent.as_bytes()),
            (b"not-an-order", b"yesterday"),
        ],
    );
    c.hset(&index, &[(b"indexed", b"1")]);

    let report = prune_watermarks(&client, &keys, CUT).await.expect("prune");
    assert_eq!(
        report,
        PruneReport {
            scanned: 33,
            pruned: 30,
            unreadable: 1,
        }
    );
    let left: i64 = c.cmd_key(order.as_bytes(), &[b"HLEN", order.as_bytes()]);
    assert_eq!(left, 3, "indexed, recent and not-an-order stay");
    for id in [&b"indexed"[..], b"recent", b"not-an-order"] {
        let kept: i64 = c.cmd_key(order.as_bytes(), &[b"HEXISTS", order.as_bytes(), id]);
        assert_eq!(kept, 1, "{:?} kept", String::from_utf8_lossy(id));
    }
}
