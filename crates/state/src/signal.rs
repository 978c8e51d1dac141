//! Counters on the destination that one process bumps and another
//! watches: capture gaps (`redmirror:capture:gaps`, with the slots they
//! cover in `redmirror:capture:gaps:scope`) and pass requests from
//! `reconcile --once`, so a reconciler in another process sees them.

use std::time::Duration;

use fred::prelude::*;

use redmirror_redis::Script;

/// A counter on the destination: bumped by [`GapSignal::signal`], watched
/// with [`GapSignal::current`].
#[derive(Clone, Debug)]
pub struct GapSignal {
    client: Client,
    key: String,
}

impl GapSignal {
    /// The signal on `client` (the destination) under `key`.
    pub fn new(client: Client, key: String) -> Self {
        GapSignal { client, key }
    }

    /// Reports a gap (retried a few times; a lost signal is covered by the
    /// next scheduled pass).
    pub async fn signal(&self) {
        for _ in 0..5 {
            match self.client.incr::<i64, _>(&self.key).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %redmirror_redis::describe(&e), "Cannot signal a capture gap; retrying.");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Reports a gap of `scope`: its slots (or `*`, the whole keyspace)
    /// become fields of the hash beside the counter ([`GapSignal::scope_key`]), then the
    /// counter moves, so a watcher that sees it move finds them there.
    pub async fn signal_scope(&self, scope: &GapScope) {
        let members: Vec<String> = match scope {
            GapScope::Whole => vec![WHOLE.to_string()],
            GapScope::Slots(slots) if slots.is_empty() => Vec::new(),
            GapScope::Slots(slots) => slots.iter().map(u16::to_string).collect(),
        };
        if !members.is_empty() {
            let fields: Vec<(String, &str)> = members.into_iter().map(|m| (m, "1")).collect();
            for _ in 0..5 {
                match self.client.hset::<i64, _, _>(self.scope_key(), fields.clone()).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %redmirror_redis::describe(&e), "Cannot record a capture gap's slots; retrying.");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
        self.signal().await;
    }

    /// Takes (and clears) what the gaps signalled since the last take
    /// cover. Nothing recorded (a signal from an older process, or a set
    /// that could not be read) is the whole keyspace: a pass too wide is
    /// safe, one too narrow is not.
    pub async fn take_scope(&self) -> GapScope {
        let key = self.scope_key();
        let taken = Script::new(TAKE)
            .call(&self.client, &[key.as_bytes()], Vec::new())
            .await
            .map(|v| {
                // HGETALL's field/value pairs: the fields are the members.
                redmirror_redis::value::pairs(v)
                    .into_iter()
                    .map(|(f, _)| String::from_utf8_lossy(&f).into_owned())
                    .collect::<Vec<_>>()
            });
        match taken {
            Ok(members) if !members.is_empty() && !members.iter().any(|m| m == WHOLE) => {
                let mut slots: Vec<u16> = members.iter().filter_map(|m| m.parse().ok()).collect();
                slots.sort_unstable();
                GapScope::Slots(slots)
            }
            _ => GapScope::Whole,
        }
    }

    /// The hash whose fields are the slots the gaps since the last take
    /// cover (`*`: all). Plain `HSET`, and a script to take it, so the
    /// destination user needs no command beyond those apply already uses.
    pub fn scope_key(&self) -> String {
        format!("{}:scope", self.key)
    }

    /// Current counter value.
    pub async fn current(&self) -> Option<i64> {
        self.client
            .get::<Option<i64>, _>(&self.key)
            .await
            .ok()
            .map(|v| v.unwrap_or(0))
    }
}

/// The field of the scope hash that stands for the whole keyspace.
const WHOLE: &str = "*";

/// Takes the scope hash. KEYS: the hash. Reply: its `HGETALL` before it
/// was deleted (field, value, ...).
const TAKE: &str = include_str!("gap_take.lua");

/// What a capture gap covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GapScope {
    /// Every flow (a standalone source, a start, notifications lost).
    Whole,
    /// The flows in these hash slots of a cluster source.
    Slots(Vec<u16>),
}
