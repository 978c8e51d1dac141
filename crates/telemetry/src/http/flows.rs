//! Handlers of the flow API and the dead letters (SPEC section 10):
//! `GET /v1/flows/{flowId}`, `GET /v1/flows/{flowId}/history?limit=N`,
//! `GET /v1/dlq?limit=N`, `POST /v1/dlq/redrive?flow=ID`. Same token rules
//! as every admin route; each hands the work to the process's [`Admin`].

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Serialize;

use super::{authorize, refused, Admin, AdminError, AdminResult, HttpState};

/// Events a history answer lists when `limit` is not given.
pub const DEFAULT_HISTORY_LIMIT: usize = 20;
/// Dead letters listed when `limit` is not given.
pub const DEFAULT_DLQ_LIMIT: usize = 100;
/// The largest `limit` taken (larger ones are lowered to it).
pub const MAX_LIMIT: usize = 1000;

#[derive(serde::Deserialize)]
pub(super) struct Limit {
    limit: Option<String>,
}

#[derive(serde::Deserialize)]
pub(super) struct Flow {
    flow: Option<String>,
}

/// A request refused before anything runs: `400` with this reason.
struct BadRequest(&'static str);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(redmirror_api::ErrorBody {
                error: self.0.to_string(),
            }),
        )
            .into_response()
    }
}

/// `limit` as given: absent → `default`, not a positive number → `Err`.
fn limit(q: &Limit, default: usize) -> Result<usize, BadRequest> {
    match q.limit.as_deref() {
        None | Some("") => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n.min(MAX_LIMIT)),
            _ => Err(BadRequest("limit must be a positive whole number")),
        },
    }
}

fn flow_id(text: &str) -> Result<Bytes, BadRequest> {
    match redmirror_core::text::parse_flow_id(text) {
        Ok(id) if !id.is_empty() => Ok(id),
        _ => Err(BadRequest("bad flow id (text, or base64: followed by base64)")),
    }
}

/// Runs one read-only action and answers `200` with its body.
async fn answer<T: Serialize>(
    s: &HttpState,
    headers: &HeaderMap,
    action: &'static str,
    call: impl FnOnce(&dyn Admin) -> Result<AdminResult<T>, BadRequest>,
) -> Response {
    let admin = match authorize(s, headers, action) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let fut = match call(admin.as_ref()) {
        Ok(f) => f,
        Err(bad) => return bad.into_response(),
    };
    let result: Result<T, AdminError> = fut.await;
    match result {
        Ok(body) => {
            tracing::info!(target: "redmirror::audit", action, outcome = "ok", "Admin action.");
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(e) => refused(action, e),
    }
}

pub(super) async fn flow(State(s): State<HttpState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(&s, &headers, "flow", |a| Ok(a.flow(flow_id(&id)?))).await
}

pub(super) async fn history(
    State(s): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Limit>,
) -> Response {
    answer(&s, &headers, "flow_history", |a| {
        Ok(a.history(flow_id(&id)?, limit(&q, DEFAULT_HISTORY_LIMIT)?))
    })
    .await
}

pub(super) async fn dead_letters(State(s): State<HttpState>, headers: HeaderMap, Query(q): Query<Limit>) -> Response {
    answer(&s, &headers, "dlq", |a| {
        Ok(a.dead_letters(limit(&q, DEFAULT_DLQ_LIMIT)?))
    })
    .await
}

pub(super) async fn redrive(State(s): State<HttpState>, headers: HeaderMap, Query(q): Query<Flow>) -> Response {
    answer(&s, &headers, "dlq_redrive", |a| {
        let flow = match q.flow.as_deref() {
            None => None,
            Some(f) => Some(flow_id(f)?),
        };
        Ok(a.redrive(flow))
    })
    .await
}
