//! An independent checker of the one invariant (SPEC section 1).
//!
//! Written from the specification alone, with the `redis` crate and no
//! production code: it reads both servers, computes what the destination
//! must hold, and lists every way it does not.
//!
//! For every flow id `F` seen on either side (or in the destination index):
//!
//! - a destination copy that was native (in `natives_before`) must be exactly
//!   as recorded there (and, with [`check_with`], its index field too);
//! - else, when the source has `client:{F}` as a hash whose organisation is
//!   not filtered, the destination copy must equal the source hash minus the
//!   excluded fields and the source's marker, plus marker = `"true"`, and the
//!   destination index must have `F` → `"1"`;
//! - else the destination copy must be absent and the index must not have `F`.
//!
//! A source key that is not a hash counts as absent. A destination hash
//! without the marker that was not native before is judged like any other
//! copy (it is `different` or `extra`), since the mirror must not have made
//! it. Reads are pipelined (SCAN + TYPE + HGETALL in batches), so the
//! checker is cheap enough to poll.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::flows::Hash;

/// Native flows: id → the hash they must still have.
pub type Natives = BTreeMap<Vec<u8>, Hash>;

/// How many flow ids (and detail lines) a report keeps per kind.
pub const FIRST: usize = 5;

/// The mirroring rules (SPEC section 1), with the default data model.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Fields never copied (`flowConfigHistory`).
    pub excluded_fields: Vec<Vec<u8>>,
    /// Organisations never mirrored.
    pub filtered_orgs: Vec<Vec<u8>>,
    /// The organisation field (`clerkOrganizationId`).
    pub org_field: Vec<u8>,
    /// The sync-copy marker field (`isSyncCopy`, value `"true"`).
    pub marker: Vec<u8>,
    /// Prefix of flow keys (`client:`).
    pub flow_prefix: Vec<u8>,
    /// The index hash (`clients`).
    pub index_key: Vec<u8>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            excluded_fields: vec![b"flowConfigHistory".to_vec()],
            filtered_orgs: Vec::new(),
            org_field: b"clerkOrganizationId".to_vec(),
            marker: b"isSyncCopy".to_vec(),
            flow_prefix: b"client:".to_vec(),
            index_key: b"clients".to_vec(),
        }
    }
}

impl Rules {
    /// The default rules with these filtered organisations.
    pub fn with_filtered_orgs<S: AsRef<[u8]>>(orgs: &[S]) -> Self {
        Rules {
            filtered_orgs: orgs.iter().map(|o| o.as_ref().to_vec()).collect(),
            ..Rules::default()
        }
    }

    /// The destination copy the source hash `src` requires (None: no copy).
    pub fn expected_copy(&self, src: &Hash) -> Option<Hash> {
        if let Some(org) = src.get(&self.org_field) {
            if self.filtered_orgs.iter().any(|f| f == org) {
                return None;
            }
        }
        let mut out: Hash = src
            .iter()
            .filter(|(k, _)| **k != self.marker && !self.excluded_fields.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.insert(self.marker.clone(), b"true".to_vec());
        Some(out)
    }

    fn is_sync_copy(&self, h: &Hash) -> bool {
        h.get(&self.marker).map(Vec::as_slice) == Some(b"true".as_slice())
    }
}

/// The kinds of violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A copy the source requires is absent on the destination.
    Missing,
    /// A destination copy exists that the source does not require.
    Extra,
    /// A destination copy exists but differs from what the source requires.
    Different,
    /// A native destination flow (or its index field) changed or vanished.
    NativeModified,
    /// The destination index lacks `F` → `"1"` for a required copy.
    IndexMissing,
    /// The destination index has `F` but no copy is required.
    IndexExtra,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 6] = [
        Kind::Missing,
        Kind::Extra,
        Kind::Different,
        Kind::NativeModified,
        Kind::IndexMissing,
        Kind::IndexExtra,
    ];

    /// snake_case label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::Different => "different",
            Kind::NativeModified => "native_modified",
            Kind::IndexMissing => "index_missing",
            Kind::IndexExtra => "index_extra",
        }
    }
}

/// Violations of one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations {
    /// How many flows.
    pub count: u64,
    /// The first few flow ids (lossy text; non-UTF-8 bytes escaped).
    pub first: Vec<String>,
    /// What the checker saw for those first few.
    pub details: Vec<String>,
}

/// The result of one check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Flow hashes on the source (keys of type hash under the prefix).
    pub source_flows: u64,
    /// Keys under the prefix on the destination.
    pub dest_flows: u64,
    /// Sync copies the source requires.
    pub expected_copies: u64,
    /// Native flows checked.
    pub natives: u64,
    /// Violations by kind (kinds with none are absent).
    pub violations: BTreeMap<Kind, Violations>,
}

