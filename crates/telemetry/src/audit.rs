//! The admin API's gate and audit trail (SPEC section 9): every request
//! under `/v1/` passes through [`gate`], one layer over the whole router, so
//! a route added later is covered without code of its own.
//!
//! The gate answers 404 when no admin token is configured and 401 for a
//! wrong or missing token (nothing is done), logs every admin call once
//! (target `redmirror::audit`: route, flow id if any, HTTP status, outcome,
//! client address; never the token) and counts it in
//! `redmirror_admin_requests_total{route,status}`, whose `route` is the
//! route pattern (`/v1/resync/{flow_id}`), never the raw path.
//!
//! Repeated wrong tokens from one address are slowed down: after
//! [`MAX_FAILURES`] wrong tries within [`FAILURE_WINDOW`], every admin call
//! from that address answers 429 for [`BLOCK_FOR`], without the token being
//! checked (so the block is not an oracle for guesses). Other addresses are
//! unaffected.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

/// Wrong tokens from one address within [`FAILURE_WINDOW`] before it is blocked.
pub const MAX_FAILURES: u32 = 10;
/// The window in which wrong tokens are counted.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long a blocked address gets 429.
pub const BLOCK_FOR: Duration = Duration::from_secs(60);
/// The `route` label of an admin path that matches no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// Addresses remembered at most (a flood of addresses forgets the oldest
/// failures first, never blocks a good one).
const MAX_TRACKED: usize = 10_000;

/// What a handler tells the audit line about its answer (a response
/// extension): the request id it opened, the error it answered.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    /// The admin request id (`POST /v1/reconcile`, `POST /v1/resync/...`).
    pub request: Option<String>,
    /// The error message sent to the caller (no secrets).
    pub error: Option<String>,
}

/// Wrong-token counts per client address.
#[derive(Debug, Default)]
pub struct Failures {
    by_addr: HashMap<IpAddr, Tries>,
}

#[derive(Debug, Clone, Copy)]
struct Tries {
    since: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

impl Failures {
    /// True while `addr` is blocked.
    pub fn blocked(&mut self, addr: IpAddr, now: Instant) -> bool {
        match self.by_addr.get(&addr) {
            Some(Tries {
                blocked_until: Some(until),
                ..
            }) if *until > now => true,
            Some(Tries {
                blocked_until: Some(_), ..
            }) => {
                self.by_addr.remove(&addr);
                false
            }
            _ => false,
        }
    }

    /// Counts a wrong token from `addr`; true when it blocks the address.
    pub fn failed(&mut self, addr: IpAddr, now: Instant) -> bool {
        if self.by_addr.len() >= MAX_TRACKED && !self.by_addr.contains_key(&addr) {
            self.by_addr
                .retain(|_, t| t.blocked_until.is_some_and(|u| u > now) || t.since + FAILURE_WINDOW > now);
            if self.by_addr.len() >= MAX_TRACKED {
                return false;
            }
        }
        let t = self.by_addr.entry(addr).or_insert(Tries {
            since: now,
            count: 0,
            blocked_until: None,
        });
        if t.since + FAILURE_WINDOW <= now {
            *t = Tries {
                since: now,
                count: 0,
                blocked_until: None,
            };
        }
        t.count += 1;
        if t.count >= MAX_FAILURES && t.blocked_until.is_none() {
            t.blocked_until = Some(now + BLOCK_FOR);
            return true;
        }
        false
    }

