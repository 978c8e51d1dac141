//! The HTTP server of every redmirror process: `/metrics`, `/healthz`,
//! `/readyz`, the admin API and the web console (`/`, `redmirror-web`).
//!
//! Admin calls answer promptly: `POST /v1/reconcile` and `POST
//! /v1/resync/{flowId}` hand the work over and answer `202` with a request
//! id ([`crate::requests`]); `GET /v1/status` lists the requests with their
//! state and result. `POST /v1/resume` ends a rewind's hold with one
//! destination write and answers `200`. No handler waits for a pass or its
//! barrier.
//!
//! Every `/v1/` request passes through one layer, [`crate::audit::gate`]:
//! the token check (404 without a configured token, 401 with a wrong one,
//! 429 for an address that sent too many wrong ones), one audit log line
//! and `redmirror_admin_requests_total{route,status}`. Routes added to
//! [`router`] are covered by it without code of their own.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;
use redmirror_api::{Accepted, DeadLetters, ErrorBody, FlowHistory, FlowView, Readiness, Redriven, Resumed, Status};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditNote;
use crate::requests::{Requests, Ticket, TooMany};
use crate::Health;

mod flows;

/// An admin action's failure: HTTP status and a message for the caller.
#[derive(Debug, Clone)]
pub struct AdminError {
    /// HTTP status code.
    pub status: u16,
    /// Message (no secrets).
    pub message: String,
}

impl AdminError {
    /// 503: the action cannot run now (for example, this process has no such role).
    pub fn unavailable(message: impl Into<String>) -> Self {
        AdminError {
            status: 503,
            message: message.into(),
        }
    }
    /// 500: the action failed.
    pub fn failed(message: impl Into<String>) -> Self {
        AdminError {
            status: 500,
            message: message.into(),
        }
    }
    /// 429: too many requests are waiting already.
    pub fn too_many(message: impl Into<String>) -> Self {
        AdminError {
            status: 429,
            message: message.into(),
        }
    }
}

/// What an admin action returns: its body (a type of [`redmirror_api`]).
pub type AdminResult<T> = BoxFuture<'static, Result<T, AdminError>>;

/// An action this process cannot answer: `503` with `why`.
pub fn unavailable<T: Send + 'static>(why: &str) -> AdminResult<T> {
    let e = AdminError::unavailable(why);
    Box::pin(async move { Err(e) })
}

/// The actions behind the admin API, implemented by the binary from its roles.
///
/// `resync` and `reconcile` must return at once: they hand the work over
/// (a task, a queue) and the work reports through `ticket`
/// ([`Ticket::running`], [`Ticket::finish`]). An `Err` means the request
/// was refused and nothing runs.
pub trait Admin: Send + Sync + 'static {
    /// `POST /v1/resync/{flowId}`: publish a fresh snapshot of the flow.
    fn resync(&self, flow_id: Bytes, ticket: Ticket) -> Result<(), AdminError>;
    /// `POST /v1/reconcile`: run a reconcile pass now.
    fn reconcile(&self, ticket: Ticket) -> Result<(), AdminError>;
    /// `GET /v1/status`: role, lease, lag, last reconcile result (the
    /// server adds the requests). Must answer within a couple of seconds.
    fn status(&self) -> AdminResult<Status>;
    /// `POST /v1/resume`: end a rewind's hold (quick: one destination write).
    fn resume(&self) -> AdminResult<Resumed>;
    /// `GET /v1/flows/{flowId}`: the flow on both sides and its verdict.
    fn flow(&self, _flow_id: Bytes) -> AdminResult<FlowView> {
        unavailable("this process cannot read flows")
    }
    /// `GET /v1/flows/{flowId}/history?limit=N`: the flow's latest events.
    fn history(&self, _flow_id: Bytes, _limit: usize) -> AdminResult<FlowHistory> {
        unavailable("this process cannot read the change topic")
    }
    /// `GET /v1/dlq?limit=N`: dead letters, newest first.
    fn dead_letters(&self, _limit: usize) -> AdminResult<DeadLetters> {
        unavailable("this process cannot read the dead-letter topic")
    }
    /// `POST /v1/dlq/redrive?flow=ID`: re-submit dead letters (all, or one flow's).
    fn redrive(&self, _flow_id: Option<Bytes>) -> AdminResult<Redriven> {
        unavailable("this process cannot re-drive dead letters")
    }
}

