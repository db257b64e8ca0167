//! Disk-check kernel: a domU with one vbd connects the polled blkfront
//! (`kernelrt::blkfront`), writes a known pattern from sector 0, reads it back, then
//! connects a second time without closing the first connection (as a crash kernel finds the
//! backend still connected to the crashed kernel's ring), which must reset the backend, and
//! writes and reads again. The host then checks the disk file holds exactly the pattern.
//! Before the first connect, a grant entry is made to look mapped by a backend (as a previous
//! kernel's grant can be): blkfront must leave it alone.
//!
//! The pattern ([`word`]): 8-byte word `j` of 4 KiB page `i` is `splitmix64(seed ^ (i << 9 |
//! j))`, little-endian. The first connection writes pages `0..mib*256`, the second the next
//! `reset_mib*256` pages. Command-line words: `mib=N` (default 4), `reset_mib=N` (default 1),
//! `seed=N` (default 1), `vbd=ID` (default: the first listed).
#![no_std]
#![no_main]
// Errors carry paths and reasons in fixed buffers: these kernels have no heap to box them in.
#![allow(clippy::result_large_err)]

use kernelrt::blkfront::{BlkError, Blkfront};
use kernelrt::entry::{entry_regs, reg};
use kernelrt::notes::VIRT_BASE;
use kernelrt::report::{check, fail, finish, pass, Why};
use kernelrt::view::{self, Region};
use kernelrt::xenstore::Xenstore;
use kernelrt::{cmdline_value, parse_u64, println, shared, why};
use xenpv::blkif::{state, SECTOR_SIZE};
use xenpv::{StartInfo, PAGE_SIZE};

/// Pages per write or read call.
const CHUNK_PAGES: usize = 64;
const CHUNK: usize = CHUNK_PAGES * PAGE_SIZE as usize;

#[repr(C, align(4096))]
struct Buf([u8; CHUNK]);
static mut BUF: Buf = Buf([0; CHUNK]);

#[repr(C, align(4096))]
struct Page([u8; PAGE_SIZE as usize]);
/// A bss page whose L1 entry is pointed at grant frame 0 (to fake a busy grant).
static mut GRANT_PAGE: Page = Page([0; PAGE_SIZE as usize]);

/// The grant entry made to look in use before the first connect: the first one past the
/// reserved entries, which blkfront would otherwise take for its ring.
const BUSY_REF: u32 = xenpv::gnttabop::NR_RESERVED_ENTRIES;
const BUSY_FLAGS: u16 = xenpv::gtf::PERMIT_ACCESS | xenpv::gtf::READING;

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Word `j` of page `page`.
fn word(seed: u64, page: u64, j: u64) -> u64 {
    splitmix64(seed ^ (page << 9 | j))
}

fn fill(seed: u64, first_page: u64, buf: &mut [u8]) {
    for (p, page) in buf.chunks_mut(PAGE_SIZE as usize).enumerate() {
        for (j, w) in page.chunks_mut(8).enumerate() {
            w.copy_from_slice(&word(seed, first_page + p as u64, j as u64).to_le_bytes());
        }
    }
}

/// The first page in `buf` (page `first_page` on) that differs from the pattern.
fn first_mismatch(seed: u64, first_page: u64, buf: &[u8]) -> Option<u64> {
    buf.chunks(PAGE_SIZE as usize)
        .enumerate()
        .find(|(p, page)| {
            page.chunks(8)
                .enumerate()
                .any(|(j, w)| w != word(seed, first_page + *p as u64, j as u64).to_le_bytes())
        })
        .map(|(p, _)| first_page + p as u64)
}

fn buf() -> &'static mut [u8; CHUNK] {
    // SAFETY: only guest_main's single thread uses BUF, through one reference at a time.
    unsafe { &mut (*core::ptr::addr_of_mut!(BUF)).0 }
}

struct Ctx {
    seed: u64,
    sh: &'static xenpv::SharedInfo,
}

impl Ctx {
    fn now(&self) -> u64 {
        shared::system_time_ns(self.sh, 0)
    }

