//! A Redis Cluster source (SPEC section 2, "Redis Cluster"): three masters
//! with a replica each, started by the test kit. Capture follows every
//! master, reads each flow where it lives, and a failover or a slot
//! migration under load converges with no invariant violation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redmirror_testkit::cluster::{key_slot, RedisCluster};
use redmirror_testkit::invariant::{self, Report, Rules};

use crate::harness::*;

/// The destination of a cluster source: standalone, or a cluster too.
enum Dest {
    Single(RedisServer),
    Cluster(Arc<RedisCluster>),
}

impl Dest {
    fn url(&self) -> String {
        match self {
            Dest::Single(s) => s.url(),
            Dest::Cluster(c) => c.url(),
        }
    }

    /// A connection to every master (the server itself when standalone).
    fn masters(&self) -> Vec<redis::Connection> {
        match self {
            Dest::Single(s) => vec![s.conn()],
            Dest::Cluster(c) => c.masters().into_iter().map(|p| c.node(p).conn()).collect(),
        }
    }

    /// `key` exists.
    fn exists(&self, key: &[u8]) -> bool {
        match self {
            Dest::Single(s) => exists(&mut s.conn(), key),
            Dest::Cluster(c) => c.cmd_key::<i64>(key, &[b"EXISTS", key]) == 1,
        }
    }

    fn hgetall(&self, key: &[u8]) -> Hash {
        match self {
            Dest::Single(s) => hgetall(&mut s.conn(), key),
            Dest::Cluster(c) => c.hgetall(key).into_iter().collect(),
        }
    }

    fn hset(&self, key: &[u8], fields: &[(&[u8], &[u8])]) {
        match self {
            Dest::Single(s) => hset(&mut s.conn(), key, fields),
            Dest::Cluster(c) => c.hset(key, fields),
        }
    }
}

/// A mirror from a cluster source to a destination.
struct ClusterSetup {
    cluster: Arc<RedisCluster>,
    dest: Dest,
    mirror: Mirror,
}

impl ClusterSetup {
    fn start() -> ClusterSetup {
        Self::start_to(Dest::Single(RedisServer::start_with(RedisOptions::default())))
    }

    fn start_to(dest: Dest) -> ClusterSetup {
        let cluster = Arc::new(RedisCluster::start());
        let broker = Broker::shared();
        let env = mirror_env(&cluster.url(), &dest.url(), &broker.bootstrap());
        let mirror = Mirror::start(&["run"], &env);
        let s = ClusterSetup { cluster, dest, mirror };
        s.wait_ready();
        s
    }

    /// The destination's native flows now (hashes without the marker).
    fn natives(&self) -> invariant::Natives {
        let mut all = invariant::Natives::new();
        for mut c in self.dest.masters() {
            all.extend(invariant::snapshot_natives(&mut c));
        }
        all
    }

    /// A probe written on every master reaches the destination: capture
    /// follows all three.
    fn wait_ready(&self) {
        let mut w = self.cluster.writer();
        let masters = self.cluster.masters();
        let probes: Vec<Vec<u8>> = (0..)
            .map(|i| format!("client:probe-{i}").into_bytes())
            .scan(BTreeMap::new(), |seen: &mut BTreeMap<u16, ()>, k| {
                let m = self.cluster.master_of(&k);
                Some(seen.insert(m, ()).is_none().then_some(k))
            })
            .flatten()
            .take(masters.len())
            .collect();
        let mut n = 0u64;
        wait_for("the mirror to copy a probe flow from every master", CONVERGE, || {
            if n.is_multiple_of(50) {
                // Notifications before the subscription are lost by design.
                for p in &probes {
                    w.hset(p, &[(b"probe", n.to_string().as_bytes())]);
                }
            }
            n += 1;
            probes.iter().all(|p| self.dest.exists(p)).then_some(())
        });
        for p in &probes {
            w.del(p);
        }
        wait_for("the probes' deletions to be mirrored", CONVERGE, || {
            probes.iter().all(|p| !self.dest.exists(p)).then_some(())
        });
        // Capture's first subscriptions are a gap over the whole keyspace;
        // once a pass has taken it, a later gap over some slots stays a pass
        // over those slots (a scope still pending would merge into it).
        wait_for("the start-up gap to be taken by a pass", CONVERGE, || {
            (self.dest.exists(b"redmirror:capture:gaps") && !self.dest.exists(b"redmirror:capture:gaps:scope"))
                .then_some(())
        });
    }

