//! `slow-dest`: the destination slow for a minute under the write limit.
//! Through a proxy in front of it, every destination connection carries at
//! most 16 KB/s in each direction for 60 s, far below what the load needs:
//! apply falls behind while Kafka holds the backlog. Then the link is fast
//! again and apply catches up no faster than `REDMIRROR_APPLY_MAX_RATE`
//! (SPEC section 9), while readiness stays up and nothing is skipped.

use std::time::Duration;

use anyhow::Context;

use super::Env;

/// The write limit apply catches up under: well above the load's rate
/// (400 changes/s by default), so the backlog drains, but a real bound.
pub(super) const SETTINGS: &[(&str, &str)] = &[("REDMIRROR_APPLY_MAX_RATE", "1500")];

/// How long the destination stays slow.
const SLOW_FOR: Duration = Duration::from_secs(60);

/// Bytes per second per connection and direction while slow.
const SLOW_BYTES_PER_SEC: u64 = 16_000;

/// Limits the destination proxy for [`SLOW_FOR`], then lifts the limit.
pub(super) fn inject(env: &mut Env) -> anyhow::Result<String> {
    let before = applied(env);
    env.proxy.as_ref().context("proxy")?.limit(SLOW_BYTES_PER_SEC);
    let r = env.idle(SLOW_FOR);
    let slow = applied(env) - before;
    env.proxy.as_ref().context("proxy")?.limit(0);
    r?;
    Ok(format!(
        "proxy: destination link limited to {} KB/s for {} s (apply wrote {:.0} events/s meanwhile, the load {}/s), \
         then fast again: apply catches up under REDMIRROR_APPLY_MAX_RATE={}",
        SLOW_BYTES_PER_SEC / 1000,
        SLOW_FOR.as_secs(),
        slow / SLOW_FOR.as_secs_f64(),
        env.opts.rate,
        SETTINGS[0].1
    ))
}

/// Events applied so far by every process that applies.
fn applied(env: &Env) -> f64 {
    env.procs
        .iter()
        .filter_map(|p| p.metric("redmirror_apply_events_total{outcome=\"applied\"}"))
        .sum()
}
