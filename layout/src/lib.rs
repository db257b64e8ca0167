//! Plans the PV start-of-day region of a new kernel exactly as Xen's builders do.
//!
//! Two builders exist and they differ: the initial-domain builder inside Xen
//! (`xen/arch/x86/pv/dom0_build.c`, mode [`Mode::Dom0`]) and the toolstack's domain builder
//! (`tools/libs/guest/xg_dom_core.c` + `xg_dom_x86.c`, mode [`Mode::DomU`]). Each lays out one
//! virtually contiguous region from `virt_base` (PFN 0 at `virt_base`): kernel, initrd, P2M
//! list, start_info (+ xenstore and console pages for a domU), bootstrap page tables, boot
//! stack, padding to a 4 MiB boundary (the start-of-day comment in Xen's
//! `xen/include/public/xen.h`).
//!
//! A kexec plan may also need one extra page mapped outside the region (the trampoline page,
//! docs/architecture.md, docs/kexec-image.md). Its page-table frames are counted with the bootstrap tables: the
//! sizing loop of the builder is run with those frames added, so the result is the layout the
//! builder would produce for a kernel whose tables also map that page.
#![no_std]
#![forbid(unsafe_code)]
extern crate alloc;

mod dom0;
mod domu;
mod tables;

pub use domu::module_len as domu_module_len;
pub use tables::{
    build_p2m_mapping, build_tables, count_tables, P2mMapping, TableFrame, TableImage,
};

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// What the planner needs to know of a kernel: the numbers libelf derives from its ELF
/// headers and Xen notes (the loader fills this from a parsed kernel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    /// XEN_ELFNOTE_VIRT_BASE (0 when absent).
    pub virt_base: u64,
    /// `pstart + virt_offset`: first byte of the loaded kernel.
    pub virt_kstart: u64,
    /// `pend + virt_offset`: end of the loaded kernel (bss included).
    pub virt_kend: u64,
    /// XEN_ELFNOTE_ENTRY, else e_entry.
    pub entry: u64,
    /// XEN_ELFNOTE_HYPERCALL_PAGE.
    pub hypercall_page: Option<u64>,
    /// XEN_ELFNOTE_INIT_P2M: where the kernel wants its P2M list mapped.
    pub init_p2m: Option<u64>,
    /// XEN_ELFNOTE_MOD_START_PFN non-zero: initrd passed as a PFN, not mapped.
    pub mod_start_pfn: bool,
    /// XEN_ELFNOTE_PAE_MODE is "yes" (4.17 dom0 magic becomes `xen-3.0-x86_64p`).
    pub pae_mode_yes: bool,
}

/// Which builder's layout to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Xen's initial-domain builder.
    Dom0,
    /// The toolstack's builder (libxenguest), with xenstore and console pages.
    DomU,
}

/// What to plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanRequest {
    pub kernel: KernelInfo,
    /// Initrd length in bytes, if any.
    pub initrd_len: Option<u64>,
    /// Pages of the domain.
    pub nr_pages: u64,
    pub mode: Mode,
    /// A page to map outside the region too (the kexec trampoline).
    pub trampoline: Option<u64>,
}

/// A half-open virtual range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// Where the initrd goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitrdPlacement {
    /// Mapped in the region; `start_info.mod_start` is its virtual address.
    Mapped(Range),
    /// Not mapped (MOD_START_PFN); its pages start at this PFN.
    Unmapped { pfn: u64 },
}

/// The start_info fields that follow from the layout (machine fields such as `shared_info`
/// and `store_mfn` are known only at run time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartInfoPlan {
    /// Virtual address of the start_info page (`rsi` at entry).
    pub address: u64,
    pub magic: String,
    pub nr_pages: u64,
    /// `SIF_*` flags the builder sets (dom0 adds power-management bits at run time).
    pub flags: u32,
    pub pt_base: u64,
    pub nr_pt_frames: u64,
    pub mfn_list: u64,
    pub mod_start: u64,
    pub mod_len: u64,
    pub first_p2m_pfn: u64,
    /// `None` where Xen decides at run time (dom0 with INIT_P2M maps the P2M with whatever
    /// superpages it can allocate).
    pub nr_p2m_frames: Option<u64>,
}

