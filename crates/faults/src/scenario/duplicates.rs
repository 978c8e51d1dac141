//! `duplicates`: apply (and reconcile) restart in a fresh consumer group,
//! so apply reads the whole topic again: every event arrives a second time
//! and must do no harm. Apply is stopped alternately with kill -9 and
//! SIGTERM.

use super::Env;
use crate::procs::Role;

/// How apply is stopped this turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// kill -9: odd turns.
    Kill,
    /// SIGTERM: even turns.
    Terminate,
}

impl Turn {
    fn of(turn: u32) -> Turn {
        if turn % 2 == 1 {
            Turn::Kill
        } else {
            Turn::Terminate
        }
    }
}

/// Stops apply and reconcile and starts both in group `{group}-rewound-{turn}`.
pub(super) fn inject(env: &mut Env, turn: u32) -> anyhow::Result<String> {
    let group = format!("{}-rewound-{turn}", env.group);
    let m = |o: &str| format!("redmirror_apply_events_total{{outcome=\"{o}\"}}");
    let (applied, stale) = {
        let p = env.proc(Role::Apply);
        (
            p.metric(&m("applied")).unwrap_or(0.0),
            p.metric(&m("skipped_stale")).unwrap_or(0.0),
        )
    };
    let how = match Turn::of(turn) {
        Turn::Kill => {
            env.proc(Role::Apply).kill();
            "kill -9"
        }
        Turn::Terminate => {
            env.proc(Role::Apply).term();
            "SIGTERM"
        }
    };
    env.proc(Role::Reconcile).term();
    for role in [Role::Apply, Role::Reconcile] {
        let p = env.proc(role);
        p.set_env("REDMIRROR_GROUP_ID", &group);
        p.start()?;
    }
    Ok(format!(
        "apply stopped ({how}; it had applied {applied} and skipped {stale} stale events); apply + reconcile \
         restarted in fresh group {group} (re-reads the topic from the start)"
    ))
}
