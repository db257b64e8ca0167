//! The ELF core header of the crashed kernel, for a Linux crash kernel's `elfcorehdr=`
//! (docs/kdump.md, "A Linux crash kernel"). Written at the crash, once the frames have their
//! new PFNs, into the header area the plan names (PFNs just below the trampoline page, past
//! the crash kernel's `mem=`):
//!
//! - 4 list pages: the P2M frame-list-list, the last frame-list page (the crash record's last
//!   list page, padded), the missing leaf and the missing frame-list page, which the "Xen"
//!   note names so that crash and makedumpfile read the old P2M (the other frame-list pages
//!   are the record's list pages in old memory);
//! - the notes: each CPU's registers from the crash record, the old kernel's VMCOREINFO, the
//!   "Xen" note;
//! - the ELF header and its program headers: the `PT_NOTE`, the list pages, then one
//!   `PT_LOAD` per run of old frames with consecutive PFNs and MFNs, `p_paddr` the machine
//!   address (what the tools expect with the "Xen" note) and `p_offset` the alias address the
//!   crash kernel reads it at (`alias`).

use crate::alias::{self, each_old_frame};
use crate::failure::Failure;
use crate::frames::Ctx;
use crate::plan::Checked;
use pvhandoff::crash::{CrashRecord, DirPage, CPU_SAVED, MAX_VMCOREINFO_NOTE};
use pvhandoff::image::{CrashAliases, ELFCORE_LIST_PAGES};
use vmcore::elfcorehdr::{self, OldRun, RunJoiner};
use vmcore::p2m::FrameListShape;
use vmcore::{CpuState, CrashXenInfo, Notes, UserRegs};

/// The header area's list pages, in order.
const TOP: usize = 0;
const LAST_LIST: usize = 1;
const MISSING_LEAF: usize = 2;
const MISSING_LIST: usize = 3;

/// Writes the header area (see the module comment).
pub fn build(c: &mut Ctx, k: &Checked, a: CrashAliases) -> Result<(), Failure> {
    let rec = alias::record(c, k)?;
    let first = a.first_pfn(k.plan.nr_pages);
    let mut own = [0u64; ELFCORE_LIST_PAGES as usize];
    for (i, m) in own.iter_mut().enumerate() {
        *m = new_mfn(c, k.plan.p2m_pfn, first + i as u64)?;
    }
    frame_lists(c, k, &rec, first, &own)?;
    let notes_pfn = a.notes_pfn(k.plan.nr_pages);
    let (notes_len, cpus, text) = notes(c, k, &rec, notes_pfn, own[TOP])?;
    let ehdr_pfn = a.ehdr_pfn(k.plan.nr_pages);
    let (loads, frames) = program_headers(c, k, &rec, a, &own, (notes_pfn, notes_len))?;
    let ehdr = elfcorehdr::ehdr(loads as usize).map_err(|err| Failure::CoreHeader {
        what: "ELF header",
        err,
    })?;
    Area::at(k, ehdr_pfn).put(c, &ehdr)?;
    say!(
        "purgatory: ELF core header at PFN {ehdr_pfn:#x}: {loads} PT_LOADs over {frames} frames of the crashed kernel and 4 list pages (frame-list-list mfn {:#x}), notes of {cpus} CPUs and {text} bytes of VMCOREINFO at PFN {notes_pfn:#x}",
        own[TOP]
    );
    Ok(())
}

/// The frame new PFN `pfn` got, from the new P2M (the header area lies past the built PFNs,
/// whose frames renumbering took from the set-aside ones in order).
fn new_mfn(c: &mut Ctx, p2m_pfn: u64, pfn: u64) -> Result<u64, Failure> {
    let page = c.region_page(p2m_pfn + pfn / 512)?;
    // SAFETY: `page` maps the new P2M frame holding entry `pfn`: 512 words, read here.
    Ok(unsafe { page.add((pfn % 512) as usize).read_volatile() })
}

/// Bytes written a page at a time into PFNs `first..`, each frame mapped at the scratch VA. A
/// mapping is kept until [`Area::forget`] (any other mapping moves the scratch VA).
struct Area {
    first: u64,
    p2m_pfn: u64,
    pos: u64,
    page: Option<(u64, *mut u8)>,
}

impl Area {
    fn at(k: &Checked, first: u64) -> Self {
        Area {
            first,
            p2m_pfn: k.plan.p2m_pfn,
            pos: 0,
            page: None,
        }
    }

    fn forget(&mut self) {
        self.page = None;
    }

