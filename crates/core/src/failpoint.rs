//! Failures the end-to-end tests inject into a debug build, for paths no
//! outside action can reach (a role's stream ending, a write task
//! panicking, a Kafka consumer that stops receiving): `FAILPOINTS=name,name`. A release build has none:
//! [`hit`] is always false there.

/// Whether failpoint `name` is switched on for this process.
pub fn hit(name: &str) -> bool {
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
        .any(|n| n == name)
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = name;
        false
    }
}
