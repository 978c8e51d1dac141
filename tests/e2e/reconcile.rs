//! The reconciler: gaps repaired, FLUSHDB caught, dry run exact, one at a
//! time, no regression under concurrent writes.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::*;

fn env_for(source: &RedisServer, dest: &RedisServer, broker: &Broker) -> BTreeMap<String, String> {
    let mut env = mirror_env(&source.url(), &dest.url(), &broker.bootstrap());
    env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into());
    env.insert("REDMIRROR_LEASE_TTL".into(), "2s".into());
    env.insert("REDMIRROR_RECONCILE_BARRIER_TIMEOUT".into(), "10s".into());
    env
}

fn reconcile_once(env: &BTreeMap<String, String>, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["reconcile", "--once"];
    args.extend_from_slice(extra);
    let out = command().args(&args).envs(env).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const TOKEN: &str = "reconcile-test-token-123";

fn write_flows(conn: &mut redis::Connection, prefix: &str, n: usize) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("HSET")
            .arg(format!("client:{prefix}-{i}"))
            .arg("i")
            .arg(i)
            .ignore();
    }
    let _: () = pipe.query(conn).unwrap();
}

/// Waits until every source flow is mirrored exactly and no extra copy remains.
fn wait_converged(source: &RedisServer, dest: &RedisServer) {
    wait_for("destination to match the source", CONVERGE, || {
        let src = snapshot(source);
        let dst = snapshot(dest);
        let want: BTreeMap<_, _> = src
            .iter()
            .filter(|(k, _)| k.starts_with(b"client:"))
            .map(|(k, v)| (k.clone(), copy_of(v)))
            .collect();
        let have: BTreeMap<_, _> = dst
            .iter()
            .filter(|(k, v)| k.starts_with(b"client:") && v.get(&b"isSyncCopy"[..]).map(Vec::as_slice) == Some(b"true"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (want == have).then_some(())
    });
}

#[test]
fn changes_made_while_capture_was_down_are_repaired_by_the_gap_pass() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let env = env_for(&source, &dest, broker);
    let _apply = Mirror::start(&["apply"], &with_http_port(&env));
    let _reconcile = Mirror::start(&["reconcile"], &with_http_port(&env));
    let mut capture = Mirror::start(&["capture"], &with_http_port(&env));
    let mut src = source.conn();
    write_flows(&mut src, "before", 20);
    wait_converged(&source, &dest);

    capture.kill();
    write_flows(&mut src, "during", 30); // added
    hset(&mut src, b"client:before-1", &[(b"i", b"changed")]); // changed
    let _: i64 = redis::cmd("DEL").arg("client:before-2").query(&mut src).unwrap(); // deleted
    let _capture = Mirror::start(&["capture"], &with_http_port(&env));
    // The interval is an hour: only the gap-triggered pass can repair this.
    wait_converged(&source, &dest);
}

#[test]
fn a_subscriber_cut_by_the_output_buffer_limit_is_a_gap_that_gets_repaired() {
    let source = RedisServer::start_with(
        RedisOptions::with_notifications().arg("client-output-buffer-limit", "pubsub 2kb 1kb 1"),
    );
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let env = env_for(&source, &dest, broker);
    let mirror = Mirror::start(&["run"], &env);
    let mut src = source.conn();
    write_flows(&mut src, "warm", 5);
    wait_converged(&source, &dest);
    // A flood the subscriber cannot drain fast enough: Redis cuts it off.
    for round in 0..20 {
        write_flows(&mut src, &format!("flood{round}"), 500);
    }
    wait_for("a capture gap to be counted", CONVERGE, || {
        (mirror.metric("redmirror_capture_gaps_total") >= 1.0).then_some(())
    });
    wait_converged(&source, &dest);
}

#[test]
fn a_full_pending_set_drops_with_a_gap_instead_of_growing_and_the_gap_gets_repaired() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let mut env = env_for(&source, &dest, broker);
    // Room for 8 distinct flows: any burst overflows it.
    env.insert("REDMIRROR_CAPTURE_PENDING_MAX".into(), "8".into());
    let mirror = Mirror::start(&["run"], &env);
    let mut src = source.conn();
    write_flows(&mut src, "warm", 3);
    wait_converged(&source, &dest);
    // 2,000 distinct flows in one transaction: their notifications arrive
    // together, far faster than capture can read and publish 8 at a time.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for i in 0..2000 {
        pipe.hset(format!("client:burst-{i}"), "i", i).ignore();
    }
    let _: () = pipe.query(&mut src).unwrap();
    wait_for("the overflow to be counted as a gap", CONVERGE, || {
        (mirror.metric("redmirror_capture_gaps_total") >= 1.0).then_some(())
    });
    assert!(
        mirror.metric("redmirror_capture_pending_flows") <= 8.0,
        "the pending set grew past its bound"
    );
    // Dropped notifications are recovered by the gap pass (the interval is an hour).
    wait_converged(&source, &dest);
}

