//! `broker-restart`: kill -9 the broker, keep it down for a while, start it
//! again on the same log directory (needs a broker whose log survives a
//! kill: Apache Kafka, not Tansu).

use std::time::Instant;

use anyhow::bail;
use rand::rngs::StdRng;

use super::{rand_secs, Env};

/// Kills the broker, down for a length in `opts.freeze`, starts it again.
pub(super) fn inject(env: &mut Env, rng: &mut StdRng) -> anyhow::Result<String> {
    if !env.broker.durable() {
        bail!("broker-restart needs a broker whose log survives a kill (Apache Kafka, not Tansu)");
    }
    let d = rand_secs(rng, env.opts.freeze);
    let pid = env.broker.pid().unwrap_or(0);
    env.broker.kill();
    let r = env.idle(d);
    let t = Instant::now();
    env.broker.start_again();
    r?;
    Ok(format!(
        "broker kill -9 (pid {pid}), down {:.1}s, started again on the same log directory (ready after {:.1}s)",
        d.as_secs_f64(),
        t.elapsed().as_secs_f64()
    ))
}
