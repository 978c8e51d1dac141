//! The field rules of SPEC section 8: which fields of a source flow reach
//! a copy, and how their values are masked.
//!
//! [`FieldRules`] holds the excluded fields, the allow-list, the masked
//! fields and the mask key, and applies them, in SPEC order, to a flow:
//!
//! 1. excluded fields are dropped;
//! 2. with an allow-list, every field not on it is dropped;
//! 3. masked fields are rewritten ([`MaskMethod`]).
//!
//! Each set of rules has a [`FieldRules::fingerprint`]: every event carries
//! the fingerprint it was made under (header `redmirror-rules`), and the
//! destination keeps the one its copies were written under, so a rule change
//! is seen by every process. The fingerprint is a hash of the canonical rules
//! and of a keyed hash of a constant: it changes with the key but reveals
//! nothing about it.
//!
//! The mask key is a secret: [`MaskKey`]'s `Debug` never shows it and no
//! error here quotes it.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

use crate::Fields;

/// The shortest mask key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// The domain of the email method's output.
pub const EMAIL_DOMAIN: &str = "@example.invalid";

/// The value a `redact` mask writes.
pub const REDACTED: &[u8] = b"REDACTED";

/// How a masked field's value is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MaskMethod {
    /// Lowercase hex of HMAC-SHA256(key, value), its first 32 characters.
    Hash,
    /// The first 16 hex characters of HMAC-SHA256(key, the value with ASCII
    /// letters lowercased), then `@example.invalid`.
    Email,
    /// `REDACTED`.
    Redact,
}

impl MaskMethod {
    /// Every method, as named in `REDMIRROR_MASKED_FIELDS`.
    pub const ALL: [MaskMethod; 3] = [MaskMethod::Hash, MaskMethod::Email, MaskMethod::Redact];

    /// The method's name in `REDMIRROR_MASKED_FIELDS`.
    pub fn name(self) -> &'static str {
        match self {
            MaskMethod::Hash => "hash",
            MaskMethod::Email => "email",
            MaskMethod::Redact => "redact",
        }
    }

    /// The method named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// The secret key of the keyed mask methods. Its `Debug` never shows it.
#[derive(Clone)]
pub struct MaskKey(Hmac<Sha256>);

impl MaskKey {
    /// A key from its bytes (at least [`MIN_KEY_BYTES`]).
    pub fn new(key: &[u8]) -> Result<Self, FieldRulesError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(FieldRulesError::KeyTooShort { bytes: key.len() });
        }
        Ok(MaskKey(
            Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length"),
        ))
    }

    /// HMAC-SHA256 of `value` under this key.
    fn mac(&self, value: &[u8]) -> [u8; 32] {
        let mut m = self.0.clone();
        m.update(value);
        m.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaskKey(***)")
    }
}

/// Why a set of field rules cannot be built. No variant holds the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldRulesError {
    /// Masked fields are configured and no key is.
    #[error("masked fields need a mask key (at least {MIN_KEY_BYTES} bytes)")]
    KeyMissing,
    /// The key is too short.
    #[error("the mask key must be at least {MIN_KEY_BYTES} bytes (it has {bytes})")]
    KeyTooShort {
        /// Its length.
        bytes: usize,
    },
    /// A mask entry is not `FIELD:METHOD`.
    #[error("`{entry}` is not FIELD:METHOD (methods: hash, email, redact)")]
    NotFieldMethod {
        /// The entry as written.
        entry: String,
    },
    /// A method nobody knows.
    #[error("unknown mask method `{method}` for field `{field}` (expected hash, email or redact)")]
    UnknownMethod {
        /// The field.
        field: String,
        /// The method as written.
        method: String,
    },
    /// A field masked twice with different methods.
    #[error("field `{field}` is masked twice")]
    MaskedTwice {
        /// The field.
        field: String,
    },
    /// An empty field name in a list.
    #[error("a field name is empty (check for doubled or trailing commas)")]
    EmptyName,
}

pub use redmirror_api::{MaskedFields, RulesSummary};

/// The field rules. Built once from the configuration; cheap to clone.
#[derive(Debug, Clone)]
pub struct FieldRules {
    excluded: HashSet<Bytes>,
    included: Option<HashSet<Bytes>>,
    masked: HashMap<Bytes, MaskMethod>,
    key: Option<MaskKey>,
    fingerprint: String,
}

