//! Old kernel of a kexec (the kernel side): it leaves the domain the way a Linux kernel would,
//! then hands it to the purgatory.
//!
//! [`prepare`] is the whole sequence, in two halves:
//! 1. [`run_like_linux`]: what a running kernel has set up, each piece a state the purgatory
//!    must undo or survive: the purgatory and a writable direct map of all RAM at Linux's
//!    `page_offset_base` (`tables`, page-table frames mapped read-only as Xen requires), the
//!    kernel's own GDT with a data selector loaded (`gdt`), extra pinned page-table trees
//!    (`trees`: process L4s sharing the kernel half), VIRQ_TIMER bound with a periodic and a
//!    single-shot timer running (`timers`), optionally each `vcpu_info` placed in a frame of
//!    its own (`vcpu_info`), the APs up with the same state (`aps`), runstate and time areas,
//!    watchdogs, a kept store channel and the FIFO event ABI (`events`), grants offered
//!    (`grants`) and the free frames poisoned (`pool`);
//! 2. [`handoff::hand_over`]: the kernel side's part of the handoff contract: the extra trees
//!    unpinned, the purgatory's working memory taken from the top of the free pool, the
//!    handoff block (version 5) filled and the APs sent to the purgatory's AP entry; then
//!    [`handoff::enter`] jumps to its entry.
//!
//! Frames are taken from the top of RAM downwards (`frames`); the free pool is what lies
//! between the initial region and the lowest frame taken. Command-line words (`options`)
//! choose variants and break the contract on purpose for the tests that show who catches it.
#![no_std]
#![no_main]
// Check results carry their reason in a fixed buffer: these kernels have no heap to box it in.
#![allow(clippy::result_large_err)]

mod aps;
mod events;
mod fill;
mod frames;
mod gdt;
mod grants;
mod handoff;
mod image;
mod options;
mod pool;
mod tables;
mod timers;
mod trees;
mod vcpu_info;

use guestrt::println;
use kernelrt::entry::{entry_regs, reg};
use kernelrt::notes::VIRT_BASE;
use kernelrt::report::{fail, finish, Why};
use kernelrt::view::{p2m, Region};
use options::{Fault, Options};
use xenpv::{StartInfo, PAGE_SIZE};

#[no_mangle]
extern "C" fn guest_main(si: *const StartInfo) -> ! {
    // SAFETY: Xen passes a mapped start_info page in rsi; it stays mapped and unchanged.
    let si = unsafe { &*si };
    let region = Region::from_stack_top(VIRT_BASE, entry_regs()[reg::RSP]);
    kernelrt::console_init(si, &region);
    match prepare(si, &region) {
        Ok(entry) => {
            println!("PVKEXEC-INFO kexec: entering the purgatory at {:#x}", entry);
            // In a domU: let xenconsoled read the ring before the purgatory takes over.
            guestrt::console::flush();
            // SAFETY: `prepare` mapped the purgatory's pages (relocated for this address by the
            // loader) and filled the handoff block; `entry` is the purgatory's entry.
            unsafe { handoff::enter(entry) }
        }
        Err(why) => {
            fail("kexec-prepare", format_args!("{}", why));
            finish()
        }
    }
}

/// The old kernel's life up to the kexec; returns the purgatory's entry.
fn prepare(si: &StartInfo, region: &Region) -> Result<u64, Why> {
    let purgatory = image::purgatory(si)?;
    let p2m = p2m(si);
    let nr_vcpus = aps::count();
    let layout = frames::plan(si, region, nr_vcpus)?;
    let opts = Options::read(si.cmdline());
    let running = run_like_linux(si, region, &purgatory, &layout, p2m, &opts)?;
    handoff::hand_over(si, &purgatory, &layout, p2m, &opts, &running)
}

/// The state a running kernel leaves for the purgatory, in the order Linux would build it.
fn run_like_linux(
    si: &StartInfo,
    region: &Region,
    purgatory: &image::Purgatory,
    l: &frames::Layout,
    p2m: &[u64],
    opts: &Options,
) -> Result<handoff::Running, Why> {
    let l4 = tables::KernelL4::find(si, region, p2m, purgatory.base)?;
    let mut f = fill::Filler::new(si, region, p2m)?;
    tables::map(&mut f, si, p2m, l, purgatory, &l4)?;
    gdt::load(p2m[l.gdt as usize])?;
    trees::pin(&mut f, l, &l4, p2m)?;
    let timer_port = timers::start(si)?;
    let vcpu_info_va = if opts.vcpu_info {
        vcpu_info::place(l, p2m)?
    } else {
        0
    };
    aps::bind_ipis(l.nr_vcpus)?;
    if opts.ap_stop_by_ipi {
        aps::stop_by_ipi();
    }
    if l.nr_vcpus > 1 {
        aps::start(l4.mfn, l, p2m, opts.fault == Some(Fault::ApStuck))?;
    }
    let runstate_va = region.end - PAGE_SIZE;
    let store_port = events::register(l, p2m, runstate_va, opts.keep_store)?;
    let in_use = opts.fault == Some(Fault::GrantInUse);
    let offered = grants::offer(si, region, p2m, in_use, opts.grant_v2)?;
    let pool_first = (region.end - VIRT_BASE) / PAGE_SIZE;
    let poisoned = pool::poison(pool_first, l.floor);
    Ok(handoff::Running {
        pool_first,
        timer_port,
        vcpu_info_va,
        store_port,
        offered,
        poisoned,
    })
}
