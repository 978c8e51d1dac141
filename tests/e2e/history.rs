//! History: replay, rewind, dead letters, inspect, resuming from committed offsets.

use crate::harness::*;

fn flushdb(s: &RedisServer) {
    let _: () = redis::cmd("FLUSHDB").query(&mut s.conn()).unwrap();
}

#[test]
fn replay_from_the_beginning_rebuilds_a_wiped_destination_and_leaves_natives_alone() {
    let mut s = Setup::run();
    let mut src = s.source.conn();
    for i in 0..50 {
        hset(
            &mut src,
            format!("client:r-{i}").as_bytes(),
            &[(b"v", i.to_string().as_bytes())],
        );
    }
    hset(&mut src, b"client:r-1", &[(b"v", b"updated")]);
    let _: i64 = redis::cmd("DEL").arg("client:r-2").query(&mut src).unwrap();
    s.wait_dest(b"client:r-1", Some(&copy_of(&hash(&[("v", "updated")]))));
    s.wait_dest(b"client:r-2", None);
    s.wait_dest(b"client:r-49", Some(&copy_of(&hash(&[("v", "49")]))));
    let env = mirror_env(&s.source.url(), &s.dest.url(), &s.broker.bootstrap());
    let mut env = env;
    env.insert("REDMIRROR_TOPIC".into(), s.mirror.topic.clone());
    assert_eq!(s.mirror.terminate(), Some(0));

    flushdb(&s.dest);
    let mut dst = s.dest.conn();
    hset(&mut dst, b"client:r-3", &[(b"native", b"written after the wipe")]);
    hset(&mut dst, b"client:native-only", &[(b"n", b"1")]);
    let (code, out) = cli(&["replay", "--from-beginning"], &env);
    assert_eq!(code, 0, "{out}");
    let mut want = expected(&s.source);
    want.remove(&b"client:r-3"[..]);
    assert_eq!(sync_copies(&s.dest), want, "{out}");
    assert_eq!(
        hgetall(&mut dst, b"client:r-3"),
        hash(&[("native", "written after the wipe")])
    );
    assert_eq!(hgetall(&mut dst, b"client:native-only"), hash(&[("n", "1")]));

    // Replaying onto an up-to-date destination changes nothing.
    let before = snapshot(&s.dest);
    let (code, out) = cli(&["replay", "--from-beginning", "--dry-run", "--json"], &env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"changes\": []"), "{out}");
    let (code, out) = cli(&["replay", "--from-beginning"], &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(snapshot(&s.dest), before);
}

#[test]
fn replay_from_a_timestamp_reapplies_only_later_events() {
    let mut s = Setup::run();
    let mut src = s.source.conn();
    for i in 0..10 {
        hset(&mut src, format!("client:early-{i}").as_bytes(), &[(b"v", b"1")]);
    }
    s.wait_dest(b"client:early-9", Some(&copy_of(&hash(&[("v", "1")]))));
    let t = clock_boundary(&s.source);
    for i in 0..10 {
        hset(&mut src, format!("client:late-{i}").as_bytes(), &[(b"v", b"2")]);
    }
    s.wait_dest(b"client:late-9", Some(&copy_of(&hash(&[("v", "2")]))));
    let mut env = mirror_env(&s.source.url(), &s.dest.url(), &s.broker.bootstrap());
    env.insert("REDMIRROR_TOPIC".into(), s.mirror.topic.clone());
    assert_eq!(s.mirror.terminate(), Some(0));
    flushdb(&s.dest);
    let (code, out) = cli(&["replay", "--from-timestamp", &t, "--json"], &env);
    assert_eq!(code, 0, "{out}");
    let copies = sync_copies(&s.dest);
    assert_eq!(copies.len(), 10, "{out}");
    assert!(copies.keys().all(|k| k.starts_with(b"client:late-")), "{copies:?}");
    assert!(out.contains("\"applied\": 10"), "{out}");
}

