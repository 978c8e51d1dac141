//! FLUSHDB, FLUSHALL and SWAPDB on the source, noticed by polling.
//!
//! These commands empty or replace a whole database without a keyspace
//! event per key, so the subscriber cannot see the flows they remove (or,
//! for SWAPDB, bring in). Every [`POLL_EVERY`] this task reads `INFO
//! commandstats` on capture's source connection (the read-only user's
//! `+info` is enough) and, when the call count of `flushdb`, `flushall` or
//! `swapdb` has grown since the last read, reports [`Gap::Flushed`]: the
//! reconciler runs a pass, which removes the sync copies left behind and
//! mirrors the flows a swap brought in.
//!
//! The counts are server-wide: one of these commands on another database
//! asks for a pass too (which then finds nothing to repair). A count that
//! went down (`CONFIG RESETSTAT`, a restarted source) is a new baseline,
//! not a gap; a restart is the subscriber's gap already. On a cluster
//! source every master (as capture's map has them now) is read and keeps
//! a baseline of its own.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use redmirror_telemetry::metrics::SourceFlush;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::masters::{Master, Masters};
use crate::Gap;

/// How often the counters are read.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// Call counts of the commands watched ([`SourceFlush::ALL`], named as
/// `INFO commandstats` names them), in that order (0 when never called).
pub type Counts = [u64; 3];

/// Reads the call counts from an `INFO commandstats` reply
/// (`cmdstat_flushdb:calls=2,usec=...`).
pub fn parse(info: &str) -> Counts {
    let mut counts = [0; 3];
    for line in info.lines() {
        let Some((name, stats)) = line.trim().strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else {
            continue;
        };
        let Some(i) = SourceFlush::LABELS.iter().position(|c| *c == name) else {
            continue;
        };
        counts[i] = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    }
    counts
}

/// The commands that ran between `before` and `now` (with how many calls).
/// A count that went down is a reset, not a run.
pub fn ran(before: &Counts, now: &Counts) -> Vec<(SourceFlush, u64)> {
    SourceFlush::ALL
        .iter()
        .zip(before.iter().zip(now))
        .filter(|(_, (b, n))| n > b)
        .map(|(c, (b, n))| (*c, n - b))
        .collect()
}

/// Each master's counts kept as the baseline for its next read, by node
/// id and address (a standalone source is the one entry `None`).
type Baselines = HashMap<Option<Master>, Counts>;

/// What one read of the counters found.
struct Polled<E> {
    /// The watched commands that ran since the last read, summed.
    ran: Vec<(SourceFlush, u64)>,
    /// Masters first seen in this read, when it was not the first.
    arrived: Vec<Master>,
    /// The first error of a read (after the other masters were read).
    error: Option<E>,
}

/// Reads the counts of the source (of every master of a cluster source,
/// as capture's map has them now) and compares each with its own
/// baseline: the commands that ran since. A master seen for the first
/// time (promoted by a failover, added) only gets its baseline: what it
/// ran before is unknown, so after the first read it is returned as
/// arrived, and the watch reports a gap for its slots *after* its baseline
/// was taken (a FLUSHALL on it between its promotion and this read is
/// covered by that pass; one after it, by the counts). A master gone is
/// forgotten, so a replaced master is never read as a counter reset of
/// another.
async fn poll(
    client: &Client,
    masters: Option<&mut Masters>,
    baselines: &mut Baselines,
    seeded: bool,
) -> Polled<fred::error::Error> {
    let mut found: Vec<(Option<Master>, Result<Counts, fred::error::Error>)> = Vec::new();
    match masters {
        None => {
            let info: Result<String, _> = client.info(Some(fred::types::InfoKind::CommandStats)).await;
            found.push((None, info.map(|i| parse(&i))));
        }
        Some(masters) => {
            let current = masters.current();
            baselines.retain(|m, _| m.as_ref().is_some_and(|m| current.contains(m)));
            for m in current {
                let info = masters.call(&m.addr, &[b"INFO", b"commandstats"]).await;
                found.push((Some(m), info.map(|i| parse(&i.concat()))));
            }
        }
    }
    settle(baselines, found, seeded)
}