#[test]
fn sigterm_during_a_pass_stops_promptly_and_releases_the_lease() {
    // Regression (found by the fault suite): a pass waiting at its barrier
    // ignored SIGTERM until the shutdown timeout and kept the lease.
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let mut env = env_for(&source, &dest, broker);
    env.insert("REDMIRROR_RECONCILE_BARRIER_TIMEOUT".into(), "10m".into());
    env.insert("REDMIRROR_SHUTDOWN_TIMEOUT".into(), "10m".into());
    env.insert("REDMIRROR_LEASE_TTL".into(), "10m".into());
    // Events in the topic and no apply: the barrier cannot be reached.
    let capture = Mirror::start(&["capture"], &with_http_port(&env));
    let mut src = source.conn();
    // Written until capture (subscribing in the background) has published them.
    wait_for("capture to publish", CONVERGE, || {
        write_flows(&mut src, "unapplied", 5);
        (capture.metric("redmirror_capture_events_total{op=\"upsert\"}") >= 5.0).then_some(())
    });
    let mut reconcile = Mirror::start(&["reconcile"], &with_http_port(&env));
    wait_for("the reconciler to hold the lease", CONVERGE, || {
        (reconcile.metric("redmirror_lease_held{lease=\"reconcile\"}") >= 1.0).then_some(())
    });
    // Its first pass is now waiting at the barrier (for up to 10 minutes).
    let code = reconcile.terminate(); // panics unless it exits within 30 s
    assert_eq!(code, Some(0), "{}", reconcile.output());
    let lease: Option<String> = redis::cmd("GET")
        .arg("redmirror:lease:reconcile")
        .query(&mut dest.conn())
        .unwrap();
    assert_eq!(lease, None, "the lease was not released (its TTL is 10 minutes)");
}

/// The admin API never waits on a pass: `POST /v1/reconcile` answers 202
/// with a request id at once, while the pass waits at its barrier (no apply
/// runs, so the topic's end offsets are never reached before the barrier
/// times out); `GET /v1/status` shows the request queued or running, then
/// done with the pass's report.
#[test]
fn an_admin_reconcile_answers_at_once_while_the_pass_waits_at_the_barrier() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let mut env = env_for(&source, &dest, broker);
    env.insert("REDMIRROR_RECONCILE_BARRIER_TIMEOUT".into(), "6s".into());
    env.insert("REDMIRROR_ADMIN_TOKEN".into(), TOKEN.into());
    let capture = Mirror::start(&["capture"], &with_http_port(&env));
    let mut src = source.conn();
    wait_for("capture to publish", CONVERGE, || {
        write_flows(&mut src, "unapplied", 5);
        (capture.metric("redmirror_capture_events_total{op=\"upsert\"}") >= 5.0).then_some(())
    });
    let reconcile = Mirror::start(&["reconcile"], &with_http_port(&env));
    wait_for("the reconciler to hold the lease", CONVERGE, || {
        (reconcile.metric("redmirror_lease_held{lease=\"reconcile\"}") >= 1.0).then_some(())
    });
    // Its start-up pass waits at the barrier now; this request waits behind it.
    let id = admin::request(&reconcile.http, "/v1/reconcile", TOKEN);
    let (code, body, took) = admin::status(&reconcile.http, TOKEN).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, 200, "{body}");
    assert!(took <= admin::PROMPT, "GET /v1/status took {took:?}");
    let seen = body["requests"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["id"] == id.as_str()).cloned())
        .unwrap_or_else(|| panic!("request {id} not in the status: {body}"));
    assert!(seen["state"] == "queued" || seen["state"] == "running", "{seen}");
    assert_eq!(seen["action"], "reconcile", "{seen}");
    let done = admin::finished(&reconcile.http, TOKEN, &id);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["result"]["barrier"], "timed_out", "{done}");
    assert_eq!(done["result"]["source_flows"], 5, "{done}");
    // A pass whose barrier timed out reports the drift and repairs nothing
    // (a late event could otherwise resurrect a flow deleted in a gap).
    assert_eq!(done["result"]["drift"]["missing"], 5, "{done}");
    assert_eq!(done["result"]["repaired"], 0, "{done}");
    assert_eq!(done["result"]["dry_run"], true, "{done}");
}