/// The whole plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub mode: Mode,
    pub virt_base: u64,
    pub kernel: Range,
    pub initrd: Option<InitrdPlacement>,
    /// The P2M list: inside the region, or at the INIT_P2M address.
    pub p2m: Range,
    /// Whether the P2M is mapped at the kernel's INIT_P2M address rather than in the region.
    pub p2m_relocated: bool,
    /// start_info: `[start, start + sizeof(start_info) (+ dom0 vga info))`.
    pub start_info: Range,
    /// domU only: xenstore ring page and console ring page.
    pub xenstore: Option<u64>,
    pub console: Option<u64>,
    /// Bootstrap page tables.
    pub page_tables: Range,
    /// Every table frame in the order the builder allocates them.
    pub table_frames: Vec<TableFrame>,
    pub stack: Range,
    /// `[virt_base, v_end)`: everything the bootstrap tables map.
    pub region: Range,
    pub entry: u64,
    /// `rsp` at entry (top of the boot stack).
    pub rsp: u64,
    pub start_info_fields: StartInfoPlan,
    /// The extra mapped page, if requested.
    pub trampoline: Option<u64>,
    /// domU only: the allocation lines libxenguest logs for this layout (`xl -vvv create`,
    /// without the `domainbuilder: detail: ` prefix), in order.
    pub builder_log: Vec<String>,
}

impl Plan {
    /// PFN of a virtual address inside the region.
    pub fn va_to_pfn(&self, va: u64) -> Option<u64> {
        (va >= self.region.start && va < self.region.end).then(|| (va - self.virt_base) / PAGE_SIZE)
    }

    /// Virtual address of a PFN inside the region.
    pub fn pfn_to_va(&self, pfn: u64) -> Option<u64> {
        let va = self.virt_base.checked_add(pfn.checked_mul(PAGE_SIZE)?)?;
        (va >= self.region.start && va < self.region.end).then_some(va)
    }

    /// The named elements of the region in order (empty ones left out).
    pub fn elements(&self) -> Vec<(&'static str, Range)> {
        let mut out = Vec::new();
        out.push(("kernel", self.kernel));
        if let Some(InitrdPlacement::Mapped(r)) = self.initrd {
            out.push(("initrd", r));
        }
        if !self.p2m_relocated {
            out.push(("p2m", self.p2m));
        }
        out.push(("start_info", self.start_info));
        if let Some(x) = self.xenstore {
            out.push((
                "xenstore",
                Range {
                    start: x,
                    end: x + PAGE_SIZE,
                },
            ));
        }
        if let Some(c) = self.console {
            out.push((
                "console",
                Range {
                    start: c,
                    end: c + PAGE_SIZE,
                },
            ));
        }
        out.push(("page_tables", self.page_tables));
        out.push(("stack", self.stack));
        out
    }

    /// The plan in the shape of Xen's `VIRTUAL MEMORY ARRANGEMENT` block (dom0_build.c prints
    /// each address with `%p`, 16 hex digits), so the two can be diffed line by line.
    pub fn render_xen_arrangement(&self) -> String {
        let mut s = String::new();
        let _ = self.write_arrangement(&mut s);
        s
    }

    fn write_arrangement(&self, s: &mut String) -> fmt::Result {
        use fmt::Write;
        let line = |s: &mut String, name: &str, r: Range| {
            writeln!(s, " {:<14} {:016x}->{:016x}", name, r.start, r.end)
        };
        writeln!(s, "VIRTUAL MEMORY ARRANGEMENT:")?;
        line(s, "Loaded kernel:", self.kernel)?;
        if let Some(InitrdPlacement::Mapped(r)) = self.initrd {
            line(s, "Init. ramdisk:", r)?;
        }
        line(s, "Phys-Mach map:", self.p2m)?;
        line(s, "Start info:", self.start_info)?;
        line(s, "Page tables:", self.page_tables)?;
        line(s, "Boot stack:", self.stack)?;
        line(s, "TOTAL:", self.region)?;
        writeln!(s, " ENTRY ADDRESS: {:016x}", self.entry)
    }
}

