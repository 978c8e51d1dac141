//! A broker whose log survives a restart, for the `broker-restart`
//! scenario: librdkafka's mock cluster (one broker) running in this
//! process. "Down" drops every connection and refuses new ones, as a killed
//! broker would; "up" accepts connections again with the log, the groups
//! and their committed offsets intact, as a restarted Kafka broker would.
//!
//! Why not a Tansu process: the only Tansu build available here keeps its
//! log in memory (lost on restart, which no real Kafka does) or in S3.
//! With S3 (a local moto server) Tansu 0.6.0 came back from `kill -9` with
//! its data intact but answered every fetch below the high watermark with
//! an empty record set, so consumers stalled for good; see
//! docs/reliability.md.

use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context};
use rdkafka::mocking::MockCluster;

/// The mock broker's id (librdkafka numbers mock brokers from 1).
const BROKER_ID: i32 = 1;

enum Cmd {
    Down(mpsc::Sender<Result<(), String>>),
    Up(mpsc::Sender<Result<(), String>>),
}

/// A one-broker mock cluster on its own thread; stopped on drop.
pub struct MockBroker {
    bootstrap: String,
    tx: Option<mpsc::Sender<Cmd>>,
    thread: Option<JoinHandle<()>>,
}

impl MockBroker {
    /// Starts the cluster with these topics (name, partitions): the mock
    /// cluster does not serve CreateTopics to other processes.
    pub fn start(topics: &[(String, i32)]) -> anyhow::Result<Self> {
        let topics = topics.to_vec();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (tx, rx) = mpsc::channel::<Cmd>();
        let thread = std::thread::Builder::new()
            .name("mock-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                for (name, partitions) in &topics {
                    if let Err(e) = cluster.create_topic(name, *partitions, 1) {
                        let _ = ready_tx.send(Err(format!("creating topic {name}: {e}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Runs until the sender is dropped.
                for cmd in rx {
                    let (r, reply) = match cmd {
                        Cmd::Down(reply) => (cluster.broker_down(BROKER_ID), reply),
                        Cmd::Up(reply) => (cluster.broker_up(BROKER_ID), reply),
                    };
                    let _ = reply.send(r.map_err(|e| e.to_string()));
                }
            })
            .context("spawn the mock broker thread")?;
        let bootstrap = ready_rx
            .recv()
            .context("mock broker thread")?
            .map_err(|e| anyhow!("mock cluster: {e}"))?;
        Ok(MockBroker {
            bootstrap,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    fn send(&self, make: fn(mpsc::Sender<Result<(), String>>) -> Cmd) -> anyhow::Result<()> {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.tx
            .as_ref()
            .context("mock broker stopped")?
            .send(make(reply_tx))
            .map_err(|_| anyhow!("mock broker thread gone"))?;
        reply_rx
            .recv()
            .context("mock broker thread gone")?
            .map_err(|e| anyhow!("mock broker: {e}"))
    }

    /// Drops every connection and refuses new ones; the log is kept.
    pub fn down(&self) -> anyhow::Result<()> {
        self.send(Cmd::Down)
    }

    /// Accepts connections again.
    pub fn up(&self) -> anyhow::Result<()> {
        self.send(Cmd::Up)
    }
}

impl Drop for MockBroker {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
