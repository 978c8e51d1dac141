//! Internal events: each notable thing that happens inside redmirror (a
//! capture gap, a skipped flow, a dead letter, a full producer queue) is a
//! struct whose `emit` logs it and counts it from the same fields, so the
//! log line and the metric cannot say different things. Events on hot paths
//! log through [`Every`] or a once-per-flow set, and count every time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Something that happened, logged and counted by [`InternalEvent::emit`].
pub trait InternalEvent {
    /// Logs and counts the event.
    fn emit(self);
}

/// At most one log line per `period`: `ready()` says whether this one may
/// be written. `const`, so a hot path can keep one in a `static`.
#[derive(Debug)]
pub struct Every {
    period: Duration,
    last: Mutex<Option<Instant>>,
}

impl Every {
    /// One line per `period`.
    pub const fn new(period: Duration) -> Self {
        Every {
            period,
            last: Mutex::new(None),
        }
    }

    /// True when the last `true` was at least `period` ago (or never).
    pub fn ready(&self) -> bool {
        let mut last = self.last.lock().expect("rate limit lock");
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < self.period => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lets_one_line_through_per_period() {
        let e = Every::new(Duration::from_millis(50));
        assert!(e.ready());
        assert!(!e.ready());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !e.ready() {
            assert!(Instant::now() < deadline, "the period never ended");
            std::thread::yield_now();
        }
        assert!(!e.ready());
    }
}
