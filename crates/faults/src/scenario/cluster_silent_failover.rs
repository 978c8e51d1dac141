//! `cluster-silent-failover`: the source is a Redis Cluster and each
//! injection fails a random master over to its replica after switching that
//! replica's keyspace notifications off (a replica whose `redis.conf` lacks
//! them). Capture runs with `REDMIRROR_CONFIGURE_NOTIFICATIONS=true`: it
//! must find the promoted master in its own slot map, set its notifications
//! again and mirror what is written there. The injection fails when the
//! promoted master is not configured within [`RECOVER_BOUND`]; a probe
//! written in its slots then must reach the destination (the *recover*
//! column, from the start of the injection).

use std::time::Instant;

use anyhow::bail;
use rand::rngs::StdRng;
use rand::Rng;

use super::cluster::probe_key;
use super::{probe_recovery, Env, RECOVER_BOUND};

/// Capture sets missing notification classes itself.
pub(super) const SETTINGS: &[(&str, &str)] = &[("REDMIRROR_CONFIGURE_NOTIFICATIONS", "true")];

/// `notify-keyspace-events` on one node.
fn flags(env: &Env, port: u16) -> String {
    let v: Vec<String> = env
        .source
        .cluster()
        .cmd_on(port, &[b"CONFIG", b"GET", b"notify-keyspace-events"]);
    v.get(1).cloned().unwrap_or_default()
}

/// One failover onto a replica without notifications, then the probe.
pub(super) fn inject(env: &mut Env, rng: &mut StdRng, turn: u32) -> anyhow::Result<String> {
    let t = Instant::now();
    let cluster = env.source.cluster();
    let masters = cluster.masters();
    let m = masters[rng.random_range(0..masters.len())];
    let view = cluster.topology(m);
    let Some(master) = view.iter().find(|n| n.port == m).cloned() else {
        bail!("master {m} is not in its own view of the cluster");
    };
    let Some(replica) = view
        .iter()
        .find(|n| n.master_id.as_deref() == Some(master.id.as_str()))
        .map(|n| n.port)
    else {
        bail!("master {m} has no replica");
    };
    let _: () = cluster.cmd_on(replica, &[b"CONFIG", b"SET", b"notify-keyspace-events", b""]);
    cluster.failover(m);
    let settled = t.elapsed().as_secs_f64();
    let configured = loop {
        // Capture sets every class it needs at once (`Eg$lshzxe` from nothing).
        if flags(env, replica).contains('E') {
            break t.elapsed().as_secs_f64();
        }
        if t.elapsed() > RECOVER_BOUND {
            bail!(
                "the promoted master {replica} still lacks keyspace notifications {}s after the failover began",
                RECOVER_BOUND.as_secs()
            );
        }
        env.idle(std::time::Duration::from_millis(200))?;
    };
    let probe = probe_key(turn, |s| master.slots.iter().any(|&(a, b)| (a..=b).contains(&s)));
    let recovered = probe_recovery(env, &probe, turn, t, |_, _| {})?;
    Ok(format!(
        "notifications off on replica {replica}, CLUSTER FAILOVER of master {m} onto it (settled after \
         {settled:.1}s); notifications set again on it {configured:.1}s after the injection began; a change made \
         then in its slots on the destination {}",
        recovered.map_or_else(
            || format!("not within {}s", RECOVER_BOUND.as_secs()),
            |s| format!("{s:.1}s after the injection began")
        ),
    ))
}
