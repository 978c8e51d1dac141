//! The web console (SPEC sections 5 and 10): one page served at `GET /`,
//! for the on-call and for staging users.
//!
//! The page, its style sheet and its script are compiled into the binary
//! (`include_str!`): nothing is built at run time and nothing is loaded from
//! any other host. The script reads what an operator's own tools read:
//! `/readyz` and `/metrics` (open), and the admin API (`/v1/status`,
//! `/v1/series`, `/v1/flows/…`, `/v1/dlq`, `POST /v1/resync/…`,
//! `POST /v1/dlq/redrive`) with the admin token, which it asks for once and
//! keeps in the tab's `sessionStorage` (never in a URL or a cookie).
//!
//! # Layout
//! - [`router`]: the console's routes (`/`, `/console.js`, `/console.css`,
//!   `/favicon.png`), each answer with [`SECURITY_HEADERS`].
//! - [`admin_no_store`]: middleware for the whole HTTP router that marks
//!   every admin (`/v1/`) answer `Cache-Control: no-store`.
//! - `assets/`: the page (`index.html`), `console.css` and `console.js`
//!   (plain modern JavaScript, no framework, no build step).

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// The script (the page has no inline script).
pub const CONSOLE_JS: &str = include_str!("../assets/console.js");
/// The style sheet (the page has no inline style).
pub const CONSOLE_CSS: &str = include_str!("../assets/console.css");
/// The tab icon (served so the browser's automatic request finds it).
pub const FAVICON_PNG: &[u8] = include_bytes!("../assets/favicon.png");

/// The content security policy of every console answer: everything from
/// this origin only, no inline script or style, no framing, no plugins,
/// forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Headers on every console answer (the page and its assets).
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("cache-control", "no-store"),
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// What the page says, without any script, when the process has no admin
/// token: every `/v1/` route answers 404, so the console has nothing to
/// sign in to.
pub const ADMIN_API_OFF: &str = "The admin API is off on this process: no REDMIRROR_ADMIN_TOKEN is configured, \
     so every /v1/ route answers 404. Set REDMIRROR_ADMIN_TOKEN and restart it to use the console; \
     /readyz and /metrics stay open meanwhile.";

/// The page for a process with the admin API on (`admin_api`) or off.
pub fn index_html(admin_api: bool) -> String {
    let marker = if admin_api {
        String::new()
    } else {
        format!("<p id=\"admin-off\" class=\"message\" data-admin=\"off\">{ADMIN_API_OFF}</p>")
    };
    INDEX_HTML.replace("<!--admin-api-->", &marker)
}

/// The console's routes, to merge into the process's HTTP router;
/// `admin_api` is whether the process has an admin token.
pub fn router<S: Clone + Send + Sync + 'static>(admin_api: bool) -> Router<S> {
    let page = Bytes::from(index_html(admin_api));
    Router::new()
        .route("/", get(move || async move { asset("text/html; charset=utf-8", page) }))
        .route(
            "/console.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    Bytes::from_static(CONSOLE_JS.as_bytes()),
                )
            }),
        )
        .route(
            "/console.css",
            get(|| async { asset("text/css; charset=utf-8", Bytes::from_static(CONSOLE_CSS.as_bytes())) }),
        )
        .route(
            "/favicon.png",
            get(|| async { asset("image/png", Bytes::from_static(FAVICON_PNG)) }),
        )
}

fn asset(content_type: &'static str, body: Bytes) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in SECURITY_HEADERS {
        h.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    r
}

/// Middleware (`axum::middleware::from_fn`) for the whole HTTP router:
/// every answer under `/v1/` (the admin API) gets `Cache-Control: no-store`,
/// so no browser or proxy keeps flow data or status.
pub async fn admin_no_store(request: Request, next: Next) -> Response {
    let admin = request.uri().path().starts_with("/v1/");
    let mut response = next.run(request).await;
    if admin {
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    fn app() -> Router {
        router(true)
            .route("/v1/status", get(|| async { "{}" }))
            .route("/metrics", get(|| async { "" }))
            .layer(axum::middleware::from_fn(admin_no_store))
    }

    async fn get_path(path: &str) -> Response {
        app()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn page_and_assets_carry_the_security_headers() {
        for (path, kind) in [
            ("/", "text/html"),
            ("/console.js", "text/javascript"),
            ("/console.css", "text/css"),
            ("/favicon.png", "image/png"),
        ] {
            let r = get_path(path).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let h = r.headers();
            assert!(h["content-type"].to_str().unwrap().starts_with(kind), "{path}");
            for (name, value) in SECURITY_HEADERS {
                assert_eq!(h[*name], *value, "{path}: {name}");
            }
            let csp = h["content-security-policy"].to_str().unwrap();
            for part in ["default-src 'self'", "frame-ancestors 'none'", "script-src 'self'"] {
                assert!(csp.contains(part), "{csp}");
            }
            assert!(!csp.contains("unsafe"), "{csp}");
        }
    }

    #[tokio::test]
    async fn admin_answers_are_not_stored_and_others_are_left_alone() {
        assert_eq!(get_path("/v1/status").await.headers()["cache-control"], "no-store");
        assert!(get_path("/metrics").await.headers().get("cache-control").is_none());
        assert_eq!(get_path("/nothing").await.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_names_no_other_host() {
        let lower = INDEX_HTML.to_lowercase();
        let scripts: Vec<&str> = lower.split("<script").skip(1).collect();
        assert_eq!(scripts.len(), 1, "one script element");
        assert!(
            scripts[0].trim_start().starts_with("src=\"console.js\""),
            "{}",
            scripts[0]
        );
        assert!(scripts[0].contains("></script>"), "the script element is empty");
        assert!(!lower.contains("<style") && !lower.contains(" style="), "inline style");
        let handler = lower.split(" on").skip(1).find(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(handler.is_none(), "inline event handler: on{handler:?}");
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("console.js", CONSOLE_JS),
            ("console.css", CONSOLE_CSS),
        ] {
            for scheme in [
                concat!("http", ":/", "/"),
                concat!("https", ":/", "/"),
                "@import",
                "url(",
            ] {
                assert!(!text.contains(scheme), "{name} names {scheme}");
            }
        }
    }

    #[test]
    fn without_an_admin_token_the_page_says_the_admin_api_is_off() {
        assert!(!index_html(true).contains("admin-off"));
        assert!(!index_html(true).contains("<!--"));
        let off = index_html(false);
        assert!(
            off.contains("id=\"admin-off\"") && off.contains("The admin API is off"),
            "{off}"
        );
        assert!(CONSOLE_JS.contains("admin-off"), "the script reads the marker");
    }

    #[test]
    fn the_token_lives_in_session_storage_only() {
        assert!(CONSOLE_JS.contains("sessionStorage"));
        for forbidden in ["localStorage", "document.cookie", "?token=", "&token="] {
            assert!(!CONSOLE_JS.contains(forbidden), "console.js uses {forbidden}");
        }
        assert!(
            CONSOLE_JS.contains("\"Bearer \""),
            "the token goes in the Authorization header"
        );
    }
}
