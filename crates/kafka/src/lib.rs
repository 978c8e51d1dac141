//! Kafka for redmirror.
//!
//! # Layout
//! - [`Kafka`]: the client settings every role shares (bootstrap servers plus
//!   pass-through librdkafka properties) and constructors for producers,
//!   consumers and the admin client.
//! - [`embedded`]: the in-process broker (librdkafka's mock cluster) behind
//!   `REDMIRROR_KAFKA_BROKERS=embedded`. For demos and development only.
//! - [`topics`]: creating the change and dead-letter topics and warning about
//!   risky settings.
//! - [`producer`]: librdkafka's producer with our delivery-report thread.
//! - [`publish`]: the idempotent event publisher (`acks=all`) and the
//!   dead-letter writer.
//! - [`offsets`]: a topic's partitions and end offsets, a group's committed
//!   offsets, and the lag between them.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

pub mod embedded;
pub mod offsets;
pub mod producer;
pub mod publish;
pub mod topics;

pub use embedded::EmbeddedBroker;

use rdkafka::message::Headers as _;
use redmirror_core::event::{DecodeError, FlowEvent, HEADER_RULES, HEADER_SOURCE_EPOCH, HEADER_SOURCE_TIME};

/// Decodes a message read from the change topic. A tombstone (a flow id as
/// key, no payload) is that flow's delete, timed by its
/// `redmirror-source-time-us` header when the producer set one, else by its
/// Kafka timestamp. With a `redmirror-source-epoch` header it is ordered in
/// that epoch like any event; without one it is an external tombstone
/// ([`FlowEvent::external_tombstone`]: a tool's or an operator's delete,
/// applied whatever the flow's watermark says, so it deletes after any
/// epoch bump too); everything else must be a valid event
/// ([`FlowEvent::decode_checked`]), its rules fingerprint taken from the
/// `redmirror-rules` header when the payload has none.
pub fn decode_event<M: rdkafka::Message>(m: &M) -> Result<FlowEvent, DecodeError> {
    match (m.key(), m.payload()) {
        (Some(key), None) if !key.is_empty() => {
            let time = header::<M, i64>(m, HEADER_SOURCE_TIME)
                .or_else(|| m.timestamp().to_millis().filter(|ms| *ms > 0).map(|ms| ms * 1000))
                .unwrap_or_else(redmirror_core::now_us);
            Ok(match header::<M, u64>(m, HEADER_SOURCE_EPOCH) {
                Some(epoch) => FlowEvent::tombstone(key, time).in_epoch(epoch),
                None => FlowEvent::external_tombstone(key, time),
            })
        }
        // The fingerprint travels in the event and in its header; an event
        // from another producer may have only the header.
        (key, payload) => FlowEvent::decode_checked(key, payload).map(|mut e| {
            if e.rules.is_empty() {
                if let Some(r) = header::<M, String>(m, HEADER_RULES) {
                    e.rules = r;
                }
            }
            e
        }),
    }
}

/// A header's value parsed from decimal text.
fn header<M: rdkafka::Message, T: std::str::FromStr>(m: &M, name: &str) -> Option<T> {
    m.headers().and_then(|hs| {
        hs.iter()
            .find(|h| h.key == name)
            .and_then(|h| std::str::from_utf8(h.value?).ok()?.trim().parse::<T>().ok())
    })
}
pub use publish::{DeadLetter, Publisher};

/// Errors from Kafka set-up and publishing. Each says what failed; what
/// librdkafka said is its `source()` ([`Librdkafka`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A client could not be created (bad property, bad bootstrap list).
    #[error("cannot create Kafka {what}")]
    Client {
        /// producer, consumer or admin client.
        what: &'static str,
        /// Cause.
        #[source]
        source: Librdkafka,
    },
    /// An operation on a topic failed.
    #[error("Kafka topic {topic}: {message}")]
    Topic {
        /// Topic name.
        topic: String,
        /// What went wrong.
        message: String,
    },
    /// The brokers gave no metadata for a topic (none answered, or they
    /// refused).
    #[error("Kafka topic {topic}: no metadata from {brokers}")]
    Metadata {
        /// Topic name.
        topic: String,
        /// The bootstrap servers asked.
        brokers: String,
        /// Cause.
        #[source]
        source: Librdkafka,
    },
    /// Publishing an event failed.
    #[error("publishing to {topic} failed")]
    Publish {
        /// Topic name.
        topic: String,
        /// Cause.
        #[source]
        source: Librdkafka,
    },
    /// The embedded broker could not start.
    #[error("cannot start the embedded broker: {0}")]
    Embedded(String),
}

