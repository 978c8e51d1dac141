//! `notify-keyspace-events` on the source: checked at start (capture
//! refuses to start without the classes it needs), then by [`watch`] after
//! every (re)subscription and every [`CHECK_EVERY`] while capture runs.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use fred::types::config::Server;
use redmirror_config::RedisEndpoint;
use redmirror_telemetry::metrics as m;
use redmirror_telemetry::{Component, Health};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::masters::Masters;
use crate::Gap;

/// How often [`watch`] checks the setting between subscriptions (SPEC: at
/// least every 30 s). A `CONFIG GET` is cheap; the bound is on how long
/// capture may be blind before readiness says so.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// Classes capture needs: `E` (keyevent channel) plus every class with a
/// command that can change, replace or remove a flow key: generic (`g`:
/// del, rename, expire, copy, move, restore, ...), string (`$`: a SET or
/// BITOP over a flow), list (`l`: SORT ... STORE), set (`s`: SUNIONSTORE,
/// SINTERSTORE, SDIFFSTORE), hash (`h`), sorted set (`z`: ZUNIONSTORE,
/// ZRANGESTORE, GEOSEARCHSTORE, ...), expired (`x`) and evicted (`e`).
/// `A` covers every class letter.
pub const NEEDED: &[char] = &['E', 'g', '$', 'l', 's', 'h', 'z', 'x', 'e'];

/// Why capture refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Classes are missing.
    #[error(
        "the source {endpoint} does not publish the keyspace notifications capture needs \
         (notify-keyspace-events is {current:?}, missing {missing:?}); run on the source: \
         CONFIG SET notify-keyspace-events {wanted} (or start capture with \
         REDMIRROR_CONFIGURE_NOTIFICATIONS=true to let it do so)"
    )]
    Missing {
        /// Redacted endpoint.
        endpoint: String,
        /// Current flags.
        current: String,
        /// Missing classes.
        missing: String,
        /// The full value to set.
        wanted: String,
    },
    /// The setting could not be read.
    #[error("cannot read notify-keyspace-events on {endpoint} (grant the capture user +config|get): {message}")]
    Unreadable {
        /// Redacted endpoint.
        endpoint: String,
        /// Cause.
        message: String,
        /// The server refused the read (`NOPERM`): waiting will not help.
        refused: bool,
    },
}

/// The classes missing from `flags` (empty: all there).
pub fn missing(flags: &str) -> String {
    let all = flags.contains('A');
    NEEDED
        .iter()
        .filter(|&&c| {
            let covered = flags.contains(c) || (all && c != 'E' && c != 'K');
            !covered
        })
        .collect()
}

/// Reads the current flags (of the node `on`, a cluster's primary; the
/// one server when `None`).
pub async fn current(client: &Client, on: Option<&Server>) -> Result<String, fred::error::Error> {
    let v: std::collections::HashMap<String, String> = match on {
        Some(node) => {
            client
                .with_cluster_node(node)
                .config_get("notify-keyspace-events")
                .await?
        }
        None => client.config_get("notify-keyspace-events").await?,
    };
    Ok(v.get("notify-keyspace-events").cloned().unwrap_or_default())
}

/// Checks the flags; sets the missing classes when `configure` is true.
pub async fn ensure(client: &Client, endpoint: &RedisEndpoint, configure: bool) -> Result<(), NotifyError> {
    check(client, endpoint, configure).await.map(|_| ())
}

/// [`ensure`] before capture starts, waiting out a source that is down
/// or cannot answer yet (an unreadable setting that is not a permission
/// error). `Ok(Err(_))`: the classes are missing or may not be read, so
/// capture must not start (the error says what to run).
pub async fn ensure_at_start(
    client: &Client,
    endpoint: &RedisEndpoint,
    configure: bool,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Result<(), NotifyError>> {
    redmirror_telemetry::wait::until_up(
        "the source (REDMIRROR_SOURCE_URL), to check notify-keyspace-events",
        stop,
        || async {
            match ensure(client, endpoint, configure).await {
                Err(NotifyError::Unreadable {
                    endpoint,
                    message,
                    refused: false,
                }) => Err(anyhow::Error::new(redmirror_redis::RedisError {
                    endpoint,
                    source: redmirror_redis::Cause(fred::error::Error::new(fred::error::ErrorKind::IO, message)),
                })),
                other => Ok(other),
            }
        },
        |e| redmirror_redis::retryable_in(e.chain()),
    )
    .await
}

/// What a check found, when capture can go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Every class needed is on.
    Complete,
    /// Classes were missing and capture set them (the new value).
    SetAgain(String),
}

