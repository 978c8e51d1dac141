//! `pending-overflow`: a broker outage long enough to fill capture's
//! pending set, made small for it (`REDMIRROR_CAPTURE_PENDING_MAX=200`, a
//! producer queue of 200 messages): while the broker is down, capture
//! drops new flows (the load writes over 1,500) and coalesces waiting ones.
//! The whole overflow episode must be one gap, reported once the broker is
//! back and the set has room again; the injection fails when none is
//! reported within [`RECOVER_BOUND`] and says how many were.

use std::time::{Duration, Instant};

use anyhow::bail;
use rand::rngs::StdRng;

use super::{rand_secs, Env, RECOVER_BOUND};

/// A small pending set and producer queue, so an outage of seconds fills them.
pub(super) const SETTINGS: &[(&str, &str)] = &[
    ("REDMIRROR_CAPTURE_PENDING_MAX", "200"),
    ("REDMIRROR_CAPTURE_BATCH", "50"),
    ("REDMIRROR_KAFKA_QUEUE_BUFFERING_MAX_MESSAGES", "200"),
];

/// Kills the broker for a length in `opts.freeze`, starts it again on its
/// log, then waits for the episode's gap.
pub(super) fn inject(env: &mut Env, rng: &mut StdRng) -> anyhow::Result<String> {
    if !env.broker.durable() {
        bail!("pending-overflow needs a broker whose log survives a kill (Apache Kafka, not Tansu)");
    }
    let gaps = env.capture_gaps();
    let d = rand_secs(rng, env.opts.freeze);
    env.broker.kill();
    let r = env.idle(d);
    let t = Instant::now();
    env.broker.start_again();
    r?;
    loop {
        if env.capture_gaps() > gaps {
            break;
        }
        if t.elapsed() > RECOVER_BOUND {
            bail!(
                "no overflow gap within {}s of the broker's return after a {:.1}s outage",
                RECOVER_BOUND.as_secs(),
                d.as_secs_f64()
            );
        }
        env.idle(Duration::from_millis(200))?;
    }
    let reported = t.elapsed().as_secs_f64();
    // Let the backlog drain: a second gap would be a second episode.
    env.idle(Duration::from_secs(2))?;
    Ok(format!(
        "broker kill -9, down {:.1}s, started again; {} overflow gap(s) reported (one per episode), the first \
         {reported:.1}s after the broker was started again",
        d.as_secs_f64(),
        env.capture_gaps() - gaps
    ))
}
