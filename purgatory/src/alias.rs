//! A Linux crash kernel's view of the crashed kernel's memory (docs/kdump.md, "A Linux crash
//! kernel"): every old frame gets a PFN past the crash kernel's own, old PFN `p` at
//! `nr_pages + p` (its P2M entry the old MFN, Xen's M2P entry that PFN), inside the domain's
//! memory map, which the purgatory stretches over them (a PV Linux makes every PFN past the
//! map's end an identity frame). With `mem=` and `nopat` on its command line the crash kernel
//! reads them through `ioremap_cache()`, as `/proc/vmcore` does; the ELF core header
//! (`elfcore`) points there.
//!
//! The old P2M entries come from the crash record (`pvkexec.crash=` on the image's command
//! line): its directory, the list pages, the leaves. Old frames are read, never written; only
//! the new P2M and Xen's M2P entries of the aliased frames change. Frames set aside for the
//! crash kernel (present in the crash view) are its RAM now and get no alias.

use crate::failure::Failure;
use crate::frames::Ctx;
use crate::plan::Checked;
use pvhandoff::crash::{CrashRecord, DirPage, CRASH_CMDLINE_KEY, LIST_P2M_PAGES};
use pvhandoff::renumber::is_present;
use xenpv::{hypercall, memop, mmu, E820Entry, MmuUpdate, StartInfo, XenMemoryMap};

const INVALID: u64 = !0;

/// Calls `f` with each old PFN in `[0, count)` and the frame the crash kernel may read there
/// (`None`: no frame in the old P2M, or a frame set aside for the crash kernel), in PFN order.
pub fn each_old_frame(
    c: &mut Ctx,
    rec: &CrashRecord,
    count: u64,
    mut f: impl FnMut(&mut Ctx, u64, Option<u64>) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let known = count.min(rec.p2m_len);
    // The purgatory's stack is 32 KiB: one leaf and the directory walk's page on it; a
    // list page's entry is read where it lies.
    let mut lists = rec.list_pages();
    let mut list_mfn = 0;
    let mut leaf: DirPage = [0; 512];
    for l in 0..count.div_ceil(512) {
        let leaf_known = l * 512 < known;
        if leaf_known && l % LIST_P2M_PAGES == 0 {
            list_mfn = lists
                .next_mfn(|mfn, out| read_old(c, mfn, out))
                .map_err(|_| Failure::Plan("aliases: the record's P2M directory is unreadable"))?
                .ok_or(Failure::Plan(
                    "aliases: the record names too few list pages",
                ))?;
        }
        match leaf_known {
            true => {
                let list = c.scratch_map(list_mfn)?;
                // SAFETY: the scratch VA maps list page `list_mfn`: 512 words, read only.
                let leaf_mfn = unsafe { list.add((l % LIST_P2M_PAGES) as usize).read_volatile() };
                read_old(c, leaf_mfn, &mut leaf)?;
            }
            false => leaf = [INVALID; 512],
        }
        for i in 0..512u64 {
            let old_pfn = l * 512 + i;
            if old_pfn >= count {
                break;
            }
            let entry = match old_pfn < known {
                true => leaf[i as usize],
                false => INVALID,
            };
            let in_view = c
                .old_p2m
                .get(old_pfn as usize)
                .is_some_and(|&e| is_present(e));
            let frame = (is_present(entry) && !in_view).then_some(entry);
            f(c, old_pfn, frame)?;
        }
    }
    Ok(())
}

/// Every old frame at `nr_pages + old PFN`: the new P2M's entries past the crash kernel's own,
/// Xen's M2P entry of each aliased frame, and the domain's memory map stretched over them.
/// Returns how many old frames were aliased.
pub fn all(c: &mut Ctx, k: &Checked, count: u64) -> Result<u64, Failure> {
    let rec = record(c, k)?;
    let base = k.plan.nr_pages;
    let mut batch = [MmuUpdate { ptr: 0, val: 0 }; 32];
    let (mut n, mut present) = (0, 0);
    // `region_page` may use the scratch mapping, which reading the next leaf moves: one P2M
    // page pointer per leaf piece.
    let mut p2m: (u64, *mut u64) = (u64::MAX, core::ptr::null_mut());
    each_old_frame(c, &rec, count, |c, old_pfn, frame| {
        let pfn = base + old_pfn;
        if p2m.0 != pfn / 512 || old_pfn % 512 == 0 {
            p2m = (pfn / 512, c.region_page(k.plan.p2m_pfn + pfn / 512)?);
        }
        let mfn = frame.unwrap_or(INVALID);
        // SAFETY: `p2m.1` maps the new P2M frame holding entry `pfn` writable.
        unsafe { p2m.1.add((pfn % 512) as usize).write_volatile(mfn) };
        if let Some(mfn) = frame {
            present += 1;
            batch[n] = MmuUpdate {
                ptr: (mfn << 12) | mmu::MACHPHYS_UPDATE,
                val: pfn,
            };
            n += 1;
            if n == batch.len() {
                c.flush_m2p(&batch)?;
                n = 0;
            }
        }
        Ok(())
    })?;
    c.flush_m2p(&batch[..n])?;
    let end = stretch_memory_map(c, base + count)?;
    say!(
        "purgatory: crashed kernel's frames aliased: old PFNs 0..{count:#x} at PFNs {base:#x}..{:#x}, {present} present ({} entries in the record's P2M); memory map [0, {end:#x})",
        base + count,
        rec.p2m_len
    );
    Ok(present)
}

