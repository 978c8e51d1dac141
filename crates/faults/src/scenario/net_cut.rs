//! `net-cut`: network faults between redmirror and the destination, through
//! a proxy in front of it; each turn does one of three things in rotation.

use anyhow::Context;
use rand::rngs::StdRng;

use super::{rand_secs, Env};

/// What one injection does to the destination's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Drop every connection (new ones work at once): turns 1, 4, 7, ...
    Cut,
    /// Stall all traffic 3 to 8 s, connections kept open: turns 2, 5, 8, ...
    Stall,
    /// Drop every connection and refuse new ones 2 to 5 s: turns 3, 6, 9, ...
    Unreachable,
}

impl Turn {
    fn of(turn: u32) -> Turn {
        match turn % 3 {
            1 => Turn::Cut,
            2 => Turn::Stall,
            _ => Turn::Unreachable,
        }
    }
}

/// Does this turn's fault on the destination proxy.
pub(super) fn inject(env: &mut Env, rng: &mut StdRng, turn: u32) -> anyhow::Result<String> {
    let proxy = env.proxy.as_ref().context("proxy")?;
    match Turn::of(turn) {
        Turn::Cut => {
            proxy.cut();
            Ok(format!(
                "proxy: dropped every destination connection ({} accepted so far)",
                proxy.accepted()
            ))
        }
        Turn::Stall => {
            let d = rand_secs(rng, (3.0, 8.0));
            proxy.stall(true);
            let r = env.idle(d);
            env.proxy.as_ref().context("proxy")?.stall(false);
            r?;
            Ok(format!(
                "proxy: stalled all destination traffic {:.1}s",
                d.as_secs_f64()
            ))
        }
        Turn::Unreachable => {
            let d = rand_secs(rng, (2.0, 5.0));
            proxy.refuse(true);
            proxy.cut();
            let r = env.idle(d);
            env.proxy.as_ref().context("proxy")?.refuse(false);
            r?;
            Ok(format!(
                "proxy: destination unreachable {:.1}s (cut + refuse)",
                d.as_secs_f64()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_rotate_cut_stall_unreachable() {
        let turns: Vec<Turn> = (1..=6).map(Turn::of).collect();
        assert_eq!(
            turns,
            [
                Turn::Cut,
                Turn::Stall,
                Turn::Unreachable,
                Turn::Cut,
                Turn::Stall,
                Turn::Unreachable
            ]
        );
    }
}
