//! The HTTP server of every redmirror process: `/metrics`, `/healthz`,
//! `/readyz` and the admin API.
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
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditNote;
use crate::requests::{Requests, Ticket, TooMany};
use crate::Health;

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

/// What an admin action returns.
pub type AdminResult = BoxFuture<'static, Result<Value, AdminError>>;

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
    fn status(&self) -> AdminResult;
    /// `POST /v1/resume`: end a rewind's hold (quick: one destination write).
    fn resume(&self) -> AdminResult;
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
];

/// Builds the router: every route, then the admin gate over all of them
/// (add routes in `routes`).
pub fn router(state: HttpState) -> Router {
    let gate = crate::audit::Gate::new(state.admin_token.as_deref());
    routes(state).layer(axum::middleware::from_fn_with_state(gate, crate::audit::gate))
}

/// Every route.
fn routes(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .route("/v1/reconcile", post(reconcile))
        .route("/v1/resume", post(resume))
        .route("/v1/resync/{flow_id}", post(resync))
        .with_state(state)
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
    let mut body = json!({ "ready": code == StatusCode::OK, "components": components });
    let reasons = s.health.reasons();
    if !reasons.is_empty() {
        body["reasons"] = json!(reasons);
    }
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
    (code, axum::Extension(note), Json(json!({ "error": e.message }))).into_response()
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
            let body = json!({ "id": id, "action": action, "state": state, "status": "/v1/status" });
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
            if let Some(map) = body.as_object_mut() {
                map.insert("requests".into(), s.requests.to_json());
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        fn status(&self) -> AdminResult {
            Box::pin(async { Ok(json!({ "role": "test" })) })
        }
        fn resume(&self) -> AdminResult {
            Box::pin(async { Ok(json!({ "resumed": false })) })
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
    async fn readyz_follows_components_and_metrics_has_every_name() {
        let c = reqwest::Client::new();
        let Served { base, health, stop } = start(None).await;
        assert_eq!(c.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
        assert_eq!(c.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
        health.register("destination");
        assert_eq!(c.get(format!("{base}/readyz")).send().await.unwrap().status(), 503);
        health.set("destination", true);
        assert_eq!(c.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
        health.set_down("destination", "run this");
        let r = c.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.json::<Value>().await.unwrap()["reasons"]["destination"], "run this");
        health.set("destination", true);
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
