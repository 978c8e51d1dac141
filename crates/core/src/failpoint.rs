//! Failures the end-to-end tests inject into a debug build, for paths no
//! outside action can reach (a role's stream ending, a write task
//! panicking, a Kafka consumer that stops receiving):
//! `FAILPOINTS=name,name`. A release build has none: [`hit`] is always
//! false there.

/// A place where a debug build can be told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// Apply's first Kafka consumer stops receiving (its stall watch must
    /// replace it).
    ApplyConsumerStuck,
    /// Apply's Kafka message stream ends (the role must fail, not idle).
    ApplyStreamEnd,
    /// An apply write task panics (its batch must be read again).
    ApplyWritePanic,
    /// Apply dies after a write reached the destination and before its
    /// offsets were stored (the replay must be harmless).
    ApplyCrashBeforeStore,
}

impl Failpoint {
    /// Every failpoint.
    pub const ALL: [Failpoint; 4] = [
        Failpoint::ApplyConsumerStuck,
        Failpoint::ApplyStreamEnd,
        Failpoint::ApplyWritePanic,
        Failpoint::ApplyCrashBeforeStore,
    ];

    /// Its name in `FAILPOINTS`.
    pub const fn name(self) -> &'static str {
        match self {
            Failpoint::ApplyConsumerStuck => "apply-consumer-stuck",
            Failpoint::ApplyStreamEnd => "apply-stream-end",
            Failpoint::ApplyWritePanic => "apply-write-panic",
            Failpoint::ApplyCrashBeforeStore => "apply-crash-before-store",
        }
    }
}

impl std::fmt::Display for Failpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `point` is switched on for this process.
pub fn hit(point: Failpoint) -> bool {
    #[cfg(debug_assertions)]
    {
        static ON: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        ON.get_or_init(|| {
            std::env::var("FAILPOINTS")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .iter()
        .any(|n| n == point.name())
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = point;
        false
    }
}
