//! Experimental (docs/linux-crash-kernel.md): the alias probe of a Linux crash kernel. A plan
//! record with `PLAN_FLAG_ALIAS_PROBE` names a few frames of the crashed kernel (old PFNs in
//! one leaf of its P2M); after renumbering they get the crash kernel's PFNs just below the
//! trampoline page, which its `mem=` leaves out of its RAM, so that it reads them through
//! `/dev/mem` (`ioremap_cache` of a PFN past its RAM maps the frame its P2M names). This is
//! the read path `/proc/vmcore` would take with every old frame aliased so.
//!
//! The old P2M entries come from the crash record (`pvkexec.crash=` on the image's command
//! line): its directory, the list page, the leaf. Old frames are read, never written; only
//! the new P2M and Xen's M2P entries of the aliased frames change.

use crate::failure::Failure;
use crate::frames::Ctx;
use crate::plan::Checked;
use pvhandoff::crash::{CrashRecord, DirPage, CRASH_CMDLINE_KEY, LIST_P2M_PAGES};
use pvhandoff::image::AliasProbe;
use pvhandoff::renumber::is_present;
use xenpv::{mmu, MmuUpdate, StartInfo};

const INVALID: u64 = !0;

/// Gives the probe's old frames their PFNs; returns how many were present (the others get
/// `INVALID_P2M_ENTRY`).
pub fn probe(c: &mut Ctx, k: &Checked, p: AliasProbe) -> Result<u64, Failure> {
    let record_mfn = record_mfn(c, k)?;
    let mut page: DirPage = [0; 512];
    read_old(c, record_mfn, &mut page)?;
    let mut bytes = [0u8; 4096];
    for (i, w) in page.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    let rec = CrashRecord::read_checked(&bytes)
        .map_err(|_| Failure::Plan("alias probe: the crash record does not check"))?;
    if p.old_first + p.count > rec.p2m_len {
        return Err(Failure::Plan("alias probe: old PFNs past the old P2M"));
    }
    // The leaf holding the probe's entries: P2M page `leaf`, named by list page `list`.
    let leaf = p.old_first / 512;
    let list = leaf / LIST_P2M_PAGES;
    let mut lists = rec.list_pages();
    let mut list_mfn = 0;
    for _ in 0..=list {
        list_mfn = lists
            .next_mfn(|mfn, out| read_old(c, mfn, out))
            .map_err(|_| Failure::Plan("alias probe: the record's P2M directory is unreadable"))?
            .ok_or(Failure::Plan(
                "alias probe: the record names too few list pages",
            ))?;
    }
    read_old(c, list_mfn, &mut page)?;
    let leaf_mfn = page[(leaf % LIST_P2M_PAGES) as usize];
    read_old(c, leaf_mfn, &mut page)?;
    // Every old frame read; now the new P2M (through `region_page`, which may move the
    // scratch mapping) and the aliased frames' M2P entries.
    let first = p.new_first(k.plan.nr_pages);
    let mut batch = [MmuUpdate { ptr: 0, val: 0 }; 64];
    let (mut n, mut present) = (0, 0);
    for i in 0..p.count {
        let old_pfn = p.old_first + i;
        let entry = page[(old_pfn % 512) as usize];
        // A frame set aside for the crash kernel (present in the view) is its RAM now.
        let in_view = c
            .old_p2m
            .get(old_pfn as usize)
            .is_some_and(|&e| is_present(e));
        let mfn = match is_present(entry) && !in_view {
            true => entry,
            false => INVALID,
        };
        let pfn = first + i;
        let p2m = c.region_page(k.plan.p2m_pfn + pfn / 512)?;
        // SAFETY: `p2m` maps the new P2M frame holding entry `pfn` writable.
        unsafe { p2m.add((pfn % 512) as usize).write_volatile(mfn) };
        if mfn != INVALID {
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
    }
    if n > 0 {
        c.flush_m2p(&batch[..n])?;
    }
    say!(
        "purgatory: alias probe (experimental): old PFNs {:#x}..{:#x} (leaf mfn {leaf_mfn:#x} of crash record {record_mfn:#x}) at PFNs {first:#x}..{:#x}, {present} present",
        p.old_first,
        p.old_first + p.count,
        first + p.count
    );
    Ok(present)
}

/// Copies old frame `mfn` through the scratch mapping.
fn read_old(c: &mut Ctx, mfn: u64, out: &mut DirPage) -> Result<(), Failure> {
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
            "alias probe: no pvkexec.crash=0x<mfn> on the crash kernel's command line",
        ))
}
