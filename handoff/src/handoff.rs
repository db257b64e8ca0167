//! The handoff block (kernel side -> purgatory), passed in `rdi` at the purgatory's entry.
//! Version 4: where the kexec image is mapped, the old start_info, the pool of frames the
//! purgatory may overwrite, the kernel side's direct map, a scratch VA and the number of VCPUs
//! the kernel side sends to the purgatory's AP entry. Version 5 appends the purgatory's working
//! memory (`work_va`, `work_pages`, `work_pfns_va`): its stacks, hypercall batches and the frame
//! bitmap, sized to the domain by [`work_pages`]; the v4 fields keep their offsets and meaning.
//! Version 6 appends frame lists (`image_pfns_va`, `pool_pfns_va`, `pool_pages`): the image
//! may lie in any frames mapped virtually contiguous at `image_va`, and the free pool may be
//! any set of frames, so a real kernel need not find PFN-contiguous blocks for either. A v6
//! block with a list's VA 0 uses the v5 rule for that part (the image inside the old initial
//! region, the pool the range `free_first_pfn..+free_pages`); the v5 fields keep their offsets.

use xenpv::assert_layout;

/// `b"PVKXHOFF"` as a little-endian u64.
pub const HANDOFF_MAGIC: u64 = u64::from_le_bytes(*b"PVKXHOFF");
pub const HANDOFF_VERSION: u32 = 6;
/// Size of a version-4 block (the fields up to `vcpu_info_va`).
pub const HANDOFF_V4_SIZE: usize = 104;
/// Size of a version-5 block (the fields up to `work_pfns_va`).
pub const HANDOFF_V5_SIZE: usize = 128;

/// [`Handoff::flags`]: Xen advertises `XENFEAT_vcpu_reset` (bit 22 of submap 0): a VCPU that
/// is down can be reset to a never-initialised one (`VCPUOP_reset`).
pub const HANDOFF_XEN_VCPU_RESET: u32 = 1 << 0;
/// [`Handoff::flags`]: Xen advertises `XENFEAT_vcpu_info_reregister` (bit 21): a vcpu_info
/// registration can be undone (`VCPUOP_register_vcpu_info` with the unregister MFN).
pub const HANDOFF_XEN_VCPU_INFO_REREGISTER: u32 = 1 << 1;
/// Both: what the purgatory needs to reset the VCPUs instead of parking them (docs/smp.md).
pub const HANDOFF_XEN_RESETS_VCPUS: u32 = HANDOFF_XEN_VCPU_RESET | HANDOFF_XEN_VCPU_INFO_REREGISTER;

/// Offset of the purgatory's AP entry from its boot entry: every VCPU other than the boot
/// VCPU jumps there with `rdi` = the handoff block and `rsi` = its VCPU id.
pub const AP_ENTRY_OFFSET: u64 = 0x100;
/// Most VCPUs the purgatory parks (its per-VCPU stacks and records).
pub const MAX_VCPUS: u64 = 8;

/// What the kernel side promises the purgatory (docs/kexec-image.md):
/// - the image is mapped readable at the page-aligned `image_va`; its page `i` is old PFN
///   `image_pfns[i]` (version 6 list) or, with `image_pfns_va` 0, `(image_va - old_virt_base)
///   / 4096 + i` (inside the old initial region);
/// - the free pool's old PFNs (the `pool_pfns_va` list, or with it 0 the range
///   `[free_first_pfn, free_first_pfn + free_pages)`) hold nothing the purgatory reads and are
///   no page table, descriptor table or otherwise typed frame; they may be mapped writable only
///   through the direct map at `direct_map_va`;
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
    /// What the kernel side found Xen offers (`HANDOFF_XEN_*`; 0 from kernel sides that do
    /// not look, which was this word's padding before). The purgatory asks Xen again before it
    /// relies on a bit.
    pub flags: u32,
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
    /// Version 5: the purgatory's working memory, `work_pages` frames mapped writable and
    /// contiguous at the page-aligned `work_va` (stacks from its first byte on: the purgatory
    /// runs on them from its first instruction). At least [`work_pages`]`(nr_pages)` frames,
    /// with any content (the purgatory clears what it needs).
    pub work_va: u64,
    pub work_pages: u64,
    /// VA of `work_pages` u64s: the old PFN of each working page, in VA order. They must be
    /// distinct frames of the domain outside the free pool, the image, the old start_info and
    /// the old P2M list, no table, ring, placed vcpu_info or granted frame (the purgatory checks
    /// all but distinctness before it changes anything). The purgatory never clears them or
    /// hands them out as holes; they become ordinary RAM of the new kernel past its built PFNs,
    /// with what the purgatory left in them (frame numbers, stack contents, no old data).
    pub work_pfns_va: u64,
    /// Version 6: 0, or the VA of `image_len.div_ceil(4096)` u64s, the old PFN of each image
    /// page in VA order (`image_va` page aligned). Distinct frames of the domain, present in the
    /// old P2M, outside the free pool, the working memory, the old start_info and the old P2M
    /// list (the purgatory checks all of it before it changes anything). With 0 the image lies
    /// inside the old initial region (the v5 rule).
    pub image_pfns_va: u64,
    /// Version 6: 0, or the VA of `pool_pages` u64s, the free pool's old PFNs, strictly
    /// ascending (so distinct, and membership is a binary search). Hole `k` of the new kernel's
    /// built PFNs takes entry `k`, the park area and the grant reserve the entries after the
    /// holes. With a list, `free_first_pfn` and `free_pages` must be 0; without one,
    /// `pool_pages` must be 0 and the pool is the v5 range.
    pub pool_pfns_va: u64,
    pub pool_pages: u64,
}
assert_layout!(Handoff, 152; magic @ 0, version @ 8, flags @ 12, image_va @ 16, image_len @ 24,
    old_start_info_va @ 32, old_virt_base @ 40, free_first_pfn @ 48, free_pages @ 56,
    direct_map_va @ 64, scratch_va @ 72, nr_vcpus @ 80, keep_store_port @ 88,
    keep_console_port @ 92, vcpu_info_va @ 96, work_va @ 104, work_pages @ 112,
    work_pfns_va @ 120, image_pfns_va @ 128, pool_pfns_va @ 136, pool_pages @ 144);
