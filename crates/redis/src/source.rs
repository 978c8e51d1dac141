//! The atomic source read: the source clock and the state of a batch of
//! flows in one transaction (`MULTI`, `TIME`, `HGETALL`..., `EXEC`), so every
//! state comes with the instant it was true at. Never writes, and needs no
//! scripting: a read-only ACL user with `+@read +@transaction +time +info`
//! is enough (SPEC section 2).
//!
//! Sent as one pipeline on the bulk connections ([`crate::bulk`]) and parsed
//! in place. When asked, the transaction also carries `INFO server`, so the
//! server's `run_id` is known for exactly the instant of the read (the
//! source epoch moves when it changes, see [`crate::epoch`]).

use bytes::Bytes;
use fred::error::{Error, ErrorKind};
use redmirror_config::RedisEndpoint;
use redmirror_core::{KeyLayout, Order, SourceFlow};

use crate::bulk::{Bulk, Pipeline, Reply};
use crate::epoch::EpochReader;
use crate::RedisError;

/// Reads flows from the source atomically together with its clock, each
/// read ordered in the source epoch ([`crate::epoch`]).
#[derive(Debug)]
pub struct SourceReader {
    bulk: Bulk,
    keys: KeyLayout,
    epoch: EpochReader,
}

/// One atomic read of a batch of flows.
#[derive(Debug, Clone)]
pub struct SourceRead {
    /// The source epoch and clock (`TIME`) at the read.
    pub order: Order,
    /// `(flow id, state)` in the order asked.
    pub flows: Vec<(Bytes, SourceFlow)>,
}

/// What one transaction returned.
#[derive(Debug)]
struct Raw {
    time_us: i64,
    run_id: Option<String>,
    flows: Vec<(Bytes, SourceFlow)>,
}

impl SourceReader {
    /// A reader for this endpoint and key layout, ordering its reads with
    /// `epoch`; nothing is connected yet.
    pub fn new(endpoint: &RedisEndpoint, keys: KeyLayout, epoch: EpochReader) -> Result<Self, RedisError> {
        Ok(SourceReader {
            bulk: Bulk::new(endpoint)?,
            keys,
            epoch,
        })
    }

    /// The source epoch this reader orders its reads with.
    pub fn epoch(&self) -> &crate::epoch::SourceEpoch {
        self.epoch.epoch()
    }

    /// Reads these flows (by id) and the source time in one transaction.
    pub async fn read(&self, ids: &[Bytes]) -> Result<SourceRead, Error> {
        let raw = self.transaction(ids, self.epoch.wants_identity()).await?;
        Ok(SourceRead {
            order: self.epoch.order(raw.run_id.as_deref(), raw.time_us),
            flows: raw.flows,
        })
    }

    /// `MULTI`, `TIME`, (`INFO server`), `HGETALL`..., `EXEC` as one pipeline.
    async fn transaction(&self, ids: &[Bytes], identity: bool) -> Result<Raw, Error> {
        let mut p = Pipeline::new();
        p.cmd(&[b"MULTI"]).cmd(&[b"TIME"]);
        if identity {
            p.cmd(&[b"INFO".as_ref(), b"server"]);
        }
        for id in ids {
            p.key_cmd(b"HGETALL", &self.keys.flow_key(id));
        }
        p.cmd(&[b"EXEC"]);
        let last = p.len() - 1;
        let mut refused: Option<String> = None;
        let mut parsed: Option<Result<Raw, Error>> = None;
        self.bulk
            .run(&p, |i, reply| {
                if i == last {
                    parsed = Some(match (&refused, reply) {
                        (Some(e), _) => Err(refusal(e)),
                        (None, Reply::Error(e)) => Err(refusal(&String::from_utf8_lossy(e))),
                        (None, Reply::Array(items)) => parse(items, ids, identity),
                        (None, _) => Err(bad("EXEC")),
                    });
                } else if let Reply::Error(e) = reply {
                    // A command refused while queueing (NOPERM, unknown
                    // command): EXEC then aborts; the first refusal is the cause.
                    refused.get_or_insert_with(|| String::from_utf8_lossy(e).into_owned());
                }
            })
            .await?;
        parsed.unwrap_or_else(|| Err(bad("EXEC")))
    }
}

fn bad(what: &str) -> Error {
    Error::new(
        ErrorKind::Parse,
        format!("unexpected reply to {what} in the source read"),
    )
}

fn refusal(e: &str) -> Error {
    Error::new(ErrorKind::Unknown, e.to_string())
}

