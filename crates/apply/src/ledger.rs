//! The offset ledger: which offsets apply may store, decided without Kafka.
//!
//! Batches are written concurrently and may finish in any order, or never
//! (a write task that fails, a shutdown that interrupts retries). An offset
//! stored is an offset the group never reads again, so on each partition the
//! ledger hands out offsets only up to the first batch that has not finished:
//! everything from that batch on is read again after a restart or a
//! rebalance. Reading an event again is harmless (the per-flow watermark
//! skips it); skipping one is not.
//!
//! The ledger is pure: the consumer [`push`](Ledger::push)es each batch as
//! it dispatches it, marks it [`done`](Ledger::done) once written, stores
//! what [`take_storable`](Ledger::take_storable) returns, and at the end
//! [`drain`]s what is still being written, for a bounded time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use futures::{Stream, StreamExt};

/// One batch in the ledger, in the order it was pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(u64);

/// The offsets of one partition in a batch, first and last (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    first: i64,
    last: i64,
}

#[derive(Debug)]
struct Entry {
    id: BatchId,
    /// Partitions whose offsets are not yet handed out.
    ranges: BTreeMap<i32, Range>,
    done: bool,
}

/// Batches pushed and not yet stored, oldest first.
#[derive(Debug, Default)]
pub struct Ledger {
    next: u64,
    batches: VecDeque<Entry>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Ledger::default()
    }

    /// Records a batch about to be written, from the `(partition, offset)`
    /// of its messages (in the order they were read, as Kafka delivers each
    /// partition: ascending).
    pub fn push(&mut self, messages: impl IntoIterator<Item = (i32, i64)>) -> BatchId {
        let id = BatchId(self.next);
        self.next += 1;
        let mut ranges: BTreeMap<i32, Range> = BTreeMap::new();
        for (p, o) in messages {
            ranges
                .entry(p)
                .and_modify(|r| {
                    r.first = r.first.min(o);
                    r.last = r.last.max(o);
                })
                .or_insert(Range { first: o, last: o });
        }
        self.batches.push_back(Entry {
            id,
            ranges,
            done: false,
        });
        id
    }

    /// Marks batch `id` written: its offsets may be stored once no
    /// unfinished batch comes before it on their partitions.
    pub fn done(&mut self, id: BatchId) {
        if let Some(e) = self.batches.iter_mut().find(|e| e.id == id) {
            e.done = true;
        }
    }

    /// The offsets that became safe to store, per partition the last offset
    /// of the finished batches before that partition's first unfinished
    /// batch (`store_offset` commits the one after it). Each offset is
    /// handed out once; batches fully handed out are forgotten.
    pub fn take_storable(&mut self) -> BTreeMap<i32, i64> {
        let mut out = BTreeMap::new();
        // Partitions behind an unfinished batch: nothing later on them may go out.
        let mut blocked: BTreeSet<i32> = BTreeSet::new();
        for e in &mut self.batches {
            if e.done {
                e.ranges.retain(|p, r| {
                    if blocked.contains(p) {
                        return true;
                    }
                    out.insert(*p, r.last);
                    false
                });
            } else {
                blocked.extend(e.ranges.keys().copied());
            }
        }
        self.batches.retain(|e| !(e.done && e.ranges.is_empty()));
        out
    }

    /// What is not stored yet and will be read again: per partition, the
    /// first offset of its first unfinished batch.
    pub fn unfinished(&self) -> BTreeMap<i32, i64> {
        let mut out = BTreeMap::new();
        for e in self.batches.iter().filter(|e| !e.done) {
            for (p, r) in &e.ranges {
                out.entry(*p).or_insert(r.first);
            }
        }
        out
    }

    /// Batches pushed and not yet finished.
    pub fn pending(&self) -> usize {
        self.batches.iter().filter(|e| !e.done).count()
    }
}

