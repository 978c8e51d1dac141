//! SPEC section 9: protecting the destination (the write limit) and the
//! admin API's audit trail.

use std::time::{Duration, Instant};

use crate::harness::*;

/// `REDMIRROR_APPLY_MAX_RATE`: a burst of changes is written no faster than
/// the limit (measured over windows of a second and more), `/readyz` stays
/// 200, `/v1/status` shows the limit and that it holds writes back, lag
/// shows the backlog, and everything converges.
#[test]
fn the_write_limit_holds_the_apply_rate_while_readiness_stays_and_everything_converges() {
    // 8 s of writes at the limit: lag is measured every 5 s.
    const RATE: f64 = 10.0;
    const FLOWS: usize = 80;
    let token = "e2e-admin-token-0123456789";
    let s = Setup::run_with(|env| {
        env.insert("REDMIRROR_APPLY_MAX_RATE".into(), "10".into());
        env.insert("REDMIRROR_ADMIN_TOKEN".into(), token.into());
    });
    let applied = || s.mirror.metric("redmirror_apply_events_total{outcome=\"applied\"}");
    let before = applied();
    let mut src = s.source.conn();
    let mut pipe = redis::pipe();
    for i in 0..FLOWS {
        pipe.cmd("HSET")
            .arg(format!("client:rate-{i}"))
            .arg("i")
            .arg(i.to_string())
            .ignore();
    }
    let () = pipe.query(&mut src).expect("write the flows");
    let began = Instant::now();
    let mut samples: Vec<(Instant, f64)> = Vec::new();
    let (mut throttled, mut backlog) = (false, false);
    wait_for("every flow to be applied under the write limit", CONVERGE, || {
        let n = applied() - before;
        samples.push((Instant::now(), n));
        assert_eq!(s.mirror.readyz(), 200, "readiness failed while throttled");
        let (code, body, _) = admin::status(&s.mirror.http, token).expect("GET /v1/status");
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["write_limit"]["apply_max_rate"], 10, "{body}");
        throttled |= body["write_limit"]["throttled"] == true;
        backlog |= body["lag"]
            .as_object()
            .is_some_and(|l| l.values().filter_map(|v| v.as_i64()).sum::<i64>() > 0);
        (n >= FLOWS as f64).then_some(())
    });
    let took = began.elapsed();
    // The first tenth of a second's worth goes at once; the rest waits.
    let least = Duration::from_secs_f64((FLOWS as f64 - (RATE / 10.0).max(1.0)) / RATE);
    assert!(took >= least.mul_f64(0.9), "{FLOWS} events in {took:?} at {RATE}/s");
    // Over every window of a second or more: at most the rate, plus the
    // slice that may start at its beginning, one started before it and
    // counted inside it (apply counts a slice once written), and one for
    // the sampling's own time.
    let mut worst = 0.0f64;
    for (i, (t0, n0)) in samples.iter().enumerate() {
        for (t1, n1) in &samples[i + 1..] {
            let dt = (*t1 - *t0).as_secs_f64();
            if dt >= 1.0 {
                let allowed = RATE * dt + 2.0 * (RATE / 10.0).max(1.0) + 1.0;
                assert!(
                    n1 - n0 <= allowed,
                    "{} events in {dt:.2}s (limit {RATE}/s): {samples:?}",
                    n1 - n0
                );
                worst = worst.max((n1 - n0) / dt);
            }
        }
    }
    eprintln!("write limit {RATE}/s: {FLOWS} events in {took:?}, fastest window {worst:.1}/s");
    assert!(throttled, "/v1/status never said throttled");
    assert!(backlog, "lag never showed the backlog");
    wait_for("the destination to match the source", CONVERGE, || {
        (sync_copies(&s.dest) == expected(&s.source)).then_some(())
    });
    // `redmirror status` says it too.
    let mut env = mirror_env(&s.source.url(), &s.dest.url(), &s.broker.bootstrap());
    env.insert("REDMIRROR_ADMIN_TOKEN".into(), token.into());
    let (_, out) = cli(&["status", "--url", &s.mirror.http], &env);
    assert!(out.contains("write limit") && out.contains("10 events/s"), "{out}");
}
