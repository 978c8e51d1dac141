//! The hold: a rewind keeps the destination at its point in time until an
//! operator runs `redmirror resume`.
//!
//! The hold is a hash on the destination ([`KeyLayout::hold_key`]), so it
//! survives a restart of any role: apply reads it before its first write
//! and stays out of the consumer group while it is there, reconcile skips
//! its repairs, and every process with a destination shows it in
//! `redmirror_held` and `/v1/status`. Capture ignores it: changes keep
//! reaching Kafka, and apply reads them from its committed offsets once the
//! hold ends.
//!
//! [`KeyLayout::hold_key`]: redmirror_core::KeyLayout::hold_key

use std::time::Duration;

use fred::interfaces::{HashesInterface, KeysInterface};
use fred::prelude::Client;
use redmirror_telemetry::errors::Chain;
use redmirror_telemetry::metrics as m;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often a [`HoldWatch`] reads the hold.
pub const HOLD_POLL: Duration = Duration::from_millis(500);

/// A hold in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The point in time the destination was rewound to (µs since the epoch).
    pub at_us: i64,
    /// When the hold began (µs since the epoch); also tells one hold from the next.
    pub since_us: i64,
}

impl Hold {
    /// The hold as `/v1/status` and `redmirror status` show it.
    pub fn state(hold: Option<&Hold>) -> redmirror_api::HoldState {
        match hold {
            Some(h) => redmirror_api::HoldState {
                held: true,
                held_at: Some(rfc3339(h.at_us)),
                held_since: Some(rfc3339(h.since_us)),
            },
            None => redmirror_api::HoldState::default(),
        }
    }

    /// [`Hold::state`] as JSON.
    pub fn to_json(hold: Option<&Hold>) -> serde_json::Value {
        serde_json::to_value(Hold::state(hold)).unwrap_or_default()
    }
}

/// An RFC 3339 UTC time (whole microseconds) for people and JSON.
pub use redmirror_core::text::rfc3339_us as rfc3339;

/// The hold's hash did not hold two integers.
#[derive(Debug, thiserror::Error)]
#[error("{key} is not a hold (expected integer fields at_us and since_us, found {found}); delete it with `redmirror resume`")]
pub struct Malformed {
    key: String,
    found: String,
}

