//! The kernel side's part of the handoff contract (docs/kexec-image.md), in the order a
//! kernel's kexec path does it:
//! 1. pinned page tables other than the current tree are unpinned (they would outlive the
//!    kexec and keep their frames read-only for the new kernel);
//! 2. the purgatory's working memory: `pvhandoff::handoff::work_pages(nr_pages)` frames from
//!    the top of the free pool, mapped (through the direct map), their old PFNs listed;
//! 3. the handoff block filled: the image, the old start_info, the free pool, the direct
//!    map, a scratch VA, the VCPUs, the kept channels, placed `vcpu_info`, the working memory;
//! 4. the APs sent to the purgatory's AP entry (`AP_ENTRY_OFFSET`) with the block in rdi;
//! 5. the boot VCPU jumps to the purgatory's entry with the block in rdi ([`enter`]).

use crate::frames::{Layout, EXTRA_TREES};
use crate::image::Purgatory;
use crate::options::{Fault, Options};
use crate::tables::DIRECT_MAP;
use crate::{aps, gdt, trees};
use core::arch::asm;
use guestrt::println;
use kernelrt::notes::VIRT_BASE;
use kernelrt::report::Why;
use kernelrt::why;
use pvhandoff::handoff::{Handoff, AP_ENTRY_OFFSET, HANDOFF_MAGIC, HANDOFF_VERSION};
use xenpv::{StartInfo, PAGE_SIZE};

/// Most working-memory frames this kernel hands over (enough for a 512 GiB domain).
const WORK_PFNS_MAX: usize = 4352;
/// The old PFN of each working-memory frame (`Handoff::work_pfns_va`).
static mut WORK_PFNS: [u64; WORK_PFNS_MAX] = [0; WORK_PFNS_MAX];

/// Most image pages and pool frames this kernel lists with `kexec_lists=1` (a 64 MiB image,
/// 8192 pool frames).
const IMAGE_PFNS_MAX: usize = 16384;
const POOL_PFNS_MAX: usize = 8192;
/// Handoff v6's lists (`image_pfns_va`, `pool_pfns_va`), filled with `kexec_lists=1` only.
static mut IMAGE_PFNS: [u64; IMAGE_PFNS_MAX] = [0; IMAGE_PFNS_MAX];
static mut POOL_PFNS: [u64; POOL_PFNS_MAX] = [0; POOL_PFNS_MAX];

static mut HANDOFF: Handoff = Handoff {
    magic: 0,
    version: 0,
    flags: 0,
    image_va: 0,
    image_len: 0,
    old_start_info_va: 0,
    old_virt_base: 0,
    free_first_pfn: 0,
    free_pages: 0,
    direct_map_va: 0,
    scratch_va: 0,
    nr_vcpus: 0,
    keep_store_port: 0,
    keep_console_port: 0,
    vcpu_info_va: 0,
    work_va: 0,
    work_pages: 0,
    work_pfns_va: 0,
    image_pfns_va: 0,
    pool_pfns_va: 0,
    pool_pages: 0,
};

/// What the running kernel brings to the handoff.
pub struct Running {
    /// First frame of the free pool (it ends at `Layout::floor`).
    pub pool_first: u64,
    /// The placed `vcpu_info` records, or 0.
    pub vcpu_info_va: u64,
    /// The store channel's port kept for the new kernel, or 0.
    pub store_port: u32,
    // For the report line only.
    pub timer_port: u32,
    pub offered: u32,
    pub poisoned: u64,
}

/// The purgatory's working memory: `pages` frames from old PFN `first`.
struct Work {
    first: u64,
    pages: u64,
}

/// Steps 1 to 4; returns the purgatory's entry for [`enter`].
pub fn hand_over(
    si: &StartInfo,
    purgatory: &Purgatory,
    l: &Layout,
    p2m: &[u64],
    opts: &Options,
    running: &Running,
) -> Result<u64, Why> {
    let fault = opts.fault;
    if fault == Some(Fault::KeepTrees) {
        println!("PVKEXEC-INFO kexec: fault injected: process trees left pinned");
    } else {
        trees::unpin(l, p2m)?;
    }
    let work = working_memory(si, l, running.pool_first, fault)?;
    let free_first = if fault == Some(Fault::PoolOverlap) {
        println!("PVKEXEC-INFO kexec: fault injected: free pool starts at the old P2M list");
        (si.mfn_list - VIRT_BASE) / PAGE_SIZE
    } else {
        running.pool_first
    };
    report(running);
    let lists = match opts.lists {
        true => Some(frame_lists(si, free_first, l.floor - work.pages, fault)?),
        false => None,
    };
    let block = fill_block(si, purgatory, l, running, &work, free_first, fault);
    if let Some(lists) = lists {
        use_lists(lists);
    }
    aps::send_to_purgatory(purgatory.entry + AP_ENTRY_OFFSET, block, l.nr_vcpus)?;
    Ok(purgatory.entry)
}

