//! The keyevent subscription, one session at a time.
//!
//! Keyevent channels (`__keyevent@{db}__:{event}`) carry the key as the
//! message body, so flow ids arrive byte for byte (a keyspace channel name
//! would have to be UTF-8). Every session after the first is a gap.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use redmirror_config::RedisEndpoint;
use redmirror_core::KeyLayout;
use redmirror_telemetry::metrics as m;
use redmirror_telemetry::Health;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::pending::{cause_name, Added, Pending};
use crate::{Gap, HEALTH_SOURCE};

/// How a session ended.
#[derive(Debug)]
enum SessionEnd {
    Shutdown,
    Disconnected(String),
}

/// Runs sessions until `stop`, with backoff between failed attempts (reset
/// after every session that subscribed).
pub async fn run(
    source: RedisEndpoint,
    keys: KeyLayout,
    pending: Arc<Pending>,
    gaps: mpsc::UnboundedSender<Gap>,
    health: Health,
    stop: CancellationToken,
) {
    let mut sessions = 0u64;
    let mut backoff = Duration::from_millis(100);
    loop {
        let before = sessions;
        match session(&source, &keys, &pending, &gaps, &mut sessions, &stop).await {
            SessionEnd::Shutdown => return,
            SessionEnd::Disconnected(reason) => {
                health.set(HEALTH_SOURCE, false);
                tracing::warn!(reason = %reason, "Subscription to the source lost; re-subscribing.");
            }
        }
        // A session that subscribed was healthy: retry quickly (every
        // moment unsubscribed is a window only the reconciler covers).
        if sessions > before {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn session(
    source: &RedisEndpoint,
    keys: &KeyLayout,
    pending: &Pending,
    gaps: &mpsc::UnboundedSender<Gap>,
    sessions: &mut u64,
    stop: &CancellationToken,
) -> SessionEnd {
    let client = match redmirror_redis::build_with(source, "capture-subscriber", false) {
        Ok(c) => c,
        Err(e) => return SessionEnd::Disconnected(e.to_string()),
    };
    // fred routes keyspace/keyevent messages to this channel, not message_rx.
    let mut rx = client.keyspace_event_rx();
    let mut conn = match client.init().await {
        Ok(h) => h,
        Err(e) => return SessionEnd::Disconnected(redmirror_redis::RedisError::new(source, e).to_string()),
    };
    let prefix = format!("__keyevent@{}__:", source.db());
    if let Err(e) = client.psubscribe(format!("{prefix}*")).await {
        let _ = client.quit().await;
        return SessionEnd::Disconnected(redmirror_redis::RedisError::new(source, e).to_string());
    }
    // Subscribed: anything that changed before now and after the previous
    // session (or before start) is unknown. Ask for a reconcile pass.
    *sessions += 1;
    if *sessions == 1 {
        let _ = gaps.send(Gap::Start);
        tracing::info!(pattern = %format!("{prefix}*"), "Subscribed to source notifications.");
    } else {
        metrics::counter!(m::CAPTURE_GAPS).increment(1);
        let _ = gaps.send(Gap::Resubscribed);
        tracing::warn!("Re-subscribed to source notifications: gap reported for reconciliation.");
    }
    let mut overflowing = false;
    let mut report_overflow = |pending_full: bool| {
        if pending_full && !overflowing {
            metrics::counter!(m::CAPTURE_GAPS).increment(1);
            let _ = gaps.send(Gap::Overflow);
            tracing::warn!("Capture fell behind: notifications dropped, gap reported for reconciliation.");
        }
        overflowing = pending_full;
    };
    let end = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break SessionEnd::Shutdown,
            r = &mut conn => break SessionEnd::Disconnected(match r {
                Ok(Ok(())) => "connection closed".to_string(),
                Ok(Err(e)) => e.details().to_string(),
                Err(e) => e.to_string(),
            }),
            msg = rx.recv() => match msg {
                Ok(ev) => {
                    if u32::from(ev.db) != u32::from(source.db()) {
                        continue;
                    }
                    let key = ev.key.into_bytes();
                    let Some(id) = keys.flow_id(&key) else { continue };
                    metrics::counter!(m::CAPTURE_NOTIFICATIONS).increment(1);
                    match pending.add(key.slice_ref(id), cause_name(&ev.operation)) {
                        Added::New => report_overflow(false),
                        Added::Coalesced => {
                            metrics::counter!(m::CAPTURE_COALESCED).increment(1);
                            report_overflow(false);
                        }
                        Added::Full => report_overflow(true),
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(dropped = n, "Notification buffer overflowed.");
                    report_overflow(false);
                    report_overflow(true);
                }
                Err(broadcast::error::RecvError::Closed) => break SessionEnd::Disconnected("message channel closed".into()),
            },
        }
    };
    let _ = client.quit().await;
    end
}
