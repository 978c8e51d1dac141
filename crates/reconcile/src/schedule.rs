//! When the reconciler's next pass is due and what it covers: a pure state
//! machine the service's loop drives with what it observes (the clock,
//! gaps, requests, holds, how a pass ended), so every rule of the
//! schedule is tested without servers, under paused time.
//!
//! The rules:
//! - a pass over every flow at start, then every `interval` after the last
//!   one that succeeded;
//! - a capture gap makes a pass due now: over every flow for a gap over
//!   the whole keyspace, over the gap's slots for one on some masters of a
//!   cluster source (until the next pass over every flow is due anyway);
//! - a request (`reconcile --once`, the admin API) makes a pass over every
//!   flow due now;
//! - a failed pass, or one whose barrier timed out, is retried after 5 s
//!   doubling to 5 min (never later than the interval), with the same
//!   reach or wider;
//! - a hold defers the pass it meets by an interval; its end makes a pass
//!   over every flow due now.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use redmirror_core::backoff::Backoff;
use redmirror_state::signal::GapScope;

/// First retry of a failed pass.
const RETRY_FIRST: Duration = Duration::from_secs(5);
/// Longest wait before retrying a failed pass.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// The reconciler's schedule.
#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    /// When the next pass begins.
    next: Instant,
    /// When the next pass over every flow is due; until then a pass
    /// started by gaps on some masters covers only their slots.
    whole_due: Instant,
    /// Slots the next pass must cover when it is not over every flow.
    targeted: Option<BTreeSet<u16>>,
    /// The request counter a pass must answer (0: none).
    answering: u64,
    /// The gap counter as last seen.
    seen_gaps: i64,
    /// The request counter as last seen.
    seen_requests: i64,
    retry: Backoff,
}

/// What the pass about to begin covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `None`: every flow; otherwise these hash slots only.
    pub slots: Option<BTreeSet<u16>>,
    /// The request counter this pass answers (0: none).
    pub answering: u64,
}

impl Plan {
    /// True when the pass covers every flow (it then covers every gap
    /// signalled before it began).
    pub fn whole(&self) -> bool {
        self.slots.is_none()
    }
}

/// How a pass ended, as far as the schedule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It compared (and repaired) what it covers.
    Done,
    /// It failed, or its barrier timed out and it repaired nothing.
    Retry,
}

impl Schedule {
    /// A schedule whose first pass, over every flow, is due at `now`; the
    /// counters are as read at start (gaps and requests before it are
    /// covered by that first pass).
    pub fn new(interval: Duration, now: Instant, gaps: i64, requests: i64) -> Self {
        Schedule {
            interval,
            next: now,
            whole_due: now,
            targeted: None,
            answering: 0,
            seen_gaps: gaps,
            seen_requests: requests,
            retry: Backoff::new(RETRY_FIRST, RETRY_MAX),
        }
    }

    /// When the next pass begins.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// True when a pass should begin at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// A pass begins at `now`; `asked` when a caller is waiting for it.
    /// A pass over every flow when asked, answering a request, or due.
    pub fn begin(&mut self, now: Instant, asked: bool) -> Plan {
        let whole = asked || self.answering != 0 || now >= self.whole_due;
        let slots = if whole {
            self.targeted = None;
            None
        } else {
            // Due without a target (a retry's wait ran out after the
            // targeted slots were merged into a pass): every flow.
            self.targeted.take()
        };
        Plan {
            slots,
            answering: self.answering,
        }
    }

    /// The pass of `plan` ended at `now`.
    pub fn end(&mut self, now: Instant, plan: Plan, ended: Ended) {
        match ended {
            Ended::Done => {
                if plan.answering == self.answering {
                    self.answering = 0;
                }
                self.retry.reset();
                if plan.whole() {
                    self.whole_due = now + self.interval;
                }
                // A gap or a request that came during the pass is taken now.
                self.next = if self.targeted.is_some() || self.answering != 0 {
                    now
                } else {
                    self.whole_due
                };
            }
            Ended::Retry => {
                // Retried with the same reach (or wider).
                if let Some(s) = plan.slots {
                    self.targeted.get_or_insert_default().extend(s);
                }
                self.next = now + self.retry.next_delay().min(self.interval);
            }
        }
    }

