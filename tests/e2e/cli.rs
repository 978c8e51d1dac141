//! The command line: check, graceful stop, demo.

use std::process::Stdio;

use crate::harness::*;

#[test]
fn check_passes_on_a_sane_setup() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let env = mirror_env(&source.url(), &dest.url(), &broker.bootstrap());
    let out = command().arg("check").envs(&env).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ok    source",
        "ok    dest",
        "ok    notifications",
        "ok    servers",
        "ok    topic",
        "check passed",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let mut env = env;
    env.insert("REDMIRROR_KAFKA_BROKERS".into(), "embedded".into());
    let out = command().arg("check").envs(&env).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("for demos and development only"), "{text}");
}

#[test]
fn sigterm_stops_cleanly_with_exit_0() {
    let mut s = Setup::run();
    let code = s.mirror.terminate();
    assert_eq!(code, Some(0), "{}", s.mirror.output());
    assert!(s.mirror.output().contains("Stopped cleanly."));
}

/// A role that ends without being asked fails the process (exit 1, its
/// cause logged), whether its stream ended or a write task panicked.
#[test]
fn run_exits_non_zero_when_apply_ends_by_itself() {
    for (failpoint, cause) in [
        ("apply-stream-end", "the Kafka consumer stream ended"),
        ("apply-write-panic", "its write task failed"),
    ] {
        let source = RedisServer::start();
        let dest = RedisServer::start();
        let mut env = mirror_env(&source.url(), &dest.url(), &Broker::shared().bootstrap());
        env.insert("FAILPOINTS".into(), failpoint.into());
        let mut mirror = Mirror::start(&["run"], &env);
        let mut src = source.conn();
        let mut n = 0;
        // Written until capture is subscribed and apply receives one.
        wait_for(&format!("redmirror to exit by itself ({failpoint})"), CONVERGE, || {
            n += 1;
            if n % 20 == 1 {
                hset(&mut src, b"client:ends", &[(b"n", n.to_string().as_bytes())]);
            }
            (!mirror.running()).then_some(())
        });
        let code = mirror
            .wait_exit(std::time::Duration::from_secs(1))
            .expect("an exit code");
        let out = mirror.output();
        assert_eq!(code, 1, "{failpoint}: {out}");
        assert!(
            out.contains("apply failed") || out.contains("apply ended"),
            "{failpoint}: {out}"
        );
        assert!(out.contains(cause), "{failpoint}: {out}");
    }
}

#[test]
fn the_demo_shows_mirroring_and_protection() {
    let out = command()
        .args(["demo", "--for", "10s"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("mirrored: name=\"Checkout v2\""), "{text}");
    assert!(text.contains("never copied (filtered organisation)"), "{text}");
    assert!(text.contains("native staging flow, untouched"), "{text}");
    assert!(!text.contains("(bug)"), "{text}");
}
