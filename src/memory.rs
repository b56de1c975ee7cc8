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
//! It also reads what this process has resident, split into its own
//! (anonymous) pages and file pages, for reports.
//!
//! This module only talks to the allocator and reads /proc; it must not
//! decide when a job is large (the core, the reconciler and the fleet
//! session do).

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

/// This process's resident memory, in KiB: its own (anonymous) pages, and
/// file pages (mapped files, the program itself), which the kernel can
/// drop and read back as needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resident {
    pub anonymous_kib: u64,
    pub file_kib: u64,
}

/// What [`Resident`] is now, from /proc/self/status; `None` where that
/// file or its fields are missing.
pub fn resident_now() -> Option<Resident> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(Resident {
        anonymous_kib: status_kib(&status, "RssAnon:")?,
        file_kib: status_kib(&status, "RssFile:")?,
    })
}

/// All of this process's resident memory (`VmRSS`), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_kib(&status, "VmRSS:")?.checked_mul(1024)
}

/// A `name: N kB` field of /proc/self/status, in KiB.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_read_and_grows_with_a_touched_buffer() {
        let before = resident_now().expect("/proc/self/status has RssAnon and RssFile");
        let touched = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = resident_now().expect("still readable");
        assert!(
            after.anonymous_kib >= before.anonymous_kib + 32 * 1024,
            "{before:?} -> {after:?}"
        );
        assert!(after.file_kib > 0, "the program itself is file pages");
        drop(touched);
    }
}
