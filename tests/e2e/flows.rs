//! The flow API (`GET /v1/flows/{flowId}`, its history), the dead-letter
//! routes and "verified as of" (SPEC section 10), against real processes.

use std::time::{Duration, Instant};

use redmirror_api::{DeadLetters, FieldValue, FlowHistory, FlowView, Redriven, Status, Verdict};
use serde_json::Value;

use crate::harness::*;

const TOKEN: &str = "flow-api-test-token-0123456789";

/// `METHOD {http}{path}` with `token` (none: no header): status and body.
fn call(method: reqwest::Method, http: &str, path: &str, token: Option<&str>) -> (u16, Value, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let started = Instant::now();
        let mut req = reqwest::Client::new()
            .request(method, format!("{http}{path}"))
            .timeout(Duration::from_secs(30));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let code = r.status().as_u16();
        let body = r.json().await.unwrap_or_default();
        (code, body, started.elapsed())
    })
}

/// `GET {path}` answered 200 with a body of type `T`.
#[track_caller]
fn get<T: serde::de::DeserializeOwned>(http: &str, path: &str) -> T {
    let (code, body, _) = call(reqwest::Method::GET, http, path, Some(TOKEN));
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// `GET {path}`: the body when it answered 200 with a `T`.
fn try_get<T: serde::de::DeserializeOwned>(http: &str, path: &str) -> Option<T> {
    let (code, body, _) = call(reqwest::Method::GET, http, path, Some(TOKEN));
    (code == 200).then(|| serde_json::from_value(body).ok()).flatten()
}

fn flow(http: &str, id: &str) -> FlowView {
    get(http, &format!("/v1/flows/{id}"))
}

fn text(v: &FlowView, side: &str, field: &str) -> Option<String> {
    let h = if side == "source" { &v.source } else { &v.destination };
    match h.as_ref()?.get(field)? {
        FieldValue::Text(t) => Some(t.clone()),
        FieldValue::Binary { base64 } => Some(format!("base64:{base64}")),
    }
}

fn with_token(env: &mut std::collections::BTreeMap<String, String>) {
    env.insert("REDMIRROR_ADMIN_TOKEN".into(), TOKEN.into());
}

#[test]
fn every_verdict_of_the_flow_api_and_the_token_it_needs() {
    let s = Setup::run_with(with_token);
    let http = s.mirror.http.clone();
    let mut src = s.source.conn();
    let mut dst = s.dest.conn();

    // Without the token, or with a wrong one: 401 on every new route.
    for (method, path) in [
        (reqwest::Method::GET, "/v1/flows/a"),
        (reqwest::Method::GET, "/v1/flows/a/history"),
        (reqwest::Method::GET, "/v1/dlq"),
        (reqwest::Method::POST, "/v1/dlq/redrive?flow=a"),
    ] {
        for token in [None, Some("wrong-token")] {
            let (code, body, _) = call(method.clone(), &http, path, token);
            assert_eq!(code, 401, "{method} {path} with {token:?}: {body}");
        }
    }

    // Mirrored flows: a, b, c; a value that is not UTF-8 in g; an id that is not UTF-8.
    hset(
        &mut src,
        b"client:a",
        &[(b"x", b"1"), (b"flowConfigHistory", b"h"), (b"isSyncCopy", b"no")],
    );
    hset(&mut src, b"client:b", &[(b"x", b"1"), (b"y", b"2")]);
    hset(&mut src, b"client:c", &[(b"x", b"1")]);
    hset(&mut src, b"client:g", &[(b"v", b"\xff")]);
    hset(&mut src, b"client:id\xc3\x28", &[(b"x", b"1")]);
    hset(
        &mut src,
        b"client:f",
        &[(b"clerkOrganizationId", b"org_hello"), (b"x", b"1")],
    );
    s.wait_dest(b"client:a", Some(&copy_of(&hash(&[("x", "1")]))));
    s.wait_dest(b"client:b", Some(&copy_of(&hash(&[("x", "1"), ("y", "2")]))));
    s.wait_dest(b"client:c", Some(&copy_of(&hash(&[("x", "1")]))));
    s.wait_dest(b"client:id\xc3\x28", Some(&copy_of(&hash(&[("x", "1")]))));
    wait_for("client:g on the destination", CONVERGE, || {
        exists(&mut dst, b"client:g").then_some(())
    });

    // Drift made by hand on the destination.
    hset(&mut dst, b"client:b", &[(b"y", b"changed"), (b"z", b"new")]);
    let _: i64 = redis::cmd("DEL").arg("client:c").query(&mut dst).unwrap();
    hset(&mut dst, b"client:d", &[(b"x", b"1"), (b"isSyncCopy", b"true")]);
    hset(&mut dst, b"client:e", &[(b"mine", b"1")]);
    hset(&mut src, b"client:e", &[(b"x", b"1")]);

    let a = flow(&http, "a");
    assert_eq!(a.verdict, Verdict::InStep, "{a:?}");
    assert_eq!(a.flow_id, "a");
    assert_eq!(text(&a, "source", "x").as_deref(), Some("1"));
    assert_eq!(
        a.source.as_ref().map(|h| h.len()),
        Some(1),
        "excluded fields and the source's isSyncCopy are not part of the copy: {a:?}"
    );
    assert_eq!(text(&a, "destination", "isSyncCopy").as_deref(), Some("true"));
    assert!(a.differences.is_empty());
    let w = a.watermark.as_ref().expect("a watermark once applied");
    assert!(
        w.source_time_us > 0 && humantime::parse_rfc3339(&w.source_time).is_ok(),
        "{w:?}"
    );

    let b = flow(&http, "b");
    assert_eq!(b.verdict, Verdict::Different, "{b:?}");
    assert_eq!(b.differences, vec!["y".to_string(), "z".to_string()]);
    assert_eq!(text(&b, "destination", "y").as_deref(), Some("changed"));

    let c = flow(&http, "c");
    assert_eq!((c.verdict, c.destination.is_none()), (Verdict::Missing, true), "{c:?}");
    let d = flow(&http, "d");
    assert_eq!((d.verdict, d.source.is_none()), (Verdict::Extra, true), "{d:?}");
    let e = flow(&http, "e");
    assert_eq!(e.verdict, Verdict::Native, "{e:?}");
    assert_eq!(text(&e, "destination", "mine").as_deref(), Some("1"));
    let f = flow(&http, "f");
    assert_eq!((f.verdict, f.source.is_none()), (Verdict::Filtered, true), "{f:?}");
    let n = flow(&http, "nothing-here");
    assert_eq!(
        (n.verdict, n.source, n.destination, n.watermark),
        (Verdict::Absent, None, None, None)
    );

    let g = flow(&http, "g");
    assert_eq!(g.verdict, Verdict::InStep, "{g:?}");
    assert_eq!(text(&g, "source", "v").as_deref(), Some("base64:/w=="));
    // "id\xc3\x28" is not UTF-8: base64:aWTDKA==
    let odd = flow(&http, "base64:aWTDKA==");
    assert_eq!(
        (odd.verdict, odd.flow_id.as_str()),
        (Verdict::InStep, "base64:aWTDKA==")
    );

    // A bad id or limit is refused, not guessed.
    let (code, _, _) = call(reqwest::Method::GET, &http, "/v1/flows/base64:!!", Some(TOKEN));
    assert_eq!(code, 400);
    let (code, _, _) = call(reqwest::Method::GET, &http, "/v1/flows/a/history?limit=x", Some(TOKEN));
    assert_eq!(code, 400);
}

/// Produces `n` records with other keys to `partition` of `topic`, fast.
fn flood(bootstrap: &str, topic: &str, partition: i32, n: usize) {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    let keys: Vec<String> = (0..1000).map(|i| format!("other-{i}")).collect();
    for i in 0..n {
        let key = &keys[i % keys.len()];
        let mut record = BaseRecord::to(topic)
            .partition(partition)
            .key(key.as_str())
            .payload("x");
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    p.poll(Duration::from_millis(20));
                }
                Err((e, _)) => panic!("producing to {topic}: {e}"),
            }
        }
        if i % 10_000 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(120)).expect("flush");
}

