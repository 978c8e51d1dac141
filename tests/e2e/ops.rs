//! Operations: TLS, least-privilege ACL users, graceful stop without loss or
//! duplicates, JSON logs without secrets, metrics after traffic.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;
use ::reqwest;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is needed to make test certificates: run scripts/install-test-deps");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=redmirror-test-ca",
        ],
    );
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=redmirror",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.pem",
            "-days",
            "2",
            "-extfile",
            "client.ext",
        ],
    );
}

fn tls_server(dir: &Path, notify: bool, mutual: bool) -> (RedisServer, u16) {
    let tls_port = redmirror_testkit::free_port();
    let p = |f: &str| dir.join(f).display().to_string();
    let mut opts = if notify {
        RedisOptions::with_notifications()
    } else {
        RedisOptions::default()
    };
    opts = opts
        .arg("tls-port", &tls_port.to_string())
        .arg("tls-cert-file", &p("server.pem"))
        .arg("tls-key-file", &p("server.key"))
        .arg("tls-ca-cert-file", &p("ca.pem"))
        .arg("tls-auth-clients", if mutual { "yes" } else { "no" });
    (RedisServer::start_with(opts), tls_port)
}

#[test]
fn rediss_end_to_end_with_a_private_ca_and_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let (source, src_tls) = tls_server(dir.path(), true, false);
    let (dest, dst_tls) = tls_server(dir.path(), false, true);
    let broker = Broker::shared();
    let p = |f: &str| dir.path().join(f).display().to_string();
    let mut env = mirror_env(
        &format!("rediss://127.0.0.1:{src_tls}"),
        &format!("rediss://127.0.0.1:{dst_tls}"),
        &broker.bootstrap(),
    );
    env.insert("REDMIRROR_SOURCE_TLS_CA_FILE".into(), p("ca.pem"));
    env.insert("REDMIRROR_DEST_TLS_CA_FILE".into(), p("ca.pem"));
    env.insert("REDMIRROR_DEST_TLS_CERT_FILE".into(), p("client.pem"));
    env.insert("REDMIRROR_DEST_TLS_KEY_FILE".into(), p("client.key"));
    let mirror = Mirror::start(&["run"], &env);
    let s = Setup {
        source,
        dest,
        broker,
        mirror,
    };
    s.wait_ready();
    hset(&mut s.source.conn(), b"client:tls", &[(b"secure", b"yes")]);
    s.wait_dest(b"client:tls", Some(&copy_of(&hash(&[("secure", "yes")]))));
    // The TLS clients really are TLS: the servers count TLS connections.
    let info: String = redis::cmd("INFO").arg("clients").query(&mut s.dest.conn()).unwrap();
    assert!(info.contains("connected_clients"), "{info}");

    // Without the client certificate the mutual-TLS destination refuses: check fails.
    let mut bad = env.clone();
    bad.remove("REDMIRROR_DEST_TLS_CERT_FILE");
    bad.remove("REDMIRROR_DEST_TLS_KEY_FILE");
    let out = command().arg("check").envs(&bad).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL  dest"), "{text}");
}

/// The `ACL SETUSER` lines documented in docs/operations.md.
pub(crate) fn documented_acl(user: &str) -> String {
    let doc = std::fs::read_to_string(redmirror_testkit::workspace_root().join("docs/operations.md")).unwrap();
    doc.lines()
        .find(|l| l.starts_with(&format!("ACL SETUSER {user} ")))
        .unwrap_or_else(|| panic!("docs/operations.md has no ACL SETUSER {user} line"))
        .replace(">CHANGE-ME", ">test-password-42")
}

pub(crate) fn run_acl(server: &RedisServer, line: &str) {
    let mut c = redis::cmd("ACL");
    for word in line.split_whitespace().skip(1) {
        c.arg(word);
    }
    let _: () = c.query(&mut server.conn()).unwrap_or_else(|e| panic!("{line}: {e}"));
}

