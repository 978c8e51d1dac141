//! Property test: the apply engine against a plain in-memory model of SPEC
//! section 1 plus the per-flow watermark rule.
//!
//! The model below is written from the SPEC, not from the engine: it never
//! calls into `redmirror_write` or the rules helpers. Random sequences of
//! source events (fresh, older, duplicated, undecodable, batched, sometimes
//! forced) and of destination users' own writes (native copies) run against
//! one real `redis-server`; after every step the destination (every flow
//! hash, the whole index, the key space) and every outcome must equal the
//! model's.
//!
//! The model's rules, per flow `F`:
//! - a destination hash `client:F` that exists without `isSyncCopy` =
//!   `"true"` is native: an event changes nothing (and is not "applied", so
//!   the watermark does not move);
//! - otherwise an event older than the last applied source time of `F` is
//!   stale and changes nothing, unless forced (rewind); an equal time
//!   re-applies;
//! - otherwise the event's time becomes the watermark (deletes too); an
//!   upsert of a flow whose `clerkOrganizationId` is a filtered organisation,
//!   and every delete, remove the sync copy and the index field `F`; any
//!   other upsert makes `client:F` = fields minus `flowConfigHistory` and
//!   `isSyncCopy`, plus `isSyncCopy` = `"true"`, and the index `F` = `"1"`;
//! - an event that cannot be decoded changes nothing and is dead-lettered.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use redmirror_config::RedisEndpoint;
use redmirror_core::event::{DeleteReason, Origin};
use redmirror_core::{DecodeError, FlowEvent, KeyLayout, MirrorRules};
use redmirror_testkit::flows::{self, Hash};
use redmirror_testkit::{RedisOptions, RedisServer};
use redmirror_write::{ApplyEngine, Outcome};

/// Flow ids: small space so events collide; one is not UTF-8 and holds NUL.
const IDS: [&[u8]; 4] = [b"f1", b"f2", b"\xff\xfe\x00id", b"a:b c"];
/// Field names, including the excluded field, the marker and the org field.
const NAMES: [&[u8]; 7] = [
    b"name",
    b"steps",
    b"flowConfigHistory",
    b"isSyncCopy",
    b"clerkOrganizationId",
    b"\x00bin\xff",
    b"",
];
/// Field values.
const VALUES: [&[u8]; 8] = [
    b"",
    b"a",
    b"true",
    b"false",
    b"TRUE",
    b"org_demo",
    b"org_real",
    b"\xff\x00\x01",
];
/// Organisation ids an upsert may carry (the first is filtered).
const ORGS: [&[u8]; 3] = [b"org_demo", b"org_real", b"Org_Demo"];
const FILTERED_ORG: &[u8] = b"org_demo";
const MARKER: &[u8] = b"isSyncCopy";
const EXCLUDED: &[u8] = b"flowConfigHistory";
const ORG_FIELD: &[u8] = b"clerkOrganizationId";
/// Realistic microsecond clock start.
const T0: i64 = 1_700_000_000_000_000;

// ---------------------------------------------------------------- generation

/// What a source event says about a flow.
#[derive(Debug, Clone)]
enum Body {
    /// Full state: (name index, value index) pairs with distinct names, and
    /// an optional organisation (index into ORGS).
    Upsert {
        fields: BTreeMap<usize, usize>,
        org: Option<usize>,
    },
    /// Delete with this reason.
    Delete(Reason),
}

#[derive(Debug, Clone, Copy)]
enum Reason {
    Absent,
    NotAHash,
    Filtered,
}

/// One message handed to the engine.
#[derive(Debug, Clone)]
enum Msg {
    /// A new source event `step` µs after the newest so far.
    Fresh { id: usize, body: Body, step: u8 },
    /// An event `back` µs older than the newest so far (late delivery).
    Late { id: usize, body: Body, back: u8 },
    /// Exactly an earlier message again (duplicate; maybe out of order).
    Resend { nth: usize },
    /// Bytes that are no protobuf event (0xff starts an invalid wire type).
    Garbage { tail: Vec<u8> },
    /// A valid event under a Kafka key that is another flow's id.
    WrongKey { id: usize, body: Body },
}