/// Takes the working memory from the top of the free pool (inside the pool with the
/// `work-in-pool` fault) and lists its frames.
fn working_memory(
    si: &StartInfo,
    l: &Layout,
    pool_first: u64,
    fault: Option<Fault>,
) -> Result<Work, Why> {
    let pool_pages = l.floor - pool_first;
    let wanted = pvhandoff::handoff::work_pages(si.nr_pages);
    let fits = |w: &u64| *w as usize <= WORK_PFNS_MAX && w + 1024 < pool_pages;
    let Some(pages) = wanted.filter(fits) else {
        return why!(
            "no room for the purgatory's working memory ({} frames) in a free pool of {} frames",
            wanted.unwrap_or(u64::MAX),
            pool_pages
        );
    };
    let first = if fault == Some(Fault::WorkInPool) {
        println!("PVKEXEC-INFO kexec: fault injected: working memory inside the free pool");
        pool_first
    } else {
        l.floor - pages
    };
    // SAFETY: only the boot VCPU touches WORK_PFNS (the APs never do); the purgatory reads it
    // after the jump.
    let work_pfns = unsafe { &mut *core::ptr::addr_of_mut!(WORK_PFNS) };
    for (k, slot) in work_pfns.iter_mut().take(pages as usize).enumerate() {
        *slot = first + k as u64;
    }
    Ok(Work { first, pages })
}

/// Handoff v6's lists: the image's pages (a run here, listed) and every other frame of the pool
/// range `[first, end)` (ascending, not contiguous), as many as fit. Returns the image list's
/// length and the pool list's.
fn frame_lists(
    si: &StartInfo,
    first: u64,
    end: u64,
    fault: Option<Fault>,
) -> Result<(u64, u64), Why> {
    let image_pages = si.mod_len.div_ceil(PAGE_SIZE);
    if image_pages as usize > IMAGE_PFNS_MAX {
        return why!("an image of {image_pages} pages is more than this kernel lists");
    }
    // SAFETY: only the boot VCPU touches the lists (the APs never do), before the handoff; the
    // purgatory reads them after the jump.
    let (image, pool) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(IMAGE_PFNS),
            &mut *core::ptr::addr_of_mut!(POOL_PFNS),
        )
    };
    let image_first = (si.mod_start - VIRT_BASE) / PAGE_SIZE;
    for (i, slot) in image.iter_mut().take(image_pages as usize).enumerate() {
        *slot = image_first + i as u64;
    }
    let pool_pages = (end.saturating_sub(first).div_ceil(2)).min(POOL_PFNS_MAX as u64);
    for (i, slot) in pool.iter_mut().take(pool_pages as usize).enumerate() {
        *slot = first + 2 * i as u64;
    }
    if fault == Some(Fault::PoolListRepeat) {
        pool[1] = pool[0];
        println!("PVKEXEC-INFO kexec: fault injected: the pool list names a frame twice");
    }
    if fault == Some(Fault::ImageListRepeat) {
        image[1] = image[0];
        println!("PVKEXEC-INFO kexec: fault injected: the image list names a frame twice");
    }
    println!(
        "PVKEXEC-INFO kexec: handoff v6 lists: {image_pages} image pages from pfn {image_first:#x}, {pool_pages} pool frames (every other one of pfn {first:#x}..{end:#x})"
    );
    Ok((image_pages, pool_pages))
}

/// Switches the filled block to the lists of [`frame_lists`] (the pool range goes).
fn use_lists((_, pool_pages): (u64, u64)) {
    // SAFETY: only the boot VCPU writes HANDOFF, before it sends the APs to the purgatory.
    let h = unsafe { &mut *core::ptr::addr_of_mut!(HANDOFF) };
    h.image_pfns_va = core::ptr::addr_of!(IMAGE_PFNS) as u64;
    h.pool_pfns_va = core::ptr::addr_of!(POOL_PFNS) as u64;
    h.pool_pages = pool_pages;
    h.free_first_pfn = 0;
    h.free_pages = 0;
}

