//! The bounded set of flows waiting to be read.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use redmirror_telemetry::metrics as m;
use tokio::sync::Notify;

/// Changed flows waiting to be read, each once however many notifications
/// arrive (coalescing), in first-change order. Bounded: past `max` distinct
/// flows a new flow is refused (dropped). An *overflow episode* runs from
/// the first drop until the set has room again (a take); it ends with one
/// [`Pending::overflowed`] carrying how many were dropped, reported as one
/// gap after every drop it covers, however many notifications came and were
/// dropped or coalesced meanwhile.
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
    /// Woken when an overflow episode ended.
    overflow: Notify,
    max: usize,
    /// `redmirror_capture_pending_flows`, looked up once (not per change).
    gauge: metrics::Gauge,
}

/// Memory: this set is what grows when the broker falls behind, so a
/// waiting flow costs one allocation (its id, shared by the map and the
/// queue) and two small slots: about 130 bytes for a 23-byte id, against
/// about 195 with a `Bytes` id in each, the cause as a `&str` and counted
/// sequence numbers. An emptied set gives its tables back.
struct Inner {
    /// Waiting flows.
    causes: HashMap<Arc<[u8]>, Waiting>,
    order: VecDeque<Arc<[u8]>>,
    /// The last sequence number given out.
    received: u64,
    /// Outstanding sequence numbers (waiting or in flight). Each number is
    /// given out once, so a set is enough.
    outstanding: BTreeSet<u64>,
    /// Flows dropped in the overflow episode under way (0: none).
    dropping: u64,
    /// Flows dropped in episodes that ended and were not reported yet.
    dropped: u64,
}

impl Inner {
    fn hold(&mut self, seq: u64) {
        self.outstanding.insert(seq);
    }

    fn release(&mut self, seq: u64) {
        self.outstanding.remove(&seq);
    }
}

/// A waiting flow's entry: 16 bytes with its one-byte cause.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    seq: u64,
    cause: Cause,
}

/// A flow taken for reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The flow id.
    pub id: Bytes,
    /// The notification that queued it.
    pub cause: Cause,
    /// The sequence number to hand back to [`Pending::done`] or
    /// [`Pending::requeue`].
    pub seq: u64,
}

/// How far capture has got (see [`Pending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Changes received so far (the last sequence number given out).
    pub received: u64,
    /// Every change up to this one is published and acknowledged.
    pub settled: u64,
}

/// Capacity past which an emptied set drops its tables (a burst's worth).
const SHRINK_ABOVE: usize = 4096;

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

/// Declares [`Cause`] from its variants and their notification names.
macro_rules! causes {
    ($($variant:ident => $name:literal,)*) => {
        /// The keyevent notification that queued a flow: one byte in the
        /// pending set, its name in the event's `cause`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub enum Cause {
            $(#[doc = concat!("`", $name, "`")] $variant,)*
            /// Any other notification (`"other"`).
            Other,
        }

        impl Cause {
            /// Every notification with a name of its own.
            pub const NOTIFICATIONS: &[Cause] = &[$(Cause::$variant,)*];

            /// The cause of a keyevent notification named `event`.
            pub fn of(event: &str) -> Cause {
                match event {
                    $($name => Cause::$variant,)*
                    _ => Cause::Other,
                }
            }

            /// The name written in the event's `cause` field.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Cause::$variant => $name,)*
                    Cause::Other => "other",
                }
            }
        }
    };
}

