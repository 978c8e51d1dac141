//! The stall watch: a Kafka consumer that receives nothing while events
//! wait unread is stuck (a group rejoin that never completes, a wake-up
//! that never comes), told apart from one that simply has nothing to read
//! by lag measurements ([`crate::lag::track`]).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::lag::Measured;

/// How long apply's consumer may receive nothing while events wait unread
/// before it counts as stuck: three session timeouts, so a normal rejoin
/// after a broker pause or a rebalance is never taken for a stall.
pub const STALL_AFTER: Duration = Duration::from_secs(30);

/// Decides whether a consumer that received nothing for [`STALL_AFTER`]
/// is stuck, from lag measurements taken after its last read (plus the
/// auto-commit of what it read).
#[derive(Debug, Default)]
pub(crate) struct StallWatch {
    /// With no partition assigned: the group's committed offsets when the
    /// silence was first measured, and when.
    baseline: Option<(std::time::Instant, BTreeMap<i32, i64>)>,
}

impl StallWatch {
    /// The events that wait unread if the consumer is stuck.
    ///
    /// With partitions assigned, it is stuck when any of them has events
    /// not committed. With none (a rejoin that never completes, or more
    /// instances than partitions), it is stuck only when events wait and
    /// the whole group committed nothing for [`STALL_AFTER`]: another
    /// instance busy with a backlog is not this one's stall.
    pub(crate) fn check(
        &mut self,
        assigned: &[i32],
        last_read: std::time::Instant,
        lag: &Measured,
        now: std::time::Instant,
    ) -> Option<i64> {
        // Measured after the auto-commit of the last read (every 1 s), and
        // recently: with the broker unreachable nothing is measured, and an
        // old measurement says nothing about now.
        let recent = lag
            .at
            .is_some_and(|at| now.saturating_duration_since(at) < MEASURED_WITHIN);
        if !recent || !lag.fresh_after(last_read + Duration::from_secs(5)) {
            return None;
        }
        if !assigned.is_empty() {
            return Some(lag.unread(Some(assigned))).filter(|n| *n > 0);
        }
        let unread = lag.unread(None);
        if unread == 0 {
            self.baseline = None;
            return None;
        }
        match &self.baseline {
            Some((since, committed)) if committed == &lag.committed => {
                (now.duration_since(*since) >= STALL_AFTER).then_some(unread)
            }
            _ => {
                self.baseline = Some((now, lag.committed.clone()));
                None
            }
        }
    }
}

/// How recent the lag measurement behind a stall must be (three of
/// [`crate::lag::track`]'s periods).
const MEASURED_WITHIN: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn measured(at: Instant, lag: &[(i32, i64)], committed: &[(i32, i64)]) -> Measured {
        Measured {
            per_partition: lag.iter().copied().collect(),
            committed: committed.iter().copied().collect(),
            at: Some(at),
        }
    }

    #[test]
    fn an_assigned_partition_with_events_waiting_is_a_stall_once_measured_after_the_last_read() {
        let read = Instant::now();
        let mut w = StallWatch::default();
        let now = read + STALL_AFTER;
        let early = measured(read + Duration::from_secs(1), &[(0, 7)], &[(0, 3)]);
        assert_eq!(w.check(&[0], read, &early, now), None, "measured before the commit");
        let fresh = measured(now - Duration::from_secs(2), &[(0, 7), (1, 0)], &[(0, 3)]);
        assert_eq!(w.check(&[0, 1], read, &fresh, now), Some(7));
        assert_eq!(w.check(&[1], read, &fresh, now), None, "another instance's partition");
        let old = measured(read + Duration::from_secs(6), &[(0, 7)], &[(0, 3)]);
        assert_eq!(
            w.check(&[0], read, &old, now),
            None,
            "no measurement since (broker unreachable)"
        );
        let caught_up = measured(now - Duration::from_secs(2), &[(0, 0)], &[(0, 10)]);
        assert_eq!(w.check(&[0], read, &caught_up, now), None);
    }

    #[test]
    fn with_nothing_assigned_it_is_a_stall_only_when_the_whole_group_commits_nothing() {
        let read = Instant::now();
        let t = |s: u64| read + Duration::from_secs(s);
        let mut w = StallWatch::default();
        // Another member works through a backlog: its commits move.
        assert_eq!(
            w.check(&[], read, &measured(t(30), &[(0, 50)], &[(0, 100)]), t(31)),
            None
        );
        assert_eq!(
            w.check(&[], read, &measured(t(40), &[(0, 40)], &[(0, 110)]), t(41)),
            None
        );
        assert_eq!(
            w.check(&[], read, &measured(t(80), &[(0, 45)], &[(0, 130)]), t(81)),
            None
        );
        // Nobody commits for STALL_AFTER while events wait.
        assert_eq!(
            w.check(&[], read, &measured(t(95), &[(0, 45)], &[(0, 130)]), t(100)),
            None
        );
        assert_eq!(
            w.check(&[], read, &measured(t(110), &[(0, 60)], &[(0, 130)]), t(111)),
            Some(60)
        );
        // Nothing waits: never a stall.
        let mut w = StallWatch::default();
        assert_eq!(
            w.check(&[], read, &measured(t(30), &[(0, 0)], &[(0, 130)]), t(31)),
            None
        );
        assert_eq!(
            w.check(&[], read, &measured(t(90), &[(0, 0)], &[(0, 130)]), t(91)),
            None
        );
    }
}
