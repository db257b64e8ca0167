//! Capture kernel: the crash kernel of pvkexec's kdump. Entered by the purgatory in the frames
//! the module set aside after a stock Linux panicked, it writes the old kernel's memory as an
//! ELF vmcore (the `vmcore` crate's shape, which crash and makedumpfile read for PV kernels)
//! from sector 0 of the disk `pvkexec.dump=` names (`xvdb`, or a vbd number such as 51728;
//! there is no default: a dump overwrites the disk), then reboots the domain.
//!
//! Stages: the crash record (`pvkexec.crash=0x<mfn>`, checked by digest), the old P2M's leaf
//! pages (the record's list pages name them, and its directory chain the list pages) as a P2M
//! frame list whose frame-list pages are the record's list pages and whose last frame-list
//! page and frame-list-list are this kernel's pages (the dump's "Xen" note names it; it covers
//! 512 GiB of PFNs as Linux's own list does, so makedumpfile can translate every PFN of the
//! last memory section), the dumped frames as
//! runs (`vmcore::sweep`: the old P2M's leaves mapped a window at a time, once per 32 GiB of
//! machine memory that holds frames), the notes (each CPU's registers, the old VMCOREINFO),
//! the disk, with `pvkexec.dump_zero=skip` the zero runs to leave out (every dumped frame read
//! once before the header is written: `vmcore::zero`), the dump. The old P2M's leaf pages are
//! dumped whether or not a PFN names them: the tools read them through the dump.
//!
//! Memory does not grow with the old domain: a 1 MiB sweep bitmap, a run table of
//! `vmcore::MAX_RUNS` (the `PT_LOAD`s a vmcore can have), a table of [`MAX_ZERO_RUNS`] zero
//! runs, four pages of the frame list, and the window. The old kernel's frames are only ever
//! mapped read-only.
#![no_std]
#![no_main]
#![allow(clippy::result_large_err)]

use kernelrt::blkfront::{self, Blkfront};
use kernelrt::entry::{entry_regs, reg};
use kernelrt::notes::VIRT_BASE;
use kernelrt::report::{check, fail, finish, pass, Why};
use kernelrt::view::{self, Region};
use kernelrt::xenstore::Xenstore;
use kernelrt::{clock, cmdline_value, parse_u64, println, shared, why};
use pvhandoff::crash::{
    CrashRecord, CPU_SAVED, CPU_STOPPED, CRASH_CMDLINE_KEY, MAX_VMCOREINFO_NOTE,
};
use vmcore::p2m::{self, FrameListShape, Page, ENTRIES};
use vmcore::{
    CpuState, CrashXenInfo, Frames, MfnSource, Notes, Run, SweepError, Swept, UserRegs, Vmcore,
    ZeroRunFinder, ZeroRuns, MAX_RUNS,
};
use xenpv::{hypercall, pte, uvmf, StartInfo, VcpuInfo, PAGE_SIZE};

/// This kernel's pages of the frame list, in this order in [`LISTS`]: the last frame-list page
/// (a padded copy of the record's last list page), the missing leaf, the missing frame-list
/// page, the frame-list-list. The other frame-list pages are the record's list pages.
const OWN_LIST_PAGES: usize = 4;
const LAST_LIST: usize = 0;
const MISSING_LEAF: usize = 1;
const MISSING_LIST: usize = 2;
const FRAME_LIST_LIST: usize = 3;
/// Pages of old memory mapped at once (one disk write, or one batch of P2M leaves).
const WINDOW_PAGES: usize = 64;
const SECTOR: u64 = 512;
/// Words of the sweep's bitmap: 1 MiB, one pass per 32 GiB of machine frames that hold some.
const SWEEP_WORDS: usize = (1 << 20) / 8;
/// Zero runs `pvkexec.dump_zero=skip` leaves out at most (64 KiB of table): each is one or two
/// program headers more, and crash and makedumpfile search the `PT_LOAD`s linearly on every
/// read. A domain with more zero runs of [`vmcore::zero::MIN_ZERO_RUN`] frames has the
/// shortest written instead (the finder doubles its minimum).
const MAX_ZERO_RUNS: usize = 4096;

