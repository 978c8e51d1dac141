//! `source-restart`: the source restarts, alternately after a SAVE and
//! after a short outage with its data in an AOF. Capture loses its
//! subscription (a gap) and the source's notifications come back with it.

use std::time::Instant;

use rand::rngs::StdRng;

use super::{rand_secs, Env};

/// What one injection does to the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// SAVE, kill -9, start at once (odd turns).
    SaveAndRestart,
    /// kill -9, down 1 to 4 s, start again from the AOF (even turns).
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

/// Restarts the source as this turn says.
pub(super) fn inject(env: &mut Env, rng: &mut StdRng, turn: u32) -> anyhow::Result<String> {
    match Turn::of(turn) {
        Turn::SaveAndRestart => {
            let t = Instant::now();
            env.source.restart();
            Ok(format!(
                "source SAVE + kill -9 + start ({:.1}s)",
                t.elapsed().as_secs_f64()
            ))
        }
        Turn::Outage => {
            let d = rand_secs(rng, (1.0, 4.0));
            env.source.stop();
            env.idle(d)?;
            env.source.start_again();
            Ok(format!(
                "source kill -9, down {:.1}s, started again (AOF)",
                d.as_secs_f64()
            ))
        }
    }
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
