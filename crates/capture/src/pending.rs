//! The bounded set of flows waiting to be read.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use redmirror_telemetry::metrics as m;
use tokio::sync::Notify;

/// Changed flows waiting to be read, each once however many notifications
/// arrive (coalescing), in first-change order. Bounded: past `max` distinct
/// flows a new flow is refused and the caller reports a gap.
pub struct Pending {
    inner: Mutex<Inner>,
    notify: Notify,
    max: usize,
}

struct Inner {
    causes: HashMap<Bytes, &'static str>,
    order: VecDeque<Bytes>,
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
        g.causes.insert(id.clone(), cause);
        g.order.push_back(id);
        metrics::gauge!(m::CAPTURE_PENDING).set(g.order.len() as f64);
        drop(g);
        self.notify.notify_one();
        Added::New
    }

    /// Takes up to `n` flows (oldest first), waiting until at least one is there.
    pub async fn take(&self, n: usize) -> Vec<(Bytes, &'static str)> {
        loop {
            let batch = self.try_take(n);
            if !batch.is_empty() {
                return batch;
            }
            self.notify.notified().await;
        }
    }

    /// Takes up to `n` flows without waiting.
    pub fn try_take(&self, n: usize) -> Vec<(Bytes, &'static str)> {
        let mut g = self.inner.lock().expect("pending lock");
        let k = n.min(g.order.len());
        let mut out = Vec::with_capacity(k);
        for _ in 0..k {
            let id = g.order.pop_front().expect("len checked");
            let cause = g.causes.remove(&id).unwrap_or("other");
            out.push((id, cause));
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
            vec![(Bytes::from_static(b"a"), "hset"), (Bytes::from_static(b"b"), "del")]
        );
        assert!(p.is_empty());
        assert_eq!(p.add(Bytes::from_static(b"a"), "hset"), Added::New);
    }
}
