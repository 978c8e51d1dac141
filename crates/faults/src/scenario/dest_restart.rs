//! `dest-restart`: the destination restarts, alternately after a SAVE and
//! after a short outage with its data in an AOF; the native writer pauses
//! meanwhile and resumes on a fresh connection.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rand::rngs::StdRng;

use super::{rand_secs, wait_loaded, Env};

/// What one injection does to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// SAVE, kill -9, start at once (odd turns).
    SaveAndRestart,
    /// kill -9, down about 5 s, start again from the AOF (even turns).
    Outage,
}

impl Turn {
    fn of(turn: u32) -> Turn {
        if turn % 2 == 1 {
            Turn::SaveAndRestart
        } else {
            Turn::Outage
        }
    }
}

/// Restarts the destination as this turn says.
pub(super) fn inject(env: &mut Env, rng: &mut StdRng, turn: u32) -> anyhow::Result<String> {
    let gate = env.natives.gate.clone();
    let _g = gate.lock().expect("gate");
    let t = Instant::now();
    let what = match Turn::of(turn) {
        Turn::SaveAndRestart => {
            env.dest.restart();
            "destination SAVE + kill -9 + start".to_string()
        }
        Turn::Outage => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_alternate_starting_with_a_save() {
        let turns: Vec<Turn> = (1..=4).map(Turn::of).collect();
        assert_eq!(
            turns,
            [Turn::SaveAndRestart, Turn::Outage, Turn::SaveAndRestart, Turn::Outage]
        );
    }
}