#[repr(C, align(4096))]
struct Window([u8; WINDOW_PAGES * PAGE_SIZE as usize]);
/// Bss pages whose entries are pointed at old frames, read-only, one batch at a time.
static mut WINDOW: Window = Window([0; WINDOW_PAGES * PAGE_SIZE as usize]);

#[repr(C, align(4096))]
struct Lists([Page; OWN_LIST_PAGES]);
/// The synthesized frame list (see [`OWN_LIST_PAGES`]).
static mut LISTS: Lists = Lists([[0; ENTRIES]; OWN_LIST_PAGES]);

/// The sweep's window of machine frames, and the runs of dumped frames it finds.
static mut SWEEP_BITMAP: [u64; SWEEP_WORDS] = [0; SWEEP_WORDS];
static mut RUNS: [Run; MAX_RUNS] = [Run { mfn: 0, pages: 0 }; MAX_RUNS];
/// The zero runs left out (`pvkexec.dump_zero=skip`).
static mut ZERO_RUNS: [Run; MAX_ZERO_RUNS] = [Run { mfn: 0, pages: 0 }; MAX_ZERO_RUNS];

/// The old VMCOREINFO text.
static mut VMCOREINFO: [u8; MAX_VMCOREINFO_NOTE as usize] = [0; MAX_VMCOREINFO_NOTE as usize];

fn window() -> *mut u8 {
    core::ptr::addr_of_mut!(WINDOW) as *mut u8
}

/// Maps old frame `mfn` read-only at window page `slot`.
fn map_old(slot: usize, mfn: u64) -> Result<*const u8, xenpv::XenError> {
    let va = window() as u64 + slot as u64 * PAGE_SIZE;
    // SAFETY: the window is this kernel's bss, referenced by nothing but this module; its
    // entries may point at any frame of the domain, read-only (Xen checks ownership).
    unsafe {
        hypercall::update_va_mapping(va, pte::make(mfn, pte::L1_FLAGS_RO | pte::NX), uvmf::INVLPG)?
    };
    Ok(va as *const u8)
}

/// Copies `out.len()` bytes of old frame `mfn` from `offset` on.
fn read_old(mfn: u64, offset: usize, out: &mut [u8]) -> Result<(), Why> {
    if offset + out.len() > PAGE_SIZE as usize {
        return why!(
            "a read of {} bytes at {:#x} runs past its page",
            out.len(),
            offset
        );
    }
    let p = match map_old(0, mfn) {
        Ok(p) => p,
        Err(e) => return why!("mapping old frame {:#x}: {}", mfn, e),
    };
    // SAFETY: the window page maps the frame read-only; `offset + len` is inside it.
    let src = unsafe { core::slice::from_raw_parts(p.add(offset), out.len()) };
    out.copy_from_slice(src);
    Ok(())
}

/// Copies the first `out.len()` (at most 512) u64s of old frame `mfn` through window page 0.
fn read_u64s(mfn: u64, out: &mut [u64]) -> Result<(), Why> {
    if let Err(e) = map_old(0, mfn) {
        return why!("mapping old frame {:#x}: {}", mfn, e);
    }
    // SAFETY: window page 0 maps `mfn` now, and nothing maps over it before the copy ends.
    let page = unsafe { window_entries(0) };
    for (w, e) in out.iter_mut().zip(page) {
        *w = *e;
    }
    Ok(())
}

/// Stage 1: the record the module wrote at the panic.
fn crash_record(si: &StartInfo) -> Result<CrashRecord, Why> {
    let Some(mfn) = cmdline_value(si.cmdline(), CRASH_CMDLINE_KEY).and_then(parse_u64) else {
        return why!("no {}=0x<mfn> on the command line", CRASH_CMDLINE_KEY);
    };
    let mut bytes = [0u8; core::mem::size_of::<CrashRecord>()];
    read_old(mfn, 0, &mut bytes)?;
    match CrashRecord::read_checked(&bytes) {
        Ok(r) => Ok(r),
        Err(e) => why!("the crash record at mfn {:#x} is not trusted: {}", mfn, e),
    }
}

