//! The process's heap, as the agent manages it.

/// Returns freed heap memory to the operating system (glibc keeps it): after
/// an initial list, a burst of short-lived allocations (decoded values,
/// channel buffers) leaves much of the heap free.
pub(crate) fn release_free_memory() {
    // SAFETY: malloc_trim only touches the allocator's free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