#[test]
fn history_reads_the_flows_partition_newest_first_and_says_where_it_stopped() {
    // Capture alone: it publishes, and its admin API reads the topic.
    let source = RedisServer::start();
    let dest = RedisServer::start();
    let broker = Broker::shared();
    let mut env = mirror_env(&source.url(), &dest.url(), &broker.bootstrap());
    with_token(&mut env);
    let m = Mirror::start(&["capture"], &env);
    wait_for("capture to be ready", CONVERGE, || (m.readyz() == 200).then_some(()));
    let mut src = source.conn();

    // Two early events of the flow, and one event of each of 12 others.
    let mut n = 0;
    wait_for("capture to publish the flow's first event", CONVERGE, || {
        n += 1;
        if n % 25 == 1 {
            // Changes before capture subscribed are not seen: change it again.
            hset(&mut src, b"client:hist", &[(b"early", n.to_string().as_bytes())]);
        }
        let h: FlowHistory = try_get(&m.http, "/v1/flows/hist/history?limit=5")?;
        (!h.events.is_empty()).then_some(())
    });
    hset(&mut src, b"client:hist", &[(b"early2", b"1")]);
    let others: Vec<String> = (0..12).map(|i| format!("flow-{i}")).collect();
    for o in &others {
        hset(&mut src, format!("client:{o}").as_bytes(), &[(b"x", b"1")]);
    }
    let landed = wait_for("every flow's event on the topic", CONVERGE, || {
        let all = kafka::read_all(&broker.bootstrap(), &m.topic);
        let has = |k: &[u8]| all.iter().any(|r| r.key == k);
        (has(b"hist") && others.iter().all(|o| has(o.as_bytes()))).then_some(all)
    });
    // The partition the API reads is where the producer put each flow.
    for o in others.iter().map(String::as_str).chain(["hist"]) {
        let actual: Vec<i32> = landed
            .iter()
            .filter(|r| r.key == o.as_bytes())
            .map(|r| r.partition)
            .collect();
        let h: FlowHistory = get(&m.http, &format!("/v1/flows/{o}/history?limit=1"));
        assert!(
            actual.iter().all(|p| *p == h.partition),
            "{o}: landed in {actual:?}, API reads {}",
            h.partition
        );
        assert_eq!(h.events.len(), 1, "{o}: {h:?}");
    }
    let partition: FlowHistory = get(&m.http, "/v1/flows/hist/history?limit=1");
    let partition = partition.partition;

    // A million records of other flows after them, in the same partition.
    let t = Instant::now();
    flood(&broker.bootstrap(), &m.topic, partition, 1_000_000);
    eprintln!("produced 1,000,000 records in {:?}", t.elapsed());

    // Then three newer events: two changes and a delete.
    hset(&mut src, b"client:hist", &[(b"late", b"1")]);
    wait_for("the first late event", CONVERGE, || {
        let h: FlowHistory = try_get(&m.http, "/v1/flows/hist/history?limit=1")?;
        h.events
            .first()
            .filter(|e| e.fields.contains(&"late".to_string()))
            .map(|_| ())
    });
    hset(&mut src, b"client:hist", &[(b"later", b"1")]);
    wait_for("the second late event", CONVERGE, || {
        let h: FlowHistory = try_get(&m.http, "/v1/flows/hist/history?limit=1")?;
        h.events
            .first()
            .filter(|e| e.fields.contains(&"later".to_string()))
            .map(|_| ())
    });
    let _: i64 = redis::cmd("DEL").arg("client:hist").query(&mut src).unwrap();
    wait_for("the delete event", CONVERGE, || {
        let h: FlowHistory = try_get(&m.http, "/v1/flows/hist/history?limit=1")?;
        h.events.first().filter(|e| e.op == "delete").map(|_| ())
    });

    // Newest first, promptly, without reaching the bound.
    let (code, body, took) = call(
        reqwest::Method::GET,
        &m.http,
        "/v1/flows/hist/history?limit=3",
        Some(TOKEN),
    );
    assert_eq!(code, 200, "{body}");
    let h: FlowHistory = serde_json::from_value(body).unwrap();
    eprintln!("limit=3 answered in {took:?} after {} records", h.scanned);
    assert!(took < Duration::from_secs(10), "{took:?}");
    let ops: Vec<&str> = h.events.iter().map(|e| e.op.as_str()).collect();
    assert_eq!(ops, ["delete", "upsert", "upsert"], "{h:?}");
    assert!(h.events.windows(2).all(|w| w[0].offset > w[1].offset), "{h:?}");
    assert!(
        h.events.windows(2).all(|w| w[0].source_time >= w[1].source_time),
        "{h:?}"
    );
    assert_eq!(h.events[1].fields.iter().filter(|f| *f == "later").count(), 1, "{h:?}");
    assert!(h
        .events
        .iter()
        .all(|e| e.origin == "capture" && e.partition == partition));
    assert!(!h.truncated, "{h:?}");

    // Asking for more than the bound reaches: it stops and says where.
    let (code, body, took) = call(
        reqwest::Method::GET,
        &m.http,
        "/v1/flows/hist/history?limit=50",
        Some(TOKEN),
    );
    assert_eq!(code, 200, "{body}");
    let h: FlowHistory = serde_json::from_value(body.clone()).unwrap();
    eprintln!("limit=50 answered in {took:?} after {} records: {}", h.scanned, body);
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(h.truncated, "the early events are a million records back: {h:?}");
    assert!(h.scanned_from_offset > 0 && h.scanned > 0, "{h:?}");
    assert_eq!(h.events.len(), 3, "only the late events are within the bound: {h:?}");
    assert_eq!(body["truncated"], true);
    assert!(body["scanned_from_offset"].is_i64());
}

