//! Hostile and extreme inputs for the apply step, against a real
//! `redis-server`: every byte value in ids, names and values, empty and huge
//! flows, wrong destination types, the size limit, undecodable events.
//!
//! Every event goes through the wire form (`encode_to_bytes`, then
//! `decode_checked` with the flow id as the Kafka key), as the consumer does.

use std::collections::BTreeMap;

use bytes::Bytes;
use redmirror_config::RedisEndpoint;
use redmirror_core::event::{DeleteReason, Origin};
use redmirror_core::{DecodeError, FlowEvent, KeyLayout, MirrorRules};
use redmirror_testkit::flows::{self, Hash};
use redmirror_testkit::{RedisOptions, RedisServer};
use redmirror_write::{ApplyEngine, Outcome};

const T0: i64 = 1_700_000_000_000_000;

/// A wrong-typed destination key: flow id, the command creating it, its type.
type WrongType<'a> = (&'a [u8], &'a [&'a [u8]], &'a str);
/// A hostile message: Kafka key, payload, the expected dead-letter code.
type BadMessage<'a> = (Option<&'a [u8]>, Option<Vec<u8>>, &'a str);

struct Dest {
    server: RedisServer,
    conn: redis::Connection,
    engine: ApplyEngine,
    keys: KeyLayout,
}

async fn dest(rules: MirrorRules) -> Dest {
    let server = RedisServer::start_with(RedisOptions::default());
    let endpoint = RedisEndpoint {
        url: server.url(),
        tls: Default::default(),
    };
    let client = redmirror_redis::connect(&endpoint, "edges-test")
        .await
        .expect("connect to the test redis-server");
    let keys = KeyLayout::default();
    let engine = ApplyEngine::new(client, keys.clone(), rules);
    let conn = server.conn();
    Dest {
        server,
        conn,
        engine,
        keys,
    }
}

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

fn upsert(id: &[u8], fields: Vec<(Bytes, Bytes)>, t: i64) -> FlowEvent {
    FlowEvent::upsert(b(id), fields, t, Origin::Capture, "hset")
}

fn delete(id: &[u8], t: i64) -> FlowEvent {
    FlowEvent::delete(b(id), DeleteReason::Absent, t, Origin::Capture, "del")
}

/// Through the wire: encode, then decode with the flow id as the key.
fn wire(e: &FlowEvent) -> Result<FlowEvent, DecodeError> {
    let back = FlowEvent::decode_checked(Some(&e.flow_id), Some(&e.encode_to_bytes()));
    assert_eq!(back.as_ref(), Ok(e), "the event survives the wire byte for byte");
    back
}

/// The copy SPEC section 1 expects: the fields plus the marker.
fn copy_of(fields: &[(Bytes, Bytes)]) -> Hash {
    let mut h: Hash = fields.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
    h.insert(b"isSyncCopy".to_vec(), b"true".to_vec());
    h
}

impl Dest {
    async fn apply(&self, events: &[FlowEvent]) -> Vec<Outcome> {
        let decoded: Vec<_> = events.iter().map(wire).collect();
        self.apply_decoded(&decoded).await
    }

    async fn apply_decoded(&self, decoded: &[Result<FlowEvent, DecodeError>]) -> Vec<Outcome> {
        let out = self
            .engine
            .apply(decoded, false)
            .await
            .expect("no transient error on a healthy server");
        assert_eq!(out.len(), decoded.len(), "one outcome per event");
        out
    }

    async fn apply1(&self, e: FlowEvent) -> Outcome {
        self.apply(&[e]).await.remove(0)
    }

    fn flow(&mut self, id: &[u8]) -> Hash {
        flows::hgetall(&mut self.conn, &self.keys.flow_key(id))
    }

    fn indexed(&mut self, id: &[u8]) -> Option<Vec<u8>> {
        redis::cmd("HGET")
            .arg(&self.keys.index_key[..])
            .arg(id)
            .query(&mut self.conn)
            .expect("HGET")
    }

