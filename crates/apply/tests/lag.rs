//! Lag tracking against a real broker: a broker that cannot be measured
//! fails readiness, naming what cannot be read, and readiness comes back
//! with the first measurement.

use std::collections::BTreeMap;
use std::time::Duration;

use redmirror_apply::lag::{track, SharedLag};
use redmirror_kafka::Kafka;
use redmirror_telemetry::{Component, Health};
use redmirror_testkit::proxy::Proxy;
use redmirror_testkit::{wait_for_async, Broker};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread")]
async fn kafka_is_down_while_lag_cannot_be_measured_and_up_once_it_can() {
    let broker = Broker::shared();
    let port: u16 = broker
        .bootstrap()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("broker port");
    let proxy = Proxy::start(port).expect("proxy");
    proxy.refuse(true);
    let kafka = Kafka::new(format!("127.0.0.1:{}", proxy.port()), BTreeMap::new());
    let health = Health::new();
    health.register(Component::Kafka);
    health.set(Component::Kafka, true);
    let stop = CancellationToken::new();
    let lag = SharedLag::default();
    let task = tokio::spawn(track(
        kafka,
        "lag-test".into(),
        "lag-test-topic".into(),
        Duration::from_millis(100),
        lag.clone(),
        health.clone(),
        stop.clone(),
    ));
    wait_for_async("Kafka to be marked down", Duration::from_secs(90), || {
        let h = health.clone();
        async move { (!h.ready()).then_some(()) }
    })
    .await;
    let why = health.reason(Component::Kafka).unwrap_or_default();
    assert!(
        why.contains("lag-test-topic") && why.contains("cannot be read"),
        "{why}"
    );
    proxy.refuse(false);
    wait_for_async("Kafka to be up again", Duration::from_secs(60), || {
        let h = health.clone();
        async move { h.ready().then_some(()) }
    })
    .await;
    assert!(lag.lock().unwrap().at.is_some());
    stop.cancel();
    task.await.unwrap();
}
