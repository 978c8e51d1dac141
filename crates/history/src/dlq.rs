//! Dead letters: list and re-drive.

use rdkafka::message::{Headers, Message, OwnedHeaders, OwnedMessage};
use redmirror_api::DeadLetter;
use redmirror_kafka::publish::dlq_headers as h;
use redmirror_kafka::{Kafka, Publisher};
use serde::Serialize;

use crate::reader::{Start, TopicReader};
use crate::Error;

/// One dead letter: what `dlq list --json` and `GET /v1/dlq` show
/// ([`DeadLetter`]), and the record itself for a re-drive.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The dead letter as people see it.
    #[serde(flatten)]
    pub letter: DeadLetter,
    #[serde(skip)]
    key: Vec<u8>,
    #[serde(skip)]
    payload: Vec<u8>,
}

fn header(m: &OwnedMessage, name: &str) -> String {
    m.headers()
        .and_then(|hs| hs.iter().find(|x| x.key == name).and_then(|x| x.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// Every dead letter in `dlq_topic`.
pub async fn list(kafka: &Kafka, dlq_topic: &str) -> Result<Vec<Entry>, Error> {
    let mut reader = TopicReader::open(kafka, dlq_topic, &Start::Beginning).await?;
    let mut out = Vec::new();
    while let Some(m) = reader.next().await? {
        out.push(entry(&m));
    }
    Ok(out)
}

/// The newest `limit` dead letters, newest first, and how many the topic
/// keeps: only the last `limit` of each partition are read, so the answer
/// costs the same on a dead-letter topic of millions.
pub async fn newest(kafka: &Kafka, dlq_topic: &str, limit: usize) -> Result<(Vec<DeadLetter>, u64), Error> {
    let last = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut reader = TopicReader::open(kafka, dlq_topic, &Start::Last(last)).await?;
    let kept = reader.kept;
    let mut read = Vec::new();
    while let Some(m) = reader.next().await? {
        read.push(entry(&m).letter);
    }
    // Newest first: by time (a topic of several partitions), then offset.
    read.sort_by(|a, b| (&b.time, b.dlq_offset).cmp(&(&a.time, a.dlq_offset)));
    read.truncate(limit);
    Ok((read, kept))
}

/// One dead letter as read from the topic.
fn entry(m: &rdkafka::message::OwnedMessage) -> Entry {
    let time_us: i64 = header(m, h::TIME).parse().unwrap_or(0);
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_micros(time_us.max(0) as u64);
    Entry {
        letter: DeadLetter {
            dlq_offset: m.offset(),
            flow_id: redmirror_core::text::lossy(m.key().unwrap_or_default()),
            reason_code: header(m, h::REASON_CODE),
            reason: header(m, h::REASON),
            topic: header(m, h::TOPIC),
            partition: header(m, h::PARTITION).parse().unwrap_or(-1),
            offset: header(m, h::OFFSET).parse().unwrap_or(-1),
            time: humantime::format_rfc3339_seconds(time).to_string(),
        },
        key: m.key().unwrap_or_default().to_vec(),
        payload: m.payload().unwrap_or_default().to_vec(),
    }
}

/// Re-submits dead letters (all, or those of one flow) to the change topic,
/// unchanged. Returns how many were re-driven.
pub async fn redrive(kafka: &Kafka, dlq_topic: &str, change_topic: &str, flow: Option<&[u8]>) -> Result<usize, Error> {
    let publisher = Publisher::new(kafka, change_topic)?;
    let mut n = 0;
    for e in list(kafka, dlq_topic).await? {
        if flow.is_some_and(|f| f != e.key.as_slice()) {
            continue;
        }
        let fut = publisher
            .enqueue_raw(&e.key, &e.payload, OwnedHeaders::new())
            .await
            .map_err(|source| redmirror_kafka::Error::Publish {
                topic: change_topic.to_string(),
                source: source.into(),
            })?;
        match fut.await {
            Ok(_) => n += 1,
            Err(source) => {
                return Err(redmirror_kafka::Error::Publish {
                    topic: change_topic.to_string(),
                    source: source.into(),
                }
                .into())
            }
        }
    }
    Ok(n)
}