#[test]
fn flushdb_on_the_source_removes_every_sync_copy_and_no_native_one() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let mut env = env_for(&source, &dest, broker);
    env.insert("REDMIRROR_ADMIN_TOKEN".into(), TOKEN.into());
    let mirror = Mirror::start(&["run"], &env);
    let mut src = source.conn();
    let mut dst = dest.conn();
    hset(&mut dst, b"client:native", &[(b"mine", b"1")]);
    write_flows(&mut src, "f", 50);
    wait_converged(&source, &dest);
    let _: () = redis::cmd("FLUSHDB").query(&mut src).unwrap();
    // FLUSHDB sends no per-key notification: only a pass sees it. The
    // running process holds the reconcile lease, so ask it over the admin API.
    // (A pass signalled by capture's start may be running already and find
    // the drift first; either way the counter shows all 50 extras.)
    let done = admin::reconcile(&mirror.http, TOKEN);
    assert_eq!(done["state"], "done", "{done}");
    wait_for("50 extra copies found", CONVERGE, || {
        (mirror.metric("redmirror_reconcile_drift_total{kind=\"extra\"}") >= 50.0).then_some(())
    });
    // A `reconcile --once` meanwhile has the lease holder run the pass.
    let (code, out) = reconcile_once(&with_http_port(&env), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("asked it for a pass"), "{out}");
    wait_for("every sync copy removed", CONVERGE, || {
        let keys: Vec<String> = redis::cmd("KEYS").arg("client:f-*").query(&mut dst).unwrap();
        keys.is_empty().then_some(())
    });
    assert_eq!(hgetall(&mut dst, b"client:native"), hash(&[("mine", "1")]));
    let idx: i64 = redis::cmd("HLEN").arg("clients").query(&mut dst).unwrap();
    assert_eq!(idx, 0);
}

