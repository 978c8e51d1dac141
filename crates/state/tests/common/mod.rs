//! What the state crate's tests share.

use redmirror_config::{RedisEndpoint, TlsFiles};
use redmirror_testkit::RedisServer;

/// A connection to `server`, as the destination.
pub async fn client(server: &RedisServer) -> fred::prelude::Client {
    let endpoint = RedisEndpoint {
        url: server.url(),
        tls: TlsFiles::default(),
    };
    redmirror_redis::connect(&endpoint, "destination")
        .await
        .expect("connect")
}