    fn put(&mut self, c: &mut Ctx, mut bytes: &[u8]) -> Result<(), Failure> {
        while !bytes.is_empty() {
            let pfn = self.first + self.pos / 4096;
            let off = (self.pos % 4096) as usize;
            let n = bytes.len().min(4096 - off);
            let va = match self.page {
                Some((p, va)) if p == pfn => va,
                _ => {
                    let mfn = new_mfn(c, self.p2m_pfn, pfn)?;
                    let va = c.scratch_map(mfn)?.cast::<u8>();
                    self.page = Some((pfn, va));
                    va
                }
            };
            // SAFETY: `va` maps the frame of header-area PFN `pfn` writable at the scratch VA
            // (not moved since: every other mapping call is preceded by `forget`); `off + n`
            // stays within its 4096 bytes.
            unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), va.add(off), n) };
            self.pos += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn put_page(&mut self, c: &mut Ctx, page: &DirPage) -> Result<(), Failure> {
        for w in page {
            self.put(c, &w.to_le_bytes())?;
        }
        Ok(())
    }
}

fn list_error(err: vmcore::Error) -> Failure {
    Failure::CoreHeader {
        what: "P2M frame list",
        err,
    }
}

/// The four list pages (see the module comment). The purgatory's stack is 32 KiB: the
/// directory walk's page and one more, the frame-list-list written entry by entry.
#[inline(never)]
fn frame_lists(
    c: &mut Ctx,
    k: &Checked,
    rec: &CrashRecord,
    first: u64,
    own: &[u64; 4],
) -> Result<(), Failure> {
    let shape =
        FrameListShape::new(rec.p2m_pages() as usize, own[MISSING_LEAF]).map_err(list_error)?;
    let n = shape.frame_list_pages();
    let mut top = Area::at(k, first + TOP as u64);
    let mut walk = rec.list_pages();
    let mut last = 0;
    for i in 0..n {
        top.forget();
        let list = walk
            .next_mfn(|mfn, out| alias::read_old(c, mfn, out))
            .map_err(|_| {
                Failure::Plan("ELF core header: the record's P2M directory is unreadable")
            })?
            .ok_or(Failure::Plan(
                "ELF core header: the record names too few list pages",
            ))?;
        if !usable_mfn(list) {
            return Err(Failure::Plan(
                "ELF core header: a list page's MFN is 0 or past 52 bits",
            ));
        }
        // The last frame-list page is the area's padded copy.
        let named = match i + 1 == n {
            true => {
                last = list;
                own[LAST_LIST]
            }
            false => list,
        };
        top.put(c, &named.to_le_bytes())?;
    }
    for _ in n..512 {
        top.put(c, &own[MISSING_LIST].to_le_bytes())?;
    }
    let count = shape.leaves_in(n - 1).map_err(list_error)?;
    let mut page: DirPage = [0; 512];
    alias::read_old(c, last, &mut page)?;
    if !page[..count].iter().all(|&m| usable_mfn(m)) {
        return Err(Failure::Plan(
            "ELF core header: the record's last list page names a P2M page MFN 0 or past 52 bits",
        ));
    }
    page[count..].fill(own[MISSING_LEAF]);
    Area::at(k, first + LAST_LIST as u64).put_page(c, &page)?;
    vmcore::p2m::missing_leaf_page(&mut page);
    Area::at(k, first + MISSING_LEAF as u64).put_page(c, &page)?;
    shape.missing_frame_list_page(&mut page);
    Area::at(k, first + MISSING_LIST as u64).put_page(c, &page)
}

/// An MFN a frame list may name (crash and Xen's tools stop at a 0 entry).
fn usable_mfn(mfn: u64) -> bool {
    mfn != 0 && mfn < 1 << 40
}

/// The notes at `pfn`: returns their length, the CPUs and the VMCOREINFO bytes.
#[inline(never)]
fn notes(
    c: &mut Ctx,
    k: &Checked,
    rec: &CrashRecord,
    pfn: u64,
    top_mfn: u64,
) -> Result<(u64, usize, usize), Failure> {
    let mut text = [0u8; MAX_VMCOREINFO_NOTE as usize];
    let text_len = vmcoreinfo(c, rec, &mut text)?;
    let mut cpus = [CpuState::default(); pvhandoff::crash::CRASH_MAX_CPUS];
    for (out, cpu) in cpus.iter_mut().zip(rec.cpus()) {
        // A CPU stopped from outside has no registers: its note says zeros (as the capture
        // kernel's dump does).
        let regs = match cpu.state {
            CPU_SAVED => cpu.regs,
            _ => [0; pvhandoff::crash::NR_REGS],
        };
        *out = CpuState {
            pid: cpu.pid as i32,
            regs: UserRegs::from_words(regs),
        };
    }
    let n = rec.cpus().len();
    let notes = Notes {
        cpus: &cpus[..n],
        vmcoreinfo: &text[..text_len],
        xen: CrashXenInfo::guest(
            (rec.xen_version >> 16) as u64,
            (rec.xen_version & 0xffff) as u64,
            top_mfn,
        ),
    };
    let mut area = Area::at(k, pfn);
    let mut failed = None;
    let len = elfcorehdr::write_notes(&notes, &mut |bytes| {
        if failed.is_none() {
            failed = area.put(c, bytes).err();
        }
    })
    .map_err(|err| Failure::CoreHeader { what: "notes", err })?;
    if let Some(f) = failed {
        return Err(f);
    }
    Ok((len, n, text_len))
}

