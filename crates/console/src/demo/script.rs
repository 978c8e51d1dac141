//! The demo's script: the sample flows it writes on the source, step by
//! step, and the rows of both sides it shows.

use super::{FlowRow, Hash};

/// One scripted step: what it does (narrated) and the writes.
pub struct Step {
    /// What the step does, for the narration.
    pub says: &'static str,
    /// The writes, on the source.
    pub write: fn(&mut redis::Connection) -> redis::RedisResult<()>,
}

/// The flows the view always lists (more appear as they are written).
pub const SAMPLES: [&str; 7] = ["flow-1", "flow-2", "flow-3", "flow-4", "flow-5", "demo-1", "native-1"];

/// True when `redis-server` can be run.
pub fn redis_installed() -> bool {
    std::process::Command::new("redis-server")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One command, its reply ignored.
pub fn cmd(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<()> {
    let mut command = redis::cmd(args[0]);
    for a in &args[1..] {
        command.arg(*a);
    }
    command.query::<redis::Value>(c).map(drop)
}

/// `HSET key f v ...`.
pub fn hset(c: &mut redis::Connection, key: &[u8], fields: &[(&[u8], &[u8])]) -> redis::RedisResult<()> {
    let mut command = redis::cmd("HSET");
    command.arg(key);
    for (f, v) in fields {
        command.arg(*f).arg(*v);
    }
    command.query::<i64>(c).map(drop)
}

/// `HGETALL key` (empty when absent or unreadable: the view shows what it can).
pub fn hgetall(c: &mut redis::Connection, key: &[u8]) -> Hash {
    redis::cmd("HGETALL").arg(key).query(c).unwrap_or_default()
}

/// The steps, in order.
pub fn steps() -> Vec<Step> {
    vec![
        Step {
            says: "create flow-1 and flow-2 on the source (HSET): both are mirrored, flowConfigHistory excluded",
            write: |s| {
                hset(
                    s,
                    b"client:flow-1",
                    &[
                        (b"name", b"Checkout"),
                        (b"clerkOrganizationId", b"org_acme"),
                        (b"flowConfigHistory", b"[v1,v2]"),
                    ],
                )?;
                hset(
                    s,
                    b"client:flow-2",
                    &[(b"name", b"Signup"), (b"clerkOrganizationId", b"org_acme")],
                )?;
                cmd(s, &["HSET", "clients", "flow-1", "1", "flow-2", "1"])
            },
        },
        Step {
            says: "update flow-1 on the source: the copy follows within milliseconds",
            write: |s| hset(s, b"client:flow-1", &[(b"name", b"Checkout v2"), (b"steps", b"3")]),
        },
        Step {
            says: "write native-1 on the source: staging has its own native-1, which is never overwritten",
            write: |s| hset(s, b"client:native-1", &[(b"name", b"production version")]),
        },
        Step {
            says: "create demo-1 in organisation org_hello: filtered, never copied",
            write: |s| {
                hset(
                    s,
                    b"client:demo-1",
                    &[(b"name", b"Hello demo"), (b"clerkOrganizationId", b"org_hello")],
                )
            },
        },
        Step {
            says: "rename flow-2 to flow-3 (RENAME): flow-2's copy goes, flow-3's appears",
            write: |s| cmd(s, &["RENAME", "client:flow-2", "client:flow-3"]),
        },
        Step {
            says: "create flow-4 with a 2-second expiry (EXPIRE): its copy goes when it expires",
            write: |s| {
                hset(s, b"client:flow-4", &[(b"name", b"Short-lived")])?;
                cmd(s, &["EXPIRE", "client:flow-4", "2"])
            },
        },
        Step {
            says: "create flow-5, then delete it (DEL): the copy is removed",
            write: |s| {
                hset(s, b"client:flow-5", &[(b"name", b"Mistake")])?;
                cmd(s, &["DEL", "client:flow-5"])
            },
        },
    ]
}

/// The sample flows and any other flow on either side (at most 14 rows).
pub fn rows(s: &mut redis::Connection, d: &mut redis::Connection, native_before: &Hash) -> Vec<FlowRow> {
    let mut ids: Vec<String> = SAMPLES.iter().map(|s| s.to_string()).collect();
    for c in [&mut *s, &mut *d] {
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("client:*").query(c).unwrap_or_default();
        for k in keys {
            let id = String::from_utf8_lossy(&k["client:".len()..]).into_owned();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids.truncate(14);
    ids.into_iter()
        .map(|id| {
            let key = format!("client:{id}");
            let src = hgetall(s, key.as_bytes());
            let dst = hgetall(d, key.as_bytes());
            super::flow_row(&id, &src, &dst, id == "native-1" && &dst == native_before)
        })
        .collect()
}
