//! Old kernel of a kexec (kernel side, first slice): receives a kexec image as its boot module,
//! maps the image's purgatory segment at the purgatory's planned lower-half address with page
//! tables it builds under the PV rules, fills the handoff block and enters the purgatory.
//!
//! Not yet done here (design.md section 7): a direct map of all RAM, extra pinned trees, an own
//! GDT, several VCPUs.
#![no_std]
#![no_main]
// Check results carry their reason in a fixed buffer: these kernels have no heap to box it in.
#![allow(clippy::result_large_err)]

use core::arch::asm;
use guestrt::println;
use pvhandoff::handoff::{Handoff, HANDOFF_MAGIC, HANDOFF_VERSION};
use pvhandoff::image::{ImageView, SEG_FLAG_PURGATORY_MAPPING};
use pvtest_kernels::entry::{entry_regs, reg};
use pvtest_kernels::report::{fail, finish, Why};
use pvtest_kernels::view::{p2m, walk, Region};
use pvtest_kernels::{notes::VIRT_BASE, why};
use xenpv::{hypercall, mmu, pte, uvmf, MmuUpdate, StartInfo, PAGE_SIZE};

/// A page whose L1 entry is borrowed to reach frames outside the initial region.
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut SCRATCH: Page = Page([0; 4096]);

static mut HANDOFF: Handoff = Handoff {
    magic: 0,
    version: 0,
    _pad: 0,
    image_va: 0,
    image_len: 0,
    old_start_info_va: 0,
    old_virt_base: 0,
    old_region_pages: 0,
    reserved_top: 0,
    scratch_va: 0,
    _reserved: [0; 3],
};

/// Frames at the top of RAM that hold the purgatory mapping's L3, L2 and L1.
const RESERVED_TOP: u64 = 3;

#[no_mangle]
extern "C" fn guest_main(si: *const StartInfo) -> ! {
    // SAFETY: Xen passes a mapped start_info page in rsi; it stays mapped and unchanged.
    let si = unsafe { &*si };
    let region = Region::from_stack_top(VIRT_BASE, entry_regs()[reg::RSP]);
    match prepare(si, &region) {
        Ok(entry) => {
            println!("PVKEXEC-INFO kexec: entering the purgatory at {:#x}", entry);
            // SAFETY: `prepare` mapped the purgatory's pages (relocated for this address by the
            // loader) and filled HANDOFF; control never returns.
            unsafe {
                asm!("jmp {entry}", entry = in(reg) entry,
                     in("rdi") core::ptr::addr_of!(HANDOFF) as u64, options(noreturn))
            }
        }
        Err(why) => {
            fail("kexec-prepare", format_args!("{}", why));
            finish()
        }
    }
}

/// Maps the purgatory and fills the handoff block; returns the purgatory entry.
fn prepare(si: &StartInfo, region: &Region) -> Result<u64, Why> {
    if si.mod_start == 0 || si.mod_len == 0 {
        return why!("no boot module: pass the kexec image as the kernel's module");
    }
    // SAFETY: without MOD_START_PFN, Xen maps the module at mod_start for mod_len bytes in the
    // initial region; it stays mapped and is only read here.
    let bytes =
        unsafe { core::slice::from_raw_parts(si.mod_start as *const u8, si.mod_len as usize) };
    let image = match ImageView::parse(bytes) {
        Ok(i) => i,
        Err(e) => return why!("module is not a kexec image: {:?}", e),
    };
    let Some(index) = image
        .segments()
        .position(|s| s.flags & SEG_FLAG_PURGATORY_MAPPING != 0)
    else {
        return why!("the image has no purgatory segment");
    };
    let seg = image.segment(index);
    let offset = match image.data_offset(index) {
        Ok(o) => o,
        Err(e) => return why!("purgatory segment: {:?}", e),
    };
    let base = image.header.purgatory_base;
    if !si.mod_start.is_multiple_of(PAGE_SIZE)
        || !offset.is_multiple_of(PAGE_SIZE)
        || seg.nr_pages > 511
    {
        return why!("purgatory segment not page aligned in the module or 2 MiB or more");
    }
    map_purgatory(si, region, si.mod_start + offset, seg.nr_pages, base)?;
    println!(
        "PVKEXEC-INFO kexec: purgatory ({} pages) mapped at {:#x}",
        seg.nr_pages, base
    );
    // SAFETY: single VCPU, nothing else touches HANDOFF; the purgatory reads it after the jump.
    unsafe {
        HANDOFF = Handoff {
            magic: HANDOFF_MAGIC,
            version: HANDOFF_VERSION,
            _pad: 0,
            image_va: si.mod_start,
            image_len: si.mod_len,
            old_start_info_va: si as *const StartInfo as u64,
            old_virt_base: VIRT_BASE,
            old_region_pages: (region.end - VIRT_BASE) / PAGE_SIZE,
            reserved_top: RESERVED_TOP,
            // The last entry of the purgatory's L1 stays free (the segment is < 2 MiB).
            scratch_va: base + 511 * PAGE_SIZE,
            _reserved: [0; 3],
        };
    }
    Ok(image.header.purgatory_entry)
}