    /// Writes pattern pages `first..first+pages` and prints the rate.
    fn write(&self, disk: &mut Blkfront, first: u64, pages: u64) -> Result<(), BlkError> {
        let start = self.now();
        let mut done = 0;
        while done < pages {
            let n = (pages - done).min(CHUNK_PAGES as u64);
            let b = &mut buf()[..(n * PAGE_SIZE) as usize];
            fill(self.seed, first + done, b);
            disk.write((first + done) * (PAGE_SIZE / SECTOR_SIZE), b)?;
            done += n;
        }
        self.rate("write", pages, start);
        Ok(())
    }

    /// Reads pages `first..first+pages` and compares them with the pattern.
    fn verify(&self, disk: &mut Blkfront, first: u64, pages: u64) -> Result<(), Why> {
        let start = self.now();
        let mut done = 0;
        while done < pages {
            let n = (pages - done).min(CHUNK_PAGES as u64);
            let b = &mut buf()[..(n * PAGE_SIZE) as usize];
            b.fill(0);
            disk.read((first + done) * (PAGE_SIZE / SECTOR_SIZE), b)?;
            if let Some(bad) = first_mismatch(self.seed, first + done, b) {
                return why!("page {} read back differs from the pattern written", bad);
            }
            done += n;
        }
        self.rate("read", pages, start);
        Ok(())
    }

    fn rate(&self, what: &str, pages: u64, start: u64) {
        let ns = self.now().saturating_sub(start).max(1);
        let kib = pages * (PAGE_SIZE / 1024);
        println!(
            "PVKEXEC-INFO diskcheck {} {} KiB in {} ms: {} KiB/s",
            what,
            kib,
            ns / 1_000_000,
            kib * 1_000_000_000 / ns
        );
    }
}

fn connect(xs: &mut Xenstore, si: &StartInfo, region: &Region, name: &str) -> Option<Blkfront> {
    let vbd = cmdline_value(si.cmdline(), "vbd").and_then(parse_u64);
    let vbd = vbd.map(|v| u32::try_from(v).unwrap_or(u32::MAX));
    match Blkfront::connect_to(xs, si, region, vbd) {
        Ok(disk) => {
            let i = disk.info();
            println!(
                "PVKEXEC-INFO diskcheck {} {} backend-id {} sectors {} sector-size {} port {} backend was {} reset {} segments per request {} (backend's max indirect {}) persistent {}",
                name,
                disk.frontend_path(),
                i.backend_id,
                i.sectors,
                i.sector_size,
                i.port,
                state::name(i.initial_backend_state),
                i.was_reset,
                i.segments,
                i.max_indirect_segments,
                i.persistent
            );
            Some(disk)
        }
        Err(e) => {
            fail(name, format_args!("{}", e));
            None
        }
    }
}

fn number(si: &StartInfo, key: &str, default: u64) -> u64 {
    cmdline_value(si.cmdline(), key)
        .and_then(parse_u64)
        .unwrap_or(default)
}

#[no_mangle]
extern "C" fn guest_main(si: *const StartInfo) -> ! {
    // SAFETY: Xen passes a mapped start_info page in rsi; it stays mapped and unchanged.
    let si = unsafe { &*si };
    let region = Region::from_stack_top(VIRT_BASE, entry_regs()[reg::RSP]);
    kernelrt::console_init(si, &region);
    let Some(store_va) = region.pfn_va(view::m2p(si.store_mfn)) else {
        fail(
            "xenstore",
            format_args!(
                "store_mfn {:#x} is not in the initial mapping",
                si.store_mfn
            ),
        );
        finish()
    };
    // SAFETY: the xenstore ring page is mapped writable in the initial region and only this
    // client uses it.
    let mut xs = unsafe { Xenstore::new(store_va, si.store_evtchn) };
    let sh = match shared::map_shared_info(si) {
        Ok(sh) => sh,
        Err(e) => {
            fail("shared-info", format_args!("{}", e));
            finish()
        }
    };
    let ctx = Ctx {
        seed: number(si, "seed", 1),
        sh,
    };
    let pages = number(si, "mib", 4) * 256;
    let more = number(si, "reset_mib", 1) * 256;
    run(&ctx, &mut xs, si, &region, pages, more);
    finish()
}

type GrantEntry = *mut xenpv::GrantEntryV1;