/// What librdkafka said. Its text already names librdkafka's error code,
/// which rdkafka's own `source()` would return and a printed chain would
/// repeat: this cause ends the chain. (Boxed: it is most of an
/// [`Error`]'s size.)
#[derive(Debug)]
pub struct Librdkafka(pub Box<KafkaError>);

impl std::fmt::Display for Librdkafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Librdkafka {}

impl From<KafkaError> for Librdkafka {
    fn from(e: KafkaError) -> Self {
        Librdkafka(Box::new(e))
    }
}

impl Error {
    /// True when retrying later may succeed (broker down, timeouts, full queues).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Publish { source, .. } => !matches!(
                source.0.rdkafka_error_code(),
                Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge)
                    | Some(rdkafka::types::RDKafkaErrorCode::InvalidMessageSize)
            ),
            Error::Topic { .. } | Error::Metadata { .. } => true,
            Error::Client { .. } | Error::Embedded(_) => false,
        }
    }

    /// True when no broker gave metadata because none answered: librdkafka
    /// timed out or has no connection (nothing listens at the address, or
    /// it is unreachable), not a broker that answered with a refusal.
    pub fn is_unreachable(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode::*;
        match self {
            Error::Metadata { source, .. } => matches!(
                source.0.rdkafka_error_code(),
                Some(
                    BrokerTransportFailure
                        | AllBrokersDown
                        | OperationTimedOut
                        | RequestTimedOut
                        | MessageTimedOut
                        | TimedOutQueue
                )
            ),
            Error::Client { .. } | Error::Topic { .. } | Error::Publish { .. } | Error::Embedded(_) => false,
        }
    }
}

/// True when a failure (its cause chain, as `anyhow::Error::chain` gives
/// it) is a Kafka error worth waiting out ([`Error::is_retryable`]).
pub fn retryable_in<'a>(mut chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>) -> bool {
    chain
        .find_map(|c| c.downcast_ref::<Error>())
        .is_some_and(Error::is_retryable)
}

/// Consumer properties of the classic group protocol that KIP-848's
/// `consumer` protocol moves to the broker (librdkafka refuses them there).
const CLASSIC_ONLY: [&str; 3] = [
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
];

/// The two kinds of librdkafka client: each reads only its own kind's
/// properties (and those of both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// Producers and admin clients.
    Producer,
    /// Consumers, readers and metadata clients.
    Consumer,
}

impl ClientKind {
    /// True when a client of this kind ignores property `name` (it belongs
    /// to the other kind only).
    pub fn ignores(self, name: &str) -> bool {
        match self {
            ClientKind::Producer => CONSUMER_ONLY.contains(&name),
            ClientKind::Consumer => PRODUCER_ONLY.contains(&name),
        }
    }
}

/// Properties only consumers read (marked `C` in librdkafka 2.12's
/// CONFIGURATION.md, callbacks left out).
const CONSUMER_ONLY: &[&str] = &[
    "auto.commit.enable",
    "auto.commit.interval.ms",
    "auto.offset.reset",
    "check.crcs",
    "consume.callback.max.messages",
    "coordinator.query.interval.ms",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "fetch.error.backoff.ms",
    "fetch.max.bytes",
    "fetch.message.max.bytes",
    "fetch.min.bytes",
    "fetch.queue.backoff.ms",
    "fetch.wait.max.ms",
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.protocol.type",
    "group.remote.assignor",
    "heartbeat.interval.ms",
    "isolation.level",
    "max.partition.fetch.bytes",
    "max.poll.interval.ms",
    "offset.store.method",
    "offset.store.path",
    "offset.store.sync.interval.ms",
    "partition.assignment.strategy",
    "queued.max.messages.kbytes",
    "queued.min.messages",
    "session.timeout.ms",
];

