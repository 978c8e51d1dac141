//! The order of a flow's events: (source epoch, source time).
//!
//! Events of one flow are applied in the order of the source's clock, but a
//! failover to a replica, a source restart or a clock step can make fresh
//! changes carry an *older* source time than what was already applied. The
//! epoch counts those changes of source (SPEC section 2): it moves forward
//! when capture finds a different server (`run_id`) or the source clock
//! behind what it last read, and a newer epoch always wins, whatever the
//! times say.
//!
//! # On the destination
//! The per-flow watermark stores an order as text ([`Order::encode`]):
//! `"{time}"` in epoch 0 (so watermarks written before epochs existed read
//! as epoch 0) and `"{epoch}:{time}"` after, both decimal. The apply script
//! compares epochs as numbers (they stay far below 2^53) and times exactly as
//! decimal text (microsecond times need all 64 bits of precision).

use std::fmt;

/// Where an event stands in its flow's history. Ordered by epoch, then time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Order {
    /// Source epoch: moves forward on every change of source or clock step back.
    pub epoch: u64,
    /// Source clock (`TIME`), microseconds since the Unix epoch.
    pub time_us: i64,
}

impl Order {
    /// An order in `epoch` at `time_us`.
    pub fn new(epoch: u64, time_us: i64) -> Self {
        Order { epoch, time_us }
    }

    /// The watermark text (see the module docs).
    pub fn encode(&self) -> String {
        if self.epoch == 0 {
            self.time_us.to_string()
        } else {
            format!("{}:{}", self.epoch, self.time_us)
        }
    }

    /// Parses watermark text; `None` when it is not one.
    pub fn parse(text: &[u8]) -> Option<Order> {
        let text = std::str::from_utf8(text).ok()?;
        match text.split_once(':') {
            Some((e, t)) => Some(Order::new(e.parse().ok()?, t.parse().ok()?)),
            None => Some(Order::new(0, text.parse().ok()?)),
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {} at {} µs", self.epoch, self.time_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_epoch_wins_whatever_the_times() {
        let before_failover = Order::new(0, 1_700_000_000_000_000);
        let an_hour_behind = Order::new(1, 1_700_000_000_000_000 - 3_600_000_000);
        assert!(an_hour_behind > before_failover);
        assert!(Order::new(1, 5) < Order::new(1, 6));
        assert!(Order::new(2, i64::MIN) > Order::new(1, i64::MAX));
    }

    #[test]
    fn watermark_text_round_trips_and_reads_epochless_text_as_epoch_zero() {
        for o in [
            Order::new(0, 1_764_590_400_123_456),
            Order::new(7, 42),
            Order::new(u64::from(u32::MAX), -1),
        ] {
            assert_eq!(Order::parse(o.encode().as_bytes()), Some(o), "{}", o.encode());
        }
        assert_eq!(Order::new(0, 42).encode(), "42");
        assert_eq!(Order::new(3, 42).encode(), "3:42");
        assert_eq!(
            Order::parse(b"1764590400123456"),
            Some(Order::new(0, 1_764_590_400_123_456))
        );
        assert_eq!(Order::parse(b"x:1"), None);
        assert_eq!(Order::parse(b""), None);
        assert_eq!(Order::parse(b"\xff"), None);
    }
}
