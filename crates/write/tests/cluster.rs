//! The apply step on a Redis Cluster destination (three masters, three
//! replicas, real `redis-server` processes): each script call touches one
//! slot (the flow keys and that slot's watermark hash), the index is kept by
//! a second step, and the outcomes are those of a standalone destination.

use bytes::Bytes;
use redmirror_config::RedisEndpoint;
use redmirror_core::event::{DeleteReason, Origin};
use redmirror_core::{slot, DecodeError, FlowEvent, KeyLayout, MirrorRules};
use redmirror_testkit::cluster::RedisCluster;
use redmirror_testkit::{RedisOptions, RedisServer};
use redmirror_write::{ApplyEngine, Outcome};

const T0: i64 = 1_700_000_000_000_000;

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

fn upsert(id: &str, t: i64) -> FlowEvent {
    let fields = vec![(b(b"name"), b(id.as_bytes())), (b(b"t"), b(t.to_string().as_bytes()))];
    FlowEvent::upsert(b(id.as_bytes()), fields, t, Origin::Capture, "hset")
}

fn delete(id: &str, t: i64) -> FlowEvent {
    FlowEvent::delete(b(id.as_bytes()), DeleteReason::Absent, t, Origin::Capture, "del")
}

fn decoded(events: &[FlowEvent]) -> Vec<Result<FlowEvent, DecodeError>> {
    events.iter().cloned().map(Ok).collect()
}

/// The destination under test: a cluster, or a standalone server to
/// compare outcomes with.
enum Target {
    Cluster(RedisCluster),
    Single(RedisServer),
}

impl Target {
    fn url(&self) -> String {
        match self {
            Target::Cluster(c) => c.url(),
            Target::Single(s) => s.url(),
        }
    }

    /// A command on the node owning `key`.
    fn cmd<T: redis::FromRedisValue>(&self, key: &[u8], args: &[&[u8]]) -> T {
        match self {
            Target::Cluster(c) => c.cmd_key(key, args),
            Target::Single(s) => s.cmd(args),
        }
    }

    async fn engine(&self, keys: &KeyLayout) -> ApplyEngine {
        let endpoint = RedisEndpoint {
            url: self.url(),
            tls: Default::default(),
        };
        let client = redmirror_redis::connect(&endpoint, "cluster-apply-test")
            .await
            .expect("connect to the destination");
        assert_eq!(
            redmirror_redis::is_cluster(&client),
            matches!(self, Target::Cluster(_)),
            "connect returns a clustered client exactly for a cluster"
        );
        ApplyEngine::new(client, keys.clone(), MirrorRules::default())
    }

    fn flow(&self, keys: &KeyLayout, id: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let fk = keys.flow_key(id.as_bytes());
        let mut v: Vec<(Vec<u8>, Vec<u8>)> = self.cmd(&fk, &[b"HGETALL", &fk]);
        v.sort();
        v
    }

    fn index_field(&self, keys: &KeyLayout, id: &str) -> Option<Vec<u8>> {
        self.cmd(&keys.index_key, &[b"HGET", &keys.index_key, id.as_bytes()])
    }

    fn watermark(&self, keys: &KeyLayout, id: &str) -> Option<String> {
        let wm = match self {
            Target::Cluster(_) => keys.watermark_key_in(slot::of(&keys.flow_key(id.as_bytes()))),
            Target::Single(_) => keys.watermark_key(),
        };
        self.cmd(wm.as_bytes(), &[b"HGET", wm.as_bytes(), id.as_bytes()])
    }
}

/// Flow ids whose keys are spread over every master of `c`: `per_master`
/// ids on each.
fn ids_on_every_master(c: &RedisCluster, keys: &KeyLayout, per_master: usize) -> Vec<String> {
    let masters = c.masters();
    let mut taken = vec![0; masters.len()];
    let mut ids = Vec::new();
    for n in 0.. {
        if taken.iter().all(|&t| t >= per_master) {
            break;
        }
        let id = format!("flow-{n}");
        let owner = c.master_of(&keys.flow_key(id.as_bytes()));
        let m = masters.iter().position(|&p| p == owner).expect("owner is a master");
        if taken[m] < per_master {
            taken[m] += 1;
            ids.push(id);
        }
    }
    ids
}

