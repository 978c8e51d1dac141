//! The test kit's Redis Cluster, on real `redis-server` processes.

use std::time::Instant;

use redmirror_testkit::cluster::{key_slot, RedisCluster};

fn time<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    eprintln!("{what}: {:?}", t.elapsed());
    v
}

#[test]
fn the_cluster_starts_and_every_node_says_ok() {
    let c = time("cluster start", RedisCluster::start);
    assert_eq!(c.ports().len(), 6);
    assert_eq!(c.masters().len(), 3);
    assert_eq!(c.replicas().len(), 3);
    for port in c.ports() {
        let info: String = c.cmd_on(port, &[b"CLUSTER", b"INFO"]);
        assert!(info.contains("cluster_state:ok"), "{port}: {info}");
        assert!(info.contains("cluster_known_nodes:6"), "{port}: {info}");
        let notify: Vec<String> = c.cmd_on(port, &[b"CONFIG", b"GET", b"notify-keyspace-events"]);
        assert!(notify[1].contains('K') && notify[1].contains('E'), "{notify:?}");
    }
    assert!(c.masters().iter().any(|p| c.url().ends_with(&format!(":{p}"))));
    // Our slot computation is the server's.
    for key in [&b"client:1"[..], b"clients", b"{clients}:x", b"client:\xff\x00", b"foo"] {
        let slot: u16 = c.cmd_on(c.masters()[0], &[b"CLUSTER", b"KEYSLOT", key]);
        assert_eq!(key_slot(key), slot, "{key:?}");
    }
}

#[test]
fn a_key_written_through_the_helpers_lands_on_its_master_and_failover_swaps_a_shard() {
    let c = RedisCluster::start();
    let keys: Vec<Vec<u8>> = (0..30).map(|i| format!("client:{i}").into_bytes()).collect();
    for k in &keys {
        c.hset(k, &[(b"name", k), (b"n", b"1")]);
    }
    for k in &keys {
        let owner = c.master_of(k);
        let n: i64 = c.cmd_on(owner, &[b"EXISTS", k]);
        assert_eq!(n, 1, "{k:?} not on its master {owner}");
        for other in c.masters().into_iter().filter(|&p| p != owner) {
            let v: redis::Value = redis::cmd("EXISTS")
                .arg(k)
                .query(&mut c.node(other).conn())
                .unwrap_or(redis::Value::Nil);
            assert!(!matches!(v, redis::Value::Int(1)), "{k:?} also on {other}");
        }
        assert_eq!(
            c.hgetall(k),
            vec![(b"n".to_vec(), b"1".to_vec()), (b"name".to_vec(), k.clone())]
        );
    }

    let key = &keys[0];
    let old = c.master_of(key);
    let masters = c.masters();
    time("failover", || c.failover(old));
    let new = c.master_of(key);
    assert_ne!(new, old);
    assert!(c.replicas().contains(&old), "old master {old} is a replica now");
    assert!(c.masters().contains(&new));
    assert_eq!(c.masters().len(), 3);
    assert_eq!(
        masters.iter().filter(|p| c.masters().contains(p)).count(),
        2,
        "only one shard changed"
    );
    for k in &keys {
        assert_eq!(c.hgetall(k).len(), 2, "{k:?} readable after failover");
    }
    c.del(key);
    assert!(c.hgetall(key).is_empty());
    // And back again.
    time("failover back", || c.failover(new));
    assert!(c.masters().contains(&old));
}

#[test]
fn migrate_slot_moves_a_keys_slot_and_the_key_is_still_readable() {
    let c = RedisCluster::start();
    let key = b"client:migrating";
    c.hset(key, &[(b"a", b"1"), (b"b", b"\xff\x00")]);
    // Another key in the same slot (hash tag), so the slot has two keys.
    let twin = b"{client:migrating}:twin";
    assert_eq!(key_slot(twin), key_slot(b"client:migrating"));
    c.hset(twin, &[(b"x", b"y")]);
    let slot = key_slot(key);
    let from = c.master_of(key);
    let to = c.masters().into_iter().find(|&p| p != from).expect("another master");
    time("migrate one slot", || c.migrate_slot(slot, to));
    assert_eq!(c.master_of(key), to);
    assert_eq!(c.slot_owner(slot), to);
    let there: i64 = c.cmd_on(to, &[b"EXISTS", key, twin]);
    assert_eq!(there, 2);
    let n: u64 = c.cmd_on(from, &[b"CLUSTER", b"COUNTKEYSINSLOT", slot.to_string().as_bytes()]);
    assert_eq!(n, 0);
    assert_eq!(
        c.hgetall(key),
        vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"\xff\x00".to_vec())]
    );
    // A range, with keys in it, back to the first owner.
    let start = slot.saturating_sub(5);
    let keys: Vec<Vec<u8>> = (0..2000)
        .map(|i| format!("k{i}").into_bytes())
        .filter(|k| (start..slot + 5).contains(&key_slot(k)))
        .collect();
    for k in &keys {
        c.hset(k, &[(b"f", k)]);
    }
    time("migrate ten slots", || c.migrate_slots(start..slot + 5, from));
    for s in start..slot + 5 {
        assert_eq!(c.slot_owner(s), from);
    }
    for k in &keys {
        assert_eq!(c.master_of(k), from);
        assert_eq!(c.hgetall(k), vec![(b"f".to_vec(), k.clone())]);
    }
    assert_eq!(c.hgetall(key).len(), 2);
}