    fn check(&self, natives: &invariant::Natives) -> Report {
        let mut src: Vec<redis::Connection> = self
            .cluster
            .masters()
            .into_iter()
            .map(|p| self.cluster.node(p).conn())
            .collect();
        let mut src: Vec<&mut redis::Connection> = src.iter_mut().collect();
        let mut dst = self.dest.masters();
        let mut dst: Vec<&mut redis::Connection> = dst.iter_mut().collect();
        invariant::check_on(
            &mut src,
            &mut dst,
            &Rules::with_filtered_orgs(&["org_hello", "org_demo"]),
            natives,
            None,
        )
        .expect("invariant check")
    }

    /// Waits until the invariant holds; how long that took.
    #[track_caller]
    fn converge(&self, natives: &invariant::Natives) -> Duration {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < CONVERGE {
            let r = self.check(natives);
            if r.ok() {
                return started.elapsed();
            }
            last = Some(r);
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "the destination did not converge in {CONVERGE:?}: {:?}\n{}",
            last,
            self.mirror.output()
        );
    }
}

#[test]
fn every_rule_holds_for_a_cluster_source() {
    every_rule_holds(&ClusterSetup::start());
}

#[test]
fn every_rule_holds_from_a_cluster_to_a_cluster() {
    every_rule_holds(&ClusterSetup::start_to(Dest::Cluster(Arc::new(RedisCluster::start()))));
}

fn every_rule_holds(s: &ClusterSetup) {
    let mut w = s.cluster.writer();
    // A native flow on the destination, with the same id as a source flow.
    s.dest.hset(b"client:native-1", &[(b"owner", b"staging")]);
    s.dest.hset(b"clients", &[(b"native-1", b"staging")]);
    let natives = s.natives();
    assert_eq!(natives.len(), 1);
    w.hset(b"client:native-1", &[(b"owner", b"production")]);
    // Flows on every master, binary ids and values, excluded fields.
    let mut masters_hit = BTreeMap::new();
    for i in 0..300u32 {
        let key = [b"client:f-".as_slice(), &i.to_be_bytes()].concat();
        *masters_hit.entry(s.cluster.master_of(&key)).or_insert(0) += 1;
        w.hset(
            &key,
            &[
                (b"name", format!("flow {i}").as_bytes()),
                (b"blob", &[0xff, 0x00, i as u8]),
                (b"flowConfigHistory", b"never copied"),
                (b"isSyncCopy", b"from the source: never copied"),
            ],
        );
    }
    assert_eq!(masters_hit.len(), 3, "flows on every master: {masters_hit:?}");
    // A filtered organisation's flow, and one moving into it.
    w.hset(b"client:demo-1", &[(b"clerkOrganizationId", b"org_demo")]);
    w.hset(b"client:moves", &[(b"clerkOrganizationId", b"org_real")]);
    // Deletes, an expiry, a rename inside one slot (hash tag), a flow key of
    // another type.
    for i in 0..300u32 {
        if i % 7 == 0 {
            let key = [b"client:f-".as_slice(), &i.to_be_bytes()].concat();
            w.del(&key);
        }
    }
    w.hset(b"client:{t}expiring", &[(b"a", b"1")]);
    w.hset(b"client:{t}old-name", &[(b"a", b"2")]);
    s.converge(&natives);
    w.hset(b"client:moves", &[(b"clerkOrganizationId", b"org_demo")]);
    let _: i64 = w.run(
        b"client:{t}expiring",
        redis::cmd("PEXPIRE").arg("client:{t}expiring").arg(200),
    );
    let _: () = w.run(
        b"client:{t}old-name",
        redis::cmd("RENAME").arg("client:{t}old-name").arg("client:{t}new-name"),
    );
    let _: () = w.run(b"client:list", redis::cmd("SET").arg("client:list").arg("a string"));
    let took = s.converge(&natives);
    assert!(!s.dest.exists(b"client:{t}old-name"));
    assert!(!s.dest.exists(b"client:moves"), "moved into a filtered organisation");
    assert!(!s.dest.exists(b"client:demo-1"));
    let native = s.dest.hgetall(b"client:native-1");
    assert_eq!(
        native.get(b"owner".as_slice()).map(Vec::as_slice),
        Some(b"staging".as_slice())
    );
    let index = s.dest.hgetall(b"clients");
    assert_eq!(
        index.get(b"native-1".as_slice()).map(Vec::as_slice),
        Some(b"staging".as_slice())
    );
    eprintln!("cluster source: converged {took:?} after the last change");
}

