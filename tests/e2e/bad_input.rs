//! SPEC section 7, row by row.

use std::process::Stdio;

use redmirror_core::event::Origin;
use redmirror_core::FlowEvent;

use crate::harness::*;
use ::reqwest;

/// Runs `redmirror {args}` to its exit (within a minute: a command that
/// should refuse and keeps running instead fails the test); code and output.
fn exit_of(args: &[&str], env: &[(&str, String)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("out.log");
    let out = std::fs::File::create(&log).expect("log file");
    let mut child = command()
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("run redmirror");
    let status = redmirror_testkit::wait_for(
        &format!("redmirror {} to exit", args.join(" ")),
        std::time::Duration::from_secs(60),
        || child.try_wait().ok().flatten(),
    );
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

#[test]
fn bad_or_missing_settings_exit_2_naming_the_setting() {
    let (code, out) = exit_of(&["run"], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("REDMIRROR_SOURCE_URL"), "{out}");
    let env = [
        ("REDMIRROR_SOURCE_URL", "redis://127.0.0.1:1".to_string()),
        ("REDMIRROR_DEST_URL", "redis://127.0.0.1:2".to_string()),
        ("REDMIRROR_KAFKA_BROKERS", "127.0.0.1:3".to_string()),
        ("REDMIRROR_RECONCILE_INTERVAL", "soon".to_string()),
    ];
    let (code, out) = exit_of(&["run"], &env);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("REDMIRROR_RECONCILE_INTERVAL"), "{out}");
    let (code, out) = exit_of(&["apply", "--set", "apply_batch=zero"], &env[..3]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("REDMIRROR_APPLY_BATCH"), "{out}");
    let (code, out) = exit_of(&["run", "--config", "/nonexistent/redmirror.toml"], &env[..3]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("/nonexistent/redmirror.toml"), "{out}");
    let (code, out) = exit_of(&["run", "--bogus-flag"], &env[..3]);
    assert_eq!(code, 2, "{out}");
    // check too: a missing or bad setting is a configuration error (2),
    // not a failed check (1), and nothing is reported as "ok" before it.
    let (code, out) = exit_of(&["check"], &env[1..3]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("REDMIRROR_SOURCE_URL"), "{out}");
    assert!(!out.contains("ok    config"), "{out}");
    let (code, out) = exit_of(&["check"], &env);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("REDMIRROR_RECONCILE_INTERVAL"), "{out}");
}

#[test]
fn secrets_never_appear_in_errors() {
    let env = [
        (
            "REDMIRROR_SOURCE_URL",
            "redis://admin:hunter2-secret@127.0.0.1:1/x".to_string(),
        ),
        ("REDMIRROR_DEST_URL", "redis://127.0.0.1:2".to_string()),
        ("REDMIRROR_KAFKA_BROKERS", "127.0.0.1:3".to_string()),
    ];
    let (code, out) = exit_of(&["run"], &env);
    assert_eq!(code, 2, "{out}");
    assert!(!out.contains("hunter2-secret"), "{out}");
    assert!(out.contains("REDMIRROR_SOURCE_URL"), "{out}");
}

/// SPEC section 7: a password holding `/ # ? @` unescaped: exit 2 naming
/// the setting, for every command, and the password is never printed.
#[test]
fn a_url_whose_password_needs_escaping_is_refused_without_printing_it() {
    let password = "pa/ss#w0rd-e2e";
    for var in ["REDMIRROR_SOURCE_URL", "REDMIRROR_DEST_URL"] {
        let mut env = vec![
            ("REDMIRROR_SOURCE_URL", "redis://127.0.0.1:1".to_string()),
            ("REDMIRROR_DEST_URL", "redis://127.0.0.1:2".to_string()),
            ("REDMIRROR_KAFKA_BROKERS", "127.0.0.1:3".to_string()),
        ];
        for (k, v) in env.iter_mut() {
            if *k == var {
                *v = format!("redis://user:{password}@127.0.0.1:1");
            }
        }
        for args in [
            &["run"][..],
            &["check"],
            &["status"],
            &["reconcile", "--once"],
            &["apply"],
        ] {
            let (code, out) = exit_of(args, &env);
            assert_eq!(code, 2, "{var} {args:?}: {out}");
            assert!(out.contains(var), "{var} {args:?}: {out}");
            assert!(out.contains("%2F"), "{var} {args:?}: says how to escape: {out}");
            for piece in ["pa/ss", "ss#w0rd", "w0rd-e2e"] {
                assert!(!out.contains(piece), "{var} {args:?}: password printed: {out}");
            }
        }
    }
}