impl Report {
    /// Total violations.
    pub fn total(&self) -> u64 {
        self.violations.values().map(|v| v.count).sum()
    }

    /// Violations of one kind.
    pub fn count(&self, kind: Kind) -> u64 {
        self.violations.get(&kind).map_or(0, |v| v.count)
    }

    /// True when the invariant holds.
    pub fn ok(&self) -> bool {
        self.total() == 0
    }

    fn add(&mut self, kind: Kind, id: &[u8], detail: impl FnOnce() -> String) {
        let v = self.violations.entry(kind).or_default();
        v.count += 1;
        if v.first.len() < FIRST {
            v.first.push(show(id));
            v.details.push(detail());
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant: {} violations ({} source flows, {} destination keys, {} expected copies, {} natives)",
            self.total(),
            self.source_flows,
            self.dest_flows,
            self.expected_copies,
            self.natives
        )?;
        for (k, v) in &self.violations {
            write!(f, "\n  {}: {} (first: {})", k.label(), v.count, v.first.join(", "))?;
            for d in &v.details {
                write!(f, "\n    {d}")?;
            }
        }
        Ok(())
    }
}

/// Bytes as readable text: UTF-8 kept, other bytes as `\xNN`.
pub fn show(b: &[u8]) -> String {
    let mut s = String::new();
    for chunk in b.utf8_chunks() {
        s.push_str(chunk.valid());
        for byte in chunk.invalid() {
            s.push_str(&format!("\\x{byte:02x}"));
        }
    }
    s
}

fn show_hash(h: &Hash) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in h.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        if i >= 8 {
            s.push_str(&format!("... {} fields", h.len()));
            break;
        }
        let v = show(v);
        let v = if v.chars().count() > 40 {
            format!("{}...", v.chars().take(40).collect::<String>())
        } else {
            v
        };
        s.push_str(&format!("{}={v}", show(k)));
    }
    s.push('}');
    s
}

fn diff_hash(want: &Hash, got: &Hash) -> String {
    let mut parts = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => parts.push(format!("-{}", show(k))),
            Some(g) if g != v => parts.push(format!("~{}: want {} got {}", show(k), show(v), show(g))),
            Some(_) => {}
        }
    }
    for k in got.keys() {
        if !want.contains_key(k) {
            parts.push(format!("+{}", show(k)));
        }
    }
    parts.truncate(6);
    parts.join("; ")
}

/// A destination (or source) key's state.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Hash(Hash),
    Other(String),
}

fn glob_escape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + 1);
    for &c in b {
        if matches!(c, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(c);
    }
    out
}

/// Every key under `prefix` with its value (hash contents, or the type name).
fn read_all(conn: &mut redis::Connection, prefix: &[u8]) -> redis::RedisResult<BTreeMap<Vec<u8>, Value>> {
    let mut pattern = glob_escape(prefix);
    pattern.push(b'*');
    let mut keys: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn)?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let keys: Vec<Vec<u8>> = keys.into_iter().collect();
    let mut out = BTreeMap::new();
    for chunk in keys.chunks(500) {
        let mut p = redis::pipe();
        for k in chunk {
            p.cmd("TYPE").arg(k);
        }
        let types: Vec<String> = p.query(conn)?;
        let hashes: Vec<&Vec<u8>> = chunk
            .iter()
            .zip(&types)
            .filter(|(_, t)| *t == "hash")
            .map(|(k, _)| k)
            .collect();
        let mut p = redis::pipe();
        for k in &hashes {
            // A key that changed type since TYPE fails the pipeline with
            // WRONGTYPE: the error goes to the caller, who polls again.
            p.cmd("HGETALL").arg(*k);
        }
        let values: Vec<Hash> = if hashes.is_empty() { Vec::new() } else { p.query(conn)? };
        let mut values = values.into_iter();
        for (k, t) in chunk.iter().zip(types) {
            match t.as_str() {
                "none" => {}
                "hash" => {
                    let h = values.next().unwrap_or_default();
                    if !h.is_empty() {
                        out.insert(k.clone(), Value::Hash(h));
                    }
                }
                other => {
                    out.insert(k.clone(), Value::Other(other.to_string()));
                }
            }
        }
    }
    Ok(out)
}

/// Every native flow on the destination now (a hash under the prefix without
/// marker = `"true"`).
pub fn snapshot_natives(dest: &mut redis::Connection) -> Natives {
    snapshot_natives_with(dest, &Rules::default()).expect("read the destination natives")
}