/// The old kernel's VMCOREINFO text (the descriptor of its "VMCOREINFO" note, up to its
/// first NUL) into `out`; 0 bytes where the record names none (the note is then left out).
fn vmcoreinfo(c: &mut Ctx, rec: &CrashRecord, out: &mut [u8]) -> Result<usize, Failure> {
    let size = rec.vmcoreinfo_size as usize;
    if rec.vmcoreinfo_maddr == 0 || size < 12 || size > out.len() {
        say!("purgatory: the crash record names no VMCOREINFO note: the dump has none");
        return Ok(0);
    }
    let mut done = 0;
    while done < size {
        let at = rec.vmcoreinfo_maddr + done as u64;
        let off = (at % 4096) as usize;
        let n = (size - done).min(4096 - off);
        let page = c.scratch_map(at >> 12)?.cast::<u8>();
        for (i, b) in out[done..done + n].iter_mut().enumerate() {
            // SAFETY: the scratch VA maps old frame `at >> 12`; `off + i` < 4096; read only.
            *b = unsafe { page.add(off + i).read_volatile() };
        }
        done += n;
    }
    let word = |i: usize| u32::from_le_bytes([out[i], out[i + 1], out[i + 2], out[i + 3]]) as usize;
    let (namesz, descsz) = (word(0), word(4));
    let desc = 12 + namesz.div_ceil(4) * 4;
    if namesz != 11 || &out[12..23] != b"VMCOREINFO\0" || desc + descsz > size {
        return Err(Failure::Plan(
            "ELF core header: the old kernel's VMCOREINFO note is malformed",
        ));
    }
    let body_end = out[desc..desc + descsz]
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(descsz);
    out.copy_within(desc..desc + body_end, 0);
    Ok(body_end)
}

/// The program headers after the ELF header: the `PT_NOTE`, the list pages, every run of old
/// frames. Returns the `PT_LOAD`s and the old frames they cover.
#[inline(never)]
fn program_headers(
    c: &mut Ctx,
    k: &Checked,
    rec: &CrashRecord,
    a: CrashAliases,
    own: &[u64; 4],
    (notes_pfn, notes_len): (u64, u64),
) -> Result<(u64, u64), Failure> {
    let nr_pages = k.plan.nr_pages;
    let mut area = Area::at(k, a.ehdr_pfn(nr_pages));
    area.pos = elfcorehdr::EHDR_BYTES;
    area.put(c, &elfcorehdr::note_phdr(notes_pfn << 12, notes_len))?;
    let capacity = (a.phdr_capacity() - 1).min(vmcore::MAX_RUNS as u64);
    let mut loads = 0u64;
    let mut emit = |c: &mut Ctx, area: &mut Area, run: OldRun| {
        if loads == capacity {
            return Err(Failure::CoreRuns { capacity });
        }
        loads += 1;
        area.put(c, &elfcorehdr::load_phdr(&run))
    };
    let first = a.first_pfn(nr_pages);
    for (i, &mfn) in own.iter().enumerate() {
        let addr = (first + i as u64) << 12;
        emit(
            c,
            &mut area,
            OldRun {
                addr,
                mfn,
                pages: 1,
            },
        )?;
    }
    let mut joiner = RunJoiner::new();
    let mut frames = 0;
    each_old_frame(c, rec, a.count, |c, old_pfn, frame| {
        // Reading the next leaf moves the scratch mapping.
        if old_pfn % 512 == 0 {
            area.forget();
        }
        let Some(mfn) = frame else { return Ok(()) };
        frames += 1;
        match joiner.push(nr_pages + old_pfn, mfn) {
            Some(run) => emit(c, &mut area, run),
            None => Ok(()),
        }
    })?;
    if let Some(run) = joiner.finish() {
        emit(c, &mut area, run)?;
    }
    Ok((loads, frames))
}