    /// A hold refused or abandoned a pass at `now`: the next is an
    /// interval away unless the hold's end comes first.
    pub fn held(&mut self, now: Instant) {
        self.next = now + self.interval;
    }

    /// The hold ended at `now`: a pass over every flow, now, brings the
    /// destination to the source's current state.
    pub fn hold_ended(&mut self, now: Instant) {
        self.next = now;
        self.whole_due = now;
    }

    /// The gap counter read at `now` is `counter`: true when it moved
    /// (a gap was signalled), and the caller then takes its scope and
    /// reports it with [`Schedule::gap`].
    pub fn gaps_moved(&mut self, counter: i64) -> bool {
        let moved = counter != self.seen_gaps;
        self.seen_gaps = counter;
        moved
    }

    /// A gap of `scope` was signalled: a pass is due at `now`.
    pub fn gap(&mut self, now: Instant, scope: GapScope) {
        self.next = now;
        match scope {
            GapScope::Whole => self.whole_due = now,
            GapScope::Slots(slots) => self.targeted.get_or_insert_default().extend(slots),
        }
    }

    /// A pass over every flow is beginning and the gap counter reads
    /// `counter`: every gap up to it is covered by that pass (the caller
    /// takes their scope away with it).
    pub fn gaps_covered(&mut self, counter: i64) {
        self.seen_gaps = counter;
    }

