//! Old kernel of a kexec (the kernel side): it leaves the domain the way a Linux kernel would,
//! then hands it to the purgatory.
//!
//! Before the kexec it sets up what a real kernel has: a writable direct map of all its RAM at
//! Linux's `page_offset_base` (page-table frames mapped read-only, as Xen requires), its own
//! GDT with a data selector loaded, extra pinned page-table trees (process L4s sharing the
//! kernel half), VIRQ_TIMER bound with a periodic and a single-shot timer running, and its
//! free frames filled with [`OLD_DATA_POISON`]. Then, as a kernel side must, it unpins the
//! extra trees, maps the purgatory at the image's lower-half base, fills the handoff block
//! (version 5: the free pool, the direct map, a scratch VA, the purgatory's working memory:
//! `pvhandoff::handoff::work_pages(nr_pages)` frames taken from the top of the free pool,
//! mapped through the direct map) and enters the purgatory.
//!
//! Frames are taken from the top of RAM downwards; the free pool is what lies between the
//! initial region and the lowest frame taken.
//!
//! With several VCPUs, it brings every AP up with `VCPUOP_initialise` on its own stack and
//! GDT, with VIRQ_TIMER bound, a periodic and a single-shot timer running and an NMI callback
//! registered; the APs then sleep. At the kexec each AP gets `VCPUOP_send_nmi`, and its NMI
//! handler leaves for the purgatory's AP entry (`AP_ENTRY_OFFSET`) through `HYPERVISOR_iret`;
//! the boot VCPU jumps to the purgatory's entry.
//!
//! Command-line word `kexec_ap_stop=ipi` makes it a kernel without NMI callbacks: the APs
//! register none and sleep in `SCHEDOP_poll` on their own IPI port only; at the kexec each
//! gets an event on that port (`EVTCHNOP_send`), wakes, finds the port pending in the FIFO
//! event array and jumps to the purgatory's AP entry from its normal context.
//!
//! Command-line word `kexec_vcpu_info=1` places every VCPU's `vcpu_info` in a frame of its
//! own (`VCPUOP_register_vcpu_info`), which the handoff lists.
//!
//! Command-line word `kexec_store=loopback` adds a loopback interdomain pair standing in for a
//! domU's xenstore channel, kept for the new kernel through the handoff (`keep_store_port`).
//!
//! Command-line word `kexec_grant=v2` switches the grant table to v2 before offering grants
//! (16-byte entries; the purgatory must set it back to v1).
//!
//! Command-line word `kexec_fault=` breaks the kernel side's contract on purpose, for the
//! tests that show who catches it: `keep-trees` leaves the process trees pinned (the new
//! kernel finds frames it cannot map writable); `pool-overlap` puts the old P2M list in the
//! free pool (the purgatory refuses the handoff); `grant-in-use` leaves one offered grant
//! mapped (the purgatory cannot revoke it and refuses); `ap-stuck` keeps VCPU 1 in the old kernel
//! (it registers no NMI callback, so the NMI is dropped; the purgatory names it and crashes
//! the domain); `work-in-pool` gives the purgatory working memory inside the free pool (it
//! refuses before any frame changes hands); `handoff-v4` hands a version-4 block, which has no
//! working memory (the purgatory's entry code names it and crashes the domain).
#![no_std]
#![no_main]
// Check results carry their reason in a fixed buffer: these kernels have no heap to box it in.
#![allow(clippy::result_large_err)]

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use guestrt::println;
use pvhandoff::handoff::{Handoff, HANDOFF_MAGIC, HANDOFF_VERSION};
use pvhandoff::handoff::{AP_ENTRY_OFFSET, MAX_VCPUS};
use pvhandoff::image::{ImageView, SEG_FLAG_PURGATORY_MAPPING};
use pvtest_kernels::entry::{entry_regs, reg};
use pvtest_kernels::report::{fail, finish, Why};
use pvtest_kernels::shared;
use pvtest_kernels::view::{p2m, walk, Region};
use pvtest_kernels::{cmdline_value, notes::VIRT_BASE, why, OLD_DATA_POISON};
use xenpv::{
    callback, evtchn, evtchnop, hypercall, mmu, mmuext, pte, selector, uvmf, vcpuop, vgcf, virq,
    CallbackRegister, EvtchnExpandArray, EvtchnInitControl, MmuUpdate, MmuextOp, StartInfo,
    VcpuGuestContext, VcpuRegisterArea, VcpuRegisterVcpuInfo, VcpuSetPeriodicTimer, XenError,
    PAGE_SIZE,
};

/// Linux's direct-map base (`page_offset_base` without KASLR): L4 slot 273, L3 index 0.
const DIRECT_MAP: u64 = 0xffff_8880_0000_0000;
/// Pinned process trees besides the kernel's own.
const EXTRA_TREES: usize = 2;
/// Pages of the free pool filled with the poison (all of it up to this many).
const POISON_PAGES: u64 = 16384;
/// The data selector of the kernel's own GDT (entry 1, RPL 3).
const DATA_SELECTOR: u16 = (1 << 3) | 3;

/// A page whose L1 entry is borrowed to fill frames before they become tables.
#[repr(C, align(4096))]
struct Page([u8; PAGE_SIZE as usize]);
static mut SCRATCH: Page = Page([0; PAGE_SIZE as usize]);

/// Most working-memory frames this kernel hands over (enough for a 512 GiB domain).
const WORK_PFNS_MAX: usize = 4352;
/// The old PFN of each working-memory frame (`Handoff::work_pfns_va`).
static mut WORK_PFNS: [u64; WORK_PFNS_MAX] = [0; WORK_PFNS_MAX];

static mut HANDOFF: Handoff = Handoff {
    magic: 0,
    version: 0,
    _pad: 0,
    image_va: 0,
    image_len: 0,
    old_start_info_va: 0,
    old_virt_base: 0,
    free_first_pfn: 0,
    free_pages: 0,
    direct_map_va: 0,
    scratch_va: 0,
    nr_vcpus: 0,
    keep_store_port: 0,
    keep_console_port: 0,
    vcpu_info_va: 0,
    work_va: 0,
    work_pages: 0,
    work_pfns_va: 0,
};