/// Errors reading or writing the hold.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// The destination failed.
    #[error("destination")]
    Redis(#[from] fred::error::Error),
    /// The stored hold is not one.
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

/// The hold in force, if any.
pub async fn read(dest: &Client, key: &str) -> Result<Option<Hold>, HoldError> {
    let (at, since): (Option<String>, Option<String>) = dest.hmget(key, vec!["at_us", "since_us"]).await?;
    match (at, since) {
        (None, None) => Ok(None),
        (Some(a), Some(s)) => match (a.parse(), s.parse()) {
            (Ok(at_us), Ok(since_us)) => Ok(Some(Hold { at_us, since_us })),
            _ => Err(Malformed {
                key: key.to_string(),
                found: format!("at_us={a:?} since_us={s:?}"),
            }
            .into()),
        },
        (a, s) => Err(Malformed {
            key: key.to_string(),
            found: format!("at_us={a:?} since_us={s:?}"),
        }
        .into()),
    }
}

/// Puts the mirror on hold at `hold.at_us`.
pub async fn set(dest: &Client, key: &str, hold: Hold) -> Result<(), HoldError> {
    let _: () = dest
        .hset(
            key,
            vec![
                ("at_us", hold.at_us.to_string()),
                ("since_us", hold.since_us.to_string()),
            ],
        )
        .await?;
    Ok(())
}

/// Ends the hold; the one that was in force, if any (a malformed one is
/// removed too).
pub async fn clear(dest: &Client, key: &str) -> Result<Option<Hold>, HoldError> {
    let was = read(dest, key).await;
    let _: i64 = dest.del(key).await?;
    match was {
        Ok(h) => Ok(h),
        Err(HoldError::Malformed(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Ends a rewind's hold (`redmirror resume`, `POST /v1/resume`): apply
/// joins its group again from its committed offsets, and the reconciler's
/// next pass (it starts one when it sees the hold end) brings the
/// destination to the source's current state. Answers what the CLI prints
/// and the endpoint returns: `{"resumed": true, "held_at", "held_since"}`,
/// or `{"resumed": false, "message"}` when nothing was held.
pub async fn resume(dest: &Client, key: &str) -> Result<redmirror_api::Resumed, HoldError> {
    Ok(match clear(dest, key).await? {
        Some(h) => {
            tracing::info!(at = %rfc3339(h.at_us), "Hold ended (resume).");
            redmirror_api::Resumed {
                resumed: true,
                held_at: Some(rfc3339(h.at_us)),
                held_since: Some(rfc3339(h.since_us)),
                message: None,
            }
        }
        None => redmirror_api::Resumed {
            resumed: false,
            message: Some("the mirror was not held".into()),
            ..redmirror_api::Resumed::default()
        },
    })
}

/// The hold as last read, refreshed every [`HOLD_POLL`]; sets
/// `redmirror_held`.
#[derive(Debug, Clone)]
pub struct HoldWatch {
    rx: watch::Receiver<Option<Hold>>,
}

impl HoldWatch {
    /// Reads the hold until a read succeeds (`None` if `shutdown` fires
    /// first), then keeps it fresh until `shutdown`. Until the first read,
    /// nothing may assume the mirror is not held.
    pub async fn start(dest: Client, key: String, shutdown: CancellationToken) -> Option<HoldWatch> {
        let mut failing = false;
        let first = loop {
            match read(&dest, &key).await {
                Ok(h) => break h,
                Err(e) => {
                    if !failing {
                        tracing::info!(key = %key, error = %Chain(&e), "Waiting to read the hold from the destination.");
                        failing = true;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(HOLD_POLL) => {}
                    }
                }
            }
        };
        set_gauge(first.as_ref());
        let (tx, rx) = watch::channel(first);
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(HOLD_POLL) => {}
                }
                match read(&dest, &key).await {
                    Ok(h) => {
                        warned = false;
                        set_gauge(h.as_ref());
                        tx.send_if_modified(|cur| {
                            let changed = *cur != h;
                            if changed {
                                match &h {
                                    Some(h) => tracing::info!(
                                        at = %rfc3339(h.at_us),
                                        "The mirror is held (a rewind): apply writes nothing and reconcile repairs \
                                         nothing until `redmirror resume`."
                                    ),
                                    None => tracing::info!("The hold ended: the mirror catches up."),
                                }
                                *cur = h;
                            }
                            changed
                        });
                    }
                    // The last known state stands; apply's writes fail too
                    // while the destination does.
                    Err(e) if !warned => {
                        tracing::warn!(key = %key, error = %Chain(&e), "Cannot read the hold; keeping the last known state.");
                        warned = true;
                    }
                    Err(_) => {}
                }
            }
        });
        Some(HoldWatch { rx })
    }

    /// A watch fixed at `hold` (tests, processes without a destination).
    pub fn fixed(hold: Option<Hold>) -> HoldWatch {
        let (_, rx) = watch::channel(hold);
        HoldWatch { rx }
    }

    /// The hold as last read.
    pub fn current(&self) -> Option<Hold> {
        *self.rx.borrow()
    }

    /// Waits until the hold changes (forever when it no longer can).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits until a hold is in force (forever when none comes).
    pub async fn until_held(&mut self) -> Hold {
        loop {
            if let Some(h) = self.current() {
                return h;
            }
            self.changed().await;
        }
    }
}

fn set_gauge(hold: Option<&Hold>) {
    metrics::gauge!(m::HELD).set(if hold.is_some() { 1.0 } else { 0.0 });
}