/// `xen_foreign_memory_map` (`XENMEM_set_memory_map`).
#[repr(C)]
struct ForeignMemoryMap {
    domid: u16,
    _pad: [u16; 3],
    map: XenMemoryMap,
}

const XENMEM_SET_MEMORY_MAP: u64 = 13;
const DOMID_SELF: u16 = 0x7ff0;
const E820_RAM: u32 = 1;

/// Sets this domain's memory map to one RAM range reaching at least PFN `end` (and the end of
/// its current map's RAM); returns the range's end address.
fn stretch_memory_map(c: &mut Ctx, end: u64) -> Result<u64, Failure> {
    let mut entries = [E820Entry::default(); 8];
    let mut map = XenMemoryMap {
        nr_entries: entries.len() as u32,
        _pad: 0,
        buffer: entries.as_mut_ptr() as u64,
    };
    c.hypercalls += 2;
    // SAFETY: `map` names `entries`, writable for its 8 entries, on this stack (mapped in the
    // tables the purgatory runs on).
    unsafe { hypercall::memory_op(memop::MEMORY_MAP, &mut map as *mut XenMemoryMap as u64) }
        .map_err(|err| Failure::Hypercall {
            call: "memory_op(memory_map)",
            frame: 0,
            err,
        })?;
    let now = entries[..(map.nr_entries as usize).min(entries.len())]
        .iter()
        .filter(|e| e.kind == E820_RAM)
        .map(|e| e.addr + e.size)
        .max()
        .unwrap_or(0);
    let size = now.max(end * 4096);
    let ram = [E820Entry {
        addr: 0,
        size,
        kind: E820_RAM,
    }];
    let fmap = ForeignMemoryMap {
        domid: DOMID_SELF,
        _pad: [0; 3],
        map: XenMemoryMap {
            nr_entries: 1,
            _pad: 0,
            buffer: ram.as_ptr() as u64,
        },
    };
    // SAFETY: `fmap` and the entry it names are on this stack; Xen only reads them.
    unsafe {
        hypercall::memory_op(
            XENMEM_SET_MEMORY_MAP,
            &fmap as *const ForeignMemoryMap as u64,
        )
    }
    .map_err(|err| Failure::Hypercall {
        call: "memory_op(set_memory_map, DOMID_SELF)",
        frame: 0,
        err,
    })?;
    Ok(size)
}

/// The crash record (`pvkexec.crash=` on the image's command line), its digest checked. Not
/// inlined: its page leaves the stack before the callers' buffers take it.
#[inline(never)]
pub fn record(c: &mut Ctx, k: &Checked) -> Result<CrashRecord, Failure> {
    let record_mfn = record_mfn(c, k)?;
    let mut page: DirPage = [0; 512];
    read_old(c, record_mfn, &mut page)?;
    // SAFETY: the 512 words are 4096 initialised bytes (x86_64: little-endian, as the record
    // is laid out); read only for the slice's life.
    let bytes = unsafe { core::slice::from_raw_parts(page.as_ptr().cast::<u8>(), 4096) };
    CrashRecord::read_checked(bytes)
        .map_err(|_| Failure::Plan("aliases: the crash record does not check"))
}

/// Copies old frame `mfn` through the scratch mapping.
pub fn read_old(c: &mut Ctx, mfn: u64, out: &mut DirPage) -> Result<(), Failure> {
    let page = c.scratch_map(mfn)?;
    for (i, w) in out.iter_mut().enumerate() {
        // SAFETY: the scratch VA maps frame `mfn`, 512 words, read only here.
        *w = unsafe { page.add(i).read_volatile() };
    }
    Ok(())
}

/// The crash record's MFN from `pvkexec.crash=0x<mfn>` on the image's command line (its
/// start_info segment, digest verified).
fn record_mfn(c: &Ctx, k: &Checked) -> Result<u64, Failure> {
    let plan = &k.plan;
    let si_pfn = (plan.start_info_va - plan.virt_base) / 4096;
    let si_old = c
        .fixed(si_pfn)
        .ok_or(Failure::Plan("no start_info segment"))?;
    // SAFETY: the start_info segment's page is mapped in the old region (an image page),
    // verified; read only.
    let si = unsafe { &*((c.h.old_virt_base + si_old * 4096) as *const StartInfo) };
    let len = si
        .cmd_line
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(si.cmd_line.len());
    let line = core::str::from_utf8(&si.cmd_line[..len]).unwrap_or("");
    line.split(' ')
        .filter_map(|w| w.strip_prefix(CRASH_CMDLINE_KEY)?.strip_prefix("=0x"))
        .find_map(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or(Failure::Plan(
            "aliases: no pvkexec.crash=0x<mfn> on the crash kernel's command line",
        ))
}
