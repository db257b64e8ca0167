//! Xen 4.17's initial-domain builder (`xen/arch/x86/pv/dom0_build.c`, `dom0_construct_pv`).
//!
//! - kernel at `[virt_kstart, virt_kend)`; initrd right after it unless MOD_START_PFN;
//!   P2M (`nr_pages * 8` bytes, not page rounded) unless INIT_P2M; start_info + 40-byte VGA
//!   console info; page tables; one stack page; end rounded up to 4 MiB with >= 512 KiB after
//!   the stack.
//! - Table count: smallest `n >= 2` with `1 + NR(39) + NR(30) + NR(21) <= n` over
//!   `[v_start, v_end)` (here plus the extra page's own tables).
//! - Allocation: `order = get_order_from_bytes(v_end - v_start - mapped initrd)`; Xen panics
//!   "Domain 0 allocation is too small" when `2^order + initrd pages > nr_pages`.
//! - With INIT_P2M the P2M takes no room in the region and is reported at `p2m_base`.
//! - An unmapped initrd starts at PFN `2^order` (`d->tot_pages` after the first allocation).

use crate::tables::{count_tables, cover, extra_tables, span_shift};
use crate::*;
use alloc::string::ToString;
use alloc::vec::Vec;

const FOUR_MIB: u64 = 4 << 20;

pub(crate) fn plan(req: &PlanRequest) -> Result<Plan, PlanError> {
    let k = &req.kernel;
    let initrd_len = req.initrd_len.unwrap_or(0);
    let unmapped_initrd = k.mod_start_pfn;
    let v_start = k.virt_base;
    let (vinitrd_start, vinitrd_end, vphysmap_start) = if unmapped_initrd || initrd_len == 0 {
        (0, 0, round_up(k.virt_kend, PAGE_SIZE)?)
    } else {
        let s = round_up(k.virt_kend, PAGE_SIZE)?;
        let e = add(s, initrd_len, "initrd end")?;
        (s, e, round_up(e, PAGE_SIZE)?)
    };
    let p2m_bytes = req
        .nr_pages
        .checked_mul(8)
        .ok_or(PlanError::Overflow("P2M size"))?;
    let vphysmap_end = if k.init_p2m.is_some() {
        vphysmap_start
    } else {
        add(vphysmap_start, p2m_bytes, "P2M end")?
    };
    let vstartinfo_start = round_up(vphysmap_end, PAGE_SIZE)?;
    let vstartinfo_end = add(
        vstartinfo_start,
        START_INFO_SIZE + DOM0_VGA_INFO_SIZE,
        "start_info end",
    )?;
    let vpt_start = round_up(vstartinfo_end, PAGE_SIZE)?;

    let mut nr_pt_pages = 2u64;
    let (vpt_end, vstack_start, vstack_end, v_end) = loop {
        let vpt_end = add(vpt_start, nr_pt_pages * PAGE_SIZE, "page tables end")?;
        let vstack_end = add(vpt_end, PAGE_SIZE, "stack end")?;
        let mut v_end = round_up(vstack_end, FOUR_MIB)?;
        if v_end - vstack_end < (512 << 10) {
            v_end = add(v_end, FOUR_MIB, "padded end")?;
        }
        let tables = count_tables(v_start, v_end, req.trampoline);
        if tables > MAX_TABLE_FRAMES {
            return Err(PlanError::RegionTooLarge { tables });
        }
        if tables <= nr_pt_pages {
            break (vpt_end, vpt_end, vstack_end, v_end);
        }
        // The builder adds one page per round; the count only grows with the region, so no
        // count between here and `tables` can fit and jumping there finds the same answer.
        nr_pt_pages = tables;
    };

    let mut count = v_end - v_start;
    if vinitrd_start != 0 {
        count -= round_up(initrd_len, PAGE_SIZE)?;
    }
    let order_pages = (count / PAGE_SIZE).next_power_of_two();
    let initrd_pages = initrd_len.div_ceil(PAGE_SIZE);
    if order_pages + initrd_pages > req.nr_pages {
        return Err(PlanError::TooSmall {
            needed: order_pages + initrd_pages,
            nr_pages: req.nr_pages,
        });
    }
    let (p2m, p2m_relocated) = match k.init_p2m {
        Some(base) => (
            Range {
                start: base,
                end: add(base, p2m_bytes, "INIT_P2M end")?,
            },
            true,
        ),
        None => (
            Range {
                start: vphysmap_start,
                end: vphysmap_end,
            },
            false,
        ),
    };

    let initrd = match (initrd_len, vinitrd_start) {
        (0, _) => None,
        (_, 0) => Some(InitrdPlacement::Unmapped { pfn: order_pages }),
        (_, s) => Some(InitrdPlacement::Mapped(Range {
            start: s,
            end: vinitrd_end,
        })),
    };
    // Xen assigns the initrd's pages to the domain before it numbers the P2M, so with an
    // initrd `d->tot_pages` (and first_p2m_pfn) includes them.
    let first_p2m_pfn = order_pages + initrd_pages;
    let mut flags = xenpv::sif::PRIVILEGED | xenpv::sif::INITDOMAIN;
    if matches!(initrd, Some(InitrdPlacement::Unmapped { .. })) {
        flags |= xenpv::sif::MOD_START_PFN;
    }
    let mod_start = match initrd {
        None => 0,
        Some(InitrdPlacement::Mapped(r)) => r.start,
        Some(InitrdPlacement::Unmapped { pfn }) => pfn,
    };
    let table_frames = frames(v_start, v_end, vpt_start, req.trampoline);
    debug_assert!(table_frames.len() as u64 <= nr_pt_pages);
    Ok(Plan {
        mode: Mode::Dom0,
        virt_base: v_start,
        kernel: Range {
            start: k.virt_kstart,
            end: k.virt_kend,
        },
        initrd,
        p2m,
        p2m_relocated,
        start_info: Range {
            start: vstartinfo_start,
            end: vstartinfo_end,
        },
        xenstore: None,
        console: None,
        page_tables: Range {
            start: vpt_start,
            end: vpt_end,
        },
        table_frames,
        stack: Range {
            start: vstack_start,
            end: vstack_end,
        },
        region: Range {
            start: v_start,
            end: v_end,
        },
        entry: k.entry,
        rsp: vstack_end,
        start_info_fields: StartInfoPlan {
            address: vstartinfo_start,
            magic: if k.pae_mode_yes {
                "xen-3.0-x86_64p"
            } else {
                "xen-3.0-x86_64"
            }
            .to_string(),
            nr_pages: req.nr_pages,
            flags,
            pt_base: vpt_start,
            nr_pt_frames: nr_pt_pages,
            mfn_list: p2m.start,
            mod_start,
            mod_len: initrd_len,
            first_p2m_pfn,
            nr_p2m_frames: if p2m_relocated { None } else { Some(0) },
        },
        trampoline: req.trampoline,
        builder_log: Vec::new(),
    })
}

