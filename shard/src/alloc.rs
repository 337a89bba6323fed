//! Allocator settings for bounded memory.

/// Pins glibc's mmap threshold and its heap trim threshold. Allocations of
/// at least `mmap_threshold` bytes are mapped on their own and returned to
/// the kernel when freed (by default glibc raises the threshold after such
/// frees and serves later ones from the heap, where fragmentation keeps RSS
/// above what the broker actually holds). Below it, buffers come from the
/// heap; up to `trim_threshold` bytes freed at the top of a heap stay mapped,
/// so the next buffer of the same size does not fault in and zero fresh
/// pages. Returns whether glibc accepted both settings.
pub fn tune_allocator(mmap_threshold: usize, trim_threshold: usize) -> bool {
    // SAFETY: mallopt only changes allocator tunables; a bad value is refused
    // with 0. Called at start-up, before the shards start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap_threshold as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, trim_threshold as libc::c_int) == 1
    }
}
