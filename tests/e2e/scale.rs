//! Apply scales out with partitions (SPEC section 2): several `apply`
//! processes in one consumer group share the topic's partitions, and one
//! killed mid-stream loses nothing (its uncommitted events are read again by
//! the member that takes its partitions over).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use redmirror_testkit::invariant::{self, Rules};

use crate::harness::*;

/// Flows the writer cycles through.
const FLOWS: u64 = 120;

/// Applied (upserts and deletes) by one apply process, from its `/metrics`.
fn handled(m: &Mirror) -> f64 {
    let text = m.metrics();
    ["applied", "deleted"]
        .iter()
        .map(|o| metric_value(&text, &format!("redmirror_apply_events_total{{outcome=\"{o}\"}}")))
        .sum()
}

/// Members and state of `group`, None while the broker cannot say (its
/// group coordinator still loading, on a fresh broker).
fn members(bootstrap: &str, group: &str) -> Option<(usize, String)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    let list = c
        .fetch_group_list(Some(group), std::time::Duration::from_secs(10))
        .ok()?;
    Some(
        list.groups()
            .iter()
            .find(|g| g.name() == group)
            .map_or((0, "Dead".to_string()), |g| (g.members().len(), g.state().to_string())),
    )
}

/// The writer: a steady load of updates (three in a row per flow, so order
/// matters), deletes and re-creations, every write with a value never
/// written before. Returns what it last wrote per flow (None: deleted).
fn spawn_writer(
    source: &RedisServer,
    stop: Arc<AtomicBool>,
    steps: Arc<AtomicU64>,
) -> std::thread::JoinHandle<BTreeMap<Vec<u8>, Option<Hash>>> {
    let mut conn = source.conn();
    std::thread::spawn(move || {
        let mut last = BTreeMap::new();
        let mut k: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut pipe = redis::pipe();
            for _ in 0..10 {
                k += 1;
                // 7 is prime to FLOWS: every flow is visited once per FLOWS steps.
                let flow = (k * 7) % FLOWS;
                let key = format!("client:scale-{flow}").into_bytes();
                if k % 9 == 4 {
                    pipe.cmd("DEL").arg(&key).ignore();
                    last.insert(key, None);
                    continue;
                }
                for seq in 0..3 {
                    let v = format!("{k}.{seq}");
                    let mut cmd = redis::cmd("HSET");
                    cmd.arg(&key).arg("v").arg(&v).arg(format!("f{seq}")).arg(&v);
                    if k.is_multiple_of(5) {
                        cmd.arg("flowConfigHistory").arg(format!("history {v}"));
                    }
                    pipe.add_command(cmd).ignore();
                }
                let h = last.entry(key).or_insert(None).get_or_insert_with(Hash::new);
                for seq in 0..3 {
                    let v = format!("{k}.{seq}").into_bytes();
                    h.insert(b"v".to_vec(), v.clone());
                    h.insert(format!("f{seq}").into_bytes(), v);
                }
            }
            let _: () = pipe.query(&mut conn).expect("writer pipeline");
            steps.store(k, Ordering::Relaxed);
            // A steady load, not a burst.
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        last
    })
}

#[test]
fn three_apply_instances_share_partitions_and_a_killed_one_loses_nothing() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let bootstrap = broker.bootstrap();
    let mut env = mirror_env(&source.url(), &dest.url(), &bootstrap);
    env.insert("REDMIRROR_TOPIC_PARTITIONS".into(), "6".into());
    let _capture = Mirror::start(&["capture"], &with_http_port(&env));
    let mut applies: Vec<Mirror> = (0..3)
        .map(|_| Mirror::start(&["apply"], &with_http_port(&env)))
        .collect();
    let group = env["REDMIRROR_GROUP_ID"].clone();
    wait_for("three apply members in a Stable group", CONVERGE, || {
        let (n, state) = members(&bootstrap, &group)?;
        (n == 3 && state == "Stable").then_some(())
    });
    let (mut src, mut dst) = (source.conn(), dest.conn());
    wait_flowing(&mut src, &mut dst, b"client:warmup");

    let stop = Arc::new(AtomicBool::new(false));
    let steps = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(&source, stop.clone(), steps.clone());

    // Every member is applying before one is killed.
    wait_for("all three apply processes applying the load", CONVERGE, || {
        applies.iter().all(|a| handled(a) >= 20.0).then_some(())
    });
    let mut victim = applies.remove(0);
    let killed_at = steps.load(Ordering::Relaxed);
    let before: Vec<f64> = applies.iter().map(handled).collect();
    let (pid, victim_handled) = (victim.pid(), handled(&victim));
    victim.kill();
    eprintln!("SIGKILLed apply pid {pid} ({victim_handled} events applied) after {killed_at} writer steps");

    // The load goes on through the victim's session timeout and the rebalance.
    wait_for("the group to settle on two members", CONVERGE, || {
        let (n, state) = members(&bootstrap, &group)?;
        (n == 2 && state == "Stable").then_some(())
    });
    let rebalanced_at = steps.load(Ordering::Relaxed);
    wait_for("more writes after the rebalance", CONVERGE, || {
        (steps.load(Ordering::Relaxed) >= rebalanced_at + 1500).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let last = writer.join().expect("writer");
    let total = steps.load(Ordering::Relaxed);
    eprintln!("writer: {total} steps ({killed_at} before the kill, {rebalanced_at} at the rebalance)");

    let rules = Rules::with_filtered_orgs(&["org_hello", "org_demo"]);
    let mut report = None;
    wait_for("the destination to satisfy the invariant", CONVERGE, || {
        let r = invariant::check(&mut src, &mut dst, &rules, &invariant::Natives::new());
        let ok = r.ok();
        report = Some(r);
        ok.then_some(())
    });
    eprintln!("{}", report.expect("a report"));

    // The same, against what the writer itself last wrote: no flow ended
    // on an older value (every write's value is distinct).
    for (key, want) in &last {
        let got = hgetall(&mut dst, key);
        match want {
            None => assert!(
                got.is_empty(),
                "{} deleted last, still on the destination",
                String::from_utf8_lossy(key)
            ),
            Some(h) => assert_eq!(got, copy_of(h), "{}", String::from_utf8_lossy(key)),
        }
    }
    assert!(
        last.values().filter(|v| v.is_none()).count() > 0,
        "some flows ended deleted"
    );
    assert!(
        last.values().filter(|v| v.is_some()).count() > 0,
        "some flows ended present"
    );

    let (n, state) = wait_for("the group's membership", CONVERGE, || members(&bootstrap, &group));
    assert_eq!((n, state.as_str()), (2, "Stable"));
    for (i, (a, b)) in applies.iter_mut().zip(before).enumerate() {
        assert!(a.running(), "survivor {i} exited:\n{}", a.output());
        let after = handled(a);
        assert!(
            after > b,
            "survivor {i} applied nothing after the kill ({b} before, {after} after): it took no partitions"
        );
        eprintln!("survivor {i}: {b} events applied before the kill, {after} at the end");
    }
}
