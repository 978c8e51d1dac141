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

/// Waits for SIGTERM or SIGINT (a process's stop).
pub async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// How often an unchanged reason for waiting is logged again.
const SAY_AGAIN: Duration = Duration::from_secs(60);

/// How long a first attempt may go unanswered before [`until_up`] says
/// what it waits for.
pub const SAY_SLOW_AFTER: Duration = Duration::from_secs(2);

/// [`until_up`] returned because `stop` fired while it waited.
#[derive(Debug, thiserror::Error)]
#[error("stopped while waiting for {0}")]
pub struct Stopped(pub String);

/// Calls `attempt` until it succeeds or fails with an error `retryable`
/// says no to, backing off from 100 ms to 5 s; [`Stopped`] when `stop`
/// fires during a wait. Logs at INFO what it waits for and why (again
/// when the reason changes, and every minute), that it waits when the
/// first attempt has no answer after [`SAY_SLOW_AFTER`], and once more
/// when it is up.
pub async fn until_up<T, F, Fut>(
    what: &str,
    stop: &CancellationToken,
    mut attempt: F,
    retryable: fn(&anyhow::Error) -> bool,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut last: Option<(String, Instant)> = None;
    loop {
        let pending = attempt();
        tokio::pin!(pending);
        // An attempt against a server that does not answer can take its
        // client's whole timeout (10 s for Kafka's metadata) before it
        // fails: say what is awaited meanwhile, once.
        let outcome = tokio::select! {
            outcome = &mut pending => outcome,
            _ = tokio::time::sleep(SAY_SLOW_AFTER), if last.is_none() => {
                tracing::info!("Waiting for {what}: no answer yet (/readyz fails meanwhile).");
                last = Some((String::new(), Instant::now()));
                pending.await
            }
        };
        match outcome {
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
                if !pause(&mut backoff, stop).await {
                    return Err(Stopped(what.to_string()).into());
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn always(_: &anyhow::Error) -> bool {
        true
    }

    fn never(_: &anyhow::Error) -> bool {
        false
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_the_attempt_succeeds() {
        let calls = AtomicU32::new(0);
        let stop = CancellationToken::new();
        let v = until_up(
            "the test server",
            &stop,
            || async {
                match calls.fetch_add(1, Ordering::Relaxed) {
                    0..=2 => Err(anyhow::anyhow!("refused")),
                    n => Ok(n),
                }
            },
            always,
        )
        .await
        .unwrap();
        assert_eq!(v, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_not_worth_retrying_ends_it_at_once() {
        let calls = AtomicU32::new(0);
        let stop = CancellationToken::new();
        let e = until_up(
            "the test server",
            &stop,
            || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(anyhow::anyhow!("bad password"))
            },
            never,
        )
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_eq!(e.to_string(), "bad password");
    }

    /// The log lines a test subscriber writes, kept to be read back.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    /// `run` against brokers that do not answer said nothing for 10 s:
    /// librdkafka's metadata call waits out its whole timeout before the
    /// first error there is to log.
    #[tokio::test(start_paused = true)]
    async fn a_first_attempt_without_an_answer_is_reported_before_it_fails() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let stop = CancellationToken::new();
        let calls = AtomicU32::new(0);
        let seen_during_first = std::sync::Mutex::new(String::new());
        let v = until_up(
            "the test server",
            &stop,
            || async {
                if calls.fetch_add(1, Ordering::Relaxed) == 0 {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    *seen_during_first.lock().unwrap() = lines.text();
                    Err(anyhow::anyhow!("timed out"))
                } else {
                    Ok(7)
                }
            },
            always,
        )
        .await
        .unwrap();
        assert_eq!(v, 7);
        let during = seen_during_first.lock().unwrap().clone();
        assert!(
            during.contains("Waiting for the test server: no answer yet"),
            "nothing said during the first attempt: {during:?}"
        );
        // Said once, not again on the retry (only this test reaches that
        // line: tracing caches whether a line is wanted per call site, so
        // lines other tests also log are not asserted here).
        let all = lines.text();
        assert_eq!(all.matches("no answer yet").count(), 1, "{all}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_with_stopped() {
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            s.cancel();
        });
        let e = until_up(
            "the test server",
            &stop,
            || async { Err::<(), _>(anyhow::anyhow!("refused")) },
            always,
        )
        .await
        .unwrap_err();
        assert!(e.downcast_ref::<Stopped>().is_some(), "{e:#}");
        assert_eq!(e.to_string(), "stopped while waiting for the test server");
    }
}