#[no_mangle]
extern "C" fn guest_main(si: *const StartInfo) -> ! {
    // SAFETY: Xen passes a mapped start_info page in rsi; it stays mapped and unchanged.
    let si = unsafe { &*si };
    let region = Region::from_stack_top(VIRT_BASE, entry_regs()[reg::RSP]);
    pvtest_kernels::console_init(si, &region);
    match prepare(si, &region) {
        Ok(entry) => {
            println!("PVKEXEC-INFO kexec: entering the purgatory at {:#x}", entry);
            // In a domU: let xenconsoled read the ring before the purgatory takes over.
            guestrt::console::flush();
            // SAFETY: `prepare` mapped the purgatory's pages (relocated for this address by the
            // loader) and filled HANDOFF; control never returns.
            unsafe {
                asm!("jmp {entry}", entry = in(reg) entry,
                     in("rdi") core::ptr::addr_of!(HANDOFF) as u64, options(noreturn))
            }
        }
        Err(why) => {
            fail("kexec-prepare", format_args!("{}", why));
            finish()
        }
    }
}

/// Frames taken from the top of RAM for tables, the GDT and the process trees.
struct TopFrames {
    next: u64,
    limit: u64,
}

impl TopFrames {
    fn take(&mut self) -> Result<u64, Why> {
        if self.next <= self.limit {
            return why!("domain too small for the kernel side's tables");
        }
        self.next -= 1;
        Ok(self.next)
    }
}

/// Where every frame the kernel side took lives.
struct Layout {
    purgatory_tables: [u64; 3],
    gdt: u64,
    /// GDT frames of the APs (index = VCPU id; 0 unused).
    ap_gdt: [u64; MAX_VCPUS as usize],
    /// FIFO event control blocks, one per VCPU.
    fifo: [u64; MAX_VCPUS as usize],
    /// The FIFO event array's first page (ports 0..1023).
    event_array: u64,
    /// Frames of the VCPUs' placed `vcpu_info`, one per VCPU.
    vcpu_info: [u64; MAX_VCPUS as usize],
    trees: [u64; EXTRA_TREES],
    dm_l3: u64,
    /// First PFN of the direct map's L2 frames (descending run: `dm_l2 - i`).
    dm_l2: u64,
    nr_l2: u64,
    dm_l1: u64,
    nr_l1: u64,
    /// Lowest frame taken: `[floor, nr_pages)` are tables or descriptor tables.
    floor: u64,
}

fn plan_frames(si: &StartInfo, region: &Region, nr_vcpus: u32) -> Result<Layout, Why> {
    let region_pages = (region.end - VIRT_BASE) / PAGE_SIZE;
    let mut top = TopFrames {
        next: si.nr_pages,
        limit: region_pages,
    };
    let purgatory_tables = [top.take()?, top.take()?, top.take()?];
    let gdt = top.take()?;
    let mut ap_gdt = [0; MAX_VCPUS as usize];
    for g in ap_gdt.iter_mut().take(nr_vcpus as usize).skip(1) {
        *g = top.take()?;
    }
    let mut fifo = [0; MAX_VCPUS as usize];
    for c in fifo.iter_mut().take(nr_vcpus as usize) {
        *c = top.take()?;
    }
    let event_array = top.take()?;
    let mut vcpu_info = [0; MAX_VCPUS as usize];
    for v in vcpu_info.iter_mut().take(nr_vcpus as usize) {
        *v = top.take()?;
    }
    let mut trees = [0; EXTRA_TREES];
    for t in &mut trees {
        *t = top.take()?;
    }
    let nr_l1 = si.nr_pages.div_ceil(512);
    let nr_l2 = nr_l1.div_ceil(512);
    if nr_l2 > 512 {
        return why!("more RAM than one direct-map L3 covers");
    }
    let dm_l3 = top.take()?;
    let dm_l2 = top.take()?;
    for _ in 1..nr_l2 {
        top.take()?;
    }
    let dm_l1 = top.take()?;
    for _ in 1..nr_l1 {
        top.take()?;
    }
    Ok(Layout {
        purgatory_tables,
        gdt,
        ap_gdt,
        fifo,
        event_array,
        vcpu_info,
        trees,
        dm_l3,
        dm_l2,
        nr_l2,
        dm_l1,
        nr_l1,
        floor: top.next,
    })
}

/// Fills frames through the scratch page while they are still ordinary writable frames.
struct Filler<'a> {
    p2m: &'a [u64],
    va: u64,
    original: u64,
    hypercalls: u64,
}

impl<'a> Filler<'a> {
    fn new(si: &StartInfo, region: &Region, p2m: &'a [u64]) -> Result<Self, Why> {
        let va = core::ptr::addr_of_mut!(SCRATCH) as u64;
        match walk(si, region, va) {
            Ok(w) => Ok(Filler {
                p2m,
                va,
                original: w.l1e,
                hypercalls: 0,
            }),
            Err(e) => why!("scratch page: {}", e),
        }
    }

    /// Writes `entry(i)` into the 512 words of frame `pfn`.
    fn fill(&mut self, pfn: u64, entry: impl Fn(usize) -> u64) -> Result<(), Why> {
        let mfn = self.p2m[pfn as usize];
        self.hypercalls += 1;
        // SAFETY: the scratch page is ours and unreferenced; it points at `mfn`, a frame the
        // kernel side took for itself, until `done` restores it.
        let mapped = unsafe {
            hypercall::update_va_mapping(
                self.va,
                pte::make(mfn, pte::L1_FLAGS | pte::D),
                uvmf::INVLPG,
            )
        };
        if let Err(e) = mapped {
            return why!("update_va_mapping(scratch -> mfn {:#x}): {}", mfn, e);
        }
        for i in 0..512usize {
            // SAFETY: the scratch page maps the frame writable; 512 u64 fill it.
            unsafe { (self.va as *mut u64).add(i).write_volatile(entry(i)) };
        }
        Ok(())
    }

    /// Gives the scratch page its own frame back: the filled frames lose their only writable
    /// mapping outside the direct map, as Xen requires before they become tables.
    fn done(&mut self) -> Result<(), Why> {
        self.hypercalls += 1;
        // SAFETY: restores the scratch page's original L1 entry (its own frame, writable).
        match unsafe { hypercall::update_va_mapping(self.va, self.original, uvmf::INVLPG) } {
            Ok(()) => Ok(()),
            Err(e) => why!("restoring the scratch mapping: {}", e),
        }
    }
}

