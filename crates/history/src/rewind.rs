//! The hold around a rewind (`replay --until T --force`): the mirror is
//! held before anything is rewound, so live apply writes nothing and
//! reconcile repairs nothing while the destination is rebuilt (capture goes
//! on publishing, so nothing is lost), and it stays held until
//! `redmirror resume`.

use std::time::Duration;

use fred::prelude::Client;
use redmirror_core::KeyLayout;
use redmirror_state::hold::{self, Hold};

use crate::Error;

/// Longest wait for live apply instances to stop writing for a new hold.
pub const APPLY_HOLD_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the acknowledgements are read while waiting.
const POLL: Duration = Duration::from_millis(200);

/// Why a replay may not run now: the mirror is held by a rewind and this
/// is a plain replay (it would move the destination away from the hold).
pub async fn refuse_if_held(dest: &Client, keys: &KeyLayout) -> Result<Option<String>, Error> {
    Ok(hold::read(dest, &keys.hold_key()).await.map_err(hold_error)?.map(|h| {
        format!(
            "the mirror is held at {} by a rewind: a replay would move it; end the hold first \
             (`redmirror resume`), or rewind again (--until T --force)",
            hold::rfc3339(h.at_us)
        )
    }))
}

/// Holds the mirror at `at_us` and waits (up to `timeout`) until every live
/// apply instance has acknowledged it: finished its writes, committed and
/// left its group. On a timeout the hold stays and the error names the
/// instances still writing.
pub async fn begin(dest: &Client, keys: &KeyLayout, at_us: i64, timeout: Duration) -> Result<Hold, Error> {
    let h = Hold {
        at_us,
        since_us: redmirror_core::now_us(),
    };
    hold::set(dest, &keys.hold_key(), h).await.map_err(hold_error)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let (members, acks) = (keys.apply_members_key(), keys.hold_acks_key());
    loop {
        let waiting = redmirror_state::members::not_yet_held(dest, &members, &acks, h.since_us).await?;
        if waiting.is_empty() {
            return Ok(h);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Usage(format!(
                "apply instance(s) {} did not stop writing within {} s (a write they are retrying?); nothing was \
                 rewound. The hold stays: run the rewind again once they have, or `redmirror resume` to end it",
                waiting.join(", "),
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ends the hold (a rewind to the end of history has nothing to hold).
pub async fn end(dest: &Client, keys: &KeyLayout) -> Result<(), Error> {
    hold::clear(dest, &keys.hold_key()).await.map_err(hold_error)?;
    Ok(())
}

fn hold_error(e: hold::HoldError) -> Error {
    match e {
        hold::HoldError::Redis(e) => Error::Redis(e),
        other => Error::Runtime(other.to_string()),
    }
}
