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
