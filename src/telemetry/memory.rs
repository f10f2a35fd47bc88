//! Giving freed heap back to the system. glibc's malloc keeps what a thread freed in that
//! thread's arena (up to 8 arenas per core) instead of returning it, so a process whose threads
//! take turns allocating short-lived buffers (a sync's pages, a closed socket's state) holds
//! several times its live heap. `malloc_trim(0)` returns every whole free page of every arena
//! (`madvise(MADV_DONTNEED)`, glibc ≥ 2.8); it is debounced here to one call per delay.
//!
//! Measured: 1,000 WebSocket subscribers left the gateway 30% above its baseline a minute after
//! they closed until a trim; a 100,000-contact FULL sync's heap peaks at 43 MB (heaptrack) while
//! its RSS reached 112 MiB without trims (README, Operations).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What a process is for, as far as its allocator is concerned ([`configure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Footprint {
    /// A server (`serve`, `demo`): many threads answering requests; glibc's arena per thread
    /// kept, since fewer arenas cost the uncached read path 10-15% at concurrency 32.
    Server,
    /// A one-shot batch (`ghl-gateway sync`, the bench's sync worker): throughput of GHL's rate
    /// limit, not of the allocator, so two arenas, which bound the memory a long sync holds.
    Batch,
}

/// Bytes from which an allocation is its own `mmap`, returned to the system when freed. glibc
/// starts at this value but raises it (up to 32 MiB) after such a block is freed, after which a
/// sync's page bodies and a large answer's buffers stay in the arenas; fixing it keeps them out.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// Arenas of a [`Footprint::Batch`] process.
pub const BATCH_ARENAS: usize = 2;

/// Sets the allocator up for `footprint`; call it before any thread starts (before the Tokio
/// runtime). The environment's `MALLOC_MMAP_THRESHOLD_` and `MALLOC_ARENA_MAX` win when set.
///
/// Measured (a 100,000-contact FULL sync against the simulator with GHL's limits, peak RSS of
/// the sync's process, 2026-11-30): 112 MiB as glibc sets itself up; 98-106 MiB with the trims
/// after each page ([`trim_after`]); 98.1 MiB with the fixed threshold as well; 84.7 MiB with two
/// arenas as well ([`Footprint::Batch`]). The fixed threshold left the uncached dashboard page's
/// throughput unchanged (A/B at concurrency 32, within noise).
pub fn configure(footprint: Footprint) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name: &str, param: libc::c_int, value: usize| {
            if std::env::var_os(name).is_none() {
                // SAFETY: mallopt only changes the allocator's parameters; called before threads.
                unsafe { libc::mallopt(param, value as libc::c_int) };
            }
        };
        set(
            "MALLOC_MMAP_THRESHOLD_",
            libc::M_MMAP_THRESHOLD,
            MMAP_THRESHOLD,
        );
        if footprint == Footprint::Batch {
            set("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, BATCH_ARENAS);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = footprint;
}

/// The process's one debounced trim.
static TRIM: Debounced = Debounced::new();

/// Schedules one `malloc_trim(0)` on a blocking thread `delay` from now, unless one is already
/// scheduled (then that one covers this call). Needs a Tokio runtime; a no-op without one, and
/// off glibc.
pub fn trim_after(delay: Duration) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    TRIM.schedule(delay, || {
        // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
        unsafe { libc::malloc_trim(0) };
    });
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (delay, &TRIM);
}

/// At most one pending run of a blocking job: a call while one is scheduled joins it.
struct Debounced {
    scheduled: AtomicBool,
}

impl Debounced {
    const fn new() -> Self {
        Debounced {
            scheduled: AtomicBool::new(false),
        }
    }

    /// Runs `job` on a blocking thread `delay` from now unless a run is already scheduled.
    /// Returns whether this call scheduled it.
    fn schedule(&'static self, delay: Duration, job: impl FnOnce() + Send + 'static) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if self.scheduled.swap(true, Ordering::SeqCst) {
            return false;
        }
        // Clears the flag however the task ends: a runtime shut down mid-sleep drops it, and
        // later calls (another runtime) must still schedule.
        struct Pending(&'static Debounced);
        impl Drop for Pending {
            fn drop(&mut self) {
                self.0.scheduled.store(false, Ordering::SeqCst);
            }
        }
        let pending = Pending(self);
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            drop(pending);
            let _ = tokio::task::spawn_blocking(job).await;
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(start_paused = true)]
    async fn calls_within_the_delay_share_one_run() {
        static ONE: Debounced = Debounced::new();
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let job = || {
            RUNS.fetch_add(1, Ordering::SeqCst);
        };
        assert!(ONE.schedule(Duration::from_secs(1), job));
        assert!(!ONE.schedule(Duration::from_secs(1), job));
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The job runs on a blocking thread: give it a moment (real time), then count.
        for _ in 0..1_000 {
            if RUNS.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(RUNS.load(Ordering::SeqCst), 1);
        assert!(
            ONE.schedule(Duration::from_secs(1), job),
            "the next burst schedules again"
        );
    }

    #[test]
    fn a_runtime_shut_down_mid_delay_does_not_block_later_runs() {
        static ONE: Debounced = Debounced::new();
        assert!(
            !ONE.schedule(Duration::from_secs(1), || {}),
            "no runtime: nothing scheduled"
        );
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime")
        };
        let first = runtime();
        assert!(first.block_on(async { ONE.schedule(Duration::from_secs(3600), || {}) }));
        drop(first);
        let second = runtime();
        assert!(second.block_on(async { ONE.schedule(Duration::from_secs(3600), || {}) }));
    }
}
