//! Waiting for a server that is down (SPEC section 7: a server down at
//! start-up is waited for, not a reason to exit).

use std::future::Future;
use std::time::{Duration, Instant};

use redmirror_core::backoff::Backoff;
use tokio_util::sync::CancellationToken;

/// Sleeps `backoff`'s next delay; false when `stop` fired first (the
/// caller then gives up its retry). The one retry wait of every loop a
/// shutdown must be able to interrupt.
pub async fn pause(backoff: &mut Backoff, stop: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(backoff.next_delay()) => true,
    }
}

/// [`pause`] when there is a `stop`; otherwise a sleep nothing interrupts.
pub async fn pause_or_sleep(backoff: &mut Backoff, stop: Option<&CancellationToken>) -> bool {
    match stop {
        Some(s) => pause(backoff, s).await,
        None => {
            tokio::time::sleep(backoff.next_delay()).await;
            true
        }
    }
}

/// How often an unchanged reason for waiting is logged again.
const SAY_AGAIN: Duration = Duration::from_secs(60);

/// Calls `attempt` until it succeeds or fails with an error `retryable`
/// says no to, backing off from 100 ms to 5 s. Logs at INFO what it waits
/// for and why (again when the reason changes, and every minute), and once
/// more when it is up.
pub async fn until_up<T, F, Fut>(what: &str, mut attempt: F, retryable: fn(&anyhow::Error) -> bool) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut last: Option<(String, Instant)> = None;
    loop {
        match attempt().await {
            Ok(v) => {
                if last.is_some() {
                    tracing::info!("{what} is up.");
                }
                return Ok(v);
            }
            Err(e) if retryable(&e) => {
                let reason = crate::errors::chain(&e);
                let say = match &last {
                    Some((r, at)) => *r != reason || at.elapsed() >= SAY_AGAIN,
                    None => true,
                };
                if say {
                    tracing::info!(reason = %reason, "Waiting for {what}; retrying with backoff (/readyz fails meanwhile).");
                    last = Some((reason, Instant::now()));
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e),
        }
    }
}