#[test]
fn a_dry_run_reports_exactly_the_injected_drift_and_changes_nothing() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let env = env_for(&source, &dest, broker);
    let mut mirror = Mirror::start(&["run"], &env);
    let mut src = source.conn();
    write_flows(&mut src, "d", 10);
    wait_converged(&source, &dest);
    mirror.terminate();
    let mut dst = dest.conn();
    // Injected drift: one missing, one extra, one different, plus a native copy (not drift).
    let _: i64 = redis::cmd("DEL").arg("client:d-1").query(&mut dst).unwrap();
    hset(&mut dst, b"client:ghost", &[(b"x", b"1"), (b"isSyncCopy", b"true")]);
    hset(&mut dst, b"client:d-2", &[(b"i", b"wrong"), (b"extra", b"e")]);
    hset(&mut dst, b"client:native", &[(b"n", b"1")]);
    let before = snapshot(&dest);
    let (code, out) = reconcile_once(&with_http_port(&env), &["--dry-run", "--json"]);
    assert_eq!(code, 0, "{out}");
    let json_start = out.find('{').expect("json");
    let report: serde_json::Value = serde_json::from_str(&out[json_start..out.rfind('}').unwrap() + 1]).expect(&out);
    assert_eq!(report["drift"]["missing"], 1, "{out}");
    assert_eq!(report["drift"]["extra"], 1, "{report}");
    assert_eq!(report["drift"]["different"], 1, "{report}");
    assert_eq!(report["repaired"], 0);
    assert_eq!(report["native"], 1);
    let flows = report["flows"].as_array().unwrap();
    let find = |id: &str| flows.iter().find(|f| f["flow_id"] == id).cloned().unwrap_or_default();
    assert_eq!(find("d-1")["kind"], "missing");
    assert_eq!(find("ghost")["kind"], "extra");
    assert_eq!(find("d-2")["kind"], "different");
    assert_eq!(find("d-2")["fields"], serde_json::json!(["extra", "i"]));
    assert_eq!(snapshot(&dest), before, "the dry run changed the destination");
    // The human table names them too.
    let (_, table) = reconcile_once(&with_http_port(&env), &["--dry-run"]);
    assert!(table.contains("missing 1, extra 1, different 1"), "{table}");
    assert!(table.contains("ghost"), "{table}");
}

fn json_report(out: &str) -> serde_json::Value {
    let start = out.find('{').expect("json");
    serde_json::from_str(&out[start..out.rfind('}').unwrap() + 1]).expect(out)
}

#[test]
fn the_barrier_waits_until_capture_has_published_what_it_received() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let mut env = env_for(&source, &dest, broker);
    let key = "redmirror:capture:progress";
    let progress = || -> Option<(String, u64, u64)> {
        let v: Option<String> = redis::cmd("GET").arg(key).query(&mut dest.conn()).unwrap();
        let v = v?;
        let p: Vec<&str> = v.split(' ').collect();
        assert_eq!(p.len(), 3, "progress is `run received settled`: {v:?}");
        Some((p[0].to_string(), p[1].parse().unwrap(), p[2].parse().unwrap()))
    };
    // A running capture reports its progress; once idle, all it received is
    // settled. (It counts changes it was notified of: keep writing until it
    // has subscribed.)
    let mut mirror = Mirror::start(&["run"], &env);
    let mut src = source.conn();
    let mut n = 0u64;
    wait_for("capture to receive changes", CONVERGE, || {
        n += 1;
        hset(&mut src, b"client:probe", &[(b"n", n.to_string().as_bytes())]);
        progress().filter(|(_, received, _)| *received >= 1)
    });
    write_flows(&mut src, "b", 5);
    wait_converged(&source, &dest);
    wait_for("capture to report everything settled", CONVERGE, || {
        progress().filter(|(_, received, settled)| *received >= 6 && received == settled)
    });
    let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut dest.conn()).unwrap();
    assert!(
        ttl > 0 && ttl <= 10_000,
        "the progress key expires (a dead capture holds nothing back): {ttl}"
    );
    mirror.terminate();
    assert_eq!(progress(), None, "a capture that stops deletes its progress");

    // Changes received but not yet in Kafka hold the pass back (here until
    // the barrier times out: nothing will ever settle them).
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("r1 10 5")
        .query(&mut dest.conn())
        .unwrap();
    env.insert("REDMIRROR_RECONCILE_BARRIER_TIMEOUT".into(), "2s".into());
    let (code, out) = reconcile_once(&with_http_port(&env), &["--dry-run", "--json"]);
    assert_eq!(code, 0, "{out}");
    let report = json_report(&out);
    assert_eq!(report["barrier"], "timed_out", "{report}");
    assert!(report["phase_seconds"]["barrier"].as_f64().unwrap() >= 2.0, "{report}");

    // Settled (or a capture that restarted since): no wait.
    for value in ["r1 10 10", "r2 0 0"] {
        let _: () = redis::cmd("SET").arg(key).arg(value).query(&mut dest.conn()).unwrap();
        let (code, out) = reconcile_once(&with_http_port(&env), &["--dry-run", "--json"]);
        assert_eq!(code, 0, "{out}");
        assert_eq!(json_report(&out)["barrier"], "reached", "{value}: {out}");
    }
}