/// One step of a case.
#[derive(Debug, Clone)]
enum Step {
    /// One `apply` call (one pipelined batch).
    Deliver { msgs: Vec<Msg>, force: bool },
    /// A destination user replaces `client:F` with a native hash (no `"true"` marker).
    NativeReplace { id: usize, fields: BTreeMap<usize, usize> },
    /// A destination user runs `HSET client:F name value` on whatever is there.
    UserHset { id: usize, name: usize, value: usize },
    /// A destination user deletes `client:F`.
    UserDel { id: usize },
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        4 => (
            prop::collection::btree_map(0..NAMES.len(), 0..VALUES.len(), 0..5),
            prop::option::weighted(0.4, 0..ORGS.len()),
        )
            .prop_map(|(fields, org)| Body::Upsert { fields, org }),
        1 => prop_oneof![Just(Reason::Absent), Just(Reason::NotAHash), Just(Reason::Filtered)].prop_map(Body::Delete),
    ]
}

fn msg() -> impl Strategy<Value = Msg> {
    let id = 0..IDS.len();
    prop_oneof![
        8 => (id.clone(), body(), 0u8..3).prop_map(|(id, body, step)| Msg::Fresh { id, body, step }),
        3 => (id.clone(), body(), 1u8..6).prop_map(|(id, body, back)| Msg::Late { id, body, back }),
        3 => any::<usize>().prop_map(|nth| Msg::Resend { nth }),
        1 => prop::collection::vec(any::<u8>(), 0..8).prop_map(|tail| Msg::Garbage { tail }),
        1 => (id, body()).prop_map(|(id, body)| Msg::WrongKey { id, body }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let id = 0..IDS.len();
    prop_oneof![
        12 => (prop::collection::vec(msg(), 1..4), prop::bool::weighted(0.12))
            .prop_map(|(msgs, force)| Step::Deliver { msgs, force }),
        2 => (id.clone(), prop::collection::btree_map(0..NAMES.len(), 0..VALUES.len(), 1..4))
            .prop_map(|(id, fields)| Step::NativeReplace { id, fields }),
        1 => (id.clone(), 0..NAMES.len(), 0..VALUES.len()).prop_map(|(id, name, value)| Step::UserHset {
            id,
            name,
            value
        }),
        1 => id.prop_map(|id| Step::UserDel { id }),
    ]
}

fn case() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 1..40)
}

// ---------------------------------------------------------------- the model

/// What the model expects of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Applied,
    Deleted,
    SkippedNative,
    SkippedFiltered,
    SkippedStale,
    DeadLetter(&'static str),
}

/// A source event as the model sees it.
#[derive(Debug, Clone)]
struct ModelEvent {
    id: Vec<u8>,
    time: i64,
    /// `Some(fields)` for an upsert (names unique), `None` for a delete.
    fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    reason_filtered: bool,
}

/// The destination as plain maps, plus the mirror's per-flow watermark.
#[derive(Debug, Default)]
struct Model {
    /// `client:{id}` hashes that exist.
    flows: BTreeMap<Vec<u8>, Hash>,
    /// The `clients` index.
    index: Hash,
    /// Last applied source time per flow.
    watermark: BTreeMap<Vec<u8>, i64>,
}

impl Model {
    fn is_native(&self, id: &[u8]) -> bool {
        self.flows
            .get(id)
            .is_some_and(|h| h.get(MARKER).map(Vec::as_slice) != Some(b"true".as_slice()))
    }

    fn apply(&mut self, e: &ModelEvent, force: bool) -> Expect {
        if self.is_native(&e.id) {
            return Expect::SkippedNative;
        }
        if !force && self.watermark.get(&e.id).is_some_and(|&w| w > e.time) {
            return Expect::SkippedStale;
        }
        self.watermark.insert(e.id.clone(), e.time);
        let filtered = e.reason_filtered
            || e.fields.as_ref().is_some_and(|f| {
                f.iter()
                    .any(|(n, v)| n.as_slice() == ORG_FIELD && v.as_slice() == FILTERED_ORG)
            });
        match &e.fields {
            Some(fields) if !filtered => {
                let mut copy: Hash = fields
                    .iter()
                    .filter(|(n, _)| n.as_slice() != EXCLUDED && n.as_slice() != MARKER)
                    .cloned()
                    .collect();
                copy.insert(MARKER.to_vec(), b"true".to_vec());
                self.flows.insert(e.id.clone(), copy);
                self.index.insert(e.id.clone(), b"1".to_vec());
                Expect::Applied
            }
            _ => {
                self.flows.remove(&e.id);
                self.index.remove(&e.id);
                if filtered {
                    Expect::SkippedFiltered
                } else {
                    Expect::Deleted
                }
            }
        }
    }
}

