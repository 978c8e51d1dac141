//! Bulk reads against a real redis-server: replies in order and borrowed
//! correctly, credentials and database from the URL, and a connection
//! that never carries stale replies into the next call.

use std::time::Duration;

use redmirror_config::{RedisEndpoint, TlsFiles};
use redmirror_redis::bulk::{Bulk, Pipeline, Reply};
use redmirror_testkit::{RedisOptions, RedisServer};

fn endpoint(url: String) -> RedisEndpoint {
    RedisEndpoint {
        url,
        tls: TlsFiles::default(),
    }
}

/// Runs `pipe` and returns owned copies of the replies.
async fn run(bulk: &Bulk, pipe: &Pipeline) -> Result<Vec<String>, fred::error::Error> {
    let mut out = Vec::new();
    bulk.run(pipe, |i, r| {
        assert_eq!(i, out.len(), "replies come in order");
        out.push(show(&r));
    })
    .await?;
    Ok(out)
}

fn show(r: &Reply<'_>) -> String {
    match r {
        Reply::Nil => "nil".into(),
        Reply::Int(i) => format!(":{i}"),
        Reply::Str(s) => String::from_utf8_lossy(s).into_owned(),
        Reply::Error(e) => format!("-{}", String::from_utf8_lossy(e)),
        Reply::Array(a) => format!("[{}]", a.iter().map(show).collect::<Vec<_>>().join(",")),
    }
}

#[tokio::test]
async fn mixed_pipeline_replies_in_order() {
    let server = RedisServer::start_with(RedisOptions::default());
    let _: () = server.cmd(&[b"HSET", b"h", b"f", b"\xffv"]);
    let _: () = server.cmd(&[b"SET", b"s", b"x"]);
    let bulk = Bulk::new(&endpoint(server.url())).expect("bulk");
    let mut pipe = Pipeline::new();
    pipe.key_cmd(b"HGETALL", b"h")
        .key_cmd(b"HGETALL", b"absent")
        .key_cmd(b"HGETALL", b"s")
        .cmd(&[b"EXISTS".as_ref(), b"h", b"s", b"absent"])
        .key_cmd_with(b"HMGET", b"h", &[b"f".as_ref(), b"g"])
        .key_cmd(b"EXISTS", b"");
    let replies = run(&bulk, &pipe).await.expect("pipeline");
    assert_eq!(replies.len(), 6);
    assert_eq!(replies[0], "[f,\u{fffd}v]");
    assert_eq!(replies[1], "[]");
    assert!(replies[2].starts_with("-WRONGTYPE"), "{}", replies[2]);
    assert_eq!(replies[3], ":2");
    assert_eq!(replies[4], "[\u{fffd}v,nil]");
    assert_eq!(replies[5], ":0");
    // The connection is reused and still in step after an error reply.
    assert_eq!(run(&bulk, &pipe).await.expect("again"), replies);
}

#[tokio::test]
async fn large_replies_span_many_reads() {
    let server = RedisServer::start_with(RedisOptions::default());
    let value = vec![b'v'; 300];
    let mut conn = server.conn();
    for chunk in 0..20 {
        let mut c = redis::cmd("HSET");
        c.arg("big");
        for i in 0..250 {
            c.arg(format!("field-{chunk}-{i}")).arg(&value);
        }
        let _: () = c.query(&mut conn).expect("HSET");
    }
    let bulk = Bulk::new(&endpoint(server.url())).expect("bulk");
    let mut pipe = Pipeline::new();
    for _ in 0..40 {
        pipe.key_cmd(b"HGETALL", b"big");
    }
    let mut fields = 0;
    let mut bytes = 0;
    bulk.run(&pipe, |_, r| {
        let Reply::Array(items) = r else {
            panic!("not an array: {r:?}")
        };
        fields += items.len() / 2;
        bytes += items
            .iter()
            .map(|i| if let Reply::Str(s) = i { s.len() } else { 0 })
            .sum::<usize>();
    })
    .await
    .expect("pipeline");
    assert_eq!(fields, 40 * 5000);
    assert!(bytes > 40 * 5000 * 300, "{bytes} bytes");
}

