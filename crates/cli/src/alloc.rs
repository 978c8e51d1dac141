//! Memory: at most two glibc malloc arenas.
//!
//! glibc gives every thread that allocates its own arena (up to 8 per core),
//! and an arena keeps freed memory it cannot return. redmirror runs tokio
//! workers plus librdkafka's threads (one per broker, main, background), so
//! with the default most of a busy process's resident memory is arenas
//! holding freed blocks. Two arenas keep apply's peak RSS on a large backlog
//! well inside the 64 MiB budget at the same speed (`scripts/bench` reports
//! the peak of every process). An operator's `MALLOC_ARENA_MAX` still wins.

/// Limits glibc to two malloc arenas unless `MALLOC_ARENA_MAX` is set. Call
/// first thing in `main`, before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a glibc tuning parameter; it is called
        // from `main` before any other thread exists, takes no pointers and
        // its failure (return 0) just leaves the default in place.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