// ---------------------------------------------------------------- the runner

/// An event already turned into both the wire form and the model's form.
#[derive(Clone)]
struct Wire {
    key: Vec<u8>,
    payload: Vec<u8>,
    /// `Err(code)`: the model expects a dead letter with this code.
    model: Result<ModelEvent, &'static str>,
}

fn fields_of(body: &Body) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    match body {
        Body::Upsert { fields, org } => {
            let mut v: Vec<(Vec<u8>, Vec<u8>)> = fields
                .iter()
                .filter(|(&n, _)| org.is_none() || NAMES[n] != ORG_FIELD)
                .map(|(&n, &v)| (NAMES[n].to_vec(), VALUES[v].to_vec()))
                .collect();
            if let Some(o) = org {
                v.push((ORG_FIELD.to_vec(), ORGS[*o].to_vec()));
            }
            Some(v)
        }
        Body::Delete(_) => None,
    }
}

fn event(id: &[u8], body: &Body, time: i64) -> (FlowEvent, ModelEvent) {
    let fields = fields_of(body);
    let ev = match (body, &fields) {
        (Body::Upsert { .. }, Some(f)) => FlowEvent::upsert(
            Bytes::copy_from_slice(id),
            f.iter()
                .map(|(n, v)| (Bytes::copy_from_slice(n), Bytes::copy_from_slice(v)))
                .collect(),
            time,
            Origin::Capture,
            "hset",
        ),
        (Body::Delete(r), _) => FlowEvent::delete(
            Bytes::copy_from_slice(id),
            match r {
                Reason::Absent => DeleteReason::Absent,
                Reason::NotAHash => DeleteReason::NotAHash,
                Reason::Filtered => DeleteReason::Filtered,
            },
            time,
            Origin::Capture,
            "del",
        ),
        (Body::Upsert { .. }, None) => unreachable!("an upsert has fields"),
    };
    let model = ModelEvent {
        id: id.to_vec(),
        time,
        fields,
        reason_filtered: matches!(body, Body::Delete(Reason::Filtered)),
    };
    (ev, model)
}

