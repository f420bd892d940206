//! Plain map records: `#[repr(C)]` keys and values copied to and from the
//! kernel as bytes.

/// A `#[repr(C)]` map key or value that can be copied to and from the kernel
/// as raw bytes.
///
/// # Safety
///
/// The type must be `#[repr(C)]`, have no implicit padding (every padding
/// byte is a named field, so that keys compare the same in the kernel and
/// here) and accept every bit pattern.
pub unsafe trait Record: Copy + Send + Sync + 'static {}

pub(crate) fn as_bytes<T: Record>(record: &T) -> &[u8] {
    // SAFETY: Record types are plain bytes without uninitialised padding.
    unsafe { std::slice::from_raw_parts(record as *const T as *const u8, size_of::<T>()) }
}

pub(crate) fn from_bytes<T: Record>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>(), "short record buffer");
    // SAFETY: the buffer holds at least size_of::<T>() bytes and every bit
    // pattern is a valid T.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) }
}

/// Packs records into one contiguous buffer (the layout batch syscalls take).
pub(crate) fn pack<'a, T: Record>(records: impl Iterator<Item = &'a T>) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        out.extend_from_slice(as_bytes(record));
    }
    out
}