/// Properties only producers read (marked `P` in librdkafka 2.12's
/// CONFIGURATION.md, callbacks left out).
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "batch.num.messages",
    "batch.size",
    "compression.codec",
    "compression.level",
    "compression.type",
    "delivery.report.only.error",
    "delivery.timeout.ms",
    "enable.gapless.guarantee",
    "enable.idempotence",
    "linger.ms",
    "message.send.max.retries",
    "message.timeout.ms",
    "partitioner",
    "produce.offset.report",
    "queue.buffering.backpressure.threshold",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "queue.buffering.max.ms",
    "queuing.strategy",
    "request.required.acks",
    "request.timeout.ms",
    "retries",
    "sticky.partitioning.linger.ms",
    "transaction.timeout.ms",
    "transactional.id",
];

/// The producer's `message.max.bytes` unless a property sets it: the
/// largest record it sends.
pub const PRODUCER_MAX_MESSAGE_BYTES: &str = "2000000";

/// Shared client settings.
#[derive(Clone, Debug)]
pub struct Kafka {
    /// Bootstrap servers (for the embedded broker: its actual address).
    pub bootstrap: String,
    /// Pass-through librdkafka properties.
    pub properties: BTreeMap<String, String>,
    /// True when the broker is the in-process one.
    pub embedded: bool,
}

impl Kafka {
    /// Settings for these bootstrap servers and properties.
    pub fn new(bootstrap: impl Into<String>, properties: BTreeMap<String, String>) -> Self {
        Kafka {
            bootstrap: bootstrap.into(),
            properties,
            embedded: false,
        }
    }

