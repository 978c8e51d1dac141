//! `dest-restart`: the destination restarts, alternately after a SAVE and
//! after a short outage with its data in an AOF; the native writer pauses
//! meanwhile and resumes on a fresh connection.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rand::rngs::StdRng;

use super::{rand_secs, wait_loaded, Env, RestartTurn};

/// Restarts the destination as this turn says.
pub(super) fn inject(env: &mut Env, rng: &mut StdRng, turn: u32) -> anyhow::Result<String> {
    let gate = env.natives.gate.clone();
    let _g = gate.lock().expect("gate");
    let t = Instant::now();
    let what = match RestartTurn::of(turn) {
        RestartTurn::SaveAndRestart => {
            env.dest.restart();
            "destination SAVE + kill -9 + start".to_string()
        }
        RestartTurn::Outage => {
            let d = rand_secs(rng, (4.5, 5.5));
            env.dest.stop();
            env.idle(d)?;
            env.dest.start_again();
            format!("destination kill -9, down {:.1}s, started again (AOF)", d.as_secs_f64())
        }
    };
    env.natives.epoch.fetch_add(1, Ordering::SeqCst);
    // The native writer resumes once the data is loaded.
    wait_loaded(&env.dest.url())?;
    Ok(format!(
        "{what}; back and loaded after {:.1}s",
        t.elapsed().as_secs_f64()
    ))
}
