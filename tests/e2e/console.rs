//! `redmirror status` and `redmirror top` against a running `redmirror run`:
//! from its HTTP listener (`--url`) and straight from Kafka and the
//! destination; healthy, with a dead letter, with the destination stopped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const TOKEN: &str = "console-test-admin-token";

/// `redmirror status ARGS...` until `done` says yes (at most `CONVERGE`):
/// the exit code and the output that satisfied it.
#[track_caller]
fn status_until(
    what: &str,
    args: &[&str],
    env: &BTreeMap<String, String>,
    done: impl Fn(i32, &str) -> bool,
) -> (i32, String) {
    let deadline = std::time::Instant::now() + CONVERGE;
    loop {
        let (code, out) = cli(args, env);
        if done(code, &out) {
            return (code, out);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; last `redmirror {}` exited {code}:\n{out}",
            args.join(" "),
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{out}"))
}

#[test]
fn status_and_top_from_the_process_and_straight_from_kafka_and_the_destination() {
    let source = RedisServer::start();
    let url = source.url();
    let (mut s, env) = Setup::run_on(source, &url, |env| {
        env.insert("REDMIRROR_ADMIN_TOKEN".into(), TOKEN.into());
    });
    let http = s.mirror.http.clone();
    // Both leases taken (capture has one: wait_ready saw it copy a flow).
    let leases = wait_for("both leases held by the process", CONVERGE, || {
        let (_, body, _) = admin::status(&http, TOKEN).ok()?;
        let l = body["lease"].clone();
        (l["capture"]["held_by_me"] == true && l["reconcile"]["held_by_me"] == true).then_some(l)
    });
    let capture_holder = leases["capture"]["me"].as_str().unwrap().to_string();

    // Healthy, from the process.
    let (code, out) = cli(&["status", "--url", &http], &env);
    eprintln!("---- status --url (healthy) ----\n{out}");
    assert_eq!(code, 0, "{out}");
    for want in [
        "HEALTHY",
        "role run",
        &format!("capture: this process ({capture_holder})"),
        "reconcile: this process",
        "destination ok",
        "hold          not held",
        &format!("0 in {}.dlq", s.mirror.topic),
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let (code, out) = cli(&["status", "--url", &http, "--json"], &env);
    assert_eq!(code, 0, "{out}");
    let v = json(&out);
    assert_eq!(v["healthy"], true, "{v:#}");
    assert_eq!(v["problems"], serde_json::json!([]), "{v:#}");
    assert_eq!(v["role"], "run");
    assert_eq!(v["origin"]["mode"], "process");
    assert_eq!(v["leases"]["capture"]["this_process"], true);
    assert_eq!(v["held"], false);
    assert_eq!(v["components"]["destination"]["ready"], true);
    assert_eq!(v["dead_letters"]["waiting"], 0);
    assert_eq!(v["lag"].as_object().map(|l| l.len()), Some(3), "{v:#}");

    // Healthy, straight from Kafka and the destination.
    let (code, out) = cli(&["status"], &env);
    eprintln!("---- status (direct, healthy) ----\n{out}");
    assert_eq!(code, 0, "{out}");
    for want in [
        "HEALTHY",
        &format!("capture: {capture_holder}"),
        "1 live instance",
        "hold          not held",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    // The documented least-privilege destination user may read all of it.
    crate::ops::run_acl(&s.dest, &crate::ops::documented_acl("redmirror-dest"));
    let mut as_user = env.clone();
    as_user.insert(
        "REDMIRROR_DEST_URL".into(),
        format!("redis://redmirror-dest:test-password-42@127.0.0.1:{}", s.dest.port()),
    );
    let (code, out) = cli(&["status"], &as_user);
    assert_eq!(code, 0, "as the documented destination user:\n{out}");
    let v = json(&cli(&["status", "--json"], &env).1);
    assert_eq!(
        (&v["healthy"], &v["origin"]["mode"]),
        (&Value::Bool(true), &Value::from("direct")),
        "{v:#}"
    );
    assert_eq!(v["apply_instances"], 1, "{v:#}");
    assert_eq!(v["leases"]["capture"]["holder"], capture_holder.as_str());

    // top: one line per refresh when stdout is not a terminal, with rates,
    // while a flow changes on the source every 20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, mut src) = (stop.clone(), s.source.conn());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                hset(&mut src, b"client:console-load", &[(b"n", n.to_string().as_bytes())]);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let (code, out) = cli(&["top", "--url", &http, "--count", "2"], &env);
    eprintln!("---- top --url --count 2 ----\n{out}");
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in &lines {
        for want in ["ready", "capture ", "/s", "applied ", "lag ", "reconcile "] {
            assert!(l.contains(want), "{want:?} missing from {l:?}");
        }
    }
    // The second refresh covers a whole second of writes.
    let rate = |l: &str, what: &str| -> f64 {
        let after = l
            .split_once(what)
            .unwrap_or_else(|| panic!("{what:?} missing from {l:?}"))
            .1;
        after.split_once("/s").unwrap().0.parse().unwrap()
    };
    assert!(rate(lines[1], "capture ") > 0.0, "{out}");
    assert!(rate(lines[1], "applied ") > 0.0, "{out}");
    assert!(lines[1].contains("e2e p50 ") && lines[1].contains(" p99 "), "{out}");
    let (code, out) = cli(&["top", "--count", "2"], &env);
    eprintln!("---- top --count 2 (direct) ----\n{out}");
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("topic ") && l.contains("committed ") && l.contains("/s")),
        "{out}"
    );
    assert!(rate(lines[1], "topic ") > 0.0, "{out}");
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    // Ctrl-C (SIGINT) stops top with exit 0.
    let mut top = command()
        .args(["top", "--url", &http])
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redmirror top");
    let mut first = String::new();
    let mut lines = BufReader::new(top.stdout.take().unwrap());
    lines.read_line(&mut first).unwrap();
    assert!(first.contains("capture "), "{first}");
    let _ = std::process::Command::new("kill")
        .arg("-INT")
        .arg(top.id().to_string())
        .status();
    let exit = wait_for("top to stop on SIGINT", CONVERGE, || top.try_wait().ok().flatten());
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    drop(lines);

    // A wrong token is a configuration error naming the setting.
    let mut wrong = env.clone();
    wrong.insert("REDMIRROR_ADMIN_TOKEN".into(), "not-the-token".into());
    let (code, out) = cli(&["status", "--url", &http], &wrong);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("REDMIRROR_ADMIN_TOKEN"), "{out}");

    // A dead letter: both views say how many and what to run.
    kafka::produce(
        &s.broker.bootstrap(),
        &s.mirror.topic,
        &[(b"console-bad".to_vec(), b"\xde\xad not an event".to_vec())],
    );
    let want = format!("1 dead letter waiting in {}.dlq: `redmirror dlq list`", s.mirror.topic);
    let (_, out) = status_until(
        "status --url to report the dead letter",
        &["status", "--url", &http],
        &env,
        |c, o| c == 1 && o.contains(&want),
    );
    eprintln!("---- status --url (a dead letter) ----\n{out}");
    let (code, out) = cli(&["status"], &env);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&want), "{out}");

    // The destination stops. Straight away: it is unreachable.
    s.dest.stop();
    let (code, out) = cli(&["status"], &env);
    eprintln!("---- status (direct, destination stopped) ----\n{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("destination: unreachable (") && out.contains("REDMIRROR_DEST_URL"),
        "{out}"
    );
    let v = json(&cli(&["status", "--json"], &env).1);
    assert_eq!(v["healthy"], false);
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("destination: unreachable")),
        "{v:#}"
    );
    // The process finds out at its next write to it.
    let mut src = s.source.conn();
    hset(&mut src, b"client:console-after-stop", &[(b"a", b"1")]);
    let (_, out) = status_until(
        "status --url to report the destination down",
        &["status", "--url", &http],
        &env,
        |c, o| c == 1 && o.contains("not ready: destination"),
    );
    eprintln!("---- status --url (destination stopped) ----\n{out}");
    assert!(out.contains("REDMIRROR_DEST_URL"), "{out}");
    let v = json(&cli(&["status", "--url", &http, "--json"], &env).1);
    assert_eq!(v["healthy"], false);
    assert_eq!(v["components"]["destination"]["ready"], false, "{v:#}");
    assert!(s.mirror.running(), "a destination down must not stop the process");
}