    fn assert_copy(&mut self, id: &[u8], fields: &[(Bytes, Bytes)]) {
        let real = self.flow(id);
        let want = copy_of(fields);
        assert_eq!(real.len(), want.len(), "field count of client:{id:?}");
        assert!(real == want, "client:{id:?} differs from the expected copy");
        assert_eq!(self.indexed(id).as_deref(), Some(&b"1"[..]), "index field {id:?}");
    }

    fn assert_gone(&mut self, id: &[u8]) {
        assert!(
            !flows::exists(&mut self.conn, &self.keys.flow_key(id)),
            "client:{id:?} still exists"
        );
        assert!(
            !flows::hexists(&mut self.conn, &self.keys.index_key, id),
            "index field {id:?} still there"
        );
    }

    fn key_type(&mut self, key: &[u8]) -> String {
        redis::cmd("TYPE").arg(key).query(&mut self.conn).expect("TYPE")
    }
}

#[tokio::test]
async fn every_byte_value_in_ids_names_and_values() {
    let mut d = dest(MirrorRules::default()).await;
    let all: Vec<u8> = (0..=255).collect();
    let mut rev = all.clone();
    rev.reverse();
    // One flow whose id is every byte; one field per byte value, plus a
    // field whose name and value hold every byte.
    let mut fields: Vec<(Bytes, Bytes)> = (0..=255u8).map(|c| (b(&[c]), b(&[c, 0, c, 255]))).collect();
    fields.push((b(&all), b(&rev)));
    fields.push((b(&rev), Bytes::new()));
    assert_eq!(d.apply1(upsert(&all, fields.clone(), T0)).await, Outcome::Applied);
    d.assert_copy(&all, &fields);

    // 256 flows in one batch, each id a single byte value, each with a
    // field named and valued with that byte.
    let batch: Vec<FlowEvent> = (0..=255u8)
        .map(|c| upsert(&[c], vec![(b(&[c]), b(&[c]))], T0))
        .collect();
    let out = d.apply(&batch).await;
    assert!(out.iter().all(|o| *o == Outcome::Applied), "{out:?}");
    for c in 0..=255u8 {
        d.assert_copy(&[c], &[(b(&[c]), b(&[c]))]);
    }
    let index = flows::hgetall(&mut d.conn, &d.keys.index_key);
    assert_eq!(index.len(), 257, "index: 256 single-byte ids and the long id");

    // And deletes remove every one of them, byte for byte.
    let dels: Vec<FlowEvent> = (0..=255u8)
        .map(|c| delete(&[c], T0 + 1))
        .chain([delete(&all, T0 + 1)])
        .collect();
    let out = d.apply(&dels).await;
    assert!(out.iter().all(|o| *o == Outcome::Deleted), "{out:?}");
    for c in 0..=255u8 {
        d.assert_gone(&[c]);
    }
    d.assert_gone(&all);
    assert!(flows::hgetall(&mut d.conn, &d.keys.index_key).is_empty());
}

#[tokio::test]
async fn empty_field_set_is_a_copy_with_only_the_marker() {
    let mut d = dest(MirrorRules::default()).await;
    assert_eq!(d.apply1(upsert(b"empty", Vec::new(), T0)).await, Outcome::Applied);
    assert_eq!(d.flow(b"empty"), flows::hash(&[("isSyncCopy", "true")]));
    assert_eq!(d.indexed(b"empty").as_deref(), Some(&b"1"[..]));

    // Only stripped fields: the same copy (the source's marker never wins).
    let stripped = vec![(b(b"flowConfigHistory"), b(b"[1,2]")), (b(b"isSyncCopy"), b(b"false"))];
    assert_eq!(d.apply1(upsert(b"stripped", stripped, T0)).await, Outcome::Applied);
    assert_eq!(d.flow(b"stripped"), flows::hash(&[("isSyncCopy", "true")]));

    // An existing copy with data shrinks to the marker only.
    assert_eq!(
        d.apply1(upsert(b"empty", vec![(b(b"a"), b(b"1"))], T0 + 1)).await,
        Outcome::Applied
    );
    assert_eq!(d.apply1(upsert(b"empty", Vec::new(), T0 + 2)).await, Outcome::Applied);
    assert_eq!(d.flow(b"empty"), flows::hash(&[("isSyncCopy", "true")]));
}

