//! The source link stays watched after start: a connection that silently
//! stops carrying bytes is noticed and replaced, and keyspace notifications
//! switched off (or lost by a restart) fail readiness until they are back,
//! then a reconcile pass covers what they missed.

use std::time::{Duration, Instant};

use redmirror_testkit::proxy::Proxy;

use redmirror_core::failpoint::Failpoint;

use crate::harness::*;

/// Bound on noticing a dead link and repairing what it hid: SPEC section 2
/// says "noticed within about 30 s"; 10 s more for the re-subscription,
/// the gap pass and apply.
const DEAD_LINK: Duration = Duration::from_secs(40);

/// Bound on the periodic notification check (every 30 s) noticing a change.
const NOTIFY_CHECK: Duration = Duration::from_secs(40);

fn config_set_notify(source: &RedisServer, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(value)
        .query(&mut source.conn())
        .unwrap();
}

fn notify_flags(source: &RedisServer) -> String {
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query(&mut source.conn())
        .unwrap();
    v[1].clone()
}

fn kill_pubsub(source: &RedisServer) {
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut source.conn())
        .unwrap();
    assert!(killed >= 1, "no pub/sub connection to kill");
}

pub(crate) fn readyz_body(m: &Mirror) -> String {
    http::blocking_get(&format!("{}/readyz", m.http)).unwrap_or_default()
}

/// A NAT or load balancer that forgets every open flow (no FIN, no RST:
/// bytes just stop) while new connections work: capture notices within
/// about 30 s, re-subscribes, counts a gap, and the gap pass repairs the
/// change whose notification the dead link swallowed.
#[test]
fn a_black_holed_source_link_is_noticed_reconnected_and_its_gap_repaired() {
    let source = RedisServer::start();
    let proxy = Proxy::start(source.port()).unwrap();
    let (s, _) = Setup::run_on(source, &proxy.url(), |env| {
        // Only the gap pass can repair what the black hole hid.
        env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into());
    });
    wait_for("the start-up reconcile pass", CONVERGE, || {
        (s.mirror.metric("redmirror_reconcile_runs_total") >= 1.0).then_some(())
    });
    assert_eq!(s.mirror.metric("redmirror_capture_gaps_total"), 0.0);

    let t = Instant::now();
    let holed = proxy.blackhole();
    let mut src = s.source.conn();
    let want = hash(&[("during", "the black hole")]);
    hset(&mut src, b"client:hidden", &[(b"during", b"the black hole")]);
    wait_for("the dead subscription to be noticed (a gap)", DEAD_LINK, || {
        (s.mirror.metric("redmirror_capture_gaps_total") >= 1.0).then_some(())
    });
    let noticed = t.elapsed();
    assert!(proxy.accepted() > holed, "capture reconnected through new connections");
    let mut dst = s.dest.conn();
    wait_for(
        "the change hidden by the black hole to be repaired by the gap pass",
        DEAD_LINK.saturating_sub(t.elapsed()),
        || (hgetall(&mut dst, b"client:hidden") == copy_of(&want)).then_some(()),
    );
    let repaired = t.elapsed();
    // And changes flow live again (the reader's connection was replaced too).
    let live = hash(&[("after", "1")]);
    hset(&mut src, b"client:after", &[(b"after", b"1")]);
    s.wait_dest(b"client:after", Some(&copy_of(&live)));
    eprintln!(
        "black-holed source: gap counted {:.1}s after the fault, hidden change repaired after {:.1}s, \
         live again after {:.1}s",
        noticed.as_secs_f64(),
        repaired.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    assert_eq!(s.mirror.readyz(), 200, "{}", readyz_body(&s.mirror));
}