impl Default for FieldRules {
    /// SPEC's defaults: `flowConfigHistory` excluded, no allow-list, no masks.
    fn default() -> Self {
        FieldRules::new([Bytes::from_static(b"flowConfigHistory")], None, [], None)
            .expect("the default rules are valid")
    }
}

/// Parses one `FIELD:METHOD` entry of `REDMIRROR_MASKED_FIELDS` (the method
/// after the last colon, so a field name may hold colons).
pub fn parse_mask(entry: &str) -> Result<(Bytes, MaskMethod), FieldRulesError> {
    let entry = entry.trim();
    let Some((field, method)) = entry.rsplit_once(':') else {
        return Err(FieldRulesError::NotFieldMethod { entry: entry.into() });
    };
    let (field, method) = (field.trim(), method.trim());
    if field.is_empty() {
        return Err(FieldRulesError::EmptyName);
    }
    let m = MaskMethod::parse(method).ok_or_else(|| FieldRulesError::UnknownMethod {
        field: field.into(),
        method: method.into(),
    })?;
    Ok((Bytes::copy_from_slice(field.as_bytes()), m))
}

impl FieldRules {
    /// Rules from their parts: `included` `None` is no allow-list. Masked
    /// fields need a key; a key without masked fields is allowed (and does
    /// not change the fingerprint).
    pub fn new(
        excluded: impl IntoIterator<Item = Bytes>,
        included: Option<Vec<Bytes>>,
        masked: impl IntoIterator<Item = (Bytes, MaskMethod)>,
        key: Option<&[u8]>,
    ) -> Result<Self, FieldRulesError> {
        let excluded: HashSet<Bytes> = excluded.into_iter().collect();
        let included: Option<HashSet<Bytes>> = included.map(|i| i.into_iter().collect());
        let mut masks: HashMap<Bytes, MaskMethod> = HashMap::new();
        for (field, method) in masked {
            if field.is_empty() {
                return Err(FieldRulesError::EmptyName);
            }
            if masks.insert(field.clone(), method).is_some_and(|m| m != method) {
                return Err(FieldRulesError::MaskedTwice {
                    field: String::from_utf8_lossy(&field).into_owned(),
                });
            }
        }
        if excluded.iter().chain(included.iter().flatten()).any(|f| f.is_empty()) {
            return Err(FieldRulesError::EmptyName);
        }
        let key = key.map(MaskKey::new).transpose()?;
        if !masks.is_empty() && key.is_none() {
            return Err(FieldRulesError::KeyMissing);
        }
        let mut rules = FieldRules {
            excluded,
            included,
            masked: masks,
            key,
            fingerprint: String::new(),
        };
        rules.fingerprint = rules.compute_fingerprint();
        Ok(rules)
    }

    /// The excluded fields.
    pub fn excluded_fields(&self) -> &HashSet<Bytes> {
        &self.excluded
    }

    /// Fields both on the allow-list and excluded (excluded wins): worth a
    /// warning at start.
    pub fn allowed_but_excluded(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .included
            .iter()
            .flatten()
            .filter(|f| self.excluded.contains(*f))
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        v.sort();
        v
    }

    /// Masked fields that no copy can hold (excluded, or off the
    /// allow-list): worth a warning at start.
    pub fn masked_but_dropped(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .masked
            .keys()
            .filter(|f| !self.keeps(f))
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        v.sort();
        v
    }

    /// True when the rules only drop excluded fields (no allow-list, no
    /// masks): a flow's kept values are its source values.
    pub fn only_exclusions(&self) -> bool {
        self.included.is_none() && self.masked.is_empty()
    }

    /// True when the rules mask nothing.
    pub fn masks_nothing(&self) -> bool {
        self.masked.is_empty()
    }

    /// True when a field with this name reaches a copy (not excluded and,
    /// with an allow-list, on it).
    pub fn keeps(&self, name: &[u8]) -> bool {
        !self.excluded.contains(name) && self.included.as_ref().is_none_or(|i| i.contains(name))
    }