/// The writer: flows spread over every slot, three updates in a row each
/// (order matters), deletes and re-creations, every value new.
fn spawn_writer(
    cluster: Arc<RedisCluster>,
    stop: Arc<AtomicBool>,
    steps: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut w = cluster.writer();
        let mut k: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            k += 1;
            let key = format!("client:load-{}", (k * 7) % 400).into_bytes();
            if k % 9 == 4 {
                w.del(&key);
            } else {
                for seq in 0..3 {
                    let v = format!("{k}.{seq}");
                    w.hset(&key, &[(b"v", v.as_bytes()), (b"seq", seq.to_string().as_bytes())]);
                }
            }
            steps.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Runs `disrupt` while the writer writes, keeps writing a while after it,
/// then returns how long the destination took to converge after the
/// writer stopped.
fn under_load(s: &ClusterSetup, disrupt: impl FnOnce(&RedisCluster)) -> Duration {
    let natives = s.natives();
    let stop = Arc::new(AtomicBool::new(false));
    let steps = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(s.cluster.clone(), stop.clone(), steps.clone());
    wait_for("the writer to get going", CONVERGE, || {
        (steps.load(Ordering::Relaxed) > 300).then_some(())
    });
    disrupt(&s.cluster);
    let after = steps.load(Ordering::Relaxed);
    wait_for("the writer to go on after the disruption", CONVERGE, || {
        (steps.load(Ordering::Relaxed) > after + 600).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    s.converge(&natives)
}

#[test]
fn a_failover_under_load_converges() {
    let s = ClusterSetup::start();
    let epoch_before = s.mirror.metric("redmirror_source_epoch");
    let shard = s.cluster.master_of(b"client:load-7");
    let took = under_load(&s, |c| c.failover(shard));
    assert!(!s.cluster.masters().contains(&shard), "the old master is a replica now");
    assert!(
        s.mirror.metric("redmirror_source_epoch") > epoch_before,
        "the slot map change started a new source epoch"
    );
    eprintln!("cluster failover under load: converged {took:?} after the writer stopped");
}

#[test]
fn a_slot_migration_under_load_converges() {
    let s = ClusterSetup::start();
    // Slots of flows the writer writes, moved to another master.
    let key = b"client:load-14";
    let slot = key_slot(key);
    let from = s.cluster.master_of(key);
    let to = *s
        .cluster
        .masters()
        .iter()
        .find(|&&m| m != from)
        .expect("another master");
    let took = under_load(&s, |c| c.migrate_slots(slot.saturating_sub(20)..slot + 20, to));
    assert_eq!(s.cluster.master_of(key), to);
    // The migration was a gap for the slots moved: passes over them only,
    // not the whole keyspace, covering all 40.
    wait_for("reconcile passes over the slots moved", CONVERGE, || {
        let out = s.mirror.output();
        let covered: usize = out
            .lines()
            .filter(|l| l.contains("Reconcile pass done.") && !l.contains("slots=all"))
            .filter_map(|l| {
                l.split(" slots=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum();
        (covered >= 40).then_some(())
    });
    eprintln!("cluster slot migration under load: converged {took:?} after the writer stopped");
}

#[test]
fn capture_refuses_a_cluster_whose_one_master_lacks_notifications_naming_it() {
    let cluster = RedisCluster::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let masters = cluster.masters();
    let silent = masters[1];
    let _: () = cluster.cmd_on(silent, &[b"CONFIG", b"SET", b"notify-keyspace-events", b""]);
    // The URL names another master: the silent one is found by discovery.
    let env = mirror_env(
        &format!("redis://127.0.0.1:{}", masters[0]),
        &dest.url(),
        &broker.bootstrap(),
    );
    let (code, out) = cli(&["capture"], &env);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&format!("cluster master 127.0.0.1:{silent}")), "{out}");
    assert!(out.contains("CONFIG SET notify-keyspace-events Eg$lshzxe"), "{out}");
    let (code, out) = cli(&["check"], &env);
    assert_eq!(code, 2, "capture refuses it at start, so check does: {out}");
    assert!(
        out.contains("FAIL  notifications") && out.contains(&format!("127.0.0.1:{silent}")),
        "{out}"
    );
    // Set again on that master, capture starts.
    let _: () = cluster.cmd_on(silent, &[b"CONFIG", b"SET", b"notify-keyspace-events", b"KEA"]);
    let (_, out) = cli(&["check"], &env);
    assert!(out.contains("ok    notifications"), "{out}");
    assert!(out.contains("on every master (3)"), "{out}");
}

#[test]
fn a_read_only_user_on_every_node_of_a_cluster_source_is_enough_and_a_missing_grant_is_named() {
    let cluster = RedisCluster::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let acl = |line: &str| {
        for port in cluster.ports() {
            crate::ops::run_acl(cluster.node(port), line);
        }
    };
    // The standalone line lacks the cluster commands.
    acl(&crate::ops::documented_acl("redmirror-source"));
    let url = format!(
        "redis://redmirror-source:test-password-42@127.0.0.1:{}",
        cluster.masters()[0]
    );
    let env = mirror_env(&url, &dest.url(), &broker.bootstrap());
    let (code, out) = cli(&["capture"], &env);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("+cluster|shards"), "{out}");
    assert!(out.contains("+cluster|slots"), "{out}");
    // The documented cluster line (on every node) is enough.
    acl(&crate::ops::documented_acl("redmirror-source-cluster").replacen(
        "redmirror-source-cluster",
        "redmirror-source",
        1,
    ));
    let mirror = Mirror::start(&["run"], &env);
    let s = ClusterSetup {
        cluster: Arc::new(cluster),
        dest: Dest::Single(dest),
        mirror,
    };
    s.wait_ready();
}

#[test]
fn a_destination_failover_and_slot_migration_under_load_converge() {
    let dest = Arc::new(RedisCluster::start());
    let s = ClusterSetup::start_to(Dest::Cluster(dest.clone()));
    let shard = dest.master_of(b"client:load-7");
    let took = under_load(&s, |_| dest.failover(shard));
    eprintln!("cluster destination failover under load: converged {took:?} after the writer stopped");
    let key = b"client:load-14";
    let slot = key_slot(key);
    let to = *dest
        .masters()
        .iter()
        .find(|&&m| m != dest.master_of(key))
        .expect("another master");
    let took = under_load(&s, |_| dest.migrate_slots(slot.saturating_sub(20)..slot + 20, to));
    eprintln!("cluster destination slot migration under load: converged {took:?} after the writer stopped");
}

/// `notify-keyspace-events` on one node of the cluster (no redirects).
fn node_notify_flags(c: &RedisCluster, port: u16) -> String {
    let v: Vec<String> = c.cmd_on(port, &[b"CONFIG", b"GET", b"notify-keyspace-events"]);
    v.get(1).cloned().unwrap_or_default()
}

/// The replica of the master on `master_port`.
fn replica_of(c: &RedisCluster, master_port: u16) -> u16 {
    let topo = c.topology(master_port);
    let id = topo
        .iter()
        .find(|n| n.port == master_port && n.master)
        .map(|n| n.id.clone())
        .unwrap_or_else(|| panic!("{master_port} is not a master: {topo:#?}"));
    topo.iter()
        .find(|n| n.master_id.as_deref() == Some(id.as_str()))
        .map(|n| n.port)
        .unwrap_or_else(|| panic!("{master_port} has no replica: {topo:#?}"))
}

/// Flow keys (`client:{prefix}-{i}`) served by the master on `port`.
fn keys_on(c: &RedisCluster, port: u16, prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..)
        .map(|i| format!("client:{prefix}-{i}").into_bytes())
        .filter(|k| c.master_of(k) == port)
        .take(n)
        .collect()
}

/// Bound on a promoted master being checked: the topology is read every
/// second and a change triggers a check at once (the periodic one is every
/// 30 s, so this bound excludes it).
const PROMOTED_CHECKED: Duration = Duration::from_secs(20);

/// The same cluster given as source and destination through two different
/// nodes is refused. A failover onto a replica whose notifications are
/// off: the new master is checked when it appears. Without auto-configure readiness fails
/// naming it; with it, it is configured and its flows are mirrored; a
/// FLUSHALL on it is seen.
#[test]
fn a_failover_onto_a_replica_without_notifications_is_checked() {
    let cluster = Arc::new(RedisCluster::start());
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    // The same cluster named through two different nodes is refused.
    let seeds = cluster.masters();
    let same = mirror_env(
        &format!("redis://127.0.0.1:{}", seeds[0]),
        &format!("redis://127.0.0.1:{}", seeds[1]),
        &broker.bootstrap(),
    );
    let (code, out) = cli(&["run"], &same);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("same Redis Cluster"), "{out}");
    let (code, out) = cli(&["check"], &same);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("FAIL  servers"), "{out}");

    let mut env = mirror_env(&cluster.url(), &dest.url(), &broker.bootstrap());
    env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into());
    let mirror = Mirror::start(&["run"], &env);
    let mut s = ClusterSetup {
        cluster: cluster.clone(),
        dest: Dest::Single(dest),
        mirror,
    };
    s.wait_ready();

    // Auto-configure off: readiness fails naming the promoted node.
    let shard = cluster.masters()[1];
    let silent = replica_of(&cluster, shard);
    let _: () = cluster.cmd_on(silent, &[b"CONFIG", b"SET", b"notify-keyspace-events", b""]);
    cluster.failover(shard);
    let named = format!("127.0.0.1:{silent}");
    let body = wait_for("readiness to fail naming the promoted master", PROMOTED_CHECKED, || {
        let body = crate::liveness::readyz_body(&s.mirror);
        (s.mirror.readyz() == 503 && body.contains(&named)).then_some(body)
    });
    assert!(body.contains("CONFIG SET notify-keyspace-events"), "{body}");
    assert_eq!(s.mirror.metric("redmirror_capture_notifications_missing"), 1.0);
    let _: () = cluster.cmd_on(silent, &[b"CONFIG", b"SET", b"notify-keyspace-events", b"KEA"]);
    assert_eq!(s.mirror.terminate(), Some(0));

    // Auto-configure on: the promoted node is configured, its flows are
    // mirrored by their notifications (no pass runs: the interval is an
    // hour and none is asked for after the writes), and a FLUSHALL on it
    // is seen.
    env.insert("REDMIRROR_CONFIGURE_NOTIFICATIONS".into(), "true".into());
    s.mirror = Mirror::start(&["run"], &env);
    s.wait_ready();
    let shard = cluster.masters()[0];
    let silent = replica_of(&cluster, shard);
    let _: () = cluster.cmd_on(silent, &[b"CONFIG", b"SET", b"notify-keyspace-events", b""]);
    cluster.failover(shard);
    wait_for("the promoted master to be configured", PROMOTED_CHECKED, || {
        redmirror_capture::notify::missing(&node_notify_flags(&cluster, silent))
            .is_empty()
            .then_some(())
    });
    let keys = keys_on(&cluster, silent, "promoted", 20);
    let mut w = cluster.writer();
    for k in &keys {
        w.hset(k, &[(b"on", b"the promoted master")]);
    }
    wait_for("the flows written on the promoted master", CONVERGE, || {
        keys.iter().all(|k| s.dest.exists(k)).then_some(())
    });
    // Capture reads a new master's counters for the first time within
    // about two seconds of the promotion: a FLUSHALL before that read is
    // covered by the gap it reports for the master's slots once its
    // counters are known, one after it is counted as a flush.
    let arrivals = s.mirror.output().matches("came after the start").count();
    let _: () = cluster.cmd_on(silent, &[b"FLUSHALL"]);
    wait_for("the FLUSHALL on the promoted master to be seen", CONVERGE, || {
        let counted = s
            .mirror
            .metric("redmirror_capture_source_flushes_total{command=\"flushall\"}")
            >= 1.0;
        let covered = s.mirror.output().matches("came after the start").count() > arrivals;
        ((counted || covered) && keys.iter().all(|k| !s.dest.exists(k))).then_some(())
    });
    assert_eq!(s.mirror.readyz(), 200, "{}", crate::liveness::readyz_body(&s.mirror));
}