    /// The right token from `addr`: its wrong tries are forgotten.
    pub fn succeeded(&mut self, addr: IpAddr) {
        self.by_addr.remove(&addr);
    }
}

/// The gate's state: the token and the wrong tries.
#[derive(Clone)]
pub struct Gate {
    token: Option<Arc<str>>,
    failures: Arc<Mutex<Failures>>,
}

impl Gate {
    /// A gate for `token` (`None`: the admin API is off, every call 404).
    pub fn new(token: Option<&str>) -> Self {
        Gate {
            token: token.map(Arc::from),
            failures: Arc::default(),
        }
    }
}

/// True when `headers` carry `Bearer <expected>` (compared in constant time).
pub fn token_matches(headers: &axum::http::HeaderMap, expected: &str) -> bool {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// The layer every request passes through; see the module docs.
pub async fn gate(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/v1/") {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_string(), |m| m.as_str().to_string());
    let client = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let flow_id = flow_id(&mut parts).await;
    let method = parts.method.clone();
    let now = Instant::now();

    let answer = match (&gate.token, client) {
        (None, _) => Err((StatusCode::NOT_FOUND.into_response(), "admin_api_off")),
        (Some(_), Some(c)) if gate.failures.lock().expect("failures lock").blocked(c.ip(), now) => {
            let r = (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", BLOCK_FOR.as_secs().to_string())],
                "too many wrong tokens from this address; try again later\n",
            );
            Err((r.into_response(), "blocked"))
        }
        (Some(expected), _) if !token_matches(&parts.headers, expected) => {
            if let Some(c) = client {
                if gate.failures.lock().expect("failures lock").failed(c.ip(), now) {
                    tracing::warn!(
                        target: "redmirror::audit",
                        client = %c.ip(),
                        failures = MAX_FAILURES,
                        block_seconds = BLOCK_FOR.as_secs(),
                        "Too many wrong admin tokens from one address; its admin calls get 429 for a while."
                    );
                }
            }
            let r = (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Bearer")],
                "unauthorized\n",
            );
            Err((r.into_response(), "unauthorized"))
        }
        (Some(_), _) => {
            if let Some(c) = client {
                gate.failures.lock().expect("failures lock").succeeded(c.ip());
            }
            Ok(())
        }
    };
    let (response, outcome) = match answer {
        Err((r, outcome)) => (r, outcome),
        Ok(()) => {
            let r = next.run(Request::from_parts(parts, body)).await;
            let outcome = match r.status().as_u16() {
                200..=299 => "ok",
                400..=499 => "refused",
                _ => "failed",
            };
            (r, outcome)
        }
    };
    let status = response.status().as_u16();
    metrics::counter!(crate::metrics::ADMIN_REQUESTS, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    let note = response.extensions().get::<AuditNote>().cloned().unwrap_or_default();
    let client = client.map(|c| c.to_string());
    macro_rules! audit {
        ($level:ident, $msg:literal) => {
            tracing::$level!(
                target: "redmirror::audit",
                %method,
                route = %route,
                flow_id = flow_id.as_deref(),
                status,
                outcome,
                client = client.as_deref(),
                request = note.request.as_deref(),
                error = note.error.as_deref(),
                $msg
            )
        };
    }
    if response.status().is_success() {
        audit!(info, "Admin call.");
    } else {
        audit!(warn, "Admin call refused.");
    }
    response
}

/// The flow id of an admin call: the `flow_id` (or `flowId`) path
/// parameter, else the `flow` query parameter.
async fn flow_id(parts: &mut axum::http::request::Parts) -> Option<String> {
    if let Ok(params) = RawPathParams::from_request_parts(parts, &()).await {
        if let Some((_, v)) = params.iter().find(|(k, _)| matches!(*k, "flow_id" | "flowId")) {
            return Some(v.to_string());
        }
    }
    let query = axum::extract::Query::<HashMap<String, String>>::try_from_uri(&parts.uri).ok()?;
    query.0.get("flow").cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_address_is_blocked_after_the_failures_and_free_again_after_the_block() {
        let mut f = Failures::default();
        let (bad, good) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = Instant::now();
        for i in 1..MAX_FAILURES {
            assert!(!f.failed(bad, now), "try {i}");
            assert!(!f.blocked(bad, now));
        }
        assert!(f.failed(bad, now));
        assert!(f.blocked(bad, now));
        assert!(!f.blocked(good, now));
        assert!(f.blocked(bad, now + BLOCK_FOR - Duration::from_millis(1)));
        assert!(!f.blocked(bad, now + BLOCK_FOR));
        // Failures spread wider than the window never block.
        let mut f = Failures::default();
        for i in 0..(3 * MAX_FAILURES) {
            let at = now + FAILURE_WINDOW / MAX_FAILURES * (i + 1) * 2;
            assert!(!f.failed(bad, at), "try {i}");
        }
    }
}