#[test]
fn rewind_restores_the_state_at_a_point_in_time() {
    let s = Setup::run();
    let mut src = s.source.conn();
    for i in 0..10 {
        hset(&mut src, format!("client:w-{i}").as_bytes(), &[(b"v", b"old")]);
    }
    s.wait_dest(b"client:w-9", Some(&copy_of(&hash(&[("v", "old")]))));
    let mut dst = s.dest.conn();
    hset(&mut dst, b"client:native", &[(b"n", b"1")]);
    let t = clock_boundary(&s.source);
    let at_t = sync_copies(&s.dest);
    for i in 0..5 {
        hset(&mut src, format!("client:w-{i}").as_bytes(), &[(b"v", b"new")]);
    }
    let _: i64 = redis::cmd("DEL").arg("client:w-9").query(&mut src).unwrap();
    hset(&mut src, b"client:born-later", &[(b"v", b"x")]);
    s.wait_dest(b"client:born-later", Some(&copy_of(&hash(&[("v", "x")]))));
    s.wait_dest(b"client:w-9", None);
    s.wait_dest(b"client:w-0", Some(&copy_of(&hash(&[("v", "new")]))));
    let mut env = mirror_env(&s.source.url(), &s.dest.url(), &s.broker.bootstrap());
    env.insert("REDMIRROR_TOPIC".into(), s.mirror.topic.clone());
    env.insert("REDMIRROR_GROUP_ID".into(), s.mirror.group.clone());

    // With apply running, the rewind holds it first.
    let (code, out) = cli(&["replay", "--from-beginning", "--until", &t, "--force"], &env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("held at"), "{out}");
    assert_eq!(sync_copies(&s.dest), at_t, "{out}");
    assert_eq!(hgetall(&mut dst, b"client:native"), hash(&[("n", "1")]));

    // The hidden --pause-apply of older scripts is accepted (implied).
    let (code, out) = cli(
        &["replay", "--from-beginning", "--until", &t, "--force", "--pause-apply"],
        &env,
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(sync_copies(&s.dest), at_t, "{out}");

    let (code, out) = cli(&["resume"], &env);
    assert_eq!(code, 0, "{out}");
    wait_for("the destination to match the source after resume", CONVERGE, || {
        (sync_copies(&s.dest) == expected(&s.source)).then_some(())
    });
}

#[test]
fn a_poison_message_is_dead_lettered_then_redriven_after_the_fix() {
    let s = Setup::run();
    let mut dst = s.dest.conn();
    let _: () = redis::cmd("SET")
        .arg("client:poison")
        .arg("a string")
        .query(&mut dst)
        .unwrap();
    let mut src = s.source.conn();
    hset(&mut src, b"client:poison", &[(b"a", b"1")]);
    wait_for("the dead letter", CONVERGE, || {
        (s.mirror.metric("redmirror_dlq_events_total") >= 1.0).then_some(())
    });
    let mut env = mirror_env(&s.source.url(), &s.dest.url(), &s.broker.bootstrap());
    env.insert("REDMIRROR_TOPIC".into(), s.mirror.topic.clone());
    let (code, out) = cli(&["dlq", "list", "--json"], &env);
    assert_eq!(code, 0, "{out}");
    let line = out.lines().find(|l| l.contains("\"flow_id\":\"poison\"")).expect(&out);
    let entry: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(entry["reason_code"], "wrong_type");
    assert_eq!(entry["topic"], s.mirror.topic.as_str());
    assert!(entry["offset"].as_i64().unwrap() >= 0);
    let (code, table) = cli(&["dlq", "list"], &env);
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains("wrong_type") && table.contains("1 dead letter(s)"),
        "{table}"
    );

    // Fix the cause, re-drive: the flow is mirrored.
    let _: i64 = redis::cmd("DEL").arg("client:poison").query(&mut dst).unwrap();
    let (code, out) = cli(&["dlq", "redrive", "--flow", "poison"], &env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("re-drove 1"), "{out}");
    s.wait_dest(b"client:poison", Some(&copy_of(&hash(&[("a", "1")]))));
    let (code, out) = cli(&["dlq", "redrive"], &env);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn a_restarted_apply_resumes_from_committed_offsets() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let env = mirror_env(&source.url(), &dest.url(), &broker.bootstrap());
    let _capture = Mirror::start(&["capture"], &with_http_port(&env));
    let mut apply = Mirror::start(&["apply"], &with_http_port(&env));
    let mut src = source.conn();
    let mut dst = dest.conn();
    wait_flowing(&mut src, &mut dst, b"client:first");
    for i in 0..100 {
        hset(&mut src, format!("client:o-{i}").as_bytes(), &[(b"v", b"1")]);
    }
    wait_for("100 flows applied", CONVERGE, || {
        let n: i64 = redis::cmd("HLEN").arg("clients").query(&mut dst).unwrap();
        (n >= 101).then_some(())
    });
    assert_eq!(apply.terminate(), Some(0));
    let apply2 = Mirror::start(&["apply"], &with_http_port(&env));
    hset(&mut src, b"client:after-restart", &[(b"v", b"1")]);
    wait_for("the new flow applied by the restarted apply", CONVERGE, || {
        exists(&mut dst, b"client:after-restart").then_some(())
    });
    let written: f64 = ["applied", "deleted", "skipped_stale"]
        .iter()
        .map(|o| apply2.metric(&format!("redmirror_apply_events_total{{outcome=\"{o}\"}}")))
        .sum();
    assert!(
        written < 10.0,
        "the restarted apply handled {written} events: it re-applied history"
    );
}