fn expect_of(o: &Outcome) -> Expect {
    match o {
        Outcome::Applied => Expect::Applied,
        Outcome::Deleted => Expect::Deleted,
        Outcome::SkippedNative => Expect::SkippedNative,
        Outcome::SkippedFiltered => Expect::SkippedFiltered,
        Outcome::SkippedStale => Expect::SkippedStale,
        Outcome::SkippedRules(f) => unreachable!("model events carry no rules fingerprint, yet {f}"),
        Outcome::DeadLetter { code, .. } => Expect::DeadLetter(code),
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}

struct Harness {
    /// Kept alive for the whole test (killed on drop).
    _server: RedisServer,
    conn: RefCell<redis::Connection>,
    rt: tokio::runtime::Runtime,
    engine: ApplyEngine,
    keys: KeyLayout,
    /// How often each expected outcome occurred over all cases (plus
    /// `rewind`: a forced event older than the watermark), so a generator
    /// that stops reaching a path fails the test instead of passing vacuously.
    seen: RefCell<BTreeMap<String, usize>>,
}

impl Harness {
    fn new() -> Self {
        let server = RedisServer::start_with(RedisOptions::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let endpoint = RedisEndpoint {
            url: server.url(),
            tls: Default::default(),
        };
        let client = rt
            .block_on(redmirror_redis::connect(&endpoint, "model-test"))
            .expect("connect to the test redis-server");
        let keys = KeyLayout::default();
        let rules = MirrorRules {
            filtered_orgs: [Bytes::from_static(FILTERED_ORG)].into(),
            ..MirrorRules::default()
        };
        let engine = ApplyEngine::new(client, keys.clone(), rules);
        let conn = RefCell::new(server.conn());
        Harness {
            _server: server,
            conn,
            rt,
            engine,
            keys,
            seen: RefCell::default(),
        }
    }

    /// Runs one case; `Err` names the first step where Redis and the model part.
    fn run(&self, steps: &[Step]) -> Result<(), TestCaseError> {
        let mut conn = self.conn.borrow_mut();
        let conn = &mut *conn;
        let _: () = redis::cmd("FLUSHALL").query(conn).expect("FLUSHALL");
        let mut model = Model::default();
        let mut sent: Vec<Wire> = Vec::new();
        let mut newest = T0;
        for (n, step) in steps.iter().enumerate() {
            match step {
                Step::Deliver { msgs, force } => {
                    let mut batch: Vec<Wire> = Vec::new();
                    for m in msgs {
                        let w = match m {
                            Msg::Fresh { id, body, step } => {
                                newest += i64::from(*step);
                                let (ev, me) = event(IDS[*id], body, newest);
                                Wire {
                                    key: IDS[*id].to_vec(),
                                    payload: ev.encode_to_bytes(),
                                    model: Ok(me),
                                }
                            }
                            Msg::Late { id, body, back } => {
                                let (ev, me) = event(IDS[*id], body, newest - i64::from(*back));
                                Wire {
                                    key: IDS[*id].to_vec(),
                                    payload: ev.encode_to_bytes(),
                                    model: Ok(me),
                                }
                            }
                            Msg::Resend { nth } => match sent.len() {
                                0 => continue,
                                len => sent[nth % len].clone(),
                            },
                            Msg::Garbage { tail } => {
                                let mut payload = vec![0xff];
                                payload.extend_from_slice(tail);
                                Wire {
                                    key: IDS[0].to_vec(),
                                    payload,
                                    model: Err("undecodable"),
                                }
                            }
                            Msg::WrongKey { id, body } => {
                                let (ev, _) = event(IDS[*id], body, newest);
                                Wire {
                                    key: IDS[(*id + 1) % IDS.len()].to_vec(),
                                    payload: ev.encode_to_bytes(),
                                    model: Err("key_mismatch"),
                                }
                            }
                        };
                        batch.push(w);
                    }
                    let decoded: Vec<Result<FlowEvent, DecodeError>> = batch
                        .iter()
                        .map(|w| FlowEvent::decode_checked(Some(&w.key), Some(&w.payload)))
                        .collect();
                    let outcomes = self.rt.block_on(self.engine.apply(&decoded, *force)).map_err(|e| {
                        TestCaseError::fail(format!("step {n}: {}", redmirror_telemetry::errors::Chain(&e)))
                    })?;
                    prop_assert_eq!(outcomes.len(), batch.len(), "step {}: one outcome per event", n);
                    for (i, (w, o)) in batch.iter().zip(&outcomes).enumerate() {
                        let want = match &w.model {
                            Ok(me) => {
                                if *force && model.watermark.get(&me.id).is_some_and(|&t| t > me.time) {
                                    *self.seen.borrow_mut().entry("rewind".into()).or_default() += 1;
                                }
                                model.apply(me, *force)
                            }
                            Err(code) => Expect::DeadLetter(code),
                        };
                        *self.seen.borrow_mut().entry(format!("{want:?}")).or_default() += 1;
                        prop_assert_eq!(
                            expect_of(o),
                            want,
                            "step {}, event {} (force={}): engine said {:?}",
                            n,
                            i,
                            force,
                            o
                        );
                    }
                    sent.extend(batch);
                }
                Step::NativeReplace { id, fields } => {
                    let key = self.keys.flow_key(IDS[*id]);
                    let pairs: Vec<(&[u8], &[u8])> = fields
                        .iter()
                        // A native copy never carries the marker set to "true".
                        .map(|(&f, &v)| {
                            (
                                NAMES[f],
                                if NAMES[f] == MARKER && VALUES[v] == b"true" {
                                    b"no"
                                } else {
                                    VALUES[v]
                                },
                            )
                        })
                        .collect();
                    let _: i64 = redis::cmd("DEL").arg(&key[..]).query(conn).expect("DEL");
                    flows::hset(conn, &key, &pairs);
                    model.flows.insert(
                        IDS[*id].to_vec(),
                        pairs.iter().map(|(f, v)| (f.to_vec(), v.to_vec())).collect(),
                    );
                    prop_assert!(model.is_native(IDS[*id]));
                }
                Step::UserHset { id, name, value } => {
                    let key = self.keys.flow_key(IDS[*id]);
                    flows::hset(conn, &key, &[(NAMES[*name], VALUES[*value])]);
                    model
                        .flows
                        .entry(IDS[*id].to_vec())
                        .or_default()
                        .insert(NAMES[*name].to_vec(), VALUES[*value].to_vec());
                }
                Step::UserDel { id } => {
                    let key = self.keys.flow_key(IDS[*id]);
                    let _: i64 = redis::cmd("DEL").arg(&key[..]).query(conn).expect("DEL");
                    model.flows.remove(IDS[*id]);
                }
            }
            self.compare(conn, &model, n)?;
        }
        Ok(())
    }

    /// The destination equals the model: every flow hash, the whole index,
    /// and no key outside the flows, the index and `redmirror:*`.
    fn compare(&self, conn: &mut redis::Connection, model: &Model, n: usize) -> Result<(), TestCaseError> {
        for id in IDS {
            let real = flows::hgetall(conn, &self.keys.flow_key(id));
            let want = model.flows.get(id).cloned().unwrap_or_default();
            prop_assert_eq!(real, want, "step {}: client:{} differs from the model", n, show(id));
        }
        let index = flows::hgetall(conn, &self.keys.index_key);
        prop_assert_eq!(&index, &model.index, "step {}: the index differs from the model", n);
        let allowed: HashSet<Vec<u8>> = IDS
            .iter()
            .map(|id| self.keys.flow_key(id).to_vec())
            .chain([self.keys.index_key.to_vec()])
            .collect();
        let all: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(conn).expect("KEYS");
        for k in all {
            prop_assert!(
                allowed.contains(&k) || k.starts_with(self.keys.state_prefix.as_bytes()),
                "step {}: unexpected key {:?} on the destination",
                n,
                show(&k)
            );
        }
        Ok(())
    }
}

#[test]
fn apply_matches_the_model() {
    let h = Harness::new();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    });
    match runner.run(&case(), |steps| h.run(&steps)) {
        Ok(()) => {}
        Err(TestError::Fail(why, steps)) => {
            panic!(
                "apply disagrees with the model: {why}\nminimal sequence ({} steps):\n{steps:#?}",
                steps.len()
            )
        }
        Err(e) => panic!("{e}"),
    }
    let seen = h.seen.borrow();
    for path in [
        "Applied",
        "Deleted",
        "SkippedNative",
        "SkippedFiltered",
        "SkippedStale",
        "DeadLetter(\"undecodable\")",
        "DeadLetter(\"key_mismatch\")",
        "rewind",
    ] {
        assert!(
            seen.get(path).copied().unwrap_or(0) > 0,
            "no case exercised {path}: {seen:?}"
        );
    }
    eprintln!("outcomes over {cases} cases: {seen:?}");
}

