//! `cluster`: the source is a Redis Cluster (three masters with a replica
//! each; the destination stays a standalone server). The injections
//! alternate between a `CLUSTER FAILOVER` of a random master and moving a
//! random range of 5–50 slots, keys and all, to another random master. Both
//! change the slot map under the load: capture must follow the new masters
//! (a gap and a new source epoch) and the load follows the redirections.
//! After each, a probe flow written in the slots concerned must reach the
//! destination: the time from the start of the injection until it does is
//! the *recover* column.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::Rng;
use redmirror_testkit::cluster::{key_slot, SLOTS};

use super::{probe_recovery, Env, RECOVER_BOUND};

/// What one injection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// `CLUSTER FAILOVER` on the replica of a random master (odd turns).
    Failover,
    /// 5–50 consecutive slots to another random master (even turns).
    Migrate,
}

impl Turn {
    fn of(turn: u32) -> Turn {
        if turn % 2 == 1 {
            Turn::Failover
        } else {
            Turn::Migrate
        }
    }
}

/// A probe key whose slot satisfies `want`.
pub(super) fn probe_key(turn: u32, want: impl Fn(u16) -> bool) -> String {
    (0u32..)
        .map(|i| format!("client:cluster-probe-{turn}-{i}"))
        .find(|k| want(key_slot(k.as_bytes())))
        .expect("some key hashes there")
}

/// One failover or one slot migration, then the probe.
pub(super) fn inject(env: &mut Env, rng: &mut StdRng, turn: u32) -> anyhow::Result<String> {
    let t = Instant::now();
    let cluster = env.source.cluster();
    let masters = cluster.masters();
    let (what, probe) = match Turn::of(turn) {
        Turn::Failover => {
            let m = masters[rng.random_range(0..masters.len())];
            let slots: Vec<(u16, u16)> = cluster
                .topology(m)
                .into_iter()
                .find(|n| n.port == m)
                .map(|n| n.slots)
                .unwrap_or_default();
            cluster.failover(m);
            let settled = t.elapsed().as_secs_f64();
            let probe = probe_key(turn, |s| slots.iter().any(|&(a, b)| (a..=b).contains(&s)));
            let now = cluster.master_of(probe.as_bytes());
            (
                format!(
                    "CLUSTER FAILOVER of master {m}: its replica {now} took its slots, settled after {settled:.1}s"
                ),
                probe,
            )
        }
        Turn::Migrate => {
            let n = rng.random_range(5..=50u16);
            let start = rng.random_range(0..SLOTS - n);
            let from = cluster.slot_owner(start);
            let others: Vec<u16> = masters.iter().copied().filter(|&p| p != from).collect();
            let to = others[rng.random_range(0..others.len())];
            cluster.migrate_slots(start..start + n, to);
            let settled = t.elapsed().as_secs_f64();
            let probe = probe_key(turn, |s| (start..start + n).contains(&s));
            (
                format!(
                    "slots {start}-{} ({n} slots, the first on master {from}) migrated to master {to}, settled after {settled:.1}s",
                    start + n - 1
                ),
                probe,
            )
        }
    };
    let recovered = probe_recovery(env, &probe, turn, t, |_, _| {})?;
    Ok(format!(
        "{what}; a change made then in those slots on the destination {} after the injection began",
        recovered.map_or_else(
            || format!("not within {}s", RECOVER_BOUND.as_secs()),
            |s| format!("{s:.1}s")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_alternate_starting_with_a_failover() {
        let turns: Vec<Turn> = (1..=4).map(Turn::of).collect();
        assert_eq!(turns, [Turn::Failover, Turn::Migrate, Turn::Failover, Turn::Migrate]);
    }

    #[test]
    fn a_probe_key_lands_where_asked() {
        let k = probe_key(2, |s| (100..105).contains(&s));
        assert!((100..105).contains(&key_slot(k.as_bytes())), "{k}");
    }
}
