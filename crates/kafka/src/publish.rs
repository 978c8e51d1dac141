//! Publishing events and dead letters.

use std::future::Future;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::types::RDKafkaErrorCode;
use redmirror_core::FlowEvent;
use redmirror_telemetry::events::{Every, InternalEvent};

use crate::producer::Producer;
use crate::{Error, Kafka};

/// Where a message was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Publishes change events to the change topic: key = flow id, headers =
/// schema version, origin, source time. The producer is idempotent with
/// `acks=all`, so a retried send is written once and per-flow order holds.
#[derive(Clone)]
pub struct Publisher {
    producer: Producer,
    topic: String,
}

impl Publisher {
    /// A publisher to `topic`.
    pub fn new(kafka: &Kafka, topic: &str) -> Result<Self, Error> {
        Ok(Publisher {
            producer: kafka.producer()?,
            topic: topic.to_string(),
        })
    }

    /// The change topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// librdkafka's fatal error, once the producer has one (e.g. the
    /// idempotent producer lost its guarantees): it publishes nothing more.
    pub fn fatal_error(&self) -> Option<String> {
        self.producer
            .fatal_error()
            .map(|(code, reason)| format!("{code:?}: {reason}"))
    }

    /// Messages waiting in the producer's queue.
    pub fn queue_len(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Enqueues an event now (waiting while the local queue is full) and
    /// returns a future that resolves when the broker acknowledged it.
    pub async fn enqueue(&self, event: &FlowEvent) -> impl Future<Output = Result<Written, Error>> + Send + 'static {
        let payload = event.encode_to_bytes();
        let mut headers = OwnedHeaders::new_with_capacity(3);
        for (name, value) in event.headers() {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let sent = self.enqueue_raw(&event.flow_id, &payload, headers).await;
        let topic = self.topic.clone();
        async move {
            let publish_error = |source: KafkaError| Error::Publish {
                topic,
                source: source.into(),
            };
            sent.map_err(publish_error.clone())?.await.map_err(publish_error)
        }
    }

    /// Enqueues raw bytes with headers (used to re-drive dead letters).
    pub async fn enqueue_raw(
        &self,
        key: &[u8],
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<impl Future<Output = Result<Written, KafkaError>> + Send + 'static, KafkaError> {
        send_with_backpressure(&self.producer, &self.topic, key, payload, headers).await
    }

    /// Publishes one event and waits for the acknowledgement.
    pub async fn publish(&self, event: &FlowEvent) -> Result<Written, Error> {
        self.enqueue(event).await.await
    }

    /// Waits until every queued message is acknowledged (or `timeout`).
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        self.producer.flush(timeout).map_err(|source| Error::Publish {
            topic: self.topic.clone(),
            source: source.into(),
        })
    }
}

async fn send_with_backpressure(
    producer: &Producer,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    mut headers: OwnedHeaders,
) -> Result<impl Future<Output = Result<Written, KafkaError>> + Send + 'static, KafkaError> {
    loop {
        match producer.send(topic, key, payload, headers) {
            Ok(fut) => return Ok(fut),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), h)) => {
                headers = h;
                QueueFull { topic }.emit();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// The producer's queue was full: the send waits and is tried again (so a
/// slow broker slows capture down instead of losing events). Counted every
/// time, logged at most every 10 s.
struct QueueFull<'a> {
    topic: &'a str,
}

static QUEUE_FULL_LOG: Every = Every::new(Duration::from_secs(10));

impl InternalEvent for QueueFull<'_> {
    fn emit(self) {
        use redmirror_telemetry::metrics::{PublishRetry, PUBLISH_RETRIES};
        metrics::counter!(PUBLISH_RETRIES, "reason" => PublishRetry::QueueFull.label()).increment(1);
        if QUEUE_FULL_LOG.ready() {
            tracing::warn!(
                topic = self.topic,
                "The Kafka producer's queue is full: publishing waits for the broker (nothing is dropped); \
                 redmirror_publish_retries_total{{reason=\"queue_full\"}} counts each wait. Check the brokers' \
                 health and throughput."
            );
        }
    }
}

/// An event written to the dead-letter topic: counted in
/// `redmirror_dlq_events_total` and logged with where it came from and why
/// (dead letters are rare; each one is worth a line).
struct DeadLettered<'a> {
    letter: &'a DeadLetter<'a>,
    dlq: &'a str,
}

impl InternalEvent for DeadLettered<'_> {
    fn emit(self) {
        metrics::counter!(redmirror_telemetry::metrics::DLQ_EVENTS).increment(1);
        let d = self.letter;
        tracing::warn!(
            topic = d.topic,
            partition = d.partition,
            offset = d.offset,
            reason_code = d.reason_code,
            reason = %d.reason,
            dlq = self.dlq,
            "Event dead-lettered (see `redmirror dlq list`)."
        );
    }
}

/// Header names on dead-lettered messages.
pub mod dlq_headers {
    /// Short reason code (`undecodable`, `wrong_type`, `too_large`, ...).
    pub const REASON_CODE: &str = "redmirror-dlq-reason-code";
    /// Human-readable reason.
    pub const REASON: &str = "redmirror-dlq-reason";
    /// Original topic.
    pub const TOPIC: &str = "redmirror-dlq-topic";
    /// Original partition.
    pub const PARTITION: &str = "redmirror-dlq-partition";
    /// Original offset.
    pub const OFFSET: &str = "redmirror-dlq-offset";
    /// When it was dead-lettered (microseconds since the epoch).
    pub const TIME: &str = "redmirror-dlq-time-us";
}

/// A message that can never be applied, with why and where it came from.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// The original key (may be empty).
    pub key: &'a [u8],
    /// The original payload (may be empty).
    pub payload: &'a [u8],
    /// Short reason code.
    pub reason_code: &'a str,
    /// Human-readable reason.
    pub reason: String,
    /// Original topic.
    pub topic: &'a str,
    /// Original partition.
    pub partition: i32,
    /// Original offset.
    pub offset: i64,
}

impl Publisher {
    /// Writes a dead letter to this publisher's topic (the DLQ) and waits
    /// for the acknowledgement.
    pub async fn dead_letter(&self, d: &DeadLetter<'_>) -> Result<Written, Error> {
        use dlq_headers::*;
        let values = [
            (REASON_CODE, d.reason_code.to_string()),
            (REASON, d.reason.clone()),
            (TOPIC, d.topic.to_string()),
            (PARTITION, d.partition.to_string()),
            (OFFSET, d.offset.to_string()),
            (TIME, redmirror_core::now_us().to_string()),
        ];
        let mut headers = OwnedHeaders::new_with_capacity(values.len());
        for (key, value) in &values {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let topic = self.topic.clone();
        let fut = self
            .enqueue_raw(d.key, d.payload, headers)
            .await
            .map_err(|source| Error::Publish {
                topic: topic.clone(),
                source: source.into(),
            })?;
        match fut.await {
            Ok(w) => {
                DeadLettered { letter: d, dlq: &topic }.emit();
                Ok(w)
            }
            Err(source) => Err(Error::Publish {
                topic,
                source: source.into(),
            }),
        }
    }
}
