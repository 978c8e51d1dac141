//! Offsets read straight from Kafka, each call bounded: the change topic's
//! end offsets, the apply group's committed offsets (their difference is
//! the lag) and the dead-letter topic's watermarks (what it holds).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use redmirror_kafka::Kafka;

/// The watermarks of one topic's partitions: `(low, high)`.
pub type Watermarks = BTreeMap<i32, (i64, i64)>;

/// What Kafka says about the change topic, the group and the dead letters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offsets {
    /// The change topic's watermarks (`None`: the topic does not exist).
    pub topic: Option<Watermarks>,
    /// The group's committed offset per partition of the change topic
    /// (absent: nothing committed there).
    pub committed: BTreeMap<i32, i64>,
    /// The dead-letter topic's watermarks (`None`: it does not exist).
    pub dlq: Option<Watermarks>,
}

impl Offsets {
    /// Messages between the group's committed offset and the end of each
    /// partition (from the start of the partition where nothing is committed).
    pub fn lag(&self) -> BTreeMap<i32, i64> {
        self.topic
            .iter()
            .flatten()
            .map(|(p, (low, high))| {
                let from = self.committed.get(p).copied().unwrap_or(*low);
                (*p, (high - from).max(0))
            })
            .collect()
    }

    /// Messages in the dead-letter topic.
    pub fn dead_letters(&self) -> Option<u64> {
        self.dlq
            .as_ref()
            .map(|w| w.values().map(|(low, high)| (high - low).max(0) as u64).sum())
    }

    /// The sum of the change topic's end offsets: every event ever written to it.
    pub fn written(&self) -> Option<i64> {
        self.topic.as_ref().map(|w| w.values().map(|(_, high)| high).sum())
    }

    /// The sum of the group's committed offsets: every event apply is done with.
    pub fn done(&self) -> i64 {
        self.committed.values().sum()
    }
}

/// Reads the offsets of `topic`, `dlq_topic` and `group`, each Kafka call
/// bounded by `timeout` (blocking: run it on a blocking thread). `Err`
/// names the broker failure.
pub fn read(kafka: &Kafka, topic: &str, dlq_topic: &str, group: &str, timeout: Duration) -> Result<Offsets, String> {
    let c: BaseConsumer = kafka
        .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
        .create()
        .map_err(|e| format!("cannot create a Kafka client: {e}"))?;
    let parts = partitions(&c, topic, timeout)?;
    let dlq_parts = partitions(&c, dlq_topic, timeout)?;
    let mut out = Offsets::default();
    if let Some(ids) = parts {
        out.topic = Some(watermarks(&c, topic, &ids, timeout)?);
        let mut tpl = TopicPartitionList::new();
        for p in &ids {
            tpl.add_partition(topic, *p);
        }
        let got = c
            .committed_offsets(tpl, timeout)
            .map_err(|e| format!("committed offsets of group {group} on {topic}: {e}"))?;
        for e in got.elements() {
            if let Offset::Offset(o) = e.offset() {
                out.committed.insert(e.partition(), o);
            }
        }
    }
    if let Some(ids) = dlq_parts {
        out.dlq = Some(watermarks(&c, dlq_topic, &ids, timeout)?);
    }
    Ok(out)
}

/// The messages in `topic` (high minus low watermark, summed over its
/// partitions); `None` when the topic does not exist.
pub fn messages(kafka: &Kafka, topic: &str, timeout: Duration) -> Result<Option<u64>, String> {
    let c: BaseConsumer = kafka
        .client_config(&[])
        .create()
        .map_err(|e| format!("cannot create a Kafka client: {e}"))?;
    let Some(ids) = partitions(&c, topic, timeout)? else {
        return Ok(None);
    };
    let w = watermarks(&c, topic, &ids, timeout)?;
    Ok(Some(w.values().map(|(low, high)| (high - low).max(0) as u64).sum()))
}

/// The partitions of `topic`; `None` when the brokers do not know it.
fn partitions(c: &BaseConsumer, topic: &str, timeout: Duration) -> Result<Option<Vec<i32>>, String> {
    let md = c
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| format!("no answer from the brokers within {}s ({e})", timeout.as_secs()))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect()))
}

fn watermarks(c: &BaseConsumer, topic: &str, ids: &[i32], timeout: Duration) -> Result<Watermarks, String> {
    ids.iter()
        .map(|p| {
            c.fetch_watermarks(topic, *p, timeout)
                .map(|w| (*p, w))
                .map_err(|e| format!("watermarks of {topic} partition {p}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_committed_offset_or_the_start_of_the_partition() {
        let o = Offsets {
            topic: Some(BTreeMap::from([(0, (0, 10)), (1, (5, 20)), (2, (0, 3))])),
            committed: BTreeMap::from([(0, 10), (2, 1)]),
            dlq: Some(BTreeMap::from([(0, (2, 5))])),
        };
        assert_eq!(o.lag(), BTreeMap::from([(0, 0), (1, 15), (2, 2)]));
        assert_eq!(o.dead_letters(), Some(3));
        assert_eq!((o.written(), o.done()), (Some(33), 11));
        assert_eq!(Offsets::default().dead_letters(), None);
    }
}
