//! Named readiness checks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Readiness of a process: a set of named components, each up or down.
/// `/readyz` is 200 only when every registered component is up.
#[derive(Clone, Default, Debug)]
pub struct Health {
    inner: Arc<Mutex<BTreeMap<String, bool>>>,
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
        let mut map = self.inner.lock().expect("health lock");
        if map.contains_key(component) {
            return;
        }
        map.insert(component.to_string(), false);
        drop(map);
        metrics::gauge!(crate::metrics::READY, "component" => component.to_string()).set(0.0);
        tracing::info!(component, "Waiting for it to come up.");
    }

    /// Marks a component up or down and mirrors it in `redmirror_ready`.
    pub fn set(&self, component: &str, ready: bool) {
        let mut map = self.inner.lock().expect("health lock");
        let changed = map.insert(component.to_string(), ready) != Some(ready);
        drop(map);
        metrics::gauge!(crate::metrics::READY, "component" => component.to_string()).set(if ready { 1.0 } else { 0.0 });
        if changed {
            if ready {
                tracing::info!(component, "Ready.");
            } else {
                tracing::warn!(component, "Not ready.");
            }
        }
    }

    /// Removes a component (it no longer gates readiness).
    pub fn remove(&self, component: &str) {
        self.inner.lock().expect("health lock").remove(component);
    }

    /// True when every registered component is up.
    pub fn ready(&self) -> bool {
        self.inner.lock().expect("health lock").values().all(|v| *v)
    }

    /// Snapshot of every component.
    pub fn components(&self) -> BTreeMap<String, bool> {
        self.inner.lock().expect("health lock").clone()
    }
}