#[test]
fn dead_letters_are_listed_newest_first_and_redriven() {
    let s = Setup::run_with(with_token);
    let http = s.mirror.http.clone();
    let mut src = s.source.conn();
    let mut dst = s.dest.conn();
    for key in ["client:poison1", "client:poison2"] {
        let _: () = redis::cmd("SET").arg(key).arg("a string").query(&mut dst).unwrap();
    }
    hset(&mut src, b"client:poison1", &[(b"a", b"1")]);
    wait_for("the first dead letter", CONVERGE, || {
        (s.mirror.metric("redmirror_dlq_events_total") >= 1.0).then_some(())
    });
    hset(&mut src, b"client:poison2", &[(b"a", b"2")]);
    let list = wait_for("both dead letters listed", CONVERGE, || {
        let l: DeadLetters = try_get(&http, "/v1/dlq")?;
        (l.dead_letters.len() >= 2).then_some(l)
    });
    assert_eq!(list.dead_letters[0].flow_id, "poison2", "newest first: {list:?}");
    assert_eq!(list.dead_letters[1].flow_id, "poison1");
    assert_eq!(list.dead_letters[0].reason_code, "wrong_type");
    assert!(!list.dead_letters[0].reason.is_empty());
    assert_eq!(list.total, 2);
    let one: DeadLetters = get(&http, "/v1/dlq?limit=1");
    assert_eq!(one.dead_letters.len(), 1);

    // Fix the cause, re-drive one flow's: it is mirrored.
    let _: i64 = redis::cmd("DEL").arg("client:poison1").query(&mut dst).unwrap();
    let (code, body, _) = call(
        reqwest::Method::POST,
        &http,
        "/v1/dlq/redrive?flow=poison1",
        Some(TOKEN),
    );
    assert_eq!(code, 200, "{body}");
    let r: Redriven = serde_json::from_value(body).unwrap();
    assert_eq!((r.redriven, r.flow_id.as_deref()), (1, Some("poison1")));
    s.wait_dest(b"client:poison1", Some(&copy_of(&hash(&[("a", "1")]))));
}