    /// A config for a consumer-type client (consumers, readers, metadata
    /// clients) with the bootstrap servers and the pass-through properties
    /// that consumers take; `defaults` apply unless a property overrides
    /// them.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        self.client_config_of(ClientKind::Consumer, defaults)
    }

    /// A config for a client of `kind`. A pass-through property that only
    /// the other kind of client reads is left out: librdkafka would ignore
    /// it and warn (`CONFWARN`) on every client it was given to.
    pub fn client_config_of(&self, kind: ClientKind, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        // librdkafka forgets a broker that a Metadata response leaves out,
        // and KRaft leaves out a fenced broker. A cluster whose brokers
        // were all fenced for a moment (a broker paused past
        // broker.session.timeout.ms, a whole-cluster network blip) leaves
        // the client knowing no broker, and it bootstraps again only after
        // this long (5 minutes by default): every producer and consumer
        // would sit dark that long with the brokers back.
        c.set("metadata.recovery.rebootstrap.trigger.ms", REBOOTSTRAP_AFTER_MS);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        let consumer_protocol = self.consumer_protocol();
        for (k, v) in &self.properties {
            // Every client of a `group.protocol=consumer` deployment (the
            // metadata and offset clients too) would refuse these.
            if consumer_protocol && CLASSIC_ONLY.contains(&k.as_str()) {
                continue;
            }
            if kind.ignores(k) {
                continue;
            }
            c.set(k, v);
        }
        c
    }

    /// The largest record the producer sends (`message.max.bytes`).
    pub fn producer_max_message_bytes(&self) -> usize {
        self.properties
            .get("message.max.bytes")
            .map_or(PRODUCER_MAX_MESSAGE_BYTES, String::as_str)
            .parse()
            .unwrap_or(usize::MAX)
    }

    /// The idempotent producer (`acks=all`, `enable.idempotence=true`).
    pub fn producer(&self) -> Result<producer::Producer, Error> {
        let config = self.client_config_of(
            ClientKind::Producer,
            &[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                // Latency vs batching: 1 ms lets batches form under load.
                ("linger.ms", "1"),
                ("socket.nagle.disable", "true"),
                ("batch.num.messages", "10000"),
                ("compression.type", "lz4"),
                // Memory: bound what waits locally (backpressure beyond it).
                ("queue.buffering.max.messages", "50000"),
                ("queue.buffering.max.kbytes", "32768"),
                ("message.timeout.ms", "300000"),
                ("message.max.bytes", PRODUCER_MAX_MESSAGE_BYTES),
            ],
        );
        producer::Producer::new(&config).map_err(|source| Error::Client {
            what: "producer",
            source: source.into(),
        })
    }

    /// A consumer in `group` with manual offset store (offsets are stored only
    /// after the write; librdkafka commits stored offsets every second).
    pub fn consumer(&self, group: &str) -> Result<StreamConsumer, Error> {
        self.consumer_config(group).create().map_err(|source| Error::Client {
            what: "consumer",
            source: source.into(),
        })
    }

    /// The settings of [`Kafka::consumer`].
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let defaults = self.consumer_defaults(group);
        if self.consumer_protocol() {
            for k in CLASSIC_ONLY.iter().filter(|k| self.properties.contains_key(**k)) {
                tracing::warn!(
                    property = k,
                    "Ignored with group.protocol=consumer: the broker sets it (its group.consumer.* settings)."
                );
            }
        }
        self.client_config(&defaults)
    }

    /// True when the operator chose KIP-848's `consumer` group protocol
    /// (`group.protocol=consumer`): the broker then owns the session timeout,
    /// heartbeats and assignment, and librdkafka refuses the classic
    /// protocol's properties for them.
    pub fn consumer_protocol(&self) -> bool {
        self.properties.get("group.protocol").is_some_and(|p| p == "consumer")
    }

    fn consumer_defaults<'a>(&self, group: &'a str) -> Vec<(&'a str, &'a str)> {
        let consumer_protocol = self.consumer_protocol();
        let mut defaults = Self::classic_consumer_defaults(group);
        defaults.push(("fetch.wait.max.ms", self.apply_fetch_wait_ms()));
        defaults
            .into_iter()
            .filter(|(k, _)| !(consumer_protocol && CLASSIC_ONLY.contains(k)))
            .collect()
    }

    /// apply's `fetch.wait.max.ms`: how long a broker may hold a fetch
    /// that finds no new event. A Kafka broker answers as soon as an event
    /// arrives (`fetch.min.bytes=1`), so the wait costs no latency; it only
    /// sets how often an idle consumer asks again, and each empty fetch
    /// costs CPU in redmirror and in the broker. librdkafka's own mock
    /// cluster (`embedded`) does not cut the wait short when data arrives,
    /// so there it stays short.
    fn apply_fetch_wait_ms(&self) -> &'static str {
        if self.embedded {
            EMBEDDED_FETCH_WAIT_MS
        } else {
            APPLY_FETCH_WAIT_MS
        }
    }

    fn classic_consumer_defaults(group: &str) -> Vec<(&str, &str)> {
        vec![
            ("group.id", group),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "1000"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("socket.nagle.disable", "true"),
            // Memory: librdkafka prefetches up to 64 MiB per partition by
            // default. With the short queue backoff below, 1 MiB of prefetch
            // and 1 MiB fetches keep apply small and still drain a backlog
            // as fast as larger buffers (docs/benchmarks.md).
            ("queued.max.messages.kbytes", PREFETCH_KBYTES),
            ("queued.min.messages", "2000"),
            ("fetch.max.bytes", FETCH_MAX_BYTES),
            ("max.partition.fetch.bytes", "262144"),
            // When the bounded prefetch queue is full, librdkafka stops
            // fetching for fetch.queue.backoff.ms (default 1 s) even if the
            // queue drains in a few milliseconds: with the default, apply
            // would sit idle most of every second on a backlog.
            ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
            ("session.timeout.ms", "10000"),
        ]
    }

    /// A consumer outside any group (replay, inspect, DLQ): reads from
    /// assigned positions, stores nothing, and reports partition EOF.
    pub fn reader(&self) -> Result<Reader, Error> {
        self.reader_config()
            .create_with_context(ReaderContext)
            .map_err(|source| Error::Client {
                what: "consumer",
                source: source.into(),
            })
    }

    /// The settings of [`Kafka::reader`].
    pub fn reader_config(&self) -> ClientConfig {
        self.client_config(&[
            ("group.id", "redmirror-reader"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", "earliest"),
            // librdkafka reports a partition's end from the fetch after the
            // one that brought its last records, which a broker holds for
            // this long: a reader (replay, inspect, the history pages) reaches
            // the end within 10 ms of its last record.
            ("fetch.wait.max.ms", EMBEDDED_FETCH_WAIT_MS),
            ("queued.max.messages.kbytes", PREFETCH_KBYTES),
            ("queued.min.messages", "2000"),
            ("fetch.max.bytes", FETCH_MAX_BYTES),
            ("max.partition.fetch.bytes", "262144"),
            ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
        ])
    }

    /// The admin client.
    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>, Error> {
        // librdkafka's admin client is a producer-type handle.
        self.client_config_of(ClientKind::Producer, &[])
            .create()
            .map_err(|source| Error::Client {
                what: "admin client",
                source: source.into(),
            })
    }
}