#[tokio::test]
async fn very_long_field_name_and_value() {
    let mut d = dest(MirrorRules::default()).await;
    let name: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    let value: Vec<u8> = (0..100 * 1024).map(|i| (i % 241) as u8).rev().collect();
    let fields = vec![(b(&name), b(&value)), (b(b"short"), b(&name))];
    assert_eq!(d.apply1(upsert(b"long", fields.clone(), T0)).await, Outcome::Applied);
    d.assert_copy(b"long", &fields);
    // A 100 KB flow id too.
    assert_eq!(d.apply1(upsert(&name, fields.clone(), T0)).await, Outcome::Applied);
    d.assert_copy(&name, &fields);
    assert_eq!(d.apply1(delete(&name, T0 + 1)).await, Outcome::Deleted);
    d.assert_gone(&name);
}

#[tokio::test]
async fn hundred_thousand_field_flow() {
    let mut d = dest(MirrorRules::default()).await;
    let gen = |range: std::ops::Range<usize>, tag: &str| -> Vec<(Bytes, Bytes)> {
        range
            .map(|i| (Bytes::from(format!("f{i}")), Bytes::from(format!("{tag}{i}"))))
            .collect()
    };
    let first = gen(0..100_000, "v");
    assert_eq!(d.apply1(upsert(b"big", first.clone(), T0)).await, Outcome::Applied);
    let hlen: usize = redis::cmd("HLEN")
        .arg(&d.keys.flow_key(b"big")[..])
        .query(&mut d.conn)
        .expect("HLEN");
    assert_eq!(hlen, 100_001);
    d.assert_copy(b"big", &first);

    // Update: half the fields go, half change, 50,000 new ones arrive. No
    // field of the old state may survive.
    let second = gen(50_000..150_000, "w");
    assert_eq!(d.apply1(upsert(b"big", second.clone(), T0 + 1)).await, Outcome::Applied);
    d.assert_copy(b"big", &second);

    assert_eq!(d.apply1(delete(b"big", T0 + 2)).await, Outcome::Deleted);
    d.assert_gone(b"big");
}

#[tokio::test]
async fn wrong_type_on_the_destination_is_dead_lettered_untouched() {
    let mut d = dest(MirrorRules::default()).await;
    let setups: [WrongType; 4] = [
        (b"s", &[b"SET", b"client:s", b"hello"], "string"),
        (b"l", &[b"RPUSH", b"client:l", b"a", b"b"], "list"),
        (b"e", &[b"SADD", b"client:e", b"m"], "set"),
        (b"z", &[b"ZADD", b"client:z", b"1", b"m"], "zset"),
    ];
    for (id, cmd, ty) in setups {
        let _: redis::Value = d.server.cmd(cmd);
        for ev in [upsert(id, vec![(b(b"a"), b(b"1"))], T0), delete(id, T0)] {
            // A good event after the bad one in the same batch still applies.
            let out = d.apply(&[ev, upsert(b"ok", vec![(b(b"n"), b(id))], T0)]).await;
            match &out[0] {
                Outcome::DeadLetter { code, reason } => {
                    assert_eq!(*code, "wrong_type");
                    assert!(reason.contains(ty), "reason names the type {ty}: {reason}");
                }
                other => panic!(
                    "client:{} of type {ty}: expected a dead letter, got {other:?}",
                    id[0] as char
                ),
            }
            assert_eq!(out[1], Outcome::Applied);
            assert_eq!(d.key_type(&d.keys.flow_key(id)), ty, "the wrong-typed key is untouched");
            assert_eq!(d.indexed(id), None, "no index field for a dead-lettered flow");
        }
    }
    let s: Vec<u8> = redis::cmd("GET").arg("client:s").query(&mut d.conn).expect("GET");
    assert_eq!(s, b"hello");
    let l: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg("client:l")
        .arg(0)
        .arg(-1)
        .query(&mut d.conn)
        .expect("LRANGE");
    assert_eq!(l, vec![b"a".to_vec(), b"b".to_vec()]);
}