/// Checks the flags; sets the missing classes when `configure` is true.
/// On a cluster source, every primary is checked (notifications are
/// node-local): the first one missing classes is named in the error.
pub async fn check(client: &Client, endpoint: &RedisEndpoint, configure: bool) -> Result<Checked, NotifyError> {
    let mut result = Checked::Complete;
    for node in redmirror_redis::primaries(client) {
        if let Checked::SetAgain(v) = check_on(client, node.as_ref(), endpoint, configure).await? {
            result = Checked::SetAgain(v);
        }
    }
    Ok(result)
}

/// [`check`] on a cluster source, over its masters as capture's own map
/// has them now ([`Masters`]): a replica promoted by a failover, or a
/// master added, is checked (and, with `configure`, set) within about a
/// second of becoming one. A master missing classes is named in the error;
/// one that cannot be read does not keep the others from being checked.
pub async fn check_masters(
    masters: &mut Masters,
    endpoint: &RedisEndpoint,
    configure: bool,
) -> Result<Checked, NotifyError> {
    let mut result = Checked::Complete;
    let mut unreadable = None;
    for m in masters.current() {
        let name = format!("{} (cluster master {})", endpoint.redacted(), m.addr);
        let failed = |e: fred::error::Error| NotifyError::Unreadable {
            endpoint: name.clone(),
            refused: redmirror_redis::is_refused(&e),
            message: redmirror_redis::describe(&e),
        };
        let flags = match masters
            .call(&m.addr, &[b"CONFIG", b"GET", b"notify-keyspace-events"])
            .await
        {
            Ok(reply) => reply.get(1).cloned().unwrap_or_default(),
            Err(e) => {
                unreadable.get_or_insert(failed(e));
                continue;
            }
        };
        let miss = missing(&flags);
        if miss.is_empty() {
            continue;
        }
        let wanted = format!("{flags}{miss}");
        if !configure {
            return Err(NotifyError::Missing {
                endpoint: name,
                current: flags,
                missing: miss,
                wanted,
            });
        }
        match masters
            .call(
                &m.addr,
                &[b"CONFIG", b"SET", b"notify-keyspace-events", wanted.as_bytes()],
            )
            .await
        {
            Ok(_) => {
                tracing::warn!(value = %wanted, node = %name, "Set notify-keyspace-events on the source.");
                result = Checked::SetAgain(wanted);
            }
            Err(e) => {
                unreadable.get_or_insert(failed(e));
            }
        }
    }
    match unreadable {
        Some(e) => Err(e),
        None => Ok(result),
    }
}

async fn check_on(
    client: &Client,
    node: Option<&Server>,
    endpoint: &RedisEndpoint,
    configure: bool,
) -> Result<Checked, NotifyError> {
    let name = match node {
        Some(n) => format!("{} (cluster master {}:{})", endpoint.redacted(), n.host, n.port),
        None => endpoint.redacted(),
    };
    let unreadable = |e: fred::error::Error| NotifyError::Unreadable {
        endpoint: name.clone(),
        refused: redmirror_redis::is_refused(&e),
        message: redmirror_redis::describe(&e),
    };
    let flags = current(client, node).await.map_err(unreadable)?;
    let miss = missing(&flags);
    if miss.is_empty() {
        return Ok(Checked::Complete);
    }
    let wanted = format!("{flags}{miss}");
    if configure {
        let _: () = match node {
            Some(n) => {
                client
                    .with_cluster_node(n)
                    .config_set("notify-keyspace-events", wanted.as_str())
                    .await
            }
            None => client.config_set("notify-keyspace-events", wanted.as_str()).await,
        }
        .map_err(unreadable)?;
        tracing::warn!(value = %wanted, node = %name, "Set notify-keyspace-events on the source.");
        return Ok(Checked::SetAgain(wanted));
    }
    Err(NotifyError::Missing {
        endpoint: name,
        current: flags,
        missing: miss,
        wanted,
    })
}