/// Timeout for metadata and admin calls.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `metadata.recovery.rebootstrap.trigger.ms` for every client (see
/// [`Kafka::client_config`]).
pub const REBOOTSTRAP_AFTER_MS: &str = "10000";

/// A consumer made by [`Kafka::reader`].
pub type Reader = StreamConsumer<ReaderContext>;

/// Client context of [`Kafka::reader`]. A reader asks for partition EOF: it
/// is how replay, inspect and the DLQ tools learn they reached the end, so
/// it is logged at debug level, not as librdkafka's "Global error".
pub struct ReaderContext;

impl rdkafka::ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if is_partition_eof(&error) {
            tracing::debug!(%reason, "Partition end reached.");
        } else {
            tracing::error!(target: "rdkafka::client", "librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

/// True for librdkafka's end-of-partition signal.
fn is_partition_eof(e: &KafkaError) -> bool {
    matches!(e, KafkaError::PartitionEOF(_))
        || e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
}

/// How long a consumer waits before fetching again when its prefetch queue
/// was full. librdkafka's default (1 s) left apply and replay idle for most
/// of each second on a backlog; 10 ms keeps the queue topped up.
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// apply's `fetch.wait.max.ms` on a Kafka broker (librdkafka's default):
/// an idle apply fetches twice a second per broker, not a hundred times.
const APPLY_FETCH_WAIT_MS: &str = "500";

/// `fetch.wait.max.ms` on the embedded broker and for readers.
const EMBEDDED_FETCH_WAIT_MS: &str = "10";

/// Consumer prefetch bound (KiB of queued messages).
const PREFETCH_KBYTES: &str = "1024";

/// Largest fetch response (a single larger record batch is still returned).
const FETCH_MAX_BYTES: &str = "1048576";

#[cfg(test)]
mod errors {
    use super::Error;
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;
    use redmirror_telemetry::errors::Chain;

    fn metadata(code: RDKafkaErrorCode) -> Error {
        Error::Metadata {
            topic: "flows".into(),
            brokers: "127.0.0.1:3".into(),
            source: KafkaError::MetadataFetch(code).into(),
        }
    }

    /// librdkafka's text names its code, which rdkafka's `source()` returns
    /// again: the chain says it once, after the topic and the brokers.
    #[test]
    fn a_metadata_failure_names_the_brokers_and_librdkafka_once() {
        let e = metadata(RDKafkaErrorCode::BrokerTransportFailure);
        let said = Chain(&e).to_string();
        assert!(
            said.starts_with("Kafka topic flows: no metadata from 127.0.0.1:3: "),
            "{said}"
        );
        assert_eq!(said.matches("Broker transport failure").count(), 1, "{said}");
        assert!(e.is_retryable());
    }

    /// Unreachable is read from librdkafka's code, not from its text.
    #[test]
    fn no_answer_is_told_from_a_refusal_by_code() {
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::OperationTimedOut,
            RDKafkaErrorCode::RequestTimedOut,
        ] {
            assert!(metadata(code).is_unreachable(), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::SaslAuthenticationFailed,
        ] {
            assert!(!metadata(code).is_unreachable(), "{code:?}");
        }
        let publish = Error::Publish {
            topic: "flows".into(),
            source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut).into(),
        };
        assert!(
            !publish.is_unreachable(),
            "only a metadata request is asked of no broker"
        );
    }
}

#[cfg(test)]
mod consumer_settings {
    use super::Kafka;
    use std::collections::BTreeMap;

    /// A pass-through property reaches only the clients that read it: a
    /// consumer-only one given to a producer (or the other way round) made
    /// librdkafka print a CONFWARN for every client of the other kind.
    #[test]
    fn each_client_kind_gets_only_the_properties_it_reads() {
        use super::ClientKind;
        let props = BTreeMap::from([
            ("session.timeout.ms".to_string(), "6000".to_string()),
            ("linger.ms".to_string(), "5".to_string()),
            ("socket.timeout.ms".to_string(), "7000".to_string()),
        ]);
        let k = Kafka::new("127.0.0.1:9092", props);
        let producer = k.client_config_of(ClientKind::Producer, &[]);
        assert_eq!(producer.get("session.timeout.ms"), None);
        assert_eq!(producer.get("linger.ms"), Some("5"));
        assert_eq!(producer.get("socket.timeout.ms"), Some("7000"));
        for consumer in [k.consumer_config("g"), k.reader_config(), k.client_config(&[])] {
            assert_eq!(consumer.get("linger.ms"), None);
            assert_eq!(consumer.get("socket.timeout.ms"), Some("7000"));
        }
        assert_eq!(k.consumer_config("g").get("session.timeout.ms"), Some("6000"));
    }

    /// The 1 s default of `fetch.queue.backoff.ms` left apply and replay
    /// idle most of every second on a backlog; both consumers must set it.
    #[test]
    fn consumers_refetch_soon_after_a_full_queue_and_prefetch_little() {
        let k = Kafka::new("127.0.0.1:9092", BTreeMap::new());
        for c in [k.consumer_config("g"), k.reader_config()] {
            assert_eq!(c.get("fetch.queue.backoff.ms"), Some("10"));
            assert_eq!(c.get("queued.max.messages.kbytes"), Some("1024"));
            assert_eq!(c.get("fetch.max.bytes"), Some("1048576"));
        }
    }

    /// An idle apply asked a Kafka broker for new events a hundred times a
    /// second (`fetch.wait.max.ms=10`), which cost the broker 150 ms of CPU
    /// per second (`scripts/bench --only latency`, idle). A Kafka broker
    /// answers a held fetch as soon as an event arrives, so apply may wait
    /// longer; the embedded broker does not, and a reader waits out one
    /// empty fetch to see a partition's end, so those stay short.
    #[test]
    fn an_idle_apply_fetches_rarely_from_a_broker_that_answers_when_data_arrives() {
        let mut k = Kafka::new("127.0.0.1:9092", BTreeMap::new());
        assert_eq!(k.consumer_config("g").get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(k.reader_config().get("fetch.wait.max.ms"), Some("10"));
        k.embedded = true;
        assert_eq!(k.consumer_config("g").get("fetch.wait.max.ms"), Some("10"));
        let k = Kafka::new(
            "127.0.0.1:9092",
            BTreeMap::from([("fetch.wait.max.ms".to_string(), "100".to_string())]),
        );
        assert_eq!(k.consumer_config("g").get("fetch.wait.max.ms"), Some("100"));
    }

    #[test]
    fn partition_eof_is_not_an_error_for_a_reader() {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode;
        assert!(super::is_partition_eof(&KafkaError::PartitionEOF(3)));
        assert!(super::is_partition_eof(&KafkaError::Global(
            RDKafkaErrorCode::PartitionEOF
        )));
        assert!(!super::is_partition_eof(&KafkaError::Global(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
    }

    #[test]
    fn an_operator_property_overrides_the_consumer_defaults() {
        let props = BTreeMap::from([("fetch.queue.backoff.ms".to_string(), "250".to_string())]);
        let k = Kafka::new("127.0.0.1:9092", props);
        assert_eq!(k.consumer_config("g").get("fetch.queue.backoff.ms"), Some("250"));
        assert_eq!(k.reader_config().get("fetch.queue.backoff.ms"), Some("250"));
    }

    #[test]
    fn the_consumer_protocol_drops_the_classic_group_settings() {
        let classic = Kafka::new("127.0.0.1:9092", BTreeMap::new()).consumer_config("g");
        assert_eq!(classic.get("partition.assignment.strategy"), Some("cooperative-sticky"));
        assert_eq!(classic.get("session.timeout.ms"), Some("10000"));
        let props = BTreeMap::from([
            ("group.protocol".to_string(), "consumer".to_string()),
            ("session.timeout.ms".to_string(), "6000".to_string()),
        ]);
        let k = Kafka::new("127.0.0.1:9092", props);
        assert!(k.consumer_protocol());
        let c = k.consumer_config("g");
        assert_eq!(c.get("group.protocol"), Some("consumer"));
        assert_eq!(c.get("partition.assignment.strategy"), None);
        assert_eq!(c.get("session.timeout.ms"), None);
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        // librdkafka accepts what is left, for the group consumer and for
        // the other clients (metadata, offsets) alike.
        let _: rdkafka::consumer::BaseConsumer = c.create().expect("a consumer with group.protocol=consumer");
        let _: rdkafka::consumer::BaseConsumer = k.client_config(&[]).create().expect("a metadata client");
    }
}

#[cfg(test)]
mod tombstones {
    use super::decode_event;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};
    use redmirror_core::event::{DecodeError, DeleteReason, Op};

    fn message(key: Option<&[u8]>, payload: Option<&[u8]>, ts: Timestamp, time: Option<&str>) -> OwnedMessage {
        let headers = time.map(|t| {
            OwnedHeaders::new().insert(Header {
                key: "redmirror-source-time-us",
                value: Some(t),
            })
        });
        OwnedMessage::new(
            payload.map(<[u8]>::to_vec),
            key.map(<[u8]>::to_vec),
            "t".into(),
            ts,
            0,
            7,
            headers,
        )
    }

    #[test]
    fn a_tombstone_is_its_flows_delete() {
        let m = message(Some(b"f\xff1"), None, Timestamp::CreateTime(1_700_000_000_123), None);
        let e = decode_event(&m).expect("a delete");
        assert_eq!(e.flow_id.as_ref(), b"f\xff1");
        assert_eq!(e.op, Op::Delete as i32);
        assert_eq!(e.delete_reason, DeleteReason::Absent as i32);
        assert_eq!(e.source_time_us, 1_700_000_000_123_000, "Kafka timestamp in µs");
        assert_eq!(e.cause, "external_tombstone");
        assert!(e.is_external_tombstone());
        let mut m = m;
        m = m.replace_headers(Some(OwnedHeaders::new().insert(Header {
            key: "redmirror-source-epoch",
            value: Some("3"),
        })));
        let e = decode_event(&m).expect("a delete");
        assert_eq!((e.source_epoch, e.cause.as_str()), (3, "tombstone"));
        assert!(!e.is_external_tombstone());
    }

    #[test]
    fn a_tombstones_time_header_wins_over_its_timestamp() {
        let m = message(Some(b"f"), None, Timestamp::CreateTime(5), Some("1234567"));
        assert_eq!(decode_event(&m).expect("a delete").source_time_us, 1_234_567);
        let m = message(Some(b"f"), None, Timestamp::NotAvailable, None);
        let t = decode_event(&m).expect("a delete").source_time_us;
        assert!((redmirror_core::now_us() - t).abs() < 60_000_000, "no time at all: now");
    }

    #[test]
    fn without_a_key_or_with_an_empty_payload_it_is_still_bad_input() {
        let none = message(None, None, Timestamp::NotAvailable, None);
        assert_eq!(decode_event(&none), Err(DecodeError::Empty));
        let empty_key = message(Some(b""), None, Timestamp::NotAvailable, None);
        assert_eq!(decode_event(&empty_key), Err(DecodeError::Empty));
        let empty_payload = message(Some(b"f"), Some(b""), Timestamp::NotAvailable, None);
        assert!(
            decode_event(&empty_payload).is_err(),
            "an empty payload is not a tombstone"
        );
    }
}
