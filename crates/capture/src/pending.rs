//! The bounded set of flows waiting to be read.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use redmirror_telemetry::metrics as m;
use tokio::sync::Notify;

/// Changed flows waiting to be read, each once however many notifications
/// arrive (coalescing), in first-change order. Bounded: past `max` distinct
/// flows a new flow is refused and the caller reports a gap.
///
/// Progress: every accepted change gets a sequence number, and it stays
/// *outstanding* while its flow waits here and while the flow's event is
/// in flight to the broker, until the publisher calls [`Pending::done`].
/// [`Pending::progress`] tells how far capture has settled: every change it
/// received up to that number is in Kafka. The reconciler's barrier waits on
/// it, so a pass right after a broker outage does not count the events still
/// queued in capture as drift.
pub struct Pending {
    inner: Mutex<Inner>,
    notify: Notify,
    max: usize,
}

struct Inner {
    /// Waiting flows: their cause and sequence number.
    causes: HashMap<Bytes, (&'static str, u64)>,
    order: VecDeque<Bytes>,
    /// The last sequence number given out.
    received: u64,
    /// Outstanding sequence numbers (waiting or in flight), with counts.
    outstanding: BTreeMap<u64, u32>,
}

impl Inner {
    fn hold(&mut self, seq: u64) {
        *self.outstanding.entry(seq).or_default() += 1;
    }

    fn release(&mut self, seq: u64) {
        if let std::collections::btree_map::Entry::Occupied(mut e) = self.outstanding.entry(seq) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// A flow taken for reading: its id, the notification that queued it, and
/// the sequence number to hand back to [`Pending::done`] or
/// [`Pending::requeue`].
pub type Taken = (Bytes, &'static str, u64);

/// How far capture has got (see [`Pending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Changes received so far (the last sequence number given out).
    pub received: u64,
    /// Every change up to this one is published and acknowledged.
    pub settled: u64,
}

/// Result of [`Pending::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Queued.
    New,
    /// Already queued: merged.
    Coalesced,
    /// Full: dropped (a gap).
    Full,
}

/// Interns the cause (a notification name) so it costs no allocation.
pub fn cause_name(event: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "hset",
        "hdel",
        "hincrby",
        "hincrbyfloat",
        "del",
        "expired",
        "evicted",
        "rename_from",
        "rename_to",
        "restore",
        "hexpired",
        "hexpire",
        "hpersist",
        "expire",
        "persist",
        "set",
        "copy_to",
        "move_to",
        "move_from",
        "new",
    ];
    KNOWN.iter().find(|k| **k == event).copied().unwrap_or("other")
}

impl Pending {
    /// An empty set holding at most `max` flows.
    pub fn new(max: usize) -> Self {
        Pending {
            inner: Mutex::new(Inner {
                causes: HashMap::new(),
                order: VecDeque::new(),
                received: 0,
                outstanding: BTreeMap::new(),
            }),
            notify: Notify::new(),
            max,
        }
    }

    /// Adds a changed flow.
    pub fn add(&self, id: Bytes, cause: &'static str) -> Added {
        let mut g = self.inner.lock().expect("pending lock");
        if g.causes.contains_key(&id) {
            return Added::Coalesced;
        }
        if g.order.len() >= self.max {
            return Added::Full;
        }
        g.received += 1;
        let seq = g.received;
        g.hold(seq);
        g.causes.insert(id.clone(), (cause, seq));
        g.order.push_back(id);
        metrics::gauge!(m::CAPTURE_PENDING).set(g.order.len() as f64);
        drop(g);
        self.notify.notify_one();
        Added::New
    }

    /// Puts back a flow whose event could not be published, with the
    /// sequence number it was taken with (so progress does not pass it).
    /// Never refused: at most the events in flight come back this way.
    pub fn requeue(&self, id: Bytes, cause: &'static str, seq: u64) {
        let mut g = self.inner.lock().expect("pending lock");
        if let Some(entry) = g.causes.get_mut(&id) {
            // Changed again meanwhile: one read covers both; keep the older number.
            let newer = entry.1.max(seq);
            entry.1 = entry.1.min(seq);
            g.release(newer);
            return;
        }
        g.causes.insert(id.clone(), (cause, seq));
        g.order.push_back(id);
        metrics::gauge!(m::CAPTURE_PENDING).set(g.order.len() as f64);
        drop(g);
        self.notify.notify_one();
    }

