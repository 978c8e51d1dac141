//! `kill-run`, `kill-capture`, `kill-apply`: kill -9 one role's process,
//! start it again after a random pause of up to 1.5 s (a supervisor's
//! restart). The three scenarios are this one injection on different
//! roles (`run` alone, or the `capture` or `apply` of a split topology).

use rand::rngs::StdRng;

use super::{rand_secs, Env};
use crate::procs::Role;

/// Kills `role` and starts it again.
pub(super) fn inject(env: &mut Env, rng: &mut StdRng, role: Role) -> anyhow::Result<String> {
    let pause = rand_secs(rng, (0.0, 1.5));
    let p = env.proc(role);
    let pid = p.pid().unwrap_or(0);
    p.kill();
    env.idle(pause)?;
    env.proc(role).start()?;
    Ok(format!(
        "kill -9 {role} (pid {pid}), restarted after {:.1}s",
        pause.as_secs_f64()
    ))
}
