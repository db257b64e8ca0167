//! The toolstack's domain builder (Xen 4.17 `tools/libs/guest/xg_dom_core.c`
//! `xc_dom_build_image`, `xg_dom_x86.c` `alloc_p2m_list_x86_64`, `alloc_magic_pages_pv`,
//! `alloc_pgtables_pv`).
//!
//! Segments are allocated upwards from the kernel: kernel (pages between `virt_base` and
//! `virt_kstart` are padding), initrd, P2M (`nr_pages * 8` bytes in whole pages), start_info,
//! xenstore, console, page tables, boot stack. The page-table count is found by a loop: with
//! `extra = 1 + 128` pages (stack and 512 KiB of padding), `end = (alloc_end + pages * 4K) |
//! (4 MiB - 1)`, the tables covering `[virt_base, end]` are counted and `pages = tables +
//! extra` until the count no longer grows; the region ends at `end + 1`.
//!
//! Not reproduced (refused with [`PlanError::Unsupported`]): INIT_P2M (the P2M and its own
//! tables after the region) and the unmapped-initrd (MOD_START_PFN) form.

use crate::tables::{count_tables, cover, extra_tables, spans};
use crate::*;
use alloc::string::ToString;
use alloc::vec::Vec;

const FOUR_MIB: u64 = 4 << 20;
const EXTRA_PAGES: u64 = 1 + 128;

pub(crate) fn plan(req: &PlanRequest) -> Result<Plan, PlanError> {
    let k = &req.kernel;
    if k.init_p2m.is_some() {
        return Err(PlanError::Unsupported(
            "domU layout of a kernel with INIT_P2M (relocated P2M)",
        ));
    }
    let initrd_len = req.initrd_len.unwrap_or(0);
    if k.mod_start_pfn && initrd_len > 0 {
        return Err(PlanError::Unsupported(
            "domU layout of an unmapped (MOD_START_PFN) initrd",
        ));
    }
    let v_start = k.virt_base;
    let mut alloc_end = v_start;
    let segment = |alloc_end: &mut u64, start: Option<u64>, bytes: u64| {
        let start = start.unwrap_or(*alloc_end);
        if start < *alloc_end {
            return Err(PlanError::BadKernel("segment below the allocation end"));
        }
        let end = add(start, round_up(bytes, PAGE_SIZE)?, "segment end")?;
        *alloc_end = end;
        Ok(Range { start, end })
    };
    let kernel_seg = segment(
        &mut alloc_end,
        Some(k.virt_kstart),
        k.virt_kend - k.virt_kstart,
    )?;
    let initrd = if initrd_len > 0 {
        let r = segment(&mut alloc_end, None, initrd_len)?;
        Some(InitrdPlacement::Mapped(Range {
            start: r.start,
            end: r.start + initrd_len,
        }))
    } else {
        None
    };
    let p2m_bytes = req
        .nr_pages
        .checked_mul(8)
        .ok_or(PlanError::Overflow("P2M size"))?;
    let p2m = segment(&mut alloc_end, None, p2m_bytes)?;
    let start_info = segment(&mut alloc_end, None, PAGE_SIZE)?;
    let xenstore = segment(&mut alloc_end, None, PAGE_SIZE)?.start;
    let console = segment(&mut alloc_end, None, PAGE_SIZE)?.start;

    let mut pages = EXTRA_PAGES;
    let (tables, end) = loop {
        let end = add(alloc_end, pages * PAGE_SIZE, "page-table sizing")? | (FOUR_MIB - 1);
        let tables = count_tables(v_start, add(end, 1, "region end")?, req.trampoline);
        if tables > MAX_TABLE_FRAMES {
            return Err(PlanError::RegionTooLarge { tables });
        }
        if tables + EXTRA_PAGES <= pages {
            break (tables, end);
        }
        pages = tables + EXTRA_PAGES;
    };
    let page_tables = segment(&mut alloc_end, None, tables * PAGE_SIZE)?;
    let stack = segment(&mut alloc_end, None, PAGE_SIZE)?;
    let v_end = end + 1;
    if stack.end > v_end {
        return Err(PlanError::Overflow("boot stack past the region"));
    }
    let needed = (v_end - v_start) / PAGE_SIZE;
    if needed > req.nr_pages {
        return Err(PlanError::TooSmall {
            needed,
            nr_pages: req.nr_pages,
        });
    }
    let table_frames = frames(v_start, v_end, page_tables.start, req.trampoline);
    let mut flags = xenpv::sif::VIRT_P2M_4TOOLS;
    if k.mod_start_pfn && initrd_len > 0 {
        flags |= xenpv::sif::MOD_START_PFN;
    }
    Ok(Plan {
        mode: Mode::DomU,
        virt_base: v_start,
        kernel: Range {
            start: k.virt_kstart,
            end: k.virt_kend.max(kernel_seg.start),
        },
        initrd,
        p2m: Range {
            start: p2m.start,
            end: p2m.start + p2m_bytes,
        },
        p2m_relocated: false,
        start_info: Range {
            start: start_info.start,
            end: start_info.start + START_INFO_SIZE,
        },
        xenstore: Some(xenstore),
        console: Some(console),
        page_tables,
        table_frames,
        stack,
        region: Range {
            start: v_start,
            end: v_end,
        },
        entry: k.entry,
        rsp: stack.end,
        start_info_fields: StartInfoPlan {
            address: start_info.start,
            magic: "xen-3.0-x86_64".to_string(),
            nr_pages: req.nr_pages,
            flags,
            pt_base: page_tables.start,
            nr_pt_frames: tables,
            mfn_list: p2m.start,
            mod_start: match initrd {
                Some(InitrdPlacement::Mapped(r)) => r.start,
                _ => 0,
            },
            mod_len: initrd_len,
            first_p2m_pfn: 0,
            nr_p2m_frames: Some(0),
        },
        trampoline: req.trampoline,
    })
}

/// Table frames in `alloc_pgtables_pv` order: the L4, all L3s, all L2s, all L1s (each level in
/// address order), then the extra page's tables.
fn frames(v_start: u64, v_end: u64, pt_start: u64, extra: Option<u64>) -> Vec<TableFrame> {
    let mut out = Vec::new();
    let mut pfn = (pt_start - v_start) / PAGE_SIZE;
    out.push(TableFrame {
        level: 4,
        covers: Range {
            start: 0,
            end: u64::MAX,
        },
        pfn,
    });
    pfn += 1;
    for level in [3u8, 2, 1] {
        for idx in spans(v_start, v_end, level) {
            out.push(TableFrame {
                level,
                covers: cover(level, idx),
                pfn,
            });
            pfn += 1;
        }
    }
    for (level, idx) in extra_tables(v_start, v_end, extra) {
        out.push(TableFrame {
            level,
            covers: cover(level, idx),
            pfn,
        });
        pfn += 1;
    }
    out
}
