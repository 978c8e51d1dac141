//! Reading a running process over its HTTP listener: `GET /readyz`,
//! `GET /metrics` and, with the admin token, `GET /v1/status`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::prom::Metrics;
use crate::Error;

/// How long one HTTP call may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running process's HTTP listener.
#[derive(Debug, Clone)]
pub struct Process {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

/// What `GET /v1/status` gave.
#[derive(Debug, Clone)]
pub enum AdminStatus {
    /// The body.
    Ok(Box<redmirror_api::Status>),
    /// No token to send (REDMIRROR_ADMIN_TOKEN is unset here).
    NoToken,
    /// 404: the process has no admin API (no token configured there).
    Off,
    /// 503: the process is starting (or has no such action); its message.
    Unavailable(String),
    /// Any other failure, said for people.
    Failed(String),
}

/// `GET /readyz`: ready, and each component with the reason it is down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// 200 or not.
    pub ready: bool,
    /// Component → up.
    pub components: BTreeMap<String, bool>,
    /// Component → why it is down (for those that say).
    pub reasons: BTreeMap<String, String>,
}

/// One look at a process: every call made at the same time.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// `/readyz`, or why it did not answer.
    pub readiness: Result<Readiness, String>,
    /// `/metrics`, or why it did not answer.
    pub metrics: Result<Metrics, String>,
    /// `/v1/status`.
    pub status: AdminStatus,
}

impl Scrape {
    /// Why the process cannot be read at all (neither `/readyz` nor
    /// `/metrics` answered), if so.
    pub fn unreachable(&self) -> Option<&str> {
        match (&self.readiness, &self.metrics) {
            (Err(e), Err(_)) => Some(e),
            _ => None,
        }
    }
}

impl Process {
    /// The process at `url` (`http://host:port`, or `host:port`), called
    /// with `token` as the bearer token of the admin API. A URL that is not
    /// one is a usage error naming `--url`.
    pub fn new(url: &str, token: Option<String>) -> Result<Process, Error> {
        let bad = |why: &str| Error::Usage(format!("--url {url:?}: {why}"));
        let with_scheme = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        let parsed = url::Url::parse(&with_scheme).map_err(|e| bad(&format!("not a URL ({e})")))?;
        match parsed.scheme() {
            "http" => {}
            "https" => {
                return Err(bad(
                    "the listener (REDMIRROR_HTTP_ADDR) speaks plain HTTP; use http://HOST:PORT",
                ))
            }
            other => return Err(bad(&format!("scheme {other}: use http://HOST:PORT"))),
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host; use http://HOST:PORT (the process's REDMIRROR_HTTP_ADDR)"));
        }
        let client = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| Error::Usage(format!("cannot make an HTTP client: {e}")))?;
        Ok(Process {
            base: with_scheme.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            client,
        })
    }

    /// The base URL, as given (with `http://` added when it had no scheme).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Reads `/readyz`, `/metrics` and `/v1/status` at the same time. A
    /// 401 from `/v1/status` is a configuration error naming
    /// `REDMIRROR_ADMIN_TOKEN`.
    pub async fn scrape(&self) -> Result<Scrape, Error> {
        let (readiness, metrics, status) = tokio::join!(self.readiness(), self.metrics(), self.status());
        Ok(Scrape {
            readiness,
            metrics,
            status: status?,
        })
    }

    /// `GET /metrics`, parsed.
    pub async fn metrics(&self) -> Result<Metrics, String> {
        let (code, body) = self.get("/metrics", false).await?;
        if code != 200 {
            return Err(format!("{}/metrics answered {code}", self.base));
        }
        Metrics::parse(&body).map_err(|e| format!("{}/metrics: {e}", self.base))
    }

    async fn readiness(&self) -> Result<Readiness, String> {
        let (code, body) = self.get("/readyz", false).await?;
        let v: Value = serde_json::from_str(&body).map_err(|_| {
            format!(
                "{}/readyz answered {code} with something that is not redmirror's JSON",
                self.base
            )
        })?;
        let map = |key: &str| v.get(key).and_then(Value::as_object).cloned().unwrap_or_default();
        Ok(Readiness {
            ready: code == 200,
            components: map("components")
                .into_iter()
                .map(|(k, v)| (k, v.as_bool().unwrap_or(false)))
                .collect(),
            reasons: map("reasons")
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
                .collect(),
        })
    }

    async fn status(&self) -> Result<AdminStatus, Error> {
        if self.token.is_none() {
            return Ok(AdminStatus::NoToken);
        }
        let (code, body) = match self.get("/v1/status", true).await {
            Ok(r) => r,
            Err(e) => return Ok(AdminStatus::Failed(e)),
        };
        let message = || {
            serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| body.trim().to_string())
        };
        Ok(match code {
            200 => match serde_json::from_str::<redmirror_api::Status>(&body) {
                Ok(v) => AdminStatus::Ok(Box::new(v)),
                Err(e) => AdminStatus::Failed(format!("{}/v1/status: not a status body ({e})", self.base)),
            },
            401 => {
                return Err(Error::Usage(format!(
                    "REDMIRROR_ADMIN_TOKEN is not the admin token of the process at {} (GET /v1/status answered 401); \
                     set it to that process's REDMIRROR_ADMIN_TOKEN",
                    self.base
                )))
            }
            404 => AdminStatus::Off,
            503 => AdminStatus::Unavailable(message()),
            _ => AdminStatus::Failed(format!("{}/v1/status answered {code}: {}", self.base, message())),
        })
    }

    /// A GET: status code and body, or why there is none.
    async fn get(&self, path: &str, admin: bool) -> Result<(u16, String), String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.client.get(&url);
        if let (true, Some(t)) = (admin, &self.token) {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.map_err(|e| unreachable(&self.base, &e))?;
        let code = r.status().as_u16();
        let body = r
            .text()
            .await
            .map_err(|e| format!("{url}: the answer broke off ({e})"))?;
        Ok((code, body))
    }
}

/// Why a request got no answer, in a few words ("connection refused",
/// "no answer within 5s"), with the URL.
fn unreachable(base: &str, e: &reqwest::Error) -> String {
    let why = if e.is_timeout() {
        format!("no answer within {}s", HTTP_TIMEOUT.as_secs())
    } else {
        let mut source: Option<&dyn std::error::Error> = Some(e);
        let mut innermost = e.to_string();
        while let Some(s) = source {
            innermost = s.to_string();
            source = s.source();
        }
        innermost.to_lowercase()
    };
    format!("{base}: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_http_with_or_without_the_scheme_and_refuse_the_rest() {
        assert_eq!(
            Process::new("127.0.0.1:9464", None).unwrap().url(),
            "http://127.0.0.1:9464"
        );
        assert_eq!(
            Process::new("http://host:9464/", Some(String::new())).unwrap().url(),
            "http://host:9464"
        );
        for bad in ["https://host:9464", "ftp://host", "http://", "::"] {
            let e = Process::new(bad, None).unwrap_err();
            assert!(e.is_usage() && e.to_string().starts_with("--url"), "{bad}: {e}");
        }
    }
}