/// One scenario, run on a cluster and on a standalone server: upserts,
/// deletes, the native guard, stale events, a flow's upsert and delete in
/// one batch. Returns every batch's outcomes.
async fn scenario(t: &Target, keys: &KeyLayout, ids: &[String]) -> Vec<Vec<Outcome>> {
    let engine = t.engine(keys).await;
    let mut all = Vec::new();
    // A native flow (and its index field, the destination's own) and an
    // index field with no copy and no watermark behind it.
    let native_key = keys.flow_key(b"native");
    t.cmd::<i64>(&native_key, &[b"HSET", &native_key, b"own", b"data"]);
    t.cmd::<i64>(&keys.index_key, &[b"HSET", &keys.index_key, b"native", b"mine"]);
    t.cmd::<i64>(&keys.index_key, &[b"HSET", &keys.index_key, b"ghost", b"theirs"]);

    // Every flow at once, plus the native one.
    let mut batch: Vec<FlowEvent> = ids.iter().map(|id| upsert(id, T0)).collect();
    batch.push(upsert("native", T0));
    all.push(engine.apply(&decoded(&batch), false).await.expect("apply"));
    for id in ids {
        assert_eq!(t.flow(keys, id).len(), 3, "copy of {id}");
        assert_eq!(t.index_field(keys, id).as_deref(), Some(&b"1"[..]), "index of {id}");
        assert_eq!(t.watermark(keys, id).as_deref(), Some(T0.to_string().as_str()));
    }

    // Stale, newer, deletes, the native flow's delete, a ghost's delete,
    // an upsert then a delete of one flow, a delete then an upsert of another.
    let batch = vec![
        upsert(&ids[0], T0 - 5),
        upsert(&ids[1], T0 + 10),
        delete(&ids[2], T0 + 10),
        delete("native", T0 + 10),
        delete("ghost", T0 + 10),
        upsert(&ids[3], T0 + 10),
        delete(&ids[3], T0 + 11),
        delete(&ids[4], T0 + 10),
        upsert(&ids[4], T0 + 11),
        delete(&ids[2], T0 + 5),
    ];
    all.push(engine.apply(&decoded(&batch), false).await.expect("apply"));
    assert_eq!(t.watermark(keys, &ids[0]).as_deref(), Some(T0.to_string().as_str()));
    assert!(t
        .flow(keys, &ids[1])
        .contains(&(b"t".to_vec(), (T0 + 10).to_string().into_bytes())));
    for gone in [&ids[2], &ids[3]] {
        assert!(t.flow(keys, gone).is_empty(), "{gone} deleted");
        assert_eq!(t.index_field(keys, gone), None, "index of {gone}");
    }
    assert_eq!(t.index_field(keys, &ids[4]).as_deref(), Some(&b"1"[..]));
    assert_eq!(t.flow(keys, "native"), vec![(b"own".to_vec(), b"data".to_vec())]);
    assert_eq!(t.index_field(keys, "native").as_deref(), Some(&b"mine"[..]));
    assert_eq!(t.index_field(keys, "ghost").as_deref(), Some(&b"theirs"[..]));
    all
}