#[tokio::test]
async fn over_the_size_limit_is_dead_lettered() {
    let mut d = dest(MirrorRules {
        max_flow_bytes: 16,
        filtered_orgs: [b(b"org_demo")].into(),
        ..MirrorRules::default()
    })
    .await;
    // Exactly at the limit: 8 + 8 bytes.
    let at_limit = vec![(b(b"12345678"), b(b"abcdefgh"))];
    assert_eq!(d.apply1(upsert(b"f", at_limit.clone(), T0)).await, Outcome::Applied);
    d.assert_copy(b"f", &at_limit);

    // One byte over: dead-lettered, the previous copy stays as it was.
    let over = vec![(b(b"12345678"), b(b"abcdefghi"))];
    match d.apply1(upsert(b"f", over, T0 + 1)).await {
        Outcome::DeadLetter { code, reason } => {
            assert_eq!(code, "too_large");
            assert!(reason.contains("17") && reason.contains("16"), "{reason}");
        }
        other => panic!("expected a too_large dead letter, got {other:?}"),
    }
    d.assert_copy(b"f", &at_limit);

    // A huge flow of a filtered organisation is not copied either way: the
    // sync copy goes.
    let filtered = vec![(b(b"clerkOrganizationId"), b(b"org_demo")), (b(b"x"), b(&[7; 1000]))];
    assert_eq!(d.apply1(upsert(b"f", filtered, T0 + 2)).await, Outcome::SkippedFiltered);
    d.assert_gone(b"f");

    // A too-large flow never creates a copy.
    let big = vec![(b(b"a"), b(&[1; 64]))];
    assert!(matches!(
        d.apply1(upsert(b"g", big, T0)).await,
        Outcome::DeadLetter { code: "too_large", .. }
    ));
    d.assert_gone(b"g");
}