/// Maps the purgatory and the direct map, loads the GDT, pins and unpins the process trees,
/// starts the timers, poisons the free pool and fills the handoff block; returns the purgatory
/// entry.
fn prepare(si: &StartInfo, region: &Region) -> Result<u64, Why> {
    if si.mod_start == 0 || si.mod_len == 0 {
        return why!("no boot module: pass the kexec image as the kernel's module");
    }
    // SAFETY: without MOD_START_PFN, Xen maps the module at mod_start for mod_len bytes in the
    // initial region; it stays mapped and is only read here.
    let bytes =
        unsafe { core::slice::from_raw_parts(si.mod_start as *const u8, si.mod_len as usize) };
    let image = match ImageView::parse(bytes) {
        Ok(i) => i,
        Err(e) => return why!("module is not a kexec image: {:?}", e),
    };
    let Some(index) = image
        .segments()
        .position(|s| s.flags & SEG_FLAG_PURGATORY_MAPPING != 0)
    else {
        return why!("the image has no purgatory segment");
    };
    let seg = image.segment(index);
    let offset = match image.data_offset(index) {
        Ok(o) => o,
        Err(e) => return why!("purgatory segment: {:?}", e),
    };
    let base = image.header.purgatory_base;
    if !si.mod_start.is_multiple_of(PAGE_SIZE)
        || !offset.is_multiple_of(PAGE_SIZE)
        || seg.nr_pages > 511
    {
        return why!("purgatory segment not page aligned in the module or 2 MiB or more");
    }
    let p2m = p2m(si);
    let nr_vcpus = count_vcpus();
    let l = plan_frames(si, region, nr_vcpus)?;
    let l4_pfn = match region.va_pfn(si.pt_base) {
        Some(p) => p,
        None => return why!("pt_base {:#x} outside the region", si.pt_base),
    };
    let l4 = |i: usize| {
        // SAFETY: the L4 at pt_base is mapped read-only in the region; reading one entry.
        unsafe { ((si.pt_base + i as u64 * 8) as *const u64).read_volatile() }
    };
    let (purg_slot, dm_slot) = (pte::index(base, 4), pte::index(DIRECT_MAP, 4));
    if pte::present(l4(purg_slot)) || pte::present(l4(dm_slot)) {
        return why!("L4 slot {} or {} already in use", purg_slot, dm_slot);
    }
    let upper = |pfn: u64| pte::make(p2m[pfn as usize], pte::UPPER_FLAGS);
    let pt_first = l4_pfn;
    let is_table =
        |pfn: u64| (pfn >= pt_first && pfn < pt_first + si.nr_pt_frames) || pfn >= l.floor;

    let mut f = Filler::new(si, region, p2m)?;
    // The purgatory's L3 -> L2 -> L1 -> the image's purgatory pages.
    let [p_l3, p_l2, p_l1] = l.purgatory_tables;
    let first_src = (si.mod_start + offset - VIRT_BASE) / PAGE_SIZE;
    let first = pte::index(base, 1);
    f.fill(p_l1, |i| {
        let k = i.wrapping_sub(first) as u64;
        if i >= first && k < seg.nr_pages {
            pte::make(p2m[(first_src + k) as usize], pte::L1_FLAGS | pte::D)
        } else {
            0
        }
    })?;
    f.fill(p_l2, |i| {
        if i == pte::index(base, 2) {
            upper(p_l1)
        } else {
            0
        }
    })?;
    f.fill(p_l3, |i| {
        if i == pte::index(base, 3) {
            upper(p_l2)
        } else {
            0
        }
    })?;
    // The direct map: every PFN, writable unless it is a page or descriptor table.
    for k in 0..l.nr_l1 {
        f.fill(l.dm_l1 - k, |i| {
            let pfn = k * 512 + i as u64;
            if pfn >= si.nr_pages {
                0
            } else if is_table(pfn) {
                pte::make(p2m[pfn as usize], pte::L1_FLAGS_RO)
            } else {
                pte::make(p2m[pfn as usize], pte::L1_FLAGS | pte::D)
            }
        })?;
    }
    for j in 0..l.nr_l2 {
        f.fill(l.dm_l2 - j, |i| {
            let k = j * 512 + i as u64;
            if k < l.nr_l1 {
                upper(l.dm_l1 - k)
            } else {
                0
            }
        })?;
    }
    f.fill(l.dm_l3, |i| {
        if (i as u64) < l.nr_l2 {
            upper(l.dm_l2 - i as u64)
        } else {
            0
        }
    })?;
    // The GDT: a null descriptor and a flat data segment at DPL 3 (the PV kernel's ring).
    for &c in l.fifo[..nr_vcpus as usize]
        .iter()
        .chain(&l.vcpu_info[..nr_vcpus as usize])
        .chain(core::iter::once(&l.event_array))
    {
        f.fill(c, |_| 0)?;
    }
    for &g in core::iter::once(&l.gdt).chain(&l.ap_gdt[1..nr_vcpus as usize]) {
        f.fill(g, |i| match i {
            1 => 0x00cf_f300_0000_ffff,
            _ => 0,
        })?;
    }
    f.done()?;

    let hooks = [
        MmuUpdate {
            ptr: (p2m[l4_pfn as usize] * PAGE_SIZE + purg_slot as u64 * 8) | mmu::NORMAL_PT_UPDATE,
            val: upper(p_l3),
        },
        MmuUpdate {
            ptr: (p2m[l4_pfn as usize] * PAGE_SIZE + dm_slot as u64 * 8) | mmu::NORMAL_PT_UPDATE,
            val: upper(l.dm_l3),
        },
    ];
    // SAFETY: links two fully built trees of the kernel side's own frames into empty L4
    // slots; Xen validates them, and no mapping the kernel uses changes.
    if let Err(e) = unsafe { hypercall::mmu_update(&hooks) } {
        return why!("mmu_update(L4[{}], L4[{}]): {}", purg_slot, dm_slot, e);
    }
    println!(
        "PVKEXEC-INFO kexec: purgatory ({} pages) mapped at {:#x}; direct map of {} frames at {:#x} ({} L1 tables)",
        seg.nr_pages, base, si.nr_pages, DIRECT_MAP, l.nr_l1
    );

    load_gdt(p2m[l.gdt as usize])?;
    pin_trees(&mut f, &l, l4, p2m)?;
    let port = start_timers(si)?;
    let fault = cmdline_value(si.cmdline(), "kexec_fault").unwrap_or(b"");
    let vcpu_info_va = if cmdline_value(si.cmdline(), "kexec_vcpu_info") == Some(b"1") {
        place_vcpu_info(&l, p2m, nr_vcpus)?
    } else {
        0
    };
    // An IPI port per VCPU, bound before the APs start so each AP knows its port
    // (EVTCHNOP_bind_ipi accepts a VCPU that is not up yet).
    for k in 0..nr_vcpus {
        match shared::bind_ipi(k) {
            Ok(port) if port < 1024 => IPI_PORT[k as usize].store(port, Ordering::Release),
            Ok(port) => return why!("IPI port {} of VCPU {} past the event-array page", port, k),
            Err(e) => return why!("EVTCHNOP_bind_ipi(VCPU {}): {}", k, e),
        }
    }
    if cmdline_value(si.cmdline(), "kexec_ap_stop") == Some(b"ipi") {
        STOP_BY_IPI.store(true, Ordering::Relaxed);
        println!("PVKEXEC-INFO kexec: no NMI callbacks: APs will be stopped by IPI");
    }
    if nr_vcpus > 1 {
        start_aps(
            p2m[l4_pfn as usize],
            &l,
            p2m,
            nr_vcpus,
            fault == b"ap-stuck",
        )?;
    }
    let runstate_va = region.end - PAGE_SIZE;
    let keep_store = cmdline_value(si.cmdline(), "kexec_store") == Some(b"loopback");
    let store_port = hostile_events(&l, p2m, nr_vcpus, runstate_va, keep_store)?;
    let v2 = cmdline_value(si.cmdline(), "kexec_grant") == Some(b"v2");
    let offered = offer_grants(si, region, p2m, fault == b"grant-in-use", v2)?;
    let pool_first = (region.end - VIRT_BASE) / PAGE_SIZE;
    let poisoned = poison(pool_first, l.floor);
    if fault == b"keep-trees" {
        println!("PVKEXEC-INFO kexec: fault injected: process trees left pinned");
    } else {
        unpin_trees(&l, p2m)?;
    }
    // The purgatory's working memory: the top of the free pool, reached through the direct map.
    let work_pages = match pvhandoff::handoff::work_pages(si.nr_pages) {
        Some(w) if w as usize <= WORK_PFNS_MAX && w + 1024 < l.floor - pool_first => w,
        _ => {
            return why!(
            "no room for the purgatory's working memory ({} frames) in a free pool of {} frames",
            pvhandoff::handoff::work_pages(si.nr_pages).unwrap_or(u64::MAX),
            l.floor - pool_first
        )
        }
    };
    let pool_end = l.floor - work_pages;
    let work_first = if fault == b"work-in-pool" {
        println!("PVKEXEC-INFO kexec: fault injected: working memory inside the free pool");
        pool_first
    } else {
        pool_end
    };
    // SAFETY: only the boot VCPU touches WORK_PFNS (the APs never do); the purgatory reads it
    // after the jump.
    let work_pfns = unsafe { &mut *core::ptr::addr_of_mut!(WORK_PFNS) };
    for (k, slot) in work_pfns.iter_mut().take(work_pages as usize).enumerate() {
        *slot = work_first + k as u64;
    }
    let pool_first = if fault == b"pool-overlap" {
        println!("PVKEXEC-INFO kexec: fault injected: free pool starts at the old P2M list");
        (si.mfn_list - VIRT_BASE) / PAGE_SIZE
    } else {
        pool_first
    };
    println!(
        "PVKEXEC-INFO kexec: own GDT loaded (ds {:#x}), {} process trees pinned and unpinned, VIRQ_TIMER on port {} with periodic and single-shot timers, {} grant entries offered, {} free frames poisoned",
        DATA_SELECTOR, EXTRA_TREES, port, offered, poisoned
    );

    // SAFETY: only the boot VCPU writes HANDOFF, before it sends the APs (which pass its
    // address on) to the purgatory; the purgatory reads it after the jump.
    unsafe {
        HANDOFF = Handoff {
            magic: HANDOFF_MAGIC,
            version: HANDOFF_VERSION,
            _pad: 0,
            image_va: si.mod_start,
            image_len: si.mod_len,
            old_start_info_va: si as *const StartInfo as u64,
            old_virt_base: VIRT_BASE,
            free_first_pfn: pool_first,
            free_pages: pool_end - pool_first,
            direct_map_va: DIRECT_MAP,
            // The last entry of the purgatory's L1 stays free (the segment is < 2 MiB).
            scratch_va: base + 511 * PAGE_SIZE,
            nr_vcpus: nr_vcpus as u64,
            keep_store_port: store_port,
            keep_console_port: 0,
            vcpu_info_va,
            work_va: DIRECT_MAP + work_first * PAGE_SIZE,
            work_pages,
            work_pfns_va: work_pfns.as_ptr() as u64,
        };
        if fault == b"handoff-v4" {
            println!("PVKEXEC-INFO kexec: fault injected: a version-4 handoff block");
            HANDOFF.version = 4;
        }
    }
    println!(
        "PVKEXEC-INFO kexec: purgatory working memory: {} frames from pfn {:#x} at {:#x}",
        work_pages,
        work_first,
        DIRECT_MAP + work_first * PAGE_SIZE
    );
    // The APs leave for the purgatory's AP entry, sent there by an NMI each (or an IPI, for
    // a kernel without NMI callbacks); the boot VCPU follows to its entry.
    KEXEC_GO.store(
        image.header.purgatory_entry + AP_ENTRY_OFFSET,
        Ordering::Release,
    );
    let by_ipi = STOP_BY_IPI.load(Ordering::Relaxed);
    for k in 1..nr_vcpus {
        if by_ipi {
            let port = IPI_PORT[k as usize].load(Ordering::Relaxed);
            if let Err(e) = shared::send(port) {
                return why!("EVTCHNOP_send(IPI port {} of VCPU {}): {}", port, k, e);
            }
            continue;
        }
        // SAFETY: VCPUOP_send_nmi only marks an NMI pending for VCPU k.
        if let Err(e) = unsafe { hypercall::vcpu_op(vcpuop::SEND_NMI, k, 0) } {
            return why!("VCPUOP_send_nmi({}): {}", k, e);
        }
    }
    if nr_vcpus > 1 {
        println!(
            "PVKEXEC-INFO kexec: APs sent to the purgatory by {}",
            if by_ipi {
                "IPI (EVTCHNOP_send)"
            } else {
                "VCPUOP_send_nmi"
            }
        );
    }
    Ok(image.header.purgatory_entry)
}