#[test]
fn capture_and_check_refuse_without_notifications_naming_the_config_set() {
    let source = RedisServer::start_with(RedisOptions::default());
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let env: Vec<(&str, String)> = mirror_env(&source.url(), &dest.url(), &broker.bootstrap())
        .into_iter()
        .map(|(k, v)| (Box::leak(k.into_boxed_str()) as &str, v))
        .collect();
    let (code, out) = exit_of(&["capture"], &env);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("CONFIG SET notify-keyspace-events Eg$lshzxe"), "{out}");
    // check refuses what capture refuses at start, with the same code.
    let (code, out) = exit_of(&["check"], &env);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("FAIL  notifications") && out.contains("CONFIG SET notify-keyspace-events"),
        "{out}"
    );
    // Never written to the source by a refusal.
    let flags: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query(&mut source.conn())
        .unwrap();
    assert_eq!(flags[1], "");
}

#[test]
fn the_notification_flag_sets_them() {
    let s = Setup::run_with(|env| {
        env.insert("REDMIRROR_CONFIGURE_NOTIFICATIONS".into(), "true".into());
    });
    let flags: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query(&mut s.source.conn())
        .unwrap();
    assert!(flags[1].contains('E'), "{flags:?}");
}

#[test]
fn source_and_destination_on_the_same_server_are_refused() {
    let server = RedisServer::start();
    let broker = Broker::shared();
    let same = format!("redis://localhost:{}", server.port());
    let env: Vec<(&str, String)> = mirror_env(&server.url(), &same, &broker.bootstrap())
        .into_iter()
        .map(|(k, v)| (Box::leak(k.into_boxed_str()) as &str, v))
        .collect();
    let (code, out) = exit_of(&["run"], &env);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("same Redis server"), "{out}");
    let (code, out) = exit_of(&["check"], &env);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("FAIL  servers") && out.contains("same Redis server"),
        "{out}"
    );
}

#[test]
fn a_source_key_that_is_not_a_hash_is_treated_as_absent() {
    let s = Setup::run();
    let mut src = s.source.conn();
    hset(&mut src, b"client:s1", &[(b"a", b"1")]);
    s.wait_dest(b"client:s1", Some(&copy_of(&hash(&[("a", "1")]))));
    let _: () = redis::cmd("SET")
        .arg("client:s1")
        .arg("a string now")
        .query(&mut src)
        .unwrap();
    s.wait_dest(b"client:s1", None);
    // Rewritten again and again: counted every time, logged once.
    for i in 0..20 {
        let _: () = redis::cmd("SET")
            .arg("client:s1")
            .arg(format!("a string now {i}"))
            .query(&mut src)
            .unwrap();
    }
    wait_for("every rewrite of the string counted", CONVERGE, || {
        (s.mirror
            .metric("redmirror_capture_skipped_total{reason=\"not_a_hash\"}")
            >= 2.0)
            .then_some(())
    });
    hset(&mut src, b"client:s-after", &[(b"a", b"1")]);
    s.wait_dest(b"client:s-after", Some(&copy_of(&hash(&[("a", "1")]))));
    let warnings = s
        .mirror
        .output()
        .lines()
        .filter(|l| l.contains("not a hash") && l.contains("flow_id=s1"))
        .count();
    assert_eq!(warnings, 1, "logged once per flow:\n{}", s.mirror.output());
}

#[test]
fn a_destination_key_of_the_wrong_type_is_dead_lettered_and_the_stream_goes_on() {
    let s = Setup::run();
    let mut dst = s.dest.conn();
    let _: () = redis::cmd("SET")
        .arg("client:w1")
        .arg("not a hash")
        .query(&mut dst)
        .unwrap();
    let mut src = s.source.conn();
    hset(&mut src, b"client:w1", &[(b"a", b"1")]);
    hset(&mut src, b"client:w2", &[(b"b", b"2")]);
    s.wait_dest(b"client:w2", Some(&copy_of(&hash(&[("b", "2")]))));
    wait_for("the dead letter to be counted", CONVERGE, || {
        (s.mirror
            .metric("redmirror_apply_events_total{outcome=\"dead_lettered\"}")
            >= 1.0)
            .then_some(())
    });
    let v: String = redis::cmd("GET").arg("client:w1").query(&mut dst).unwrap();
    assert_eq!(v, "not a hash");
    assert!(s.mirror.metric("redmirror_dlq_events_total") >= 1.0);
    let dlq = kafka::read_all(&s.broker.bootstrap(), &format!("{}.dlq", s.mirror.topic));
    let d = dlq.iter().find(|m| m.key == b"w1").expect("w1 in the DLQ");
    assert_eq!(d.header("redmirror-dlq-reason-code").as_deref(), Some("wrong_type"));
    assert!(d.header("redmirror-dlq-reason").unwrap().contains("string"));
    assert_eq!(
        d.header("redmirror-dlq-topic").as_deref(),
        Some(s.mirror.topic.as_str())
    );
}