#[test]
fn reconcile_once_while_a_run_holds_the_lease_has_that_run_do_the_pass() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let env = env_for(&source, &dest, broker);
    let mirror = Mirror::start(&["run"], &with_http_port(&env));
    let mut src = source.conn();
    write_flows(&mut src, "q", 5);
    wait_converged(&source, &dest);
    wait_for("the run to pass once (it holds the lease)", CONVERGE, || {
        (mirror.metric("redmirror_reconcile_runs_total") >= 1.0).then_some(())
    });
    // The first request is answered by a pass that also covers every
    // earlier trigger (capture's start gap), so none is left to race the
    // drift injected next.
    let (code, out) = reconcile_once(&with_http_port(&env), &["--json"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("asked it for a pass"), "{out}");
    let first = json_report(&out)["request"].as_u64().unwrap_or(0);
    assert!(first >= 1, "{out}");
    let mut dst = dest.conn();
    let _: i64 = redis::cmd("DEL").arg("client:q-1").query(&mut dst).unwrap();
    let (code, out) = reconcile_once(&with_http_port(&env), &["--json"]);
    assert_eq!(code, 0, "{out}");
    let report = json_report(&out);
    assert!(report["request"].as_u64().unwrap_or(0) > first, "{report}");
    assert_eq!(report["drift"]["missing"], 1, "{report}");
    assert_eq!(report["repaired"], 1, "{report}");
    wait_converged(&source, &dest);
    assert!(
        mirror.metric("redmirror_reconcile_runs_total") >= 3.0,
        "the run did the passes"
    );
}

#[test]
fn only_one_reconciler_runs_and_another_takes_over_when_it_dies() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let env = env_for(&source, &dest, broker);
    let mut a = Mirror::start(&["reconcile"], &with_http_port(&env));
    let mut b = Mirror::start(&["reconcile"], &with_http_port(&env));
    let passes = |m: &Mirror| m.metric("redmirror_reconcile_runs_total");
    let a_first = wait_for("one reconciler to run a pass", CONVERGE, || {
        if passes(&a) >= 1.0 {
            Some(true)
        } else if passes(&b) >= 1.0 {
            Some(false)
        } else {
            None
        }
    });
    let (first, second) = if a_first { (&mut a, &mut b) } else { (&mut b, &mut a) };
    assert_eq!(passes(second), 0.0, "both reconcilers ran a pass");
    assert!(second.output().contains("standing by"), "{}", second.output());
    first.kill();
    wait_for("the standby to take over and run a pass", CONVERGE, || {
        (passes(second) >= 1.0).then_some(())
    });
    assert!(second.output().contains("Lease acquired"));
}

