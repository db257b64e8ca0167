//! Purgatory binary: position-independent, entered by the old kernel's kexec code.
//!
//! Implemented so far: the entry (own stack, CR0.TS cleared before any Rust) and the refusal
//! path. The stages of design.md section 2 (digest verification over the handoff's frames, P2M
//! renumbering, new tables, cleanup, trampoline) are not implemented yet, so the purgatory says
//! so and crashes the domain rather than entering anything.
#![no_std]
#![no_main]

use core::arch::global_asm;
use core::fmt::Write;
use xenpv::{hypercall, ShutdownReason};

global_asm!(
    r#"
    .section .text.entry, "ax"
    .globl _start
_start:
    lea rsp, [rip + purgatory_stack_top]
    mov rbx, rdi
    mov eax, 5
    xor edi, edi
    syscall
    mov rdi, rbx
    call purgatory_main
2:  ud2
    jmp 2b

    .section .bss.purgatory_stack, "aw", @nobits
    .balign 4096
    .space 32768
purgatory_stack_top:
    "#
);

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        hypercall::console_write(s.as_bytes())
            .map(drop)
            .map_err(|_| core::fmt::Error)
    }
}

fn crash() -> ! {
    loop {
        let _ = hypercall::shutdown(ShutdownReason::Crash);
    }
}

#[no_mangle]
extern "C" fn purgatory_main(_handoff: u64) -> ! {
    let _ = writeln!(
        Console,
        "purgatory: stages after entry are not implemented; refusing to enter a new kernel"
    );
    crash()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = writeln!(Console, "purgatory: panic: {}", info);
    crash()
}

#[no_mangle]
extern "C" fn rust_eh_personality() {}