    /// The request counter read at `now` is `counter`: when it moved, a
    /// pass over every flow that answers it is due now. True when it moved.
    pub fn requested(&mut self, now: Instant, counter: i64) -> bool {
        if counter == self.seen_requests {
            return false;
        }
        self.seen_requests = counter;
        self.answering = u64::try_from(counter).unwrap_or(0);
        self.next = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn slots(s: &[u16]) -> Option<BTreeSet<u16>> {
        Some(s.iter().copied().collect())
    }

    /// Runs the pass due now, ending it as `ended`; returns its plan.
    fn pass(s: &mut Schedule, ended: Ended) -> Plan {
        let now = Instant::now();
        assert!(s.due(now), "no pass is due");
        let plan = s.begin(now, false);
        s.end(Instant::now(), plan.clone(), ended);
        plan
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_over_every_flow_at_start_then_every_interval() {
        let mut s = Schedule::new(HOUR, Instant::now(), 0, 0);
        assert!(pass(&mut s, Ended::Done).whole());
        assert!(!s.due(Instant::now()));
        tokio::time::advance(HOUR - Duration::from_secs(1)).await;
        assert!(!s.due(Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(pass(&mut s, Ended::Done).whole());
        assert_eq!(s.next(), Instant::now() + HOUR);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_on_some_masters_is_a_pass_over_their_slots_now() {
        let mut s = Schedule::new(HOUR, Instant::now(), 0, 0);
        pass(&mut s, Ended::Done);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!s.gaps_moved(0));
        assert!(s.gaps_moved(1));
        s.gap(Instant::now(), GapScope::Slots(vec![7, 3]));
        s.gap(Instant::now(), GapScope::Slots(vec![9]));
        let plan = pass(&mut s, Ended::Done);
        assert_eq!(plan.slots, slots(&[3, 7, 9]));
        // The schedule of passes over every flow is kept.
        assert_eq!(s.next(), Instant::now() + HOUR - Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_over_the_whole_keyspace_is_a_pass_over_every_flow_now() {
        let mut s = Schedule::new(HOUR, Instant::now(), 0, 0);
        pass(&mut s, Ended::Done);
        tokio::time::advance(Duration::from_secs(60)).await;
        s.gap(Instant::now(), GapScope::Slots(vec![1]));
        s.gap(Instant::now(), GapScope::Whole);
        assert!(pass(&mut s, Ended::Done).whole());
        assert_eq!(s.next(), Instant::now() + HOUR);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_targeted_pass_is_retried_soon_with_its_slots() {
        let mut s = Schedule::new(HOUR, Instant::now(), 0, 0);
        pass(&mut s, Ended::Done);
        s.gap(Instant::now(), GapScope::Slots(vec![5]));
        assert_eq!(pass(&mut s, Ended::Retry).slots, slots(&[5]));
        assert_eq!(s.next(), Instant::now() + RETRY_FIRST);
        // A gap meanwhile widens the retry.
        s.gap(Instant::now() + Duration::from_secs(1), GapScope::Slots(vec![6]));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(pass(&mut s, Ended::Retry).slots, slots(&[5, 6]));
        // Retries back off: 5 s, then 10 s.
        assert_eq!(s.next(), Instant::now() + 2 * RETRY_FIRST);
        tokio::time::advance(2 * RETRY_FIRST).await;
        assert_eq!(pass(&mut s, Ended::Done).slots, slots(&[5, 6]));
        // A success resets the back-off.
        s.gap(Instant::now(), GapScope::Slots(vec![1]));
        pass(&mut s, Ended::Retry);
        assert_eq!(s.next(), Instant::now() + RETRY_FIRST);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_never_wait_longer_than_the_interval() {
        let interval = Duration::from_secs(20);
        let mut s = Schedule::new(interval, Instant::now(), 0, 0);
        for _ in 0..6 {
            pass(&mut s, Ended::Retry);
            assert!(s.next() <= Instant::now() + interval);
            tokio::time::advance(interval).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_is_answered_by_a_pass_over_every_flow_now() {
        let mut s = Schedule::new(HOUR, Instant::now(), 0, 4);
        pass(&mut s, Ended::Done);
        s.gap(Instant::now(), GapScope::Slots(vec![2]));
        assert!(
            !s.requested(Instant::now(), 4),
            "the counter as read at start is not a request"
        );
        assert!(s.requested(Instant::now(), 5));
        let plan = pass(&mut s, Ended::Done);
        assert!(plan.whole(), "a request covers every flow");
        assert_eq!(plan.answering, 5);
        assert_eq!(s.begin(Instant::now(), false).answering, 0, "answered once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_answer_is_answered_by_the_retry() {
        let mut s = Schedule::new(HOUR, Instant::now(), 0, 0);
        pass(&mut s, Ended::Done);
        s.requested(Instant::now(), 1);
        assert_eq!(pass(&mut s, Ended::Retry).answering, 1);
        tokio::time::advance(RETRY_FIRST).await;
        let plan = pass(&mut s, Ended::Done);
        assert!(plan.whole());
        assert_eq!(plan.answering, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_during_a_pass_is_answered_by_the_next_one_at_once() {
        let mut s = Schedule::new(HOUR, Instant::now(), 0, 0);
        let plan = s.begin(Instant::now(), false);
        s.requested(Instant::now(), 1);
        s.end(Instant::now(), plan, Ended::Done);
        assert!(s.due(Instant::now()), "the request waits for no schedule");
        assert_eq!(pass(&mut s, Ended::Done).answering, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_during_a_pass_is_taken_by_another_pass_at_once() {
        let mut s = Schedule::new(HOUR, Instant::now(), 0, 0);
        pass(&mut s, Ended::Done);
        let plan = s.begin(Instant::now() + HOUR, false);
        assert!(plan.whole());
        s.gap(Instant::now(), GapScope::Slots(vec![8]));
        tokio::time::advance(HOUR).await;
        s.end(Instant::now(), plan, Ended::Done);
        assert!(s.due(Instant::now()));
        assert_eq!(pass(&mut s, Ended::Done).slots, slots(&[8]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_defers_passes_and_its_end_starts_one_over_every_flow() {
        let mut s = Schedule::new(HOUR, Instant::now(), 0, 0);
        pass(&mut s, Ended::Done);
        tokio::time::advance(HOUR).await;
        s.held(Instant::now());
        assert!(!s.due(Instant::now()));
        tokio::time::advance(Duration::from_secs(90)).await;
        s.hold_ended(Instant::now());
        assert!(pass(&mut s, Ended::Done).whole());
    }

    #[test]
    fn gaps_covered_by_a_pass_over_every_flow_are_not_seen_again() {
        let now = Instant::now();
        let mut s = Schedule::new(HOUR, now, 3, 0);
        // Capture signalled a gap after the counter was read at start.
        let plan = s.begin(now, false);
        assert!(plan.whole());
        s.gaps_covered(4);
        s.end(now, plan, Ended::Done);
        assert!(!s.gaps_moved(4), "the start-up pass covered it");
        assert!(s.gaps_moved(5));
    }
}
