//! Reading a topic to its end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use redmirror_kafka::{Kafka, ADMIN_TIMEOUT};

use crate::Error;

/// Where reading starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The oldest message kept.
    Beginning,
    /// The first message at or after this time (milliseconds since the epoch).
    Timestamp(i64),
    /// Explicit `(partition, offset)`; partitions not listed are not read.
    Offsets(Vec<(i32, i64)>),
    /// The last `n` messages kept in each partition (fewer where fewer are
    /// kept): the newest, without reading the rest.
    Last(i64),
}

impl Start {
    /// Parses `P:O,P:O`.
    pub fn parse_offsets(s: &str) -> Result<Start, Error> {
        let mut v = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (p, o) = part
                .split_once(':')
                .ok_or_else(|| Error::Usage(format!("--from-offsets: {part:?} is not PARTITION:OFFSET")))?;
            let p = p
                .parse()
                .map_err(|_| Error::Usage(format!("--from-offsets: bad partition {p:?}")))?;
            let o = o
                .parse()
                .map_err(|_| Error::Usage(format!("--from-offsets: bad offset {o:?}")))?;
            v.push((p, o));
        }
        if v.is_empty() {
            return Err(Error::Usage("--from-offsets: no PARTITION:OFFSET given".into()));
        }
        Ok(Start::Offsets(v))
    }
}

/// Reads every assigned partition up to its end as of [`TopicReader::open`].
///
/// The end of a partition is its high watermark when the reader opened: a
/// record at or past it was produced after the read began and is not read.
/// Record timestamps never decide the end (a producer with a fast clock
/// would otherwise hide everything after its record). Partition EOF closes a
/// partition too: it is how a partition whose last offsets are gone
/// (compaction, transaction markers) or a broker whose watermark lags
/// reports the end.
pub struct TopicReader {
    consumer: redmirror_kafka::Reader,
    topic: String,
    open: BTreeSet<i32>,
    /// Per partition, the offset one past the last record to read.
    end: BTreeMap<i32, i64>,
    /// Messages expected (from the watermarks; an estimate for progress).
    pub estimated_total: u64,
    /// Messages the assigned partitions keep, read or not (from the
    /// watermarks: exact on a topic that is neither compacted nor
    /// transactional, like the dead-letter topic).
    pub kept: u64,
}

impl TopicReader {
    /// Assigns the partitions at the start positions.
    pub async fn open(kafka: &Kafka, topic: &str, start: &Start) -> Result<Self, Error> {
        let err = |message: String| Error::Read {
            topic: topic.to_string(),
            message,
        };
        let consumer = kafka.reader()?;
        let md = consumer
            .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
            .map_err(|e| err(e.to_string()))?;
        let all: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if all.is_empty() {
            return Err(err("topic not found".into()));
        }
        let mut tpl = TopicPartitionList::new();
        match start {
            Start::Beginning => {
                for p in &all {
                    tpl.add_partition_offset(topic, *p, Offset::Beginning)
                        .map_err(|e| err(e.to_string()))?;
                }
            }
            Start::Timestamp(ms) => {
                let mut q = TopicPartitionList::new();
                for p in &all {
                    q.add_partition_offset(topic, *p, Offset::Offset(*ms))
                        .map_err(|e| err(e.to_string()))?;
                }
                let found = consumer
                    .offsets_for_times(q, ADMIN_TIMEOUT)
                    .map_err(|e| err(format!("offsets for time: {e}")))?;
                for e in found.elements() {
                    tpl.add_partition_offset(topic, e.partition(), e.offset())
                        .map_err(|e| err(e.to_string()))?;
                }
            }
            Start::Last(n) => {
                for p in &all {
                    tpl.add_partition_offset(topic, *p, Offset::OffsetTail(*n))
                        .map_err(|e| err(e.to_string()))?;
                }
            }
            Start::Offsets(list) => {
                for (p, o) in list {
                    if !all.contains(p) {
                        return Err(Error::Usage(format!("partition {p} does not exist in {topic}")));
                    }
                    tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
                        .map_err(|e| err(e.to_string()))?;
                }
            }
        }
        let mut estimated_total = 0u64;
        let mut kept = 0u64;
        let mut open = BTreeSet::new();
        let mut end = BTreeMap::new();
        for e in tpl.elements() {
            let p = e.partition();
            let (low, high) = consumer
                .fetch_watermarks(topic, p, ADMIN_TIMEOUT)
                .map_err(|e| err(format!("end offset of partition {p}: {e}")))?;
            let from = match e.offset() {
                Offset::Offset(o) => o.max(low),
                Offset::End => high,
                Offset::OffsetTail(n) => (high - n).max(low),
                _ => low,
            };
            estimated_total += (high - from).max(0) as u64;
            kept += (high - low).max(0) as u64;
            end.insert(p, high);
            // Nothing to read: the partition is already at its end.
            if from < high {
                open.insert(p);
            }
        }
        consumer.assign(&tpl).map_err(|e| err(e.to_string()))?;
        Ok(TopicReader {
            consumer,
            topic: topic.to_string(),
            open,
            end,
            estimated_total,
            kept,
        })
    }

    /// The next message, or `None` when every partition reached its end.
    pub async fn next(&mut self) -> Result<Option<OwnedMessage>, Error> {
        while !self.open.is_empty() {
            let m = match tokio::time::timeout(Duration::from_secs(30), self.consumer.recv()).await {
                Err(_) => {
                    return Err(Error::Read {
                        topic: self.topic.clone(),
                        message: "no message and no end of partition for 30 s (broker unavailable?)".into(),
                    })
                }
                Ok(Err(KafkaError::PartitionEOF(p))) => {
                    self.open.remove(&p);
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::warn!(topic = %self.topic, error = %e, "Kafka read error; retrying (check the brokers, REDMIRROR_KAFKA_BROKERS).");
                    continue;
                }
                Ok(Ok(m)) => m,
            };
            let p = m.partition();
            if !self.open.contains(&p) {
                continue;
            }
            let end = self.end.get(&p).copied().unwrap_or(i64::MAX);
            if m.offset() >= end {
                // Produced after reading began: past the end as it was then.
                self.open.remove(&p);
                continue;
            }
            if m.offset() + 1 >= end {
                // The last record before the end: deliver it and close.
                self.open.remove(&p);
            }
            return Ok(Some(m.detach()));
        }
        Ok(None)
    }

    /// Partitions still being read.
    pub fn open_partitions(&self) -> usize {
        self.open.len()
    }
}

/// Parses an RFC 3339 time into milliseconds since the epoch.
pub fn parse_time_ms(s: &str) -> Result<i64, Error> {
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| Error::Usage(format!("{s:?} is not an RFC 3339 time ({e})")))
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        })
}

/// Per-partition counts, for reports.
pub type PerPartition = BTreeMap<i32, u64>;
