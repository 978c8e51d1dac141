//! Memory: at most two glibc malloc arenas.
//!
//! glibc gives every thread that allocates its own arena (up to 8 per core),
//! and an arena keeps freed memory it cannot return. redmirror runs tokio
//! workers plus librdkafka's threads (one per broker, main, background), so
//! with the default, peak RSS of `apply` on a 100,000-event backlog was
//! 87 MiB; with two arenas it was 53 MiB at the same speed (measured with
//! `MALLOC_ARENA_MAX=2`, which this call makes the default). An operator's
//! `MALLOC_ARENA_MAX` still wins.

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
