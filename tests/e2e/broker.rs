//! Faults only a real broker allows (each test has an Apache Kafka broker of
//! its own): `kill -9` and a start again on the same log, a pause (SIGSTOP)
//! past the consumer session timeout, and consumer lag against the broker's
//! own end offsets.

use crate::harness::*;

/// Source, destination, a broker of the test's own, and `redmirror run`.
struct Own {
    source: RedisServer,
    dest: RedisServer,
    broker: Broker,
    mirror: Mirror,
}

fn start() -> Own {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::start();
    let env = mirror_env(&source.url(), &dest.url(), &broker.bootstrap());
    let mirror = Mirror::start(&["run"], &env);
    let own = Own {
        source,
        dest,
        broker,
        mirror,
    };
    let (mut src, mut dst) = (own.source.conn(), own.dest.conn());
    wait_flowing(&mut src, &mut dst, b"client:warmup");
    own
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Writes `n` flows `{prefix}0..` and waits until every one is on the destination.
fn write_and_wait(own: &Own, prefix: &str, n: usize) {
    let mut src = own.source.conn();
    for i in 0..n {
        let key = format!("client:{prefix}{i}");
        hset(&mut src, key.as_bytes(), &[(b"i", i.to_string().as_bytes())]);
    }
    let mut dst = own.dest.conn();
    wait_for(&format!("{n} flows {prefix}* on the destination"), CONVERGE, || {
        (0..n)
            .all(|i| exists(&mut dst, format!("client:{prefix}{i}").as_bytes()))
            .then_some(())
    });
}

#[test]
fn apply_resumes_after_the_broker_is_paused_past_the_session_timeout() {
    let own = start();
    let pid = own.broker.pid().expect("broker running");
    signal(pid, "STOP");
    // Changes made while the broker is frozen wait in capture's producer.
    let mut src = own.source.conn();
    for i in 0..50 {
        hset(&mut src, format!("client:frozen{i}").as_bytes(), &[(b"i", b"1")]);
    }
    // The pause lasts until the consumer's session (6 s here) has expired.
    wait_for("the consumer session to time out", CONVERGE, || {
        own.mirror.output().contains("session timed out").then_some(())
    });
    signal(pid, "CONT");
    let mut dst = own.dest.conn();
    wait_for("the changes made during the pause on the destination", CONVERGE, || {
        (0..50)
            .all(|i| exists(&mut dst, format!("client:frozen{i}").as_bytes()))
            .then_some(())
    });
    write_and_wait(&own, "after", 50);
}

#[test]
fn nothing_is_lost_when_the_broker_is_killed_and_restarted_on_its_log() {
    let mut own = start();
    write_and_wait(&own, "before", 100);
    own.broker.kill();
    // Changes while the broker is down wait in capture's producer queue.
    let mut src = own.source.conn();
    for i in 0..100 {
        hset(&mut src, format!("client:down{i}").as_bytes(), &[(b"i", b"1")]);
    }
    own.broker.start_again();
    let mut dst = own.dest.conn();
    wait_for("the changes made while the broker was down", CONVERGE, || {
        (0..100)
            .all(|i| exists(&mut dst, format!("client:down{i}").as_bytes()))
            .then_some(())
    });
    write_and_wait(&own, "after", 100);
    assert!(
        own.mirror.metric("redmirror_dlq_events_total") == 0.0,
        "nothing dead-lettered:\n{}",
        own.mirror.output()
    );
}

/// `redmirror_consumer_lag_messages{partition}` and `/v1/status` against the
/// broker's own end offsets minus the group's committed offsets.
#[test]
fn consumer_lag_matches_the_brokers_end_offsets() {
    let token = "e2e-lag-token-0123456789";
    let mut s = Setup::run_with(|env| {
        env.insert("REDMIRROR_ADMIN_TOKEN".into(), token.into());
    });
    let bootstrap = s.broker.bootstrap();
    let (topic, group) = (s.mirror.topic.clone(), s.mirror.group.clone());
    let truth = || {
        let (ends, committed) = kafka::end_and_committed(&bootstrap, &group, &topic);
        ends.iter()
            .map(|(p, end)| (*p, end - committed.get(p).copied().unwrap_or(0)))
            .collect::<std::collections::BTreeMap<i32, i64>>()
    };
    let reported = |s: &Setup| -> std::collections::BTreeMap<i32, i64> {
        let text = s.mirror.metrics();
        (0..3)
            .map(|p| {
                let v = metric_value(&text, &format!("redmirror_consumer_lag_messages{{partition=\"{p}\"}}"));
                (p, v as i64)
            })
            .collect()
    };
    let status_lag = |s: &Setup| -> std::collections::BTreeMap<i32, i64> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let body: serde_json::Value = rt.block_on(async {
            reqwest::Client::new()
                .get(format!("{}/v1/status", s.mirror.http))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        body["lag"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(p, v)| (p.parse().unwrap(), v.as_i64().unwrap()))
                    .collect()
            })
            .unwrap_or_default()
    };

    // With the destination down, apply commits nothing: every captured
    // change is lag.
    s.dest.stop();
    let mut src = s.source.conn();
    for i in 0..60 {
        hset(&mut src, format!("client:lag{i}").as_bytes(), &[(b"i", b"1")]);
    }
    let mut last = (Default::default(), Default::default());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            "the lag metric to equal the broker's end offsets minus committed (>= 60)",
            CONVERGE,
            || {
                last = (reported(&s), truth());
                (last.0 == last.1 && last.1.values().sum::<i64>() >= 60).then_some(())
            },
        )
    }));
    assert!(r.is_ok(), "lag: metric {:?}, broker {:?}", last.0, last.1);
    let want = last.1;
    assert_eq!(status_lag(&s), want, "/v1/status lag");

    s.dest.start_again();
    let zero: std::collections::BTreeMap<i32, i64> = (0..3).map(|p| (p, 0)).collect();
    wait_for("lag back to 0 on the broker and in the metric", CONVERGE, || {
        (truth() == zero && reported(&s) == zero).then_some(())
    });
    assert_eq!(status_lag(&s), zero, "/v1/status lag after catching up");
}