/// Window page `slot` as the 512 entries of the old frame mapped there.
///
/// # Safety
/// `slot` maps an old frame (by [`map_old`]) and stays mapped while the page is used.
unsafe fn window_entries(slot: usize) -> &'static Page {
    // SAFETY: window pages are page aligned (so u64 aligned) and map a whole frame read-only
    // (the caller's contract); the old kernel is stopped, so nothing writes it.
    unsafe { &*(window().add(slot * PAGE_SIZE as usize) as *const Page) }
}

/// The old memory a sweep reads: every present frame of the old P2M (its leaf pages mapped a
/// window at a time), the leaf pages themselves and this kernel's list pages.
struct OldMemory<'a> {
    lists: &'a FrameLists,
    p2m_len: u64,
}

impl MfnSource for OldMemory<'_> {
    type Error = Why;

    fn each_mfn(&mut self, mfn: &mut dyn FnMut(u64)) -> Result<(), Why> {
        let p2m_len = self.p2m_len;
        let mut batch = [(0usize, 0u64); WINDOW_PAGES];
        let mut n = 0;
        self.lists.each_leaf_chunk(|first, leaves| {
            for (k, &leaf) in leaves.iter().enumerate() {
                batch[n] = (first + k, leaf);
                n += 1;
                if n == WINDOW_PAGES {
                    scan_leaves(&batch, p2m_len, &mut *mfn)?;
                    n = 0;
                }
            }
            Ok(())
        })?;
        scan_leaves(&batch[..n], p2m_len, &mut *mfn)?;
        self.lists.each_leaf_chunk(|_, leaves| {
            leaves.iter().copied().for_each(&mut *mfn);
            Ok(())
        })?;
        self.lists
            .frame_list_mfns()
            .iter()
            .copied()
            .for_each(&mut *mfn);
        self.lists.pages().iter().copied().for_each(&mut *mfn);
        Ok(())
    }
}

/// Maps a batch of the old P2M's leaf pages (`(index, mfn)`) at window pages `0..` and gives
/// the present frames their entries name.
fn scan_leaves(batch: &[(usize, u64)], p2m_len: u64, mfn: &mut dyn FnMut(u64)) -> Result<(), Why> {
    for (slot, &(i, leaf)) in batch.iter().enumerate() {
        if let Err(e) = map_old(slot, leaf) {
            return why!("mapping P2M page {} (mfn {:#x}): {}", i, leaf, e);
        }
    }
    for (slot, &(i, _)) in batch.iter().enumerate() {
        let entries = (p2m_len - (i * ENTRIES) as u64).min(ENTRIES as u64) as usize;
        // SAFETY: `slot` was mapped above and nothing maps over it before this loop ends.
        let page = unsafe { window_entries(slot) };
        page[..entries]
            .iter()
            .filter_map(|&e| vmcore::present_mfn(e))
            .for_each(&mut *mfn);
    }
    Ok(())
}

/// Linux's block major for Xen virtual disks (`xvd*`): vbd number = major << 8 | 16 * index.
const XVD_MAJOR: u32 = 202;

/// The dump disk `pvkexec.dump=` names: `xvdX` (a-z) or a vbd number.
fn dump_vbd(si: &StartInfo) -> Result<u32, Why> {
    let Some(word) = cmdline_value(si.cmdline(), "pvkexec.dump") else {
        return why!("no pvkexec.dump=xvdX on the command line: the dump disk must be named (a dump overwrites it)");
    };
    let vbd = match word {
        [b'x', b'v', b'd', l @ b'a'..=b'z'] => Some((XVD_MAJOR << 8) | (u32::from(l - b'a') * 16)),
        _ => parse_u64(word).and_then(|n| u32::try_from(n).ok()),
    };
    match vbd {
        Some(v) => Ok(v),
        None => why!(
            "pvkexec.dump={}: name a disk as xvdX or a vbd number",
            Bytes(word)
        ),
    }
}

