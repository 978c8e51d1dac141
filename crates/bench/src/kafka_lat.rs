//! The broker's share of latency: produce one message per millisecond with
//! redmirror's producer settings and time its arrival at a consumer with
//! redmirror's consumer settings.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// p50/p99 (ms) of produce → consume at `rate` per second for `secs`.
pub fn measure(kafka: &redmirror_kafka::Kafka, topic: &str, rate: u64, secs: u64) -> anyhow::Result<(f64, f64)> {
    let producer: BaseProducer = kafka
        .client_config_of(
            redmirror_kafka::ClientKind::Producer,
            &[
                ("linger.ms", "1"),
                ("socket.nagle.disable", "true"),
                ("enable.idempotence", "true"),
                ("acks", "all"),
            ],
        )
        .create()?;
    let consumer: BaseConsumer = kafka
        .client_config(&[
            ("group.id", "lat-probe"),
            ("auto.offset.reset", "latest"),
            ("fetch.wait.max.ms", "10"),
            ("socket.nagle.disable", "true"),
        ])
        .create()?;
    consumer.subscribe(&[topic])?;
    // Join the group before measuring.
    let t0 = Instant::now();
    while consumer.assignment()?.count() == 0 && t0.elapsed() < Duration::from_secs(30) {
        consumer.poll(Duration::from_millis(50));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let topic_s = topic.to_string();
    let prod = std::thread::spawn(move || {
        let start = Instant::now();
        let mut i = 0u64;
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            let due = start + Duration::from_micros(i * 1_000_000 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros()
                .to_string();
            let key = format!("k{}", i % 97);
            let _ = producer.send(BaseRecord::to(&topic_s).key(&key).payload(&ts));
            producer.poll(Duration::ZERO);
            i += 1;
        }
        let _ = producer.flush(Duration::from_secs(5));
    });
    let mut lat = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64;
            if let Some(ts) = m
                .payload()
                .and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|s| s.parse::<u64>().ok())
            {
                lat.push(now.saturating_sub(ts));
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = prod.join();
    lat.sort_unstable();
    if lat.is_empty() {
        anyhow::bail!("no message arrived");
    }
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    Ok((p(0.5), p(0.99)))
}

/// Capture's share of latency for the events of flows whose id starts with
/// `prefix`: the event's `capture_time_us` (capture's clock when it made the
/// event from the source read) minus its `source_time_us` (the source's
/// clock in the atomic read), in ms with microsecond precision. Reads
/// `topic` from the start to its end.
pub fn capture_stage(bootstrap: &str, topic: &str, prefix: &str) -> anyhow::Result<Vec<f64>> {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-stage-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let mut eof = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    while eof.len() < parts.len() && Instant::now() < end {
        match c.poll(Duration::from_millis(100)) {
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Ok(m)) => {
                if !m.key().is_some_and(|k| k.starts_with(prefix.as_bytes())) {
                    continue;
                }
                // Both stamps are in the event, in microseconds: the
                // source's clock in the atomic read and capture's clock
                // when it made the event (the same machine's clock here).
                if let Ok(e) = redmirror_core::FlowEvent::decode_checked(m.key(), m.payload()) {
                    out.push((e.capture_time_us - e.source_time_us) as f64 / 1000.0);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}
