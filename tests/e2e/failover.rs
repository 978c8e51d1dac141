//! A new source whose clock is behind the old one's (a failover to a
//! replica, a restart, a clock step back): a new source epoch, and changes
//! mirrored within seconds, deletes and reconcile repairs included.

use std::time::Duration;

use redmirror_testkit::{wait_for, Broker, RedisOptions, RedisServer};

use crate::harness::*;

const HOUR_US: i64 = 3_600_000_000;

fn source_time_us(server: &RedisServer) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query(&mut server.conn()).unwrap();
    s * 1_000_000 + us
}

#[test]
fn a_source_back_with_its_clock_an_hour_behind_is_mirrored_within_seconds() {
    let source = RedisServer::start();
    hset(&mut source.conn(), b"client:fo-kept", &[(b"v", b"before")]);
    hset(&mut source.conn(), b"client:fo-deleted", &[(b"v", b"before")]);
    hset(&mut source.conn(), b"client:fo-repaired", &[(b"v", b"before")]);
    let url = source.url();
    let (mut s, env) = Setup::run_on(source, &url, |env| {
        env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into());
    });
    for k in ["client:fo-kept", "client:fo-deleted", "client:fo-repaired"] {
        s.wait_dest(k.as_bytes(), Some(&copy_of(&hash(&[("v", "before")]))));
    }
    assert_eq!(s.mirror.metric("redmirror_source_epoch"), 0.0);

    // The same data on a different server (a new run_id) whose clock is an
    // hour behind: what a failover to a badly synced replica looks like.
    let _: () = redis::cmd("SAVE").query(&mut s.source.conn()).unwrap();
    s.source.stop();
    s.source.set_clock_offset_us(-HOUR_US);
    s.source.start_again();
    let behind = redmirror_core::now_us() - source_time_us(&s.source);
    assert!(
        behind > HOUR_US - 60_000_000,
        "the new source's clock is {behind} µs behind"
    );

    // Changes made now carry source times an hour older than what was applied.
    let mut src = s.source.conn();
    let mut dst = s.dest.conn();
    let mut n = 0u32;
    wait_for(
        "an update on the new source to be mirrored",
        Duration::from_secs(30),
        || {
            n += 1;
            if n % 50 == 1 {
                // Written again now and then: a write before capture re-subscribed has no notification.
                hset(&mut src, b"client:fo-kept", &[(b"v", b"after")]);
            }
            (hgetall(&mut dst, b"client:fo-kept") == copy_of(&hash(&[("v", "after")]))).then_some(())
        },
    );
    let _: i64 = redis::cmd("DEL").arg("client:fo-deleted").query(&mut src).unwrap();
    s.wait_dest(b"client:fo-deleted", None);
    assert!(!hexists(&mut dst, b"clients", b"fo-deleted"), "index entry left behind");
    assert!(
        s.mirror.metric("redmirror_source_epoch") >= 1.0,
        "no new source epoch:\n{}",
        s.mirror.output()
    );

    // A reconcile repair carries the new epoch too: drift made on the
    // destination (a copy changed by hand) is repaired by a pass.
    hset(&mut dst, b"client:fo-repaired", &[(b"v", b"drifted")]);
    let out = command()
        .args(["reconcile", "--once", "--json"])
        .envs(&env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.wait_dest(b"client:fo-repaired", Some(&copy_of(&hash(&[("v", "before")]))));
    assert!(
        s.mirror.output().contains("New source epoch"),
        "the epoch change is logged:\n{}",
        s.mirror.output()
    );
}

#[test]
fn a_standby_that_takes_the_capture_lease_while_the_source_is_down_waits_for_it() {
    let mut source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let mut env = mirror_env(&source.url(), &dest.url(), &broker.bootstrap());
    env.insert("REDMIRROR_LEASE_TTL".into(), "2s".into());
    let mut active = Mirror::start(&["run"], &env);
    let mut src = source.conn();
    let mut dst = dest.conn();
    wait_flowing(&mut src, &mut dst, b"client:sb-before");
    let mut standby_env = env.clone();
    standby_env.insert(
        "REDMIRROR_HTTP_ADDR".into(),
        format!("127.0.0.1:{}", redmirror_testkit::free_port()),
    );
    let mut standby = Mirror::start(&["run"], &standby_env);
    wait_for("the standby to be started and ready", Duration::from_secs(60), || {
        (standby.output().contains("redmirror started.") && standby.readyz() == 200).then_some(())
    });
    assert_eq!(standby.metric("redmirror_lease_held{lease=\"capture\"}"), 0.0);

    // The source goes down, then the active instance dies: the standby
    // takes the capture lease while the source is still down.
    source.stop();
    active.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while standby.running() && standby.metric("redmirror_lease_held{lease=\"capture\"}") != 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the standby did not take the capture lease within 30 s:\n{}",
            standby.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(standby.running(), "the standby exited:\n{}", standby.output());
    assert_ne!(standby.readyz(), 200, "ready while the source is down");

    // Back: the standby follows it and nothing is lost.
    source.start_again();
    let mut src = source.conn();
    wait_flowing(&mut src, &mut dst, b"client:sb-after");
    assert!(standby.running(), "{}", standby.output());
    wait_for("the standby to be ready again", Duration::from_secs(30), || {
        (standby.readyz() == 200).then_some(())
    });
}