#[tokio::test]
async fn undecodable_events_are_dead_lettered_and_the_batch_goes_on() {
    let mut d = dest(MirrorRules::default()).await;
    let good = upsert(b"good", vec![(b(b"a"), b(b"1"))], T0);
    let good_bytes = good.encode_to_bytes();

    let mut truncated = good_bytes.clone();
    truncated.pop();
    let mut future = good.clone();
    future.schema_version = 2;
    let mut no_id = good.clone();
    no_id.flow_id = Bytes::new();
    let mut bad_op = good.clone();
    bad_op.op = 9;
    let mut no_op = good.clone();
    no_op.op = 0;

    let cases: Vec<BadMessage> = vec![
        (Some(b"good"), Some(vec![0xff, 0xff, 0xff, 0x01]), "undecodable"),
        (Some(b"good"), Some(truncated), "undecodable"),
        (Some(b"good"), Some((0..=255).collect()), "undecodable"),
        (Some(b"good"), Some(future.encode_to_bytes()), "unknown_version"),
        (None, Some(no_id.encode_to_bytes()), "empty_flow_id"),
        (Some(b"good"), Some(bad_op.encode_to_bytes()), "bad_op"),
        (Some(b"good"), Some(no_op.encode_to_bytes()), "bad_op"),
        (Some(b"other"), Some(good_bytes.clone()), "key_mismatch"),
        (None, None, "empty"),
        (Some(b"good"), None, "undecodable"),
    ];
    let mut batch: Vec<Result<FlowEvent, DecodeError>> = cases
        .iter()
        .map(|(k, p, _)| FlowEvent::decode_checked(*k, p.as_deref()))
        .collect();
    batch.push(FlowEvent::decode_checked(Some(b"good"), Some(&good_bytes)));
    let out = d.apply_decoded(&batch).await;
    for ((_, _, want), got) in cases.iter().zip(&out) {
        match got {
            Outcome::DeadLetter { code, reason } => {
                assert_eq!(code, want, "{reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("expected a {want} dead letter, got {other:?}"),
        }
    }
    assert_eq!(out.last(), Some(&Outcome::Applied), "the stream goes on");
    d.assert_copy(b"good", &[(b(b"a"), b(b"1"))]);

    // Nothing but the one flow, the index and redmirror's own keys.
    let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut d.conn).expect("KEYS");
    keys.retain(|k| !k.starts_with(d.keys.state_prefix.as_bytes()));
    keys.sort();
    assert_eq!(keys, vec![b"client:good".to_vec(), b"clients".to_vec()]);
    let index: BTreeMap<Vec<u8>, Vec<u8>> = flows::hgetall(&mut d.conn, &d.keys.index_key);
    assert_eq!(index, flows::hash(&[("good", "1")]));
}

/// Source times beyond 2^53 µs still order exactly (no float rounding).
#[test]
fn watermark_compares_large_times_exactly() {
    let server = redmirror_testkit::RedisServer::start_with(redmirror_testkit::RedisOptions::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let endpoint = redmirror_config::RedisEndpoint {
            url: server.url(),
            tls: Default::default(),
        };
        let client = redmirror_redis::connect(&endpoint, "test").await.unwrap();
        let engine = redmirror_write::ApplyEngine::new(
            client,
            redmirror_core::KeyLayout::default(),
            redmirror_core::MirrorRules::default(),
        );
        let ev = |t: i64, v: &'static str| {
            Ok(redmirror_core::FlowEvent::upsert(
                bytes::Bytes::from_static(b"big"),
                vec![(bytes::Bytes::from_static(b"v"), bytes::Bytes::from_static(v.as_bytes()))],
                t,
                redmirror_core::event::Origin::Capture,
                "hset",
            ))
        };
        let out = engine
            .apply(
                &[ev(9_007_199_254_740_993, "new"), ev(9_007_199_254_740_992, "old")],
                false,
            )
            .await
            .unwrap();
        assert_eq!(out[0], redmirror_write::Outcome::Applied);
        assert_eq!(out[1], redmirror_write::Outcome::SkippedStale);
    });
    let v: String = redis::cmd("HGET")
        .arg("client:big")
        .arg("v")
        .query(&mut server.conn())
        .unwrap();
    assert_eq!(v, "new");
}

