//! The toolstack's domain builder, as libxl drives it for a 64-bit PV domU (Xen 4.17
//! `tools/libs/guest/xg_dom_core.c` `xc_dom_build_image`, `xc_dom_alloc_segment`,
//! `xc_dom_alloc_page`, `xc_dom_build_module`; `xg_dom_x86.c` `count_pgtables`,
//! `alloc_pgtables_pv`, `alloc_p2m_list_x86_64`, `alloc_magic_pages_pv`, `start_info_x86_64`).
//!
//! Allocation is one cursor (`virt_alloc_end`, `pfn_alloc_end`) moving upwards from
//! `virt_base`, PFN 0 at `virt_base`:
//! - the kernel at `virt_kstart` (the pages below it are padding, free RAM to the kernel);
//! - a mapped initrd (no MOD_START_PFN) as `module0`;
//! - without INIT_P2M the P2M (`phys2mach`, `nr_pages * 8` bytes in whole pages);
//! - `start info`, `xenstore`, `console` pages; the bootstrap tables (`count_pgtables` over
//!   `[virt_base, virt_pgtab_end)`, sized by `alloc_pgtables_pv`'s loop); the `boot stack`;
//! - padding up to `virt_pgtab_end`, then an unmapped initrd (MOD_START_PFN) as `module0`;
//! - with INIT_P2M the `phys2mach` segment: the P2M's frames, then its own tables (the second
//!   `count_pgtables` mapping: L3s, L2s, L1s the first mapping does not have), mapped at the
//!   kernel's INIT_P2M address; start_info names it with `first_p2m_pfn`/`nr_p2m_frames`.
//!
//! A gzip'd module is gunzipped by libxenguest and takes `max(ISIZE + 16, file size)` bytes
//! ([`module_len`]). libxl replaces the builder's default flags with 0, so start_info's flags
//! are 0, or SIF_MOD_START_PFN with an unmapped initrd.
//!
//! Each allocation is logged as libxenguest logs it (`xl -vvv create`), in [`Plan::builder_log`].
//! The kexec trampoline page (not libxenguest's) adds its tables to the first mapping's count.

use crate::tables::{cover, extra_tables, spans};
use crate::*;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Pages after the boot stack that `alloc_pgtables_pv` keeps mapped: the stack and 512 KiB.
const EXTRA_PAGES: u64 = 1 + 128;
/// `bits_to_mask(VIRT_BITS_X86_64)`: count_pgtables works on 48-bit addresses.
const VADDR_MASK: u64 = (1 << 48) - 1;
/// XC_DOM_DECOMPRESS_MAX: a gzip ISIZE above this is not trusted (no gunzip).
const DECOMPRESS_MAX: u64 = 1 << 30;

/// How many bytes libxenguest places for a module `blob` in a domU: a gzip'd blob (magic
/// `1f 8b`, at least 6 bytes, ISIZE at most 1 GiB) is gunzipped into `ISIZE + 16` bytes (or the
/// blob's size if larger); any other blob keeps its size (`xc_dom_check_gzip`,
/// `xc_dom_build_module`).
pub fn module_len(blob: &[u8]) -> u64 {
    let size = blob.len() as u64;
    if blob.len() < 6 || !blob.starts_with(&[0x1f, 0x8b]) {
        return size;
    }
    let mut isize = [0u8; 4];
    isize.copy_from_slice(&blob[blob.len() - 4..]);
    let unzip = u32::from_le_bytes(isize) as u64;
    if unzip > DECOMPRESS_MAX {
        return size;
    }
    (unzip + 16).max(size)
}

/// One level of a `count_pgtables` mapping: the tables of that level cover `[from, to]`.
#[derive(Clone, Copy, Default)]
struct Level {
    from: u64,
    to: u64,
    pfn: u64,
    tables: u64,
}