/// Waits for the batches still being written, for at most `within` (all
/// of them with `None`): each completion of `writes` goes to `settle`,
/// which says which batch it finished (`None`: it did not). Returns once
/// `writes` is empty or the time is up; the ledger then says what is
/// [`unfinished`](Ledger::unfinished).
pub async fn drain<S: Stream + Unpin>(
    ledger: &mut Ledger,
    writes: &mut S,
    within: Option<Duration>,
    mut settle: impl FnMut(S::Item) -> Option<BatchId>,
) {
    let deadline = within.map(|d| tokio::time::Instant::now() + d);
    loop {
        let next = match deadline {
            Some(at) => match tokio::time::timeout_at(at, writes.next()).await {
                Ok(next) => next,
                Err(_) => return,
            },
            None => writes.next().await,
        };
        let Some(item) = next else { return };
        if let Some(id) = settle(item) {
            ledger.done(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::stream::FuturesUnordered;

    use super::*;

    fn offsets(p: i32, range: std::ops::RangeInclusive<i64>) -> Vec<(i32, i64)> {
        range.map(|o| (p, o)).collect()
    }

    #[test]
    fn batches_finishing_out_of_order_store_only_up_to_the_first_unfinished() {
        let mut l = Ledger::new();
        let a = l.push(offsets(0, 0..=9));
        let b = l.push(offsets(0, 10..=19));
        let c = l.push(offsets(0, 20..=29));
        l.done(c);
        l.done(b);
        assert_eq!(l.take_storable(), BTreeMap::new(), "a is not written yet");
        assert_eq!(l.unfinished(), [(0, 0)].into());
        l.done(a);
        assert_eq!(l.take_storable(), [(0, 29)].into());
        assert_eq!(l.take_storable(), BTreeMap::new(), "handed out once");
        assert_eq!(l.pending(), 0);
        assert!(l.unfinished().is_empty());
    }

    #[test]
    fn each_partition_waits_only_for_its_own_unfinished_batches() {
        let mut l = Ledger::new();
        // a: p0 and p1; b: p1 and p2; c: p2.
        let a = l.push([(0, 5), (1, 7), (0, 6)]);
        let b = l.push([(1, 8), (2, 3)]);
        let c = l.push([(2, 4), (2, 5)]);
        l.done(b);
        l.done(c);
        // a blocks p0 and p1 (b's p1 is behind it); p2 is b's and c's alone.
        assert_eq!(l.take_storable(), [(2, 5)].into());
        assert_eq!(l.unfinished(), [(0, 5), (1, 7)].into());
        l.done(a);
        assert_eq!(l.take_storable(), [(0, 6), (1, 8)].into());
        assert!(l.unfinished().is_empty());
    }

    #[test]
    fn a_batch_that_never_finishes_holds_its_partitions_for_ever() {
        let mut l = Ledger::new();
        let a = l.push(offsets(0, 0..=4));
        let _never = l.push([(0, 5), (1, 0)]);
        l.done(a);
        assert_eq!(l.take_storable(), [(0, 4)].into());
        for i in 0..100 {
            let later = l.push([(0, 6 + i), (1, 1 + i), (2, i)]);
            l.done(later);
            let stored = l.take_storable();
            assert!(!stored.contains_key(&0) && !stored.contains_key(&1), "{stored:?}");
        }
        // At the end, what is left is read again from where it began.
        assert_eq!(l.unfinished(), [(0, 5), (1, 0)].into());
        assert_eq!(l.pending(), 1);
    }

    /// A crash at failpoint `apply-crash-before-store` (the write reached
    /// the destination, its offsets were not stored): the batch is never
    /// marked done, so the offsets stored before the crash, which a new
    /// consumer reads on from, stop before it and it is read and written
    /// again; a later batch that did finish does not carry the commit past it.
    #[test]
    fn a_crash_between_write_and_store_reads_the_written_batch_again() {
        let mut l = Ledger::new();
        let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
        let mut store = |l: &mut Ledger| {
            for (p, o) in l.take_storable() {
                // `store_offset(o)` commits o + 1: where the group reads on.
                committed.insert(p, o + 1);
            }
        };
        let first = l.push(offsets(0, 0..=9));
        l.done(first);
        store(&mut l);
        // Written on the destination; the process dies at the failpoint.
        let _crashed = l.push([(0, 10), (1, 0), (0, 11)]);
        let after = l.push([(0, 12), (1, 1)]);
        l.done(after);
        store(&mut l);
        let restart_at = committed;
        assert_eq!(
            restart_at.get(&0),
            Some(&10),
            "partition 0 reads the crashed batch again"
        );
        assert_eq!(restart_at.get(&1), None, "partition 1 reads again from its start");
        assert_eq!(l.unfinished(), [(0, 10), (1, 0)].into());
    }

    /// Completions of write tasks: batch `id` finishes (`true`) or gives up
    /// (`false`) after `secs`.
    fn writes(plan: &[(BatchId, u64, bool)]) -> FuturesUnordered<impl std::future::Future<Output = (BatchId, bool)>> {
        plan.iter()
            .map(|&(id, secs, ok)| async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                (id, ok)
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_the_writes_in_flight_until_its_deadline() {
        let mut l = Ledger::new();
        let quick = l.push(offsets(0, 0..=1));
        let slow = l.push(offsets(0, 2..=3));
        let hung = l.push(offsets(1, 0..=3));
        let gave_up = l.push(offsets(2, 0..=3));
        let mut w = writes(&[
            (hung, 3600, true),
            (slow, 8, true),
            (quick, 1, true),
            (gave_up, 2, false),
        ]);
        let start = tokio::time::Instant::now();
        drain(&mut l, &mut w, Some(Duration::from_secs(10)), |(id, ok)| {
            ok.then_some(id)
        })
        .await;
        assert_eq!(start.elapsed(), Duration::from_secs(10), "bounded by the deadline");
        assert_eq!(l.take_storable(), [(0, 3)].into());
        assert_eq!(l.unfinished(), [(1, 0), (2, 0)].into());
        assert_eq!(w.len(), 1, "the hung write is left to the caller");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_returns_as_soon_as_every_write_is_done() {
        let mut l = Ledger::new();
        let a = l.push(offsets(0, 0..=1));
        let b = l.push(offsets(1, 0..=1));
        let mut w = writes(&[(a, 2, true), (b, 1, true)]);
        let start = tokio::time::Instant::now();
        drain(&mut l, &mut w, Some(Duration::from_secs(10)), |(id, ok)| {
            ok.then_some(id)
        })
        .await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(l.take_storable(), [(0, 1), (1, 1)].into());
        assert_eq!(l.pending(), 0);
    }
}
