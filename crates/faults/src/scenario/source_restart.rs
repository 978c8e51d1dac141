//! `source-restart`: the source restarts, alternately after a SAVE and
//! after a short outage with its data in an AOF. Capture loses its
//! subscription (a gap) and the source's notifications come back with it.

use std::time::Instant;

use rand::rngs::StdRng;

use super::{rand_secs, Env, RestartTurn};

/// Restarts the source as this turn says.
pub(super) fn inject(env: &mut Env, rng: &mut StdRng, turn: u32) -> anyhow::Result<String> {
    match RestartTurn::of(turn) {
        RestartTurn::SaveAndRestart => {
            let t = Instant::now();
            env.source.server().restart();
            Ok(format!(
                "source SAVE + kill -9 + start ({:.1}s)",
                t.elapsed().as_secs_f64()
            ))
        }
        RestartTurn::Outage => {
            let d = rand_secs(rng, (1.0, 4.0));
            env.source.server().stop();
            env.idle(d)?;
            env.source.server().start_again();
            Ok(format!(
                "source kill -9, down {:.1}s, started again (AOF)",
                d.as_secs_f64()
            ))
        }
    }
}
