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
    /// start-up is normal, so it is logged at INFO; a component that goes
    /// down later is a WARN ([`Health::set`]).
    pub fn register(&self, component: &str) {
        let mut state = self.inner.lock().expect("health lock");
        if state.up.contains_key(component) {
            return;
        }
        state.up.insert(component.to_string(), false);
        drop(state);
        metrics::gauge!(crate::metrics::READY, "component" => component.to_string()).set(0.0);
        tracing::info!(component, "Waiting for it to come up.");
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
            if ready {
                tracing::info!(component, "Ready.");
            } else {
                tracing::warn!(component, "Not ready.");
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
}