/// VCPUs of the domain: `VCPUOP_is_up` answers -ENOENT past the last one.
fn count_vcpus() -> u32 {
    for k in 1..MAX_VCPUS as u32 {
        if let Err(XenError::Enoent) = hypercall::vcpu_is_up(k) {
            return k;
        }
    }
    MAX_VCPUS as u32
}

const MAX_APS: usize = MAX_VCPUS as usize;
const AP_STACK: usize = 16384;
#[repr(C, align(4096))]
struct ApStacks([[u8; AP_STACK]; MAX_APS]);
static mut AP_STACKS: ApStacks = ApStacks([[0; AP_STACK]; MAX_APS]);
/// APs that finished their setup; per AP, 0 or the errno of its failed step.
static AP_READY: AtomicU32 = AtomicU32::new(0);
static AP_ERROR: [AtomicU64; MAX_APS] = [const { AtomicU64::new(0) }; MAX_APS];
static AP_GDT: [AtomicU64; MAX_APS] = [const { AtomicU64::new(0) }; MAX_APS];
/// The purgatory's AP entry once the kexec starts (0 before).
static KEXEC_GO: AtomicU64 = AtomicU64::new(0);
/// A VCPU that ignores the kexec (fault injection; 0 = none).
static STUCK: AtomicU64 = AtomicU64::new(0);
/// The APs are stopped by an IPI each, not an NMI (`kexec_ap_stop=ipi`).
static STOP_BY_IPI: AtomicBool = AtomicBool::new(false);
/// Each VCPU's IPI port (0 until bound).
static IPI_PORT: [AtomicU32; MAX_APS] = [const { AtomicU32::new(0) }; MAX_APS];
/// The FIFO event array's first page in the direct map (0 before the FIFO ABI is on).
static EVENT_ARRAY: AtomicU64 = AtomicU64::new(0);
/// PENDING in a FIFO event word.
const FIFO_PENDING: u32 = 1 << evtchn::FIFO_PENDING;