/// Grant entry `BUSY_REF` of frame 0, mapped at GRANT_PAGE.
fn busy_entry() -> Result<GrantEntry, Why> {
    let mut frames = [0u64; 1];
    if let Err(e) = shared::grant_frames(&mut frames) {
        return why!("grant frames: {}", e);
    }
    let va = core::ptr::addr_of_mut!(GRANT_PAGE) as u64;
    // SAFETY: GRANT_PAGE is a bss page nothing else references; it maps grant frame 0 from
    // now on.
    let mapped = unsafe {
        xenpv::hypercall::update_va_mapping(
            va,
            xenpv::pte::make(frames[0], xenpv::pte::L1_FLAGS | xenpv::pte::D),
            xenpv::uvmf::INVLPG,
        )
    };
    if let Err(e) = mapped {
        return why!("mapping grant frame 0: {}", e);
    }
    Ok((va + BUSY_REF as u64 * 8) as GrantEntry)
}

/// As a previous kernel's grant that a backend still maps: offered to dom0 with Xen's
/// "reading" bit set (no backend knows the reference, so nothing reads through it).
fn fake_busy_grant() -> Result<GrantEntry, Why> {
    let entry = busy_entry()?;
    // SAFETY: the entry lies in the mapped grant frame; this kernel offers nothing yet.
    unsafe {
        entry.write_volatile(xenpv::GrantEntryV1 {
            flags: BUSY_FLAGS,
            domid: 0,
            frame: 0,
        })
    };
    Ok(entry)
}

/// The faked entry is untouched and blkfront took another for its ring (the next one in
/// frame 0, or the first of a frame it grew the table by); then cleared.
fn busy_grant_kept(entry: GrantEntry, ring_ref: u32) -> Result<(), Why> {
    // SAFETY: the entry lies in the grant frame still mapped at GRANT_PAGE.
    let now = unsafe { entry.read_volatile() };
    // SAFETY: as above; nothing uses the faked entry.
    unsafe { entry.write_volatile(xenpv::GrantEntryV1::default()) };
    if now.flags != BUSY_FLAGS {
        return why!("the busy grant {} now has flags {:#x}", BUSY_REF, now.flags);
    }
    let frame_start = ring_ref >= 512 && ring_ref.is_multiple_of(512);
    if ring_ref != BUSY_REF + 1 && !frame_start {
        return why!(
            "ring grant {}, expected {} (past the busy {}) or the first of a new frame",
            ring_ref,
            BUSY_REF + 1,
            BUSY_REF
        );
    }
    Ok(())
}

fn run(ctx: &Ctx, xs: &mut Xenstore, si: &StartInfo, region: &Region, pages: u64, more: u64) {
    let busy = match fake_busy_grant() {
        Ok(e) => e,
        Err(why) => {
            fail("busy-grant-kept", format_args!("{}", why));
            return;
        }
    };
    let Some(mut disk) = connect(xs, si, region, "connect") else {
        return;
    };
    pass("connect");
    if disk.info().was_reset {
        fail(
            "connect",
            format_args!("the backend of a fresh domain needed a reset"),
        );
    }
    check(
        "busy-grant-kept",
        busy_grant_kept(busy, disk.info().ring_ref),
    );
    check("write", ctx.write(&mut disk, 0, pages));
    check("readback", ctx.verify(&mut disk, 0, pages));
    let sectors = disk.info().sectors;
    check(
        "range-refused",
        match disk.write(sectors - 1, &[0u8; 1024]) {
            Err(BlkError::Range { .. }) => Ok(()),
            Err(e) => why!("a write past the end failed otherwise: {}", e),
            Ok(()) => why!("a write past the end of {} sectors was accepted", sectors),
        },
    );
    // The first connection is left as a crashed kernel leaves it: backend Connected.
    drop(disk);
    let Some(mut disk) = connect(xs, si, region, "reset-connect") else {
        return;
    };
    let i = disk.info();
    check(
        "reset-connect",
        if i.was_reset && i.initial_backend_state == state::CONNECTED {
            Ok(())
        } else {
            why!(
                "backend found {} (reset {}), expected Connected and a reset",
                state::name(i.initial_backend_state),
                i.was_reset
            )
        },
    );
    check("write-after-reset", ctx.write(&mut disk, pages, more));
    check(
        "readback-after-reset",
        ctx.verify(&mut disk, 0, pages + more),
    );
}
