//! Purgatory binary: position-independent, entered by the old kernel's kexec code with `rdi`
//! pointing at the handoff block (`pvhandoff::handoff`).
//!
//! Stages (docs/kexec-image.md): entry (own stack, CR0.TS cleared before any Rust); the SHA-256
//! of every segment, before anything else (a mismatch names the segment and crashes the
//! domain); renumbering, tables, pin and timers (`handover`); the switch (`trampoline` crate).
//! Any failed check or hypercall is printed and crashes the domain: the new kernel is never
//! entered after an error. One VCPU and the dom0 layout so far.
#![no_std]
#![no_main]

/// One console line per message (the initial domain's `console_io`).
macro_rules! say {
    ($($arg:tt)*) => { guestrt::console::print_line(format_args!($($arg)*)) };
}

mod events;
mod grants;
mod handover;
mod park;
mod rings;
mod vcpu;
mod verify;

use core::arch::global_asm;
use pvhandoff::handoff::{Handoff, HANDOFF_MAGIC, HANDOFF_VERSION};
use pvhandoff::image::ImageView;
use xenpv::{hypercall, ShutdownReason};

// Both entries run on stacks in the handoff's working memory (`pvhandoff::handoff`, version 5):
// the block's magic, version and working-area size are checked before the first push. A block
// that fails is named on the console (`console_io`, the initial domain's) and the domain crashed:
// without a stack no Rust can run.
global_asm!(
    r#"
    .section .text.entry, "ax"
    .globl _start
_start:
    mov rbx, rdi
    test rdi, rdi
    jz 9f
    test rdi, 7
    jnz 9f
    movabs rax, {magic}
    cmp [rdi], rax
    jne 9f
    cmp dword ptr [rdi + 8], {version}
    jne 9f
    cmp qword ptr [rdi + {work_pages}], {fixed}
    jb 9f
    mov rsp, [rdi + {work_va}]
    test rsp, 0xfff
    jnz 9f
    add rsp, {bsp_top}
    mov eax, 5
    xor edi, edi
    syscall
    mov rdi, rbx
    call purgatory_main
2:  ud2
    jmp 2b
9:  jmp pvkexec_bad_handoff

    // The AP entry, at a fixed offset from _start (this block opens .text.entry, which the
    // linker script puts first). The boot VCPU checks the same block; an AP that finds it
    // unusable stops here and the boot VCPU names the block.
    .org {ap_offset}
    .globl _start_ap
_start_ap:
    mov rax, rsi
    cmp rax, {max}
    jae 3f
    test rdi, 7
    jnz 3f
    test rdi, rdi
    jz 3f
    movabs rcx, {magic}
    cmp [rdi], rcx
    jne 3f
    cmp dword ptr [rdi + 8], {version}
    jne 3f
    cmp qword ptr [rdi + {work_pages}], {fixed}
    jb 3f
    mov rsp, [rdi + {work_va}]
    test rsp, 0xfff
    jnz 3f
    inc rax
    shl rax, 13
    add rsp, rax
    add rsp, {bsp_top}
    mov rbx, rdi
    mov r12, rsi
    mov eax, 5
    xor edi, edi
    syscall
    mov rdi, rbx
    mov rsi, r12
    call purgatory_ap_main
3:  ud2
    jmp 3b

    .text
pvkexec_bad_handoff:
    xor edi, edi
    lea rdx, [rip + pvkexec_bad_handoff_msg]
    lea rsi, [rip + pvkexec_bad_handoff_msg_end]
    sub rsi, rdx
    mov eax, 18
    syscall
4:  mov edi, 2
    lea rsi, [rip + pvkexec_shutdown_crash]
    mov eax, 29
    syscall
    jmp 4b

    .section .rodata.bad_handoff, "a"
    .balign 4
pvkexec_shutdown_crash:
    .long 3
pvkexec_bad_handoff_msg:
    .ascii "purgatory: the handoff block (rdi) is no version-5 block with working memory for the stacks (work_va, work_pages): refusing to run\n"
pvkexec_bad_handoff_msg_end:
    "#,
    ap_offset = const pvhandoff::handoff::AP_ENTRY_OFFSET,
    max = const pvhandoff::handoff::MAX_VCPUS,
    magic = const HANDOFF_MAGIC,
    version = const HANDOFF_VERSION,
    work_va = const core::mem::offset_of!(Handoff, work_va),
    work_pages = const core::mem::offset_of!(Handoff, work_pages),
    fixed = const pvhandoff::handoff::WORK_FIXED_PAGES,
    bsp_top = const pvhandoff::handoff::WORK_BSP_STACK_TOP,
);

fn crash() -> ! {
    // A console ring's last lines must reach xenconsoled before the domain goes.
    guestrt::console::flush();
    loop {
        let _ = hypercall::shutdown(ShutdownReason::Crash);
    }
}

/// Reads the handoff block the kernel side passed.
fn handoff(ptr: u64) -> Option<Handoff> {
    if ptr == 0 || !ptr.is_multiple_of(8) {
        return None;
    }
    // SAFETY: the kernel side passes the address of a mapped, aligned handoff block; it is
    // only read, and its magic and version are checked before any field is trusted.
    let h = unsafe { (ptr as *const Handoff).read_volatile() };
    (h.magic == HANDOFF_MAGIC && h.version == HANDOFF_VERSION).then_some(h)
}

#[no_mangle]
extern "C" fn purgatory_main(handoff_ptr: u64) -> ! {
    let h = handoff(handoff_ptr);
    if let Some(h) = &h {
        select_console(h);
    }
    say!("purgatory: entered");
    let Some(h) = h else {
        say!("purgatory: handoff block at {handoff_ptr:#x} has a wrong magic or version");
        crash()
    };
    if let Err(why) = h.check() {
        say!("purgatory: {why}; refusing to enter the new kernel");
        crash()
    }
    // SAFETY: the handoff says the whole image is mapped readable at image_va for image_len
    // bytes; the purgatory only reads it.
    let bytes =
        unsafe { core::slice::from_raw_parts(h.image_va as *const u8, h.image_len as usize) };
    if let Err(e) = verify::header(bytes) {
        say!("purgatory: kexec image header and descriptor table refused: {e:?}");
        crash()
    }
    say!("purgatory: image header and descriptor table digest ok");
    let image = match ImageView::parse(bytes) {
        Ok(v) => v,
        Err(e) => {
            say!(
                "purgatory: kexec image at {:#x} unreadable: {:?}",
                h.image_va,
                e
            );
            crash()
        }
    };
    let start = rdtsc();
    verify::open(&image);
    verify::share(&image, 0);
    // An AP may still be hashing the chunk it claimed.
    if !handover::spin_until(4 * handover::WAIT_CYCLES, || verify::all_done(&image)) {
        say!("purgatory: digest verification did not finish: a VCPU stopped mid-segment");
        crash()
    }
    let cycles = rdtsc().wrapping_sub(start);
    let mut total = 0u64;
    let mut helpers = 0u32;
    for (i, seg) in image.segments().enumerate() {
        match verify::outcome(&image, i) {
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
                say!(
                    "purgatory: segment {i} ({}) digest ok, {} bytes (VCPUs {:#x})",
                    seg.kind_name(),
                    seg.len,
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

pub(crate) fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the time-stamp counter (PV guests may execute it).
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (hi as u64) << 32 | lo as u64
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