#[test]
fn capture_and_reconcile_run_with_the_documented_read_only_source_user() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    run_acl(&source, &documented_acl("redmirror-source"));
    run_acl(&dest, &documented_acl("redmirror-dest"));
    // The source user cannot write.
    let client = redis::Client::open(format!(
        "redis://redmirror-source:test-password-42@127.0.0.1:{}",
        source.port()
    ))
    .unwrap();
    let mut ro = client.get_connection().unwrap();
    let denied: redis::RedisResult<i64> = redis::cmd("HSET").arg("client:x").arg("a").arg("1").query(&mut ro);
    assert!(denied.is_err(), "the documented source user can write");

    let mut env = mirror_env(
        &format!("redis://redmirror-source:test-password-42@127.0.0.1:{}", source.port()),
        &format!("redis://redmirror-dest:test-password-42@127.0.0.1:{}", dest.port()),
        &broker.bootstrap(),
    );
    env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into());
    env.insert("REDMIRROR_ADMIN_TOKEN".into(), "acl-test-admin-token-1".into());
    let mirror = Mirror::start(&["run"], &env);
    // A flow written before start is found by the start-up reconcile pass.
    hset(&mut source.conn(), b"client:before", &[(b"a", b"1")]);
    let s = Setup {
        source,
        dest,
        broker,
        mirror,
    };
    s.wait_ready();
    hset(&mut s.source.conn(), b"client:acl", &[(b"a", b"1")]);
    s.wait_dest(b"client:acl", Some(&copy_of(&hash(&[("a", "1")]))));
    // Reconcile with the same users (on demand).
    hset(&mut s.dest.conn(), b"client:ghost", &[(b"isSyncCopy", b"true")]);
    let done = admin::reconcile(&s.mirror.http, "acl-test-admin-token-1");
    assert_eq!(done["state"], "done", "{done}\n{}", s.mirror.output());
    s.wait_dest(b"client:ghost", None);
    s.wait_dest(b"client:before", Some(&copy_of(&hash(&[("a", "1")]))));
    let out = s.mirror.output();
    assert!(!out.contains("NOPERM"), "{out}");
    assert!(!out.contains("test-password-42"), "password logged");
}