#[tokio::test]
async fn password_and_database_come_from_the_url() {
    let server = RedisServer::start_with(RedisOptions::default().arg("requirepass", "s3cret"));
    let url = format!("redis://:s3cret@127.0.0.1:{}/3", server.port());
    let bulk = Bulk::new(&endpoint(url.clone())).expect("bulk");
    let mut pipe = Pipeline::new();
    pipe.cmd(&[b"HSET".as_ref(), b"k", b"f", b"v"]);
    run(&bulk, &pipe).await.expect("write through bulk");
    let mut independent = redis::Client::open(url).unwrap().get_connection().unwrap();
    let got: Vec<String> = redis::cmd("HGETALL").arg("k").query(&mut independent).unwrap();
    assert_eq!(got, ["f", "v"], "the write went to database 3");
    let db0: bool = redis::cmd("SELECT")
        .arg(0)
        .query::<()>(&mut independent)
        .and_then(|_| redis::cmd("EXISTS").arg("k").query(&mut independent))
        .unwrap();
    assert!(!db0, "not to database 0");

    let wrong = Bulk::new(&endpoint(format!("redis://:nope@127.0.0.1:{}", server.port()))).expect("bulk");
    let err = run(&wrong, &pipe).await.expect_err("wrong password");
    assert_eq!(*err.kind(), fred::error::ErrorKind::Auth, "{err}");
    assert!(err.details().contains("WRONGPASS"), "{err}");
}

#[tokio::test]
async fn a_restarted_server_fails_one_call_then_reconnects() {
    let mut server = RedisServer::start_with(RedisOptions::default());
    let _: () = server.cmd(&[b"SET", b"k", b"1"]);
    let bulk = Bulk::new(&endpoint(server.url())).expect("bulk");
    let mut pipe = Pipeline::new();
    pipe.key_cmd(b"EXISTS", b"k");
    assert_eq!(run(&bulk, &pipe).await.expect("first"), [":1"]);
    server.restart();
    let err = run(&bulk, &pipe).await.expect_err("the old connection is gone");
    assert_eq!(*err.kind(), fred::error::ErrorKind::IO, "{err}");
    assert_eq!(run(&bulk, &pipe).await.expect("reconnected"), [":1"]);
}

#[tokio::test]
async fn a_cancelled_pipeline_leaves_no_stale_replies() {
    let server = RedisServer::start_with(RedisOptions::default());
    let _: () = server.cmd(&[b"SET", b"k", b"1"]);
    let bulk = Bulk::new(&endpoint(server.url())).expect("bulk");
    // Connect, then cancel a slow pipeline while its reply is outstanding.
    let mut ping = Pipeline::new();
    ping.cmd(&[b"PING"]);
    assert_eq!(run(&bulk, &ping).await.expect("ping"), ["PONG"]);
    let mut slow = Pipeline::new();
    slow.cmd(&[b"BLPOP".as_ref(), b"nothing", b"0.3"])
        .cmd(&[b"GET".as_ref(), b"k"]);
    let cancelled = tokio::time::timeout(Duration::from_millis(50), run(&bulk, &slow)).await;
    assert!(cancelled.is_err(), "the slow pipeline was still running");
    // The next call must get its own reply, not BLPOP's nil or GET's 1.
    let mut get = Pipeline::new();
    get.cmd(&[b"ECHO".as_ref(), b"mine"]);
    assert_eq!(run(&bulk, &get).await.expect("after cancel"), ["mine"]);
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_not_a_hang() {
    let port = redmirror_testkit::free_port();
    let bulk = Bulk::new(&endpoint(format!("redis://127.0.0.1:{port}"))).expect("bulk");
    let mut pipe = Pipeline::new();
    pipe.cmd(&[b"PING"]);
    let err = run(&bulk, &pipe).await.expect_err("nothing listens");
    assert_eq!(*err.kind(), fred::error::ErrorKind::IO, "{err}");
}

/// Receives until `n` messages have arrived (deadline 10 s), as owned
/// `(channel, message)` pairs.
async fn receive(sub: &mut redmirror_redis::bulk::Subscription, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < n {
        tokio::time::timeout_at(deadline, sub.recv(|c, m| got.push((c.to_vec(), m.to_vec()))))
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages within 10 s", got.len()))
            .expect("subscription");
    }
    got
}

#[tokio::test]
async fn a_subscription_delivers_every_message_in_order_byte_for_byte() {
    let server = RedisServer::start_with(RedisOptions::default().arg("requirepass", "s3cret"));
    let url = format!("redis://:s3cret@127.0.0.1:{}/3", server.port());
    let bulk = Bulk::new(&endpoint(url.clone())).expect("bulk");
    let mut sub = bulk.psubscribe(b"__keyevent@3__:*").await.expect("psubscribe");
    let mut writer = redis::Client::open(url).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Eh")
        .query(&mut writer)
        .unwrap();
    // Many more than one read's worth, sent in one go, with a key that is
    // not UTF-8.
    let n = 20_000;
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("HSET").arg(format!("client:{i}")).arg("f").arg(i).ignore();
    }
    pipe.cmd("HSET").arg(b"client:\xff\x00").arg("f").arg("v").ignore();
    pipe.cmd("HDEL").arg("client:0").arg("f").ignore();
    let _: () = pipe.query(&mut writer).unwrap();
    let got = receive(&mut sub, n + 2).await;
    for (i, (channel, key)) in got[..n].iter().enumerate() {
        assert_eq!(channel, b"__keyevent@3__:hset");
        assert_eq!(key, format!("client:{i}").as_bytes(), "in order");
    }
    assert_eq!(got[n].1, b"client:\xff\x00");
    assert_eq!(got[n + 1], (b"__keyevent@3__:hdel".to_vec(), b"client:0".to_vec()));
    // Another database's events are not ours.
    let mut db0 = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/0", server.port()))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("client:db0")
        .arg("f")
        .arg("v")
        .query(&mut db0)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("client:last")
        .arg("f")
        .arg("v")
        .query(&mut writer)
        .unwrap();
    assert_eq!(receive(&mut sub, 1).await[0].1, b"client:last");
}

