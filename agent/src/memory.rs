//! Memory: the allocator settings for a process whose work comes in bursts freed at once, and
//! giving freed pages back after a pass.

use std::time::Instant;

/// Sets glibc's allocator up for a process whose work comes in bursts of tens of MiB that are
/// freed at once (a reconcile pass at 20,000 ports, a monitor update of as many rows). Call
/// before any thread is started.
///
/// - One arena for the whole process instead of one per thread that allocates. The work that
///   allocates is one reconcile pass at a time, but the runtime moves it between worker
///   threads, and with an arena per thread several grew to the pass's peak: during the scale
///   benchmark's peer events the RSS reached 277 MiB with them, 190 MiB with one.
/// - Blocks of 1 MiB and more always get their own mapping, given back when freed. By default
///   glibc raises that threshold to the largest block freed so far (up to 32 MiB), and the
///   threshold for giving back the top of the heap with it: after the first large message the
///   agent's big buffers (message texts, a status answer) stayed in the heap for good.
#[allow(unsafe_code)]
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes no pointers; called before other threads exist.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Keeps glibc from holding on to memory the agent has freed.
///
/// At 20,000 tunnel ports a reconcile pass builds and drops some 65 MiB (observed state,
/// desired state, diff) over a heap of about 40 MiB that stays. glibc keeps freed pages, so
/// without help the RSS sits at the high-water mark of the passes (230 MiB at the end of the
/// scale benchmark, with a live heap of 40 MiB).
pub struct MemoryReleaser {
    /// Resident bytes right after the last trim.
    resident_after_trim: u64,
}

impl Default for MemoryReleaser {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryReleaser {
    /// Nothing trimmed yet.
    pub fn new() -> Self {
        MemoryReleaser { resident_after_trim: 0 }
    }

    /// After a pass: returns freed pages to the kernel if the process grew since the last time
    /// by more than an eighth (and 4 MiB). Trimming a heap of this size takes 10-60 ms, so
    /// passes that allocated little skip it.
    pub fn after_pass(&mut self) {
        let Some(now) = resident_bytes() else { return };
        if now <= self.resident_after_trim + (self.resident_after_trim / 8).max(4 << 20) {
            return;
        }
        let started = Instant::now();
        trim();
        self.resident_after_trim = resident_bytes().unwrap_or(now);
        tracing::debug!(
            took = ?started.elapsed(),
            before_mib = now >> 20,
            after_mib = self.resident_after_trim >> 20,
            "freed memory returned to the kernel"
        );
    }
}

/// VmRSS of this process.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim();
    kib.parse::<u64>().ok().map(|k| k << 10)
}

#[allow(unsafe_code)]
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only returns free pages of the heap to the
    // kernel; glibc makes it safe to call from any thread at any time.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
