//! Source commands outside the hash class that replace, move or wipe flows,
//! mirrored live (the scheduled pass is an hour away in every test here).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::*;

/// "Within seconds": far less than any scheduled pass, enough for shared cores.
pub const LIVE: Duration = Duration::from_secs(20);

/// capture, apply and reconcile on a source that starts with
/// `notify-keyspace-events ""` (capture sets the classes itself), no
/// scheduled pass for an hour.
pub struct Live {
    pub source: RedisServer,
    pub dest: RedisServer,
    pub capture: Mirror,
    _apply: Mirror,
    pub reconcile: Mirror,
}

impl Live {
    /// Started, and idle: the reconciler starts only once capture has
    /// signalled its start-up gap, so its one start-up pass covers that gap
    /// and no pass is due afterwards (whatever repairs drift from then on
    /// is live, or a pass something else asked for).
    pub fn start() -> Live {
        let source = RedisServer::start_with(RedisOptions::default());
        let dest = RedisServer::start_with(RedisOptions::default());
        let broker = Broker::shared();
        let mut env = mirror_env(&source.url(), &dest.url(), &broker.bootstrap());
        env.insert("REDMIRROR_CONFIGURE_NOTIFICATIONS".into(), "true".into());
        env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into());
        let capture = Mirror::start(&["capture"], &with_http_port(&env));
        let apply = Mirror::start(&["apply"], &with_http_port(&env));
        wait_flowing(&mut source.conn(), &mut dest.conn(), b"client:probe");
        let _: i64 = redis::cmd("DEL").arg("client:probe").query(&mut source.conn()).unwrap();
        wait_for("the probe's deletion to be mirrored", CONVERGE, || {
            (!exists(&mut dest.conn(), b"client:probe")).then_some(())
        });
        let gaps: Option<i64> = redis::cmd("GET")
            .arg("redmirror:capture:gaps")
            .query(&mut dest.conn())
            .unwrap();
        assert!(
            gaps >= Some(1),
            "capture subscribed without signalling its start-up gap"
        );
        let reconcile = Mirror::start(&["reconcile"], &with_http_port(&env));
        wait_for("the start-up reconcile pass", CONVERGE, || {
            (reconcile.metric("redmirror_reconcile_runs_total") >= 1.0).then_some(())
        });
        Live {
            source,
            dest,
            capture,
            _apply: apply,
            reconcile,
        }
    }

    /// Waits until destination `key` equals `want`.
    pub fn wait_dest(&self, key: &[u8], want: &Hash) {
        let mut dst = self.dest.conn();
        wait_for(
            &format!("destination {}", String::from_utf8_lossy(key)),
            CONVERGE,
            || (&hgetall(&mut dst, key) == want).then_some(()),
        );
    }
}

/// One command over a flow key and what the destination copy must become.
struct Case {
    name: &'static str,
    flow: &'static str,
    /// Runs the command on the source (db 0 connection, db 1 connection).
    run: fn(&mut redis::Connection, &mut redis::Connection),
    /// Destination copy afterwards (`None`: removed).
    want: Option<Hash>,
}

/// A hash as readable text (`absent` when empty).
fn text(h: &Hash) -> String {
    if h.is_empty() {
        return "absent".into();
    }
    let fields: Vec<String> = h
        .iter()
        .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(k), String::from_utf8_lossy(v)))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

pub fn q(conn: &mut redis::Connection, args: &[&[u8]]) -> redis::Value {
    let mut c = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(conn)
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(args[0])))
}

