//! Watermark pruning against a real `redis-server`: which entries go, which
//! stay, and a hash large enough to take many `HSCAN` pages.

use std::collections::BTreeMap;

use fred::prelude::Client;
use redmirror_config::RedisEndpoint;
use redmirror_core::KeyLayout;
use redmirror_reconcile::{prune_watermarks, PruneReport};
use redmirror_testkit::{RedisOptions, RedisServer};

const CUT: i64 = 1_700_000_000_000_000;
const OLD: i64 = CUT - 1;
const RECENT: i64 = CUT + 1;

async fn dest() -> (RedisServer, Client) {
    let server = RedisServer::start_with(RedisOptions::default());
    let endpoint = RedisEndpoint {
        url: server.url(),
        tls: Default::default(),
    };
    let client = redmirror_redis::connect(&endpoint, "prune-test")
        .await
        .expect("connect to the test redis-server");
    (server, client)
}

fn watermarks(server: &RedisServer, keys: &KeyLayout) -> BTreeMap<Vec<u8>, Vec<u8>> {
    server.cmd(&[b"HGETALL", keys.watermark_key().as_bytes()])
}

#[tokio::test]
async fn old_entries_of_absent_flows_go_and_every_other_entry_stays() {
    let (server, client) = dest().await;
    let keys = KeyLayout::default();
    let wm = keys.watermark_key();
    let old = OLD.to_string();
    let recent = RECENT.to_string();
    let old_in_epoch = format!("3:{OLD}");
    let entries: [(&[u8], &str); 8] = [
        (b"deleted-long-ago", &old),
        (b"deleted-long-ago-in-epoch-3", &old_in_epoch),
        (b"\x00\xffbinary-id", &old),
        (b"deleted-just-now", &recent),
        (b"exists", &old),
        (b"indexed-without-copy", &old),
        (b"not-an-order", "yesterday"),
        (b"empty", ""),
    ];
    for (id, v) in entries {
        server.cmd::<i64>(&[b"HSET", wm.as_bytes(), id, v.as_bytes()]);
    }
    // A flow on the destination (native or sync copy alike), and an index
    // entry the index phase may still have to repair.
    server.cmd::<i64>(&[b"HSET", b"client:exists", b"a", b"1"]);
    server.cmd::<i64>(&[b"HSET", b"clients", b"indexed-without-copy", b"1"]);

    let report = prune_watermarks(&client, &keys, CUT).await.expect("prune");

    assert_eq!(
        report,
        PruneReport {
            scanned: 8,
            pruned: 3,
            unreadable: 2,
        }
    );
    let left: Vec<Vec<u8>> = watermarks(&server, &keys).into_keys().collect();
    let want: Vec<&[u8]> = vec![
        b"deleted-just-now",
        b"empty",
        b"exists",
        b"indexed-without-copy",
        b"not-an-order",
    ];
    assert_eq!(left, want);
    // Nothing else was touched.
    assert_eq!(server.cmd::<i64>(&[b"EXISTS", b"client:exists"]), 1);
    assert_eq!(server.cmd::<i64>(&[b"HEXISTS", b"clients", b"indexed-without-copy"]), 1);
    // A second run finds nothing more to prune.
    let again = prune_watermarks(&client, &keys, CUT).await.expect("prune again");
    assert_eq!((again.scanned, again.pruned), (5, 0));
}

/// Entry `f{i}` of the large hash: a recent watermark (one in five).
fn recent(i: usize) -> bool {
    matches!(i % 10, 0 | 5)
}

/// Entry `f{i}` of the large hash: its flow exists (one in ten, never a recent one).
fn live(i: usize) -> bool {
    i % 10 == 1
}

#[tokio::test]
async fn a_large_hash_is_pruned_across_many_scan_pages() {
    let (server, client) = dest().await;
    let keys = KeyLayout::default();
    let wm = keys.watermark_key();
    let mut c = server.conn();
    let mut pipe = redis::pipe();
    for i in 0..5000 {
        let t = if recent(i) { RECENT } else { OLD };
        pipe.cmd("HSET").arg(&wm).arg(format!("f{i}")).arg(t).ignore();
        if live(i) {
            pipe.cmd("HSET").arg(format!("client:f{i}")).arg("a").arg("1").ignore();
        }
    }
    let _: () = pipe.query(&mut c).expect("seed");

    let report = prune_watermarks(&client, &keys, CUT).await.expect("prune");

    // 1000 recent entries stay, and 500 old ones whose flow exists.
    assert_eq!(report.pruned, 3500);
    assert!(report.scanned >= 5000, "{report:?}");
    let left = watermarks(&server, &keys);
    assert_eq!(left.len(), 1500);
    for (id, v) in &left {
        let i: usize = std::str::from_utf8(&id[1..]).unwrap().parse().unwrap();
        assert!(recent(i) || live(i), "f{i} stayed");
        assert_eq!(v == RECENT.to_string().as_bytes(), recent(i));
    }
}

#[tokio::test]
async fn a_missing_hash_is_nothing_to_prune_and_a_wrong_typed_one_is_an_error() {
    let (server, client) = dest().await;
    let keys = KeyLayout::default();
    assert_eq!(
        prune_watermarks(&client, &keys, CUT).await.expect("prune"),
        PruneReport::default()
    );
    server.cmd::<String>(&[b"SET", keys.watermark_key().as_bytes(), b"x"]);
    let err = prune_watermarks(&client, &keys, CUT)
        .await
        .expect_err("a string is no hash");
    let said = redmirror_telemetry::errors::Chain(&err).to_string();
    assert!(
        said.starts_with("destination: ") && said.contains("WRONGTYPE"),
        "{said}"
    );
}