#[test]
fn poison_messages_are_dead_lettered_and_the_stream_goes_on() {
    let s = Setup::run();
    let mut wrong_version = FlowEvent::upsert(
        bytes::Bytes::from_static(b"p2"),
        vec![(bytes::Bytes::from_static(b"a"), bytes::Bytes::from_static(b"1"))],
        redmirror_core::now_us(),
        Origin::Capture,
        "hset",
    );
    wrong_version.schema_version = 99;
    let good = FlowEvent::upsert(
        bytes::Bytes::from_static(b"p3"),
        vec![(bytes::Bytes::from_static(b"ok"), bytes::Bytes::from_static(b"1"))],
        redmirror_core::now_us(),
        Origin::Capture,
        "hset",
    );
    kafka::produce(
        &s.broker.bootstrap(),
        &s.mirror.topic,
        &[
            (b"p1".to_vec(), b"\xde\xad\xbe\xef random bytes".to_vec()),
            (b"p2".to_vec(), wrong_version.encode_to_bytes()),
            (b"p3".to_vec(), good.encode_to_bytes()),
        ],
    );
    // A record without a key cannot reach the change topic: Kafka refuses
    // it on a compacted topic (which redmirror creates).
    let refused = kafka::try_produce(&s.broker.bootstrap(), &s.mirror.topic, b"", b"no key at all");
    assert!(
        refused.is_err(),
        "the compacted change topic accepted a record without a key"
    );
    s.wait_dest(b"client:p3", Some(&copy_of(&hash(&[("ok", "1")]))));
    wait_for("two dead letters", CONVERGE, || {
        (s.mirror.metric("redmirror_dlq_events_total") >= 2.0).then_some(())
    });
    let dlq = kafka::read_all(&s.broker.bootstrap(), &format!("{}.dlq", s.mirror.topic));
    let codes: Vec<String> = dlq
        .iter()
        .filter_map(|m| m.header("redmirror-dlq-reason-code"))
        .collect();
    assert!(codes.contains(&"undecodable".to_string()), "{codes:?}");
    assert!(codes.contains(&"unknown_version".to_string()), "{codes:?}");
    let mut dst = s.dest.conn();
    assert!(!exists(&mut dst, b"client:p1") && !exists(&mut dst, b"client:p2"));
}

#[test]
fn a_kafka_tombstone_deletes_the_sync_copy_and_leaves_natives_alone() {
    // The change topic is compacted; a tombstone (key, no payload) is a
    // deleted flow (SPEC section 3), not a poison message.
    let s = Setup::run();
    let mut src = s.source.conn();
    let mut dst = s.dest.conn();
    hset(&mut dst, b"client:tn", &[(b"native", b"1")]);
    hset(&mut src, b"client:tt", &[(b"a", b"1")]);
    s.wait_dest(b"client:tt", Some(&copy_of(&hash(&[("a", "1")]))));
    // The start-up pass must be over: it would rightly bring the copy back
    // (the source still has the flow) if it compared after the tombstone.
    wait_for("the start-up pass", CONVERGE, || {
        (s.mirror.metric("redmirror_reconcile_runs_total") >= 1.0).then_some(())
    });
    kafka::produce_tombstones(&s.broker.bootstrap(), &s.mirror.topic, &[b"tt", b"tn"]);
    s.wait_dest(b"client:tt", None);
    assert!(
        !hexists(&mut dst, b"clients", b"tt"),
        "the index entry goes with the copy"
    );
    assert_eq!(
        hgetall(&mut dst, b"client:tn"),
        hash(&[("native", "1")]),
        "native untouched"
    );
    assert_eq!(
        s.mirror.metric("redmirror_dlq_events_total"),
        0.0,
        "nothing dead-lettered"
    );
    // The source still has the flow: its next change brings the copy back
    // (the tombstone's time does not block later events).
    hset(&mut src, b"client:tt", &[(b"a", b"2")]);
    s.wait_dest(b"client:tt", Some(&copy_of(&hash(&[("a", "2")]))));
    let dlq = kafka::read_all(&s.broker.bootstrap(), &format!("{}.dlq", s.mirror.topic));
    assert!(dlq.is_empty(), "{} dead letters", dlq.len());
}

