//! The handoff block (kernel side -> purgatory), passed in `rdi` at the purgatory's entry.
//! Version 4: where the kexec image is mapped, the old start_info, the pool of frames the
//! purgatory may overwrite, the kernel side's direct map, a scratch VA and the number of VCPUs
//! the kernel side sends to the purgatory's AP entry.

use xenpv::assert_layout;

/// `b"PVKXHOFF"` as a little-endian u64.
pub const HANDOFF_MAGIC: u64 = u64::from_le_bytes(*b"PVKXHOFF");
pub const HANDOFF_VERSION: u32 = 4;

/// Offset of the purgatory's AP entry from its boot entry: every VCPU other than the boot
/// VCPU jumps there with `rdi` = the handoff block and `rsi` = its VCPU id.
pub const AP_ENTRY_OFFSET: u64 = 0x100;
/// Most VCPUs the purgatory parks (its per-VCPU stacks and records).
pub const MAX_VCPUS: u64 = 8;

/// What the kernel side promises the purgatory (docs/kexec-image.md):
/// - the image is mapped readable at `image_va` inside the old initial region, so its pages'
///   old PFNs are `(va - old_virt_base) / 4096`;
/// - old PFNs `[free_first_pfn, free_first_pfn + free_pages)` hold nothing the purgatory reads
///   and are no page table, descriptor table or otherwise typed frame; they may be mapped
///   writable only through the direct map at `direct_map_va`;
/// - every other pinned page-table tree than the current one has been unpinned;
/// - VCPUs `1..nr_vcpus` are on their way to the AP entry, on the same page tables, with
///   nothing else to do;
/// - the purgatory's own pages are mapped at the image's `purgatory_base`, through tables
///   that are not in the free pool.
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
    /// Where the old initial region (PFN 0 onwards) is mapped.
    pub old_virt_base: u64,
    /// The free pool (old PFNs): new page tables, the new P2M and zeroed pages come from it.
    pub free_first_pfn: u64,
    pub free_pages: u64,
    /// The kernel side's direct map: old PFN `p` is mapped at `direct_map_va + p * 4096`
    /// (0: no direct map). The purgatory removes these mappings for frames that become page
    /// tables, so that Xen can validate them.
    pub direct_map_va: u64,
    /// A page-aligned VA inside the purgatory mapping whose L1 entry is free, for reaching
    /// frames through a mapping the purgatory controls.
    pub scratch_va: u64,
    /// VCPUs of the domain that the kernel side initialised (1: only the boot VCPU); VCPUs
    /// `1..nr_vcpus` enter the AP entry.
    pub nr_vcpus: u64,
    /// Interdomain ports the new kernel keeps (0: none): the xenstore and console channels.
    /// The purgatory re-binds them after `EVTCHNOP_reset` and writes the new local ports into
    /// start_info's `store_evtchn` and (for a domU) `console.domU.evtchn`.
    pub keep_store_port: u32,
    pub keep_console_port: u32,
    /// 0, or the VA of `nr_vcpus` `xenpv::VcpuRegisterVcpuInfo` records: where the old kernel
    /// placed each VCPU's `vcpu_info` (`mfn` 0: not placed). Xen keeps writing there; the
    /// purgatory hides those frames and names them in `pvkexec.vcpu_info=`.
    pub vcpu_info_va: u64,
}
assert_layout!(Handoff, 104; magic @ 0, version @ 8, image_va @ 16, image_len @ 24,
    old_start_info_va @ 32, old_virt_base @ 40, free_first_pfn @ 48, free_pages @ 56,
    direct_map_va @ 64, scratch_va @ 72, nr_vcpus @ 80, keep_store_port @ 88,
    keep_console_port @ 92, vcpu_info_va @ 96);

/// Where a parked VCPU's wake-up record lives in the park page (`docs/smp.md`), one
/// [`ParkMailbox`] per VCPU id from there.
pub const PARK_MAILBOX_OFFSET: u64 = 0x800;
/// `b"PVKXWAKE"` as a little-endian u64: a record is complete.
pub const PARK_WAKE_MAGIC: u64 = u64::from_le_bytes(*b"PVKXWAKE");

/// A new kernel's request to have a parked VCPU back: write `l4_mfn`, `entry`, `rsp` and then
/// `magic`, map the park page at the VA the `pvkexec.park=` word names in the tables of
/// `l4_mfn`, and `VCPUOP_up` the VCPU. It switches to `l4_mfn` (`NEW_BASEPTR`; the L4 must be
/// pinned or in use), clears `magic`, loads `rsp` and jumps to `entry` with `rdi` = its VCPU
/// id. If the switch fails it goes down again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParkMailbox {
    pub magic: u64,
    pub l4_mfn: u64,
    pub entry: u64,
    pub rsp: u64,
    /// Scratch for the VCPU's own `mmuext_op`.
    pub op: [u64; 3],
    pub _pad: u64,
}
assert_layout!(ParkMailbox, 64; magic @ 0, l4_mfn @ 8, entry @ 16, rsp @ 24, op @ 32);