/// Maps `pages` pages of the module starting at `src_va` at `base`, a lower-half address in an
/// empty L4 slot: three new table frames (L3, L2, L1) taken from the top of the domain's RAM,
/// filled through the scratch page while they are still ordinary writable frames, the scratch
/// mapping put back, and only then hooked into the live L4 with `mmu_update`, which makes Xen
/// validate the new tree.
fn map_purgatory(
    si: &StartInfo,
    region: &Region,
    src_va: u64,
    pages: u64,
    base: u64,
) -> Result<(), Why> {
    let p2m = p2m(si);
    let top = si.nr_pages - 1;
    let (l3_pfn, l2_pfn, l1_pfn) = (top, top - 1, top - 2);
    const _: () = assert!(RESERVED_TOP == 3);
    if region.pfn_va(l1_pfn).is_some() {
        return why!("domain too small: table frames would overlap the initial region");
    }
    let l4_pfn = match region.va_pfn(si.pt_base) {
        Some(p) => p,
        None => return why!("pt_base {:#x} outside the region", si.pt_base),
    };
    // SAFETY: L4 at pt_base is mapped read-only in the region; reading one entry.
    let l4e =
        unsafe { ((si.pt_base + pte::index(base, 4) as u64 * 8) as *const u64).read_volatile() };
    if pte::present(l4e) {
        return why!("L4 slot of {:#x} already in use", base);
    }
    let scratch = core::ptr::addr_of_mut!(SCRATCH) as u64;
    let original = match walk(si, region, scratch) {
        Ok(w) => w.l1e,
        Err(e) => return why!("scratch page: {}", e),
    };
    let frames = [
        (l1_pfn, 1u32, pages, 0u64),
        (l2_pfn, 2, 1, p2m[l1_pfn as usize]),
        (l3_pfn, 3, 1, p2m[l2_pfn as usize]),
    ];
    for (pfn, level, count, lower_mfn) in frames {
        let mfn = p2m[pfn as usize];
        // SAFETY: the scratch page is ours and unreferenced; it points at `mfn`, a free frame
        // beyond the initial region, until the mapping is restored below.
        let mapped = unsafe {
            hypercall::update_va_mapping(
                scratch,
                pte::make(mfn, pte::L1_FLAGS | pte::D),
                uvmf::INVLPG,
            )
        };
        if let Err(e) = mapped {
            return why!("update_va_mapping(scratch -> mfn {:#x}): {}", mfn, e);
        }
        let first = pte::index(base, level);
        for i in 0..512usize {
            let entry = if i >= first && ((i - first) as u64) < count {
                if level == 1 {
                    let src_pfn = (src_va - VIRT_BASE) / PAGE_SIZE + (i - first) as u64;
                    pte::make(p2m[src_pfn as usize], pte::L1_FLAGS | pte::D)
                } else {
                    pte::make(lower_mfn, pte::UPPER_FLAGS)
                }
            } else {
                0
            };
            // SAFETY: the scratch page maps the new table frame writable; 512 u64 fill it.
            unsafe { (scratch as *mut u64).add(i).write_volatile(entry) };
        }
    }
    // SAFETY: restores the scratch page's own frame; the table frames lose their only writable
    // mapping, as Xen requires before they become page tables.
    if let Err(e) = unsafe { hypercall::update_va_mapping(scratch, original, uvmf::INVLPG) } {
        return why!("restoring the scratch mapping: {}", e);
    }
    let hook = [MmuUpdate {
        ptr: (p2m[l4_pfn as usize] * PAGE_SIZE + pte::index(base, 4) as u64 * 8)
            | mmu::NORMAL_PT_UPDATE,
        val: pte::make(p2m[l3_pfn as usize], pte::UPPER_FLAGS),
    }];
    // SAFETY: links a fully built tree of our own frames into an empty L4 slot; no mapping the
    // kernel uses changes.
    match unsafe { hypercall::mmu_update(&hook) } {
        Ok(_) => Ok(()),
        Err(e) => why!(
            "mmu_update(L4[{}] -> L3 mfn {:#x}): {}",
            pte::index(base, 4),
            p2m[l3_pfn as usize],
            e
        ),
    }
}
