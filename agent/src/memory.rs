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

/// Allocations of this size or more get pages of their own from the
/// kernel, returned when they are freed.
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Sets how the heap is managed; called once at start, before any thread.
///
/// glibc serves a large allocation with pages of its own, but raises that
/// threshold (up to 32 MiB) each time such an allocation is freed. An
/// agent's initial lists free many (etcd's pages of up to 8 MiB, their
/// decoded keys), so afterwards its large, long-lived tables (a remote's
/// keys, the ipcache claims) and the pages' data share the same heap, and
/// the long-lived allocations made meanwhile keep much of it resident when
/// the pages are freed. A fixed threshold keeps large allocations apart:
/// at a million remote entries, 181 B of resident memory per entry instead
/// of about 205 B, for the same 169 MiB in use.
pub fn tune_heap() {
    // SAFETY: mallopt only sets the allocator's parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