/// Everything the server needs.
#[derive(Clone)]
pub struct HttpState {
    /// Prometheus handle from [`crate::metrics::install`].
    pub metrics: PrometheusHandle,
    /// Readiness.
    pub health: Health,
    /// Admin actions (`None` in processes without any).
    pub admin: Option<Arc<dyn Admin>>,
    /// Bearer token; `None` turns the admin API off (404).
    pub admin_token: Option<String>,
    /// Admin requests of this process, listed by `GET /v1/status`.
    pub requests: Requests,
}

/// The admin routes with the success status each answers, as the `route`
/// and `status` labels of `redmirror_admin_requests_total` (registered at
/// start with these and with 401).
pub const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("/v1/status", "200"),
    ("/v1/reconcile", "202"),
    ("/v1/resume", "200"),
    ("/v1/resync/{flow_id}", "202"),
    ("/v1/flows/{flow_id}", "200"),
    ("/v1/flows/{flow_id}/history", "200"),
    ("/v1/dlq", "200"),
    ("/v1/dlq/redrive", "200"),
    ("/v1/series", "200"),
];

/// Builds the router: every route, then the admin gate over all of them
/// (add routes in `routes`).
pub fn router(state: HttpState) -> Router {
    let gate = crate::audit::Gate::new(state.admin_token.as_deref());
    routes(state).layer(axum::middleware::from_fn_with_state(gate, crate::audit::gate))
}

/// Every route.
fn routes(state: HttpState) -> Router {
    let admin_api = state.admin_token.is_some();
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .route("/v1/reconcile", post(reconcile))
        .route("/v1/resume", post(resume))
        .route("/v1/resync/{flow_id}", post(resync))
        .route("/v1/flows/{flow_id}", get(flows::flow))
        .route("/v1/flows/{flow_id}/history", get(flows::history))
        .route("/v1/dlq", get(flows::dead_letters))
        .route("/v1/dlq/redrive", post(flows::redrive))
        .route("/v1/series", get(series))
        .with_state(state)
        .merge(redmirror_web::router(admin_api))
        .layer(axum::middleware::from_fn(redmirror_web::admin_no_store))
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: HttpState, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn metrics_text(State(s): State<HttpState>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], s.metrics.render())
}

async fn readyz(State(s): State<HttpState>) -> Response {
    let components = s.health.components();
    let code = if s.health.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready: code == StatusCode::OK,
        components,
        reasons: s.health.reasons(),
    };
    (code, Json(body)).into_response()
}

/// Checks the bearer token again (the gate, [`crate::audit::gate`], has
/// already refused a wrong one and logged the call) and returns the admin
/// actions. `Err` is the response to send.
fn authorize(s: &HttpState, headers: &HeaderMap, _action: &str) -> Result<Arc<dyn Admin>, Box<Response>> {
    let Some(expected) = s.admin_token.as_deref() else {
        return Err(Box::new(StatusCode::NOT_FOUND.into_response()));
    };
    if !crate::audit::token_matches(headers, expected) {
        let r = (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer")],
            "unauthorized\n",
        );
        return Err(Box::new(r.into_response()));
    }
    s.admin.clone().ok_or_else(|| {
        let r = (StatusCode::SERVICE_UNAVAILABLE, "no admin actions in this process\n");
        Box::new(r.into_response())
    })
}

/// The answer to a refused or failed action (the audit line carries its message).
fn refused(_action: &str, e: AdminError) -> Response {
    let code = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let note = AuditNote {
        request: None,
        error: Some(e.message.clone()),
    };
    (code, axum::Extension(note), Json(ErrorBody { error: e.message })).into_response()
}

/// Opens a request, hands it to `start` and answers `202` with its id (or
/// the refusal, and the request is forgotten).
fn accept(
    s: &HttpState,
    action: &'static str,
    subject: Option<String>,
    start: impl FnOnce(Ticket) -> Result<(), AdminError>,
) -> Response {
    let ticket = match s.requests.open(action, subject) {
        Ok(t) => t,
        Err(TooMany) => {
            return refused(
                action,
                AdminError::too_many(format!(
                    "{} admin requests are not finished yet; see GET /v1/status",
                    crate::requests::MAX_OPEN
                )),
            )
        }
    };
    let id = ticket.id().to_string();
    match start(ticket) {
        Ok(()) => {
            let state = s.requests.state(&id).map_or("queued", |st| st.as_str());
            let body = Accepted {
                id: id.clone(),
                action: action.to_string(),
                state: state.to_string(),
                status: "/v1/status".to_string(),
            };
            let note = AuditNote {
                request: Some(id),
                error: None,
            };
            (StatusCode::ACCEPTED, axum::Extension(note), Json(body)).into_response()
        }
        Err(e) => {
            s.requests.withdraw(&id);
            refused(action, e)
        }
    }
}