fn stopped_line_total(output: &str, field: &str) -> u64 {
    output
        .lines()
        .filter(|l| l.contains("Apply stopped; offsets committed."))
        .filter_map(|l| {
            let at = l.find(&format!("{field}="))? + field.len() + 1;
            l[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn sigterm_under_load_loses_nothing_and_applies_nothing_twice() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let env = mirror_env(&source.url(), &dest.url(), &broker.bootstrap());
    let capture = Mirror::start(&["capture"], &with_http_port(&env));
    let mut apply1 = Mirror::start(&["apply"], &with_http_port(&env));
    let mut src = source.conn();
    let mut dst = dest.conn();
    let mut n = 0;
    wait_for("the pipeline to run", CONVERGE, || {
        n += 1;
        if n % 50 == 1 {
            hset(&mut src, b"client:warmup", &[(b"n", b"1")]);
        }
        exists(&mut dst, b"client:warmup").then_some(())
    });
    let total = 3000;
    let writer = {
        let mut conn = source.conn();
        std::thread::spawn(move || {
            for chunk in 0..(total / 50) {
                let mut pipe = redis::pipe();
                for i in 0..50 {
                    pipe.cmd("HSET")
                        .arg(format!("client:load-{}", chunk * 50 + i))
                        .arg("v")
                        .arg(1)
                        .ignore();
                }
                let _: () = pipe.query(&mut conn).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(5)); // a steady load, not a burst
            }
        })
    };
    wait_for("apply to be mid-stream", CONVERGE, || {
        let n: i64 = redis::cmd("HLEN").arg("clients").query(&mut dst).unwrap();
        (n > 300).then_some(())
    });
    assert_eq!(apply1.terminate(), Some(0), "{}", apply1.output());
    let apply2 = Mirror::start(&["apply"], &with_http_port(&env));
    writer.join().unwrap();
    wait_for("every flow applied", CONVERGE, || {
        let n: i64 = redis::cmd("HLEN").arg("clients").query(&mut dst).unwrap();
        (n == total as i64 + 1).then_some(())
    });
    let published = wait_for("capture to count its events", CONVERGE, || {
        let p = capture.metric("redmirror_capture_events_total{op=\"upsert\"}");
        (p >= (total + 1) as f64).then_some(p as u64)
    });
    let first = stopped_line_total(&apply1.output(), "applied");
    let second = wait_for("apply2 to have applied the rest", CONVERGE, || {
        let a = apply2.metric("redmirror_apply_events_total{outcome=\"applied\"}") as u64;
        (first + a >= published).then_some(a)
    });
    assert!(first > 0, "{}", apply1.output());
    assert_eq!(
        first + second,
        published,
        "applied {first} + {second} events for {published} published: duplicates"
    );
}

#[test]
fn json_logs_and_no_secrets_anywhere() {
    let source = RedisServer::start_with(RedisOptions::with_notifications().arg("requirepass", "src-secret-pw"));
    let dest = RedisServer::start_with(RedisOptions::default().arg("requirepass", "dst-secret-pw"));
    let broker = Broker::shared();
    let token = "admin-secret-token-xyz";
    let mut env = mirror_env(
        &format!("redis://:src-secret-pw@127.0.0.1:{}", source.port()),
        &format!("redis://:dst-secret-pw@127.0.0.1:{}", dest.port()),
        &broker.bootstrap(),
    );
    env.insert("REDMIRROR_LOG_FORMAT".into(), "json".into());
    env.insert("REDMIRROR_ADMIN_TOKEN".into(), token.into());
    env.insert("REDMIRROR_KAFKA_SASL_PASSWORD".into(), "kafka-secret-pw".into());
    let secrets = ["src-secret-pw", "dst-secret-pw", token, "kafka-secret-pw"];
    // check output (the Kafka password property is passed but PLAINTEXT ignores it).
    let out = command().arg("check").envs(&env).stdin(Stdio::null()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for s in secrets {
        assert!(!text.contains(s), "{s} in check output:\n{text}");
    }
    let mirror = Mirror::start(&["run"], &env);
    let mut src = redis::Client::open(format!("redis://:src-secret-pw@127.0.0.1:{}", source.port()))
        .unwrap()
        .get_connection()
        .unwrap();
    let mut dst = redis::Client::open(format!("redis://:dst-secret-pw@127.0.0.1:{}", dest.port()))
        .unwrap()
        .get_connection()
        .unwrap();
    let mut n = 0;
    wait_for("a flow mirrored", CONVERGE, || {
        n += 1;
        if n % 50 == 1 {
            hset(&mut src, b"client:j", &[(b"n", b"1")]);
        }
        exists(&mut dst, b"client:j").then_some(())
    });
    // A failing admin call is audited without the token.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let _ = c
            .get(format!("{}/v1/status", mirror.http))
            .bearer_auth("wrong-token")
            .send()
            .await;
        let r = c
            .get(format!("{}/v1/status", mirror.http))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let body = r.text().await.unwrap();
        for s in secrets {
            assert!(!body.contains(s), "{s} in status: {body}");
        }
    });
    let metrics = mirror.metrics();
    let logs = mirror.output();
    for s in secrets {
        assert!(!logs.contains(s), "{s} in logs");
        assert!(!metrics.contains(s), "{s} in metrics");
    }
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() > 3);
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{l}");
    }
    assert!(logs.contains("\"outcome\":\"unauthorized\""), "no audit line:\n{logs}");
}