fn verified(http: &str) -> (Option<String>, Status) {
    let st: Status = get(http, "/v1/status");
    (st.verified_as_of.clone(), st)
}

fn time_of(t: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}"))
}

#[test]
fn verified_as_of_moves_in_step_stops_at_unrepaired_drift_and_moves_after_the_repair() {
    let s = Setup::run_with(with_token);
    let http = s.mirror.http.clone();
    let mut src = s.source.conn();
    let mut dst = s.dest.conn();
    hset(&mut src, b"client:v", &[(b"x", b"1")]);
    s.wait_dest(b"client:v", Some(&copy_of(&hash(&[("x", "1")]))));

    // In step: each pass proves a later source time.
    admin::reconcile(&http, TOKEN);
    let (first, st) = verified(&http);
    let first = first.unwrap_or_else(|| panic!("no proof after a clean pass: {st:?}"));
    assert!(s.mirror.metric("redmirror_verified_source_time_seconds") > 1e9);
    admin::reconcile(&http, TOKEN);
    let second = verified(&http).0.expect("still proven");
    assert!(time_of(&second) > time_of(&first), "{second} after {first}");
    let (code, out) = cli(&["status", "--url", &http], &{
        let mut e = mirror_env(&s.source.url(), &s.dest.url(), &s.broker.bootstrap());
        with_token(&mut e);
        e
    });
    assert!(out.contains("staging matched production as of"), "{code}: {out}");

    // Drift apply cannot repair: a watermark from a far newer epoch makes
    // every repair of the flow stale. The pass finds it, repairs, and the
    // flow still differs: nothing new is proven.
    hset(&mut dst, b"redmirror:watermarks", &[(b"v", b"999999:1")]);
    hset(&mut dst, b"client:v", &[(b"x", b"drifted")]);
    for _ in 0..2 {
        let r = admin::reconcile(&http, TOKEN);
        assert_eq!(r["result"]["drift"]["different"], 1, "{r}");
        let (now, st) = verified(&http);
        assert_eq!(
            now.as_deref(),
            Some(second.as_str()),
            "moved past unrepaired drift: {st:?}"
        );
    }
    let gauge = s.mirror.metric("redmirror_verified_source_time_seconds");
    let second_s = time_of(&second)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((gauge - second_s).abs() < 1e-3, "{gauge} vs {second_s}");

    // The repair: without the bogus watermark the next pass repairs the
    // flow, compares it again in step, and proves its start.
    let _: i64 = redis::cmd("HDEL")
        .arg("redmirror:watermarks")
        .arg("v")
        .query(&mut dst)
        .unwrap();
    let r = admin::reconcile(&http, TOKEN);
    assert_eq!(r["result"]["drift"]["different"], 1, "{r}");
    let third = verified(&http).0.expect("proven");
    assert!(time_of(&third) > time_of(&second), "{third} after {second}");
    s.wait_dest(b"client:v", Some(&copy_of(&hash(&[("x", "1")]))));
}