/// Why no plan exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// The region (plus an unmapped initrd) needs more pages than the domain has.
    TooSmall { needed: u64, nr_pages: u64 },
    /// An address computation overflowed.
    Overflow(&'static str),
    /// A kernel address is not page aligned or not canonical where it must be.
    BadAddress { what: &'static str, value: u64 },
    /// INIT_P2M inside the kernel image.
    P2mInsideKernel { p2m_base: u64 },
    /// The trampoline page lies inside the region or is not a lower-half canonical address.
    BadTrampoline(u64),
    /// The region reaches into Xen's reserved virtual range.
    OverlapsXen,
    /// A combination this planner does not reproduce (named), rather than a guess.
    Unsupported(&'static str),
    /// The kernel's addresses are inconsistent (`virt_base <= kstart <= entry <= kend`).
    BadKernel(&'static str),
    /// The region would need more bootstrap table frames than [`MAX_TABLE_FRAMES`].
    RegionTooLarge { tables: u64 },
}

/// Most bootstrap table frames a plan may have: one L1 per 2 MiB of region, so 2 TiB of
/// kernel, initrd and P2M, far past any PV domain. Bounds the planner's work and memory.
pub const MAX_TABLE_FRAMES: u64 = 1 << 20;

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::TooSmall { needed, nr_pages } => write!(
                f,
                "domain allocation is too small for the kernel image: needs {needed} pages, \
                 the domain has {nr_pages}"
            ),
            PlanError::Overflow(what) => write!(f, "address overflow computing {what}"),
            PlanError::RegionTooLarge { tables } => write!(
                f,
                "the start-of-day region would need {tables} page-table frames, more than \
                 {MAX_TABLE_FRAMES} (check the kernel's addresses and the domain size)"
            ),
            PlanError::BadAddress { what, value } => {
                write!(f, "{what} {value:#x} is not page aligned or not canonical")
            }
            PlanError::P2mInsideKernel { p2m_base } => {
                write!(f, "INIT_P2M {p2m_base:#x} lies inside the kernel image")
            }
            PlanError::BadTrampoline(va) => write!(
                f,
                "trampoline page {va:#x} must be a page-aligned lower-half address outside the region"
            ),
            PlanError::OverlapsXen => write!(f, "the region overlaps Xen's reserved virtual range"),
            PlanError::Unsupported(what) => write!(f, "not supported: {what}"),
            PlanError::BadKernel(why) => write!(f, "inconsistent kernel addresses: {why}"),
        }
    }
}

// Xen's numbers come from xenpv, the crate that cites their headers.
/// Page size.
pub const PAGE_SIZE: u64 = xenpv::PAGE_SIZE;
/// `sizeof(struct start_info)` (xen.h), from xenpv's asserted layout.
pub const START_INFO_SIZE: u64 = core::mem::size_of::<xenpv::StartInfo>() as u64;
/// `sizeof(struct dom0_vga_console_info)`, placed after start_info by the dom0 builder.
pub const DOM0_VGA_INFO_SIZE: u64 = xenpv::DOM0_VGA_CONSOLE_INFO_SIZE;
/// Xen's reserved virtual range in every 64-bit PV guest (L4 slots 256..271).
pub const HYPERVISOR_VIRT_START: u64 = xenpv::layout::HYPERVISOR_VIRT_START;
pub const HYPERVISOR_VIRT_END: u64 = xenpv::layout::HYPERVISOR_VIRT_END;

pub(crate) fn round_up(v: u64, to: u64) -> Result<u64, PlanError> {
    v.checked_add(to - 1)
        .map(|x| x & !(to - 1))
        .ok_or(PlanError::Overflow("round up"))
}

pub(crate) fn add(a: u64, b: u64, what: &'static str) -> Result<u64, PlanError> {
    a.checked_add(b).ok_or(PlanError::Overflow(what))
}

/// Plans the region for `req`.
pub fn plan(req: &PlanRequest) -> Result<Plan, PlanError> {
    let k = &req.kernel;
    if !k.virt_base.is_multiple_of(PAGE_SIZE) {
        return Err(PlanError::BadAddress {
            what: "virt_base",
            value: k.virt_base,
        });
    }
    if !(k.virt_base <= k.virt_kstart && k.virt_kstart <= k.entry && k.entry <= k.virt_kend) {
        return Err(PlanError::BadKernel(
            "need virt_base <= virt_kstart <= entry <= virt_kend",
        ));
    }
    if let Some(p) = k.init_p2m {
        if p >= k.virt_kstart && p < k.virt_kend {
            return Err(PlanError::P2mInsideKernel { p2m_base: p });
        }
        if !p.is_multiple_of(PAGE_SIZE) {
            return Err(PlanError::BadAddress {
                what: "INIT_P2M",
                value: p,
            });
        }
    }
    if let Some(t) = req.trampoline {
        if !t.is_multiple_of(PAGE_SIZE) || t >= 0x0000_8000_0000_0000 {
            return Err(PlanError::BadTrampoline(t));
        }
    }
    let plan = match req.mode {
        Mode::Dom0 => dom0::plan(req)?,
        Mode::DomU => domu::plan(req)?,
    };
    if let Some(t) = req.trampoline {
        if t >= plan.region.start && t < plan.region.end {
            return Err(PlanError::BadTrampoline(t));
        }
    }
    if plan.region.start < HYPERVISOR_VIRT_END && plan.region.end > HYPERVISOR_VIRT_START {
        return Err(PlanError::OverlapsXen);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests;