/// What `pvkexec.dump_zero=` asks for: `keep` (the default) writes every frame, `skip` leaves
/// runs of zero frames out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ZeroPages {
    Keep,
    Skip,
}

fn zero_pages(si: &StartInfo) -> ZeroPages {
    match cmdline_value(si.cmdline(), "pvkexec.dump_zero") {
        None | Some(b"keep") => ZeroPages::Keep,
        Some(b"skip") => ZeroPages::Skip,
        Some(other) => {
            // `pvkexec load -p` refuses other values; a dump is worth more than the option.
            println!(
                "PVKEXEC-INFO capture: pvkexec.dump_zero={} is neither keep nor skip: every frame is written",
                Bytes(other)
            );
            ZeroPages::Keep
        }
    }
}

/// With `pvkexec.dump_zero=skip`: reads every dumped frame once in file order (each mapped
/// into the window's pages in turn) and finds the runs of zero frames to leave out
/// (`vmcore::zero`). A frame that cannot be mapped
/// counts as not zero (the write puts zeroes there and counts it).
fn zero_runs(frames: &Frames<'_>) -> ZeroRuns<'static> {
    // SAFETY: the single-threaded capture kernel takes ZERO_RUNS once, here.
    let table = unsafe { &mut *core::ptr::addr_of_mut!(ZERO_RUNS) };
    let mut finder = ZeroRunFinder::new(table, vmcore::zero::MIN_ZERO_RUN, frames);
    let mut slot = 0;
    for mfn in frames.mfns() {
        let zero = match map_old(slot, mfn) {
            Ok(p) => {
                // SAFETY: window page `slot` maps the frame read-only until it is mapped over.
                let page = unsafe { core::slice::from_raw_parts(p, PAGE_SIZE as usize) };
                vmcore::zero::is_zero(page)
            }
            Err(_) => false,
        };
        finder.page(mfn, zero);
        slot = (slot + 1) % WINDOW_PAGES;
    }
    finder.finish()
}

/// Command-line bytes, printed as text.
struct Bytes<'a>(&'a [u8]);

impl core::fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(core::str::from_utf8(self.0).unwrap_or("(not UTF-8)"))
    }
}

/// This kernel's MFN of one of its own (statically allocated) pages.
fn own_mfn(own_p2m: &[u64], va: u64) -> Result<u64, Why> {
    let pfn = ((va - VIRT_BASE) / PAGE_SIZE) as usize;
    match own_p2m.get(pfn) {
        Some(&m) => Ok(m),
        None => why!("va {:#x} is outside this kernel's P2M", va),
    }
}

/// The frame list the dump's "Xen" note names. Its frame-list pages are the crash record's
/// list pages (a full one holds 512 leaf MFNs, which is a whole frame-list page), but the
/// last, which is a copy in this kernel's page padded with the missing leaf; the
/// frame-list-list, the missing leaf and the missing frame-list page are this kernel's too.
struct FrameLists {
    /// The frame-list-list: frame-list page `i`'s MFN in slot `i < n`.
    top: &'static Page,
    /// The last frame-list page.
    last: &'static Page,
    leaves: usize,
    n: usize,
    /// This kernel's pages (in [`LISTS`] order).
    own: [u64; OWN_LIST_PAGES],
    /// Directory pages of the record the list pages were found through.
    dirs: u64,
}

impl FrameLists {
    /// This kernel's pages to dump (the last frame-list page, the missing leaf and frame-list
    /// page, the top).
    fn pages(&self) -> &[u64] {
        &self.own
    }

    /// The frame-list pages' MFNs.
    fn frame_list_mfns(&self) -> &[u64] {
        &self.top[..self.n]
    }

    fn frame_list_list(&self) -> u64 {
        self.own[FRAME_LIST_LIST]
    }