/// Compares each node's counts with its own baseline, which they then
/// replace; a node without one only gets its baseline, and is arrived
/// when `seeded` (a read before this one took the baselines of the masters
/// there were then).
fn settle<E>(baselines: &mut Baselines, found: Vec<(Option<Master>, Result<Counts, E>)>, seeded: bool) -> Polled<E> {
    let mut total = [0u64; 3];
    let (mut arrived, mut error) = (Vec::new(), None);
    for (node, counts) in found {
        match counts {
            Ok(now) => {
                match baselines.get(&node) {
                    Some(before) => {
                        for (t, (b, n)) in total.iter_mut().zip(before.iter().zip(&now)) {
                            *t += n.saturating_sub(*b);
                        }
                    }
                    None if seeded => arrived.extend(node.clone()),
                    None => {}
                }
                baselines.insert(node, now);
            }
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    Polled {
        ran: ran(&[0; 3], &total),
        arrived,
        error,
    }
}

/// Polls until `stop`, sending [`Gap::Flushed`] on `gaps` whenever one of
/// the commands watched ran on the source (on a cluster source, on any of
/// its masters, `masters`) since the previous read. A master whose read
/// fails (down) keeps its previous counts; the first failure of a run of
/// them is logged.
pub async fn watch(
    client: Client,
    mut masters: Option<Masters>,
    gaps: mpsc::UnboundedSender<Gap>,
    stop: CancellationToken,
) {
    let mut baselines = Baselines::new();
    let (mut failing, mut seeded) = (false, false);
    loop {
        let Polled { ran, arrived, error } = poll(&client, masters.as_mut(), &mut baselines, seeded).await;
        seeded = true;
        if !ran.is_empty() {
            Gap::Flushed(ran).report(&gaps);
        }
        if let Some(m) = masters.as_ref() {
            let topology = m.cluster().topology();
            for master in arrived {
                let slots: Vec<u16> = topology.slots_of(&master.addr).into_iter().collect();
                if !slots.is_empty() {
                    Gap::Slots {
                        master: master.addr.to_string(),
                        slots,
                    }
                    .report(&gaps);
                }
            }
        }
        match error {
            None => failing = false,
            Some(e) => {
                if !failing {
                    tracing::warn!(
                        error = %e,
                        "Cannot read INFO commandstats on the source (the capture user needs +info): \
                         FLUSHDB, FLUSHALL and SWAPDB are noticed only by a pass until it can; retrying."
                    );
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Commandstats\r\n\
        cmdstat_hset:calls=10,usec=40,usec_per_call=4.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_flushdb:calls=2,usec=9,usec_per_call=4.50,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_swapdb:calls=1,usec=3,usec_per_call=3.00,rejected_calls=1,failed_calls=0\r\n";

    #[test]
    fn reads_the_call_counts_and_zero_for_commands_never_called() {
        assert_eq!(parse(INFO), [2, 0, 1]);
        assert_eq!(parse(""), [0, 0, 0]);
        assert_eq!(parse("cmdstat_flushdb:calls=x\r\ncmdstat_flushdbx:calls=5"), [0, 0, 0]);
    }

    fn master(id: &str, port: u16) -> Option<Master> {
        Some(Master {
            id: id.into(),
            addr: redmirror_redis::cluster::NodeAddr {
                host: "127.0.0.1".into(),
                port,
            },
        })
    }

    #[test]
    fn each_master_is_compared_with_its_own_counts() {
        let mut b = Baselines::new();
        let ok = |n: Counts| Ok::<_, &str>(n);
        // First sight: baselines only.
        let p = settle(
            &mut b,
            vec![(master("a", 1), ok([5, 0, 0])), (master("b", 2), ok([9, 9, 0]))],
            false,
        );
        assert_eq!((p.ran, p.arrived), (vec![], vec![]));
        // A FLUSHALL on b.
        let p = settle(
            &mut b,
            vec![(master("a", 1), ok([5, 0, 0])), (master("b", 2), ok([9, 10, 0]))],
            true,
        );
        assert_eq!(p.ran, vec![(SourceFlush::FlushAll, 1)]);
        // b failed over to c (its counts lower than b's): no reset read as a
        // run, no run missed after it; the poll drops b's baseline. c is
        // arrived: what it ran before this read is unknown, so the watch
        // reports a gap for its slots.
        b.retain(|m, _| *m != master("b", 2));
        let p = settle(
            &mut b,
            vec![(master("a", 1), ok([5, 0, 0])), (master("c", 3), ok([1, 2, 0]))],
            true,
        );
        assert_eq!(p.ran, vec![]);
        assert_eq!(p.arrived, vec![master("c", 3).unwrap()]);
        let p = settle(
            &mut b,
            vec![(master("a", 1), ok([6, 0, 0])), (master("c", 3), ok([1, 3, 0]))],
            true,
        );
        assert_eq!(p.ran, vec![(SourceFlush::FlushDb, 1), (SourceFlush::FlushAll, 1)]);
        assert_eq!(p.arrived, vec![], "arrived once");
        // A master that cannot be read keeps its baseline; the error is returned.
        let p = settle(
            &mut b,
            vec![(master("a", 1), Err("down")), (master("c", 3), ok([1, 4, 0]))],
            true,
        );
        assert_eq!((p.ran, p.error), (vec![(SourceFlush::FlushAll, 1)], Some("down")));
    }

    #[test]
    fn a_count_that_grew_ran_and_one_that_went_down_is_a_reset() {
        assert_eq!(ran(&[2, 0, 1], &[2, 0, 1]), vec![]);
        assert_eq!(
            ran(&[2, 0, 1], &[3, 2, 1]),
            vec![(SourceFlush::FlushDb, 1), (SourceFlush::FlushAll, 2)]
        );
        assert_eq!(ran(&[2, 0, 1], &[0, 0, 0]), vec![]);
        assert_eq!(ran(&[2, 0, 1], &[0, 0, 2]), vec![(SourceFlush::SwapDb, 1)]);
    }
}
