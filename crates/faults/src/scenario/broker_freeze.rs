//! `broker-freeze`: SIGSTOP the broker for a while (a long GC pause, a
//! frozen VM), then SIGCONT. Connections stay open but nothing answers.

use anyhow::Context;
use rand::rngs::StdRng;
use redmirror_testkit::process::{signal, Signal};

use super::{rand_secs, Env};

/// Freezes the broker for a length in `opts.freeze`.
pub(super) fn inject(env: &mut Env, rng: &mut StdRng) -> anyhow::Result<String> {
    let pid = env.broker.pid().context("broker pid")?;
    let d = rand_secs(rng, env.opts.freeze);
    signal(pid, Signal::Stop)?;
    let r = env.idle(d);
    signal(pid, Signal::Cont)?;
    r?;
    Ok(format!("SIGSTOP broker for {:.1}s, SIGCONT", d.as_secs_f64()))
}