/// Table frames in dom0_build.c's allocation order: the L4, then walking the region page by
/// page, a new L1 at each 2 MiB boundary followed, at 1 GiB and 512 GiB boundaries, by a new
/// L2 and L3. The extra page's tables follow (L3, L2, L1 as needed).
fn frames(v_start: u64, v_end: u64, vpt_start: u64, extra: Option<u64>) -> Vec<TableFrame> {
    let mut out = Vec::new();
    let mut pfn = (vpt_start - v_start) / PAGE_SIZE;
    let mut push = |level: u8, idx: u64, out: &mut Vec<TableFrame>| {
        out.push(TableFrame {
            level,
            covers: cover(level, idx),
            pfn,
        });
        pfn += 1;
    };
    push(4, 0, &mut out);
    out[0].covers = Range {
        start: 0,
        end: u64::MAX,
    };
    let mut va = v_start;
    let mut first = true;
    while va < v_end {
        push(1, va >> span_shift(1), &mut out);
        if first || va & ((1 << span_shift(2)) - 1) == 0 {
            push(2, va >> span_shift(2), &mut out);
            if first || va & ((1 << span_shift(3)) - 1) == 0 {
                push(3, va >> span_shift(3), &mut out);
            }
        }
        first = false;
        va = (va | ((1 << span_shift(1)) - 1)).wrapping_add(1);
        if va == 0 {
            break;
        }
    }
    for (level, idx) in extra_tables(v_start, v_end, extra) {
        push(level, idx, &mut out);
    }
    out
}
