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
        .client_config(&[
            ("linger.ms", "1"),
            ("socket.nagle.disable", "true"),
            ("enable.idempotence", "true"),
            ("acks", "all"),
        ])
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
