//! `notify-keyspace-events` on the source.

use fred::prelude::*;
use redmirror_config::RedisEndpoint;

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

/// Reads the current flags.
pub async fn current(client: &Client) -> Result<String, fred::error::Error> {
    let v: std::collections::HashMap<String, String> = client.config_get("notify-keyspace-events").await?;
    Ok(v.get("notify-keyspace-events").cloned().unwrap_or_default())
}

/// Checks the flags; sets the missing classes when `configure` is true.
pub async fn ensure(client: &Client, endpoint: &RedisEndpoint, configure: bool) -> Result<(), NotifyError> {
    let unreadable = |e: fred::error::Error| NotifyError::Unreadable {
        endpoint: endpoint.redacted(),
        message: e.details().to_string(),
    };
    let flags = current(client).await.map_err(unreadable)?;
    let miss = missing(&flags);
    if miss.is_empty() {
        return Ok(());
    }
    let wanted = format!("{flags}{miss}");
    if configure {
        let _: () = client
            .config_set("notify-keyspace-events", wanted.as_str())
            .await
            .map_err(unreadable)?;
        tracing::warn!(value = %wanted, "Set notify-keyspace-events on the source.");
        return Ok(());
    }
    Err(NotifyError::Missing {
        endpoint: endpoint.redacted(),
        current: flags,
        missing: miss,
        wanted,
    })
}

#[cfg(test)]
mod tests {
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
