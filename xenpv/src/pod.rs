//! Plain data: `#[repr(C)]` structures with no padding whose every bit pattern is a value, so
//! they may be viewed as bytes and read from bytes. Each implementation sits next to its
//! type's layout assert with a SAFETY note saying why the type qualifies.

/// A `#[repr(C)]` type without padding whose every bit pattern is a valid value.
///
/// # Safety
/// The implementing type must have no padding bytes (its fields, each itself plain data, fill
/// its size: the layout assert beside the implementation shows it) and no field with invalid
/// bit patterns (no `bool`, `char`, enum, reference or pointer with validity rules).
pub unsafe trait Pod: Copy + 'static {
    /// The value's bytes, as they are in memory (little-endian on x86_64).
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: the trait's contract: every byte of the value is initialised.
        unsafe {
            core::slice::from_raw_parts(
                self as *const Self as *const u8,
                core::mem::size_of::<Self>(),
            )
        }
    }

    /// A value read from the first `size_of::<Self>()` bytes of `bytes` (any alignment);
    /// `None` when there are fewer.
    fn read_from(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: enough bytes (checked above); any bit pattern is a value (the trait's
        // contract); read_unaligned takes any alignment.
        Some(unsafe { (bytes.as_ptr() as *const Self).read_unaligned() })
    }

    /// The all-zero value.
    fn zeroed() -> Self {
        // SAFETY: all-zero is a bit pattern, hence a value (the trait's contract).
        unsafe { core::mem::zeroed() }
    }
}

#[cfg(test)]
mod tests {
    use super::Pod;
    use crate::StartInfo;

    #[test]
    fn bytes_round_trip_and_short_input_is_refused() {
        let mut si = StartInfo::zeroed();
        assert!(si.as_bytes().iter().all(|&b| b == 0));
        si.nr_pages = 0x1234;
        si.cmd_line[0] = b'x';
        let bytes = si.as_bytes();
        assert_eq!(bytes.len(), 1168);
        assert_eq!(&bytes[0x20..0x28], &0x1234u64.to_le_bytes());
        assert_eq!(bytes[0x80], b'x');
        // Read back from an odd offset (unaligned).
        let mut buf = [0u8; 1169];
        buf[1..].copy_from_slice(bytes);
        let back = StartInfo::read_from(&buf[1..]).unwrap();
        assert_eq!((back.nr_pages, back.cmd_line[0]), (0x1234, b'x'));
        assert!(StartInfo::read_from(&buf[1..1168]).is_none());
    }
}
