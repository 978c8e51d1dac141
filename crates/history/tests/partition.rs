//! The partition a flow's events land in, as librdkafka's producer puts
//! them on the Apache Kafka test broker, equals what the flow history
//! reads ([`Partitioner::partition_of`]), for every accepted partitioner.

use std::collections::BTreeMap;

use rdkafka::message::OwnedHeaders;
use redmirror_core::partition::Partitioner;
use redmirror_kafka::{Kafka, Publisher};
use redmirror_testkit::Broker;

#[tokio::test]
async fn every_accepted_partitioner_puts_a_key_where_history_looks() {
    const PARTITIONS: i32 = 7;
    let bootstrap = Broker::shared().bootstrap();
    let topic = format!("partitioners-{}", std::process::id());
    redmirror_kafka::topics::ensure(
        &Kafka::new(bootstrap.clone(), BTreeMap::new()),
        &topic,
        &format!("{topic}.dlq"),
        PARTITIONS,
        1,
        0,
    )
    .await
    .expect("topics");
    for name in [
        "consistent_random",
        "consistent",
        "murmur2_random",
        "murmur2",
        "fnv1a_random",
        "fnv1a",
    ] {
        let partitioner = Partitioner::from_property(Some(name)).expect("accepted");
        let kafka = Kafka::new(bootstrap.clone(), BTreeMap::from([("partitioner".into(), name.into())]));
        let publisher = Publisher::new(&kafka, &topic).expect("publisher");
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..60 {
            let key = format!("flow-{i}-\u{e9}");
            let fut = publisher
                .enqueue_raw(key.as_bytes(), b"x", OwnedHeaders::new())
                .await
                .expect("enqueued");
            let written = fut.await.expect("written");
            assert_eq!(
                written.partition,
                partitioner.partition_of(key.as_bytes(), PARTITIONS),
                "{name}: key {key:?}"
            );
            seen.insert(written.partition);
        }
        assert!(seen.len() > 3, "{name}: 60 keys landed in only {seen:?}");
    }
}
