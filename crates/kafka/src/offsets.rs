//! Offset queries: the partitions of a topic, their end offsets, a group's
//! committed offsets, and the lag between the two. Every call blocks (run it
//! on a blocking thread) and each Kafka request is bounded by
//! [`ADMIN_TIMEOUT`].

use std::collections::BTreeMap;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::{Error, Kafka, ADMIN_TIMEOUT};

/// Offsets per partition.
pub type PartitionOffsets = BTreeMap<i32, i64>;

/// A metadata client (with the `extra` properties) and the partitions of `topic`.
fn client_and_partitions(
    kafka: &Kafka,
    topic: &str,
    extra: &[(&str, &str)],
) -> Result<(BaseConsumer, Vec<i32>), Error> {
    let c: BaseConsumer = kafka.client_config(extra).create().map_err(|source| Error::Client {
        what: "metadata client",
        source: source.into(),
    })?;
    let md = c
        .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
        .map_err(|e| topic_error(topic, e))?;
    let ids = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    Ok((c, ids))
}

fn topic_error(topic: &str, e: rdkafka::error::KafkaError) -> Error {
    Error::Topic {
        topic: topic.to_string(),
        message: e.to_string(),
    }
}

/// The partitions of `topic` (empty when the topic does not exist).
pub fn partitions(kafka: &Kafka, topic: &str) -> Result<Vec<i32>, Error> {
    client_and_partitions(kafka, topic, &[]).map(|(_, ids)| ids)
}

/// End offsets (high watermarks) of every partition of `topic`.
pub fn end_offsets(kafka: &Kafka, topic: &str) -> Result<PartitionOffsets, Error> {
    let (c, ids) = client_and_partitions(kafka, topic, &[])?;
    let mut out = BTreeMap::new();
    for p in ids {
        let (_, high) = c
            .fetch_watermarks(topic, p, ADMIN_TIMEOUT)
            .map_err(|e| topic_error(topic, e))?;
        out.insert(p, high);
    }
    Ok(out)
}

/// Offsets committed by `group` on `topic`, per partition (no entry when none).
pub fn committed(kafka: &Kafka, group: &str, topic: &str) -> Result<PartitionOffsets, Error> {
    // A client of the group that never joins it: it reads the group's
    // commits and must never commit anything itself.
    let (c, ids) = client_and_partitions(kafka, topic, &[("group.id", group), ("enable.auto.commit", "false")])?;
    let mut tpl = TopicPartitionList::new();
    for p in ids {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, ADMIN_TIMEOUT)
        .map_err(|e| topic_error(topic, e))?;
    let mut out = BTreeMap::new();
    for e in got.elements() {
        if let Offset::Offset(o) = e.offset() {
            out.insert(e.partition(), o);
        }
    }
    Ok(out)
}

/// Lag per partition of `ends`: the end offset minus the committed offset
/// (the whole partition when nothing is committed), never below 0.
pub fn lag(ends: &PartitionOffsets, committed: &PartitionOffsets) -> PartitionOffsets {
    ends.iter()
        .map(|(p, end)| (*p, (end - committed.get(p).copied().unwrap_or(0)).max(0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_end_minus_the_commit_or_the_whole_partition_without_one() {
        let ends: PartitionOffsets = [(0, 10), (1, 5), (2, 7)].into();
        let committed: PartitionOffsets = [(0, 4), (2, 9)].into();
        assert_eq!(lag(&ends, &committed), [(0, 6), (1, 5), (2, 0)].into());
    }
}
