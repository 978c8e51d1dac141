//! The web console in a real browser: headless Chromium driven through
//! chromedriver against `redmirror run` on real servers. Fails (never
//! skips) when Chromium or chromedriver is missing. Saves the screenshots
//! of `docs/operations.md` (`docs/console-overview.png`,
//! `docs/console-flow.png`).

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use redmirror_testkit::browser::Browser;
use serde_json::{json, Value};

use crate::harness::*;

const TOKEN: &str = "console-test-token-0123456789";
/// Deadline of each step in the browser.
const STEP: Duration = Duration::from_secs(30);

/// The overview's applied count and lag, as numbers (null until shown).
const OVERVIEW_NUMBERS: &str = r##"
    const a = document.getElementById("applied-total");
    const rows = [...document.querySelectorAll("#lag-table tbody tr")];
    if (!a || !rows.length) return null;
    return { applied: Number(a.dataset.value),
             total: Number(document.getElementById("lag-total").dataset.value),
             lag: Object.fromEntries(rows.map(r => [r.dataset.partition, Number(r.cells[1].dataset.value)])) };"##;

/// `POST /session/{id}/se/log` (chromedriver): the browser console's
/// entries since the last call.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }
    fn method_and_body(&self, _: &url::Url) -> (::http::Method, Option<String>) {
        (::http::Method::POST, Some(json!({ "type": "browser" }).to_string()))
    }
}

async fn open(browser: &Browser) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": browser.chromium(),
            "args": browser.chrome_args(),
        },
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    let Value::Object(caps) = caps else { unreachable!() };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&browser.webdriver_url())
        .await
        .unwrap_or_else(|e| panic!("no WebDriver session: {e}\n{}", browser.driver_log()))
}

/// Runs `script` in the page until it returns something other than null.
async fn until(c: &Client, what: &str, script: &str) -> Value {
    let script = script.to_string();
    redmirror_testkit::wait_for_async(what, STEP, || {
        let script = script.clone();
        async move {
            let v = c.execute(&script, vec![]).await.ok()?;
            (!v.is_null()).then_some(v)
        }
    })
    .await
}

