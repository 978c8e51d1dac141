//! The hold on a real redis-server: written, read, watched and ended; a
//! malformed one is an error that names the key and how to clear it.

use std::time::Duration;

use redmirror_state::hold::{self, Hold, HoldWatch};
use redmirror_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

mod common;
use common::client;

#[tokio::test]
async fn a_hold_is_set_read_watched_and_cleared() {
    let server = RedisServer::start();
    let c = client(&server).await;
    let key = "redmirror:hold";
    assert_eq!(hold::read(&c, key).await.unwrap(), None);
    let shutdown = CancellationToken::new();
    let mut watch = HoldWatch::start(c.clone(), key.into(), shutdown.clone())
        .await
        .expect("started");
    assert_eq!(watch.current(), None);

    let h = Hold {
        at_us: 1_764_583_200_000_000,
        since_us: 1_764_590_000_123_456,
    };
    hold::set(&c, key, h).await.unwrap();
    assert_eq!(hold::read(&c, key).await.unwrap(), Some(h));
    let seen = tokio::time::timeout(Duration::from_secs(5), watch.until_held())
        .await
        .expect("watch sees the hold");
    assert_eq!(seen, h);
    assert_eq!(
        Hold::to_json(Some(&h)),
        serde_json::json!({
            "held": true,
            "held_at": "2025-12-01T10:00:00.000000Z",
            "held_since": "2025-12-01T11:53:20.123456Z",
        })
    );

    assert_eq!(hold::clear(&c, key).await.unwrap(), Some(h));
    assert_eq!(hold::clear(&c, key).await.unwrap(), None);
    tokio::time::timeout(Duration::from_secs(5), async {
        while watch.current().is_some() {
            watch.changed().await;
        }
    })
    .await
    .expect("watch sees the end of the hold");
    assert_eq!(Hold::to_json(None)["held"], false);
    shutdown.cancel();
}

#[tokio::test]
async fn a_malformed_hold_is_an_error_naming_the_key_and_resume_clears_it() {
    let server = RedisServer::start();
    let c = client(&server).await;
    let key = "redmirror:hold";
    let mut raw = server.conn();
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("at_us")
        .arg("yesterday")
        .query(&mut raw)
        .unwrap();
    let e = hold::read(&c, key).await.unwrap_err().to_string();
    assert!(e.contains(key) && e.contains("redmirror resume"), "{e}");
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("since_us")
        .arg("1")
        .query(&mut raw)
        .unwrap();
    assert!(hold::read(&c, key).await.is_err(), "at_us is still not a number");
    assert_eq!(hold::clear(&c, key).await.unwrap(), None);
    assert_eq!(hold::read(&c, key).await.unwrap(), None);
}