    fn missing_leaf(&self) -> u64 {
        self.own[MISSING_LEAF]
    }

    /// Calls `f` with each frame-list page's leaf MFNs and the index of its first leaf, in
    /// PFN order; the record's list pages are read from old memory one at a time (window
    /// page 0, copied before `f` runs).
    fn each_leaf_chunk(
        &self,
        mut f: impl FnMut(usize, &[u64]) -> Result<(), Why>,
    ) -> Result<(), Why> {
        let mut names = [0u64; ENTRIES];
        for i in 0..self.n {
            let count = (self.leaves - i * ENTRIES).min(ENTRIES);
            if i + 1 == self.n {
                f(i * ENTRIES, &self.last[..count])?;
            } else {
                read_u64s(self.top[i], &mut names[..count])?;
                f(i * ENTRIES, &names[..count])?;
            }
        }
        Ok(())
    }
}

/// Stage 2: the frame list over the old P2M's leaves, padded to 512 GiB of PFNs with a
/// missing leaf and a missing frame-list page (Linux's shape). The record's directory chain
/// names its list pages; each is read and checked as a frame-list page.
fn frame_list(r: &CrashRecord, own_p2m: &[u64]) -> Result<FrameLists, Why> {
    // SAFETY: the single-threaded capture kernel takes LISTS once, here.
    let lists = unsafe { &mut (*core::ptr::addr_of_mut!(LISTS)).0 };
    let mut own = [0u64; OWN_LIST_PAGES];
    for (m, page) in own.iter_mut().zip(lists.iter()) {
        *m = own_mfn(own_p2m, page.as_ptr() as u64)?;
    }
    let [last, missing_leaf, missing_list, top] = lists;
    let leaves = r.p2m_pages() as usize;
    let shape = match FrameListShape::new(leaves, own[MISSING_LEAF]) {
        Ok(s) => s,
        Err(e) => return why!("frame list: {}", e),
    };
    p2m::missing_leaf_page(missing_leaf);
    shape.missing_frame_list_page(missing_list);
    let n = shape.frame_list_pages();
    let mut mfns = [0u64; ENTRIES];
    let mut names = [0u64; ENTRIES];
    let mut walk = r.list_pages();
    for (i, slot) in mfns[..n].iter_mut().enumerate() {
        let list = match walk.next_mfn(|mfn, page| read_u64s(mfn, page)) {
            Ok(Some(m)) => m,
            Ok(None) => return why!("the record names {} list pages, {} needed", i, n),
            Err(e) => return why!("the record's P2M directory: {}", e),
        };
        let count = match shape.leaves_in(i) {
            Ok(c) => c,
            Err(e) => return why!("frame list page {}: {}", i, e),
        };
        read_u64s(list, &mut names[..count])?;
        // Checks the list page (the last one is then this kernel's padded copy).
        if let Err(e) = shape.frame_list_page(i, &names[..count], last) {
            return why!(
                "frame list page {} (record list page {:#x}): {}",
                i,
                list,
                e
            );
        }
        *slot = if i + 1 == n { own[LAST_LIST] } else { list };
    }
    if let Err(e) = shape.frame_list_list_page(&mfns[..n], own[MISSING_LIST], top) {
        return why!("frame-list-list: {}", e);
    }
    Ok(FrameLists {
        top,
        last,
        leaves,
        n,
        own,
        dirs: walk.dirs_read(),
    })
}

