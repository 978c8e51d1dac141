use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn full() -> Vec<(String, String)> {
    env(&[
        ("REDMIRROR_SOURCE_URL", "redis://127.0.0.1:6379"),
        ("REDMIRROR_DEST_URL", "redis://127.0.0.1:6380/2"),
        ("REDMIRROR_KAFKA_BROKERS", "localhost:9092"),
    ])
}

const ALL: &[&Setting] = &[&SOURCE_URL, &DEST_URL, &KAFKA_BROKERS];

#[test]
fn defaults_match_the_spec() {
    let c = Layers::load(None, full()).unwrap().validate(ALL).unwrap();
    assert_eq!(c.topic, "redmirror.flows");
    assert_eq!(c.dlq_topic(), "redmirror.flows.dlq");
    assert_eq!(c.group_id, "redmirror-apply");
    assert_eq!(c.http_addr.to_string(), "127.0.0.1:9464");
    assert!(c.admin_token.is_none());
    assert_eq!(c.reconcile_interval, Duration::from_secs(900));
    assert_eq!(c.log, "info");
    assert!(c.rules.fields.excluded_fields().contains(&b"flowConfigHistory"[..]));
    assert!(c.rules.fields.only_exclusions());
    assert_eq!(
        c.rules.fields.fingerprint(),
        redmirror_core::FieldRules::default().fingerprint()
    );
    assert!(c.rules.filtered_orgs.is_empty());
    assert_eq!(c.dest.as_ref().unwrap().db(), 2);
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let dir = std::env::temp_dir().join(format!("redmirror-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        "topic = \"from-file\"\ngroup_id = \"g-file\"\nfiltered_orgs = [\"a\", \"b\"]\nreconcile_interval = \"30s\"\n[kafka.properties]\n\"socket.timeout.ms\" = 1234\n",
    )
    .unwrap();
    let mut e = full();
    e.push(("REDMIRROR_TOPIC".into(), "from-env".into()));
    e.push(("REDMIRROR_KAFKA_SESSION_TIMEOUT_MS".into(), "6000".into()));
    let mut l = Layers::load(Some(&path), e).unwrap();
    l.set_flag("group_id", "g-flag").unwrap();
    let c = l.validate(ALL).unwrap();
    assert_eq!(c.topic, "from-env");
    assert_eq!(c.group_id, "g-flag");
    assert_eq!(c.filtered_orgs_sorted(), vec!["a", "b"]);
    assert_eq!(c.reconcile_interval, Duration::from_secs(30));
    assert_eq!(c.kafka_properties.get("session.timeout.ms").unwrap(), "6000");
    assert_eq!(c.kafka_properties.get("socket.timeout.ms").unwrap(), "1234");
}

impl Config {
    fn filtered_orgs_sorted(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .rules
            .filtered_orgs
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        v.sort();
        v
    }
}

fn err(pairs: &[(&str, &str)], needs: &[&Setting]) -> String {
    let mut e = full();
    e.extend(env(pairs));
    match Layers::load(None, e).and_then(|l| l.validate(needs)) {
        Ok(_) => panic!("expected an error for {pairs:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_settings_are_named() {
    assert!(err(&[("REDMIRROR_RECONCILE_INTERVAL", "soon")], ALL).contains("REDMIRROR_RECONCILE_INTERVAL"));
    assert!(err(&[("REDMIRROR_SOURCE_URL", "http://x")], ALL).contains("REDMIRROR_SOURCE_URL"));
    assert!(err(&[("REDMIRROR_HTTP_ADDR", "nope")], ALL).contains("REDMIRROR_HTTP_ADDR"));
    assert!(err(&[("REDMIRROR_TOPIC", "bad topic!")], ALL).contains("REDMIRROR_TOPIC"));
    assert!(err(&[("REDMIRROR_APPLY_BATCH", "0")], ALL).contains("REDMIRROR_APPLY_BATCH"));
    assert!(err(&[("REDMIRROR_LOG_FORMAT", "xml")], ALL).contains("REDMIRROR_LOG_FORMAT"));
    assert!(err(&[("REDMIRROR_TOPICS", "x")], ALL).contains("REDMIRROR_TOPICS"));
    assert!(err(&[("REDMIRROR_DEST_URL", "redis://127.0.0.1:6379")], ALL).contains("REDMIRROR_DEST_URL"));
    assert!(err(&[("REDMIRROR_ADMIN_TOKEN", "short")], ALL).contains("REDMIRROR_ADMIN_TOKEN"));
    assert!(
        err(&[("REDMIRROR_SOURCE_TLS_CA_FILE", "/nonexistent/ca.pem")], ALL).contains("REDMIRROR_SOURCE_TLS_CA_FILE")
    );
}

#[test]
fn missing_settings_are_named() {
    let e = Layers::load(None, Vec::new())
        .unwrap()
        .validate(ALL)
        .unwrap_err()
        .to_string();
    assert!(e.contains("REDMIRROR_SOURCE_URL"), "{e}");
    let e = Layers::load(None, env(&[("REDMIRROR_SOURCE_URL", "redis://h")]))
        .unwrap()
        .validate(ALL)
        .unwrap_err()
        .to_string();
    assert!(e.contains("REDMIRROR_DEST_URL"), "{e}");
}

#[test]
fn secrets_are_redacted_in_errors() {
    let e = err(&[("REDMIRROR_SOURCE_URL", "redis://user:hunter2@host/notadb")], ALL);
    assert!(!e.contains("hunter2"), "{e}");
    let e = err(&[("REDMIRROR_ADMIN_TOKEN", "short-secret")], ALL);
    assert!(!e.contains("short-secret"), "{e}");
    assert_eq!(redact_url("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
    assert_eq!(redact_url("redis://tok@h:1"), "redis://***@h:1");
    assert_eq!(redact_url("not a url"), HIDDEN_URL);
    let c = Layers::load(None, env(&[("REDMIRROR_SOURCE_URL", "redis://u:pw@h:1")]))
        .unwrap()
        .validate(&[&SOURCE_URL])
        .unwrap();
    assert!(!format!("{c:?}").contains("pw@"));
}

#[test]
fn unknown_toml_key_is_refused() {
    let dir = std::env::temp_dir().join(format!("redmirror-cfg2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, "topik = \"x\"\n").unwrap();
    let e = Layers::load(Some(&path), Vec::new()).unwrap_err().to_string();
    assert!(e.contains("topik") && e.contains("REDMIRROR_TOPIC"), "{e}");
    std::fs::write(&path, "topic = [unclosed\n").unwrap();
    let e = Layers::load(Some(&path), Vec::new()).unwrap_err().to_string();
    assert!(e.contains("not valid TOML"), "{e}");
}

#[test]
fn settings_table_is_sane() {
    let mut keys: Vec<_> = SETTINGS.iter().map(|s| s.key).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), SETTINGS.len(), "duplicate setting");
    // Every default validates.
    Layers::load(None, Vec::new()).unwrap().validate(&[]).unwrap();
}

#[test]
fn docs_configuration_md_matches_the_settings_table() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let want = settings::markdown();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/configuration.md is out of date: run UPDATE_DOCS=1 cargo test -p redmirror-config"
    );
}

#[test]
fn field_rules_parse_and_bad_ones_name_their_setting_never_the_key() {
    let with = |extra: &[(&str, &str)]| {
        let mut e = full();
        e.extend(env(extra));
        e
    };
    let c = Layers::load(
        None,
        with(&[
            ("REDMIRROR_INCLUDED_FIELDS", "name, email,token"),
            ("REDMIRROR_MASKED_FIELDS", "email:email, token:hash"),
            ("REDMIRROR_MASK_KEY", "k3y-0f-sixteen-bytes"),
        ]),
    )
    .unwrap()
    .validate(ALL)
    .unwrap();
    let s = c.rules.fields.summary();
    assert_eq!(s.included_fields, vec!["email", "name", "token"]);
    assert_eq!(s.masked_fields["token"], "hash");
    assert!(!format!("{c:?}").contains("k3y-0f-sixteen-bytes"));
    let bad = |extra: &[(&str, &str)]| {
        Layers::load(None, with(extra))
            .unwrap()
            .validate(ALL)
            .unwrap_err()
            .to_string()
    };
    let e = bad(&[("REDMIRROR_MASKED_FIELDS", "email:hash")]);
    assert!(e.contains("REDMIRROR_MASK_KEY"), "{e}");
    let e = bad(&[
        ("REDMIRROR_MASKED_FIELDS", "email:hash"),
        ("REDMIRROR_MASK_KEY", "tiny-secret"),
    ]);
    assert!(e.contains("REDMIRROR_MASK_KEY") && !e.contains("tiny-secret"), "{e}");
    let e = bad(&[
        ("REDMIRROR_MASKED_FIELDS", "email:md5"),
        ("REDMIRROR_MASK_KEY", "k3y-0f-sixteen-bytes"),
    ]);
    assert!(e.contains("REDMIRROR_MASKED_FIELDS") && e.contains("md5"), "{e}");
    assert!(!e.contains("k3y-0f-sixteen-bytes"), "{e}");
    let e = bad(&[("REDMIRROR_INCLUDED_FIELDS", "name,,email")]);
    assert!(e.contains("REDMIRROR_INCLUDED_FIELDS"), "{e}");
    let e = bad(&[
        ("REDMIRROR_MASKED_FIELDS", ":redact"),
        ("REDMIRROR_MASK_KEY", "k3y-0f-sixteen-bytes"),
    ]);
    assert!(e.contains("REDMIRROR_MASKED_FIELDS"), "{e}");
    // Allow-listed and excluded: valid (a warning at start).
    let c = Layers::load(None, with(&[("REDMIRROR_INCLUDED_FIELDS", "name,flowConfigHistory")]))
        .unwrap()
        .validate(ALL)
        .unwrap();
    assert_eq!(c.rules.fields.allowed_but_excluded(), vec!["flowConfigHistory"]);
}

/// SPEC section 7: a password holding `/ # ? @` unescaped is refused, naming
/// the setting and saying how to escape it, and never printed.
#[test]
fn a_url_whose_password_needs_escaping_is_refused_without_printing_it() {
    for (url, secret) in [
        ("redis://u:pa/ss#w@host", "pa/ss"),
        ("redis://u:pa/ss#w@host:6379", "ss#w"),
        ("redis://u:123/ss#w@host", "123/ss"),
        ("redis://u:pa?ss@host", "pa?ss"),
        ("redis://u:p#ss@host", "p#ss"),
        ("redis://:hunter2/x@host:6379/0", "hunter2"),
        ("redis://tok/en@host", "tok/en"),
        ("rediss://u:s3cr?et@host:6380", "s3cr"),
    ] {
        for var in ["REDMIRROR_SOURCE_URL", "REDMIRROR_DEST_URL"] {
            let mut vars = vec![(var, url)];
            let other = if var == "REDMIRROR_SOURCE_URL" {
                ("REDMIRROR_DEST_URL", "redis://d:1")
            } else {
                ("REDMIRROR_SOURCE_URL", "redis://s:1")
            };
            vars.push(other);
            let e = err(&vars, ALL);
            assert!(e.contains(var), "{url}: {e}");
            assert!(!e.contains(secret), "{url}: the password is printed: {e}");
            assert!(!e.contains(url), "{url}: the URL is printed: {e}");
            assert!(e.contains("%2F") && e.contains("%40"), "{url}: no escaping hint: {e}");
        }
        assert!(!redact_url(url).contains(secret), "{url}: {}", redact_url(url));
    }
    // An escaped password is taken, and printed as `***`.
    let c = Layers::load(
        None,
        env(&[("REDMIRROR_SOURCE_URL", "redis://u:pa%2Fss%23w@host:6379/0")]),
    )
    .unwrap()
    .validate(&[&SOURCE_URL])
    .unwrap();
    assert_eq!(c.source.unwrap().redacted(), "redis://u:***@host:6379/0");
}

#[test]
fn a_partitioner_that_does_not_hash_the_key_is_refused_naming_it() {
    for ok in ["consistent_random", "murmur2_random", "fnv1a"] {
        let mut e = full();
        e.push(("REDMIRROR_KAFKA_PARTITIONER".into(), ok.into()));
        let c = Layers::load(None, e).unwrap().validate(ALL).unwrap();
        assert_eq!(c.kafka_properties.get("partitioner").map(String::as_str), Some(ok));
    }
    for bad in ["random", "murmur3"] {
        let mut e = full();
        e.push(("REDMIRROR_KAFKA_PARTITIONER".into(), bad.into()));
        let err = Layers::load(None, e).unwrap().validate(ALL).unwrap_err().to_string();
        assert!(err.contains("REDMIRROR_KAFKA_PARTITIONER"), "{err}");
        assert!(err.contains("consistent_random"), "{err}");
    }
}