/// A `count_pgtables` mapping: `lv[0]` is L1 .. `lv[3]` the L4.
#[derive(Clone, Copy, Default)]
struct Mapping {
    from: u64,
    to: u64,
    lv: [Level; 4],
    tables: u64,
    /// A level lost tables to an earlier mapping (their tables are shared).
    shares: bool,
}

/// The builder's state: one allocation cursor and the log.
struct Builder {
    virt_alloc_end: u64,
    pfn_alloc_end: u64,
    total_pages: u64,
    log: Vec<String>,
}

impl Builder {
    /// `xc_dom_chk_alloc_pages`.
    fn take(&mut self, pages: u64) -> Result<(), PlanError> {
        if pages > self.total_pages || self.pfn_alloc_end > self.total_pages {
            return Err(self.too_small(pages));
        }
        if pages > self.total_pages - self.pfn_alloc_end {
            return Err(self.too_small(pages));
        }
        self.pfn_alloc_end += pages;
        self.virt_alloc_end = pages
            .checked_mul(PAGE_SIZE)
            .and_then(|b| self.virt_alloc_end.checked_add(b))
            .ok_or(PlanError::Overflow("virt_alloc_end"))?;
        Ok(())
    }

    fn too_small(&self, pages: u64) -> PlanError {
        PlanError::TooSmall {
            needed: self.pfn_alloc_end.saturating_add(pages),
            nr_pages: self.total_pages,
        }
    }

    /// `xc_dom_alloc_pad`.
    fn pad(&mut self, boundary: u64) -> Result<(), PlanError> {
        if !boundary.is_multiple_of(PAGE_SIZE) {
            return Err(PlanError::BadAddress {
                what: "segment boundary",
                value: boundary,
            });
        }
        if boundary < self.virt_alloc_end {
            return Err(PlanError::BadKernel(
                "segment boundary below the allocation end",
            ));
        }
        self.take((boundary - self.virt_alloc_end) / PAGE_SIZE)
    }

    /// `xc_dom_alloc_segment`: returns `(vstart, vend, pfn, pages)`.
    fn segment(
        &mut self,
        name: &str,
        start: u64,
        size: u64,
    ) -> Result<(u64, u64, u64, u64), PlanError> {
        if start != 0 {
            self.pad(start)?;
        }
        let pages = size.div_ceil(PAGE_SIZE);
        let (vstart, pfn) = (self.virt_alloc_end, self.pfn_alloc_end);
        self.take(pages)?;
        let vend = add(vstart, size, "segment end")?;
        self.log.push(format!(
            "{:<20}:   {:<12} : {:#x} -> {:#x}  (pfn {:#x} + {:#x} pages)",
            "xc_dom_alloc_segment", name, vstart, vend, pfn, pages
        ));
        Ok((vstart, vend, pfn, pages))
    }

    /// `xc_dom_alloc_page`: returns `(va, pfn)`.
    fn page(&mut self, name: &str) -> Result<(u64, u64), PlanError> {
        let (va, pfn) = (self.virt_alloc_end, self.pfn_alloc_end);
        self.take(1)?;
        self.log.push(format!(
            "{:<20}:   {:<12} : {:#x} (pfn {:#x})",
            "xc_dom_alloc_page", name, va, pfn
        ));
        Ok((va, pfn))
    }

