//! FLUSHDB, FLUSHALL and SWAPDB on the source: no keyspace event per key,
//! yet the sync copies they leave behind (or the flows a swap brings in)
//! are mirrored within seconds, the scheduled pass an hour away.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::source_commands::{q, Live, LIVE};

/// Writes `n` flows `client:{prefix}-{i}` on `conn` and waits for their copies.
fn mirror_flows(s: &Live, conn: &mut redis::Connection, prefix: &str, n: usize) {
    for i in 0..n {
        hset(
            conn,
            format!("client:{prefix}-{i}").as_bytes(),
            &[(b"i", i.to_string().as_bytes())],
        );
    }
    for i in 0..n {
        let want = copy_of(&hash(&[("i", &i.to_string())]));
        s.wait_dest(format!("client:{prefix}-{i}").as_bytes(), &want);
    }
}

/// Sync copies (`isSyncCopy` = `true`) on the destination, by key.
fn sync_copies(dest: &RedisServer) -> Vec<Vec<u8>> {
    snapshot(dest)
        .into_iter()
        .filter(|(k, v)| k.starts_with(b"client:") && v.get(&b"isSyncCopy"[..]).map(Vec::as_slice) == Some(b"true"))
        .map(|(k, _)| k)
        .collect()
}

/// Waits (at most [`LIVE`]) until the destination's sync copies are exactly
/// `want`; returns the seconds it took.
fn wait_copies(s: &Live, want: &[&str], what: &str) -> f64 {
    let started = Instant::now();
    let want: Vec<Vec<u8>> = want.iter().map(|k| k.as_bytes().to_vec()).collect();
    let mut last = Vec::new();
    while started.elapsed() < LIVE {
        last = sync_copies(&s.dest);
        if last == want {
            return started.elapsed().as_secs_f64();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what}: the sync copies are not {:?} within {LIVE:?} (no keyspace event; the scheduled pass is 1 h away): {:?}",
        want.iter().map(|k| String::from_utf8_lossy(k)).collect::<Vec<_>>(),
        last.iter().map(|k| String::from_utf8_lossy(k)).collect::<Vec<_>>()
    );
}

#[test]
fn flushdb_on_the_source_removes_the_sync_copies_within_seconds() {
    let s = Live::start();
    let mut src = s.source.conn();
    hset(&mut s.dest.conn(), b"client:native", &[(b"mine", b"1")]);
    mirror_flows(&s, &mut src, "f", 20);
    q(&mut src, &[b"FLUSHDB"]);
    let secs = wait_copies(&s, &[], "FLUSHDB");
    eprintln!("FLUSHDB: sync copies gone {secs:.2}s after it ran");
    assert_eq!(
        s.capture
            .metric("redmirror_capture_source_flushes_total{command=\"flushdb\"}"),
        1.0
    );
    assert_eq!(hgetall(&mut s.dest.conn(), b"client:native"), hash(&[("mine", "1")]));
    let idx: i64 = redis::cmd("HLEN").arg("clients").query(&mut s.dest.conn()).unwrap();
    assert_eq!(idx, 0, "index entries left behind");
}

#[test]
fn flushall_on_the_source_removes_the_sync_copies_within_seconds() {
    let s = Live::start();
    let mut src = s.source.conn();
    mirror_flows(&s, &mut src, "f", 10);
    q(&mut src, &[b"FLUSHALL"]);
    let secs = wait_copies(&s, &[], "FLUSHALL");
    eprintln!("FLUSHALL: sync copies gone {secs:.2}s after it ran");
}

#[test]
fn swapdb_on_the_source_mirrors_the_swapped_in_flows_within_seconds() {
    let s = Live::start();
    let mut src = s.source.conn();
    mirror_flows(&s, &mut src, "f", 10);
    // db 1 holds other flows: after the swap they are the watched db's.
    let mut src1 = s.source.conn();
    q(&mut src1, &[b"SELECT", b"1"]);
    hset(&mut src1, b"client:other", &[(b"v", b"1")]);
    q(&mut src, &[b"SWAPDB", b"0", b"1"]);
    let secs = wait_copies(&s, &["client:other"], "SWAPDB");
    eprintln!("SWAPDB: copies follow the swapped-in db {secs:.2}s after it ran");
    assert_eq!(
        hgetall(&mut s.dest.conn(), b"client:other"),
        copy_of(&hash(&[("v", "1")]))
    );
}