#[test]
fn flows_replaced_moved_or_restored_by_other_type_classes_are_mirrored_live() {
    let s = Live::start();
    let (mut src, mut src1) = (s.source.conn(), s.source.conn());
    q(&mut src1, &[b"SELECT", b"1"]);
    let before = hash(&[("v", "before")]);
    let cases = [
        Case {
            name: "SUNIONSTORE",
            flow: "client:sunionstore",
            run: |c, _| {
                q(c, &[b"SADD", b"set:a", b"x"]);
                q(c, &[b"SUNIONSTORE", b"client:sunionstore", b"set:a"]);
            },
            want: None,
        },
        Case {
            name: "ZUNIONSTORE",
            flow: "client:zunionstore",
            run: |c, _| {
                q(c, &[b"ZADD", b"zset:a", b"1", b"x"]);
                q(c, &[b"ZUNIONSTORE", b"client:zunionstore", b"1", b"zset:a"]);
            },
            want: None,
        },
        Case {
            name: "SORT ... STORE",
            flow: "client:sortstore",
            run: |c, _| {
                q(c, &[b"RPUSH", b"list:a", b"3", b"1", b"2"]);
                q(c, &[b"SORT", b"list:a", b"STORE", b"client:sortstore"]);
            },
            want: None,
        },
        Case {
            name: "COPY ... REPLACE",
            flow: "client:copy",
            run: |c, _| {
                q(c, &[b"HSET", b"other:hash", b"v", b"copied"]);
                q(c, &[b"COPY", b"other:hash", b"client:copy", b"REPLACE"]);
            },
            want: Some(copy_of(&hash(&[("v", "copied")]))),
        },
        Case {
            name: "COPY ... REPLACE (a set over the flow)",
            flow: "client:copyset",
            run: |c, _| {
                q(c, &[b"SADD", b"set:b", b"x"]);
                q(c, &[b"COPY", b"set:b", b"client:copyset", b"REPLACE"]);
            },
            want: None,
        },
        Case {
            name: "RESTORE ... REPLACE",
            flow: "client:restore",
            run: |c, _| {
                q(c, &[b"HSET", b"other:restored", b"v", b"restored"]);
                let dump: Vec<u8> = redis::cmd("DUMP").arg("other:restored").query(c).unwrap();
                let _: () = redis::cmd("RESTORE")
                    .arg("client:restore")
                    .arg(0)
                    .arg(dump)
                    .arg("REPLACE")
                    .query(c)
                    .unwrap();
            },
            want: Some(copy_of(&hash(&[("v", "restored")]))),
        },
        Case {
            name: "MOVE out of the watched db",
            flow: "client:moveout",
            run: |c, _| {
                q(c, &[b"MOVE", b"client:moveout", b"1"]);
            },
            want: None,
        },
        Case {
            name: "MOVE into the watched db",
            flow: "client:movein",
            run: |_, c1| {
                q(c1, &[b"HSET", b"client:movein", b"v", b"moved in"]);
                q(c1, &[b"MOVE", b"client:movein", b"0"]);
            },
            want: Some(copy_of(&hash(&[("v", "moved in")]))),
        },
    ];
    // Every flow (but the one still in db 1) is mirrored first.
    for c in &cases {
        if c.name != "MOVE into the watched db" {
            hset(&mut src, c.flow.as_bytes(), &[(b"v", b"before")]);
            s.wait_dest(c.flow.as_bytes(), &copy_of(&before));
        }
    }
    for c in &cases {
        (c.run)(&mut src, &mut src1);
    }
    let started = Instant::now();
    let mut dst = s.dest.conn();
    let mut pending: BTreeMap<&str, &Case> = cases.iter().map(|c| (c.name, c)).collect();
    while !pending.is_empty() && started.elapsed() < LIVE {
        pending.retain(|_, c| {
            let got = hgetall(&mut dst, c.flow.as_bytes());
            match &c.want {
                None => !got.is_empty(),
                Some(w) => &got != w,
            }
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    let failed: Vec<String> = pending
        .values()
        .map(|c| {
            format!(
                "{}: destination {} is {}, want {}",
                c.name,
                c.flow,
                text(&hgetall(&mut dst, c.flow.as_bytes())),
                c.want.as_ref().map_or("absent".into(), text)
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "not mirrored within {LIVE:?}:\n{}",
        failed.join("\n")
    );
    eprintln!(
        "every command mirrored {:.2}s after it ran",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        s.reconcile.metric("redmirror_reconcile_runs_total"),
        1.0,
        "a pass ran: the commands were not (only) mirrored live"
    );
    // The index follows the copies.
    for c in &cases {
        assert_eq!(
            hexists(&mut dst, b"clients", &c.flow.as_bytes()[7..]),
            c.want.is_some(),
            "{}: index entry",
            c.name
        );
    }
}