/// Notifications switched off on the running source: within a check
/// interval `/readyz` fails naming the `CONFIG SET` to run, the gauge is 1
/// and the command is logged once (not again at the next check, nor at a
/// re-subscription); once they are back, readiness passes and a pass
/// repairs what changed meanwhile.
#[test]
fn notifications_switched_off_fail_readiness_then_a_pass_follows_once_back() {
    let s = Setup::run_with(|env| {
        env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into());
    });
    const GAUGE: &str = "redmirror_capture_notifications_missing";
    let metrics = s.mirror.metrics();
    assert!(
        metrics.lines().any(|l| l == format!("{GAUGE} 0")),
        "{GAUGE} registered at 0 at start:\n{metrics}"
    );
    assert_eq!(s.mirror.readyz(), 200);
    wait_for("the start-up reconcile pass", CONVERGE, || {
        (s.mirror.metric("redmirror_reconcile_runs_total") >= 1.0).then_some(())
    });

    config_set_notify(&s.source, "");
    let mut src = s.source.conn();
    hset(&mut src, b"client:unseen-1", &[(b"n", b"1")]);
    let command = "CONFIG SET notify-keyspace-events Eg$lshzxe";
    wait_for(
        "the periodic check to fail readiness and set the gauge",
        NOTIFY_CHECK,
        || (s.mirror.readyz() == 503 && s.mirror.metric(GAUGE) == 1.0).then_some(()),
    );
    let body = readyz_body(&s.mirror);
    assert!(
        body.contains("\"notifications\":false") && body.contains(command),
        "/readyz says why: {body}"
    );
    wait_for("the command to be logged", CONVERGE, || {
        s.mirror.output().contains(command).then_some(())
    });

    // A re-subscription checks at once (still missing): not logged again.
    let runs = s.mirror.metric("redmirror_reconcile_runs_total");
    kill_pubsub(&s.source);
    wait_for("the re-subscription's gap pass", CONVERGE, || {
        (s.mirror.metric("redmirror_capture_gaps_total") >= 1.0
            && s.mirror.metric("redmirror_reconcile_runs_total") > runs)
            .then_some(())
    });
    assert_eq!(s.mirror.readyz(), 503, "still missing after the re-subscription");
    s.wait_dest(b"client:unseen-1", Some(&copy_of(&hash(&[("n", "1")]))));
    // Written while they are still off, after the last pass: only a pass
    // once they are back can copy it.
    hset(&mut src, b"client:unseen-2", &[(b"n", b"2")]);

    let runs = s.mirror.metric("redmirror_reconcile_runs_total");
    config_set_notify(&s.source, "KEA");
    wait_for(
        "readiness and the gauge to clear once they are back",
        NOTIFY_CHECK,
        || (s.mirror.readyz() == 200 && s.mirror.metric(GAUGE) == 0.0).then_some(()),
    );
    wait_for("a pass once they are back", CONVERGE, || {
        (s.mirror.metric("redmirror_reconcile_runs_total") > runs).then_some(())
    });
    s.wait_dest(b"client:unseen-2", Some(&copy_of(&hash(&[("n", "2")]))));
    let out = s.mirror.output();
    assert_eq!(
        out.matches(command).count(),
        1,
        "the command is logged once per occurrence:\n{out}"
    );
}

/// With `REDMIRROR_CONFIGURE_NOTIFICATIONS=true`, notifications found
/// missing at a re-subscription (as after a source restart that lost
/// them) are set again at once, and readiness never waits for them.
#[test]
fn notifications_lost_at_a_resubscription_are_set_again_when_configured() {
    let s = Setup::run_with(|env| {
        env.insert("REDMIRROR_CONFIGURE_NOTIFICATIONS".into(), "true".into());
        env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into());
    });
    config_set_notify(&s.source, "");
    kill_pubsub(&s.source);
    // The periodic check is every 30 s: within 5 s only the check at the
    // re-subscription can have set them.
    wait_for(
        "notify-keyspace-events set again at the re-subscription",
        Duration::from_secs(5),
        || {
            let flags = notify_flags(&s.source);
            redmirror_capture::notify::missing(&flags).is_empty().then_some(())
        },
    );
    assert_eq!(s.mirror.metric("redmirror_capture_notifications_missing"), 0.0);
    let mut src = s.source.conn();
    let mut dst = s.dest.conn();
    wait_flowing(&mut src, &mut dst, b"client:flowing");
    assert_eq!(s.mirror.readyz(), 200, "{}", readyz_body(&s.mirror));
}

/// Bound on noticing a stuck apply consumer and catching up with a new
/// one: 30 s of silence while events wait (`STALL_AFTER`), a fresh lag
/// measurement (every 5 s), then the new member's join.
const STUCK_CONSUMER: Duration = Duration::from_secs(90);

