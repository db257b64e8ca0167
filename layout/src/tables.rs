//! Bootstrap page-table frames: how many cover a region (plus an optional extra page), and
//! which frame maps what, in the order a builder allocates them.

use crate::Range;
use alloc::vec::Vec;

/// One table frame of the bootstrap tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFrame {
    /// 4 = L4 .. 1 = L1.
    pub level: u8,
    /// Virtual span this table translates (the whole address space for the L4).
    pub covers: Range,
    /// PFN of the frame in the new domain.
    pub pfn: u64,
}

/// Span shift of one table of `level` (an L1 covers 2 MiB, an L2 1 GiB, an L3 512 GiB).
pub(crate) fn span_shift(level: u8) -> u32 {
    12 + 9 * level as u32
}

/// Indices (VA >> span) of the tables of `level` that `[lo, hi)` needs.
pub(crate) fn spans(lo: u64, hi: u64, level: u8) -> core::ops::RangeInclusive<u64> {
    let s = span_shift(level);
    (lo >> s)..=((hi - 1) >> s)
}

/// Tables per level (index 1..=3; index 0 unused) needed for `[lo, hi)` plus `extra` page,
/// and the extra page's additional tables in order L3, L2, L1 (those the region does not share).
pub(crate) fn extra_tables(lo: u64, hi: u64, extra: Option<u64>) -> Vec<(u8, u64)> {
    let mut out = Vec::new();
    if let Some(page) = extra {
        for level in [3u8, 2, 1] {
            let idx = page >> span_shift(level);
            if !spans(lo, hi, level).contains(&idx) {
                out.push((level, idx));
            }
        }
    }
    out
}

/// Number of table frames (1 L4 + L3s + L2s + L1s) covering `[lo, hi)` and the extra page.
pub fn count_tables(lo: u64, hi: u64, extra: Option<u64>) -> u64 {
    let region: u64 = [3u8, 2, 1]
        .iter()
        .map(|&l| {
            let r = spans(lo, hi, l);
            r.end() - r.start() + 1
        })
        .sum();
    1 + region + extra_tables(lo, hi, extra).len() as u64
}

/// The covered span of a table of `level` with span index `idx` (`end` wraps to 0 for the
/// last span of the address space; compare span indices rather than `end`).
pub(crate) fn cover(level: u8, idx: u64) -> Range {
    let s = span_shift(level);
    let start = idx << s;
    // Sign-extend into the canonical upper half where bit 47 is set.
    let canon = |v: u64| {
        if v & (1 << 47) != 0 {
            v | 0xFFFF_0000_0000_0000
        } else {
            v
        }
    };
    Range {
        start: canon(start),
        end: canon(start).wrapping_add(1 << s),
    }
}

/// One bootstrap table's contents in PFN terms: each present entry holds `pfn << 12 | flags`;
/// the purgatory turns PFNs into MFNs when it writes the real tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableImage {
    pub pfn: u64,
    pub level: u8,
    pub entries: alloc::boxed::Box<[u64; 512]>,
}

/// Builds the bootstrap tables of `plan` in PFN terms, as the builders fill them: every page
/// of the region mapped `P|RW|A` at its own PFN, except the page-table frames, mapped read-only
/// (`P|A`); upper levels `P|RW|A|D|US`; the trampoline page (if planned) mapped `P|RW|A` at
/// `trampoline_pfn`. Table frames are returned in the plan's allocation order.
pub fn build_tables(
    plan: &crate::Plan,
    trampoline_pfn: Option<u64>,
) -> Result<Vec<TableImage>, crate::PlanError> {
    use xenpv::pte;
    let mut tables: Vec<TableImage> = plan
        .table_frames
        .iter()
        .map(|f| TableImage {
            pfn: f.pfn,
            level: f.level,
            entries: alloc::boxed::Box::new([0u64; 512]),
        })
        .collect();
    let find = |tables: &[TableImage], level: u8, va: u64| -> Option<usize> {
        let frames = &plan.table_frames;
        (0..tables.len()).find(|&i| {
            frames[i].level == level
                && (level == 4
                    || va >> span_shift(level) == frames[i].covers.start >> span_shift(level))
        })
    };
    let map = |tables: &mut Vec<TableImage>, va: u64, pfn: u64, flags: u64| {
        let mut idx = [0usize; 5];
        for level in (1..=4u8).rev() {
            idx[level as usize] = find(tables, level, va).ok_or(crate::PlanError::Unsupported(
                "page not covered by the planned tables",
            ))?;
        }
        for level in (2..=4u8).rev() {
            let lower = tables[idx[level as usize - 1]].pfn;
            let slot = pte::index(va, level as u32);
            tables[idx[level as usize]].entries[slot] = pte::make(lower, pte::UPPER_FLAGS);
        }
        tables[idx[1]].entries[pte::index(va, 1)] = pte::make(pfn, flags);
        Ok::<(), crate::PlanError>(())
    };
    let pt = plan.page_tables;
    let mut va = plan.region.start;
    while va < plan.region.end {
        let pfn = (va - plan.virt_base) / crate::PAGE_SIZE;
        let flags = if va >= pt.start && va < pt.end {
            pte::L1_FLAGS_RO
        } else {
            pte::L1_FLAGS
        };
        map(&mut tables, va, pfn, flags)?;
        va += crate::PAGE_SIZE;
    }
    match (plan.trampoline, trampoline_pfn) {
        (Some(t), Some(pfn)) => map(&mut tables, t, pfn, pte::L1_FLAGS)?,
        (None, None) => {}
        _ => {
            return Err(crate::PlanError::Unsupported(
                "a trampoline page needs both its address in the plan and its PFN",
            ))
        }
    }
    Ok(tables)
}

