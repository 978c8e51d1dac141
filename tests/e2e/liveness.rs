//! The source link stays watched after start: a connection that silently
//! stops carrying bytes is noticed and replaced.

use std::time::{Duration, Instant};

use redmirror_testkit::proxy::Proxy;

use crate::harness::*;

/// Bound on noticing a dead link and repairing what it hid: SPEC section 2
/// says "noticed within about 30 s"; 10 s more for the re-subscription,
/// the gap pass and apply.
const DEAD_LINK: Duration = Duration::from_secs(40);

fn readyz_body(m: &Mirror) -> String {
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
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let mut env = mirror_env(&proxy.url(), &dest.url(), &broker.bootstrap());
    // Only the gap pass can repair what the black hole hid.
    env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into());
    let mirror = Mirror::start(&["run"], &env);
    let s = Setup {
        source,
        dest,
        broker,
        mirror,
    };
    s.wait_ready();
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
