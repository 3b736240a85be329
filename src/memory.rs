//! Handing freed heap memory back to the operating system.

/// Returns the free pages of every malloc arena to the system (glibc's `malloc_trim`). glibc keeps
/// what a thread frees for its next allocations, so after a burst of large batches the buffers of
/// LibTorch and of the request bodies would otherwise stay resident while the server sits idle.
/// Elsewhere than glibc this does nothing.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists, under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