/// Stage 3: the dumped frames as runs, swept from the old memory in bounded storage. A
/// failure names its check: `old-p2m` (old memory unreadable) or `frames` (no vmcore can
/// hold these frames).
fn dumped_frames(
    r: &CrashRecord,
    lists: &FrameLists,
) -> Result<Swept<'static>, (&'static str, Why)> {
    // SAFETY: the single-threaded capture kernel takes the sweep's statics once, here.
    let (bitmap, runs) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(SWEEP_BITMAP),
            &mut *core::ptr::addr_of_mut!(RUNS),
        )
    };
    let mut old = OldMemory {
        lists,
        p2m_len: r.p2m_len,
    };
    let swept = match vmcore::sweep(&mut old, bitmap, runs) {
        Ok(s) => s,
        Err(SweepError::Source(why)) => return Err(("old-p2m", why)),
        Err(SweepError::Frames(e)) => return Err(("frames", Why::new(format_args!("{}", e)))),
    };
    // A frame left out of the dump reads as a hole, but a P2M page left out breaks both tools.
    let mut missing = None;
    let found = lists.each_leaf_chunk(|_, leaves| {
        missing = missing.or_else(|| swept.frames.first_missing(leaves));
        Ok(())
    });
    if let Err(why) = found {
        return Err(("old-p2m", why));
    }
    let missing = missing
        .or_else(|| swept.frames.first_missing(lists.frame_list_mfns()))
        .or_else(|| swept.frames.first_missing(lists.pages()));
    if let Some(m) = missing {
        let why = Why::new(format_args!(
            "P2M or list page mfn {:#x} is not in the dump",
            m
        ));
        return Err(("frames", why));
    }
    Ok(swept)
}

/// The old VMCOREINFO note's text (the descriptor of the "VMCOREINFO" ELF note).
fn vmcoreinfo(r: &CrashRecord) -> Result<&'static [u8], Why> {
    let size = r.vmcoreinfo_size as usize;
    if r.vmcoreinfo_maddr == 0 || size < 12 {
        return why!("the record names no VMCOREINFO note");
    }
    let mut note = [0u8; MAX_VMCOREINFO_NOTE as usize];
    let mut done = 0;
    while done < size {
        let at = r.vmcoreinfo_maddr + done as u64;
        let off = (at & 0xfff) as usize;
        let n = (size - done).min(PAGE_SIZE as usize - off);
        read_old(at >> 12, off, &mut note[done..done + n])?;
        done += n;
    }
    let word =
        |i: usize| u32::from_le_bytes([note[i], note[i + 1], note[i + 2], note[i + 3]]) as usize;
    let (namesz, descsz) = (word(0), word(4));
    let desc = 12 + namesz.div_ceil(4) * 4;
    if &note[12..12 + namesz.min(11)] != b"VMCOREINFO\0".get(..namesz.min(11)).unwrap_or(b"")
        || desc + descsz > size
    {
        return why!(
            "the VMCOREINFO note at {:#x} is malformed",
            r.vmcoreinfo_maddr
        );
    }
    // SAFETY: the single-threaded capture kernel takes VMCOREINFO once, here.
    let text = unsafe { &mut *core::ptr::addr_of_mut!(VMCOREINFO) };
    let body = &note[desc..desc + descsz];
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    text[..end].copy_from_slice(&body[..end]);
    Ok(&text[..end])
}

/// Each CPU's note (the panicking CPU's and those that took the NMI; a CPU stopped from
/// outside gets empty registers, and is named).
fn cpu_states(r: &CrashRecord, out: &mut [CpuState; 8]) -> usize {
    for (i, c) in r.cpus().iter().enumerate() {
        out[i] = CpuState {
            pid: c.pid as i32,
            regs: UserRegs::from_words(c.regs),
        };
        match c.state {
            CPU_SAVED => {}
            CPU_STOPPED => println!(
                "PVKEXEC-INFO capture: CPU {} did not answer the NMI and was stopped from outside: no registers",
                i
            ),
            s => println!("PVKEXEC-INFO capture: CPU {} has state {}: no registers", i, s),
        }
    }
    r.cpus().len()
}