async fn status(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    let admin = match authorize(&s, &headers, "status") {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match admin.status().await {
        Ok(mut body) => {
            body.requests = s.requests.entries();
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(e) => refused("status", e),
    }
}

async fn resume(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    let admin = match authorize(&s, &headers, "resume") {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match admin.resume().await {
        Ok(body) => (StatusCode::OK, Json(body)).into_response(),
        Err(e) => refused("resume", e),
    }
}

async fn reconcile(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    match authorize(&s, &headers, "reconcile") {
        Ok(admin) => accept(&s, "reconcile", None, |t| admin.reconcile(t)),
        Err(r) => *r,
    }
}

async fn resync(State(s): State<HttpState>, headers: HeaderMap, Path(flow_id): Path<String>) -> Response {
    let admin = match authorize(&s, &headers, "resync") {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match redmirror_core::text::parse_flow_id(&flow_id) {
        Ok(id) if !id.is_empty() => accept(&s, "resync", Some(flow_id), |t| admin.resync(id, t)),
        _ => (StatusCode::BAD_REQUEST, "bad flow id\n").into_response(),
    }
}

/// `GET /v1/series`: the console's chart data ([`crate::series`]).
async fn series(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    match authorize(&s, &headers, "series") {
        Ok(_) => Json(crate::series::to_json()).into_response(),
        Err(r) => *r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    struct Fake;
    impl Admin for Fake {
        fn resync(&self, flow_id: Bytes, ticket: Ticket) -> Result<(), AdminError> {
            // Finishes later, as real work does.
            tokio::spawn(async move {
                ticket.running();
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                ticket.finish(Ok(json!({ "resynced": String::from_utf8_lossy(&flow_id) })));
            });
            Ok(())
        }
        fn reconcile(&self, _ticket: Ticket) -> Result<(), AdminError> {
            Err(AdminError::unavailable("no reconciler"))
        }
        fn status(&self) -> AdminResult<Status> {
            Box::pin(async {
                Ok(Status {
                    role: "test".into(),
                    ..Status::default()
                })
            })
        }
        fn resume(&self) -> AdminResult<Resumed> {
            Box::pin(async { Ok(Resumed::default()) })
        }
    }

    /// A server under test: its base URL, health and stop token.
    struct Served {
        base: String,
        health: Health,
        stop: CancellationToken,
    }

    async fn start(token: Option<&str>) -> Served {
        let health = Health::new();
        let state = HttpState {
            metrics: crate::metrics::install(),
            health: health.clone(),
            admin: Some(Arc::new(Fake)),
            admin_token: token.map(str::to_string),
            requests: Requests::new(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, state, stop.clone()));
        Served {
            base: format!("http://{addr}"),
            health,
            stop,
        }
    }

    #[tokio::test]
    async fn admin_404_without_token_401_with_wrong_token_202_with_right_one() {
        let c = reqwest::Client::new();
        let Served { base, stop, .. } = start(None).await;
        let r = c.get(format!("{base}/v1/status")).send().await.unwrap();
        assert_eq!(r.status(), 404);
        stop.cancel();

        let token = "0123456789abcdef-token";
        let Served { base, stop, .. } = start(Some(token)).await;
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer 0123456789abcdef-tokeX"),
            Some(token),
        ] {
            let mut req = c.post(format!("{base}/v1/resync/f1"));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            assert_eq!(req.send().await.unwrap().status(), 401, "{auth:?}");
        }
        let r = c
            .post(format!("{base}/v1/resync/f1"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let accepted = r.json::<Value>().await.unwrap();
        assert_eq!(accepted["action"], "resync");
        let id = accepted["id"].as_str().unwrap().to_string();
        let status = || async {
            c.get(format!("{base}/v1/status"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        };
        let body = status().await;
        assert_eq!(body["role"], "test");
        let done = redmirror_testkit::wait_for_async(
            "the resync request to finish",
            std::time::Duration::from_secs(10),
            || async {
                let body = status().await;
                let r = body["requests"]
                    .as_array()?
                    .iter()
                    .find(|r| r["id"] == id.as_str())?
                    .clone();
                (r["state"] == "done").then_some(r)
            },
        )
        .await;
        assert_eq!(
            (&done["result"]["resynced"], &done["flow_id"]),
            (&json!("f1"), &json!("f1"))
        );
        // A refused request answers its error and is not listed.
        let r = c
            .post(format!("{base}/v1/reconcile"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(status().await["requests"].as_array().unwrap().len(), 1);
        stop.cancel();
    }

    /// `redmirror_admin_requests_total{route,status}` as /metrics says it.
    async fn admin_count(c: &reqwest::Client, base: &str, route: &str, status: u16) -> Option<f64> {
        let text = c
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let series = format!(
            "{}{{route=\"{route}\",status=\"{status}\"}} ",
            crate::metrics::ADMIN_REQUESTS
        );
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map(|v| v.trim().parse().unwrap())
    }

    #[tokio::test]
    async fn every_admin_call_is_counted_by_route_pattern_and_status_404_and_401_included() {
        let c = reqwest::Client::new();
        // Registered at start.
        let Served { base, stop, .. } = start(None).await;
        for (route, ok) in ADMIN_ROUTES {
            for status in [ok.parse().unwrap(), 401] {
                assert!(
                    admin_count(&c, &base, route, status).await.is_some(),
                    "{route} {status}"
                );
            }
        }
        // 404 without a token, on the route pattern, never the raw path.
        let before = admin_count(&c, &base, "/v1/resync/{flow_id}", 404).await.unwrap_or(0.0);
        let r = c.post(format!("{base}/v1/resync/secret-flow")).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert!(admin_count(&c, &base, "/v1/resync/{flow_id}", 404).await.unwrap() >= before + 1.0);
        let text = c
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains("secret-flow"), "a raw path became a label:\n{text}");
        stop.cancel();

        let token = "0123456789abcdef-token";
        let Served { base, stop, .. } = start(Some(token)).await;
        let route = "/v1/resync/{flow_id}";
        let before = admin_count(&c, &base, route, 401).await.unwrap();
        let r = c
            .post(format!("{base}/v1/resync/f1"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(admin_count(&c, &base, route, 401).await.unwrap() >= before + 1.0);
        let before = admin_count(&c, &base, route, 202).await.unwrap();
        let r = c
            .post(format!("{base}/v1/resync/f1"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert!(admin_count(&c, &base, route, 202).await.unwrap() >= before + 1.0);
        // An admin path no route matches: 401 without the token, counted
        // under one fixed label.
        let r = c.get(format!("{base}/v1/no-such-route/x")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(
            admin_count(&c, &base, crate::audit::UNMATCHED_ROUTE, 401)
                .await
                .unwrap()
                >= 1.0
        );
        let r = c
            .get(format!("{base}/v1/no-such-route/x"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        stop.cancel();
    }

    #[tokio::test]
    async fn repeated_wrong_tokens_block_their_address_only() {
        let token = "0123456789abcdef-token";
        let Served { base, stop, .. } = start(Some(token)).await;
        let from = |ip: &str| {
            reqwest::Client::builder()
                .local_address(ip.parse::<std::net::IpAddr>().unwrap())
                .build()
                .unwrap()
        };
        let (guesser, operator) = (from("127.0.0.1"), from("127.0.0.2"));
        for i in 0..crate::audit::MAX_FAILURES {
            let r = guesser
                .get(format!("{base}/v1/status"))
                .bearer_auth(format!("guess-{i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "try {i}");
        }
        // Blocked: every call from that address gets 429, the right token
        // too (the block answers no guess).
        for auth in ["guess-again", token] {
            let r = guesser
                .get(format!("{base}/v1/status"))
                .bearer_auth(auth)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 429);
        }
        let c = reqwest::Client::new();
        assert!(admin_count(&c, &base, "/v1/status", 429).await.unwrap() >= 2.0);
        // Another address with the right token is unaffected.
        let r = operator
            .get(format!("{base}/v1/status"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Non-admin routes are never gated.
        assert_eq!(
            guesser.get(format!("{base}/healthz")).send().await.unwrap().status(),
            200
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn the_console_is_served_and_the_series_is_admin_only_and_never_stored() {
        let c = reqwest::Client::new();
        let token = "0123456789abcdef-token";
        let Served { base, stop, .. } = start(Some(token)).await;
        let page = c.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["cache-control"], "no-store");
        assert!(page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'"));
        assert!(page.text().await.unwrap().contains("console.js"));
        let r = c.get(format!("{base}/v1/series")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        for path in ["/v1/series", "/v1/status"] {
            let r = c.get(format!("{base}{path}")).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.headers()["cache-control"], "no-store", "{path}");
            let body = r.json::<Value>().await.unwrap();
            if path == "/v1/series" {
                assert!(body["samples"].is_array(), "{body}");
            }
        }
        let metrics = c.get(format!("{base}/metrics")).send().await.unwrap();
        assert!(metrics.headers().get("cache-control").is_none());
        stop.cancel();
        // Without a token the page itself says the admin API is off.
        let Served { base, stop, .. } = start(None).await;
        let page = c.get(format!("{base}/")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("The admin API is off"), "{page}");
        stop.cancel();
    }

    #[tokio::test]
    async fn flow_and_dead_letter_routes_need_the_token_and_say_why_they_cannot_answer() {
        let c = reqwest::Client::new();
        let Served { base, stop, .. } = start(None).await;
        let r = c.get(format!("{base}/v1/flows/a")).send().await.unwrap();
        assert_eq!(r.status(), 404, "no token configured: no admin API");
        stop.cancel();

        let token = "0123456789abcdef-token";
        let Served { base, stop, .. } = start(Some(token)).await;
        let routes = [
            (reqwest::Method::GET, "/v1/flows/a"),
            (reqwest::Method::GET, "/v1/flows/a/history?limit=5"),
            (reqwest::Method::GET, "/v1/dlq"),
            (reqwest::Method::POST, "/v1/dlq/redrive?flow=a"),
        ];
        for (method, path) in &routes {
            let r = c.request(method.clone(), format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 401, "{method} {path} without the token");
            // This process has none of these actions: 503 with the reason.
            let r = c
                .request(method.clone(), format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 503, "{method} {path}");
            let body: ErrorBody = r.json().await.unwrap();
            assert!(body.error.starts_with("this process cannot"), "{}", body.error);
        }
        for bad in ["/v1/flows/base64:!!", "/v1/flows/a/history?limit=0", "/v1/dlq?limit=x"] {
            let r = c.get(format!("{base}{bad}")).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 400, "{bad}");
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn readyz_follows_components_and_metrics_has_every_name() {
        let c = reqwest::Client::new();
        let Served { base, health, stop } = start(None).await;
        assert_eq!(c.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
        assert_eq!(c.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
        health.register(crate::Component::Destination);
        assert_eq!(c.get(format!("{base}/readyz")).send().await.unwrap().status(), 503);
        health.set(crate::Component::Destination, true);
        assert_eq!(c.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
        health.set_down(crate::Component::Destination, "run this");
        let r = c.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.json::<Value>().await.unwrap()["reasons"]["destination"], "run this");
        health.set(crate::Component::Destination, true);
        let text = c
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for name in [
            crate::metrics::CAPTURE_NOTIFICATIONS,
            crate::metrics::CAPTURE_EVENTS,
            crate::metrics::CAPTURE_GAPS,
            crate::metrics::CAPTURE_NOTIFICATIONS_MISSING,
            crate::metrics::APPLY_EVENTS,
            crate::metrics::END_TO_END,
            crate::metrics::CONSUMER_LAG,
            crate::metrics::RECONCILE_RUNS,
            crate::metrics::RECONCILE_DRIFT,
            crate::metrics::RECONCILE_DURATION,
            crate::metrics::WATERMARKS_PRUNED,
            crate::metrics::DLQ_EVENTS,
            crate::metrics::BUILD_INFO,
            crate::metrics::VERIFIED_SOURCE_TIME,
            crate::metrics::ADMIN_REQUESTS,
        ] {
            assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
        }
        for outcome in crate::metrics::APPLY_OUTCOMES {
            assert!(text.contains(&format!("outcome=\"{outcome}\"")), "{outcome}");
        }
        stop.cancel();
    }
}