/// The state handed over, in one line.
fn report(r: &Running) {
    println!(
        "PVKEXEC-INFO kexec: own GDT loaded (ds {:#x}), {} process trees pinned and unpinned, VIRQ_TIMER on port {} with periodic and single-shot timers, {} grant entries offered, {} free frames poisoned",
        gdt::DATA_SELECTOR, EXTRA_TREES, r.timer_port, r.offered, r.poisoned
    );
}

/// Fills the handoff block (a version-4 one with the `handoff-v4` fault); returns its
/// address. The free pool runs from `free_first` to the working memory.
fn fill_block(
    si: &StartInfo,
    purgatory: &Purgatory,
    l: &Layout,
    running: &Running,
    work: &Work,
    free_first: u64,
    fault: Option<Fault>,
) -> u64 {
    let pool_end = l.floor - work.pages;
    let block = Handoff {
        magic: HANDOFF_MAGIC,
        version: if fault == Some(Fault::HandoffV4) {
            4
        } else {
            HANDOFF_VERSION
        },
        flags: match fault {
            Some(Fault::XenFlagsClaimed) => pvhandoff::handoff::HANDOFF_XEN_RESETS_VCPUS,
            _ => xen_flags(),
        },
        image_va: si.mod_start,
        image_len: si.mod_len,
        old_start_info_va: si as *const StartInfo as u64,
        old_virt_base: VIRT_BASE,
        free_first_pfn: free_first,
        free_pages: pool_end - free_first,
        direct_map_va: DIRECT_MAP,
        // The last entry of the purgatory's L1 stays free (the segment is < 2 MiB).
        scratch_va: purgatory.base + 511 * PAGE_SIZE,
        nr_vcpus: l.nr_vcpus as u64,
        keep_store_port: running.store_port,
        keep_console_port: 0,
        vcpu_info_va: running.vcpu_info_va,
        work_va: DIRECT_MAP + work.first * PAGE_SIZE,
        work_pages: work.pages,
        work_pfns_va: core::ptr::addr_of!(WORK_PFNS) as u64,
        // Version 6 without lists: the image in the initial region (mod_start) and the pool
        // the range above, as in version 5 (the kernel module passes lists).
        image_pfns_va: 0,
        pool_pfns_va: 0,
        pool_pages: 0,
    };
    // SAFETY: only the boot VCPU writes HANDOFF, before it sends the APs (which pass its
    // address on) to the purgatory; the purgatory reads it after the jump.
    unsafe { HANDOFF = block };
    if fault == Some(Fault::HandoffV4) {
        println!("PVKEXEC-INFO kexec: fault injected: a version-4 handoff block");
    }
    println!(
        "PVKEXEC-INFO kexec: purgatory working memory: {} frames from pfn {:#x} at {:#x}",
        work.pages,
        work.first,
        DIRECT_MAP + work.first * PAGE_SIZE
    );
    core::ptr::addr_of!(HANDOFF) as u64
}

/// Step 5: the boot VCPU leaves for the purgatory's `entry`, the handoff block in rdi.
///
/// # Safety
/// `entry` must be what [`hand_over`] returned: the purgatory's pages are mapped there
/// (relocated for this address by the loader) and the block is filled.
pub unsafe fn enter(entry: u64) -> ! {
    // SAFETY: the caller vouches for `entry`; control never returns.
    unsafe {
        asm!("jmp {entry}", entry = in(reg) entry,
             in("rdi") core::ptr::addr_of!(HANDOFF) as u64, options(noreturn))
    }
}

/// What Xen offers of pvkexec's patches (XENVER_get_features submap 0), as a kernel side
/// reports it in the handoff's flags; a failed query reports nothing (stock Xen's path).
fn xen_flags() -> u32 {
    use pvhandoff::handoff::{HANDOFF_XEN_VCPU_INFO_REREGISTER, HANDOFF_XEN_VCPU_RESET};
    let Ok(f) = xenpv::hypercall::xen_features(0) else {
        return 0;
    };
    let mut flags = 0;
    if f & (1 << xenpv::xenfeat::VCPU_RESET) != 0 {
        flags |= HANDOFF_XEN_VCPU_RESET;
    }
    if f & (1 << xenpv::xenfeat::VCPU_INFO_REREGISTER) != 0 {
        flags |= HANDOFF_XEN_VCPU_INFO_REREGISTER;
    }
    flags
}