/// How a kexec maps a relocated P2M (INIT_P2M): in 4 KiB pages at the P2M's address, through
/// its own L3, L2 and L1 tables, all numbered from `first_p2m_pfn`. In the domU layout the P2M
/// frames come first and the tables (L3, then the L2s, then the L1s) after them, as
/// libxenguest's `phys2mach` segment; in the dom0 layout the tables come first (Xen's dom0
/// builder may use superpages instead, which a kernel must accept but need not get).
/// `first_p2m_pfn`/`nr_p2m_frames` cover tables and frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct P2mMapping {
    pub tables: Vec<TableImage>,
    /// PFN of the first P2M frame and how many there are.
    pub data_pfn: u64,
    pub data_pages: u64,
    /// The region L4's slot for the P2M and its entry (PFN terms).
    pub l4_slot: usize,
    pub l4_entry: u64,
    /// Tables plus P2M frames.
    pub nr_frames: u64,
}

/// Builds the [`P2mMapping`] of `plan` (which must have a relocated P2M) from `first_pfn`.
pub fn build_p2m_mapping(
    plan: &crate::Plan,
    first_pfn: u64,
) -> Result<P2mMapping, crate::PlanError> {
    use xenpv::pte;
    if !plan.p2m_relocated {
        return Err(crate::PlanError::Unsupported(
            "the plan has no relocated P2M to map",
        ));
    }
    let (lo, hi) = (
        plan.p2m.start,
        plan.p2m.end.next_multiple_of(crate::PAGE_SIZE),
    );
    if lo % crate::PAGE_SIZE != 0 || hi <= lo {
        return Err(crate::PlanError::BadAddress {
            what: "INIT_P2M",
            value: lo,
        });
    }
    if spans(lo, hi, 3).count() != 1 {
        return Err(crate::PlanError::Unsupported(
            "a relocated P2M spanning two L4 slots",
        ));
    }
    let (l2s, l1s) = (spans(lo, hi, 2), spans(lo, hi, 1));
    let nr_l2 = l2s.end() - l2s.start() + 1;
    let nr_l1 = l1s.end() - l1s.start() + 1;
    let data_pages = (hi - lo) / crate::PAGE_SIZE;
    // libxenguest puts the P2M's frames first and its tables after them; the dom0 kexec layout
    // puts the tables first.
    let (tables_pfn, data_pfn) = match plan.mode {
        crate::Mode::DomU => (first_pfn + data_pages, first_pfn),
        crate::Mode::Dom0 => (first_pfn, first_pfn + 1 + nr_l2 + nr_l1),
    };
    let l3_pfn = tables_pfn;
    let l2_pfn = |i: u64| tables_pfn + 1 + i;
    let l1_pfn = |i: u64| tables_pfn + 1 + nr_l2 + i;
    let new = |pfn: u64, level: u8| TableImage {
        pfn,
        level,
        entries: alloc::boxed::Box::new([0u64; 512]),
    };
    let mut l3 = new(l3_pfn, 3);
    let mut l2: Vec<TableImage> = (0..nr_l2).map(|i| new(l2_pfn(i), 2)).collect();
    let mut l1: Vec<TableImage> = (0..nr_l1).map(|i| new(l1_pfn(i), 1)).collect();
    for page in 0..data_pages {
        let va = lo + page * crate::PAGE_SIZE;
        let i2 = (va >> span_shift(2)) - l2s.start();
        let i1 = (va >> span_shift(1)) - l1s.start();
        l3.entries[pte::index(va, 3)] = pte::make(l2[i2 as usize].pfn, pte::UPPER_FLAGS);
        l2[i2 as usize].entries[pte::index(va, 2)] =
            pte::make(l1[i1 as usize].pfn, pte::UPPER_FLAGS);
        l1[i1 as usize].entries[pte::index(va, 1)] = pte::make(data_pfn + page, pte::L1_FLAGS);
    }
    let mut tables = alloc::vec![l3];
    tables.append(&mut l2);
    tables.append(&mut l1);
    Ok(P2mMapping {
        nr_frames: tables.len() as u64 + data_pages,
        tables,
        data_pfn,
        data_pages,
        l4_slot: pte::index(lo, 4),
        l4_entry: pte::make(l3_pfn, pte::UPPER_FLAGS),
    })
}
