//! The Apache Kafka guard: starts ready, keeps its log across `kill -9`,
//! dies with its guard.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use redmirror_testkit::kafka::KafkaBroker;
use redmirror_testkit::wait_for;

fn create_topic(bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let res = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .expect("create_topics");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
}

fn produce(bootstrap: &str, topic: &str, n: usize) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create()
        .expect("producer");
    for i in 0..n {
        let payload = format!("record-{i}");
        p.send(BaseRecord::to(topic).key("k").payload(&payload))
            .map_err(|(e, _)| e)
            .expect("send");
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

fn read_all(bootstrap: &str, topic: &str) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "testkit-reader")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    wait_for("partition EOF", Duration::from_secs(30), || {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
                None
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => Some(()),
            _ => None,
        }
    });
    out
}

#[test]
fn kafka_keeps_its_log_across_kill_and_restart() {
    let t0 = Instant::now();
    let mut broker = KafkaBroker::start();
    eprintln!("Apache Kafka ready in {:.1}s", t0.elapsed().as_secs_f64());
    let topic = "testkit.durable";
    create_topic(&broker.bootstrap(), topic);
    produce(&broker.bootstrap(), topic, 100);
    let pid = broker.pid().expect("running");

    broker.kill();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z")),
        "the broker process {pid} is still alive after kill"
    );
    let t1 = Instant::now();
    broker.start_again();
    eprintln!("restarted on its log in {:.1}s", t1.elapsed().as_secs_f64());
    let got = read_all(&broker.bootstrap(), topic);
    let want: Vec<String> = (0..100).map(|i| format!("record-{i}")).collect();
    assert_eq!(got, want, "every acknowledged record is back after kill -9");
}

#[test]
fn dropping_the_guard_kills_the_broker() {
    let broker = KafkaBroker::start();
    let pid = broker.pid().expect("running");
    let dir = broker.dir().to_path_buf();
    drop(broker);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still exists"
    );
    assert!(!dir.exists(), "{} not removed", dir.display());
}

#[test]
fn shared_broker_is_one_process() {
    let a = KafkaBroker::shared();
    let b = KafkaBroker::shared();
    assert_eq!(a.bootstrap(), b.bootstrap());
    assert_eq!(a.pid(), b.pid());
    let topic = "testkit.shared";
    create_topic(&a.bootstrap(), topic);
    produce(&a.bootstrap(), topic, 3);
    assert_eq!(read_all(&b.bootstrap(), topic).len(), 3);
}
