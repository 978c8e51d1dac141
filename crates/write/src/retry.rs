//! Retrying a destination write that failed: with backoff, logged, and
//! nothing skipped. Live apply retries until the write lands or the
//! process stops; replay gives up after a number of attempts and says so.

use std::future::Future;

use redmirror_core::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use crate::Transient;

/// How a retried write ended.
#[derive(Debug)]
pub enum Retried<T> {
    /// It landed.
    Written(T),
    /// `stop` fired while it waited to try again.
    Stopped,
    /// It failed as many times as it was allowed to; the last error.
    GaveUp(Transient),
}

/// Runs `write` until it succeeds, waiting [`Backoff::default`] between
/// attempts; each failure is logged (with `events`, the batch's size) and
/// shown to `failed` (readiness, a retry counter) before the wait. Ends
/// early when `stop` fires during a wait, or after `attempts` failures
/// when given.
pub async fn until_written<T, F, Fut>(
    events: usize,
    stop: &CancellationToken,
    attempts: Option<u32>,
    mut failed: impl FnMut(&Transient),
    mut write: F,
) -> Retried<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Transient>>,
{
    let mut backoff = Backoff::default();
    let mut failures = 0u32;
    loop {
        match write().await {
            Ok(v) => return Retried::Written(v),
            Err(e) => {
                failed(&e);
                failures += 1;
                if attempts.is_some_and(|a| failures >= a) {
                    return Retried::GaveUp(e);
                }
                tracing::warn!(error = %redmirror_telemetry::errors::Chain(&e), events, "Destination write failed; retrying with backoff, nothing skipped (check the destination, REDMIRROR_DEST_URL).");
                if !redmirror_telemetry::wait::pause(&mut backoff, stop).await {
                    return Retried::Stopped;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn transient() -> Transient {
        Transient(fred::error::Error::new(fred::error::ErrorKind::IO, "refused"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_is_tried_again_until_it_lands() {
        let mut tries = 0;
        let mut seen = 0;
        let stop = CancellationToken::new();
        let r = until_written(
            3,
            &stop,
            None,
            |_| seen += 1,
            || {
                tries += 1;
                let n = tries;
                async move {
                    if n < 4 {
                        Err(transient())
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert!(matches!(r, Retried::Written(4)), "{r:?}");
        assert_eq!(seen, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn it_gives_up_after_its_attempts() {
        let mut tries = 0;
        let stop = CancellationToken::new();
        let r = until_written::<(), _, _>(
            1,
            &stop,
            Some(5),
            |_| {},
            || {
                tries += 1;
                async { Err(transient()) }
            },
        )
        .await;
        assert!(matches!(r, Retried::GaveUp(_)), "{r:?}");
        assert_eq!(tries, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait() {
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            s.cancel();
        });
        let r = until_written::<(), _, _>(1, &stop, None, |_| {}, || async { Err(transient()) }).await;
        assert!(matches!(r, Retried::Stopped), "{r:?}");
    }
}