/// Clicks the element `css` once it is there. The page re-renders as it
/// refreshes, so a click that lands on a replaced element is tried again.
async fn click(c: &Client, css: &str) {
    let what = format!("a click on {css}");
    redmirror_testkit::wait_for_async(&what, STEP, || async {
        c.find(Locator::Css(css)).await.ok()?.click().await.ok()
    })
    .await
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs").join(name);
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

async fn metrics(http: &str) -> redmirror_testkit::process::Metrics {
    let text = reqwest::get(format!("{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    redmirror_testkit::process::Metrics::parse(&text).unwrap()
}

async fn sign_in(c: &Client, token: &str) {
    let input = c
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css("#token"))
        .await
        .expect("the token field");
    input.clear().await.unwrap();
    // By keyboard: the token, then Enter submits the form.
    input.send_keys(&format!("{token}\u{e007}")).await.unwrap();
}

#[test]
fn the_console_signs_in_shows_the_mirror_resyncs_a_flow_and_redrives_a_dead_letter() {
    let browser = Browser::start();
    let s = Setup::run_with(|env| {
        env.insert("REDMIRROR_ADMIN_TOKEN".into(), TOKEN.into());
    });
    let http = s.mirror.http.clone();
    let mut src = s.source.conn();
    let mut dst = s.dest.conn();
    for i in 0..5 {
        let key = format!("client:web{i}");
        hset(
            &mut src,
            key.as_bytes(),
            &[(b"name", format!("flow {i}").as_bytes()), (b"steps", b"3")],
        );
    }
    let w0 = hash(&[("name", "flow 0"), ("steps", "3")]);
    s.wait_dest(b"client:web0", Some(&copy_of(&w0)));
    // A dead letter: staging's key of the wrong type.
    let _: () = redis::cmd("SET")
        .arg("client:poison")
        .arg("a string")
        .query(&mut dst)
        .unwrap();
    hset(&mut src, b"client:poison", &[(b"a", b"1")]);
    wait_for("the dead letter", CONVERGE, || {
        (s.mirror.metric("redmirror_dlq_events_total") >= 1.0).then_some(())
    });
    for i in 1..5 {
        let key = format!("client:web{i}");
        wait_for("the copies", CONVERGE, || {
            exists(&mut dst, key.as_bytes()).then_some(())
        });
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = open(&browser).await;
        c.goto(&format!("{http}/")).await.unwrap();

        // Sign in: the overview shows the applied count and the lag of /metrics.
        sign_in(&c, TOKEN).await;
        // The page refreshes every few seconds: compare until one of its
        // refreshes and a scrape agree (nothing changes meanwhile).
        let last = std::cell::RefCell::new(String::new());
        let agreed = redmirror_testkit::wait_for_async("the overview to agree with /metrics", STEP, || {
            let (c, http, last) = (&c, &http, &last);
            async move {
                let shown = c.execute(OVERVIEW_NUMBERS, vec![]).await.ok()?;
                let m = metrics(http).await;
                let applied = m.get("redmirror_apply_events_total", &[("outcome", "applied")]);
                let lag = m.by_label("redmirror_consumer_lag_messages", "partition");
                let total: f64 = lag.values().sum();
                *last.borrow_mut() = format!("page {shown}, /metrics applied {applied:?} lag {lag:?}");
                let same = shown["applied"].as_f64() == applied
                    && shown["total"].as_f64() == Some(total)
                    && shown["lag"].as_object().map(|o| o.len()) == Some(lag.len())
                    && lag.iter().all(|(p, v)| shown["lag"][p].as_f64() == Some(*v));
                (!lag.is_empty() && same).then_some(applied)
            }
        })
        .await;
        assert!(agreed.unwrap_or(0.0) >= 6.0, "{}", last.borrow());
        let verified = until(&c, "verified as of", r##"const e = document.getElementById("verified-as-of"); return e && e.textContent;"##).await;
        assert!(verified.as_str().unwrap().contains("not yet proven") || verified.as_str().unwrap().contains("as of"));
        // The chart draws the process's own series, one point per 5 s
        // with something applied: changes keep coming until two are drawn.
        let (mut n, mut next) = (0u32, std::time::Instant::now());
        redmirror_testkit::wait_for_async("two points of the latency chart", STEP, || {
            if std::time::Instant::now() >= next {
                n += 1;
                next += Duration::from_millis(200);
                hset(&mut src, b"client:web4", &[(b"steps", n.to_string().as_bytes())]);
            }
            let c = &c;
            async move {
                let dots = c
                    .execute(r##"return document.querySelectorAll("#latency-chart circle.p50").length;"##, vec![])
                    .await
                    .ok()?;
                (dots.as_u64()? >= 2).then_some(())
            }
        })
        .await;
        c.set_window_size(1280, 1250).await.unwrap();
        until(&c, "the taller window", "return window.innerHeight > 1000 ? true : null;").await;
        screenshot(&c, "console-overview.png").await;
        // On a phone-sized screen nothing is wider than the screen.
        c.set_window_size(390, 844).await.unwrap();
        let widths = until(
            &c,
            "the page laid out for a phone",
            r##"return window.innerWidth <= 400 ? [document.documentElement.scrollWidth, window.innerWidth] : null;"##,
        )
        .await;
        assert!(widths[0].as_u64() <= widths[1].as_u64(), "page wider than a phone: {widths}");
        c.set_window_size(1280, 1250).await.unwrap();

        // A copy edited on staging is `different`, the field marked.
        hset(&mut dst, b"client:web1", &[(b"name", b"edited on staging")]);
        c.goto(&format!("{http}/#/flow/web1")).await.unwrap();
        let flow = until(
            &c,
            "the flow page to say different",
            r##"const v = document.getElementById("verdict");
               if (!v || v.dataset.verdict !== "different") return null;
               return { marked: [...document.querySelectorAll("#sides tr[data-differs=true]")].map(r => r.dataset.field),
                        words: document.getElementById("verdict-words").textContent };"##,
        )
        .await;
        assert_eq!(flow["marked"], json!(["name"]), "{flow}");
        assert!(flow["words"].as_str().unwrap().starts_with("Different"), "{flow}");
        screenshot(&c, "console-flow.png").await;

        // Re-sync from the page: the verdict turns to in_step.
        click(&c, "#resync").await;
        let after = until(
            &c,
            "the re-sync to bring the flow in step",
            r##"const v = document.getElementById("verdict"), r = document.getElementById("resync-result");
               return v && v.dataset.verdict === "in_step" && r && r.textContent ? r.textContent : null;"##,
        )
        .await;
        assert!(after.as_str().unwrap().contains("different → in step"), "{after}");
        let w1 = hash(&[("name", "flow 1"), ("steps", "3")]);
        s.wait_dest(b"client:web1", Some(&copy_of(&w1)));

        // Fix the dead letter's cause, re-drive it from the page.
        let _: i64 = redis::cmd("DEL").arg("client:poison").query(&mut dst).unwrap();
        c.goto(&format!("{http}/#/dlq")).await.unwrap();
        click(&c, r##"button.redrive[data-flow="poison"]"##).await;
        let done = until(
            &c,
            "the re-drive to be confirmed",
            r##"const r = document.getElementById("dlq-result");
               return r && r.dataset.flow === "poison" ? r.textContent : null;"##,
        )
        .await;
        assert!(done.as_str().unwrap().starts_with("Re-drove"), "{done}");
        s.wait_dest(b"client:poison", Some(&copy_of(&hash(&[("a", "1")]))));

        // Nothing went wrong in the page.
        let log = c.issue_cmd(BrowserLog).await.expect("the browser log");
        let errors: Vec<&Value> = log
            .as_array()
            .map(|a| a.iter().filter(|e| e["level"] == "SEVERE").collect())
            .unwrap_or_default();
        assert!(errors.is_empty(), "the browser console logged errors: {errors:?}");

        // A wrong token gets the plain message and the form again.
        click(&c, "#signout").await;
        sign_in(&c, "not-the-token").await;
        let message = until(
            &c,
            "the wrong-token message",
            r##"const m = document.getElementById("signin-message");
               return m && m.textContent.startsWith("Wrong token") ? m.textContent : null;"##,
        )
        .await;
        assert!(message.as_str().unwrap().contains("401"), "{message}");
        let stored = c
            .execute("return sessionStorage.length + document.cookie.length + location.href.length;", vec![])
            .await
            .unwrap();
        let url_len = format!("{http}/#/dlq").len() as u64;
        assert_eq!(stored.as_u64(), Some(url_len), "no token kept after sign-out, none in a cookie or the URL");

        // A process without an admin token: the page says the API is off.
        let mut env = mirror_env(&s.source.url(), &s.dest.url(), &s.broker.bootstrap());
        env.insert("REDMIRROR_TOPIC".into(), s.mirror.topic.clone());
        let off = Mirror::start(&["apply"], &env);
        wait_for("the second process's listener", CONVERGE, || (off.readyz() != 0).then_some(()));
        c.goto(&format!("{}/", off.http)).await.unwrap();
        let said = until(
            &c,
            "the admin-off message",
            r##"const p = document.getElementById("admin-off");
               return p && document.getElementById("signin").hidden ? p.textContent : null;"##,
        )
        .await;
        assert!(said.as_str().unwrap().starts_with("The admin API is off"), "{said}");
        c.close().await.unwrap();
    });
}