/// [`snapshot_natives`] with explicit rules.
pub fn snapshot_natives_with(dest: &mut redis::Connection, rules: &Rules) -> redis::RedisResult<Natives> {
    let all = read_all(dest, &rules.flow_prefix)?;
    Ok(all
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::Hash(h) if !rules.is_sync_copy(&h) => Some((k[rules.flow_prefix.len()..].to_vec(), h)),
            _ => None,
        })
        .collect())
}

/// The destination index fields of these native flows now (None: no field).
pub fn snapshot_native_index(
    dest: &mut redis::Connection,
    rules: &Rules,
    natives: &Natives,
) -> redis::RedisResult<BTreeMap<Vec<u8>, Option<Vec<u8>>>> {
    let index: Hash = redis::cmd("HGETALL").arg(&rules.index_key).query(dest)?;
    Ok(natives.keys().map(|id| (id.clone(), index.get(id).cloned())).collect())
}

/// Checks the invariant; panics on a Redis error (see [`try_check`]).
pub fn check(
    source: &mut redis::Connection,
    dest: &mut redis::Connection,
    rules: &Rules,
    natives_before: &BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>,
) -> Report {
    try_check(source, dest, rules, natives_before).expect("invariant check: Redis error")
}

/// [`check`], returning Redis errors.
pub fn try_check(
    source: &mut redis::Connection,
    dest: &mut redis::Connection,
    rules: &Rules,
    natives_before: &Natives,
) -> redis::RedisResult<Report> {
    check_with(source, dest, rules, natives_before, None)
}

/// [`try_check`], also requiring each native flow's index field to be as
/// recorded in `native_index` (None inside: the field must be absent).
/// Without `native_index`, the index field of a native flow is not judged
/// (it belongs to the destination's users).
pub fn check_with(
    source: &mut redis::Connection,
    dest: &mut redis::Connection,
    rules: &Rules,
    natives_before: &Natives,
    native_index: Option<&BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
) -> redis::RedisResult<Report> {
    check_on(&mut [source], &mut [dest], rules, natives_before, native_index)
}

