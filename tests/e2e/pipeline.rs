//! SPEC section 1, rule by rule, through capture → Kafka → apply.

use crate::harness::*;

#[test]
fn create_update_field_removal_delete_expiry_rename() {
    let s = Setup::run();
    let mut src = s.source.conn();

    // create
    hset(&mut src, b"client:f1", &[(b"name", b"one"), (b"steps", b"3")]);
    s.wait_dest(b"client:f1", Some(&copy_of(&hash(&[("name", "one"), ("steps", "3")]))));
    let mut dst = s.dest.conn();
    assert!(hexists(&mut dst, b"clients", b"f1"), "index has f1");

    // update
    hset(&mut src, b"client:f1", &[(b"name", b"uno")]);
    s.wait_dest(b"client:f1", Some(&copy_of(&hash(&[("name", "uno"), ("steps", "3")]))));

    // field removal
    let _: i64 = redis::cmd("HDEL")
        .arg("client:f1")
        .arg("steps")
        .query(&mut src)
        .unwrap();
    s.wait_dest(b"client:f1", Some(&copy_of(&hash(&[("name", "uno")]))));

    // delete
    let _: i64 = redis::cmd("DEL").arg("client:f1").query(&mut src).unwrap();
    s.wait_dest(b"client:f1", None);
    wait_for("index entry f1 removed", CONVERGE, || {
        (!hexists(&mut dst, b"clients", b"f1")).then_some(())
    });

    // expiry
    hset(&mut src, b"client:f2", &[(b"a", b"1")]);
    s.wait_dest(b"client:f2", Some(&copy_of(&hash(&[("a", "1")]))));
    let _: i64 = redis::cmd("PEXPIRE").arg("client:f2").arg(200).query(&mut src).unwrap();
    s.wait_dest(b"client:f2", None);
    wait_for("index entry f2 removed", CONVERGE, || {
        (!hexists(&mut dst, b"clients", b"f2")).then_some(())
    });

    // rename: the old flow disappears, the new one appears
    hset(&mut src, b"client:f3", &[(b"b", b"2")]);
    s.wait_dest(b"client:f3", Some(&copy_of(&hash(&[("b", "2")]))));
    let _: () = redis::cmd("RENAME")
        .arg("client:f3")
        .arg("client:f4")
        .query(&mut src)
        .unwrap();
    s.wait_dest(b"client:f3", None);
    s.wait_dest(b"client:f4", Some(&copy_of(&hash(&[("b", "2")]))));
    assert!(hexists(&mut dst, b"clients", b"f4"));
}

#[test]
fn native_copies_are_never_touched() {
    let s = Setup::run();
    let mut src = s.source.conn();
    let mut dst = s.dest.conn();
    // Native flows on the destination (no marker, or a marker other than "true").
    hset(&mut dst, b"client:n1", &[(b"name", b"staging"), (b"owner", b"qa")]);
    hset(
        &mut dst,
        b"client:n2",
        &[(b"name", b"staging"), (b"isSyncCopy", b"false")],
    );
    let _: i64 = redis::cmd("HSET")
        .arg("clients")
        .arg("n1")
        .arg("native-index")
        .query(&mut dst)
        .unwrap();
    let before1 = hgetall(&mut dst, b"client:n1");
    let before2 = hgetall(&mut dst, b"client:n2");

    // The source writes, changes and deletes flows with the same ids.
    hset(&mut src, b"client:n1", &[(b"name", b"production")]);
    hset(&mut src, b"client:n2", &[(b"name", b"production")]);
    let _: i64 = redis::cmd("DEL").arg("client:n2").query(&mut src).unwrap();
    // A marker flow written after them shows the stream got past them.
    hset(&mut src, b"client:after", &[(b"x", b"1")]);
    s.wait_dest(b"client:after", Some(&copy_of(&hash(&[("x", "1")]))));
    // n2's write and delete may coalesce into one event: at least 2 skips.
    wait_for("native skips counted", CONVERGE, || {
        let n = s
            .mirror
            .metric("redmirror_apply_events_total{outcome=\"skipped_native\"}");
        (n >= 2.0).then_some(())
    });
    assert_eq!(hgetall(&mut dst, b"client:n1"), before1);
    assert_eq!(hgetall(&mut dst, b"client:n2"), before2);
    let idx: Option<String> = redis::cmd("HGET").arg("clients").arg("n1").query(&mut dst).unwrap();
    assert_eq!(
        idx.as_deref(),
        Some("native-index"),
        "index field of a native flow untouched"
    );
}

#[test]
fn excluded_fields_and_source_marker_are_not_copied() {
    let s = Setup::run();
    let mut src = s.source.conn();
    hset(
        &mut src,
        b"client:x1",
        &[
            (b"name", b"n"),
            (b"flowConfigHistory", b"[1,2,3]"),
            (b"isSyncCopy", b"false"),
        ],
    );
    s.wait_dest(b"client:x1", Some(&copy_of(&hash(&[("name", "n")]))));
}