/// The model itself, on a hand-written sequence (so a wrong model cannot
/// make the property vacuous): native guard, staleness, equal-time re-apply,
/// tombstone, rewind, filtered organisation.
#[test]
fn model_sanity() {
    let mut m = Model::default();
    let up = |t: i64, f: &[(&[u8], &[u8])]| ModelEvent {
        id: b"x".to_vec(),
        time: t,
        fields: Some(f.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()),
        reason_filtered: false,
    };
    let del = |t: i64| ModelEvent {
        id: b"x".to_vec(),
        time: t,
        fields: None,
        reason_filtered: false,
    };
    assert_eq!(
        m.apply(&up(10, &[(b"a", b"1"), (EXCLUDED, b"h"), (MARKER, b"false")]), false),
        Expect::Applied
    );
    assert_eq!(
        m.flows[b"x".as_slice()],
        flows::hash(&[("a", "1"), ("isSyncCopy", "true")]),
        "excluded field and source marker stripped"
    );
    assert_eq!(m.apply(&up(9, &[(b"a", b"old")]), false), Expect::SkippedStale);
    assert_eq!(
        m.apply(&up(10, &[(b"a", b"2")]), false),
        Expect::Applied,
        "equal time re-applies"
    );
    assert_eq!(m.apply(&del(11), false), Expect::Deleted);
    assert!(!m.flows.contains_key(b"x".as_slice()) && m.index.is_empty());
    assert_eq!(
        m.apply(&up(10, &[(b"a", b"3")]), false),
        Expect::SkippedStale,
        "tombstone holds"
    );
    assert_eq!(m.apply(&up(5, &[(b"a", b"4")]), true), Expect::Applied, "force rewinds");
    assert_eq!(
        m.apply(&up(6, &[(ORG_FIELD, FILTERED_ORG)]), false),
        Expect::SkippedFiltered
    );
    assert!(!m.flows.contains_key(b"x".as_slice()) && m.index.is_empty());
    m.flows.insert(b"x".to_vec(), flows::hash(&[("isSyncCopy", "TRUE")]));
    assert_eq!(m.apply(&up(100, &[(b"a", b"5")]), false), Expect::SkippedNative);
    assert_eq!(m.apply(&del(100), false), Expect::SkippedNative);
}
