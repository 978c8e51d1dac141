//! The shared source epoch on a real redis-server: two processes' epochs
//! agree through the destination hash, a newer one is adopted, and a
//! process that starts later loads it.

use redmirror_testkit::RedisServer;

mod common;
use common::client;

#[tokio::test]
async fn processes_agree_on_the_epoch_through_the_destination() {
    use fred::interfaces::HashesInterface;
    let server = RedisServer::start();
    let c = client(&server).await;
    let key = "redmirror:source-epoch".to_string();
    let a = redmirror_state::epoch::load(c.clone(), key.clone()).await.unwrap();
    let b = redmirror_state::epoch::load(c.clone(), key.clone()).await.unwrap();
    assert_eq!((a.current(), b.current()), (0, 0));

    // One process sees a change of source: the other adopts it on its
    // next sync, and the hash keeps it.
    a.bump("test: the source changed");
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    assert_eq!((a.current(), b.current()), (1, 1));
    let stored: Option<String> = c.hget(key.as_str(), "epoch").await.unwrap();
    assert_eq!(stored.as_deref(), Some("1"));

    // Either process may move it on; the other follows.
    b.bump("test: again");
    b.sync().await.unwrap();
    a.sync().await.unwrap();
    assert_eq!((a.current(), b.current()), (2, 2));

    // A process started later begins where the others are.
    let late = redmirror_state::epoch::load(c, key).await.unwrap();
    assert_eq!(late.current(), 2);
}
