//! Dead letters on the Apache Kafka test broker: the newest are read from
//! the tail of the topic, newest first, with the count the topic keeps.

use std::collections::BTreeMap;

use redmirror_kafka::{DeadLetter, Kafka, Publisher};
use redmirror_testkit::Broker;

#[tokio::test]
async fn the_newest_dead_letters_come_from_the_tail_newest_first() {
    let kafka = Kafka::new(Broker::shared().bootstrap(), BTreeMap::new());
    let change = format!("dlq-tail-{}", std::process::id());
    let dlq = format!("{change}.dlq");
    redmirror_kafka::topics::ensure(&kafka, &change, &dlq, 1, 1, 0)
        .await
        .expect("topics");
    let publisher = Publisher::new(&kafka, &dlq).expect("publisher");
    for i in 0..30 {
        let key = format!("f{i:02}");
        publisher
            .dead_letter(&DeadLetter {
                key: key.as_bytes(),
                payload: b"not an event",
                reason_code: "undecodable",
                reason: format!("poison {i}"),
                topic: &change,
                partition: 0,
                offset: i,
            })
            .await
            .expect("dead letter written");
    }
    let (newest, kept) = redmirror_history::dlq::newest(&kafka, &dlq, 5).await.expect("newest");
    assert_eq!(kept, 30);
    let ids: Vec<&str> = newest.iter().map(|d| d.flow_id.as_str()).collect();
    assert_eq!(ids, ["f29", "f28", "f27", "f26", "f25"]);
    assert_eq!(newest[0].offset, 29);
    let (all, kept) = redmirror_history::dlq::newest(&kafka, &dlq, 100).await.expect("all");
    assert_eq!((all.len(), kept), (30, 30));
    assert_eq!(all.last().map(|d| d.flow_id.as_str()), Some("f00"));
}
