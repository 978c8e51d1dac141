//! Counters on the destination that one process bumps and another
//! watches: capture gaps (`redmirror:capture:gaps`) and pass requests from
//! `reconcile --once`, so a reconciler in another process sees them.

use std::time::Duration;

use fred::prelude::*;

/// A counter on the destination: bumped by [`GapSignal::signal`], watched
/// with [`GapSignal::current`].
#[derive(Clone, Debug)]
pub struct GapSignal {
    client: Client,
    key: String,
}

impl GapSignal {
    /// The signal on `client` (the destination) under `key`.
    pub fn new(client: Client, key: String) -> Self {
        GapSignal { client, key }
    }

    /// Reports a gap (retried a few times; a lost signal is covered by the
    /// next scheduled pass).
    pub async fn signal(&self) {
        for _ in 0..5 {
            match self.client.incr::<i64, _>(&self.key).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot signal a capture gap; retrying.");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Current counter value.
    pub async fn current(&self) -> Option<i64> {
        self.client
            .get::<Option<i64>, _>(&self.key)
            .await
            .ok()
            .map(|v| v.unwrap_or(0))
    }
}
