//! `source-blackhole`: every connection to the source goes silent for ever
//! (no FIN, no RST) while new ones work, through a proxy in front of the
//! source: capture must notice, reconnect and have the gap repaired. The
//! probe flow is written just after the fault, so its notification is lost
//! with the link.

use std::time::Instant;

use anyhow::Context;
use redmirror_testkit::proxy::Proxy;

use super::{probe_recovery, Env, RECOVER_BOUND};

/// Black-holes the source connections made so far and measures when the
/// gap is counted and when a change made after the fault arrives.
pub(super) fn inject(env: &mut Env, turn: u32) -> anyhow::Result<String> {
    let before = env.capture_gaps();
    let proxy = env.source_proxy.as_ref().context("source proxy")?;
    let t = Instant::now();
    let holed = proxy.blackhole();
    let mut noticed = None;
    let recovered = probe_recovery(env, "client:blackhole-probe", turn, t, |env, at| {
        if noticed.is_none() && env.capture_gaps() > before {
            noticed = Some(at);
        }
    })?;
    let accepted = env.source_proxy.as_ref().map_or(0, Proxy::accepted);
    let show = |v: Option<f64>| {
        v.map_or_else(
            || format!("not within {}s", RECOVER_BOUND.as_secs()),
            |s| format!("{s:.1}s"),
        )
    };
    Ok(format!(
        "proxy: black-holed the {holed} source connections made so far; capture gap counted after {}, \
         change made after the fault on the destination after {} ({} connections accepted by then)",
        show(noticed),
        show(recovered),
        accepted.saturating_sub(holed)
    ))
}