core::arch::global_asm!(
    r#"
    .text
    .globl kexecold_ap_entry
kexecold_ap_entry:
    mov rbx, rdi
    mov eax, {fpu_taskswitch}               // fpu_taskswitch(0): CR0.TS clear for SSE code
    xor edi, edi
    syscall
    mov rdi, rbx
    call kexecold_ap_main
2:  ud2
    jmp 2b
    "#,
    fpu_taskswitch = const xenpv::hc::FPU_TASKSWITCH,
);

extern "C" {
    fn kexecold_ap_entry();
}

/// Brings VCPUs `1..nr_vcpus` up on the kernel's tables and waits until each has its GDT,
/// VIRQ_TIMER and timers.
fn start_aps(l4_mfn: u64, l: &Layout, p2m: &[u64], nr_vcpus: u32, stuck: bool) -> Result<(), Why> {
    if stuck {
        STUCK.store(1, Ordering::Relaxed);
        println!("PVKEXEC-INFO kexec: fault injected: VCPU 1 will ignore the kexec");
    }
    for k in 1..nr_vcpus {
        AP_GDT[k as usize].store(p2m[l.ap_gdt[k as usize] as usize], Ordering::Relaxed);
        // SAFETY: all-zero is a valid vcpu_guest_context (no FPU state, no traps, no LDT).
        let mut ctx: VcpuGuestContext = unsafe { core::mem::zeroed() };
        // SAFETY: taking the address of AP k's stack, which only AP k uses.
        let top = unsafe { core::ptr::addr_of!(AP_STACKS.0[k as usize]) as u64 } + AP_STACK as u64;
        ctx.flags = vgcf::IN_KERNEL;
        ctx.user_regs.rip = kexecold_ap_entry as *const () as u64;
        ctx.user_regs.rsp = top;
        ctx.user_regs.rdi = k as u64;
        ctx.user_regs.cs = selector::FLAT_KERNEL_CS;
        ctx.user_regs.ss = selector::FLAT_KERNEL_SS;
        ctx.kernel_ss = selector::FLAT_KERNEL_SS as u64;
        ctx.kernel_sp = top;
        ctx.ctrlreg[3] = l4_mfn << 12;
        // SAFETY: `ctx` is a complete context for VCPU k on the kernel's own tables and stack;
        // the AP runs `kexecold_ap_main`, which touches only its own state and atomics.
        let up = unsafe {
            hypercall::vcpu_op(vcpuop::INITIALISE, k, &ctx as *const _ as u64)
                .and_then(|_| hypercall::vcpu_op(vcpuop::UP, k, 0))
        };
        if let Err(e) = up {
            return why!("VCPUOP_initialise/up of VCPU {}: {}", k, e);
        }
    }
    let mut yields = 0u64;
    while AP_READY.load(Ordering::Acquire) < nr_vcpus - 1 {
        yields += 1;
        if yields > 1_000_000 {
            return why!(
                "only {} of {} APs came up",
                AP_READY.load(Ordering::Relaxed),
                nr_vcpus - 1
            );
        }
        let _ = hypercall::sched_yield();
    }
    for (k, e) in AP_ERROR.iter().enumerate().take(nr_vcpus as usize).skip(1) {
        let e = e.load(Ordering::Relaxed);
        if e != 0 {
            return why!(
                "VCPU {} setup: step {} failed with errno {}",
                k,
                e >> 32,
                e as u32
            );
        }
    }
    println!(
        "PVKEXEC-INFO kexec: VCPUs 1..{} up with their own GDT, VIRQ_TIMER and running timers",
        nr_vcpus - 1
    );
    Ok(())
}