/// An apply consumer that stops receiving while events wait unread (a lost
/// wake-up, a group rejoin that never completes, both seen under broker
/// pauses) is noticed, said, counted and replaced, and nothing is lost.
#[test]
fn a_stuck_apply_consumer_is_replaced_and_nothing_is_lost() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let mut env = mirror_env(&source.url(), &dest.url(), &Broker::shared().bootstrap());
    // The first consumer stops reading after its first message.
    env.insert("FAILPOINTS".into(), Failpoint::ApplyConsumerStuck.name().into());
    let mirror = Mirror::start(&["run"], &env);
    let (mut src, mut dst) = (source.conn(), dest.conn());
    wait_flowing(&mut src, &mut dst, b"client:first");
    let keys: Vec<String> = (0..50).map(|i| format!("client:after-{i}")).collect();
    for k in &keys {
        hset(&mut src, k.as_bytes(), &[(b"name", k.as_bytes())]);
    }
    let t = Instant::now();
    wait_for(
        "the flows written after the stall to reach the destination",
        STUCK_CONSUMER,
        || keys.iter().all(|k| exists(&mut dst, k.as_bytes())).then_some(()),
    );
    eprintln!("caught up {:.1}s after the writes", t.elapsed().as_secs_f64());
    assert!(
        mirror.metric("redmirror_apply_consumer_restarts_total") >= 1.0,
        "{}",
        mirror.metrics()
    );
    let out = mirror.output();
    assert!(
        out.contains("has received nothing although events wait unread"),
        "{out}"
    );
    assert!(out.contains("kafka-consumer-groups.sh"), "{out}");
}

/// A destination that goes away while nothing changes fails readiness,
/// naming it, and readiness comes back with it: an operator must not learn
/// of a dead destination from the first change that cannot be written.
#[test]
fn an_idle_mirror_notices_its_destination_is_gone_and_back() {
    let mut s = Setup::run();
    wait_for("/readyz to pass", CONVERGE, || (s.mirror.readyz() == 200).then_some(()));
    s.dest.restart(); // saves the data, to start again on it
    s.dest.stop();
    wait_for("/readyz to fail while the destination is down", DEAD_LINK, || {
        (s.mirror.readyz() == 503).then_some(())
    });
    let body = readyz_body(&s.mirror);
    assert!(body.contains("destination"), "{body}");
    s.dest.start_again();
    wait_for("/readyz to pass again", DEAD_LINK, || {
        (s.mirror.readyz() == 200).then_some(())
    });
}

/// A destination link too slow for a backlog (a proxy carrying 50 KB/s per
/// connection while 10 MB of flows wait to be written): apply falls behind,
/// but the capture lease (TTL 2 s, renewed every 0.7 s) keeps being renewed
/// all along, because apply's pipelines go on a connection of their own and
/// never queue the renewals behind them; capture stays the holder and
/// nothing is lost once the link is fast again.
#[test]
fn leases_are_renewed_while_apply_writes_a_backlog_over_a_slow_link() {
    const FLOWS: usize = 200;
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let proxy = Proxy::start(dest.port()).unwrap();
    let mut env = mirror_env(&source.url(), &proxy.url(), &Broker::shared().bootstrap());
    env.insert("REDMIRROR_LEASE_TTL".into(), "2s".into());
    env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into());
    let s = Setup {
        source,
        dest,
        broker: Broker::shared(),
        mirror: Mirror::start(&["run"], &env),
    };
    s.wait_ready();

    proxy.limit(50_000);
    let value = vec![b'v'; 50_000];
    let mut src = s.source.conn();
    for i in 0..FLOWS {
        hset(
            &mut src,
            format!("client:big-{i}").as_bytes(),
            &[(&b"blob"[..], &value[..])],
        );
    }
    // The lease's expiry moves forward at every renewal.
    let mut dst = s.dest.conn();
    let expiry = |dst: &mut redis::Connection| -> i64 {
        redis::cmd("PEXPIRETIME")
            .arg("redmirror:lease:capture")
            .query(dst)
            .unwrap()
    };
    let (mut last, mut renewals) = (expiry(&mut dst), 0);
    wait_for(
        "six renewals of the capture lease while apply writes the backlog over the slow link",
        Duration::from_secs(20),
        || {
            let now = expiry(&mut dst);
            assert!(
                now > 0,
                "the capture lease expired (PEXPIRETIME {now}): a renewal waited behind apply's writes"
            );
            if now > last {
                renewals += 1;
                last = now;
            }
            (renewals >= 6).then_some(())
        },
    );
    let copied = (0..FLOWS)
        .filter(|i| exists(&mut dst, format!("client:big-{i}").as_bytes()))
        .count();
    assert!(
        copied < FLOWS,
        "apply was not behind: the link was not slow enough to test anything"
    );
    assert_eq!(
        s.mirror.metric("redmirror_capture_gaps_total"),
        0.0,
        "capture never stood by"
    );

    proxy.limit(0);
    wait_for(
        "every flow on the destination once the link is fast again",
        CONVERGE,
        || {
            (0..FLOWS)
                .all(|i| exists(&mut dst, format!("client:big-{i}").as_bytes()))
                .then_some(())
        },
    );
}
