//! The handoff block (kernel side -> purgatory), passed in `rdi` at the purgatory's entry.
//! Version 2: where the kexec image is mapped, the old start_info, the old initial region and
//! a scratch VA. Later versions add the direct-map base and the VCPU records (design.md
//! section 4).

use xenpv::assert_layout;

/// `b"PVKXHOFF"` as a little-endian u64.
pub const HANDOFF_MAGIC: u64 = u64::from_le_bytes(*b"PVKXHOFF");
pub const HANDOFF_VERSION: u32 = 2;

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
    /// The old kernel's start_info (mapped): nr_pages, shared_info, its P2M and L4.
    pub old_start_info_va: u64,
    /// The old kernel's `virt_base` and the size in pages of its initial region: frames past
    /// it (and below `reserved_top`) are mapped nowhere and can become new page tables.
    pub old_virt_base: u64,
    pub old_region_pages: u64,
    /// The top `reserved_top` PFNs hold the old kernel's tables for the purgatory mapping.
    pub reserved_top: u64,
    /// A page-aligned VA inside the purgatory mapping whose L1 entry is free, for reaching
    /// frames that are mapped nowhere.
    pub scratch_va: u64,
    pub _reserved: [u64; 3],
}
assert_layout!(Handoff, 96; magic @ 0, version @ 8, image_va @ 16, image_len @ 24,
    old_start_info_va @ 32, old_virt_base @ 40, old_region_pages @ 48, reserved_top @ 56,
    scratch_va @ 64);
