//! End-to-end suite: the `redmirror` binary against real `redis-server`
//! processes and a separate Kafka-compatible broker process (Tansu).
//!
//! Every test starts its own servers on free ports (guards kill them) and
//! uses its own topic and consumer group. Waits have deadlines; nothing
//! sleeps for synchronisation.

mod bad_input;
mod cli;
mod delivery;
#[allow(dead_code)]
mod harness;
mod history;
mod ops;
mod pipeline;
mod reconcile;