/// Writes the vmcore from sector 0: header, then every frame kept, as many at a time as the
/// blkfront's pool holds (each mapped into the window's pages in turn and copied straight into
/// a data page). A frame that cannot be mapped is written as zeroes and counted.
fn write_dump(disk: &mut Blkfront, core: &Vmcore) -> Result<(u64, u64), Why> {
    let need = core.file_len().div_ceil(SECTOR);
    if disk.info().sectors < need {
        return why!(
            "the disk has {} sectors; the vmcore needs {}",
            disk.info().sectors,
            need
        );
    }
    let mut buf = [0u8; PAGE_SIZE as usize];
    let mut header = core.header();
    let mut at = 0u64;
    while !header.is_done() {
        let n = header.fill(&mut buf);
        disk.write(
            at / SECTOR,
            &buf[..n.div_ceil(SECTOR as usize) * SECTOR as usize],
        )?;
        at += n as u64;
    }
    let mut unreadable = 0u64;
    let mut pages = core.pages();
    // The frames of one batch: consecutive in the file (the data has no gaps).
    let mut batch = [0u64; blkfront::BATCH_PAGES];
    while let Some(first) = pages.next() {
        batch[0] = first.mfn;
        let mut n = 1;
        while n < batch.len() {
            let Some(next) = pages.next() else { break };
            batch[n] = next.mfn;
            n += 1;
        }
        disk.write_pages(first.offset / SECTOR, n, |i, out| {
            match map_old(i % WINDOW_PAGES, batch[i]) {
                Ok(p) => {
                    // SAFETY: the window page maps the frame read-only until it is mapped
                    // over, which is after this copy.
                    out.copy_from_slice(unsafe {
                        core::slice::from_raw_parts(p, PAGE_SIZE as usize)
                    });
                }
                Err(_) => {
                    unreadable += 1;
                    out.fill(0);
                }
            }
            Ok::<(), Why>(())
        })?;
    }
    Ok((core.file_len(), unreadable))
}

#[no_mangle]
extern "C" fn guest_main(si: *const StartInfo) -> ! {
    // SAFETY: Xen passes a mapped start_info page in rsi; it stays mapped and unchanged.
    let si = unsafe { &*si };
    let region = Region::from_stack_top(VIRT_BASE, entry_regs()[reg::RSP]);
    kernelrt::console_init(si, &region);
    let sh = match shared::map_shared_info(si) {
        Ok(sh) => sh,
        Err(e) => {
            fail("shared-info", format_args!("{}", e));
            finish()
        }
    };
    let clk = match clock::vcpu0(si, sh) {
        Ok(c) => c,
        Err(e) => {
            fail("clock", format_args!("{}", e));
            finish()
        }
    };
    run(si, &region, clk);
    finish()
}