const _: () = assert!(core::mem::offset_of!(Handoff, image_pfns_va) == HANDOFF_V5_SIZE);
// SAFETY: integers only, without gaps (`flags` fills offset 12; offsets above; the
// last u64 ends at 152).
unsafe impl xenpv::Pod for Handoff {}

/// The working area's fixed part, from `work_va` on: the boot VCPU's stack, one stack per AP,
/// then the hypercall batches. The frame bitmap follows at [`WORK_BITMAP_OFFSET`].
pub const WORK_BSP_STACK_TOP: u64 = 32 * 1024;
/// AP `k`'s stack ends at `WORK_BSP_STACK_TOP + (k + 1) * WORK_AP_STACK_SIZE`.
pub const WORK_AP_STACK_SIZE: u64 = 8 * 1024;
/// `mmu_update` entries per batch (16 bytes each): Xen takes any count (it preempts long
/// batches with a continuation), so the size only bounds the purgatory's memory.
pub const WORK_M2P_BATCH: usize = 4096;
/// `mmuext_op` entries per batch (24 bytes each).
pub const WORK_MMUEXT_BATCH: usize = 1024;
/// `multicall` entries per batch (64 bytes each).
pub const WORK_MULTICALL_BATCH: usize = 512;
pub const WORK_M2P_OFFSET: u64 = WORK_BSP_STACK_TOP + MAX_VCPUS * WORK_AP_STACK_SIZE;
pub const WORK_MMUEXT_OFFSET: u64 = WORK_M2P_OFFSET + WORK_M2P_BATCH as u64 * 16;
pub const WORK_MULTICALL_OFFSET: u64 = WORK_MMUEXT_OFFSET + WORK_MMUEXT_BATCH as u64 * 24;
/// Start of the frame bitmap (one bit per frame of the domain), page aligned.
pub const WORK_BITMAP_OFFSET: u64 =
    (WORK_MULTICALL_OFFSET + WORK_MULTICALL_BATCH as u64 * 64).div_ceil(4096) * 4096;
/// Pages of the fixed part: the entry code checks `work_pages` against it before it uses a stack.
pub const WORK_FIXED_PAGES: u64 = WORK_BITMAP_OFFSET / 4096;

/// Frames of working memory the purgatory needs for a domain of `nr_pages` frames (the old
/// start_info's `nr_pages`); `None` if that does not fit in 64 bits.
pub fn work_pages(nr_pages: u64) -> Option<u64> {
    let bitmap_pages = nr_pages.div_ceil(8).div_ceil(4096);
    WORK_FIXED_PAGES.checked_add(bitmap_pages)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_area_parts_do_not_overlap_and_the_bitmap_follows() {
        let ap_top = WORK_BSP_STACK_TOP + MAX_VCPUS * WORK_AP_STACK_SIZE;
        assert!(ap_top <= WORK_M2P_OFFSET);
        assert!(WORK_M2P_OFFSET + WORK_M2P_BATCH as u64 * 16 <= WORK_MMUEXT_OFFSET);
        assert!(WORK_MMUEXT_OFFSET + WORK_MMUEXT_BATCH as u64 * 24 <= WORK_MULTICALL_OFFSET);
        assert!(WORK_MULTICALL_OFFSET + WORK_MULTICALL_BATCH as u64 * 64 <= WORK_BITMAP_OFFSET);
        assert_eq!(WORK_BITMAP_OFFSET % 4096, 0);
        // Every batch is 8-byte aligned for the ABI structs.
        for o in [WORK_M2P_OFFSET, WORK_MMUEXT_OFFSET, WORK_MULTICALL_OFFSET] {
            assert_eq!(o % 8, 0);
        }
    }

    #[test]
    fn work_area_is_sized_to_the_domain() {
        let gib = 1u64 << 18; // frames per GiB
        let f = WORK_FIXED_PAGES;
        assert_eq!(work_pages(0), Some(f));
        assert_eq!(work_pages(16384), Some(f + 1)); // 64 MiB: 2 KiB of bitmap
        assert_eq!(work_pages(gib), Some(f + 8)); // 1 GiB: 32 KiB
        assert_eq!(work_pages(6 * gib), Some(f + 48)); // 6 GiB: 192 KiB
        assert_eq!(work_pages(512 * gib), Some(f + 4096)); // 512 GiB: 16 MiB
        assert_eq!(work_pages(512 * gib + 1), Some(f + 4097));
        // 2^40 frames (52-bit physical addresses): 128 GiB of bitmap, still a number.
        assert_eq!(work_pages(1 << 40), Some(f + (1 << 25)));
        assert_eq!(work_pages(u64::MAX), Some(f + (1 << 49)));
        // The bitmap holds one bit for every frame.
        for n in [1, 63, 64, 65, 32767, 32768, 32769, 6 * gib + 3] {
            let pages = work_pages(n).unwrap() - f;
            assert!(pages * 4096 * 8 >= n);
            assert!((pages - 1) * 4096 * 8 < n);
        }
    }
}