    /// `count_pgtables` for `[from, to]` (inclusive) of PFNs from `pfn`, after `earlier`.
    fn count(
        &mut self,
        earlier: &[Mapping],
        from: u64,
        to: u64,
        pfn: u64,
    ) -> Result<Mapping, PlanError> {
        let pfn_end = add(pfn, (to - from) >> 12, "mapping end PFN")?;
        if pfn_end >= self.total_pages {
            return Err(PlanError::TooSmall {
                needed: pfn_end + 1,
                nr_pages: self.total_pages,
            });
        }
        if earlier.iter().any(|m| from < m.to && to > m.from) {
            return Err(PlanError::Unsupported("overlapping initial mappings"));
        }
        let mut map = Mapping {
            from: from & VADDR_MASK,
            to: to & VADDR_MASK,
            ..Mapping::default()
        };
        for l in (0..4).rev() {
            map.lv[l].pfn = self.pfn_alloc_end + map.tables;
            if l == 3 {
                if earlier.is_empty() {
                    map.lv[l] = Level {
                        from: 0,
                        to: VADDR_MASK,
                        pfn: map.lv[l].pfn,
                        tables: 1,
                    };
                    map.tables += 1;
                }
                continue;
            }
            let bits = 12 + (l as u32 + 1) * 9;
            let mask = (1u64 << bits) - 1;
            let (mut lo, mut hi) = (map.from & !mask, map.to | mask);
            for m in earlier {
                let c = m.lv[l];
                if c.from == c.to {
                    continue;
                }
                if lo >= c.from && hi <= c.to {
                    (lo, hi) = (0, 0);
                    map.shares = true;
                    break;
                }
                if lo >= c.from && lo <= c.to {
                    lo = c.to + 1;
                    map.shares = true;
                }
                if hi >= c.from && hi <= c.to {
                    hi = c.from - 1;
                    map.shares = true;
                }
            }
            map.lv[l].from = lo;
            map.lv[l].to = hi;
            if lo < hi {
                map.lv[l].tables = ((hi - lo) >> bits) + 1;
            }
            self.log.push(format!(
                "count_pgtables: {:#018x}/{}: {:#018x} -> {:#018x}, {} table(s)",
                mask, bits, lo, hi, map.lv[l].tables
            ));
            map.tables += map.lv[l].tables;
        }
        Ok(map)
    }

    fn note(&mut self, what: &str, value: u64) {
        self.log.push(format!(
            "{:<20}: {} : {:#x}",
            "xc_dom_build_image", what, value
        ));
    }
}