fn run(si: &StartInfo, region: &Region, clk: &'static VcpuInfo) {
    let entered = clock::now(clk);
    let r = match crash_record(si) {
        Ok(r) => r,
        Err(e) => return fail("crash-record", format_args!("{}", e)),
    };
    pass("crash-record");
    println!(
        "PVKEXEC-INFO capture: crash record: {} CPUs, panic on CPU {}, old P2M of {} entries, Xen {}.{}; first line {} ms after the panic",
        r.nr_cpus,
        r.panic_cpu,
        r.p2m_len,
        r.xen_version >> 16,
        r.xen_version & 0xffff,
        entered.saturating_sub(r.panic_time_ns) / 1_000_000
    );
    let own_p2m = view::p2m(si);
    let lists = match frame_list(&r, own_p2m) {
        Ok(l) => l,
        Err(e) => return fail("old-p2m", format_args!("{}", e)),
    };
    println!(
        "PVKEXEC-INFO capture: P2M frame list: {} leaf pages in {} frame-list pages, the crash record's list pages found through {} directory page(s) ({} list pages named), the last copied; padded to {} PFNs with a missing leaf (mfn {:#x}); frame-list-list mfn {:#x}",
        lists.leaves,
        lists.n,
        lists.dirs,
        r.p2m_lists,
        p2m::COVERED_PFNS,
        lists.missing_leaf(),
        lists.frame_list_list()
    );
    let swept = match dumped_frames(&r, &lists) {
        Ok(s) => s,
        Err((stage, e)) => return fail(stage, format_args!("{}", e)),
    };
    pass("old-p2m");
    let frames = swept.frames;
    println!(
        "PVKEXEC-INFO capture: {} frames in {} runs ({} named twice), swept in {} pass(es) over the old P2M",
        frames.pages(),
        frames.run_count(),
        frames.duplicates(),
        swept.passes
    );
    let vmcoreinfo = match vmcoreinfo(&r) {
        Ok(v) => v,
        Err(e) => return fail("vmcoreinfo", format_args!("{}", e)),
    };
    pass("vmcoreinfo");
    let mut cpus = [CpuState::default(); 8];
    let nr_cpus = cpu_states(&r, &mut cpus);
    let notes = Notes {
        cpus: &cpus[..nr_cpus],
        vmcoreinfo,
        xen: CrashXenInfo::guest(
            u64::from(r.xen_version >> 16),
            u64::from(r.xen_version & 0xffff),
            lists.frame_list_list(),
        ),
    };
    // Checked before the disk is touched; the zero runs come after the disk's backend is
    // reset (the dead kernel's disk requests no longer write old frames while they are read).
    if let Err(e) = Vmcore::new(frames, notes) {
        return fail("vmcore-layout", format_args!("{}", e));
    }
    let zero = zero_pages(si);
    // SAFETY: the xenstore ring page is mapped writable in the initial region (the purgatory
    // gave this kernel the old domain's ring) and only this client uses it.
    let Some(store_va) = region.pfn_va(view::m2p(si.store_mfn)) else {
        return fail(
            "disk",
            format_args!("store_mfn {:#x} is not mapped", si.store_mfn),
        );
    };
    // SAFETY: as above.
    let mut xs = unsafe { Xenstore::new(store_va, si.store_evtchn) };
    let vbd = match dump_vbd(si) {
        Ok(v) => v,
        Err(e) => return fail("disk", format_args!("{}", e)),
    };
    let mut disk = match Blkfront::connect_to(&mut xs, si, region, Some(vbd)) {
        Ok(d) => d,
        Err(e) => return fail("disk", format_args!("{}", e)),
    };
    println!(
        "PVKEXEC-INFO capture: disk {} of {} sectors connected (backend reset: {}; {} segments per request, the backend's indirect maximum {}; persistent grants: {})",
        disk.frontend_path(),
        disk.info().sectors,
        disk.info().was_reset,
        disk.info().segments,
        disk.info().max_indirect_segments,
        disk.info().persistent
    );
    let zeros = match zero {
        ZeroPages::Keep => ZeroRuns::NONE,
        ZeroPages::Skip => {
            let start = clock::now(clk);
            let z = zero_runs(&frames);
            println!(
                "PVKEXEC-INFO capture: pvkexec.dump_zero=skip: {} of {} frames are zero; {} left out in {} runs of at least {} frames (read in {} ms)",
                z.zero_pages(),
                frames.pages(),
                z.pages(),
                z.runs().len(),
                z.min_pages(),
                clock::now(clk).saturating_sub(start) / 1_000_000
            );
            z
        }
    };
    let core = match Vmcore::leaving_out(frames, zeros, notes) {
        Ok(c) => c,
        Err(e) => return fail("vmcore-layout", format_args!("{}", e)),
    };
    println!(
        "PVKEXEC-INFO capture: vmcore of {} frames in {} PT_LOADs, {} bytes ({} frames written)",
        core.frames().pages(),
        core.phnum() - 1,
        core.file_len(),
        core.data_pages()
    );
    let start = clock::now(clk);
    let written = write_dump(&mut disk, &core);
    let ns = clock::now(clk).saturating_sub(start).max(1);
    check(
        "vmcore-written",
        written.map(|(bytes, unreadable)| {
            println!(
                "PVKEXEC-INFO capture: vmcore written: {} bytes in {} ms ({} KiB/s), {} frames unreadable",
                bytes,
                ns / 1_000_000,
                bytes / 1024 * 1_000_000_000 / ns,
                unreadable
            );
        }),
    );
}
