//! `rebalance`: a second `redmirror apply` joins the group and leaves it
//! again, alternately with SIGTERM and kill -9, so partitions move under
//! load.

use super::Env;
use crate::procs::Role;

/// What one injection does with the second apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// It joins the group (started the first time, again later): odd turns.
    Join,
    /// It leaves with SIGTERM: turns 2, 6, 10, ...
    LeaveGracefully,
    /// It leaves with kill -9: turns 4, 8, 12, ...
    LeaveKilled,
}

impl Turn {
    fn of(turn: u32) -> Turn {
        match turn % 4 {
            1 | 3 => Turn::Join,
            2 => Turn::LeaveGracefully,
            _ => Turn::LeaveKilled,
        }
    }
}

/// Starts or stops the second apply as this turn says.
pub(super) fn inject(env: &mut Env, turn: u32) -> anyhow::Result<String> {
    match Turn::of(turn) {
        Turn::Join => {
            if env.procs.iter().any(|p| p.role == Role::SecondApply) {
                env.proc(Role::SecondApply).start()?;
            } else {
                env.add_proc(Role::SecondApply)?;
            }
            Ok("second apply joins the group".into())
        }
        Turn::LeaveGracefully => {
            env.proc(Role::SecondApply).term();
            Ok("second apply leaves (SIGTERM)".into())
        }
        Turn::LeaveKilled => {
            env.proc(Role::SecondApply).kill();
            Ok("second apply leaves (kill -9)".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_joins_on_odd_turns_and_leaves_alternately_gracefully_and_killed() {
        let turns: Vec<Turn> = (1..=8).map(Turn::of).collect();
        assert_eq!(
            turns,
            [
                Turn::Join,
                Turn::LeaveGracefully,
                Turn::Join,
                Turn::LeaveKilled,
                Turn::Join,
                Turn::LeaveGracefully,
                Turn::Join,
                Turn::LeaveKilled
            ]
        );
    }
}