#[test]
fn a_flow_over_the_size_limit_is_skipped_and_counted() {
    let s = Setup::run_with(|env| {
        env.insert("REDMIRROR_MAX_FLOW_BYTES".into(), "1000".into());
    });
    let mut src = s.source.conn();
    let big = "x".repeat(2000);
    hset(&mut src, b"client:huge", &[(b"blob", big.as_bytes())]);
    hset(&mut src, b"client:small", &[(b"a", b"1")]);
    s.wait_dest(b"client:small", Some(&copy_of(&hash(&[("a", "1")]))));
    wait_for("the oversized flow counted", CONVERGE, || {
        (s.mirror.metric("redmirror_capture_skipped_total{reason=\"too_large\"}") >= 1.0).then_some(())
    });
    assert!(!exists(&mut s.dest.conn(), b"client:huge"));
}

#[test]
fn a_max_flow_bytes_kafka_cannot_carry_is_refused_at_start() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let mut env = mirror_env(&source.url(), &dest.url(), &broker.bootstrap());
    env.insert("REDMIRROR_MAX_FLOW_BYTES".into(), "3000000".into());
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    for args in [&["run"][..], &["reconcile", "--once"], &["resync", "f1"], &["check"]] {
        let (code, out) = exit_of(args, &env);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains("REDMIRROR_MAX_FLOW_BYTES=3000000"), "{args:?}: {out}");
        assert!(
            out.contains("max.message.bytes"),
            "{args:?}: names Kafka's limit: {out}"
        );
    }
}

#[test]
fn a_flow_kafka_would_refuse_is_skipped_counted_and_logged_once_while_the_rest_goes_on() {
    // Under REDMIRROR_MAX_FLOW_BYTES (1,000,000) by its names and values,
    // but its 100,000 fields encode to about 1.4 MB: over the topic's
    // max.message.bytes (Kafka's default, 1,048,588).
    let source = RedisServer::start();
    let url = source.url();
    let (s, env) = Setup::run_on(source, &url, |env| {
        env.insert("REDMIRROR_MAX_FLOW_BYTES".into(), "1000000".into());
        env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into());
        env.insert("REDMIRROR_RECONCILE_BARRIER_TIMEOUT".into(), "20s".into());
    });
    let mut src = s.source.conn();
    let names: Vec<String> = (0..100_000).map(|i| format!("f{i:06}")).collect();
    // One HSET: no smaller state of the flow is ever read and mirrored.
    let mut c = redis::cmd("HSET");
    c.arg("client:many-fields");
    for n in &names {
        c.arg(n).arg("v");
    }
    let _: i64 = c.query(&mut src).unwrap();
    wait_for("the flow Kafka would refuse to be counted", CONVERGE, || {
        (s.mirror.metric("redmirror_capture_skipped_total{reason=\"too_large\"}") >= 1.0).then_some(())
    });
    hset(&mut src, b"client:after-big", &[(b"a", b"1")]);
    s.wait_dest(b"client:after-big", Some(&copy_of(&hash(&[("a", "1")]))));
    // A pass is not held back or aborted by it, and repairs other drift.
    hset(&mut s.dest.conn(), b"client:ghost-big", &[(b"isSyncCopy", b"true")]);
    let out = command()
        .args(["reconcile", "--once", "--json"])
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        report.contains("reached") && !report.contains("timed_out"),
        "the barrier: {report}"
    );
    s.wait_dest(b"client:ghost-big", None);
    assert!(!exists(&mut s.dest.conn(), b"client:many-fields"));
    let log = s.mirror.output();
    let lines = log.lines().filter(|l| l.contains("many-fields")).count();
    assert_eq!(lines, 1, "logged once:\n{log}");
}