#[test]
fn inspect_prints_events_as_json_lines() {
    let mut s = Setup::run();
    let mut src = s.source.conn();
    hset(&mut src, b"client:i\xff", &[(b"text", b"hello"), (b"bin", b"\xff\x00")]);
    s.wait_dest(
        b"client:i\xff",
        Some(&copy_of(&{
            let mut h = Hash::new();
            h.insert(b"text".to_vec(), b"hello".to_vec());
            h.insert(b"bin".to_vec(), b"\xff\x00".to_vec());
            h
        })),
    );
    let mut env = mirror_env(&s.source.url(), &s.dest.url(), &s.broker.bootstrap());
    env.insert("REDMIRROR_TOPIC".into(), s.mirror.topic.clone());
    assert_eq!(s.mirror.terminate(), Some(0));
    let (code, out) = cli(&["inspect", "--flow", "base64:af8=", "--limit", "5"], &env);
    assert_eq!(code, 0, "{out}");
    let line = out.lines().find(|l| l.starts_with('{')).expect(&out);
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["event"]["op"], "upsert");
    assert_eq!(v["event"]["flow_id"]["base64"], "af8=");
    assert_eq!(v["event"]["fields"]["text"], "hello");
    assert_eq!(v["event"]["fields"]["bin"]["base64"], "/wA=");
    assert_eq!(v["headers"]["redmirror-origin"], "capture");
    assert_eq!(v["headers"]["redmirror-schema"], "1");
}

#[test]
fn replay_reads_past_a_record_stamped_a_day_ahead() {
    let mut s = Setup::run();
    let (bootstrap, topic) = (s.broker.bootstrap(), s.mirror.topic.clone());
    // Kafka refuses records stamped more than an hour ahead by default; a
    // producer with a fast clock on a topic that allows it.
    kafka::alter_topic(
        &bootstrap,
        &topic,
        "message.timestamp.after.max.ms",
        "9223372036854775807",
    );
    let mut src = s.source.conn();
    for i in 0..30 {
        hset(&mut src, format!("client:before-{i}").as_bytes(), &[(b"v", b"1")]);
    }
    s.wait_dest(b"client:before-29", Some(&copy_of(&hash(&[("v", "1")]))));
    let day_ahead = redmirror_core::now_us() / 1000 + 86_400_000;
    for i in 0..6 {
        let id = format!("ahead-{i}");
        let ev = redmirror_core::event::FlowEvent::upsert(
            bytes::Bytes::from(id.clone()),
            vec![(bytes::Bytes::from_static(b"v"), bytes::Bytes::from_static(b"ahead"))],
            redmirror_core::now_us(),
            redmirror_core::event::Origin::Capture,
            "hset",
        );
        kafka::produce_at(&bootstrap, &topic, id.as_bytes(), &ev.encode_to_bytes(), day_ahead);
    }
    for i in 0..30 {
        hset(&mut src, format!("client:after-{i}").as_bytes(), &[(b"v", b"2")]);
    }
    let mut dst = s.dest.conn();
    wait_for("every later flow mirrored live", CONVERGE, || {
        (0..30)
            .all(|i| exists(&mut dst, format!("client:after-{i}").as_bytes()))
            .then_some(())
    });
    let mut env = mirror_env(&s.source.url(), &s.dest.url(), &bootstrap);
    env.insert("REDMIRROR_TOPIC".into(), topic);
    assert_eq!(s.mirror.terminate(), Some(0));

    flushdb(&s.dest);
    let (code, out) = cli(&["replay", "--from-beginning"], &env);
    assert_eq!(code, 0, "{out}");
    let missing: Vec<String> = (0..30)
        .map(|i| format!("client:after-{i}"))
        .filter(|k| hgetall(&mut dst, k.as_bytes()) != copy_of(&hash(&[("v", "2")])))
        .collect();
    assert!(
        missing.is_empty(),
        "replay stopped early; not rebuilt: {missing:?}\n{out}"
    );
    let (code, out) = cli(&["inspect", "--limit", "1000"], &env);
    assert_eq!(code, 0, "{out}");
    for i in 0..30 {
        assert!(
            out.contains(&format!("\"after-{i}\"")),
            "inspect stopped before after-{i}:\n{out}"
        );
    }
}
