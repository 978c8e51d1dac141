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

/// A broker outage long enough to fill capture's pending set (a small
/// `capture_pending_max` and producer queue): new flows are dropped while
/// waiting ones keep changing, and the whole episode is one gap, reported
/// when the set has room again (after every drop it covers). Everything
/// converges after.
#[test]
fn a_broker_outage_that_fills_the_pending_set_is_one_gap_and_converges() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::start();
    let mut env = mirror_env(&source.url(), &dest.url(), &broker.bootstrap());
    env.insert("REDMIRROR_CAPTURE_PENDING_MAX".into(), "50".into());
    env.insert("REDMIRROR_CAPTURE_BATCH".into(), "10".into());
    env.insert("REDMIRROR_KAFKA_QUEUE_BUFFERING_MAX_MESSAGES".into(), "20".into());
    env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into());
    let mirror = Mirror::start(&["run"], &env);
    let mut own = Own {
        source,
        dest,
        broker,
        mirror,
    };
    let (mut src, mut dst) = (own.source.conn(), own.dest.conn());
    wait_flowing(&mut src, &mut dst, b"client:warmup");
    let gaps = own.mirror.metric("redmirror_capture_gaps_total");
    own.broker.kill();
    // New flows until the set is full (the producer blocks on its queue
    // once the broker is gone).
    let mut n = 0;
    wait_for("the pending set to fill", CONVERGE, || {
        for _ in 0..50 {
            hset(&mut src, format!("client:down{n}").as_bytes(), &[(b"v", b"1")]);
            n += 1;
        }
        (own.mirror.metric("redmirror_capture_pending_flows") >= 50.0).then_some(())
    });
    // Waiting flows change again (coalesced) between new flows (dropped).
    for i in 0..200 {
        hset(&mut src, format!("client:down{}", i % n).as_bytes(), &[(b"v", b"2")]);
        hset(&mut src, format!("client:late{i}").as_bytes(), &[(b"v", b"1")]);
    }
    own.broker.start_again();
    wait_for("the destination to converge after the outage", CONVERGE, || {
        (expected(&own.source) == sync_copies(&own.dest)).then_some(())
    });
    let out = own.mirror.output();
    assert_eq!(
        own.mirror.metric("redmirror_capture_gaps_total") - gaps,
        1.0,
        "one gap for the one overflow episode:\n{out}"
    );
    assert_eq!(out.matches("Capture fell behind").count(), 1, "{out}");
}

/// Deletes `topic`, or creates it with `partitions`, and waits for the answer.
fn topic_admin(bootstrap: &str, topic: &str, create: Option<i32>) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let opts = AdminOptions::new().request_timeout(Some(std::time::Duration::from_secs(10)));
    let res = rt
        .block_on(async {
            match create {
                Some(p) => {
                    admin
                        .create_topics(&[NewTopic::new(topic, p, TopicReplication::Fixed(1))], &opts)
                        .await
                }
                None => admin.delete_topics(&[topic], &opts).await,
            }
        })
        .expect("admin request");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("{} {t}: {e}", if create.is_some() { "create" } else { "delete" }));
    }
}

/// Publishing that fails at once (the change topic deleted under a running
/// capture; the broker creates no topic by itself) backs off instead of
/// spinning, fails readiness with the reason, and recovers once the topic
/// is back.
#[test]
fn publishing_that_fails_at_once_backs_off_fails_readiness_and_recovers() {
    let s = Setup::run_with(|env| {
        env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into());
        // The producer learns within 2 s (not 30) that the topic is gone;
        // from then on every send to it fails at once.
        env.insert(
            "REDMIRROR_KAFKA_TOPIC_METADATA_PROPAGATION_MAX_MS".into(),
            "2000".into(),
        );
    });
    let (mut src, mut dst) = (s.source.conn(), s.dest.conn());
    wait_flowing(&mut src, &mut dst, b"client:warmup");
    let bootstrap = s.broker.bootstrap();
    topic_admin(&bootstrap, &s.mirror.topic, None);
    hset(&mut src, b"client:while-deleted", &[(b"v", b"1")]);
    const RETRIES: &str = "redmirror_publish_retries_total{reason=\"delivery_failed\"}";
    wait_for("the first failed publish", CONVERGE, || {
        (s.mirror.metric(RETRIES) >= 1.0).then_some(())
    });
    // Over 3 s the flow is tried again a handful of times (backoff up to
    // 5 s), not thousands.
    let before = s.mirror.metric(RETRIES);
    // A measurement window, not a wait for a condition.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let tries = s.mirror.metric(RETRIES) - before;
    let out = s.mirror.output();
    eprintln!("publish failures in 3 s with the topic deleted: {tries}");
    assert!(tries <= 10.0, "{tries} failed publishes in 3 s:\n{out}");
    assert_eq!(
        out.matches("Publish to Kafka failed").count(),
        1,
        "one WARN per run of failures:\n{out}"
    );
    let body = crate::liveness::readyz_body(&s.mirror);
    assert_eq!(s.mirror.readyz(), 503, "{body}");
    assert!(body.contains("publishing to Kafka fails"), "{body}");
    topic_admin(&bootstrap, &s.mirror.topic, Some(3));
    s.wait_dest(b"client:while-deleted", Some(&copy_of(&hash(&[("v", "1")]))));
    wait_for("readiness to pass again", CONVERGE, || {
        (s.mirror.readyz() == 200).then_some(())
    });
}