    /// The change with this sequence number is settled: its event was
    /// acknowledged by the broker, or it needed none.
    pub fn done(&self, seq: u64) {
        self.inner.lock().expect("pending lock").release(seq);
    }

    /// Changes received and settled so far.
    pub fn progress(&self) -> Progress {
        let g = self.inner.lock().expect("pending lock");
        Progress {
            received: g.received,
            settled: g.outstanding.keys().next().map_or(g.received, |first| first - 1),
        }
    }

    /// Takes up to `n` flows (oldest first), waiting until at least one is there.
    pub async fn take(&self, n: usize) -> Vec<Taken> {
        loop {
            let batch = self.try_take(n);
            if !batch.is_empty() {
                return batch;
            }
            self.notify.notified().await;
        }
    }

    /// Takes up to `n` flows without waiting. Their sequence numbers stay
    /// outstanding until [`Pending::done`] or [`Pending::requeue`].
    pub fn try_take(&self, n: usize) -> Vec<Taken> {
        let mut g = self.inner.lock().expect("pending lock");
        let k = n.min(g.order.len());
        let mut out = Vec::with_capacity(k);
        for _ in 0..k {
            let id = g.order.pop_front().expect("len checked");
            let (cause, seq) = g.causes.remove(&id).expect("every queued flow has an entry");
            out.push((id, cause, seq));
        }
        metrics::gauge!(m::CAPTURE_PENDING).set(g.order.len() as f64);
        out
    }

    /// Number of flows waiting.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("pending lock").order.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_bounds_and_keeps_order() {
        let p = Pending::new(2);
        assert_eq!(p.add(Bytes::from_static(b"a"), "hset"), Added::New);
        assert_eq!(p.add(Bytes::from_static(b"a"), "hdel"), Added::Coalesced);
        assert_eq!(p.add(Bytes::from_static(b"b"), "del"), Added::New);
        assert_eq!(p.add(Bytes::from_static(b"c"), "del"), Added::Full);
        let t = p.try_take(10);
        assert_eq!(
            t,
            vec![
                (Bytes::from_static(b"a"), "hset", 1),
                (Bytes::from_static(b"b"), "del", 2)
            ]
        );
        assert!(p.is_empty());
        assert_eq!(p.add(Bytes::from_static(b"a"), "hset"), Added::New);
    }

    fn progress(p: &Pending) -> (u64, u64) {
        let g = p.progress();
        (g.received, g.settled)
    }

    #[test]
    fn progress_settles_only_when_every_earlier_change_is_done() {
        let p = Pending::new(10);
        assert_eq!(progress(&p), (0, 0));
        for id in [b"a", b"b", b"c"] {
            p.add(Bytes::copy_from_slice(id), "hset");
        }
        assert_eq!(progress(&p), (3, 0), "waiting is outstanding");
        let t = p.try_take(2);
        assert_eq!(progress(&p), (3, 0), "in flight is outstanding");
        p.done(t[1].2);
        assert_eq!(progress(&p), (3, 0), "a is still in flight");
        p.done(t[0].2);
        assert_eq!(progress(&p), (3, 2), "c still waits");
        let c = p.try_take(10);
        p.done(c[0].2);
        assert_eq!(progress(&p), (3, 3));
    }

    #[test]
    fn a_requeued_flow_keeps_its_place_in_progress() {
        let p = Pending::new(1);
        p.add(Bytes::from_static(b"a"), "hset");
        let t = p.try_take(1);
        // Changed again while in flight: a new entry with a newer number.
        assert_eq!(p.add(Bytes::from_static(b"a"), "hdel"), Added::New);
        // The publish failed: back it goes, past the bound, keeping number 1.
        p.add(Bytes::from_static(b"x"), "hset");
        p.requeue(t[0].0.clone(), t[0].1, t[0].2);
        assert_eq!(progress(&p), (2, 0));
        let again = p.try_take(10);
        assert_eq!(
            again,
            vec![(Bytes::from_static(b"a"), "hdel", 1)],
            "one read, older number"
        );
        p.done(1);
        assert_eq!(progress(&p), (2, 2), "the newer number was released with the merge");

        // Requeued while not pending: queued again, even when the set is full.
        let q = Pending::new(1);
        q.add(Bytes::from_static(b"a"), "hset");
        let t = q.try_take(1);
        q.add(Bytes::from_static(b"b"), "hset");
        q.requeue(t[0].0.clone(), t[0].1, t[0].2);
        assert_eq!(q.len(), 2);
        assert_eq!(progress(&q), (2, 0));
    }
}
