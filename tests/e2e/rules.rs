//! SPEC section 8: field rules (allow-list, masks, the mask key), end to
//! end: what the copies hold, what Kafka holds, what a rule change does to
//! copies and to a replay, and what a split deployment with mismatched
//! rules says.

use std::collections::BTreeMap;
use std::process::Stdio;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::harness::*;

const TOKEN: &str = "rules-test-admin-token-1";
const KEY_ONE: &str = "e2e-mask-key-one-0123456789";
const KEY_TWO: &str = "e2e-mask-key-two-9876543210";

/// Source values that no copy, record, log line or status may hold.
const SECRETS: &[&[u8]] = &[
    b"Ann.Lee@Example.com",
    b"ann.lee@example.COM",
    b"tok-secret-1",
    b"\xff\xfe-tok-2",
    b"private note 1",
    b"pw-secret-1",
    b"pw-secret-2",
    b"hist-secret-1",
];

fn mac(key: &str, value: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    m.update(value);
    m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// SPEC section 8's `hash`, computed here independently of the code.
fn hash_mask(key: &str, value: &[u8]) -> Vec<u8> {
    mac(key, value).as_bytes()[..32].to_vec()
}

/// SPEC section 8's `email`.
fn email_mask(key: &str, value: &[u8]) -> Vec<u8> {
    format!("{}@example.invalid", &mac(key, &value.to_ascii_lowercase())[..16]).into_bytes()
}

fn h(pairs: &[(&[u8], &[u8])]) -> Hash {
    pairs.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

/// Writes the three test flows on the source.
fn write_flows(src: &mut redis::Connection) {
    hset(
        src,
        b"client:r1",
        &[
            (b"name", b"Ann"),
            (b"email", b"Ann.Lee@Example.com"),
            (b"token", b"tok-secret-1"),
            (b"note", b"private note 1"),
            (b"password", b"pw-secret-1"),
            (b"flowConfigHistory", b"hist-secret-1"),
        ],
    );
    hset(
        src,
        b"client:r2",
        &[
            (b"name", b"Bob"),
            (b"email", b"ann.lee@example.COM"),
            (b"token", b"\xff\xfe-tok-2"),
            (b"password", b"pw-secret-2"),
        ],
    );
    hset(src, b"client:r3", &[(b"name", b"Cy")]);
}

/// Rules A: allow-list and three masks under `KEY_ONE`.
fn rules_a(env: &mut BTreeMap<String, String>) {
    env.insert("REDMIRROR_ADMIN_TOKEN".into(), TOKEN.into());
    env.insert(
        "REDMIRROR_INCLUDED_FIELDS".into(),
        "name,email,token,note,clerkOrganizationId".into(),
    );
    env.insert(
        "REDMIRROR_MASKED_FIELDS".into(),
        "email:email, token:hash, note:redact".into(),
    );
    env.insert("REDMIRROR_MASK_KEY".into(), KEY_ONE.into());
}

/// The copies rules A give.
fn expected_a() -> BTreeMap<Vec<u8>, Hash> {
    let email = email_mask(KEY_ONE, b"ann.lee@example.com");
    [
        (
            b"client:r1".to_vec(),
            copy_of(&h(&[
                (b"name", b"Ann"),
                (b"email", &email),
                (b"token", &hash_mask(KEY_ONE, b"tok-secret-1")),
                (b"note", b"REDACTED"),
            ])),
        ),
        (
            b"client:r2".to_vec(),
            copy_of(&h(&[
                (b"name", b"Bob"),
                (b"email", &email),
                (b"token", &hash_mask(KEY_ONE, b"\xff\xfe-tok-2")),
            ])),
        ),
        (b"client:r3".to_vec(), copy_of(&h(&[(b"name", b"Cy")]))),
    ]
    .into()
}

/// Rules B (set through `--set`-style TOML keys in the environment's
/// place): no allow-list, `password` excluded too, the email hashed under
/// `KEY_TWO`.
fn rules_b(env: &mut BTreeMap<String, String>) {
    env.remove("REDMIRROR_INCLUDED_FIELDS");
    env.insert("REDMIRROR_EXCLUDED_FIELDS".into(), "flowConfigHistory,password".into());
    env.insert(
        "REDMIRROR_MASKED_FIELDS".into(),
        "email:hash,token:hash,note:redact".into(),
    );
    env.insert("REDMIRROR_MASK_KEY".into(), KEY_TWO.into());
}

fn expected_b() -> BTreeMap<Vec<u8>, Hash> {
    [
        (
            b"client:r1".to_vec(),
            copy_of(&h(&[
                (b"name", b"Ann"),
                (b"email", &hash_mask(KEY_TWO, b"Ann.Lee@Example.com")),
                (b"token", &hash_mask(KEY_TWO, b"tok-secret-1")),
                (b"note", b"REDACTED"),
            ])),
        ),
        (
            b"client:r2".to_vec(),
            copy_of(&h(&[
                (b"name", b"Bob"),
                (b"email", &hash_mask(KEY_TWO, b"ann.lee@example.COM")),
                (b"token", &hash_mask(KEY_TWO, b"\xff\xfe-tok-2")),
            ])),
        ),
        (b"client:r3".to_vec(), copy_of(&h(&[(b"name", b"Cy")]))),
    ]
    .into()
}

/// The test flows' copies on the destination.
fn copies(dest: &RedisServer) -> BTreeMap<Vec<u8>, Hash> {
    let mut d = dest.conn();
    [&b"client:r1"[..], b"client:r2", b"client:r3"]
        .into_iter()
        .map(|k| (k.to_vec(), hgetall(&mut d, k)))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

#[track_caller]
fn wait_copies(dest: &RedisServer, want: &BTreeMap<Vec<u8>, Hash>, what: &str) {
    wait_for(what, CONVERGE, || (copies(dest) == *want).then_some(()));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `reconcile --once --dry-run --json`: the report.
fn dry_run_report(env: &BTreeMap<String, String>) -> serde_json::Value {
    let out = command()
        .args(["reconcile", "--once", "--dry-run", "--json"])
        .envs(with_http_port(env))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = text.find('{').expect("a JSON report");
    serde_json::from_str(&text[start..=text.rfind('}').unwrap()]).expect(&text)
}

#[test]
fn a_masked_allow_listed_mirror_is_exactly_the_rules_and_nothing_hidden_leaks() {
    let source = RedisServer::start();
    let url = source.url();
    let (s, env) = Setup::run_on(source, &url, rules_a);
    let mut src = s.source.conn();
    write_flows(&mut src);
    let want = expected_a();
    wait_copies(&s.dest, &want, "the copies to be the rules' output (live)");
    // One value masks to one output in every flow.
    assert_eq!(
        want[&b"client:r1"[..]][&b"email"[..]],
        want[&b"client:r2"[..]][&b"email"[..]]
    );

    // A masked mirror in step shows no drift, and a pass leaves it as it is.
    wait_for("the first pass", CONVERGE, || {
        (s.mirror.metric("redmirror_reconcile_runs_total") >= 1.0).then_some(())
    });
    let report = dry_run_report(&env);
    for kind in ["missing", "extra", "different"] {
        assert_eq!(report["drift"][kind].as_u64().unwrap_or(0), 0, "{kind}: {report}");
    }
    let done = admin::reconcile(&s.mirror.http, TOKEN);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(copies(&s.dest), want, "after a pass");

    // Every record of the change topic: no hidden value, no key, and the
    // fingerprint `/v1/status` shows.
    let (code, status, _) = admin::status(&s.mirror.http, TOKEN).unwrap();
    assert_eq!(code, 200, "{status}");
    let rules = &status["rules"];
    assert_eq!(rules["masked_fields"]["email"], "email", "{status}");
    assert_eq!(rules["masked_fields"]["token"], "hash", "{status}");
    assert_eq!(rules["masked_fields"]["note"], "redact", "{status}");
    assert!(
        rules["included_fields"]
            .as_array()
            .is_some_and(|a| a.iter().any(|f| f == "token")),
        "{status}"
    );
    let fingerprint = rules["fingerprint"].as_str().expect("a fingerprint").to_string();
    let records = kafka::read_all(&s.broker.bootstrap(), &s.mirror.topic);
    assert!(records.len() >= 3, "{} records", records.len());
    for r in &records {
        let mut all = r.payload.clone();
        for (name, value) in &r.headers {
            all.extend_from_slice(name.as_bytes());
            all.extend_from_slice(value);
        }
        for secret in SECRETS.iter().chain([&KEY_ONE.as_bytes()]) {
            assert!(
                !contains(&all, secret),
                "record of {} holds {}",
                String::from_utf8_lossy(&r.key),
                String::from_utf8_lossy(secret)
            );
        }
        assert_eq!(r.header("redmirror-rules").as_deref(), Some(fingerprint.as_str()));
    }

    // Never the key (nor a hidden value) in a log line, a metric or a status.
    let metrics = s.mirror.metrics();
    assert!(
        metrics.contains("redmirror_apply_events_total{outcome=\"skipped_rules\"} 0"),
        "{metrics}"
    );
    let (_, status_text) = cli(&["status", "--url", &s.mirror.http], &env);
    assert!(status_text.contains("email:email"), "{status_text}");
    assert!(status_text.contains(&fingerprint), "{status_text}");
    let status_body = status.to_string();
    let log = s.mirror.output();
    for (what, text) in [
        ("log", &log),
        ("metrics", &metrics),
        ("status", &status_body),
        ("redmirror status", &status_text),
    ] {
        assert!(!text.contains(KEY_ONE), "the mask key is in the {what}:\n{text}");
        for secret in SECRETS {
            assert!(
                !contains(text.as_bytes(), secret),
                "{} is in the {what}",
                String::from_utf8_lossy(secret)
            );
        }
    }
}

#[test]
fn a_rule_change_rewrites_every_copy_and_a_replay_brings_back_nothing_it_hides() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let mut env = mirror_env(&source.url(), &dest.url(), &broker.bootstrap());
    rules_a(&mut env);
    let mut mirror = Mirror::start(&["run"], &env);
    let mut src = source.conn();
    write_flows(&mut src);
    wait_copies(&dest, &expected_a(), "the copies under rules A");
    wait_for("the first pass under rules A", CONVERGE, || {
        (mirror.metric("redmirror_reconcile_runs_total") >= 1.0).then_some(())
    });
    assert_eq!(mirror.terminate(), Some(0));

    // Rules B (another key, another method, another exclusion): the first
    // pass rewrites every copy, counted as `different`, r3 included though
    // its copy is the same under both rules.
    rules_b(&mut env);
    let mut mirror = Mirror::start(&["run"], &env);
    wait_copies(
        &dest,
        &expected_b(),
        "the first pass to rewrite the copies under rules B",
    );
    wait_for("the first pass to count every copy as different", CONVERGE, || {
        (mirror.metric("redmirror_reconcile_drift_total{kind=\"different\"}") >= 3.0).then_some(())
    });
    assert_ne!(
        expected_a()[&b"client:r1"[..]][&b"token"[..]],
        expected_b()[&b"client:r1"[..]][&b"token"[..]],
        "another key masks to another value"
    );
    assert_eq!(mirror.terminate(), Some(0));

    // Rules C (the email redacted too): history on the topic is made under
    // A and B only. A replay onto a wiped destination writes none of it...
    env.insert(
        "REDMIRROR_MASKED_FIELDS".into(),
        "email:redact,token:hash,note:redact".into(),
    );
    let _: () = redis::cmd("FLUSHALL").query(&mut dest.conn()).unwrap();
    let (code, out) = cli(&["replay", "--from-beginning", "--dry-run"], &with_http_port(&env));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("skipped") && out.contains("pass"), "{out}");
    let (code, out) = cli(&["replay", "--from-beginning"], &with_http_port(&env));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("skipped_rules"), "{out}");
    assert!(out.contains("reconcile pass"), "{out}");
    assert!(
        copies(&dest).is_empty(),
        "a replay wrote copies made under other rules: {:?}",
        copies(&dest)
    );

    // ... and the next pass restores every copy under rules C.
    let mirror = Mirror::start(&["run"], &env);
    let mut want = expected_b();
    for (k, v) in want.iter_mut() {
        if k.as_slice() != b"client:r3" {
            v.insert(b"email".to_vec(), b"REDACTED".to_vec());
        }
    }
    wait_copies(&dest, &want, "the pass to restore every copy under rules C");
    let log = mirror.output();
    assert!(
        !log.contains(KEY_ONE) && !log.contains(KEY_TWO),
        "a mask key is in the log"
    );
}

#[test]
fn capture_and_apply_with_different_rules_fail_readiness_naming_the_reason() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let mut capture_env = mirror_env(&source.url(), &dest.url(), &broker.bootstrap());
    rules_a(&mut capture_env);
    let mut apply_env = capture_env.clone();
    apply_env.insert(
        "REDMIRROR_HTTP_ADDR".into(),
        format!("127.0.0.1:{}", redmirror_testkit::free_port()),
    );
    apply_env.insert("REDMIRROR_MASK_KEY".into(), KEY_TWO.into());
    let capture = Mirror::start(&["capture"], &capture_env);
    let apply = Mirror::start(&["apply"], &apply_env);
    let mut src = source.conn();
    let mut n = 0u32;
    wait_for("apply to skip an event made under capture's rules", CONVERGE, || {
        n += 1;
        hset(&mut src, b"client:r1", &[(b"name", n.to_string().as_bytes())]);
        (apply.metric("redmirror_apply_events_total{outcome=\"skipped_rules\"}") >= 1.0).then_some(())
    });
    let body = wait_for("apply's readiness to fail", CONVERGE, || {
        let b = http::blocking_get(&format!("{}/readyz", apply.http))?;
        (apply.readyz() == 503).then_some(b)
    });
    assert!(body.contains("field rules"), "{body}");
    assert!(body.contains("REDMIRROR_MASK_KEY"), "{body}");
    assert!(!body.contains(KEY_ONE) && !body.contains(KEY_TWO), "{body}");
    assert!(
        hgetall(&mut dest.conn(), b"client:r1").is_empty(),
        "apply wrote an event made under other rules"
    );
    let log = apply.output();
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("field rules"))
        .count();
    assert_eq!(errors, 1, "one ERROR line per foreign fingerprint:\n{log}");
    assert!(
        !log.contains(KEY_ONE) && !log.contains(KEY_TWO),
        "a mask key is in the log"
    );
    drop(capture);
}