#[tokio::test]
async fn a_cluster_destination_gives_the_outcomes_of_a_standalone_one() {
    let keys = KeyLayout::default();
    let cluster = RedisCluster::start();
    let ids = ids_on_every_master(&cluster, &keys, 3);
    let cluster = Target::Cluster(cluster);
    let on_cluster = scenario(&cluster, &keys, &ids).await;
    let single = Target::Single(RedisServer::start_with(RedisOptions::default()));
    let on_single = scenario(&single, &keys, &ids).await;
    assert_eq!(on_cluster, on_single);
    assert!(on_cluster[0].iter().take(ids.len()).all(|o| *o == Outcome::Applied));
    assert_eq!(
        on_cluster[1],
        vec![
            Outcome::SkippedStale,
            Outcome::Applied,
            Outcome::Deleted,
            Outcome::SkippedNative,
            Outcome::Deleted,
            Outcome::Applied,
            Outcome::Deleted,
            Outcome::Deleted,
            Outcome::Applied,
            Outcome::SkippedStale,
        ]
    );

    let Target::Cluster(c) = &cluster else { unreachable!() };
    // Each flow key and its watermark hash are in one slot, as the server
    // computes it; nothing went to the standalone watermark hash.
    for id in &ids {
        let fk = keys.flow_key(id.as_bytes());
        let wm = keys.watermark_key_in(slot::of(&fk));
        let port = c.master_of(&fk);
        let a: u16 = c.cmd_on(port, &[b"CLUSTER", b"KEYSLOT", &fk]);
        let b: u16 = c.cmd_on(port, &[b"CLUSTER", b"KEYSLOT", wm.as_bytes()]);
        assert_eq!(a, b, "{id}: flow key and watermark in one slot");
        let here: i64 = c.cmd_on(port, &[b"HEXISTS", wm.as_bytes(), id.as_bytes()]);
        assert_eq!(here, 1, "{id}: watermark on the flow's master");
    }
    let standalone_wm = keys.watermark_key();
    let n: i64 = c.cmd_key(standalone_wm.as_bytes(), &[b"EXISTS", standalone_wm.as_bytes()]);
    assert_eq!(n, 0, "no single watermark hash on a cluster");

    // A script unknown to every master (SCRIPT FLUSH) is loaded on each of
    // them and the batch, spanning all three, goes through.
    for port in c.masters() {
        let _: String = c.cmd_on(port, &[b"SCRIPT", b"FLUSH"]);
    }
    let engine = cluster.engine(&keys).await;
    let batch: Vec<FlowEvent> = ids.iter().map(|id| upsert(id, T0 + 100)).collect();
    let out = engine
        .apply(&decoded(&batch), false)
        .await
        .expect("apply after SCRIPT FLUSH");
    assert!(out.iter().all(|o| *o == Outcome::Applied), "{out:?}");
    for id in &ids {
        assert_eq!(cluster.index_field(&keys, id).as_deref(), Some(&b"1"[..]));
    }

    // A slot that moved to another master (watermark hash and all): the
    // next write is redirected (MOVED), not failed.
    let fk = keys.flow_key(ids[0].as_bytes());
    let owner = c.master_of(&fk);
    let to = c.masters().into_iter().find(|&p| p != owner).expect("another master");
    c.migrate_slot(slot::of(&fk), to);
    let out = engine
        .apply(&decoded(&[upsert(&ids[0], T0 + 200)]), false)
        .await
        .expect("apply after the slot moved");
    assert_eq!(out, vec![Outcome::Applied]);
    assert_eq!(c.master_of(&fk), to);
    assert_eq!(
        cluster.watermark(&keys, &ids[0]).as_deref(),
        Some((T0 + 200).to_string().as_str())
    );
}

/// A crash between the two steps: the first step wrote the copies and the
/// watermarks, the index step never ran; the events are read again and
/// applied again in full (their order equals the watermark), and the index
/// ends right.
#[tokio::test]
async fn a_crash_between_the_two_steps_is_repaired_by_applying_the_events_again() {
    let keys = KeyLayout::default();
    let c = RedisCluster::start();
    let ids = ids_on_every_master(&c, &keys, 2);
    // A cluster has database 0 only: a URL naming another is refused at
    // once, naming the URL.
    let url = format!("{}/3", c.url());
    let refused = redmirror_redis::connect(
        &RedisEndpoint {
            url: url.clone(),
            tls: Default::default(),
        },
        "cluster-db-test",
    )
    .await
    .expect_err("database 3 on a cluster");
    let said = redmirror_telemetry::errors::Chain(&refused).to_string();
    assert!(!refused.is_retryable(), "{said}");
    assert!(said.contains(&url), "{said}");
    assert!(said.contains("only database 0"), "{said}");
    let t = Target::Cluster(c);
    let engine = t.engine(&keys).await;
    // A flow already mirrored, deleted in the batch that crashes.
    let victim = ids[0].clone();
    let out = engine
        .apply(&decoded(&[upsert(&victim, T0)]), false)
        .await
        .expect("apply");
    assert_eq!(out, vec![Outcome::Applied]);
    assert_eq!(t.index_field(&keys, &victim).as_deref(), Some(&b"1"[..]));

    let mut batch: Vec<FlowEvent> = ids[1..].iter().map(|id| upsert(id, T0 + 1)).collect();
    batch.push(delete(&victim, T0 + 1));
    let crashed = engine.clone().without_index_step();
    let first = crashed.apply(&decoded(&batch), false).await.expect("first step");
    // The first step did its part; the index did not follow.
    for id in &ids[1..] {
        assert_eq!(t.flow(&keys, id).len(), 3, "copy of {id}");
        assert_eq!(t.index_field(&keys, id), None, "index of {id} before the redo");
    }
    assert!(t.flow(&keys, &victim).is_empty());
    assert_eq!(t.index_field(&keys, &victim).as_deref(), Some(&b"1"[..]));

    // After the restart: the same events, the whole apply.
    let again = engine.apply(&decoded(&batch), false).await.expect("redo");
    assert_eq!(again, first, "the same outcomes the second time");
    assert!(again[..ids.len() - 1].iter().all(|o| *o == Outcome::Applied));
    assert_eq!(again[ids.len() - 1], Outcome::Deleted);
    for id in &ids[1..] {
        assert_eq!(t.index_field(&keys, id).as_deref(), Some(&b"1"[..]), "index of {id}");
    }
    assert_eq!(t.index_field(&keys, &victim), None, "the deleted flow left the index");
    // And once more: nothing changes.
    let third = engine.apply(&decoded(&batch), false).await.expect("third");
    assert_eq!(third, first);
}

