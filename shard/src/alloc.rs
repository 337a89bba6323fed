//! Allocator settings for bounded memory.

/// Pins glibc's mmap threshold: allocations at least this large are mapped on
/// their own and returned to the kernel when freed. By default glibc raises
/// the threshold after such frees and serves later ones from the heap, where
/// fragmentation keeps RSS above what the broker actually holds. Returns
/// whether glibc accepted the setting.
pub fn pin_mmap_threshold(bytes: usize) -> bool {
    // SAFETY: mallopt only changes allocator tunables; a bad value is refused
    // with 0. Called at start-up, before the shards start.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes as libc::c_int) == 1 }
}