#[tokio::test]
async fn a_killed_subscription_is_an_error_and_a_refused_one_too() {
    let server = RedisServer::start_with(RedisOptions::default());
    let bulk = Bulk::new(&endpoint(server.url())).expect("bulk");
    let mut sub = bulk.psubscribe(b"__keyevent@0__:*").await.expect("psubscribe");
    let killed: i64 = server.cmd(&[b"CLIENT", b"KILL", b"TYPE", b"pubsub"]);
    assert_eq!(killed, 1);
    let err = tokio::time::timeout(Duration::from_secs(10), sub.recv(|_, _| panic!("no message was sent")))
        .await
        .expect("the loss is noticed, not waited on")
        .expect_err("connection closed");
    assert_eq!(*err.kind(), fred::error::ErrorKind::IO, "{err}");

    let wrong = Bulk::new(&endpoint(format!("redis://:nope@127.0.0.1:{}", server.port()))).expect("bulk");
    let err = wrong.psubscribe(b"x*").await.expect_err("wrong password");
    assert_eq!(*err.kind(), fred::error::ErrorKind::Auth, "{err}");
}

/// A CA and a server certificate for `localhost`, as PEM files in `dir`.
/// A CA and a server certificate for `localhost`, written as PEM files.
struct Pems {
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn tls_files(dir: &std::path::Path) -> Pems {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).expect("write pem");
        p
    };
    Pems {
        ca: write("ca.pem", ca.pem()),
        cert: write("server.pem", cert.pem()),
        key: write("server.key", key.serialize_pem()),
    }
}

#[tokio::test]
async fn tls_endpoints_work_for_bulk_reads_and_the_fred_client_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Pems { ca, cert, key } = tls_files(dir.path());
    let tls_port = redmirror_testkit::free_port();
    let server = RedisServer::start_with(
        RedisOptions::default()
            .arg("tls-port", &tls_port.to_string())
            .arg("tls-cert-file", cert.to_str().unwrap())
            .arg("tls-key-file", key.to_str().unwrap())
            .arg("tls-ca-cert-file", ca.to_str().unwrap())
            .arg("tls-auth-clients", "no"),
    );
    let _: () = server.cmd(&[b"HSET", b"h", b"f", b"v"]);
    let endpoint = RedisEndpoint {
        url: format!("rediss://localhost:{tls_port}"),
        tls: TlsFiles {
            ca_file: Some(ca.clone()),
            ..TlsFiles::default()
        },
    };
    let bulk = Bulk::new(&endpoint).expect("bulk");
    let mut pipe = Pipeline::new();
    pipe.key_cmd(b"HGETALL", b"h");
    assert_eq!(run(&bulk, &pipe).await.expect("bulk over TLS"), ["[f,v]"]);
    let client = redmirror_redis::connect(&endpoint, "test")
        .await
        .expect("fred over TLS");
    let v: std::collections::HashMap<String, String> = fred::prelude::HashesInterface::hgetall(&client, "h")
        .await
        .expect("hgetall");
    assert_eq!(v.get("f").map(String::as_str), Some("v"));
    // A server the CA did not sign is refused, not read.
    let stranger = tempfile::tempdir().expect("tempdir");
    let other_ca = tls_files(stranger.path()).ca;
    let untrusted = RedisEndpoint {
        tls: TlsFiles {
            ca_file: Some(other_ca),
            ..TlsFiles::default()
        },
        ..endpoint
    };
    let err = run(&Bulk::new(&untrusted).expect("bulk"), &pipe)
        .await
        .expect_err("untrusted certificate");
    assert_eq!(*err.kind(), fred::error::ErrorKind::Tls, "{err}");
}
