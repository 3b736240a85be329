//! Handing freed heap memory back to the operating system.
//!
//! glibc gives every busy thread its own arena. `malloc_trim` returns the free pages inside each
//! arena, but it never shrinks the free space at the top of a thread's arena: only a `free` in
//! that arena does, and only past the trim threshold, which glibc raises to twice the largest
//! buffer it has handed out (up to 64 MiB). After a burst of CNN batches each model and runtime
//! thread kept several MiB of such top space resident while the server sat idle (30–60 MB of RSS
//! above the pre-load figure with three model entries). So serving fixes the thresholds at the
//! values glibc would reach on its own, and the idle release lowers the trim threshold for the
//! moment it takes to free one block in each thread's arena: its own, and one that each runtime
//! thread set aside from its arena when it last parked (glibc trims the arena a freed block came
//! from, whichever thread frees it), since a parked runtime thread cannot be asked to run code.
//!
//! Elsewhere than glibc every function here does nothing.

/// Fixes glibc's mmap and trim thresholds for serving, unless the environment already sets them
/// (`GLIBC_TUNABLES`' `glibc.malloc.mmap_threshold` / `trim_threshold`, or
/// `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_`). Called before the runtime threads start,
/// so their first park already sets a block aside.
pub fn tune_for_serving() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::tune_for_serving();
}

/// For the async runtime's `on_thread_park`: sets a block of this thread's arena aside for the
/// next release, once per release (a load and a compare on every other park). Does nothing
/// unless `tune_for_serving` fixed the thresholds.
pub fn prepare_release_when_parking() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::prepare_release_when_parking();
}

/// Returns the free pages of every malloc arena to the system (glibc's `malloc_trim`) and, when
/// serving tuned the thresholds, the free tops of the calling thread's arena and of the runtime
/// threads' arenas too. Called by a thread that has gone idle after work, for the buffers of
/// LibTorch and of request bodies that would otherwise stay resident.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::release_free_heap();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::cell::Cell;
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::{Mutex, PoisonError};

    /// glibc's largest dynamic mmap threshold on 64-bit: buffers below it come from the arenas,
    /// so a batch's tensors reuse pages already faulted in rather than mapping fresh ones every
    /// pass.
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    /// What glibc's own trim threshold grows to beside that mmap threshold: while serving, freed
    /// top space stays for the next pass.
    const BUSY_TRIM_THRESHOLD: libc::c_int = 2 * MMAP_THRESHOLD;
    /// glibc trims an arena's top from `free` only for a chunk at least this large
    /// (`FASTBIN_CONSOLIDATION_THRESHOLD`).
    const TRIM_TRIGGER_BYTES: usize = 64 << 10;

    /// Whether `tune_for_serving` fixed the thresholds (and the idle release may move the trim
    /// one).
    static TUNED: AtomicBool = AtomicBool::new(false);

    /// A block set aside in a runtime thread's arena for the next release to free.
    struct Trigger(*mut libc::c_void);

    // SAFETY: glibc's free may be called from any thread for any block malloc returned.
    unsafe impl Send for Trigger {}

    /// The blocks runtime threads set aside since the last release.
    static TRIGGERS: Mutex<Vec<Trigger>> = Mutex::new(Vec::new());

    /// How many releases have run; a runtime thread sets a block aside once per release.
    static RELEASES: AtomicU64 = AtomicU64::new(0);

    thread_local! {
        /// The release count when this thread last set a block aside; none yet is `u64::MAX`.
        static ARMED_AT: Cell<u64> = const { Cell::new(u64::MAX) };
    }

    /// Settings a user gave glibc's allocator through the environment, which serving then leaves
    /// alone.
    fn user_tuned(tunables: Option<&str>, has_env: impl Fn(&str) -> bool) -> bool {
        let tuned_by_tunable = tunables.is_some_and(|t| {
            t.split(':').any(|setting| {
                setting.starts_with("glibc.malloc.mmap_threshold=")
                    || setting.starts_with("glibc.malloc.trim_threshold=")
            })
        });
        tuned_by_tunable || has_env("MALLOC_MMAP_THRESHOLD_") || has_env("MALLOC_TRIM_THRESHOLD_")
    }

    pub(super) fn tune_for_serving() {
        let tunables = std::env::var("GLIBC_TUNABLES").ok();
        if user_tuned(tunables.as_deref(), |name| std::env::var_os(name).is_some()) {
            return;
        }
        // SAFETY: mallopt only sets the allocator's parameters, under its lock.
        let fixed = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, BUSY_TRIM_THRESHOLD) == 1
        };
        TUNED.store(fixed, Relaxed);
    }

    pub(super) fn prepare_release_when_parking() {
        let releases = RELEASES.load(Relaxed);
        if !TUNED.load(Relaxed) || ARMED_AT.get() == releases {
            return;
        }
        ARMED_AT.set(releases);
        // SAFETY: a plain allocation; it is freed once, by the release that takes it.
        let block = unsafe { libc::malloc(TRIM_TRIGGER_BYTES) };
        if !block.is_null() {
            triggers().push(Trigger(block));
        }
    }

    pub(super) fn release_free_heap() {
        if TUNED.load(Relaxed) {
            // Held throughout, so two model threads going idle together cannot restore the busy
            // threshold while the other is still freeing.
            let mut triggers = triggers();
            // SAFETY: mallopt only sets a parameter under the allocator's lock. Each block is
            // freed once: the runtime threads' ones drained from the list, and the calling
            // thread's own right after it is allocated. Another thread freeing meanwhile trims
            // its own arena's top too, which is the point.
            unsafe {
                libc::mallopt(libc::M_TRIM_THRESHOLD, 0);
                // black_box: the compiler would otherwise drop an allocation nothing reads.
                libc::free(std::hint::black_box(libc::malloc(TRIM_TRIGGER_BYTES)));
                for Trigger(block) in triggers.drain(..) {
                    libc::free(block);
                }
                libc::mallopt(libc::M_TRIM_THRESHOLD, BUSY_TRIM_THRESHOLD);
            }
            RELEASES.fetch_add(1, Relaxed);
        }
        // SAFETY: malloc_trim walks the allocator's own free lists, under its locks.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// The list holds plain pointers, so a panic elsewhere cannot leave it inconsistent.
    fn triggers() -> std::sync::MutexGuard<'static, Vec<Trigger>> {
        TRIGGERS.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    mod tests {
        use super::user_tuned;

        #[test]
        fn thresholds_set_in_the_environment_are_left_alone() {
            let none = |_: &str| false;
            assert!(!user_tuned(None, none));
            assert!(!user_tuned(Some("glibc.malloc.arena_max=2"), none));
            assert!(user_tuned(
                Some("glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=1048576"),
                none
            ));
            assert!(user_tuned(Some("glibc.malloc.mmap_threshold=65536"), none));
            assert!(user_tuned(None, |name| name == "MALLOC_TRIM_THRESHOLD_"));
            assert!(user_tuned(None, |name| name == "MALLOC_MMAP_THRESHOLD_"));
            assert!(!user_tuned(None, |name| name == "MALLOC_ARENA_MAX"));
        }
    }
}
