//! Admin requests: accepted at once, run in the background, reported by
//! `GET /v1/status`.
//!
//! `POST /v1/reconcile` and `POST /v1/resync/{flowId}` answer `202` with a
//! request id as soon as the work is handed over; the work (a pass that may
//! wait on its barrier, a read and a publish) reports through its
//! [`Ticket`], and the status lists each request with its state
//! (`queued`, `running`, `done`, `failed`) and result. Nothing on the HTTP
//! listener waits for the work itself.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use redmirror_api::RequestEntry;
use serde_json::Value;

/// Most requests not finished at a time; more are refused (`429`).
pub const MAX_OPEN: usize = 64;
/// Finished requests kept for the status (the oldest go first).
pub const KEEP_FINISHED: usize = 32;

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    /// Accepted, waiting for its turn (a pass waits for the one running).
    Queued,
    /// Being worked on.
    Running,
    /// Finished; the result is there.
    Done,
    /// Finished without a result; the error is there.
    Failed,
}

impl RequestState {
    /// The name shown in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Queued => "queued",
            RequestState::Running => "running",
            RequestState::Done => "done",
            RequestState::Failed => "failed",
        }
    }

    fn finished(self) -> bool {
        matches!(self, RequestState::Done | RequestState::Failed)
    }
}

#[derive(Debug)]
struct Record {
    id: String,
    action: &'static str,
    subject: Option<String>,
    state: RequestState,
    requested_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    outcome: Option<Result<Value, String>>,
}

impl Record {
    fn entry(&self) -> RequestEntry {
        let (result, error) = match &self.outcome {
            Some(Ok(result)) => (Some(result.clone()), None),
            Some(Err(error)) => (None, Some(error.clone())),
            None => (None, None),
        };
        RequestEntry {
            id: self.id.clone(),
            action: self.action.to_string(),
            state: self.state.as_str().to_string(),
            requested_at: self.requested_at.clone(),
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            flow_id: self.subject.clone(),
            result,
            error,
        }
    }
}

#[derive(Debug)]
struct Inner {
    /// Tells this process's ids from an earlier run's.
    prefix: String,
    next: u64,
    /// Oldest first.
    list: VecDeque<Record>,
}

/// The requests of this process (cheap to clone: one shared list).
#[derive(Debug, Clone)]
pub struct Requests {
    inner: Arc<Mutex<Inner>>,
}

impl Default for Requests {
    fn default() -> Self {
        Self::new()
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Why a request was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooMany;

impl Requests {
    /// No requests yet.
    pub fn new() -> Self {
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        Requests {
            inner: Arc::new(Mutex::new(Inner {
                prefix: format!("{secs:x}"),
                next: 1,
                list: VecDeque::new(),
            })),
        }
    }

    /// Accepts a request (`queued`), unless [`MAX_OPEN`] are not finished.
    /// `subject` is the flow id of a resync.
    pub fn open(&self, action: &'static str, subject: Option<String>) -> Result<Ticket, TooMany> {
        let mut g = self.inner.lock().expect("requests lock");
        if g.list.iter().filter(|r| !r.state.finished()).count() >= MAX_OPEN {
            return Err(TooMany);
        }
        let id = format!("{}-{}", g.prefix, g.next);
        g.next += 1;
        g.list.push_back(Record {
            id: id.clone(),
            action,
            subject,
            state: RequestState::Queued,
            requested_at: now(),
            started_at: None,
            finished_at: None,
            outcome: None,
        });
        Ok(Ticket {
            id,
            requests: self.clone(),
        })
    }

    /// Forgets a request that was refused before it started.
    pub fn withdraw(&self, id: &str) {
        self.inner.lock().expect("requests lock").list.retain(|r| r.id != id);
    }

    /// The state of request `id`, if it is still listed.
    pub fn state(&self, id: &str) -> Option<RequestState> {
        let g = self.inner.lock().expect("requests lock");
        g.list.iter().find(|r| r.id == id).map(|r| r.state)
    }

    /// Every listed request, newest first, as the status shows them.
    pub fn entries(&self) -> Vec<RequestEntry> {
        let g = self.inner.lock().expect("requests lock");
        g.list.iter().rev().map(Record::entry).collect()
    }

    /// [`Requests::entries`] as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.entries()).unwrap_or_default()
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Record)) {
        let mut g = self.inner.lock().expect("requests lock");
        if let Some(r) = g.list.iter_mut().find(|r| r.id == id && !r.state.finished()) {
            f(r);
        }
        let finished = g.list.iter().filter(|r| r.state.finished()).count();
        let mut excess = finished.saturating_sub(KEEP_FINISHED);
        g.list.retain(|r| {
            let drop = excess > 0 && r.state.finished();
            excess -= usize::from(drop);
            !drop
        });
    }
}

/// One accepted request, held by the work that answers it.
#[derive(Debug, Clone)]
pub struct Ticket {
    id: String,
    requests: Requests,
}

impl Ticket {
    /// The request id (`202` body, status entry).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The work has started.
    pub fn running(&self) {
        self.requests.update(&self.id, |r| {
            r.state = RequestState::Running;
            r.started_at = Some(now());
        });
    }

    /// The work has finished (the first outcome counts).
    pub fn finish(&self, outcome: Result<Value, String>) {
        self.requests.update(&self.id, |r| {
            r.state = if outcome.is_ok() {
                RequestState::Done
            } else {
                RequestState::Failed
            };
            r.started_at.get_or_insert_with(now);
            r.finished_at = Some(now());
            r.outcome = Some(outcome);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_request_goes_from_queued_to_running_to_done_once() {
        let reqs = Requests::new();
        let t = reqs.open("reconcile", None).unwrap();
        assert_eq!(reqs.state(t.id()), Some(RequestState::Queued));
        t.running();
        assert_eq!(reqs.state(t.id()), Some(RequestState::Running));
        t.finish(Ok(json!({ "repaired": 3 })));
        t.finish(Err("late".into()));
        let list = reqs.to_json();
        assert_eq!(list[0]["id"], t.id());
        assert_eq!(list[0]["state"], "done");
        assert_eq!(list[0]["result"]["repaired"], 3);
        assert!(list[0]["error"].is_null());
        let f = reqs.open("resync", Some("f1".into())).unwrap();
        f.finish(Err("source down".into()));
        let list = reqs.to_json();
        assert_eq!(list[0]["id"], f.id(), "newest first");
        assert_eq!(
            (&list[0]["state"], &list[0]["flow_id"]),
            (&json!("failed"), &json!("f1"))
        );
        assert_eq!(list[0]["error"], "source down");
        reqs.withdraw(f.id());
        assert_eq!(reqs.state(f.id()), None);
    }

    #[test]
    fn open_requests_are_bounded_and_finished_ones_trimmed() {
        let reqs = Requests::new();
        let open: Vec<Ticket> = (0..MAX_OPEN).map(|_| reqs.open("resync", None).unwrap()).collect();
        assert_eq!(reqs.open("reconcile", None).unwrap_err(), TooMany);
        for t in &open {
            t.finish(Ok(json!({})));
        }
        assert_eq!(reqs.to_json().as_array().unwrap().len(), KEEP_FINISHED);
        let last = open.last().unwrap().id();
        assert_eq!(reqs.to_json()[0]["id"], last, "the newest are kept");
        assert!(reqs.open("reconcile", None).is_ok());
    }
}