#[no_mangle]
extern "C" fn kexecold_ap_main(vcpu: u64) -> ! {
    let k = vcpu as usize;
    let err = |step: u64, e: XenError| {
        AP_ERROR[k].store(step << 32 | e.errno() as u64, Ordering::Relaxed);
    };
    // SAFETY: the frame holds a null and a flat DPL-3 data descriptor, mapped read-only
    // everywhere; then DS/ES take the data selector.
    unsafe {
        match hypercall::set_gdt(&[AP_GDT[k].load(Ordering::Relaxed)], 2) {
            Ok(()) => asm!("mov ds, {s:e}", "mov es, {s:e}", s = in(reg) DATA_SELECTOR as u32,
                options(nostack, preserves_flags)),
            Err(e) => err(1, e),
        }
    }
    if let Err(e) = shared::bind_virq(virq::TIMER, vcpu as u32) {
        err(2, e);
    }
    let period = VcpuSetPeriodicTimer {
        period_ns: 10_000_000,
    };
    // SAFETY: `period` is a valid vcpu_set_periodic_timer for this VCPU.
    if let Err(e) = unsafe {
        hypercall::vcpu_op(
            vcpuop::SET_PERIODIC_TIMER,
            vcpu as u32,
            &period as *const _ as u64,
        )
    } {
        err(3, e);
    }
    let now = SHARED.load(Ordering::Acquire);
    // SAFETY: the boot VCPU mapped shared_info at SHARED before bringing the APs up.
    let sh = unsafe { &*(now as *const xenpv::SharedInfo) };
    if let Err(e) = hypercall::set_timer_op(shared::system_time_ns(sh, k) + 100_000_000) {
        err(4, e);
    }
    let stuck = STUCK.load(Ordering::Relaxed) == vcpu;
    let by_ipi = STOP_BY_IPI.load(Ordering::Relaxed);
    // The kexec reaches this VCPU as an NMI (`kexecold_nmi_entry`); a VCPU meant to ignore it
    // (fault injection) registers no NMI callback, so Xen drops the NMI.
    if !stuck && !by_ipi {
        let cb = CallbackRegister {
            kind: callback::TYPE_NMI,
            flags: 0,
            _pad: 0,
            address: kexecold_nmi_entry as *const () as u64,
        };
        // SAFETY: the handler below never returns into the interrupted code; it leaves for
        // the purgatory with HYPERVISOR_iret.
        if let Err(e) = unsafe { hypercall::callback_op(callback::OP_REGISTER, &cb) } {
            err(5, e);
        }
    }
    AP_READY.fetch_add(1, Ordering::Release);
    if by_ipi && !stuck {
        ap_wait_for_ipi(k);
    }
    // Asleep until kicked (SCHEDOP_poll on no port, no timeout); the NMI wakes it.
    loop {
        let _ = hypercall::sched_poll(&[], 0);
    }
}

/// A kernel without NMI callbacks: the AP sleeps on its IPI port (bound before the APs
/// start) and leaves for the purgatory's AP entry when its IPI has arrived (the port's FIFO
/// event word is pending), as an IPI handler would; other wake-ups only poll again.
fn ap_wait_for_ipi(k: usize) -> ! {
    let port = IPI_PORT[k].load(Ordering::Acquire);
    loop {
        let go = KEXEC_GO.load(Ordering::Acquire);
        let array = EVENT_ARRAY.load(Ordering::Acquire);
        // SAFETY: the event-array page is mapped by the direct map and ports are < 1024, so
        // the word lies in it; Xen updates it atomically, a volatile read sees a whole word.
        let pending = array != 0
            && unsafe { ((array + port as u64 * 4) as *const u32).read_volatile() } & FIFO_PENDING
                != 0;
        if go != 0 && pending {
            // SAFETY: `go` is the purgatory's AP entry, mapped executable in these tables; it
            // takes the handoff block in rdi and the VCPU id in rsi, sets up its own stack and
            // never returns. Events stay masked, as the entry expects.
            unsafe {
                asm!("jmp {go}", go = in(reg) go, in("rdi") core::ptr::addr_of!(HANDOFF),
                    in("rsi") k as u64, options(noreturn))
            }
        }
        // Only this port wakes the poll (no other event, no timer); an event already pending
        // returns at once, so an IPI sent between the check above and here is not lost.
        let _ = hypercall::sched_poll(&[port], 0);
    }
}

// The APs' NMI callback. Xen bounces to it on the AP's stack; it works out the VCPU id from
// that stack and, instead of returning, builds an iret context for the purgatory's AP entry
// (KEXEC_GO) and calls HYPERVISOR_iret, which also ends the NMI (NMIs are masked until an
// iret). Registers: rdi = handoff block, rsi = VCPU id; events stay masked (rflags.IF = 0).
core::arch::global_asm!(
    r#"
    .text
    .globl kexecold_nmi_entry
kexecold_nmi_entry:
    lea rax, [rip + {stacks}]
    mov rsi, rsp
    sub rsi, rax
    sub rsi, 8
    shr rsi, {stack_shift}
    mov rcx, [rip + {go}]
    mov rdx, rsp
    push {ss}
    push rdx
    push 0
    push {cs}
    push rcx
    push 0
    push 0
    push 0
    push 0
    lea rdi, [rip + {handoff}]
    mov eax, {iret}
    syscall
2:  ud2
    jmp 2b
    "#,
    stacks = sym AP_STACKS,
    go = sym KEXEC_GO,
    handoff = sym HANDOFF,
    stack_shift = const AP_STACK.trailing_zeros(),
    ss = const selector::FLAT_KERNEL_SS as u64,
    // A guest-kernel CS with RPL 0: an RPL of 3 would make Xen return to user mode.
    cs = const (selector::FLAT_KERNEL_CS & !3) as u64,
    iret = const xenpv::hc::IRET,
);

extern "C" {
    fn kexecold_nmi_entry();
}

/// Where shared_info is mapped (for the APs' timers).
static SHARED: AtomicU64 = AtomicU64::new(0);

/// Installs the kernel's own GDT and loads its data selector into DS and ES.
fn load_gdt(mfn: u64) -> Result<(), Why> {
    // SAFETY: the frame holds a null and a flat DPL-3 data descriptor and is mapped read-only
    // everywhere; CS/SS stay Xen's flat selectors, which do not depend on the guest GDT.
    if let Err(e) = unsafe { hypercall::set_gdt(&[mfn], 2) } {
        return why!("set_gdt(mfn {:#x}, 2 entries): {}", mfn, e);
    }
    // SAFETY: selector 0x0b is the flat data descriptor just installed; nothing here relies on
    // DS/ES bases (64-bit mode ignores them).
    unsafe {
        asm!("mov ds, {s:e}", "mov es, {s:e}", s = in(reg) DATA_SELECTOR as u32,
             options(nostack, preserves_flags));
    }
    Ok(())
}

/// Process trees: an L4 each with the kernel's entries (Xen fills its own slots), pinned.
fn pin_trees(
    f: &mut Filler,
    l: &Layout,
    l4: impl Fn(usize) -> u64,
    p2m: &[u64],
) -> Result<(), Why> {
    for &t in &l.trees {
        f.fill(t, |i| if (256..272).contains(&i) { 0 } else { l4(i) })?;
    }
    f.done()?;
    tree_op(l, p2m, mmuext::PIN_L4_TABLE, "PIN_L4_TABLE")
}

