//! How the process uses glibc's malloc. The daemon holds one large, long-lived cluster state
//! and makes small changes to it; with the defaults, glibc kept tens of megabytes of freed
//! memory (bench/control at 10,000 services: 130 MB resident for 46 MB in use), in per-thread
//! arenas and behind a trim threshold that grows with every large buffer freed.

/// Two arenas (the runtime's threads share them), and fixed mmap and trim thresholds of
/// 4 MiB: the buffers a pass makes for a 10,000-service table (hundreds of kilobytes) are
/// reused from the heap rather than mapped and faulted in per pass (a 256 KiB threshold
/// cost a tenth of the agent's CPU in page faults), and a freed top of the heap beyond 4 MiB
/// is returned. Call before any thread starts.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
    }
}

/// Returns the free pages inside the heap to the system (after a full pass, which allocates
/// and drops a whole plan).
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