#[test]
fn concurrent_writes_during_passes_never_regress_a_flow() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let mut env = env_for(&source, &dest, broker);
    env.insert("REDMIRROR_ADMIN_TOKEN".into(), TOKEN.into());
    let mirror = Mirror::start(&["run"], &env);
    let mut src = source.conn();
    write_flows(&mut src, "c", 20);
    wait_converged(&source, &dest);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut conn = source.conn();
        std::thread::spawn(move || {
            let mut v = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                v += 1;
                let mut pipe = redis::pipe();
                for i in 0..20 {
                    pipe.cmd("HSET").arg(format!("client:c-{i}")).arg("v").arg(v).ignore();
                }
                let _: () = pipe.query(&mut conn).unwrap();
            }
            v
        })
    };
    let mut dst = dest.conn();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut passes = 0;
    while std::time::Instant::now() < deadline {
        if admin::reconcile(&mirror.http, TOKEN)["state"] == "done" {
            passes += 1;
        }
        for i in 0..20 {
            let key = format!("client:c-{i}");
            let v: Option<u64> = redis::cmd("HGET").arg(&key).arg("v").query(&mut dst).unwrap();
            if let Some(v) = v {
                let prev = seen.insert(key.clone(), v).unwrap_or(0);
                assert!(v >= prev, "{key} regressed from {prev} to {v}");
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last = writer.join().unwrap();
    assert!(passes >= 2, "only {passes} passes ran");
    assert!(last > 10, "writer made {last} rounds");
    wait_converged(&source, &dest);
}

/// Readiness follows the subscription, not traffic: after the source kills
/// capture's pub/sub connection on an idle source, capture re-subscribes and
/// `/readyz` passes again although nothing is written.
#[test]
fn readiness_comes_back_with_the_subscription_on_an_idle_source() {
    let s = Setup::run();
    assert_eq!(s.mirror.readyz(), 200, "{}", s.mirror.output());
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut s.source.conn())
        .unwrap();
    assert!(killed >= 1, "no pub/sub connection to kill");
    wait_for("capture to re-subscribe (a gap)", CONVERGE, || {
        (s.mirror.metric("redmirror_capture_gaps_total") >= 1.0).then_some(())
    });
    wait_for("/readyz to pass again with nothing written", CONVERGE, || {
        (s.mirror.readyz() == 200).then_some(())
    });
}

/// The watermark of a deleted flow stays while it is younger than the change
/// topic's `delete.retention.ms` and is pruned after a pass once it is
/// older; a replay from the beginning afterwards does not bring the flow
/// back (its delete is replayed after its upsert and writes the watermark
/// again), and the live flow stays.
#[test]
fn a_deleted_flows_watermark_is_pruned_after_delete_retention_and_a_replay_cannot_resurrect_it() {
    let source = RedisServer::start();
    let url = source.url();
    let (mut s, env) = Setup::run_on(source, &url, |env| {
        env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1s".into());
    });
    let wm = b"redmirror:watermarks";
    let mut src = s.source.conn();
    let mut dst = s.dest.conn();
    hset(&mut src, b"client:gone", &[(b"v", b"1")]);
    hset(&mut src, b"client:live", &[(b"v", b"2")]);
    s.wait_dest(b"client:gone", Some(&copy_of(&hash(&[("v", "1")]))));
    s.wait_dest(b"client:live", Some(&copy_of(&hash(&[("v", "2")]))));
    let _: i64 = redis::cmd("DEL").arg("client:gone").query(&mut src).unwrap();
    s.wait_dest(b"client:gone", None);
    assert!(hexists(&mut dst, wm, b"gone"), "the delete leaves a watermark");

    // Kafka's default delete.retention.ms is a day: passes keep the entry.
    let runs = s.mirror.metric("redmirror_reconcile_runs_total");
    wait_for("two passes after the delete", CONVERGE, || {
        (s.mirror.metric("redmirror_reconcile_runs_total") >= runs + 2.0).then_some(())
    });
    assert!(hexists(&mut dst, wm, b"gone"), "a recent watermark was pruned");

    kafka::alter_topic(&s.broker.bootstrap(), &s.mirror.topic, "delete.retention.ms", "1000");
    wait_for("the deleted flow's watermark to be pruned", CONVERGE, || {
        (!hexists(&mut dst, wm, b"gone")).then_some(())
    });
    assert!(hexists(&mut dst, wm, b"live"), "the live flow's watermark was pruned");
    // Counted and logged once the prune's last step returns, a moment
    // after the entry is gone.
    wait_for("the prune to be counted and logged", CONVERGE, || {
        (s.mirror.metric("redmirror_watermarks_pruned_total") >= 1.0
            && s.mirror.output().contains("Pruned watermarks of absent flows."))
        .then_some(())
    });

    assert_eq!(s.mirror.terminate(), Some(0));
    let out = command()
        .args(["replay", "--from-beginning"])
        .envs(&env)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        !exists(&mut dst, b"client:gone"),
        "replay resurrected a deleted flow:\n{text}"
    );
    assert!(!hexists(&mut dst, b"clients", b"gone"), "{text}");
    assert!(
        hexists(&mut dst, wm, b"gone"),
        "the replayed delete writes the watermark again"
    );
    assert_eq!(hgetall(&mut dst, b"client:live"), copy_of(&hash(&[("v", "2")])));
    assert!(hexists(&mut dst, b"clients", b"live"));
}