#[test]
fn filtered_orgs_never_copied_and_removed_when_a_flow_moves_in() {
    let s = Setup::run();
    let mut src = s.source.conn();
    hset(
        &mut src,
        b"client:demo",
        &[(b"name", b"d"), (b"clerkOrganizationId", b"org_hello")],
    );
    hset(
        &mut src,
        b"client:moving",
        &[(b"name", b"m"), (b"clerkOrganizationId", b"org_acme")],
    );
    s.wait_dest(
        b"client:moving",
        Some(&copy_of(&hash(&[("name", "m"), ("clerkOrganizationId", "org_acme")]))),
    );
    let mut dst = s.dest.conn();
    assert!(!exists(&mut dst, b"client:demo"), "filtered flow copied");
    assert!(!hexists(&mut dst, b"clients", b"demo"));
    // Move into a filtered organisation: the copy goes away.
    hset(&mut src, b"client:moving", &[(b"clerkOrganizationId", b"org_demo")]);
    s.wait_dest(b"client:moving", None);
    wait_for("index entry removed", CONVERGE, || {
        (!hexists(&mut dst, b"clients", b"moving")).then_some(())
    });
    // Counted once the write's reply is read, a moment after it shows.
    wait_for("both filtered events to be counted", CONVERGE, || {
        (s.mirror
            .metric("redmirror_apply_events_total{outcome=\"skipped_filtered\"}")
            >= 2.0)
            .then_some(())
    });
    // And back out: copied again.
    hset(&mut src, b"client:moving", &[(b"clerkOrganizationId", b"org_acme")]);
    s.wait_dest(
        b"client:moving",
        Some(&copy_of(&hash(&[("name", "m"), ("clerkOrganizationId", "org_acme")]))),
    );
}

#[test]
fn binary_ids_names_and_values_arrive_byte_for_byte() {
    let s = Setup::run();
    let mut src = s.source.conn();
    let all_bytes: Vec<u8> = (0u8..=255).collect();
    let id: &[u8] = b"bin\x00\xff\xfe:id";
    let key = [b"client:".as_slice(), id].concat();
    hset(
        &mut src,
        &key,
        &[(b"\x00\xffname", &all_bytes), (b"empty", b""), (b"\xc3\x28", b"\x80")],
    );
    let mut want = Hash::new();
    want.insert(b"\x00\xffname".to_vec(), all_bytes.clone());
    want.insert(b"empty".to_vec(), Vec::new());
    want.insert(b"\xc3\x28".to_vec(), b"\x80".to_vec());
    s.wait_dest(&key, Some(&copy_of(&want)));
    let mut dst = s.dest.conn();
    assert!(hexists(&mut dst, b"clients", id));
}

#[test]
fn a_5000_field_flow_is_mirrored() {
    let s = Setup::run();
    let mut src = s.source.conn();
    let mut want = Hash::new();
    let mut cmd = redis::cmd("HSET");
    cmd.arg("client:big");
    for i in 0..5000 {
        let (f, v) = (format!("field-{i:05}"), format!("value-{i}-{}", "x".repeat(i % 50)));
        cmd.arg(&f).arg(&v);
        want.insert(f.into_bytes(), v.into_bytes());
    }
    let _: i64 = cmd.query(&mut src).unwrap();
    s.wait_dest(b"client:big", Some(&copy_of(&want)));
}

#[test]
fn a_burst_of_2000_flows_is_all_mirrored() {
    let s = Setup::run();
    let mut src = s.source.conn();
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("HSET")
            .arg(format!("client:burst-{i}"))
            .arg("n")
            .arg(i.to_string())
            .arg("org")
            .arg("x")
            .ignore();
    }
    let _: () = pipe.query(&mut src).unwrap();
    let mut dst = s.dest.conn();
    wait_for("2000 flows in the destination index", CONVERGE, || {
        let n: i64 = redis::cmd("HLEN").arg("clients").query(&mut dst).unwrap();
        (n == 2000).then_some(())
    });
    for i in (0..2000).step_by(97) {
        let key = format!("client:burst-{i}");
        assert_eq!(
            hgetall(&mut dst, key.as_bytes()),
            copy_of(&hash(&[("n", &i.to_string()), ("org", "x")]))
        );
    }
    let mut keys = 0;
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("client:burst-*")
            .arg("COUNT")
            .arg(1000)
            .query(&mut dst)
            .unwrap();
        keys += batch.len();
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(keys, 2000);
}

#[test]
fn the_latest_of_2000_rapid_updates_wins() {
    let s = Setup::run();
    let mut src = s.source.conn();
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("HSET")
            .arg("client:hot")
            .arg("v")
            .arg(i)
            .arg(format!("f{}", i % 7))
            .arg(i)
            .ignore();
    }
    let _: () = pipe.query(&mut src).unwrap();
    let want = hgetall(&mut src, b"client:hot");
    assert_eq!(want.get(&b"v"[..]).map(Vec::as_slice), Some(&b"1999"[..]));
    s.wait_dest(b"client:hot", Some(&copy_of(&want)));
    // Never more events than notifications (bursts may coalesce into fewer).
    // The final state can be read before every notification is counted.
    let notes = wait_for("2000 notifications counted", CONVERGE, || {
        let n = s.mirror.metric("redmirror_capture_notifications_total");
        (n >= 2000.0).then_some(n)
    });
    // Capture counts an event when the broker's acknowledgement reaches it,
    // which can be after apply has already written the flow.
    let events = wait_for("capture's acknowledged events counted", CONVERGE, || {
        let e = s.mirror.metric("redmirror_capture_events_total{op=\"upsert\"}");
        (e >= 1.0).then_some(e)
    });
    assert!(events <= notes, "events {events} vs notifications {notes}");
}

#[test]
fn the_embedded_broker_runs_the_whole_pipeline() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let env = mirror_env(&source.url(), &dest.url(), "embedded");
    let mirror = Mirror::start(&["run"], &env);
    let mut src = source.conn();
    let mut dst = dest.conn();
    let mut n = 0u32;
    wait_for("a flow mirrored through the embedded broker", CONVERGE, || {
        n += 1;
        if n % 50 == 1 {
            hset(&mut src, b"client:e1", &[(b"n", n.to_string().as_bytes())]);
        }
        exists(&mut dst, b"client:e1").then_some(())
    });
    assert!(
        mirror.output().contains("for demos and development only"),
        "{}",
        mirror.output()
    );
}
