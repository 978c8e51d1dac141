//! The destination write limit (`REDMIRROR_APPLY_MAX_RATE`, `redmirror
//! replay --max-rate`, SPEC section 9): at most `rate` events per second
//! through one [`crate::ApplyEngine`] and its clones.
//!
//! A small token bucket rather than a crate such as `governor`: a batch of
//! up to `REDMIRROR_APPLY_BATCH` events is larger than the bucket when the
//! rate is low, so the engine writes it in slices of at most
//! [`Throttle::burst`] events, each waiting its turn, and the wait follows
//! tokio's clock (so it is tested with `tokio::time::pause`). The schedule
//! is one instant behind a lock: a slice of `n` events starts no earlier
//! than the previous one's start plus its `n / rate` seconds, so over any
//! window of `w` seconds at most `rate × w + burst` events are written.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How long after the last wait [`Throttle::status`] still says `throttled`.
const THROTTLED_FOR: Duration = Duration::from_secs(1);

pub use redmirror_api::WriteLimit;

/// A shared write limit; clones share one schedule.
#[derive(Debug, Clone)]
pub struct Throttle {
    rate: u64,
    state: Arc<Mutex<Schedule>>,
}

#[derive(Debug)]
struct Schedule {
    /// The earliest start of the next slice.
    next: Instant,
    /// When the latest wait ended.
    last_wait: Option<Instant>,
}

impl Throttle {
    /// At most `rate` events per second; 0 is no limit.
    pub fn new(rate: u64) -> Self {
        Throttle {
            rate,
            state: Arc::new(Mutex::new(Schedule {
                next: Instant::now(),
                last_wait: None,
            })),
        }
    }

    /// No limit.
    pub fn unlimited() -> Self {
        Throttle::new(0)
    }

    /// The configured rate (0 = no limit).
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The largest slice written at once: a tenth of a second's worth, at
    /// least one event (`usize::MAX` without a limit).
    pub fn burst(&self) -> usize {
        if self.rate == 0 {
            usize::MAX
        } else {
            usize::try_from(self.rate / 10).unwrap_or(usize::MAX).max(1)
        }
    }

    /// Waits until `n` events (at most [`Throttle::burst`]) may be written.
    pub async fn acquire(&self, n: usize) {
        if self.rate == 0 || n == 0 {
            return;
        }
        let start = {
            let mut s = self.state.lock().expect("throttle lock");
            let now = Instant::now();
            let start = s.next.max(now);
            s.next = start + Duration::from_secs_f64(n as f64 / self.rate as f64);
            if start > now {
                s.last_wait = Some(start);
            }
            start
        };
        tokio::time::sleep_until(start).await;
    }

    /// The limit and whether it held writes back within the last second.
    pub fn status(&self) -> WriteLimit {
        let s = self.state.lock().expect("throttle lock");
        let now = Instant::now();
        WriteLimit {
            apply_max_rate: self.rate,
            throttled: self.rate > 0 && (s.next > now || s.last_wait.is_some_and(|w| w + THROTTLED_FOR > now)),
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::unlimited()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn writes_at_most_rate_per_second_plus_one_burst() {
        let t = Throttle::new(50);
        assert_eq!(t.burst(), 5);
        assert!(!t.status().throttled);
        let begin = Instant::now();
        let mut written = 0usize;
        let mut per_second = std::collections::BTreeMap::<u64, usize>::new();
        while written < 500 {
            t.acquire(t.burst()).await;
            let second = (Instant::now() - begin).as_secs();
            *per_second.entry(second).or_default() += t.burst();
            written += t.burst();
        }
        // 500 events at 50/s take about 10 s (the first slice goes at once).
        let took = Instant::now() - begin;
        assert!(took >= Duration::from_millis(9_900), "{took:?}");
        assert!(per_second.values().all(|&n| n <= 50), "{per_second:?}");
        assert!(t.status().throttled);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!t.status().throttled);
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_never_waits() {
        let t = Throttle::unlimited();
        assert_eq!(t.burst(), usize::MAX);
        let begin = Instant::now();
        for _ in 0..1000 {
            t.acquire(512).await;
        }
        assert_eq!(Instant::now(), begin);
        assert_eq!(
            t.status(),
            WriteLimit {
                apply_max_rate: 0,
                throttled: false
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_one_schedule() {
        let a = Throttle::new(10);
        let b = a.clone();
        let begin = Instant::now();
        for _ in 0..10 {
            a.acquire(1).await;
            b.acquire(1).await;
        }
        // 20 events at 10/s: the last starts 1.9 s after the first.
        assert!(Instant::now() - begin >= Duration::from_millis(1_900));
    }
}
