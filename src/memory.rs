//! How the daemon keeps its resident memory at what it holds, not at the
//! peak of its last big job: glibc allocator settings made once at start,
//! and handing freed pages back after large transactions.
//!
//! Why settings at all: glibc raises its mmap threshold on its own each
//! time a large block is freed (up to 32 MiB), and its trim threshold with
//! it. After one big job (a 100,000-element nft script, a `BanMany` of
//! 100,000 strings), later big buffers come from the arenas instead of
//! their own mappings, and the small blocks left between them keep whole
//! pages resident that `malloc_trim` cannot hand back. Fixed thresholds
//! stop that drift: big buffers are mapped and unmapped, and an arena
//! shrinks once more than [`TRIM_THRESHOLD_BYTES`] is free at its top.
//!
//! This module only talks to the allocator; it must not decide when a job
//! is large (the core, the reconciler and the fleet session do).

/// Blocks this large are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD_BYTES: i32 = 256 * 1024;
/// Free memory beyond this at the top of an arena goes back to the kernel.
const TRIM_THRESHOLD_BYTES: i32 = 1024 * 1024;

/// Fixes glibc's thresholds. Call once, before the daemon's threads start.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc's malloc parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
    }
}

/// Returns freed heap pages to the kernel (glibc's `malloc_trim`, which
/// walks every arena's free lists).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
