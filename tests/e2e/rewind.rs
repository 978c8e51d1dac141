//! Rewind: the state at T rebuilt from the topic's whole history, held
//! until `resume`.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::*;

const TOKEN: &str = "rewind-admin-token";

/// How long a held destination is watched: more than two reconcile
/// intervals of the mirror under test.
const HELD_WINDOW: Duration = Duration::from_millis(4_500);

/// `redmirror {args}`: exit code, stdout, stderr.
fn cli3(args: &[&str], env: &BTreeMap<String, String>) -> (i32, String, String) {
    let out = command().args(args).envs(env).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts the destination's sync copies stay `want` for `window` while
/// `during` runs now and then (live changes on the source).
#[track_caller]
fn stays(dest: &RedisServer, want: &BTreeMap<Vec<u8>, Hash>, window: Duration, what: &str) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        let got = sync_copies(dest);
        assert_eq!(&got, want, "{what}: the held destination moved");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn rewind(env: &BTreeMap<String, String>, from: &[&str], until: &str) -> serde_json::Value {
    let mut args = vec!["replay"];
    args.extend_from_slice(from);
    args.extend_from_slice(&["--until", until, "--force", "--json"]);
    let (code, out, err) = cli3(&args, env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("held at"), "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("replay --json: {e}: {out}"))
}

#[test]
fn a_rewind_is_exact_from_any_start_and_holds_until_resume() {
    let source = RedisServer::start();
    let url = source.url();
    let (mut s, env) = Setup::run_on(source, &url, |e| {
        e.insert("REDMIRROR_ADMIN_TOKEN".into(), TOKEN.into());
        e.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "2s".into());
    });
    let mut src = s.source.conn();
    let mut dst = s.dest.conn();
    // Before S: changed again after T; deleted after T; never changed.
    hset(&mut src, b"client:keep", &[(b"v", b"old")]);
    hset(&mut src, b"client:gone", &[(b"v", b"old")]);
    hset(&mut src, b"client:steady", &[(b"v", b"1")]);
    s.wait_dest(b"client:steady", Some(&copy_of(&hash(&[("v", "1")]))));
    let from = clock_boundary(&s.source);
    // Between S and T.
    hset(&mut src, b"client:mid", &[(b"v", b"old")]);
    s.wait_dest(b"client:mid", Some(&copy_of(&hash(&[("v", "old")]))));
    hset(&mut dst, b"client:native", &[(b"n", b"1")]);
    let t = clock_boundary(&s.source);
    let at_t = sync_copies(&s.dest);
    assert_eq!(at_t.len(), 4, "{at_t:?}");
    // After T.
    hset(&mut src, b"client:keep", &[(b"v", b"new")]);
    hset(&mut src, b"client:mid", &[(b"v", b"new")]);
    let _: i64 = redis::cmd("DEL").arg("client:gone").query(&mut src).unwrap();
    hset(&mut src, b"client:born", &[(b"v", b"x")]);
    s.wait_dest(b"client:born", Some(&copy_of(&hash(&[("v", "x")]))));
    s.wait_dest(b"client:gone", None);
    s.wait_dest(b"client:keep", Some(&copy_of(&hash(&[("v", "new")]))));
    s.wait_dest(b"client:mid", Some(&copy_of(&hash(&[("v", "new")]))));
    assert_eq!(s.mirror.metric("redmirror_held"), 0.0);

    // From a timestamp after keep's and gone's last change before T: the
    // state at T comes from the whole history all the same.
    let report = rewind(&env, &["--from-timestamp", &from], &t);
    assert_eq!(sync_copies(&s.dest), at_t, "{report}");
    assert_eq!(report["read_from_beginning"], true, "{report}");
    assert_eq!(report["approximate"], 0, "{report}");
    assert_eq!(hgetall(&mut dst, b"client:native"), hash(&[("n", "1")]));

    // Held: shown, ready, and nothing moves it — live changes (captured and
    // published) and more than two reconcile intervals.
    assert_eq!(s.mirror.metric("redmirror_held"), 1.0);
    assert_eq!(s.mirror.readyz(), 200, "held is a chosen state, not a failure");
    let (_, status, _) = admin::status(&s.mirror.http, TOKEN).unwrap();
    assert_eq!(status["held"], true, "{status}");
    assert!(
        status["held_at"].as_str().is_some_and(|a| a.starts_with(&t[..19])),
        "{status} vs {t}"
    );
    assert!(status["held_since"].is_string(), "{status}");
    let published = s.mirror.metric("redmirror_capture_events_total{op=\"upsert\"}");
    hset(&mut src, b"client:keep", &[(b"v", b"newer")]);
    hset(&mut src, b"client:while-held", &[(b"v", b"1")]);
    wait_for("capture to publish the changes made while held", CONVERGE, || {
        (s.mirror.metric("redmirror_capture_events_total{op=\"upsert\"}") >= published + 2.0).then_some(())
    });
    let runs = s.mirror.metric("redmirror_reconcile_runs_total");
    stays(&s.dest, &at_t, HELD_WINDOW, "live changes and two reconcile intervals");
    assert_eq!(
        s.mirror.metric("redmirror_reconcile_runs_total"),
        runs,
        "a pass ran while held"
    );
    let (code, out) = cli(&["reconcile", "--once"], &env);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("held at") && out.contains("redmirror resume"), "{out}");
    let (code, out) = cli(&["replay", "--from-beginning"], &env);
    assert_eq!(code, 2, "a plain replay would move a held mirror: {out}");
    assert!(out.contains("held at"), "{out}");

    // The hold survives a restart.
    assert_eq!(s.mirror.terminate(), Some(0));
    s.mirror = Mirror::start(&["run"], &env);
    wait_for("the restarted mirror to be ready", CONVERGE, || {
        (s.mirror.readyz() == 200).then_some(())
    });
    wait_for("the restarted mirror to show the hold", CONVERGE, || {
        (s.mirror.metric("redmirror_held") == 1.0).then_some(())
    });
    stays(&s.dest, &at_t, HELD_WINDOW, "after a restart");

    // Resume: apply catches up and a pass brings the destination to the
    // source's current state.
    let (code, body, _) = admin::post(&s.mirror.http, "/v1/resume", TOKEN).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["resumed"], true, "{body}");
    wait_for("the destination to match the source after resume", CONVERGE, || {
        (sync_copies(&s.dest) == expected(&s.source)).then_some(())
    });
    wait_for("redmirror_held to be 0", CONVERGE, || {
        (s.mirror.metric("redmirror_held") == 0.0).then_some(())
    });
    let (_, status, _) = admin::status(&s.mirror.http, TOKEN).unwrap();
    assert_eq!(status["held"], false, "{status}");

    // From the beginning, the same state at T; `redmirror resume` ends it.
    let report = rewind(&env, &["--from-beginning"], &t);
    assert_eq!(sync_copies(&s.dest), at_t, "{report}");
    assert_eq!(report["read_from_beginning"], false, "{report}");
    let (code, out) = cli(&["resume"], &env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("resumed"), "{out}");
    wait_for(
        "the destination to match the source after the second resume",
        CONVERGE,
        || (sync_copies(&s.dest) == expected(&s.source)).then_some(()),
    );
    let (code, out) = cli(&["resume"], &env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("not held"), "{out}");
    let (_, out) = cli(&["check"], &env);
    assert!(
        !out.contains("min.compaction.lag.ms"),
        "the created topic keeps 7 days uncompacted: {out}"
    );
}

