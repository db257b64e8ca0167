//! Read-only views of what Xen handed the kernel: the P2M list, Xen's M2P table, and the
//! bootstrap page tables reached from `pt_base`.

use xenpv::{layout, pte, StartInfo, PAGE_SIZE};

/// M2P lookup: the PFN Xen records for `mfn`.
pub fn m2p(mfn: u64) -> u64 {
    let entry = (layout::M2P_VIRT_START + mfn * 8) as *const u64;
    // SAFETY: Xen maps the M2P read-only at M2P_VIRT_START for every PV guest; callers pass MFNs
    // of their own frames, whose entries exist.
    unsafe { entry.read_volatile() }
}

/// The P2M list Xen built: one MFN per PFN, `nr_pages` entries at `mfn_list`.
pub fn p2m(si: &StartInfo) -> &'static [u64] {
    // SAFETY: start_info.mfn_list is a mapped array of nr_pages u64s inside the initial region,
    // which stays mapped and unchanged for the life of the kernel.
    unsafe { core::slice::from_raw_parts(si.mfn_list as *const u64, si.nr_pages as usize) }
}

/// The initial region as the kernel sees it: `virt_base` maps PFN 0 onwards.
#[derive(Clone, Copy)]
pub struct Region {
    pub virt_base: u64,
    /// First virtual address past the mapped initial region.
    pub end: u64,
}

impl Region {
    /// The region as the builders end it: 4 MiB aligned with at least 512 KiB after the boot
    /// stack whose top Xen passed in `rsp`.
    pub fn from_stack_top(virt_base: u64, stack_top: u64) -> Self {
        const FOUR_MIB: u64 = 4 << 20;
        let mut end = (stack_top + FOUR_MIB - 1) & !(FOUR_MIB - 1);
        if end - stack_top < (512 << 10) {
            end += FOUR_MIB;
        }
        Region { virt_base, end }
    }

    /// Virtual address of `pfn` if it lies in the mapped region.
    pub fn pfn_va(&self, pfn: u64) -> Option<u64> {
        let va = self.virt_base.checked_add(pfn.checked_mul(PAGE_SIZE)?)?;
        (va < self.end).then_some(va)
    }

    /// PFN of a virtual address in the region.
    pub fn va_pfn(&self, va: u64) -> Option<u64> {
        (va >= self.virt_base && va < self.end).then(|| (va - self.virt_base) / PAGE_SIZE)
    }
}

/// Why a page-table walk stopped.
#[derive(Clone, Copy, Debug)]
pub enum WalkError {
    /// Level (4..1) whose entry is not present.
    NotPresent { level: u32, entry: u64 },
    /// A table frame whose PFN (from the M2P) is outside the bootstrap table area.
    TableOutsideArea { level: u32, mfn: u64, pfn: u64 },
}

/// One successful translation: the L1 entry and the table frames (PFNs) used, L4 first.
#[derive(Clone, Copy, Debug)]
pub struct Walk {
    pub l1e: u64,
    pub table_pfns: [u64; 4],
}

impl Walk {
    /// Machine address of the L1 entry that maps `va` (for `mmu_update`).
    pub fn l1_slot(&self, p2m: &[u64], va: u64) -> u64 {
        p2m[self.table_pfns[3] as usize] * PAGE_SIZE + pte::index(va, 1) as u64 * 8
    }
}

/// Walks `va` from the L4 at `pt_base`, requiring every table frame to lie in
/// `[pt_pfn, pt_pfn + nr_pt_frames)` (the bootstrap tables), reading tables through the region.
pub fn walk(si: &StartInfo, region: &Region, va: u64) -> Result<Walk, WalkError> {
    let pt_pfn = region.va_pfn(si.pt_base).unwrap_or(u64::MAX);
    let mut table_va = si.pt_base;
    let mut table_pfns = [pt_pfn, 0, 0, 0];
    for level in (1..=4u32).rev() {
        let slot = (table_va + pte::index(va, level) as u64 * 8) as *const u64;
        // SAFETY: table_va is a bootstrap table frame inside the mapped initial region (checked
        // below for every level past the L4, and pt_base is the L4 Xen handed us).
        let entry = unsafe { slot.read_volatile() };
        if !pte::present(entry) {
            return Err(WalkError::NotPresent { level, entry });
        }
        if level == 1 {
            return Ok(Walk {
                l1e: entry,
                table_pfns,
            });
        }
        let mfn = pte::mfn(entry);
        let pfn = m2p(mfn);
        let in_area = pfn >= pt_pfn && pfn < pt_pfn + si.nr_pt_frames;
        match region.pfn_va(pfn) {
            Some(next) if in_area => {
                table_va = next;
                table_pfns[(5 - level) as usize] = pfn;
            }
            _ => return Err(WalkError::TableOutsideArea { level, mfn, pfn }),
        }
    }
    unreachable!("the loop returns at level 1")
}

impl core::fmt::Display for WalkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            WalkError::NotPresent { level, entry } => {
                write!(f, "L{} entry {:#x} not present", level, entry)
            }
            WalkError::TableOutsideArea { level, mfn, pfn } => write!(
                f,
                "L{} entry points at mfn {:#x} (pfn {:#x}) outside the bootstrap tables",
                level, mfn, pfn
            ),
        }
    }
}
