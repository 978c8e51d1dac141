//! Named readiness checks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One thing a process's readiness waits on. Its name labels
/// `redmirror_ready` and keys the components of `/readyz` and
/// `/v1/status`; it also knows the setting behind it and what an operator
/// can check when it is down, so every WARN about it says the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// The source Redis (capture's connection and subscriptions).
    Source,
    /// The destination Redis (apply's writes, leases, the reconciler).
    Destination,
    /// The Kafka brokers (apply's consumer, start-up metadata).
    Kafka,
    /// Capture's producer: down while publishing fails.
    Publish,
    /// The source's keyspace notifications: down while classes are missing.
    Notifications,
    /// Apply's field rules: down while events arrive made under others.
    Rules,
}

impl Component {
    /// Every component, in the order of their names.
    pub const ALL: [Component; 6] = [
        Component::Destination,
        Component::Kafka,
        Component::Notifications,
        Component::Publish,
        Component::Rules,
        Component::Source,
    ];

    /// The name on the wire (`/readyz`, `/v1/status`, metric label).
    pub const fn name(self) -> &'static str {
        match self {
            Component::Source => "source",
            Component::Destination => "destination",
            Component::Kafka => "kafka",
            Component::Publish => "publish",
            Component::Notifications => "notifications",
            Component::Rules => "rules",
        }
    }

    /// The component of a wire name; `None` for a name this version does
    /// not know (a newer process's).
    pub fn from_name(name: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.name() == name)
    }

    /// What people call it, in a sentence ("the source").
    pub const fn for_people(self) -> &'static str {
        match self {
            Component::Source => "the source",
            Component::Destination => "the destination",
            Component::Kafka => "Kafka",
            Component::Publish => "publishing to Kafka",
            Component::Notifications => "the source's keyspace notifications",
            Component::Rules => "the field rules",
        }
    }

    /// The setting (or server option) that decides it.
    pub const fn setting(self) -> &'static str {
        match self {
            Component::Source => "REDMIRROR_SOURCE_URL",
            Component::Destination => "REDMIRROR_DEST_URL",
            Component::Kafka => "REDMIRROR_KAFKA_BROKERS",
            Component::Publish => "REDMIRROR_KAFKA_BROKERS, REDMIRROR_TOPIC",
            Component::Notifications => "notify-keyspace-events",
            Component::Rules => "REDMIRROR_INCLUDED_FIELDS, REDMIRROR_MASKED_FIELDS, REDMIRROR_MASK_KEY",
        }
    }

    /// What an operator can check when it is down.
    pub const fn hint(self) -> &'static str {
        match self {
            Component::Source => {
                "Check that the source Redis answers at that address (redis-cli PING) and that nothing between drops \
                 the connection."
            }
            Component::Destination => {
                "Check that the destination Redis answers at that address (redis-cli PING), and its memory and \
                 maxclients."
            }
            Component::Kafka => {
                "Check that the brokers answer (kafka-broker-api-versions.sh --bootstrap-server ...) and the client \
                 settings."
            }
            Component::Publish => {
                "/readyz gives the producer's error; check the brokers and that the change topic exists."
            }
            Component::Notifications => {
                "/readyz and the log line before this one give the CONFIG SET that restores them."
            }
            Component::Rules => {
                "Events arrive made under other field rules than this process's: /readyz names both fingerprints."
            }
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Readiness of a process: a set of components, each up or down, and for
/// a component down the reason when one is known. `/readyz` is 200 only
/// when every registered component is up.
#[derive(Clone, Default, Debug)]
pub struct Health {
    inner: Arc<Mutex<State>>,
}

#[derive(Default, Debug)]
struct State {
    up: BTreeMap<Component, bool>,
    why: BTreeMap<Component, String>,
    /// The check that marked a component down, when one did
    /// ([`Health::set_down_by`]).
    by: BTreeMap<Component, &'static str>,
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
    pub fn register(&self, component: Component) {
        let mut state = self.inner.lock().expect("health lock");
        if state.up.contains_key(&component) {
            return;
        }
        state.up.insert(component, false);
        drop(state);
        metrics::gauge!(crate::metrics::READY, "component" => component.name()).set(0.0);
        // Whoever waits for it logs the wait with its cause (one line).
        tracing::debug!(
            component = component.name(),
            "{} ({}) registered: not ready until it is up.",
            capitalised(component.for_people()),
            component.setting()
        );
    }

    /// Marks a component up or down and mirrors it in `redmirror_ready`.
    /// Up clears the reason given by [`Health::set_down`].
    pub fn set(&self, component: Component, ready: bool) {
        let mut state = self.inner.lock().expect("health lock");
        let changed = state.up.insert(component, ready) != Some(ready);
        if ready {
            state.why.remove(&component);
            state.by.remove(&component);
        }
        drop(state);
        metrics::gauge!(crate::metrics::READY, "component" => component.name()).set(if ready { 1.0 } else { 0.0 });
        if changed {
            let name = capitalised(component.for_people());
            if ready {
                tracing::info!(component = component.name(), "{name} is up.");
            } else {
                tracing::warn!(
                    component = component.name(),
                    "{name} ({}) is down: /readyz fails until it is back; the process retries on its own and \
                     catches up, nothing is skipped. {}",
                    component.setting(),
                    component.hint()
                );
            }
        }
    }

    /// Marks a component down, saying why (shown by `/readyz`; the caller
    /// logs it).
    pub fn set_down(&self, component: Component, reason: &str) {
        let mut state = self.inner.lock().expect("health lock");
        state.why.insert(component, reason.to_string());
        state.by.remove(&component);
        drop(state);
        self.set(component, false);
    }

    /// Marks a component down on behalf of the check `by` (a periodic
    /// probe), saying why: only [`Health::set_up_if_down_by`] from the same
    /// check marks it up again, so a probe never clears what something
    /// else found (a failing write) and the last one to say wins.
    pub fn set_down_by(&self, component: Component, by: &'static str, reason: &str) {
        let mut state = self.inner.lock().expect("health lock");
        state.why.insert(component, reason.to_string());
        state.by.insert(component, by);
        drop(state);
        self.set(component, false);
    }

    /// Marks a component up if the check `by` is what marked it down (and
    /// nothing has said otherwise since).
    pub fn set_up_if_down_by(&self, component: Component, by: &'static str) {
        let mine = self.inner.lock().expect("health lock").by.get(&component) == Some(&by);
        if mine {
            self.set(component, true);
        }
    }

    /// Removes a component (it no longer gates readiness).
    pub fn remove(&self, component: Component) {
        let mut state = self.inner.lock().expect("health lock");
        state.up.remove(&component);
        state.why.remove(&component);
        state.by.remove(&component);
    }

    /// True when every registered component is up.
    pub fn ready(&self) -> bool {
        self.inner.lock().expect("health lock").up.values().all(|v| *v)
    }

    /// Whether `component` is registered and up (`None`: not registered).
    pub fn is_up(&self, component: Component) -> Option<bool> {
        self.inner.lock().expect("health lock").up.get(&component).copied()
    }

    /// Why `component` is down, when it said.
    pub fn reason(&self, component: Component) -> Option<String> {
        self.inner.lock().expect("health lock").why.get(&component).cloned()
    }

    /// Every component by its wire name, up or not.
    pub fn components(&self) -> BTreeMap<String, bool> {
        let state = self.inner.lock().expect("health lock");
        state.up.iter().map(|(c, up)| (c.name().to_string(), *up)).collect()
    }

    /// Why components are down, by wire name, for those that said.
    pub fn reasons(&self) -> BTreeMap<String, String> {
        let state = self.inner.lock().expect("health lock");
        state
            .why
            .iter()
            .map(|(c, why)| (c.name().to_string(), why.clone()))
            .collect()
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_lasts_while_the_component_is_down() {
        let h = Health::new();
        h.register(Component::Source);
        h.set(Component::Source, true);
        assert!(h.ready());
        h.set_down(Component::Source, "because");
        assert!(!h.ready());
        assert_eq!(h.reasons().get("source").map(String::as_str), Some("because"));
        h.set(Component::Source, true);
        assert!(h.ready());
        assert!(h.reasons().is_empty());
    }

    #[test]
    fn every_component_is_found_by_its_wire_name() {
        for c in Component::ALL {
            assert_eq!(Component::from_name(c.name()), Some(c));
        }
        let mut names: Vec<&str> = Component::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Component::ALL.len(), "names are unique");
        assert_eq!(Component::from_name("something-newer"), None);
    }

    #[test]
    fn a_check_lifts_only_the_down_it_set() {
        let h = Health::new();
        h.register(Component::Destination);
        h.set_down_by(Component::Destination, "ping", "no PING reply");
        h.set_up_if_down_by(Component::Destination, "ping");
        assert!(h.ready());
        h.set_down_by(Component::Destination, "ping", "no PING reply");
        h.set_down(Component::Destination, "a write failed");
        h.set_up_if_down_by(Component::Destination, "ping");
        assert!(!h.ready(), "another's down stays");
        assert_eq!(h.reason(Component::Destination).as_deref(), Some("a write failed"));
        h.set_down_by(Component::Destination, "lag", "offsets unreadable");
        h.set_up_if_down_by(Component::Destination, "ping");
        assert!(!h.ready(), "another check's down stays");
        h.set_up_if_down_by(Component::Destination, "lag");
        assert!(h.ready());
        h.set_up_if_down_by(Component::Destination, "lag");
        assert!(h.ready(), "lifting what is up changes nothing");
    }
}