#[test]
fn a_rewind_before_the_exact_window_names_the_flows_that_may_be_approximate() {
    let source = RedisServer::start();
    let url = source.url();
    let (s, env) = Setup::run_on(source, &url, |e| {
        e.insert("REDMIRROR_TOPIC_MIN_COMPACTION_LAG".into(), "1s".into());
    });
    let mut src = s.source.conn();
    hset(&mut src, b"client:before", &[(b"v", b"1")]);
    s.wait_dest(b"client:before", Some(&copy_of(&hash(&[("v", "1")]))));
    let t = clock_boundary(&s.source);
    hset(&mut src, b"client:after-t", &[(b"v", b"1")]);
    s.wait_dest(b"client:after-t", Some(&copy_of(&hash(&[("v", "1")]))));
    // T older than the topic's 1 s min.compaction.lag.ms.
    let t_ms = humantime::parse_rfc3339(&t)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let mut c = s.source.conn();
    wait_for("the source clock to pass T + 1.5 s", CONVERGE, || {
        let (secs, us): (u64, u64) = redis::cmd("TIME").query(&mut c).unwrap();
        (u128::from(secs * 1000 + us / 1000) > t_ms + 1500).then_some(())
    });
    let report = rewind(&env, &["--from-beginning"], &t);
    assert_eq!(report["approximate"], 1, "{report}");
    assert_eq!(report["approximate_flows"], serde_json::json!(["after-t"]), "{report}");
    assert!(report["exact_since"].is_string(), "{report}");
    let (code, out) = cli(&["resume"], &env);
    assert_eq!(code, 0, "{out}");
    // The default asks for 7 days: check says how to set it.
    let mut strict = env.clone();
    strict.remove("REDMIRROR_TOPIC_MIN_COMPACTION_LAG");
    let (_, out) = cli(&["check"], &strict);
    assert!(out.contains("min.compaction.lag.ms=1000"), "{out}");
    assert!(out.contains("--add-config min.compaction.lag.ms=604800000"), "{out}");
}