/// Checks the setting after every subscription (`subscribed` is notified
/// by the subscriber), every [`CHECK_EVERY`] and, on a cluster source
/// (`masters`), whenever its map changes (a failover, a master added),
/// until `stop`. While
/// classes are missing: [`Component::Notifications`] is down with the
/// `CONFIG SET` to run as its reason, `redmirror_capture_notifications_missing`
/// is 1, and the command is logged once per occurrence (or, with
/// `configure`, the classes are set again at once). Once they are back, a
/// gap is reported: what changed meanwhile sent no notification.
#[allow(clippy::too_many_arguments)]
pub async fn watch(
    client: Client,
    endpoint: RedisEndpoint,
    configure: bool,
    health: Health,
    gaps: mpsc::UnboundedSender<Gap>,
    subscribed: Arc<Notify>,
    mut masters: Option<Masters>,
    stop: CancellationToken,
) {
    let mut state = Watch::default();
    let mut version = masters.as_ref().map(|m| m.cluster().version());
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = subscribed.notified() => {}
            _ = map_changed(&mut version) => {}
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let checking = async {
            match masters.as_mut() {
                Some(m) => check_masters(m, &endpoint, configure).await,
                None => check(&client, &endpoint, configure).await,
            }
        };
        let found = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = checking => r,
        };
        match state.found(found) {
            Action::Missing(reason) => {
                tracing::error!(
                    error = %reason,
                    "Keyspace notifications are missing on the source: capture misses changes and readiness \
                     fails until they are back."
                );
                metrics::gauge!(m::CAPTURE_NOTIFICATIONS_MISSING).set(1.0);
                health.set_down(Component::Notifications, &reason);
            }
            Action::StillMissing | Action::Nothing => {}
            Action::Back => {
                metrics::gauge!(m::CAPTURE_NOTIFICATIONS_MISSING).set(0.0);
                health.set(Component::Notifications, true);
                Gap::NotificationsBack.report(&gaps);
            }
            Action::Unreadable(reason) => {
                // The source being down is the source component's to report.
                tracing::debug!(error = %reason, "Cannot check notify-keyspace-events; checking again later.");
            }
        }
    }
}

/// Resolves when a cluster source's map changed; never without one (or
/// once its sender is gone).
async fn map_changed(version: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(v) = version {
        if v.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

/// What [`watch`] does about a check.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Missing, and not (or differently) reported yet: the reason to log and show.
    Missing(String),
    /// Missing, already reported.
    StillMissing,
    /// Complete, as before.
    Nothing,
    /// Back (found again, or set again by capture): clear and ask for a pass.
    Back,
    /// The check itself failed; nothing known.
    Unreadable(String),
}

/// What [`watch`] remembers between checks.
#[derive(Debug, Default)]
struct Watch {
    /// The reason last reported while classes are missing.
    missing: Option<String>,
}

impl Watch {
    fn found(&mut self, r: Result<Checked, NotifyError>) -> Action {
        match r {
            Ok(Checked::Complete) => match self.missing.take() {
                Some(_) => Action::Back,
                None => Action::Nothing,
            },
            // Set by capture: they were off for an unknown time.
            Ok(Checked::SetAgain(_)) => {
                self.missing = None;
                Action::Back
            }
            Err(e @ NotifyError::Missing { .. }) => {
                let reason = e.to_string();
                if self.missing.as_deref() == Some(reason.as_str()) {
                    Action::StillMissing
                } else {
                    self.missing = Some(reason.clone());
                    Action::Missing(reason)
                }
            }
            Err(e @ NotifyError::Unreadable { .. }) => Action::Unreadable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing_error(current: &str) -> NotifyError {
        NotifyError::Missing {
            endpoint: "redis://source".into(),
            current: current.into(),
            missing: super::missing(current),
            wanted: format!("{current}{}", super::missing(current)),
        }
    }

    #[test]
    fn missing_classes_are_reported_once_per_occurrence_and_their_return_is_a_gap() {
        let mut w = Watch::default();
        assert_eq!(w.found(Ok(Checked::Complete)), Action::Nothing);
        match w.found(Err(missing_error(""))) {
            Action::Missing(reason) => assert!(
                reason.contains("CONFIG SET notify-keyspace-events Eg$lshzxe"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(w.found(Err(missing_error(""))), Action::StillMissing);
        let unreadable = NotifyError::Unreadable {
            endpoint: "e".into(),
            message: "down".into(),
            refused: false,
        };
        assert!(matches!(w.found(Err(unreadable)), Action::Unreadable(_)));
        assert_eq!(
            w.found(Err(missing_error(""))),
            Action::StillMissing,
            "still the same occurrence"
        );
        assert!(
            matches!(w.found(Err(missing_error("Kh"))), Action::Missing(_)),
            "a different setting is reported"
        );
        assert_eq!(w.found(Ok(Checked::Complete)), Action::Back);
        assert_eq!(w.found(Ok(Checked::Complete)), Action::Nothing);
        assert!(
            matches!(w.found(Err(missing_error(""))), Action::Missing(_)),
            "a new occurrence"
        );
        assert_eq!(w.found(Ok(Checked::SetAgain("Eg$lshzxe".into()))), Action::Back);
        assert_eq!(
            w.found(Ok(Checked::SetAgain("Eg$lshzxe".into()))),
            Action::Back,
            "every time capture has to set them, they were off"
        );
    }

    #[test]
    fn missing_classes() {
        assert_eq!(super::missing(""), "Eg$lshzxe");
        assert_eq!(super::missing("KEA"), "");
        assert_eq!(super::missing("AK"), "E");
        assert_eq!(super::missing("Eh"), "g$lszxe");
        assert_eq!(super::missing("Egh$xe"), "lsz");
        assert_eq!(super::missing("g$lshzxeE"), "");
    }
}