/// Unpins the process trees: pinned trees other than the current one outlive a kexec unless
/// the kernel side drops them (handoff contract).
fn unpin_trees(l: &Layout, p2m: &[u64]) -> Result<(), Why> {
    tree_op(l, p2m, mmuext::UNPIN_TABLE, "UNPIN_TABLE")
}

/// One `mmuext_op` (`cmd` on the L4's MFN) per process tree.
fn tree_op(l: &Layout, p2m: &[u64], cmd: u32, name: &str) -> Result<(), Why> {
    for &t in &l.trees {
        let mfn = p2m[t as usize];
        // SAFETY: pins or unpins a fully built L4 of our own frames that is loaded nowhere;
        // no mapping in use changes.
        let r = unsafe {
            hypercall::mmuext_op(&[MmuextOp {
                cmd,
                arg1: mfn,
                ..Default::default()
            }])
        };
        if let Err(e) = r {
            return why!("{}(mfn {:#x}): {}", name, mfn, e);
        }
    }
    Ok(())
}

/// Binds VIRQ_TIMER and runs a 10 ms periodic timer and a single-shot timer 100 ms ahead, as
/// a running kernel has; returns the port.
fn start_timers(si: &StartInfo) -> Result<u32, Why> {
    let sh = match shared::map_shared_info(si) {
        Ok(s) => s,
        Err(e) => return why!("mapping shared_info: {}", e),
    };
    SHARED.store(sh as *const xenpv::SharedInfo as u64, Ordering::Release);
    let port = match shared::bind_virq(virq::TIMER, 0) {
        Ok(p) => p,
        Err(e) => return why!("binding VIRQ_TIMER: {}", e),
    };
    let period = VcpuSetPeriodicTimer {
        period_ns: 10_000_000,
    };
    // SAFETY: `period` is a valid vcpu_set_periodic_timer for the call.
    let set =
        unsafe { hypercall::vcpu_op(vcpuop::SET_PERIODIC_TIMER, 0, &period as *const _ as u64) };
    if let Err(e) = set {
        return why!("VCPUOP_set_periodic_timer: {}", e);
    }
    if let Err(e) = hypercall::set_timer_op(shared::system_time_ns(sh, 0) + 100_000_000) {
        return why!("set_timer_op: {}", e);
    }
    Ok(port)
}

/// A page of this kernel's whose L1 entry is borrowed to write the grant table.
static mut GRANT_WINDOW: Page = Page([0; PAGE_SIZE as usize]);
/// Grant refs offered (past the reserved 0..7).
const OFFERED_REFS: core::ops::Range<usize> = 8..12;

/// Offers a few of this kernel's frames to domain 0 (itself: the test kernel is the initial
/// domain) in the grant table (v1, or v2 with `v2`), as a frontend does to its backends; with
/// `in_use`, maps one of them as a backend would (`GNTMAP_device_map`), so it cannot be
/// revoked.
fn offer_grants(
    si: &StartInfo,
    region: &Region,
    p2m: &[u64],
    in_use: bool,
    v2: bool,
) -> Result<u32, Why> {
    let mut frames = [0u64; 1];
    if let Err(e) = shared::grant_frames(&mut frames) {
        return why!("grant table setup: {}", e);
    }
    if v2 {
        let mut set = xenpv::GnttabSetVersion { version: 2 };
        // SAFETY: valid gnttab_set_version; no grant is in use yet, so Xen switches.
        let r = unsafe {
            hypercall::grant_table_op(xenpv::gnttabop::SET_VERSION, &mut set as *mut _ as u64, 1)
        };
        if let Err(e) = r {
            return why!("GNTTABOP_set_version(2): {}", e);
        }
        println!("PVKEXEC-INFO kexec: grant table switched to v2");
    }
    // v1 entry: flags u16, domid u16, frame u32; v2: the same header, 4 bytes pad, frame u64.
    let (stride, frame_at) = if v2 { (16, 8) } else { (8, 4) };
    let va = core::ptr::addr_of_mut!(GRANT_WINDOW) as u64;
    let original = match walk(si, region, va) {
        Ok(w) => w.l1e,
        Err(e) => return why!("grant window: {}", e),
    };
    let granted = p2m[((va - VIRT_BASE) / PAGE_SIZE) as usize];
    // SAFETY: the window page is ours and unreferenced; it maps the grant frame (shared with
    // us by Xen) until its own frame is put back below.
    if let Err(e) = unsafe {
        hypercall::update_va_mapping(
            va,
            pte::make(frames[0], pte::L1_FLAGS | pte::D),
            uvmf::INVLPG,
        )
    } {
        return why!("mapping the grant frame {:#x}: {}", frames[0], e);
    }
    for r in OFFERED_REFS {
        let entry = (va + r as u64 * stride) as *mut u16;
        // SAFETY: entry r of the mapped grant frame: domid and frame first, then the flags
        // that make it valid.
        unsafe {
            entry.add(1).write_volatile(0);
            if v2 {
                (entry.byte_add(frame_at) as *mut u64).write_volatile(granted);
            } else {
                (entry.byte_add(frame_at) as *mut u32).write_volatile(granted as u32);
            }
            core::sync::atomic::fence(Ordering::Release);
            entry.write_volatile(xenpv::gtf::PERMIT_ACCESS);
        }
    }
    // SAFETY: puts the window page's own frame back.
    if let Err(e) = unsafe { hypercall::update_va_mapping(va, original, uvmf::INVLPG) } {
        return why!("restoring the grant window: {}", e);
    }
    if in_use {
        let mut map = xenpv::GnttabMapGrantRef {
            flags: xenpv::gntmap::DEVICE_MAP,
            grant_ref: OFFERED_REFS.start as u32,
            dom: 0,
            ..Default::default()
        };
        // SAFETY: a device mapping of our own grant: no page-table entry changes.
        let r = unsafe {
            hypercall::grant_table_op(xenpv::gnttabop::MAP_GRANT_REF, &mut map as *mut _ as u64, 1)
        };
        if r.is_err() || map.status != 0 {
            return why!(
                "mapping grant ref {}: {:?} status {}",
                map.grant_ref,
                r,
                map.status
            );
        }
        println!(
            "PVKEXEC-INFO kexec: fault injected: grant ref {} left mapped (handle {})",
            map.grant_ref, map.handle
        );
    }
    Ok(OFFERED_REFS.len() as u32)
}