pub(crate) fn plan(req: &PlanRequest) -> Result<Plan, PlanError> {
    let k = &req.kernel;
    let initrd_len = req.initrd_len.unwrap_or(0);
    let unmapped = k.mod_start_pfn;
    // xc_dom_build_image ignores an INIT_P2M at or above virt_base (or unaligned).
    let p2m_base = k
        .init_p2m
        .filter(|&p| p < k.virt_base && p.is_multiple_of(PAGE_SIZE));
    let mut b = Builder {
        virt_alloc_end: k.virt_base,
        pfn_alloc_end: 0,
        total_pages: req.nr_pages,
        log: Vec::new(),
    };
    b.segment("kernel", k.virt_kstart, k.virt_kend - k.virt_kstart)?;
    let mut initrd = None;
    let mut mod_start = 0;
    let mut mod_len = 0;
    if initrd_len > 0 && !unmapped {
        let (s, e, _, _) = b.segment("module0", 0, initrd_len)?;
        initrd = Some(InitrdPlacement::Mapped(Range { start: s, end: e }));
        (mod_start, mod_len) = (s, e - s);
    }
    let p2m_bytes = req
        .nr_pages
        .checked_mul(8)
        .ok_or(PlanError::Overflow("P2M size"))
        .and_then(|v| round_up(v, PAGE_SIZE))?;
    let mut p2m = Range { start: 0, end: 0 };
    if p2m_base.is_none() {
        let (s, _, _, _) = b.segment("phys2mach", 0, p2m_bytes)?;
        p2m = Range {
            start: s,
            end: s + req.nr_pages * 8,
        };
    }
    let (si_va, _) = b.page("start info")?;
    let (xs_va, _) = b.page("xenstore")?;
    let (con_va, _) = b.page("console")?;

    // alloc_pgtables_pv: grow the mapping until the tables and 512 KiB fit below its end.
    let extra = trampoline_tables(k.virt_base, req.trampoline);
    let mut pages = EXTRA_PAGES;
    let (map0, try_end) = loop {
        let want = add(b.virt_alloc_end, pages * PAGE_SIZE, "page-table sizing")?;
        let try_end = want | ((4 << 20) - 1);
        let mut map = b.count(&[], k.virt_base, try_end, 0)?;
        map.tables += extra(try_end)?;
        if map.tables > MAX_TABLE_FRAMES {
            return Err(PlanError::RegionTooLarge { tables: map.tables });
        }
        pages = map.tables + EXTRA_PAGES;
        if add(b.virt_alloc_end, pages * PAGE_SIZE, "page-table sizing")?
            <= try_end.saturating_add(1)
        {
            break (map, try_end);
        }
    };
    let v_end = add(try_end, 1, "virt_pgtab_end")?;
    let (pt_va, _, _, nr_pt) = b.segment("page tables", 0, map0.tables * PAGE_SIZE)?;
    let (stack_va, _) = b.page("boot stack")?;
    b.note("virt_alloc_end", b.virt_alloc_end);
    b.note("virt_pgtab_end", v_end);
    b.pad(v_end)?;

    let mut flags = 0;
    if initrd_len > 0 && unmapped {
        let (_, _, pfn, pages) = b.segment("module0", 0, initrd_len)?;
        initrd = Some(InitrdPlacement::Unmapped { pfn });
        flags |= xenpv::sif::MOD_START_PFN;
        (mod_start, mod_len) = (pfn, pages * PAGE_SIZE);
    }
    let (mut first_p2m_pfn, mut nr_p2m_frames) = (0, 0);
    if let Some(base) = p2m_base {
        let to = add(base, p2m_bytes - 1, "INIT_P2M end")?;
        let pfn = b.pfn_alloc_end;
        let map1 = b.count(&[map0], base, to, pfn)?;
        if map1.shares {
            return Err(PlanError::Unsupported(
                "INIT_P2M sharing page tables with the initial region",
            ));
        }
        let (_, _, pfn, pages) = b.segment("phys2mach", 0, p2m_bytes + map1.tables * PAGE_SIZE)?;
        p2m = Range {
            start: base,
            end: base + req.nr_pages * 8,
        };
        (first_p2m_pfn, nr_p2m_frames) = (pfn, pages);
    }
    let table_frames = frames(k.virt_base, v_end, pt_va, req.trampoline);
    Ok(Plan {
        mode: Mode::DomU,
        virt_base: k.virt_base,
        kernel: Range {
            start: k.virt_kstart,
            end: k.virt_kend,
        },
        initrd,
        p2m,
        p2m_relocated: p2m_base.is_some(),
        start_info: Range {
            start: si_va,
            end: si_va + START_INFO_SIZE,
        },
        xenstore: Some(xs_va),
        console: Some(con_va),
        page_tables: Range {
            start: pt_va,
            end: pt_va + nr_pt * PAGE_SIZE,
        },
        table_frames,
        stack: Range {
            start: stack_va,
            end: stack_va + PAGE_SIZE,
        },
        region: Range {
            start: k.virt_base,
            end: v_end,
        },
        entry: k.entry,
        rsp: stack_va + PAGE_SIZE,
        start_info_fields: StartInfoPlan {
            address: si_va,
            magic: "xen-3.0-x86_64".to_string(),
            nr_pages: req.nr_pages,
            flags,
            pt_base: pt_va,
            nr_pt_frames: nr_pt,
            mfn_list: p2m.start,
            mod_start,
            mod_len,
            first_p2m_pfn,
            nr_p2m_frames: Some(nr_p2m_frames),
        },
        trampoline: req.trampoline,
        builder_log: b.log,
    })
}

/// The trampoline page's own tables for a region ending at `try_end` (inclusive).
fn trampoline_tables(
    v_start: u64,
    trampoline: Option<u64>,
) -> impl Fn(u64) -> Result<u64, PlanError> {
    move |try_end: u64| {
        let end = add(try_end, 1, "region end")?;
        Ok(extra_tables(v_start, end, trampoline).len() as u64)
    }
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