#[test]
fn bad_rule_settings_exit_2_naming_the_setting_in_check_as_in_run() {
    let base = [
        ("REDMIRROR_SOURCE_URL", "redis://127.0.0.1:1".to_string()),
        ("REDMIRROR_DEST_URL", "redis://127.0.0.1:2".to_string()),
        ("REDMIRROR_KAFKA_BROKERS", "127.0.0.1:3".to_string()),
    ];
    let env_with = |extra: &[(&str, &str)]| {
        let mut e: BTreeMap<String, String> = base.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        e.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        e
    };
    let rows: &[(&[(&str, &str)], &str)] = &[
        (&[("REDMIRROR_MASKED_FIELDS", "email:hash")], "REDMIRROR_MASK_KEY"),
        (
            &[
                ("REDMIRROR_MASKED_FIELDS", "email:hash"),
                ("REDMIRROR_MASK_KEY", "short-secret-k"),
            ],
            "REDMIRROR_MASK_KEY",
        ),
        (
            &[
                ("REDMIRROR_MASKED_FIELDS", "email:rot13"),
                ("REDMIRROR_MASK_KEY", KEY_ONE),
            ],
            "REDMIRROR_MASKED_FIELDS",
        ),
        (
            &[("REDMIRROR_MASKED_FIELDS", ":redact"), ("REDMIRROR_MASK_KEY", KEY_ONE)],
            "REDMIRROR_MASKED_FIELDS",
        ),
        (
            &[("REDMIRROR_INCLUDED_FIELDS", "name,,email")],
            "REDMIRROR_INCLUDED_FIELDS",
        ),
    ];
    for (extra, setting) in rows {
        for cmd in [&["run"][..], &["check"], &["replay", "--from-beginning"], &["apply"]] {
            let (code, out) = cli(cmd, &env_with(extra));
            assert_eq!(code, 2, "{cmd:?} with {extra:?}: {out}");
            assert!(out.contains(setting), "{cmd:?} with {extra:?} names {setting}: {out}");
            assert!(!out.contains("short-secret-k") && !out.contains(KEY_ONE), "{out}");
        }
    }
    // The same through --set (TOML keys).
    let (code, out) = cli(
        &[
            "check",
            "--set",
            "masked_fields=email:md5",
            "--set",
            &format!("mask_key={KEY_ONE}"),
        ],
        &env_with(&[]),
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("REDMIRROR_MASKED_FIELDS") && !out.contains(KEY_ONE),
        "{out}"
    );
    // Allow-listed and excluded: a warning naming the settings, not a refusal.
    let (code, out) = cli(
        &["check"],
        &env_with(&[("REDMIRROR_INCLUDED_FIELDS", "name,flowConfigHistory")]),
    );
    assert_ne!(code, 2, "{out}");
    assert!(
        out.contains("warning") && out.contains("REDMIRROR_INCLUDED_FIELDS"),
        "{out}"
    );
}
