//! One flow's latest events on the change topic (`GET
//! /v1/flows/{flowId}/history`), read newest first from the flow's
//! partition only.
//!
//! # Which partition
//! Events are keyed by flow id and produced with the configured
//! key-hashing partitioner (`REDMIRROR_KAFKA_PARTITIONER`, librdkafka's
//! `consistent_random` by default): [`redmirror_core::partition`]. A flow's
//! events all sit in that one partition, in order.
//!
//! # Newest first, within a bound
//! Kafka reads forwards only, so the partition is read in chunks of
//! [`CHUNK`] records backwards from its end: the last chunk, then the one
//! before, each kept only for the flow's records, until `limit` events are
//! found, the partition's start is reached, or the bound is: at most
//! [`MAX_SCANNED`] records or [`TIME_BOUND`] of reading. The answer says
//! when it stopped at the bound (`truncated`, `scanned_from_offset`).

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use redmirror_api::{FlowHistory, HistoryEvent};
use redmirror_core::event::{Op, Origin};
use redmirror_core::partition::Partitioner;
use redmirror_kafka::{Kafka, ADMIN_TIMEOUT};

use crate::Error;

/// Records read per chunk.
pub const CHUNK: i64 = 100_000;
/// Most records read for one answer.
pub const MAX_SCANNED: u64 = 500_000;
/// Longest time spent reading for one answer (the answer comes within 10 s).
pub const TIME_BOUND: Duration = Duration::from_secs(6);

/// The partition count of `topic`.
pub fn partition_count(kafka: &Kafka, topic: &str) -> Result<i32, Error> {
    let err = |message: String| Error::Read {
        topic: topic.to_string(),
        message,
    };
    let consumer = kafka.reader()?;
    let md = consumer
        .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
        .map_err(|e| err(e.to_string()))?;
    let n = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .sum::<usize>();
    if n == 0 {
        return Err(err("topic not found".into()));
    }
    Ok(n as i32)
}

/// The flow's latest events (at most `limit`), newest first.
pub async fn history(kafka: &Kafka, topic: &str, flow_id: &[u8], limit: usize) -> Result<FlowHistory, Error> {
    let started = Instant::now();
    let err = |message: String| Error::Read {
        topic: topic.to_string(),
        message,
    };
    let partitions = partition_count(kafka, topic)?;
    let partitioner = Partitioner::from_property(kafka.properties.get("partitioner").map(String::as_str))
        .map_err(|why| Error::Usage(format!("REDMIRROR_KAFKA_PARTITIONER: {why}")))?;
    let partition = partitioner.partition_of(flow_id, partitions);
    let consumer: redmirror_kafka::Reader = kafka
        .reader_config()
        .set("max.partition.fetch.bytes", "8388608")
        .set("fetch.max.bytes", "16777216")
        .set("queued.max.messages.kbytes", "65536")
        .create_with_context(redmirror_kafka::ReaderContext)
        .map_err(|e| err(format!("consumer: {e}")))?;
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, ADMIN_TIMEOUT)
        .map_err(|e| err(format!("offsets of partition {partition}: {e}")))?;
    let mut out = FlowHistory {
        partition,
        scanned_from_offset: high,
        ..FlowHistory::default()
    };
    let mut to = high;
    while to > low && out.events.len() < limit {
        if out.scanned >= MAX_SCANNED || started.elapsed() >= TIME_BOUND {
            out.truncated = true;
            break;
        }
        let from = (to - CHUNK).max(low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))
            .map_err(|e| err(e.to_string()))?;
        consumer.assign(&tpl).map_err(|e| err(e.to_string()))?;
        let Some(chunk) = read_chunk(&consumer, flow_id, to, started + HARD_BOUND, &mut out.scanned).await? else {
            // Out of time inside the chunk: its newer part is unread, so
            // nothing of it is shown (the answer stays newest first).
            out.truncated = true;
            break;
        };
        let room = limit - out.events.len();
        out.events.extend(chunk.into_iter().rev().take(room));
        out.scanned_from_offset = from;
        to = from;
    }
    Ok(out)
}

/// The time after which a chunk being read is given up.
const HARD_BOUND: Duration = Duration::from_secs(9);

/// Reads the assigned partition up to offset `to` (or its end), keeping
/// the flow's events oldest first; `None` when `deadline` came first.
async fn read_chunk(
    consumer: &redmirror_kafka::Reader,
    flow_id: &[u8],
    to: i64,
    deadline: Instant,
    scanned: &mut u64,
) -> Result<Option<Vec<HistoryEvent>>, Error> {
    let mut found = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = match tokio::time::timeout(left, consumer.recv()).await {
            Err(_) => return Ok(None),
            Ok(Err(KafkaError::PartitionEOF(_))) => return Ok(Some(found)),
            Ok(Err(e)) => {
                return Err(Error::Read {
                    topic: String::new(),
                    message: e.to_string(),
                })
            }
            Ok(Ok(m)) => m,
        };
        if m.offset() >= to {
            return Ok(Some(found));
        }
        *scanned += 1;
        if m.key() == Some(flow_id) {
            found.push(event(&m));
        }
        if m.offset() + 1 >= to {
            return Ok(Some(found));
        }
    }
}

fn event<M: Message>(m: &M) -> HistoryEvent {
    let (op, origin, source_time_us, fields, epoch) = match redmirror_kafka::decode_event(m) {
        Ok(e) => (
            match Op::try_from(e.op) {
                Ok(Op::Delete) => "delete",
                Ok(Op::Upsert) => "upsert",
                _ => "unknown",
            },
            Origin::try_from(e.origin).unwrap_or(Origin::Unspecified).label(),
            e.source_time_us,
            e.fields.iter().map(|f| redmirror_core::text::lossy(&f.name)).collect(),
            e.source_epoch,
        ),
        Err(_) => ("undecodable", "unspecified", 0, Vec::new(), 0),
    };
    HistoryEvent {
        partition: m.partition(),
        offset: m.offset(),
        source_time: redmirror_core::text::rfc3339_us(source_time_us),
        origin: origin.to_string(),
        op: op.to_string(),
        fields,
        source_epoch: epoch,
    }
}
