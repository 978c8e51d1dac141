//! End-to-end suite: the `redmirror` binary against real `redis-server`
//! processes and an Apache Kafka broker process (one per test binary,
//! `Broker::shared`; `REDMIRROR_TEST_BROKER=tansu` switches to Tansu).
//!
//! Every test starts its own Redis servers on free ports (guards kill them) and
//! uses its own topic and consumer group. Waits have deadlines; nothing
//! sleeps for synchronisation.

mod bad_input;
mod broker;
mod cli;
mod cluster;
mod console;
mod delivery;
mod failover;
mod flows;
mod flushes;
#[allow(dead_code)]
mod harness;
mod history;
mod liveness;
mod ops;
mod pipeline;
mod protect;
mod reconcile;
mod rewind;
mod rules;
mod scale;
mod source_commands;
mod web;