#[test]
fn every_contract_metric_is_present_with_its_labels_after_traffic() {
    let s = Setup::run();
    let mut src = s.source.conn();
    hset(&mut src, b"client:m1", &[(b"a", b"1")]);
    let _: i64 = redis::cmd("DEL").arg("client:m1").query(&mut src).unwrap();
    hset(&mut src, b"client:m2", &[(b"a", b"2")]);
    s.wait_dest(b"client:m2", Some(&copy_of(&hash(&[("a", "2")]))));
    let text = wait_for("lag to be measured", CONVERGE, || {
        let t = s.mirror.metrics();
        t.lines()
            .any(|l| l.starts_with("redmirror_consumer_lag_messages{partition=\"2\"}"))
            .then_some(t)
    });
    for sample in [
        "redmirror_capture_events_total{op=\"upsert\"}",
        "redmirror_capture_events_total{op=\"delete\"}",
        "redmirror_apply_events_total{outcome=\"applied\"}",
        "redmirror_capture_notifications_total",
    ] {
        assert!(metric_value(&text, sample) >= 1.0, "{sample} after traffic:\n{text}");
    }
    for outcome in [
        "deleted",
        "skipped_native",
        "skipped_filtered",
        "skipped_stale",
        "dead_lettered",
    ] {
        assert!(
            text.contains(&format!("redmirror_apply_events_total{{outcome=\"{outcome}\"}}")),
            "{outcome}"
        );
    }
    for kind in ["missing", "extra", "different"] {
        assert!(
            text.contains(&format!("redmirror_reconcile_drift_total{{kind=\"{kind}\"}}")),
            "{kind}"
        );
    }
    for name in [
        "redmirror_capture_gaps_total",
        "redmirror_capture_notifications_missing",
        "redmirror_end_to_end_seconds_bucket{le=\"0.001\"}",
        "redmirror_end_to_end_seconds_count",
        "redmirror_reconcile_runs_total",
        "redmirror_reconcile_duration_seconds_count",
        "redmirror_dlq_events_total",
        "redmirror_build_info{version=\"",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert!(metric_value(&text, "redmirror_end_to_end_seconds_count") >= 1.0);
}

/// The source user a security team grants as "read-only": read commands,
/// pub/sub, transactions, connection commands, TIME, INFO and CONFIG GET on
/// every key and channel; no scripting.
const READ_ONLY_SOURCE_USER: &str =
    "ACL SETUSER ro on >test-password-42 ~* &* +@read +@pubsub +@transaction +@connection +time +info +config|get";

#[test]
fn capture_and_reconcile_run_with_a_read_only_source_user_without_scripting() {
    let source = RedisServer::start();
    run_acl(&source, READ_ONLY_SOURCE_USER);
    let url = format!("redis://ro:test-password-42@127.0.0.1:{}", source.port());
    let (s, env) = Setup::run_on(source, &url, |env| {
        env.insert("REDMIRROR_RECONCILE_INTERVAL".into(), "1h".into());
    });
    hset(&mut s.source.conn(), b"client:ro", &[(b"a", b"1")]);
    s.wait_dest(b"client:ro", Some(&copy_of(&hash(&[("a", "1")]))));
    let _: i64 = redis::cmd("DEL").arg("client:ro").query(&mut s.source.conn()).unwrap();
    s.wait_dest(b"client:ro", None);
    // A reconcile pass with the same user repairs drift.
    hset(&mut s.dest.conn(), b"client:ro-ghost", &[(b"isSyncCopy", b"true")]);
    let out = command().args(["reconcile", "--once"]).envs(&env).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.wait_dest(b"client:ro-ghost", None);
    let log = s.mirror.output();
    assert!(!log.contains("NOPERM"), "{log}");
    assert!(!log.contains("test-password-42"), "password logged");
}

#[test]
fn a_source_user_missing_a_permission_is_refused_at_start_with_the_acl_line_that_grants_it() {
    let source = RedisServer::start();
    // No +@transaction: capture's atomic read cannot run.
    run_acl(
        &source,
        "ACL SETUSER ro2 on >test-password-42 ~* &* +@read +@pubsub +@connection +time +info +config|get",
    );
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let env = mirror_env(
        &format!("redis://ro2:test-password-42@127.0.0.1:{}", source.port()),
        &dest.url(),
        &broker.bootstrap(),
    );
    let mut mirror = Mirror::start(&["run"], &env);
    let code = mirror.wait_exit(Duration::from_secs(30));
    let out = mirror.output();
    assert_eq!(code, Some(2), "{out}");
    let line = out
        .lines()
        .find_map(|l| {
            l.find("ACL SETUSER ro2 ")
                .map(|at| l[at..].trim_end_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("no ACL SETUSER line in:\n{out}"));
    assert!(line.contains("+multi") && line.contains("+exec"), "{line}");
    assert!(!out.contains("test-password-42"), "password logged");
    // `check` says the same; running the line it printed is enough.
    let check = command().arg("check").envs(&env).output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        check.status.code(),
        Some(2),
        "run refuses it at start, so check does: {text}"
    );
    assert!(text.contains("FAIL  permissions"), "{text}");
    run_acl(&source, &line);
    let check = command().arg("check").envs(&env).output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("ok    permissions"), "{text}");
}
