//! Named readiness checks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Readiness of a process: a set of named components, each up or down,
/// and for a component down the reason when one is known. `/readyz` is 200
/// only when every registered component is up.
#[derive(Clone, Default, Debug)]
pub struct Health {
    inner: Arc<Mutex<State>>,
}

#[derive(Default, Debug)]
struct State {
    up: BTreeMap<String, bool>,
    why: BTreeMap<String, String>,
}

impl Health {
    /// A new, empty health registry (ready: nothing to wait for).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a component as down until [`Health::set`] says otherwise;
    /// one already known keeps its state. Waiting for a component at
    /// start-up is normal and logged, with its cause, by whoever waits; a
    /// component that goes down later is a WARN ([`Health::set`]).
    pub fn register(&self, component: &str) {
        let mut state = self.inner.lock().expect("health lock");
        if state.up.contains_key(component) {
            return;
        }
        state.up.insert(component.to_string(), false);
        drop(state);
        metrics::gauge!(crate::metrics::READY, "component" => component.to_string()).set(0.0);
        // Whoever waits for it logs the wait with its cause (one line).
        let (name, what, _) = hint(component);
        tracing::debug!(
            component,
            "{} ({what}) registered: not ready until it is up.",
            capitalised(name)
        );
    }

    /// Marks a component up or down and mirrors it in `redmirror_ready`.
    /// Up clears the reason given by [`Health::set_down`].
    pub fn set(&self, component: &str, ready: bool) {
        let mut state = self.inner.lock().expect("health lock");
        let changed = state.up.insert(component.to_string(), ready) != Some(ready);
        if ready {
            state.why.remove(component);
        }
        drop(state);
        metrics::gauge!(crate::metrics::READY, "component" => component.to_string()).set(if ready { 1.0 } else { 0.0 });
        if changed {
            let (name, what, todo) = hint(component);
            if ready {
                tracing::info!(component, "{} is up.", capitalised(name));
            } else {
                tracing::warn!(
                    component,
                    "{} ({what}) is down: /readyz fails until it is back; the process retries on its \
                     own and catches up, nothing is skipped. {todo}",
                    capitalised(name)
                );
            }
        }
    }

    /// Marks a component down, saying why (shown by `/readyz`; the caller
    /// logs it).
    pub fn set_down(&self, component: &str, reason: &str) {
        self.inner
            .lock()
            .expect("health lock")
            .why
            .insert(component.to_string(), reason.to_string());
        self.set(component, false);
    }

    /// Marks a component up if it is down for `reason` (and for nothing
    /// said since): a check lifts only what it set.
    pub fn set_up_if_down_for(&self, component: &str, reason: &str) {
        let mine = self
            .inner
            .lock()
            .expect("health lock")
            .why
            .get(component)
            .map(String::as_str)
            == Some(reason);
        if mine {
            self.set(component, true);
        }
    }

    /// Removes a component (it no longer gates readiness).
    pub fn remove(&self, component: &str) {
        let mut state = self.inner.lock().expect("health lock");
        state.up.remove(component);
        state.why.remove(component);
    }

    /// True when every registered component is up.
    pub fn ready(&self) -> bool {
        self.inner.lock().expect("health lock").up.values().all(|v| *v)
    }

    /// Snapshot of every component.
    pub fn components(&self) -> BTreeMap<String, bool> {
        self.inner.lock().expect("health lock").up.clone()
    }

    /// Why components are down, for those that said.
    pub fn reasons(&self) -> BTreeMap<String, String> {
        self.inner.lock().expect("health lock").why.clone()
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

/// A component's name for people, its setting, and what an operator can
/// check when it is down.
fn hint(component: &str) -> (&str, &'static str, &'static str) {
    match component {
        "source" => (
            "the source",
            "REDMIRROR_SOURCE_URL",
            "Check that the source Redis answers at that address (redis-cli PING) and that nothing between drops the connection.",
        ),
        "destination" => (
            "the destination",
            "REDMIRROR_DEST_URL",
            "Check that the destination Redis answers at that address (redis-cli PING), and its memory and maxclients.",
        ),
        "kafka" => (
            "Kafka",
            "REDMIRROR_KAFKA_BROKERS",
            "Check that the brokers answer (kafka-broker-api-versions.sh --bootstrap-server ...) and the client settings.",
        ),
        "publish" => (
            "publishing to Kafka",
            "REDMIRROR_KAFKA_BROKERS, REDMIRROR_TOPIC",
            "/readyz gives the producer's error; check the brokers and that the change topic exists.",
        ),
        "notifications" => (
            "the source's keyspace notifications",
            "notify-keyspace-events",
            "/readyz and the log line before this one give the CONFIG SET that restores them.",
        ),
        "rules" => (
            "the field rules",
            "REDMIRROR_INCLUDED_FIELDS, REDMIRROR_MASKED_FIELDS, REDMIRROR_MASK_KEY",
            "Events arrive made under other field rules than this process's: /readyz names both fingerprints.",
        ),
        other => (other, "a connection this process needs", "See the log lines before this one."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_lasts_while_the_component_is_down() {
        let h = Health::new();
        h.register("a");
        h.set("a", true);
        assert!(h.ready());
        h.set_down("a", "because");
        assert!(!h.ready());
        assert_eq!(h.reasons().get("a").map(String::as_str), Some("because"));
        h.set("a", true);
        assert!(h.ready());
        assert!(h.reasons().is_empty());
    }

    #[test]
    fn a_check_lifts_only_the_down_it_set() {
        let h = Health::new();
        h.register("dest");
        h.set_down("dest", "no PING reply");
        h.set_up_if_down_for("dest", "no PING reply");
        assert!(h.ready());
        h.set_down("dest", "no PING reply");
        h.set_down("dest", "a write failed");
        h.set_up_if_down_for("dest", "no PING reply");
        assert!(!h.ready(), "another check's down stays");
        h.set_up_if_down_for("dest", "a write failed");
        assert!(h.ready());
    }
}
