//! Reading and writing flows through the independent `redis` client.

use std::collections::BTreeMap;

/// A flow as a sorted map (binary safe).
pub type Hash = BTreeMap<Vec<u8>, Vec<u8>>;

/// `HGETALL key` (empty map when absent).
pub fn hgetall(conn: &mut redis::Connection, key: &[u8]) -> Hash {
    redis::cmd("HGETALL").arg(key).query(conn).expect("HGETALL")
}

/// `HSET key f v ...`.
pub fn hset(conn: &mut redis::Connection, key: &[u8], fields: &[(&[u8], &[u8])]) {
    let mut c = redis::cmd("HSET");
    c.arg(key);
    for (f, v) in fields {
        c.arg(*f).arg(*v);
    }
    let _: i64 = c.query(conn).expect("HSET");
}

/// Builds a hash from string pairs.
pub fn hash(pairs: &[(&str, &str)]) -> Hash {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// `EXISTS key`.
pub fn exists(conn: &mut redis::Connection, key: &[u8]) -> bool {
    redis::cmd("EXISTS").arg(key).query::<i64>(conn).expect("EXISTS") == 1
}

/// `HEXISTS key field`.
pub fn hexists(conn: &mut redis::Connection, key: &[u8], field: &[u8]) -> bool {
    redis::cmd("HEXISTS")
        .arg(key)
        .arg(field)
        .query::<i64>(conn)
        .expect("HEXISTS")
        == 1
}