    /// The copy's value of a kept field: masked, or the value itself.
    pub fn value<'a>(&self, name: &[u8], value: &'a [u8]) -> Cow<'a, [u8]> {
        if self.masked.is_empty() {
            return Cow::Borrowed(value);
        }
        match self.masked.get(name) {
            None => Cow::Borrowed(value),
            Some(m) => Cow::Owned(self.mask(*m, value)),
        }
    }

    /// `value` masked with `method`.
    pub fn mask(&self, method: MaskMethod, value: &[u8]) -> Vec<u8> {
        let key = || {
            self.key
                .as_ref()
                .expect("masked fields always have a key (checked in new)")
        };
        match method {
            MaskMethod::Redact => REDACTED.to_vec(),
            MaskMethod::Hash => hex(&key().mac(value)[..16]).into_bytes(),
            MaskMethod::Email => {
                let mut out = hex(&key().mac(&value.to_ascii_lowercase())[..8]);
                out.push_str(EMAIL_DOMAIN);
                out.into_bytes()
            }
        }
    }

    /// Applies the rules to a flow's fields (owned): drops what is not
    /// kept, masks what is masked. Field order is kept.
    pub fn apply(&self, fields: Fields) -> Fields {
        fields
            .into_iter()
            .filter(|(n, _)| self.keeps(n))
            .map(|(n, v)| match self.masked.get(&n) {
                None => (n, v),
                Some(m) => {
                    let masked = Bytes::from(self.mask(*m, &v));
                    (n, masked)
                }
            })
            .collect()
    }

    /// Applies the rules to borrowed fields (a reply parsed in place); only
    /// masked values are allocated.
    pub fn apply_borrowed<'a>(
        &'a self,
        fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])> + 'a,
    ) -> impl Iterator<Item = (&'a [u8], Cow<'a, [u8]>)> + 'a {
        fields
            .into_iter()
            .filter(|(n, _)| self.keeps(n))
            .map(|(n, v)| (n, self.value(n, v)))
    }

    /// The fingerprint of these rules: 16 hex characters.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// True when an upsert made under `fingerprint` may be written under
    /// these rules. An event without one (written before field rules
    /// existed, or by another producer) is accepted only when these rules
    /// mask nothing: apply drops excluded and non-allowed fields itself,
    /// but cannot tell whether a value was masked.
    pub fn accepts(&self, fingerprint: &str) -> bool {
        if fingerprint.is_empty() {
            self.masks_nothing()
        } else {
            fingerprint == self.fingerprint
        }
    }

    /// What `/v1/status` shows: names, methods, fingerprint; never the key.
    pub fn summary(&self) -> RulesSummary {
        let names = |s: &HashSet<Bytes>| {
            let mut v: Vec<String> = s.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
            v.sort();
            v
        };
        RulesSummary {
            excluded_fields: names(&self.excluded),
            included_fields: self.included.as_ref().map(names).unwrap_or_default(),
            masked_fields: self
                .masked
                .iter()
                .map(|(f, m)| (String::from_utf8_lossy(f).into_owned(), m.name().to_string()))
                .collect(),
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// SHA-256 over the canonical rules (sorted, length-prefixed) and, when
    /// a field is masked, over the HMAC of a constant under the key, so a
    /// key change is a rule change; first 16 hex characters.
    fn compute_fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"redmirror-rules/1");
        let mut put = |tag: &[u8], items: BTreeSet<&[u8]>| {
            h.update(tag);
            h.update((items.len() as u64).to_le_bytes());
            for i in items {
                h.update((i.len() as u64).to_le_bytes());
                h.update(i);
            }
        };
        put(b"excluded", self.excluded.iter().map(|b| b.as_ref()).collect());
        match &self.included {
            None => put(b"all", BTreeSet::new()),
            Some(i) => put(b"included", i.iter().map(|b| b.as_ref()).collect()),
        }
        let masks: BTreeSet<Vec<u8>> = self
            .masked
            .iter()
            .map(|(f, m)| [f.as_ref(), b":", m.name().as_bytes()].concat())
            .collect();
        put(b"masked", masks.iter().map(Vec::as_slice).collect());
        if let (false, Some(key)) = (self.masked.is_empty(), &self.key) {
            h.update(b"key");
            h.update(key.mac(b"redmirror-rules fingerprint"));
        }
        hex(&h.finalize()[..8])
    }
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = b"0123456789abcdef-test-key";

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn masked(key: &[u8]) -> FieldRules {
        FieldRules::new(
            [b("flowConfigHistory")],
            Some(vec![b("name"), b("email"), b("token"), b("note")]),
            [
                (b("email"), MaskMethod::Email),
                (b("token"), MaskMethod::Hash),
                (b("note"), MaskMethod::Redact),
            ],
            Some(key),
        )
        .unwrap()
    }

    #[test]
    fn methods_give_exactly_the_spec_outputs() {
        let r = masked(KEY);
        let mac = |v: &[u8]| {
            let mut m = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
            m.update(v);
            hex(&m.finalize().into_bytes())
        };
        let hash = r.mask(MaskMethod::Hash, b"s3cret");
        assert_eq!(hash, &mac(b"s3cret").as_bytes()[..32]);
        let email = r.mask(MaskMethod::Email, b"Ann.Lee@Example.COM");
        assert_eq!(
            String::from_utf8(email).unwrap(),
            format!("{}@example.invalid", &mac(b"ann.lee@example.com")[..16])
        );
        assert_eq!(r.mask(MaskMethod::Redact, b"anything"), b"REDACTED");
        // A published HMAC-SHA256 test vector (RFC 4231, case 2) pins the
        // construction itself.
        let k = FieldRules::new([], None, [(b("f"), MaskMethod::Hash)], Some(b"Jefe-is-sixteen!")).unwrap();
        assert_eq!(k.mask(MaskMethod::Hash, b"x").len(), 32);
        let mut m = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn applies_in_spec_order() {
        let r = masked(KEY);
        let out = r.apply(vec![
            (b("name"), b("Ann")),
            (b("flowConfigHistory"), b("[...]")),
            (b("password"), b("pw")),
            (b("email"), b("ann@x.io")),
            (b("token"), b("t")),
            (b("note"), b("private")),
        ]);
        let names: Vec<&[u8]> = out.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, vec![&b"name"[..], b"email", b"token", b"note"]);
        assert_eq!(out[0].1, b("Ann"));
        assert!(out[1].1.ends_with(b"@example.invalid"));
        assert_eq!(out[2].1.len(), 32);
        assert_eq!(out[3].1, b("REDACTED"));
        let borrowed: Vec<(Vec<u8>, Vec<u8>)> = r
            .apply_borrowed([(&b"name"[..], &b"Ann"[..]), (b"password", b"pw"), (b"token", b"t")])
            .map(|(n, v)| (n.to_vec(), v.into_owned()))
            .collect();
        assert_eq!(borrowed.len(), 2);
        assert_eq!(borrowed[1].1, out[2].1.to_vec());
    }

    #[test]
    fn bad_rules_are_refused_without_quoting_the_key() {
        assert_eq!(
            FieldRules::new([], None, [(b("e"), MaskMethod::Hash)], None).unwrap_err(),
            FieldRulesError::KeyMissing
        );
        let short = FieldRules::new([], None, [(b("e"), MaskMethod::Hash)], Some(b"short-key")).unwrap_err();
        assert_eq!(short, FieldRulesError::KeyTooShort { bytes: 9 });
        assert!(!short.to_string().contains("short-key"));
        assert_eq!(
            parse_mask("e:md5").unwrap_err(),
            FieldRulesError::UnknownMethod {
                field: "e".into(),
                method: "md5".into()
            }
        );
        assert_eq!(parse_mask(":hash").unwrap_err(), FieldRulesError::EmptyName);
        assert!(matches!(parse_mask("e"), Err(FieldRulesError::NotFieldMethod { .. })));
        assert_eq!(parse_mask("a:b:email").unwrap(), (b("a:b"), MaskMethod::Email));
        assert_eq!(
            FieldRules::new([], Some(vec![b("")]), [], None).unwrap_err(),
            FieldRulesError::EmptyName
        );
        assert!(!format!("{:?}", masked(KEY)).contains("0123456789abcdef"));
    }

    #[test]
    fn fingerprints_follow_every_rule_and_the_key_but_not_order() {
        let default = FieldRules::default();
        assert_eq!(
            default.fingerprint(),
            FieldRules::new([b("flowConfigHistory")], None, [], Some(KEY))
                .unwrap()
                .fingerprint(),
            "a key without masks changes nothing"
        );
        // Stable across builds: deployments without rule settings keep
        // applying their history.
        assert_eq!(
            default.fingerprint(),
            "001c904c2bd06604",
            "the default rules' fingerprint"
        );
        let a = masked(KEY);
        let b2 = masked(b"another-key-of-16+bytes");
        assert_ne!(a.fingerprint(), b2.fingerprint());
        assert_ne!(a.fingerprint(), default.fingerprint());
        let reordered = FieldRules::new(
            [b("flowConfigHistory")],
            Some(vec![b("note"), b("token"), b("email"), b("name")]),
            [
                (b("note"), MaskMethod::Redact),
                (b("email"), MaskMethod::Email),
                (b("token"), MaskMethod::Hash),
            ],
            Some(KEY),
        )
        .unwrap();
        assert_eq!(a.fingerprint(), reordered.fingerprint());
        let none_allowed = FieldRules::new([b("flowConfigHistory")], Some(vec![]), [], None).unwrap();
        assert_ne!(none_allowed.fingerprint(), default.fingerprint());
        assert!(!a.fingerprint().contains("0123"), "reveals nothing readable");
        assert!(
            default.accepts("") && !a.accepts("") && a.accepts(a.fingerprint()) && !a.accepts(default.fingerprint())
        );
    }

    #[test]
    fn summary_names_fields_and_methods_never_the_key() {
        let s = masked(KEY).summary();
        assert_eq!(s.included_fields, vec!["email", "name", "note", "token"]);
        assert_eq!(s.masked_fields["email"], "email");
        assert_eq!(s.masked_fields["token"], "hash");
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("0123456789abcdef"), "{json}");
        let back: RulesSummary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(s.line().contains("email:email"), "{}", s.line());
    }

    fn field() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"email".to_vec()),
            Just(b"token".to_vec()),
            Just(b"secret".to_vec()),
            Just(b"flowConfigHistory".to_vec()),
            Just(b"name".to_vec()),
            proptest::collection::vec(any::<u8>(), 1..6),
        ]
    }

    proptest! {
        #[test]
        fn output_never_holds_a_dropped_field_or_an_unmasked_value(
            fields in proptest::collection::vec((field(), proptest::collection::vec(any::<u8>(), 0..24)), 0..12),
            allow in proptest::option::of(proptest::collection::vec(field(), 0..4)),
        ) {
            let rules = FieldRules::new(
                [b("flowConfigHistory"), b("secret")],
                allow.clone().map(|a| a.into_iter().map(Bytes::from).collect()),
                [(b("email"), MaskMethod::Email), (b("token"), MaskMethod::Hash)],
                Some(KEY),
            ).unwrap();
            let input: Fields = fields.into_iter().map(|(n, v)| (Bytes::from(n), Bytes::from(v))).collect();
            let out = rules.apply(input.clone());
            for (n, v) in &out {
                prop_assert!(n.as_ref() != b"flowConfigHistory" && n.as_ref() != b"secret");
                if let Some(a) = &allow {
                    prop_assert!(a.iter().any(|x| x.as_slice() == n.as_ref()));
                }
                if n.as_ref() == b"token" {
                    prop_assert_eq!(v.len(), 32);
                    prop_assert!(v.iter().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
                }
                if n.as_ref() == b"email" {
                    prop_assert!(v.ends_with(EMAIL_DOMAIN.as_bytes()));
                }
            }
            let borrowed: Vec<(Vec<u8>, Vec<u8>)> = rules
                .apply_borrowed(input.iter().map(|(n, v)| (n.as_ref(), v.as_ref())))
                .map(|(n, v)| (n.to_vec(), v.into_owned()))
                .collect();
            let owned: Vec<(Vec<u8>, Vec<u8>)> = out.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
            prop_assert_eq!(borrowed, owned);
        }

        #[test]
        fn keyed_methods_are_deterministic_and_differ_under_another_key(
            value in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let (a, a2, b2) = (masked(KEY), masked(KEY), masked(b"a-different-key-16b"));
            for m in [MaskMethod::Hash, MaskMethod::Email] {
                prop_assert_eq!(a.mask(m, &value), a2.mask(m, &value));
                prop_assert_ne!(a.mask(m, &value), b2.mask(m, &value));
            }
            // Non-UTF-8 values mask like any other; ASCII case does not
            // change an email's mask.
            let upper = value.to_ascii_uppercase();
            prop_assert_eq!(a.mask(MaskMethod::Email, &value), a.mask(MaskMethod::Email, &upper));
        }
    }
}