#[tokio::test]
async fn a_newer_source_epoch_wins_whatever_the_times_and_epochless_watermarks_read_as_epoch_zero() {
    let mut d = dest(MirrorRules::default()).await;
    let v = |s: &[u8]| vec![(b(b"v"), b(s))];
    let hour = 3_600_000_000;
    // A watermark as written before epochs existed: decimal time only.
    let _: () = redis::cmd("HSET")
        .arg(d.keys.watermark_key())
        .arg("old")
        .arg(T0.to_string())
        .query(&mut d.conn)
        .unwrap();
    assert_eq!(
        d.apply1(upsert(b"old", v(b"stale"), T0 - 1)).await,
        Outcome::SkippedStale
    );
    assert_eq!(d.apply1(upsert(b"old", v(b"e0"), T0 + 1)).await, Outcome::Applied);

    assert_eq!(d.apply1(upsert(b"f", v(b"e0"), T0)).await, Outcome::Applied);
    // After a failover to a source an hour behind: epoch 1, older times.
    let after = upsert(b"f", v(b"e1"), T0 - hour).in_epoch(1);
    assert_eq!(d.apply1(after).await, Outcome::Applied);
    assert_eq!(
        d.flow(b"f").get(b"v".as_slice()).map(Vec::as_slice),
        Some(b"e1".as_slice())
    );
    // An event of the old epoch arriving late, however late its time, is stale.
    assert_eq!(
        d.apply1(upsert(b"f", v(b"late"), T0 + hour)).await,
        Outcome::SkippedStale
    );
    // Within the new epoch, source time orders as before; deletes too.
    assert_eq!(
        d.apply1(upsert(b"f", v(b"older"), T0 - hour - 1).in_epoch(1)).await,
        Outcome::SkippedStale
    );
    assert_eq!(
        d.apply1(delete(b"f", T0 - hour + 1).in_epoch(1)).await,
        Outcome::Deleted
    );
    assert!(d.flow(b"f").is_empty());
    let wm: String = redis::cmd("HGET")
        .arg(d.keys.watermark_key())
        .arg("f")
        .query(&mut d.conn)
        .unwrap();
    assert_eq!(
        redmirror_core::Order::parse(wm.as_bytes()),
        Some(redmirror_core::Order::new(1, T0 - hour + 1))
    );
    // Epochs compare as numbers, not text: 10 is newer than 9.
    assert_eq!(d.apply1(upsert(b"g", v(b"9"), T0).in_epoch(9)).await, Outcome::Applied);
    assert_eq!(
        d.apply1(upsert(b"g", v(b"10"), T0 - 5).in_epoch(10)).await,
        Outcome::Applied
    );
    assert_eq!(
        d.apply1(upsert(b"g", v(b"9b"), T0 + 5).in_epoch(9)).await,
        Outcome::SkippedStale
    );
}

/// A tombstone without an epoch header (a tool's or an operator's) deletes
/// the copy after an epoch bump too, and the flow's next event applies.
#[tokio::test]
async fn an_external_tombstone_deletes_after_an_epoch_bump() {
    let mut d = dest(MirrorRules::default()).await;
    let fields = vec![(b(b"a"), b(b"1"))];
    let bumped = upsert(b"ext", fields.clone(), T0 + 10).in_epoch(3);
    assert_eq!(d.apply1(bumped).await, Outcome::Applied);
    d.assert_copy(b"ext", &fields);
    // Read as `redmirror_kafka::decode_event` reads a header-less tombstone:
    // epoch 0, timed by its record.
    let tomb = FlowEvent::external_tombstone(b"ext", T0 + 5);
    assert!(tomb.is_external_tombstone());
    assert_eq!(d.apply1(tomb).await, Outcome::Deleted);
    d.assert_gone(b"ext");
    // A tombstone with the epoch header is ordered like any event.
    let fields2 = vec![(b(b"a"), b(b"2"))];
    assert_eq!(
        d.apply1(upsert(b"ext", fields2.clone(), T0 + 20).in_epoch(3)).await,
        Outcome::Applied
    );
    let ordered = FlowEvent::tombstone(b"ext", T0 + 5);
    assert_eq!(d.apply1(ordered).await, Outcome::SkippedStale);
    d.assert_copy(b"ext", &fields2);
}

/// `REDMIRROR_APPLY_MAX_RATE`: a batch larger than the limit's slice is
/// written in slices at the limit, every event in order.
#[tokio::test]
async fn a_throttled_engine_writes_no_faster_than_its_limit() {
    let mut d = dest(MirrorRules::default()).await;
    d.engine = d.engine.clone().with_throttle(redmirror_write::Throttle::new(100));
    let events: Vec<FlowEvent> = (0..150)
        .map(|i| {
            upsert(
                format!("r{i}").as_bytes(),
                vec![(b(b"i"), b(i.to_string().as_bytes()))],
                T0 + i,
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let out = d.apply(&events).await;
    let took = started.elapsed();
    assert!(out.iter().all(|o| *o == Outcome::Applied), "{out:?}");
    // 150 events at 100/s, the first slice (10) at once: at least 1.4 s.
    assert!(took >= std::time::Duration::from_millis(1_350), "{took:?}");
    d.assert_copy(b"r149", &[(b(b"i"), b(b"149"))]);
}
