//! Duplicated and out-of-order delivery leave the destination unchanged.

use redmirror_core::event::Origin;
use redmirror_core::FlowEvent;

use redmirror_core::failpoint::Failpoint;

use crate::harness::*;

#[test]
fn duplicates_and_older_snapshots_change_nothing() {
    let s = Setup::run();
    let mut src = s.source.conn();
    hset(&mut src, b"client:d1", &[(b"v", b"1")]);
    hset(&mut src, b"client:d1", &[(b"v", b"2")]);
    hset(&mut src, b"client:d2", &[(b"v", b"gone-soon")]);
    s.wait_dest(b"client:d2", Some(&copy_of(&hash(&[("v", "gone-soon")]))));
    let _: i64 = redis::cmd("DEL").arg("client:d2").query(&mut src).unwrap();
    s.wait_dest(b"client:d2", None);
    s.wait_dest(b"client:d1", Some(&copy_of(&hash(&[("v", "2")]))));
    let before = snapshot(&s.dest);
    let stale_before = s
        .mirror
        .metric("redmirror_apply_events_total{outcome=\"skipped_stale\"}");

    // 1. Replay the whole topic as it is (duplicates of every event, including
    //    the upsert of d2 that preceded its delete).
    let bootstrap = s.broker.bootstrap();
    let all = kafka::read_all(&bootstrap, &s.mirror.topic);
    assert!(all.len() >= 4, "events on the topic: {}", all.len());
    let again: Vec<(Vec<u8>, Vec<u8>)> = all.iter().map(|m| (m.key.clone(), m.payload.clone())).collect();
    kafka::produce(&bootstrap, &s.mirror.topic, &again);

    // 2. An older snapshot after a newer one.
    let old = FlowEvent::upsert(
        bytes::Bytes::from_static(b"d1"),
        vec![(bytes::Bytes::from_static(b"v"), bytes::Bytes::from_static(b"ancient"))],
        1_000_000,
        Origin::Capture,
        "hset",
    );
    kafka::produce(&bootstrap, &s.mirror.topic, &[(b"d1".to_vec(), old.encode_to_bytes())]);

    // A marker written afterwards proves the stream got past all of it.
    wait_for("stale events skipped", CONVERGE, || {
        let n = s
            .mirror
            .metric("redmirror_apply_events_total{outcome=\"skipped_stale\"}");
        (n >= stale_before + 3.0).then_some(())
    });
    hset(&mut src, b"client:marker", &[(b"m", b"1")]);
    s.wait_dest(b"client:marker", Some(&copy_of(&hash(&[("m", "1")]))));
    let mut after = snapshot(&s.dest);
    after.remove(&b"client:marker"[..]);
    let mut before = before;
    if let Some(idx) = after.get_mut(&b"clients"[..]) {
        idx.remove(&b"marker"[..]);
    }
    before.retain(|_, v| !v.is_empty());
    after.retain(|_, v| !v.is_empty());
    assert_eq!(after, before, "duplicates or old snapshots changed the destination");
}

/// A crash after a batch reached the destination and before its offsets
/// were stored (failpoint `apply-crash-before-store`, SPEC section 2: offsets
/// are committed only after the write): the next process reads the batch
/// again from the committed offsets, and writing it again changes nothing.
#[test]
fn a_crash_between_write_and_offset_store_reads_the_batch_again_harmlessly() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let mut env = mirror_env(&source.url(), &dest.url(), &broker.bootstrap());
    env.insert("FAILPOINTS".into(), Failpoint::ApplyCrashBeforeStore.name().into());
    let mut crashing = Mirror::start(&["run"], &env);
    let (mut src, mut dst) = (source.conn(), dest.conn());
    let want = copy_of(&hash(&[("v", "1")]));
    let mut n = 0;
    wait_for("the first write to crash the process", CONVERGE, || {
        n += 1;
        if n % 50 == 1 {
            // Notifications before capture subscribes are lost: write again.
            hset(&mut src, b"client:crash", &[(b"v", b"1")]);
        }
        (!crashing.running()).then_some(())
    });
    let code = crashing.wait_exit(CONVERGE);
    let out = crashing.output();
    assert_eq!(code, Some(101), "{out}");
    assert!(out.contains(Failpoint::ApplyCrashBeforeStore.name()), "{out}");
    assert_eq!(
        hgetall(&mut dst, b"client:crash"),
        want,
        "written before the crash: {out}"
    );
    let (ends, committed) = kafka::end_and_committed(&broker.bootstrap(), &crashing.group, &crashing.topic);
    assert!(
        ends.iter()
            .any(|(p, end)| *end > committed.get(p).copied().unwrap_or(0)),
        "the crashed batch's offsets must not be committed: ends {ends:?}, committed {committed:?}"
    );

    // The crashed member leaves the group when its session times out; the
    // new process then joins a group with nobody to wait for.
    wait_for("the crashed member's session to expire", CONVERGE, || {
        let (members, _) = kafka::group_members(&broker.bootstrap(), &crashing.group);
        (members == 0).then_some(())
    });
    env.remove("FAILPOINTS");
    let mirror = Mirror::start(&["run"], &env);
    // The new process reads the batch again from the committed offsets
    // (none were committed for it). Nothing changes on the source after the
    // crash, so every event it handles is one the crashed process had read:
    // re-applied (an event equal to the watermark is written again, to the
    // same content) or skipped as stale, never lost.
    let handled = |m: &Mirror| -> f64 {
        ["applied", "skipped_stale"]
            .iter()
            .map(|o| m.metric(&format!("redmirror_apply_events_total{{outcome=\"{o}\"}}")))
            .sum()
    };
    wait_for("the crashed batch to be read again", CONVERGE, || {
        (handled(&mirror) >= 1.0).then_some(())
    });
    let (ends, _) = kafka::end_and_committed(&broker.bootstrap(), &mirror.group, &mirror.topic);
    wait_for("the group to commit past the crashed batch", CONVERGE, || {
        let (_, now) = kafka::end_and_committed(&broker.bootstrap(), &mirror.group, &mirror.topic);
        ends.iter()
            .all(|(p, end)| *end == 0 || now.get(p).is_some_and(|c| c >= end))
            .then_some(())
    });
    assert_eq!(hgetall(&mut dst, b"client:crash"), want);
}
