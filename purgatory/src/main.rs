//! Purgatory binary: position-independent, entered by the old kernel's kexec code with `rdi`
//! pointing at the handoff block (`pvhandoff::handoff`), on every VCPU.
//!
//! The stages of docs/kexec-image.md, in order, and their modules:
//! 1. entry (`entry`): the block checked, a stack in its working memory, CR0.TS cleared, the
//!    old NMI callback dropped and any NMI the VCPU came from ended (Xen unmasks NMIs); the
//!    image's header digest (`verify::header`);
//! 2. every segment's SHA-256 (`verify`, the APs helping from `park`); every AP arrived
//!    (`aps`), offered grants revoked (`grants`);
//! 3. the plan checked (`plan`), renumbering (`renumber`, its bookkeeping in `frames`, a domU's
//!    rings in `rings`);
//! 4. tables (`tables`), the APs parked (`aps`), start_info (`start_info`), timers, areas and
//!    watchdogs (`quiesce`), event channels (`events`);
//! 5. the switch (`trampoline` crate).
//!
//! `handover::build` is the sequence of stages 3 and 4. Any failed check or hypercall is a
//! `failure::Failure`, printed before the domain is crashed: the new kernel is never entered
//! after an error.
#![no_std]
#![no_main]

/// One console line per message (the initial domain's `console_io`).
macro_rules! say {
    ($($arg:tt)*) => { guestrt::console::print_line(format_args!($($arg)*)) };
}

mod alias;
mod aps;
mod elfcore;
mod entry;
mod events;
mod failure;
mod frames;
mod frontends;
mod grants;
mod handover;
mod park;
mod plan;
mod quiesce;
mod renumber;
mod rings;
mod start_info;
mod tables;
mod vcpu;
mod verify;
mod wait;
mod watches;

use pvhandoff::handoff::Handoff;
use pvhandoff::image::{ImageError, ImageView};
use xenpv::{hypercall, ShutdownReason};

fn crash() -> ! {
    // A console ring's last lines must reach xenconsoled before the domain goes.
    guestrt::console::flush();
    loop {
        let _ = hypercall::shutdown(ShutdownReason::Crash);
    }
}

/// The boot VCPU's sequence, one line per stage of docs/kexec-image.md. `nmi_unregistered`:
/// the entry's `CALLBACKOP_unregister` of the NMI callback (0, or -errno; entry.S).
#[no_mangle]
extern "C" fn purgatory_main(handoff_ptr: u64, nmi_unregistered: i64) -> ! {
    let h = entered(handoff_ptr, nmi_unregistered);
    let image = checked_image(&h);
    verify_segments(&h, &image);
    let ready = match handover::build(&h, &image) {
        Ok(r) => r,
        Err(f) => {
            say!("purgatory: {f}; refusing to enter the new kernel");
            crash()
        }
    };
    say!(
        "purgatory: {} hypercalls in all for {} frames (one per {} frames); entering the new kernel at {:#x} (start_info {:#x}, rsp {:#x})",
        ready.hypercalls,
        ready.frames,
        ready.frames / ready.hypercalls.max(1),
        ready.entry,
        ready.start_info_va,
        ready.rsp
    );
    enter(&ready)
}

/// Stage 1 in Rust: the console, the entry's NMI step and the handoff block checked.
fn entered(handoff_ptr: u64, nmi_unregistered: i64) -> Handoff {
    let h = entry::handoff(handoff_ptr);
    if let Some(h) = &h {
        select_console(h);
    }
    say!("purgatory: entered");
    // A failed unregister left the old kernel's NMI callback, and Xen's NMI mask, in place.
    if let Err(e) = xenpv::XenError::check(nmi_unregistered) {
        say!("purgatory: callback_op(unregister NMI) at entry failed: {e}; refusing to enter the new kernel");
        crash()
    }
    let Some(h) = h else {
        say!("purgatory: handoff block at {handoff_ptr:#x} has a wrong magic or version");
        crash()
    };
    if let Err(why) = h.check() {
        say!("purgatory: {why}; refusing to enter the new kernel");
        crash()
    }
    h
}