#[test]
fn an_unreachable_destination_fails_readiness_and_catches_up_after() {
    let mut s = Setup::run();
    let ready = |s: &Setup| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            reqwest::get(format!("{}/readyz", s.mirror.http))
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    };
    assert_eq!(ready(&s), 200);
    s.dest.restart(); // keeps the data
    let saved = s.dest.port();
    s.dest.stop();
    let mut src = s.source.conn();
    for i in 0..50 {
        hset(
            &mut src,
            format!("client:down-{i}").as_bytes(),
            &[(b"i", i.to_string().as_bytes())],
        );
    }
    wait_for("/readyz to fail while the destination is down", CONVERGE, || {
        (ready(&s) == 503).then_some(())
    });
    s.dest.start_again();
    assert_eq!(s.dest.port(), saved);
    for i in 0..50 {
        s.wait_dest(
            format!("client:down-{i}").as_bytes(),
            Some(&copy_of(&hash(&[("i", &i.to_string())]))),
        );
    }
    wait_for("/readyz to pass again", CONVERGE, || (ready(&s) == 200).then_some(()));
}

#[test]
fn admin_calls_need_the_token() {
    let token = "e2e-admin-token-0123456789";
    let s = Setup::run_with(|env| {
        env.insert("REDMIRROR_ADMIN_TOKEN".into(), token.into());
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let r = c.post(format!("{}/v1/resync/a1", s.mirror.http)).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let r = c
            .get(format!("{}/v1/status", s.mirror.http))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = c
            .get(format!("{}/v1/status", s.mirror.http))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["role"], "run");
    });
    // Resync through the API publishes a fresh snapshot: a destination copy
    // damaged by hand is repaired.
    let mut src = s.source.conn();
    hset(&mut src, b"client:a1", &[(b"v", b"1")]);
    s.wait_dest(b"client:a1", Some(&copy_of(&hash(&[("v", "1")]))));
    hset(&mut s.dest.conn(), b"client:a1", &[(b"v", b"damaged")]);
    let id = admin::request(&s.mirror.http, "/v1/resync/a1", token);
    let done = admin::finished(&s.mirror.http, token, &id);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["action"], "resync", "{done}");
    assert_eq!(done["result"]["resynced"], "a1", "{done}");
    s.wait_dest(b"client:a1", Some(&copy_of(&hash(&[("v", "1")]))));
    // SPEC section 9: every admin call is logged once (route, flow id,
    // outcome, client address; never the token) and counted by route
    // pattern and status, the refused ones too.
    let log = s.mirror.output();
    assert!(!log.contains(token), "token logged");
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("redmirror::audit")).collect();
    let resync = audit
        .iter()
        .filter(|l| l.contains("route=/v1/resync/{flow_id}") && l.contains("status=202"))
        .collect::<Vec<_>>();
    assert_eq!(resync.len(), 1, "one line per call: {audit:#?}");
    assert!(
        resync[0].contains("flow_id=\"a1\"") && resync[0].contains("client=\"127.0.0.1:"),
        "{}",
        resync[0]
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("route=/v1/status") && l.contains("status=401")),
        "the wrong token is logged: {audit:#?}"
    );
    let count = |route: &str, status: u16| {
        s.mirror.metric(&format!(
            "redmirror_admin_requests_total{{route=\"{route}\",status=\"{status}\"}}"
        ))
    };
    assert_eq!(count("/v1/resync/{flow_id}", 401), 1.0);
    assert_eq!(count("/v1/status", 401), 1.0);
    assert_eq!(count("/v1/resync/{flow_id}", 202), 1.0);
    assert!(count("/v1/status", 200) >= 1.0);
}

/// `POST /v1/resync/{flowId}` answers at once even when the source cannot
/// answer the read behind it (stopped): the request runs on and finishes
/// once the source is back.
#[test]
fn an_admin_resync_answers_at_once_while_the_source_is_down() {
    let token = "e2e-admin-token-0123456789";
    let mut s = Setup::run_with(|env| {
        env.insert("REDMIRROR_ADMIN_TOKEN".into(), token.into());
        env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into());
    });
    let mut src = s.source.conn();
    hset(&mut src, b"client:r1", &[(b"v", b"1")]);
    s.wait_dest(b"client:r1", Some(&copy_of(&hash(&[("v", "1")]))));
    hset(&mut s.dest.conn(), b"client:r1", &[(b"v", b"damaged")]);
    let _: () = redis::cmd("SAVE").query(&mut src).unwrap();
    s.source.stop();
    let id = admin::request(&s.mirror.http, "/v1/resync/r1", token);
    let (code, body, took) = admin::status(&s.mirror.http, token).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, 200, "{body}");
    assert!(
        took <= admin::PROMPT,
        "GET /v1/status took {took:?} with the source down"
    );
    s.source.start_again();
    let done = admin::finished(&s.mirror.http, token, &id);
    assert_eq!(done["state"], "done", "{done}");
    s.wait_dest(b"client:r1", Some(&copy_of(&hash(&[("v", "1")]))));
}

