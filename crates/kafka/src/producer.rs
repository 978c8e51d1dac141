//! The producer: librdkafka's producer with one thread of ours serving its
//! delivery reports, each one resolving the future its send returned.
//!
//! rust-rdkafka's `FutureProducer` serves them from a thread that calls
//! `poll` with a 100 ms deadline in a loop. Its poll waits in whole
//! milliseconds and loops until the deadline, so the deadline's last
//! fraction of a millisecond becomes zero-timeout polls: the thread spun
//! for up to 1 ms of every 100, 45 % of an idle `redmirror run`'s CPU
//! (`docs/benchmarks.md`). The thread here waits the same way with a
//! deadline of [`POLL_EVERY`], so the spin is at most 1 ms a second; a
//! report is served the moment librdkafka queues it either way, and the
//! deadline only bounds how long the thread outlives the producer.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::oneshot;

use crate::publish::Written;

/// How long the delivery-report thread waits in one `poll` call.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// What the broker said about one message.
type Delivery = Result<Written, KafkaError>;

/// Hands each delivery report to the future of its send.
pub struct Acks;

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<oneshot::Sender<Delivery>>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(m) => Ok(Written {
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, _)) => Err(e.clone()),
        };
        // The sender may have stopped waiting (shutdown); nothing to tell.
        let _ = ack.send(outcome);
    }
}

/// The idempotent producer with its delivery-report thread. Clones share
/// both; the thread stops within [`POLL_EVERY`] of the last clone's drop,
/// and the producer is dropped (purged, as librdkafka's drop does) there.
#[derive(Clone)]
pub struct Producer {
    base: Arc<BaseProducer<Acks>>,
    _poller: Arc<Poller>,
}

/// Tells the delivery-report thread to stop when dropped.
struct Poller(Arc<AtomicBool>);

impl Drop for Poller {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Producer {
    /// A producer with `config`, and its delivery-report thread.
    pub fn new(config: &ClientConfig) -> KafkaResult<Self> {
        let base = Arc::new(BaseProducer::from_config_and_context(config, Acks)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (polled, stopped) = (Arc::clone(&base), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("rdk:acks".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    polled.poll(POLL_EVERY);
                }
            })
            .map_err(|e| KafkaError::ClientCreation(format!("cannot start the delivery-report thread: {e}")))?;
        Ok(Producer {
            base,
            _poller: Arc::new(Poller(stop)),
        })
    }

    /// Enqueues a message; the future resolves with the broker's answer.
    /// Refused as librdkafka refuses it (e.g. `QueueFull`), the message
    /// given back untouched in the error.
    #[allow(clippy::result_large_err)] // the record goes back to be sent again
    pub fn send<'a>(
        &self,
        topic: &'a str,
        key: &'a [u8],
        payload: &'a [u8],
        headers: OwnedHeaders,
    ) -> Result<impl Future<Output = Delivery> + Send + 'static, (KafkaError, OwnedHeaders)> {
        let (ack, answer) = oneshot::channel();
        let record = BaseRecord::with_opaque_to(topic, Box::new(ack))
            .key(key)
            .payload(payload)
            .headers(headers);
        match self.base.send(record) {
            Ok(()) => Ok(async move { answer.await.unwrap_or(Err(KafkaError::Canceled)) }),
            Err((e, record)) => Err((e, record.headers.unwrap_or_default())),
        }
    }

    /// Messages enqueued and not yet acknowledged.
    pub fn in_flight_count(&self) -> i32 {
        self.base.in_flight_count()
    }

    /// librdkafka's fatal error, once it has one.
    pub fn fatal_error(&self) -> Option<(rdkafka::types::RDKafkaErrorCode, String)> {
        self.base.client().fatal_error()
    }

    /// Waits until every enqueued message is acknowledged (or `timeout`).
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        self.base.flush(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message no broker takes fails its future (the delivery report
    /// arrives through the thread), and the thread ends with the producer.
    #[tokio::test]
    async fn an_undeliverable_message_fails_its_future_and_the_thread_ends_with_the_producer() {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", "127.0.0.1:1")
            .set("message.timeout.ms", "200");
        let producer = Producer::new(&c).expect("producer");
        let weak = Arc::downgrade(&producer.base);
        let delivery = producer
            .send("t", b"k", b"v", OwnedHeaders::new())
            .map_err(|(e, _)| e)
            .expect("enqueued");
        let answer = tokio::time::timeout(Duration::from_secs(10), delivery)
            .await
            .expect("a delivery report within 10 s");
        assert!(answer.is_err(), "{answer:?}");
        drop(producer);
        let end = std::time::Instant::now() + POLL_EVERY * 5;
        while weak.strong_count() > 0 {
            assert!(
                std::time::Instant::now() < end,
                "the delivery-report thread outlived the producer"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