/// [`check_with`] on servers that may be Redis Clusters: each side is given
/// as a connection to every one of its masters (one connection for a
/// standalone server). Flows are read master by master; the index is read
/// on the master that owns it.
pub fn check_on(
    source: &mut [&mut redis::Connection],
    dest: &mut [&mut redis::Connection],
    rules: &Rules,
    natives_before: &Natives,
    native_index: Option<&BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
) -> redis::RedisResult<Report> {
    let plen = rules.flow_prefix.len();
    let mut src = BTreeMap::new();
    for c in source.iter_mut() {
        src.extend(read_all(c, &rules.flow_prefix)?);
    }
    let mut dst = BTreeMap::new();
    for c in dest.iter_mut() {
        dst.extend(read_all(c, &rules.flow_prefix)?);
    }
    let mut index: Option<Hash> = None;
    let mut last_err = None;
    for c in dest.iter_mut() {
        // On a cluster, the masters that do not own the index answer MOVED.
        match redis::cmd("TYPE").arg(&rules.index_key).query::<String>(c) {
            Ok(t) if t == "hash" => {
                index = Some(redis::cmd("HGETALL").arg(&rules.index_key).query(c)?);
                break;
            }
            Ok(_) => {
                index = Some(Hash::new());
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let index = match (index, last_err) {
        (Some(i), _) => i,
        (None, Some(e)) => return Err(e),
        (None, None) => Hash::new(),
    };
    let mut r = Report {
        source_flows: src.values().filter(|v| matches!(v, Value::Hash(_))).count() as u64,
        dest_flows: dst.len() as u64,
        natives: natives_before.len() as u64,
        ..Report::default()
    };

    let mut ids: BTreeSet<Vec<u8>> = BTreeSet::new();
    ids.extend(src.keys().map(|k| k[plen..].to_vec()));
    ids.extend(dst.keys().map(|k| k[plen..].to_vec()));
    ids.extend(index.keys().cloned());
    ids.extend(natives_before.keys().cloned());

    for id in &ids {
        let mut key = rules.flow_prefix.clone();
        key.extend_from_slice(id);
        let d = dst.get(&key);
        if let Some(native) = natives_before.get(id) {
            match d {
                Some(Value::Hash(h)) if h == native => {}
                Some(Value::Hash(h)) => r.add(Kind::NativeModified, id, || {
                    format!("native client:{} changed: {}", show(id), diff_hash(native, h))
                }),
                Some(Value::Other(t)) => r.add(Kind::NativeModified, id, || {
                    format!("native client:{} is now a {t}", show(id))
                }),
                None => r.add(Kind::NativeModified, id, || {
                    format!("native client:{} vanished", show(id))
                }),
            }
            if let Some(want) = native_index.and_then(|m| m.get(id)) {
                let got = index.get(id);
                if got != want.as_ref() {
                    r.add(Kind::NativeModified, id, || {
                        format!(
                            "index field {} of native flow: want {:?} got {:?}",
                            show(id),
                            want.as_deref().map(show),
                            got.map(|g| show(g))
                        )
                    });
                }
            }
            continue;
        }
        let want = match src.get(&key) {
            Some(Value::Hash(h)) => rules.expected_copy(h),
            _ => None,
        };
        if want.is_some() {
            r.expected_copies += 1;
        }
        match (&want, d) {
            (Some(_), None) => r.add(Kind::Missing, id, || {
                format!("client:{} missing on the destination", show(id))
            }),
            (Some(w), Some(Value::Hash(h))) if w == h => {}
            (Some(w), Some(Value::Hash(h))) => r.add(Kind::Different, id, || {
                format!("client:{} differs (want vs got): {}", show(id), diff_hash(w, h))
            }),
            (Some(_), Some(Value::Other(t))) => r.add(Kind::Different, id, || {
                format!("client:{} is a {t} on the destination", show(id))
            }),
            (None, Some(v)) => r.add(Kind::Extra, id, || {
                let why = match src.get(&key) {
                    Some(Value::Hash(_)) => "source flow is in a filtered organisation",
                    Some(Value::Other(_)) => "source key is not a hash",
                    None => "source has no such flow",
                };
                let what = match v {
                    Value::Hash(h) => show_hash(h),
                    Value::Other(t) => t.clone(),
                };
                format!("client:{} on the destination {what}, but {why}", show(id))
            }),
            (None, None) => {}
        }
        match (&want, index.get(id)) {
            (Some(_), Some(v)) if v.as_slice() == b"1" => {}
            (Some(_), got) => r.add(Kind::IndexMissing, id, || {
                format!("index field {} is {:?}, want \"1\"", show(id), got.map(|g| show(g)))
            }),
            (None, Some(v)) => r.add(Kind::IndexExtra, id, || {
                format!("index field {} = {:?} without a required copy", show(id), show(v))
            }),
            (None, None) => {}
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{hash, hset};
    use crate::RedisServer;

    fn del(c: &mut redis::Connection, key: &[u8]) {
        let _: i64 = redis::cmd("DEL").arg(key).query(c).unwrap();
    }

    fn copy(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut h = hash(pairs);
        h.insert(b"isSyncCopy".to_vec(), b"true".to_vec());
        h.into_iter().collect()
    }

    fn put(c: &mut redis::Connection, key: &[u8], fields: &[(Vec<u8>, Vec<u8>)]) {
        let f: Vec<(&[u8], &[u8])> = fields.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        hset(c, key, &f);
    }

    fn index(c: &mut redis::Connection, id: &[u8], v: &[u8]) {
        hset(c, b"clients", &[(id, v)]);
    }

    #[test]
    fn a_faithful_mirror_passes() {
        let (s, d) = (RedisServer::start(), RedisServer::start());
        let (mut sc, mut dc) = (s.conn(), d.conn());
        let rules = Rules::with_filtered_orgs(&["hello"]);
        // Excluded field and the source's own marker are not copied.
        hset(
            &mut sc,
            b"client:1",
            &[
                (b"name", b"a"),
                (b"flowConfigHistory", b"[..]"),
                (b"isSyncCopy", b"false"),
            ],
        );
        put(&mut dc, b"client:1", &copy(&[("name", "a")]));
        index(&mut dc, b"1", b"1");
        // Filtered organisation: no copy.
        hset(
            &mut sc,
            b"client:2",
            &[(b"clerkOrganizationId", b"hello"), (b"name", b"b")],
        );
        // Binary id.
        let bin = b"\xff\xfe-3";
        let mut key = b"client:".to_vec();
        key.extend_from_slice(bin);
        hset(&mut sc, &key, &[(b"v", b"\x00\x01")]);
        put(
            &mut dc,
            &key,
            &[
                (b"v".to_vec(), b"\x00\x01".to_vec()),
                (b"isSyncCopy".to_vec(), b"true".to_vec()),
            ],
        );
        index(&mut dc, bin, b"1");
        // A native copy, whatever the source has.
        hset(&mut sc, b"client:4", &[(b"name", b"source")]);
        hset(&mut dc, b"client:4", &[(b"name", b"staging")]);
        // A non-hash source key counts as absent.
        let _: () = redis::cmd("SET").arg("client:5").arg("x").query(&mut sc).unwrap();
        let natives = snapshot_natives(&mut dc);
        assert_eq!(natives.keys().cloned().collect::<Vec<_>>(), vec![b"4".to_vec()]);
        let r = check(&mut sc, &mut dc, &rules, &natives);
        assert!(r.ok(), "{r}");
        assert_eq!(r.expected_copies, 2);
        assert_eq!(r.natives, 1);
    }

    #[test]
    fn every_kind_of_violation_is_found() {
        let (s, d) = (RedisServer::start(), RedisServer::start());
        let (mut sc, mut dc) = (s.conn(), d.conn());
        let rules = Rules::with_filtered_orgs(&["hello"]);
        hset(&mut dc, b"client:n", &[(b"owner", b"staging")]);
        let natives = snapshot_natives(&mut dc);
        let native_index = snapshot_native_index(&mut dc, &rules, &natives).unwrap();

        // missing (and so index_missing)
        hset(&mut sc, b"client:m", &[(b"a", b"1")]);
        // extra (source deleted) + index_extra
        put(&mut dc, b"client:x", &copy(&[("a", "1")]));
        index(&mut dc, b"x", b"1");
        // extra: the flow moved into a filtered organisation
        hset(&mut sc, b"client:f", &[(b"clerkOrganizationId", b"hello")]);
        put(&mut dc, b"client:f", &copy(&[("clerkOrganizationId", "org1")]));
        index(&mut dc, b"f", b"1");
        // different: a stale value, an excluded field copied, a missing marker
        hset(&mut sc, b"client:d1", &[(b"a", b"new")]);
        put(&mut dc, b"client:d1", &copy(&[("a", "old")]));
        hset(&mut sc, b"client:d2", &[(b"a", b"1"), (b"flowConfigHistory", b"h")]);
        put(&mut dc, b"client:d2", &copy(&[("a", "1"), ("flowConfigHistory", "h")]));
        hset(&mut sc, b"client:d3", &[(b"a", b"1")]);
        hset(&mut dc, b"client:d3", &[(b"a", b"1")]);
        for id in [b"d1".as_slice(), b"d2", b"d3"] {
            index(&mut dc, id, b"1");
        }
        // native modified: overwritten by a sync copy, and its index touched
        hset(&mut sc, b"client:n", &[(b"owner", b"prod")]);
        del(&mut dc, b"client:n");
        put(&mut dc, b"client:n", &copy(&[("owner", "prod")]));
        index(&mut dc, b"n", b"1");

        let r = check_with(&mut sc, &mut dc, &rules, &natives, Some(&native_index)).unwrap();
        assert_eq!(r.count(Kind::Missing), 1, "{r}");
        assert_eq!(r.count(Kind::IndexMissing), 1, "{r}");
        assert_eq!(r.count(Kind::Extra), 2, "{r}");
        assert_eq!(r.count(Kind::IndexExtra), 2, "{r}");
        assert_eq!(r.count(Kind::Different), 3, "{r}");
        assert_eq!(r.count(Kind::NativeModified), 2, "{r}");
        assert_eq!(r.violations[&Kind::Different].first, vec!["d1", "d2", "d3"]);
        assert!(r.to_string().contains("~a: want new got old"), "{r}");
        // Without the index snapshot, only the hash change counts.
        let r = check(&mut sc, &mut dc, &rules, &natives);
        assert_eq!(r.count(Kind::NativeModified), 1, "{r}");
        assert_eq!(r.total(), 10, "{r}");
    }

    #[test]
    fn many_flows_are_read_in_batches_and_first_ids_are_capped() {
        let (s, d) = (RedisServer::start(), RedisServer::start());
        let (mut sc, mut dc) = (s.conn(), d.conn());
        let mut p = redis::pipe();
        for i in 0..1500 {
            p.cmd("HSET").arg(format!("client:{i}")).arg("i").arg(i).ignore();
        }
        let _: () = p.query(&mut sc).unwrap();
        let r = check(&mut sc, &mut dc, &Rules::default(), &Natives::new());
        assert_eq!(r.source_flows, 1500);
        assert_eq!(r.count(Kind::Missing), 1500);
        assert_eq!(r.count(Kind::IndexMissing), 1500);
        assert_eq!(r.violations[&Kind::Missing].first.len(), FIRST);
        // Keys with glob characters in the prefix's data are still found.
        hset(&mut sc, b"client:*[x]?", &[(b"a", b"1")]);
        let r = check(&mut sc, &mut dc, &Rules::default(), &Natives::new());
        assert_eq!(r.count(Kind::Missing), 1501);
    }
}
