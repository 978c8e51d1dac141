//! The one retry delay sequence: every retry loop in redmirror (start-up
//! waits, source reads, destination writes, resubscribing) backs off the
//! same way, doubling from a first delay up to a cap, so an operator reading
//! "retrying with backoff" in a log knows what it means everywhere.
//!
//! It only computes delays; the caller sleeps (and decides what cancels the
//! sleep), so this stays free of I/O and runtime.

use std::time::Duration;

/// Doubling delays from `first` to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

/// The first delay of [`Backoff::default`].
pub const FIRST: Duration = Duration::from_millis(50);
/// The longest delay of [`Backoff::default`].
pub const MAX: Duration = Duration::from_secs(5);

impl Default for Backoff {
    /// 50 ms, 100 ms, ... up to 5 s.
    fn default() -> Self {
        Backoff::new(FIRST, MAX)
    }
}

impl Backoff {
    /// Delays doubling from `first` up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The delay to wait now; the one after it is twice as long (at most `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Starts again from the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset_starts_again() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let ms: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        let mut d = Backoff::default();
        assert_eq!(d.next_delay(), FIRST);
        assert_eq!((0..20).map(|_| d.next_delay()).max(), Some(MAX));
    }
}