causes! {
    Hset => "hset",
    Hdel => "hdel",
    Hincrby => "hincrby",
    Hincrbyfloat => "hincrbyfloat",
    Del => "del",
    Expired => "expired",
    Evicted => "evicted",
    RenameFrom => "rename_from",
    RenameTo => "rename_to",
    Restore => "restore",
    Hexpired => "hexpired",
    Hexpire => "hexpire",
    Hpersist => "hpersist",
    Expire => "expire",
    Persist => "persist",
    Set => "set",
    CopyTo => "copy_to",
    MoveTo => "move_to",
    MoveFrom => "move_from",
    New => "new",
    Sortstore => "sortstore",
    Sunionstore => "sunionstore",
    Sinterstore => "sinterstore",
    Sdiffstore => "sdiffstore",
    Zunionstore => "zunionstore",
    Zinterstore => "zinterstore",
    Zdiffstore => "zdiffstore",
    Zrangestore => "zrangestore",
    Georadiusstore => "georadiusstore",
    Geosearchstore => "geosearchstore",
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Pending {
    /// An empty set holding at most `max` flows.
    pub fn new(max: usize) -> Self {
        Pending {
            inner: Mutex::new(Inner {
                causes: HashMap::new(),
                order: VecDeque::new(),
                received: 0,
                outstanding: BTreeSet::new(),
                dropping: 0,
                dropped: 0,
            }),
            notify: Notify::new(),
            overflow: Notify::new(),
            max,
            gauge: metrics::gauge!(m::CAPTURE_PENDING),
        }
    }

    /// Adds a changed flow (its id is copied only when it is new here).
    pub fn add(&self, id: &[u8], cause: Cause) -> Added {
        let mut g = self.inner.lock().expect("pending lock");
        if g.causes.contains_key(id) {
            return Added::Coalesced;
        }
        if g.order.len() >= self.max {
            g.dropping += 1;
            return Added::Full;
        }
        g.received += 1;
        let seq = g.received;
        g.hold(seq);
        let id: Arc<[u8]> = Arc::from(id);
        g.causes.insert(id.clone(), Waiting { seq, cause });
        g.order.push_back(id);
        self.gauge.set(g.order.len() as f64);
        drop(g);
        self.notify.notify_one();
        Added::New
    }

    /// Puts back a flow whose event could not be published, with the
    /// sequence number it was taken with (so progress does not pass it).
    /// Never refused: at most the events in flight come back this way.
    pub fn requeue(&self, id: Bytes, cause: Cause, seq: u64) {
        let mut g = self.inner.lock().expect("pending lock");
        if let Some(entry) = g.causes.get_mut(&id[..]) {
            // Changed again meanwhile: one read covers both; keep the older number.
            let newer = entry.seq.max(seq);
            entry.seq = entry.seq.min(seq);
            g.release(newer);
            return;
        }
        let id: Arc<[u8]> = Arc::from(&id[..]);
        g.causes.insert(id.clone(), Waiting { seq, cause });
        g.order.push_back(id);
        self.gauge.set(g.order.len() as f64);
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
            settled: g.outstanding.first().map_or(g.received, |first| first - 1),
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
            let w = g.causes.remove(&id).expect("every queued flow has an entry");
            out.push(Taken {
                id: Bytes::copy_from_slice(&id),
                cause: w.cause,
                seq: w.seq,
            });
        }
        let ended = g.dropping > 0 && g.order.len() < self.max;
        if ended {
            // Room again: the episode is over, after every drop it covers.
            g.dropped += std::mem::take(&mut g.dropping);
        }
        if g.order.is_empty() && g.order.capacity() > SHRINK_ABOVE {
            // A burst is over: do not keep its tables for good.
            g.order = VecDeque::new();
            g.causes = HashMap::new();
        }
        self.gauge.set(g.order.len() as f64);
        drop(g);
        if ended {
            self.overflow.notify_one();
        }
        out
    }

    /// Waits until an overflow episode ended; how many flows it (or the
    /// episodes that ended since the last call) dropped.
    pub async fn overflowed(&self) -> u64 {
        loop {
            if let Some(n) = self.take_overflowed() {
                return n;
            }
            self.overflow.notified().await;
        }
    }

    /// Flows dropped by the episodes that ended since the last call, if any.
    pub fn take_overflowed(&self) -> Option<u64> {
        let mut g = self.inner.lock().expect("pending lock");
        Some(std::mem::take(&mut g.dropped)).filter(|n| *n > 0)
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

    fn taken(id: &'static [u8], cause: Cause, seq: u64) -> Taken {
        Taken {
            id: Bytes::from_static(id),
            cause,
            seq,
        }
    }

    #[test]
    fn coalesces_bounds_and_keeps_order() {
        let p = Pending::new(2);
        assert_eq!(p.add(b"a", Cause::of("hset")), Added::New);
        assert_eq!(p.add(b"a", Cause::of("hdel")), Added::Coalesced);
        assert_eq!(p.add(b"b", Cause::of("del")), Added::New);
        assert_eq!(p.add(b"c", Cause::of("del")), Added::Full);
        let t = p.try_take(10);
        assert_eq!(
            t,
            vec![taken(b"a", Cause::of("hset"), 1), taken(b"b", Cause::of("del"), 2)]
        );
        assert!(p.is_empty());
        assert_eq!(p.add(b"a", Cause::of("hset")), Added::New);
    }

    #[test]
    fn an_overflow_episode_is_reported_once_when_it_ends_after_its_drops() {
        let p = Pending::new(2);
        p.add(b"a", Cause::Hset);
        p.add(b"b", Cause::Hset);
        // Full: new flows are dropped, waiting ones coalesce, in any mix.
        for i in 0..100u32 {
            assert_eq!(p.add(format!("new-{i}").as_bytes(), Cause::Hset), Added::Full);
            assert_eq!(p.add(b"a", Cause::Hset), Added::Coalesced);
        }
        assert_eq!(p.take_overflowed(), None, "not over while the set is full");
        assert_eq!(p.try_take(1).len(), 1);
        assert_eq!(p.take_overflowed(), Some(100), "one report, covering every drop");
        assert_eq!(p.take_overflowed(), None);
        assert_eq!(p.add(b"c", Cause::Hset), Added::New);
        assert_eq!(p.try_take(10).len(), 2);
        assert_eq!(p.take_overflowed(), None, "no drop, no episode");
        // A second episode is a second report.
        p.add(b"d", Cause::Hset);
        p.add(b"e", Cause::Hset);
        assert_eq!(p.add(b"f", Cause::Hset), Added::Full);
        p.try_take(1);
        assert_eq!(p.take_overflowed(), Some(1));
    }

    #[test]
    fn causes_survive_the_one_byte_store() {
        for c in Cause::NOTIFICATIONS.iter().copied().chain([Cause::Other]) {
            assert_eq!(Cause::of(c.as_str()), c);
        }
        assert_eq!(Cause::of("lset"), Cause::Other);
        assert_eq!(std::mem::size_of::<Cause>(), 1);
        let p = Pending::new(10);
        p.add(b"a", Cause::of("rename_to"));
        p.add(b"b", Cause::of("zadd"));
        p.add(b"c", Cause::of("sunionstore"));
        let t = p.try_take(10);
        assert_eq!(
            (t[0].cause, t[1].cause, t[2].cause),
            (Cause::RenameTo, Cause::Other, Cause::Sunionstore)
        );
    }

    #[test]
    fn an_emptied_set_gives_back_a_burst_s_tables() {
        let p = Pending::new(10_000);
        for i in 0..5_000 {
            p.add(format!("f{i}").as_bytes(), Cause::of("hset"));
        }
        assert_eq!(p.try_take(4_999).len(), 4_999);
        assert!(p.inner.lock().unwrap().order.capacity() >= 5_000, "not empty yet: kept");
        assert_eq!(p.try_take(10).len(), 1);
        {
            let g = p.inner.lock().unwrap();
            assert_eq!((g.order.capacity(), g.causes.capacity()), (0, 0));
        }
        assert_eq!(p.add(b"f1", Cause::of("hset")), Added::New);
        assert_eq!(p.try_take(10)[0].id, Bytes::from_static(b"f1"));
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
            p.add(id, Cause::of("hset"));
        }
        assert_eq!(progress(&p), (3, 0), "waiting is outstanding");
        let t = p.try_take(2);
        assert_eq!(progress(&p), (3, 0), "in flight is outstanding");
        p.done(t[1].seq);
        assert_eq!(progress(&p), (3, 0), "a is still in flight");
        p.done(t[0].seq);
        assert_eq!(progress(&p), (3, 2), "c still waits");
        let c = p.try_take(10);
        p.done(c[0].seq);
        assert_eq!(progress(&p), (3, 3));
    }

    #[test]
    fn a_requeued_flow_keeps_its_place_in_progress() {
        let p = Pending::new(1);
        p.add(b"a", Cause::of("hset"));
        let t = p.try_take(1);
        // Changed again while in flight: a new entry with a newer number.
        assert_eq!(p.add(b"a", Cause::of("hdel")), Added::New);
        // The publish failed: back it goes, past the bound, keeping number 1.
        p.add(b"x", Cause::of("hset"));
        p.requeue(t[0].id.clone(), t[0].cause, t[0].seq);
        assert_eq!(progress(&p), (2, 0));
        let again = p.try_take(10);
        assert_eq!(again, vec![taken(b"a", Cause::of("hdel"), 1)], "one read, older number");
        p.done(1);
        assert_eq!(progress(&p), (2, 2), "the newer number was released with the merge");

        // Requeued while not pending: queued again, even when the set is full.
        let q = Pending::new(1);
        q.add(b"a", Cause::of("hset"));
        let t = q.try_take(1);
        q.add(b"b", Cause::of("hset"));
        q.requeue(t[0].id.clone(), t[0].cause, t[0].seq);
        assert_eq!(q.len(), 2);
        assert_eq!(progress(&q), (2, 0));
    }
}