fn parse(items: Vec<Reply<'_>>, ids: &[Bytes], identity: bool) -> Result<Raw, Error> {
    if items.len() != 1 + usize::from(identity) + ids.len() {
        return Err(bad("EXEC"));
    }
    let mut it = items.into_iter();
    let time_us = match it.next() {
        Some(Reply::Array(t)) => match t.as_slice() {
            [Reply::Str(s), Reply::Str(u)] => {
                let n = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<i64>().ok();
                n(s).zip(n(u))
                    .map(|(s, u)| s * 1_000_000 + u)
                    .ok_or_else(|| bad("TIME"))?
            }
            _ => return Err(bad("TIME")),
        },
        Some(Reply::Error(e)) => return Err(refusal(&String::from_utf8_lossy(e))),
        _ => return Err(bad("TIME")),
    };
    let run_id = if identity {
        match it.next() {
            Some(Reply::Str(info)) => Some(info_field(info, "run_id").ok_or_else(|| bad("INFO server"))?),
            Some(Reply::Error(e)) => return Err(refusal(&String::from_utf8_lossy(e))),
            _ => return Err(bad("INFO server")),
        }
    } else {
        None
    };
    let mut flows = Vec::with_capacity(ids.len());
    for (id, reply) in ids.iter().zip(it) {
        let state = match reply {
            // Redis removes a hash with its last field: empty means absent.
            Reply::Array(a) if a.is_empty() => SourceFlow::Absent,
            Reply::Array(a) if a.len() % 2 == 0 => {
                let mut fields = Vec::with_capacity(a.len() / 2);
                for pair in a.chunks(2) {
                    let [Reply::Str(n), Reply::Str(v)] = pair else {
                        return Err(bad("HGETALL"));
                    };
                    fields.push((Bytes::copy_from_slice(n), Bytes::copy_from_slice(v)));
                }
                SourceFlow::Hash(fields)
            }
            Reply::Error(e) if e.starts_with(b"WRONGTYPE") => SourceFlow::NotAHash,
            Reply::Error(e) => return Err(refusal(&String::from_utf8_lossy(e))),
            _ => return Err(bad("HGETALL")),
        };
        flows.push((id.clone(), state));
    }
    Ok(Raw { time_us, run_id, flows })
}

/// A `name:value` line of an `INFO` reply.
pub fn info_field(info: &[u8], name: &str) -> Option<String> {
    std::str::from_utf8(info).ok()?.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn parses_time_identity_and_every_kind_of_flow() {
        let items = vec![
            Reply::Array(vec![Reply::Str(b"1700000000"), Reply::Str(b"000042")]),
            Reply::Str(b"# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\n"),
            Reply::Array(vec![Reply::Str(b"a"), Reply::Str(b"\xff")]),
            Reply::Array(vec![]),
            Reply::Error(b"WRONGTYPE Operation against a key holding the wrong kind of value"),
        ];
        let r = parse(items, &[b("h"), b("n"), b("x")], true).unwrap();
        assert_eq!(r.time_us, 1_700_000_000_000_042);
        assert_eq!(r.run_id.as_deref(), Some("abc123"));
        assert_eq!(
            r.flows[0].1,
            SourceFlow::Hash(vec![(b("a"), Bytes::from_static(b"\xff"))])
        );
        assert_eq!(r.flows[1].1, SourceFlow::Absent);
        assert_eq!(r.flows[2].1, SourceFlow::NotAHash);
    }

    #[test]
    fn refuses_short_odd_and_failed_replies() {
        let time = || Reply::Array(vec![Reply::Str(b"1"), Reply::Str(b"2")]);
        assert!(parse(vec![time()], &[b("a")], false).is_err(), "a reply missing");
        assert!(
            parse(vec![time(), Reply::Array(vec![Reply::Str(b"a")])], &[b("a")], false).is_err(),
            "odd field list"
        );
        let e = parse(vec![time(), Reply::Error(b"NOPERM no")], &[b("a")], false).unwrap_err();
        assert!(e.details().contains("NOPERM"), "{e}");
        assert!(parse(vec![Reply::Int(1)], &[], false).is_err(), "TIME not an array");
    }

    #[test]
    fn info_fields_by_exact_name() {
        let info = b"run_id_x:no\r\nrun_id:yes\r\n";
        assert_eq!(info_field(info, "run_id").as_deref(), Some("yes"));
        assert_eq!(info_field(info, "missing"), None);
    }
}
