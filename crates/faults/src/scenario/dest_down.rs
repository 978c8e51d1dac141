//! `dest-down`: a long destination outage (its data kept in an AOF). The
//! source keeps writing, Kafka holds the backlog, every process must stay
//! bounded in memory.

use std::sync::atomic::Ordering;

use rand::rngs::StdRng;

use super::{rand_secs, wait_loaded, Env};
use crate::procs::Role;

/// Stops the destination for a length in `opts.outage`, then starts it again.
pub(super) fn inject(env: &mut Env, rng: &mut StdRng) -> anyhow::Result<String> {
    let gate = env.natives.gate.clone();
    let _g = gate.lock().expect("gate");
    let d = rand_secs(rng, env.opts.outage);
    let before: Vec<(Role, f64)> = env.procs.iter().map(|p| (p.role, p.peak_rss)).collect();
    env.dest.stop();
    let r = env.idle(d);
    let during: Vec<String> = env
        .procs
        .iter()
        .map(|p| {
            let b = before.iter().find(|(r, _)| *r == p.role).map_or(0.0, |(_, r)| *r);
            format!("{} {:.0}->{:.0} MiB", p.role, b, p.peak_rss)
        })
        .collect();
    env.dest.start_again();
    r?;
    env.natives.epoch.fetch_add(1, Ordering::SeqCst);
    wait_loaded(&env.dest.url())?;
    Ok(format!(
        "destination kill -9, down {:.1}s while the source kept writing (peak rss {}), started again (AOF)",
        d.as_secs_f64(),
        during.join(", ")
    ))
}