/// Where each VCPU's vcpu_info was placed (the handoff points at it).
static mut VCPU_INFO: [VcpuRegisterVcpuInfo; MAX_VCPUS as usize] = [VcpuRegisterVcpuInfo {
    mfn: 0,
    offset: 0,
    rsvd: 0,
}; MAX_VCPUS as usize];

/// Places every VCPU's `vcpu_info` in a frame of its own (`VCPUOP_register_vcpu_info`, as
/// Linux does into its per-CPU areas), before the APs are up (Xen accepts it only for the
/// calling VCPU or one that is down); returns the records' VA for the handoff.
fn place_vcpu_info(l: &Layout, p2m: &[u64], nr_vcpus: u32) -> Result<u64, Why> {
    for k in 0..nr_vcpus {
        let rec = VcpuRegisterVcpuInfo {
            mfn: p2m[l.vcpu_info[k as usize] as usize],
            offset: 0,
            rsvd: 0,
        };
        // SAFETY: `rec` names a zeroed frame of ours; Xen maps it and moves VCPU k's
        // vcpu_info there. Nothing of this kernel reads shared_info's copy for timing after.
        let placed =
            unsafe { hypercall::vcpu_op(vcpuop::REGISTER_VCPU_INFO, k, &rec as *const _ as u64) };
        if let Err(e) = placed {
            return why!("VCPUOP_register_vcpu_info({}): {}", k, e);
        }
        // SAFETY: single writer before the APs run; the purgatory reads it after the jump.
        unsafe { VCPU_INFO[k as usize] = rec };
    }
    println!(
        "PVKEXEC-INFO kexec: vcpu_info of {} VCPUs placed in frames of their own",
        nr_vcpus
    );
    Ok(core::ptr::addr_of!(VCPU_INFO) as u64)
}

/// What a running Linux has registered with Xen besides timers: a runstate area per VCPU
/// (Xen writes it at that VA on every context switch, in whatever tables are current), with
/// `keep_store` an interdomain channel standing in for a domU's xenstore
/// channel (a loopback pair; its unbound end is kept for the new kernel, and its port
/// returned, else 0), and the FIFO event ABI (control blocks Xen keeps mapped).
fn hostile_events(
    l: &Layout,
    p2m: &[u64],
    nr_vcpus: u32,
    runstate_va: u64,
    keep_store: bool,
) -> Result<u32, Why> {
    for k in 0..nr_vcpus {
        let area = VcpuRegisterArea {
            addr: runstate_va + k as u64 * 64,
        };
        // SAFETY: the area lies in the last padding page of the initial region, which nothing
        // else uses; Xen writes a vcpu_runstate_info (48 bytes) there.
        let r = unsafe {
            hypercall::vcpu_op(
                vcpuop::REGISTER_RUNSTATE_MEMORY_AREA,
                k,
                &area as *const _ as u64,
            )
        };
        if let Err(e) = r {
            return why!("VCPUOP_register_runstate_memory_area({}): {}", k, e);
        }
    }
    // Secondary time areas (Linux's vDSO pvclock): Xen writes a vcpu_time_info there.
    for k in 0..nr_vcpus {
        let area = VcpuRegisterArea {
            addr: runstate_va + 0x800 + k as u64 * 32,
        };
        // SAFETY: as for the runstate area: the last padding page of the region.
        let r = unsafe {
            hypercall::vcpu_op(
                vcpuop::REGISTER_VCPU_TIME_MEMORY_AREA,
                k,
                &area as *const _ as u64,
            )
        };
        if let Err(e) = r {
            return why!("VCPUOP_register_vcpu_time_memory_area({}): {}", k, e);
        }
    }
    // Both domain watchdogs Xen offers, armed far ahead (they would kill the new kernel).
    for _ in 0..2 {
        if let Err(e) = hypercall::sched_watchdog(0, 600) {
            return why!("SCHEDOP_watchdog(create): {}", e);
        }
    }
    // An initial domain has no xenstore channel (Linux as dom0 would take one for a domU's).
    let (store, peer) = match keep_store.then(shared::loopback_pair) {
        None => (0, 0),
        Some(Ok(p)) => p,
        Some(Err(e)) => return why!("loopback interdomain pair: {}", e),
    };
    for k in 0..nr_vcpus {
        let mut ic = EvtchnInitControl {
            control_gfn: p2m[l.fifo[k as usize] as usize],
            offset: 0,
            vcpu: k,
            link_bits: 0,
            _pad: [0; 7],
        };
        // SAFETY: `ic` names a zeroed frame of ours as VCPU k's control block; Xen maps it.
        let r = unsafe {
            hypercall::event_channel_op(evtchnop::INIT_CONTROL, &mut ic as *mut _ as u64)
        };
        if let Err(e) = r {
            return why!("EVTCHNOP_init_control(VCPU {}): {}", k, e);
        }
    }
    // The event array page, as Linux adds it (without one no port can be raised).
    let mut ea = EvtchnExpandArray {
        array_gfn: p2m[l.event_array as usize],
    };
    // SAFETY: `ea` names a zeroed frame of ours as the first event-array page; Xen maps it.
    let r =
        unsafe { hypercall::event_channel_op(evtchnop::EXPAND_ARRAY, &mut ea as *mut _ as u64) };
    if let Err(e) = r {
        return why!("EVTCHNOP_expand_array(gfn {:#x}): {}", ea.array_gfn, e);
    }
    EVENT_ARRAY.store(DIRECT_MAP + l.event_array * PAGE_SIZE, Ordering::Release);
    println!(
        "PVKEXEC-INFO kexec: runstate and time areas registered at {:#x}, 2 watchdogs armed, store channel port {} (peer {}) kept, FIFO event ABI on {} VCPUs with an event-array page",
        runstate_va, store, peer, nr_vcpus
    );
    Ok(store)
}

/// Fills the first [`POISON_PAGES`] frames of the free pool with the poison, through the
/// direct map; returns how many.
fn poison(first: u64, end: u64) -> u64 {
    let end = end.min(first + POISON_PAGES);
    for pfn in first..end {
        let page = (DIRECT_MAP + pfn * PAGE_SIZE) as *mut u64;
        for i in 0..512 {
            // SAFETY: the direct map maps every free-pool frame writable, and nothing else
            // uses them.
            unsafe { page.add(i).write_volatile(OLD_DATA_POISON) };
        }
    }
    end.saturating_sub(first)
}