/// SPEC section 7: a server down at start-up is waited for, not a reason to
/// exit: the process stays up, `/healthz` answers, `/readyz` fails, and
/// once the server is there the mirror catches up.
#[test]
fn servers_down_at_start_up_are_waited_for() {
    let mut source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let mut broker = Broker::start();
    source.stop();
    broker.kill();
    let env = mirror_env(&source.url(), &dest.url(), &broker.bootstrap());
    let mut mirror = Mirror::start(&["run"], &env);
    wait_for("/readyz to answer 503 while the servers are down", CONVERGE, || {
        (mirror.readyz() == 503).then_some(())
    });
    assert!(mirror.running(), "exited with the servers down:\n{}", mirror.output());
    let health = http::blocking_get(&format!("{}/healthz", mirror.http));
    assert!(health.is_some(), "/healthz does not answer while waiting");
    broker.start_again();
    wait_for("the mirror to say it waits for the source", CONVERGE, || {
        mirror.output().contains("Waiting for the source").then_some(())
    });
    assert!(mirror.running(), "exited with the source down:\n{}", mirror.output());
    assert_eq!(mirror.readyz(), 503);
    source.start_again();
    let (mut src, mut dst) = (source.conn(), dest.conn());
    wait_flowing(&mut src, &mut dst, b"client:after-start");
    wait_for("/readyz to pass once everything is up", CONVERGE, || {
        (mirror.readyz() == 200).then_some(())
    });
    assert!(mirror.running());
    let out = mirror.output();
    assert!(out.contains("the source (REDMIRROR_SOURCE_URL) is up"), "{out}");
    assert!(
        !out.lines().any(|l| l.contains("WARN") && l.contains("Not ready")),
        "start-up waits are INFO, not WARN:\n{out}"
    );
    assert_eq!(mirror.terminate(), Some(0), "{}", mirror.output());
}

/// A connection error names its cause once: the log line for a refused
/// source says "connection refused" one time, not once per error in the chain.
#[test]
fn a_refused_connection_is_logged_with_its_cause_once() {
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let refused = format!("redis://127.0.0.1:{}", redmirror_testkit::free_port());
    let env = mirror_env(&refused, &dest.url(), &broker.bootstrap());
    let mut mirror = Mirror::start(&["run"], &env);
    let line = wait_for("the mirror to say it waits for the source", CONVERGE, || {
        mirror
            .output()
            .lines()
            .find(|l| l.contains("Waiting for the source") && !l.contains("no answer yet"))
            .map(str::to_string)
    });
    assert_eq!(
        line.to_lowercase().matches("connection refused").count(),
        1,
        "the cause is not named exactly once: {line}"
    );
    // A sentence, not fred's kind prefix or Rust's Debug of the I/O error.
    assert!(!line.contains("IO Error") && !line.contains("Os {"), "{line}");
    assert!(mirror.running(), "{}", mirror.output());
    assert_eq!(mirror.terminate(), Some(0), "{}", mirror.output());
}

/// A partitioner that spreads a flow's events over partitions (librdkafka's
/// `random`) would break per-flow order and flow history: exit 2 naming the
/// setting and what to use, before anything starts.
#[test]
fn a_partitioner_that_does_not_hash_the_key_is_refused() {
    let env = [
        ("REDMIRROR_SOURCE_URL", "redis://127.0.0.1:1".to_string()),
        ("REDMIRROR_DEST_URL", "redis://127.0.0.1:2".to_string()),
        ("REDMIRROR_KAFKA_BROKERS", "127.0.0.1:3".to_string()),
        ("REDMIRROR_KAFKA_PARTITIONER", "random".to_string()),
    ];
    for args in [&["run"][..], &["capture"], &["check"]] {
        let (code, out) = exit_of(args, &env);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains("REDMIRROR_KAFKA_PARTITIONER"), "{args:?}: {out}");
        assert!(out.contains("per-flow order"), "{args:?}: {out}");
    }
}