/// Two batches of one flow in flight (apply writes a batch while the next
/// is read): the older batch's index step lands after the newer one's
/// whole write. The newer event's word stands: a flow deleted last has no
/// index field, and one upserted last keeps it.
#[tokio::test]
async fn index_steps_landing_out_of_order_leave_the_newer_event_s_word() {
    let keys = KeyLayout::default();
    let c = RedisCluster::start();
    let ids = ids_on_every_master(&c, &keys, 1);
    let t = Target::Cluster(c);
    let engine = t.engine(&keys).await;
    let (gone, kept) = (&ids[0], &ids[1]);

    // An upsert's index step late behind the flow's delete.
    let (out, late) = engine
        .apply_first_step(&decoded(&[upsert(gone, T0)]), false)
        .await
        .expect("first step");
    assert_eq!(out, vec![Outcome::Applied]);
    let out = engine
        .apply(&decoded(&[delete(gone, T0 + 1)]), false)
        .await
        .expect("delete");
    assert_eq!(out, vec![Outcome::Deleted]);
    engine.index_step_later(late).await.expect("late index step");
    assert!(t.flow(&keys, gone).is_empty());
    assert_eq!(t.index_field(&keys, gone), None, "a deleted flow kept its index field");

    // A delete's index step late behind the flow's next upsert.
    engine
        .apply(&decoded(&[upsert(kept, T0)]), false)
        .await
        .expect("upsert");
    let (out, late) = engine
        .apply_first_step(&decoded(&[delete(kept, T0 + 1)]), false)
        .await
        .expect("first step");
    assert_eq!(out, vec![Outcome::Deleted]);
    let out = engine
        .apply(&decoded(&[upsert(kept, T0 + 2)]), false)
        .await
        .expect("upsert");
    assert_eq!(out, vec![Outcome::Applied]);
    engine.index_step_later(late).await.expect("late index step");
    assert_eq!(t.flow(&keys, kept).len(), 3);
    assert_eq!(
        t.index_field(&keys, kept).as_deref(),
        Some(&b"1"[..]),
        "a live copy lost its index field"
    );
}

/// A native flow created on the destination between a delete's two steps
/// (the sync copy gone, its index field not yet removed): the index step
/// leaves the native flow's index field alone (SPEC section 1: never
/// touched while the copy is native).
#[tokio::test]
async fn the_index_step_leaves_a_native_flow_created_between_the_steps_alone() {
    let keys = KeyLayout::default();
    let c = RedisCluster::start();
    let ids = ids_on_every_master(&c, &keys, 1);
    let t = Target::Cluster(c);
    let engine = t.engine(&keys).await;
    let id = &ids[0];
    engine.apply(&decoded(&[upsert(id, T0)]), false).await.expect("upsert");
    let (out, late) = engine
        .apply_first_step(&decoded(&[delete(id, T0 + 1)]), false)
        .await
        .expect("first step");
    assert_eq!(out, vec![Outcome::Deleted]);
    // Staging's own user creates the flow: its hash, and its index field.
    let fk = keys.flow_key(id.as_bytes());
    let _: i64 = t.cmd(&fk, &[b"HSET", &fk, b"name", b"native"]);
    let _: i64 = t.cmd(&keys.index_key, &[b"HSET", &keys.index_key, id.as_bytes(), b"native"]);
    engine.index_step_later(late).await.expect("late index step");
    assert_eq!(t.flow(&keys, id), vec![(b"name".to_vec(), b"native".to_vec())]);
    assert_eq!(
        t.index_field(&keys, id).as_deref(),
        Some(&b"native"[..]),
        "the native flow's index field was touched"
    );
}
