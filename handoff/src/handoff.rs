//! The handoff block (kernel side -> purgatory), passed in `rdi` at the purgatory's entry.
//! Version 1 carries where the kexec image is mapped; later versions add the old start_info,
//! the P2M, the direct-map base and the VCPU records (design.md section 4).

use xenpv::assert_layout;

/// `b"PVKXHOFF"` as a little-endian u64.
pub const HANDOFF_MAGIC: u64 = u64::from_le_bytes(*b"PVKXHOFF");
pub const HANDOFF_VERSION: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handoff {
    pub magic: u64,
    pub version: u32,
    pub _pad: u32,
    /// Virtual address where the whole kexec image file is mapped (readable).
    pub image_va: u64,
    /// Its length in bytes.
    pub image_len: u64,
}
assert_layout!(Handoff, 32; magic @ 0, version @ 8, image_va @ 16, image_len @ 24);