#[test]
fn status_and_top_refuse_bad_usage_with_exit_2_naming_the_setting() {
    let mut env = BTreeMap::new();
    env.insert("REDMIRROR_KAFKA_BROKERS".to_string(), "127.0.0.1:1".to_string());
    for (args, name) in [
        (vec!["status"], "REDMIRROR_DEST_URL"),
        (vec!["top", "--count", "1"], "REDMIRROR_DEST_URL"),
        (vec!["status", "--url", "https://127.0.0.1:1"], "--url"),
        (vec!["top", "--url", "ftp://x", "--count", "1"], "--url"),
    ] {
        let (code, out) = cli(&args, &env);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains(name), "{args:?}: {name} not named:\n{out}");
    }
    env.insert("REDMIRROR_KAFKA_BROKERS".into(), "embedded".into());
    env.insert("REDMIRROR_DEST_URL".into(), "redis://127.0.0.1:1".into());
    let (code, out) = cli(&["status"], &env);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("REDMIRROR_KAFKA_BROKERS=embedded") && out.contains("--url http://"),
        "{out}"
    );
    // Nothing listening: that needs attention (1), it is not bad usage.
    let port = redmirror_testkit::free_port();
    let (code, out) = cli(&["status", "--url", &format!("127.0.0.1:{port}")], &BTreeMap::new());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("process unreachable") && out.contains("REDMIRROR_HTTP_ADDR"),
        "{out}"
    );
}
