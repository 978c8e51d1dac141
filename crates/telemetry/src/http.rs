//! The HTTP server of every redmirror process: `/metrics`, `/healthz`,
//! `/readyz` and the admin API.

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
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
}

/// What an admin action returns.
pub type AdminResult = BoxFuture<'static, Result<Value, AdminError>>;

/// The actions behind the admin API, implemented by the binary from its roles.
pub trait Admin: Send + Sync + 'static {
    /// `POST /v1/resync/{flowId}`: publish a fresh snapshot of the flow.
    fn resync(&self, flow_id: Bytes) -> AdminResult;
    /// `POST /v1/reconcile`: run a reconcile pass now.
    fn reconcile(&self) -> AdminResult;
    /// `GET /v1/status`: role, lease, lag, last reconcile result.
    fn status(&self) -> AdminResult;
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
}

/// Builds the router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .route("/v1/reconcile", post(reconcile))
        .route("/v1/resync/{flow_id}", post(resync))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: HttpState, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router(state))
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

/// Checks the bearer token. `Err` is the response to send.
fn authorize(s: &HttpState, headers: &HeaderMap, action: &str) -> Result<Arc<dyn Admin>, Box<Response>> {
    let Some(expected) = s.admin_token.as_deref() else {
        return Err(Box::new(StatusCode::NOT_FOUND.into_response()));
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok = given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()));
    if !ok {
        tracing::warn!(target: "redmirror::audit", action, outcome = "unauthorized", "Admin call refused.");
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

async fn run_action(action: &str, fut: AdminResult) -> Response {
    match fut.await {
        Ok(v) => {
            tracing::info!(target: "redmirror::audit", action, outcome = "ok", "Admin action.");
            (StatusCode::OK, Json(v)).into_response()
        }
        Err(e) => {
            tracing::warn!(target: "redmirror::audit", action, outcome = "failed", error = %e.message, "Admin action.");
            let code = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, Json(json!({ "error": e.message }))).into_response()
        }
    }
}

async fn status(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    match authorize(&s, &headers, "status") {
        Ok(admin) => run_action("status", admin.status()).await,
        Err(r) => *r,
    }
}

async fn reconcile(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    match authorize(&s, &headers, "reconcile") {
        Ok(admin) => run_action("reconcile", admin.reconcile()).await,
        Err(r) => *r,
    }
}

async fn resync(State(s): State<HttpState>, headers: HeaderMap, Path(flow_id): Path<String>) -> Response {
    let admin = match authorize(&s, &headers, "resync") {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match redmirror_core::text::parse_flow_id(&flow_id) {
        Ok(id) if !id.is_empty() => run_action("resync", admin.resync(id)).await,
        _ => (StatusCode::BAD_REQUEST, "bad flow id\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;
    impl Admin for Fake {
        fn resync(&self, flow_id: Bytes) -> AdminResult {
            Box::pin(async move { Ok(json!({ "resynced": String::from_utf8_lossy(&flow_id) })) })
        }
        fn reconcile(&self) -> AdminResult {
            Box::pin(async { Err(AdminError::unavailable("no reconciler")) })
        }
        fn status(&self) -> AdminResult {
            Box::pin(async { Ok(json!({ "role": "test" })) })
        }
    }

    async fn start(token: Option<&str>) -> (String, Health, CancellationToken) {
        let health = Health::new();
        let state = HttpState {
            metrics: crate::metrics::install(),
            health: health.clone(),
            admin: Some(Arc::new(Fake)),
            admin_token: token.map(str::to_string),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, state, stop.clone()));
        (format!("http://{addr}"), health, stop)
    }

    #[tokio::test]
    async fn admin_404_without_token_401_with_wrong_token_200_with_right_one() {
        let c = reqwest::Client::new();
        let (base, _, stop) = start(None).await;
        let r = c.get(format!("{base}/v1/status")).send().await.unwrap();
        assert_eq!(r.status(), 404);
        stop.cancel();

        let token = "0123456789abcdef-token";
        let (base, _, stop) = start(Some(token)).await;
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
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["resynced"], "f1");
        let r = c
            .get(format!("{base}/v1/status"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["role"], "test");
        let r = c
            .post(format!("{base}/v1/reconcile"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        stop.cancel();
    }

    #[tokio::test]
    async fn readyz_follows_components_and_metrics_has_every_name() {
        let c = reqwest::Client::new();
        let (base, health, stop) = start(None).await;
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
            crate::metrics::DLQ_EVENTS,
            crate::metrics::BUILD_INFO,
        ] {
            assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
        }
        for outcome in crate::metrics::APPLY_OUTCOMES {
            assert!(text.contains(&format!("outcome=\"{outcome}\"")), "{outcome}");
        }
        stop.cancel();
    }
}
