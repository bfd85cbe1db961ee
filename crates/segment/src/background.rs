//! Threads for background work (HNSW and payload-block graph builds).
//!
//! A graph build is CPU-bound for seconds to minutes. On a machine with few cores, build
//! threads at the same priority as request handling take most of the CPU away from
//! searches, writes and replica recovery for the whole build (measured on 2 cores: a peer
//! recovering 50 WAL operations took 12-25 s while both of its sources were building
//! 1536-d graphs, and 1-6 s with no build running). Build threads therefore run at a
//! lower scheduling priority ([`BACKGROUND_NICE`]): they still use every idle cycle, but
//! yield the CPU to request threads whenever those are runnable.
//!
//! No build thread holds a lock that a request waits for (graphs are built without the
//! store lock and installed by the caller), so the lower priority cannot invert.

/// Nice value of background build threads (request threads keep the process's own, 0 by
/// default). Linux weighs a nice-10 thread at about 1/9 of a nice-0 one.
pub const BACKGROUND_NICE: i32 = 10;

/// Lower the calling thread's CPU priority to [`BACKGROUND_NICE`] (Linux keeps a nice
/// value per thread). A thread already at a lower priority keeps it. Elsewhere: no-op.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and get/setpriority read or change only the calling thread's own
    // scheduling attributes; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS as _, tid);
        if *libc::__errno_location() == 0 && now < BACKGROUND_NICE {
            libc::setpriority(libc::PRIO_PROCESS as _, tid, BACKGROUND_NICE);
        }
    }
}

/// The calling thread's nice value (Linux; 0 elsewhere).
pub fn current_nice() -> i32 {
    #[cfg(target_os = "linux")]
    // SAFETY: as in `lower_priority`.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::getpriority(libc::PRIO_PROCESS as _, tid)
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// A builder for a pool of `threads` background threads (0: one per core).
pub fn pool_builder(threads: usize) -> rayon::ThreadPoolBuilder {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("index-{i}"))
        .start_handler(|_| lower_priority())
}

/// Make rayon's global pool (where graph builds without their own thread count run) a
/// background pool. Call once at start-up, before any build; later calls fail.
pub fn init_global_pool() -> Result<(), rayon::ThreadPoolBuildError> {
    pool_builder(0).build_global()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_threads_run_at_background_priority_and_callers_keep_theirs() {
        let before = current_nice();
        let pool = pool_builder(2).build().unwrap();
        let inside: Vec<i32> = pool.broadcast(|_| current_nice());
        assert_eq!(inside.len(), 2);
        #[cfg(target_os = "linux")]
        assert!(
            inside.iter().all(|&n| n >= BACKGROUND_NICE),
            "pool threads at {inside:?}"
        );
        assert_eq!(current_nice(), before, "the caller's priority is unchanged");
    }
}