/// Gaps signalled before the reconciler started are covered by its first
/// pass, which is over every flow: their recorded scope is taken with it,
/// so it cannot widen the next gap on some masters into a pass over all.
#[test]
fn a_gap_scope_left_from_before_the_start_is_taken_by_the_first_pass() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let env = env_for(&source, &dest, broker);
    let mut dst = dest.conn();
    // What a capture that signalled a gap before this reconciler read the
    // counter leaves behind.
    let _: i64 = redis::cmd("HSET")
        .arg("redmirror:capture:gaps:scope")
        .arg("*")
        .arg("1")
        .query(&mut dst)
        .unwrap();
    let _: i64 = redis::cmd("INCR")
        .arg("redmirror:capture:gaps")
        .query(&mut dst)
        .unwrap();
    let mirror = Mirror::start(&["reconcile"], &with_http_port(&env));
    wait_for("the first pass", CONVERGE, || {
        (mirror.metric("redmirror_reconcile_runs_total") >= 1.0).then_some(())
    });
    let left: i64 = redis::cmd("EXISTS")
        .arg("redmirror:capture:gaps:scope")
        .query(&mut dst)
        .unwrap();
    assert_eq!(
        left,
        0,
        "the first pass left the earlier gaps' scope behind:\n{}",
        mirror.output()
    );
}

/// A pass run by `reconcile --once` (a scheduled job, no long-running
/// reconciler) is kept on the destination with its proof, like a service's
/// pass, so `status` can say since when staging matched production; a dry
/// run writes nothing.
#[test]
fn reconcile_once_keeps_its_report_and_proof_on_the_destination() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let env = env_for(&source, &dest, broker);
    // Apply writes the repairs; no process runs passes of its own.
    let _apply = Mirror::start(&["apply"], &with_http_port(&env));
    let mut src = source.conn();
    write_flows(&mut src, "p", 3);
    let stored = |dest: &RedisServer| -> Option<serde_json::Value> {
        let mut d = dest.conn();
        let v: Option<String> = redis::cmd("GET").arg("redmirror:reconcile:last").query(&mut d).unwrap();
        v.map(|s| serde_json::from_str(&s).expect("the stored report is JSON"))
    };
    let (code, out) = reconcile_once(&env, &["--dry-run", "--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(stored(&dest), None, "a dry run stored a report: {out}");
    // The first pass repairs the three missing copies: no proof yet, but
    // the report is kept.
    let (code, out) = reconcile_once(&env, &["--json"]);
    assert_eq!(code, 0, "{out}");
    let first = stored(&dest).unwrap_or_else(|| panic!("no report stored after reconcile --once: {out}"));
    assert_eq!(first["repaired"], 3, "{first}");
    wait_converged(&source, &dest);
    // A pass that finds no drift proves the destination in step.
    let (code, out) = reconcile_once(&env, &["--json"]);
    assert_eq!(code, 0, "{out}");
    let second = stored(&dest).expect("a report");
    assert_eq!(second["repaired"], 0, "{second}");
    assert!(
        second["verified_source_time_us"]
            .as_i64()
            .is_some_and(|t| t > 1_000_000_000_000_000),
        "no proof stored: {second}"
    );
    // The proof is carried: a later pass with drift keeps the earlier proof.
    let _: i64 = redis::cmd("DEL").arg("client:p-0").query(&mut dest.conn()).unwrap();
    let (code, out) = reconcile_once(&env, &["--json"]);
    assert_eq!(code, 0, "{out}");
    let third = stored(&dest).expect("a report");
    assert_eq!(third["repaired"], 1, "{third}");
    assert!(
        third["verified_source_time_us"].as_i64() >= second["verified_source_time_us"].as_i64(),
        "the proof went back: {second} then {third}"
    );
}
