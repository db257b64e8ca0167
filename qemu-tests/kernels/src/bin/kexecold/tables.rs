//! The kernel's mappings besides its initial region: the purgatory at the image's lower-half
//! base and a direct map of all RAM at Linux's `page_offset_base`, each a tree hooked into an
//! empty slot of the kernel's L4; and the descriptor and event frames, filled while they are
//! still writable.

use crate::fill::Filler;
use crate::frames::Layout;
use crate::gdt;
use crate::image::Purgatory;
use guestrt::println;
use kernelrt::report::Why;
use kernelrt::view::Region;
use kernelrt::why;
use xenpv::{hypercall, mmu, pte, MmuUpdate, StartInfo, PAGE_SIZE};

/// Linux's direct-map base (`page_offset_base` without KASLR): L4 slot 273, L3 index 0.
pub const DIRECT_MAP: u64 = 0xffff_8880_0000_0000;

/// The kernel's L4 (Xen's bootstrap one at `pt_base`, mapped read-only in the region).
pub struct KernelL4 {
    va: u64,
    pfn: u64,
    pub mfn: u64,
    /// The L4 slots the purgatory and the direct map take.
    purgatory_slot: usize,
    direct_map_slot: usize,
}

impl KernelL4 {
    /// The kernel's L4, with the two slots it hooks trees into still empty.
    pub fn find(si: &StartInfo, region: &Region, p2m: &[u64], base: u64) -> Result<Self, Why> {
        let Some(pfn) = region.va_pfn(si.pt_base) else {
            return why!("pt_base {:#x} outside the region", si.pt_base);
        };
        let l4 = KernelL4 {
            va: si.pt_base,
            pfn,
            mfn: p2m[pfn as usize],
            purgatory_slot: pte::index(base, 4),
            direct_map_slot: pte::index(DIRECT_MAP, 4),
        };
        let (p, d) = (l4.purgatory_slot, l4.direct_map_slot);
        if pte::present(l4.entry(p)) || pte::present(l4.entry(d)) {
            return why!("L4 slot {} or {} already in use", p, d);
        }
        Ok(l4)
    }

    /// Entry `i` of the L4.
    pub fn entry(&self, i: usize) -> u64 {
        // SAFETY: the L4 at pt_base is mapped read-only in the region; reading one entry.
        unsafe { ((self.va + i as u64 * 8) as *const u64).read_volatile() }
    }

    /// Whether `pfn` is one of the bootstrap page-table frames (from `pt_base` on).
    fn bootstrap_table(&self, si: &StartInfo, pfn: u64) -> bool {
        pfn >= self.pfn && pfn < self.pfn + si.nr_pt_frames
    }
}

/// Builds both trees and the descriptor and event frames, then links the trees into the L4.
pub fn map(
    f: &mut Filler,
    si: &StartInfo,
    p2m: &[u64],
    l: &Layout,
    purgatory: &Purgatory,
    l4: &KernelL4,
) -> Result<(), Why> {
    let upper = |pfn: u64| pte::make(p2m[pfn as usize], pte::UPPER_FLAGS);
    purgatory_tree(f, p2m, l, purgatory, upper)?;
    direct_map_tree(f, si, p2m, l, l4, upper)?;
    descriptor_and_event_frames(f, l)?;
    f.done()?;
    let [p_l3, _, _] = l.purgatory_tables;
    let hooks = [
        MmuUpdate {
            ptr: (l4.mfn * PAGE_SIZE + l4.purgatory_slot as u64 * 8) | mmu::NORMAL_PT_UPDATE,
            val: upper(p_l3),
        },
        MmuUpdate {
            ptr: (l4.mfn * PAGE_SIZE + l4.direct_map_slot as u64 * 8) | mmu::NORMAL_PT_UPDATE,
            val: upper(l.dm_l3),
        },
    ];
    // SAFETY: links two fully built trees of the kernel side's own frames into empty L4
    // slots; Xen validates them, and no mapping the kernel uses changes.
    if let Err(e) = unsafe { hypercall::mmu_update(&hooks) } {
        return why!(
            "mmu_update(L4[{}], L4[{}]): {}",
            l4.purgatory_slot,
            l4.direct_map_slot,
            e
        );
    }
    println!(
        "PVKEXEC-INFO kexec: purgatory ({} pages) mapped at {:#x}; direct map of {} frames at {:#x} ({} L1 tables)",
        purgatory.nr_pages, purgatory.base, si.nr_pages, DIRECT_MAP, l.nr_l1
    );
    Ok(())
}

/// The purgatory's L3 -> L2 -> L1 -> the image's purgatory pages.
fn purgatory_tree(
    f: &mut Filler,
    p2m: &[u64],
    l: &Layout,
    purgatory: &Purgatory,
    upper: impl Fn(u64) -> u64,
) -> Result<(), Why> {
    let [p_l3, p_l2, p_l1] = l.purgatory_tables;
    let base = purgatory.base;
    let first = pte::index(base, 1);
    f.fill(p_l1, |i| {
        let k = i.wrapping_sub(first) as u64;
        if i >= first && k < purgatory.nr_pages {
            pte::make(
                p2m[(purgatory.first_pfn + k) as usize],
                pte::L1_FLAGS | pte::D,
            )
        } else {
            0
        }
    })?;
    f.fill(p_l2, |i| {
        if i == pte::index(base, 2) {
            upper(p_l1)
        } else {
            0
        }
    })?;
    f.fill(p_l3, |i| {
        if i == pte::index(base, 3) {
            upper(p_l2)
        } else {
            0
        }
    })
}

/// The direct map: every PFN, writable unless it is a page or descriptor table.
fn direct_map_tree(
    f: &mut Filler,
    si: &StartInfo,
    p2m: &[u64],
    l: &Layout,
    l4: &KernelL4,
    upper: impl Fn(u64) -> u64,
) -> Result<(), Why> {
    let is_table = |pfn: u64| l4.bootstrap_table(si, pfn) || pfn >= l.floor;
    for k in 0..l.nr_l1 {
        f.fill(l.dm_l1 - k, |i| {
            let pfn = k * 512 + i as u64;
            if pfn >= si.nr_pages {
                0
            } else if is_table(pfn) {
                pte::make(p2m[pfn as usize], pte::L1_FLAGS_RO)
            } else {
                pte::make(p2m[pfn as usize], pte::L1_FLAGS | pte::D)
            }
        })?;
    }
    for j in 0..l.nr_l2 {
        f.fill(l.dm_l2 - j, |i| {
            let k = j * 512 + i as u64;
            if k < l.nr_l1 {
                upper(l.dm_l1 - k)
            } else {
                0
            }
        })?;
    }
    f.fill(l.dm_l3, |i| {
        if (i as u64) < l.nr_l2 {
            upper(l.dm_l2 - i as u64)
        } else {
            0
        }
    })
}

/// Zeroed frames Xen will map (FIFO control blocks, placed `vcpu_info`, the event array) and
/// every VCPU's GDT.
fn descriptor_and_event_frames(f: &mut Filler, l: &Layout) -> Result<(), Why> {
    let n = l.nr_vcpus as usize;
    for &c in l.fifo[..n]
        .iter()
        .chain(&l.vcpu_info[..n])
        .chain(core::iter::once(&l.event_array))
    {
        f.fill(c, |_| 0)?;
    }
    for &g in core::iter::once(&l.gdt).chain(&l.ap_gdt[1..n]) {
        f.fill(g, gdt::entries)?;
    }
    Ok(())
}
