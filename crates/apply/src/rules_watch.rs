//! Telling the operator that events are made under other field rules.
//!
//! In a split deployment capture and apply are configured apart. Apply never
//! writes an upsert made under other field rules (SPEC section 8; outcome
//! `skipped_rules`), so a mismatch would otherwise only show as a mirror
//! that stops changing. Each foreign fingerprint is logged at ERROR once,
//! and readiness fails (component `rules`, with the reason) until an
//! upsert made under this process's rules is applied again.

use std::collections::HashSet;
use std::sync::Mutex;

use redmirror_telemetry::{Component, Health};

use crate::Outcome;

/// The fingerprints seen so far and this process's own.
#[derive(Debug)]
pub struct RulesWatch {
    mine: String,
    seen: Mutex<HashSet<String>>,
}

impl RulesWatch {
    /// A watch for a process whose rules have this fingerprint; registers
    /// the `rules` component as up.
    pub fn new(mine: &str, health: &Health) -> Self {
        health.register(Component::Rules);
        health.set(Component::Rules, true);
        RulesWatch {
            mine: mine.to_string(),
            seen: Mutex::default(),
        }
    }

    /// The reason `/readyz` gives for events made under `theirs`.
    pub fn reason(&self, theirs: &str) -> String {
        let theirs = if theirs.is_empty() {
            "(none: events from before field rules)"
        } else {
            theirs
        };
        format!(
            "events on the topic are made under field rules {theirs}, this process's rules are {}: they are \
             skipped (skipped_rules); give capture and apply the same REDMIRROR_EXCLUDED_FIELDS, \
             REDMIRROR_INCLUDED_FIELDS, REDMIRROR_MASKED_FIELDS and REDMIRROR_MASK_KEY",
            self.mine
        )
    }

    /// Looks at one written batch's outcomes.
    pub fn observe<'a>(&self, outcomes: impl IntoIterator<Item = &'a Outcome>, health: &Health) {
        let mut in_step = false;
        let mut foreign = None;
        for o in outcomes {
            match o {
                Outcome::SkippedRules(f) => foreign = Some(f),
                Outcome::Applied => in_step = true,
                _ => {}
            }
        }
        if let Some(f) = foreign {
            let reason = self.reason(f);
            if self.seen.lock().expect("rules watch lock").insert(f.clone()) {
                tracing::error!(fingerprint = %f, rules = %self.mine, "{reason}");
            }
            health.set_down(Component::Rules, &reason);
        } else if in_step && !health.is_up(Component::Rules).unwrap_or(true) {
            health.set(Component::Rules, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_rules_fail_readiness_until_an_upsert_is_applied() {
        let h = Health::new();
        let w = RulesWatch::new("aaaa", &h);
        assert!(h.ready());
        w.observe(&[Outcome::Applied, Outcome::SkippedRules("bbbb".into())], &h);
        assert!(!h.ready());
        assert!(h.reason(Component::Rules).unwrap_or_default().contains("bbbb"));
        w.observe(&[Outcome::Deleted], &h);
        assert!(!h.ready(), "a delete says nothing about the rules");
        w.observe(&[Outcome::Applied], &h);
        assert!(h.ready());
    }
}
