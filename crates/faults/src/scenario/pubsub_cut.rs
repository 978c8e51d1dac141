//! `pubsub-cut`: a burst of changes in one MULTI overflows capture's pub/sub
//! output buffer (the source runs with a small
//! `client-output-buffer-limit pubsub`), so the source drops the
//! subscriber: a gap capture must count and have repaired.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::Rng;

use super::Env;
use crate::load;

/// Writes the burst and waits up to 5 s for capture to count the gap.
pub(super) fn inject(env: &mut Env, rng: &mut StdRng) -> anyhow::Result<String> {
    let before = env.capture_gaps();
    let n = rng.random_range(3000..6000);
    let mut c = load::connect(&env.source.url()).context("connect source")?;
    let w = load::burst(&mut c, rng, env.opts.pool, n)?;
    env.stats.writes.fetch_add(w, Ordering::Relaxed);
    let t = Instant::now();
    let mut after = before;
    while t.elapsed() < Duration::from_secs(5) && after <= before {
        env.idle(Duration::from_millis(100))?;
        after = env.capture_gaps();
    }
    Ok(format!(
        "burst of {n} changes in one MULTI; capture gaps {before} -> {after}{}",
        if after > before {
            ""
        } else {
            " (no gap seen within 5 s)"
        }
    ))
}