/// The image, its header digest checked before any field is read.
fn checked_image(h: &Handoff) -> ImageView<'static> {
    // SAFETY: the handoff says the whole image is mapped readable at image_va for image_len
    // bytes; the purgatory only reads it.
    let bytes =
        unsafe { core::slice::from_raw_parts(h.image_va as *const u8, h.image_len as usize) };
    if let Err(e) = verify::header(bytes) {
        say!("purgatory: kexec image header and descriptor table refused: {e:?}");
        crash()
    }
    say!("purgatory: image header and descriptor table digest ok");
    match ImageView::parse(bytes) {
        Ok(v) => v,
        // Its digest is checked before any record is used; nothing has changed hands.
        Err(e @ (ImageError::ZeroRunsDigest | ImageError::ZeroRuns(_))) => {
            say!("purgatory: zero-run table refused: {e:?}; refusing to continue");
            crash()
        }
        Err(e) => {
            say!(
                "purgatory: kexec image at {:#x} unreadable: {:?}",
                h.image_va,
                e
            );
            crash()
        }
    }
}

/// Stage 2: every segment's SHA-256 (the APs help); a mismatch names the segment.
fn verify_segments(h: &Handoff, image: &ImageView) {
    let start = wait::rdtsc();
    verify::open(image);
    verify::share(image, 0);
    // An AP may still be hashing the chunk it claimed.
    if !wait::spin_until(4 * wait::WAIT_CYCLES, || verify::all_done(image)) {
        say!("purgatory: digest verification did not finish: a VCPU stopped mid-segment");
        crash()
    }
    let cycles = wait::rdtsc().wrapping_sub(start);
    let mut total = 0u64;
    let mut helpers = 0u32;
    for (i, seg) in image.segments().enumerate() {
        match verify::outcome(image, i) {
            verify::Outcome::SelfSkipped => {
                say!("purgatory: segment {i} (purgatory) is this code: not self-checked")
            }
            verify::Outcome::Mismatch(found) => {
                say!(
                    "purgatory: segment {i} ({}): SHA-256 mismatch (expected {:02x}{:02x}{:02x}{:02x}..., found {:02x}{:02x}{:02x}{:02x}...): refusing to continue",
                    seg.kind_name(), seg.sha256[0], seg.sha256[1], seg.sha256[2], seg.sha256[3],
                    found[0], found[1], found[2], found[3]
                );
                crash()
            }
            verify::Outcome::Ok(vcpus) => {
                helpers |= vcpus;
                total += seg.len;
                let zero = image.zeros(i).zero_pages();
                say!(
                    "purgatory: segment {i} ({}) digest ok, {} bytes{} (VCPUs {:#x})",
                    seg.kind_name(),
                    seg.len,
                    ZeroPages(zero),
                    vcpus
                );
            }
        }
    }
    say!(
        "purgatory: digests verified: {} segments, {} bytes, {} TSC cycles on {} of {} VCPUs",
        image.header.nr_segments,
        total,
        cycles,
        helpers.count_ones(),
        h.nr_vcpus.max(1)
    );
}

/// ", N zero-run pages" for a segment with zero runs, nothing otherwise.
struct ZeroPages(u64);

impl core::fmt::Display for ZeroPages {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, ", {n} of its pages in zero runs"),
        }
    }
}

/// In a domU (Xen's release build drops its `console_io`) the purgatory prints through the
/// old domain's console ring, leaving its indices consistent for the new kernel.
fn select_console(h: &Handoff) {
    if h.old_start_info_va == 0 || !h.old_start_info_va.is_multiple_of(8) {
        return;
    }
    // SAFETY: the handoff names the old kernel's mapped start_info (magic checked); read only.
    let old_si = unsafe { &*(h.old_start_info_va as *const xenpv::StartInfo) };
    if let Some(va) = rings::console_va(h, old_si) {
        guestrt::console::init(old_si, va);
    }
}

/// Jumps to the trampoline at its address in the shared page.
fn enter(r: &handover::Ready) -> ! {
    // Whatever the purgatory wrote to a console ring is read before the new kernel runs.
    guestrt::console::flush();
    let (here, end) = trampoline::bounds();
    let base = here & !0xFFF;
    if end > base + 4096 || base != r.trampoline_va {
        say!(
            "purgatory: trampoline at {here:#x} is not inside the page mapped at {:#x}",
            r.trampoline_va
        );
        crash()
    }
    // SAFETY: the trampoline expects exactly these registers and never returns; the new
    // tables are pinned and map the trampoline page at the same address.
    unsafe {
        core::arch::asm!("jmp {t}", t = in(reg) here,
            in("rdi") r.new_l4_mfn, in("r8") r.old_l4_mfn, in("rsi") r.start_info_va,
            in("rdx") r.rsp, in("rcx") r.entry, options(noreturn))
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    say!("purgatory: panic: {}", info);
    crash()
}

#[no_mangle]
extern "C" fn rust_eh_personality() {}

// `memcpy` and friends come from guestrt (linked for its `mem` module).
use guestrt as _;
