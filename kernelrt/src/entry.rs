//! PV entry point `_start` for fixed-address guest kernels.
//!
//! Xen enters with `rsi` = start_info, `rsp` = the boot stack it built, events masked, no trap
//! table and CR0.TS possibly set. Before any Rust runs we record the entry registers (a probe
//! checks them), move to our own stack, and clear CR0.TS with `fpu_taskswitch(0)` (`clear_ts.S`,
//! which the kernels' AP entries include too): the prebuilt `core` uses SSE, and an SSE
//! instruction with TS set raises #NM, which crashes a domain that has no trap table. Then
//! `guest_main(start_info)` runs; it must not return.

use core::arch::global_asm;

/// Boot stack of the guest's first VCPU.
pub const STACK_SIZE: usize = 64 * 1024;

/// Register indices in [`entry_regs`], in the order the entry code stores them.
pub mod reg {
    pub const RAX: usize = 0;
    pub const RBX: usize = 1;
    pub const RCX: usize = 2;
    pub const RDX: usize = 3;
    pub const RSI: usize = 4;
    pub const RDI: usize = 5;
    pub const RBP: usize = 6;
    pub const RSP: usize = 7;
    pub const R8: usize = 8;
    pub const R15: usize = 15;
    pub const RFLAGS: usize = 16;
    pub const CS: usize = 17;
    pub const SS: usize = 18;
    pub const DS: usize = 19;
    pub const ES: usize = 20;
    pub const FS: usize = 21;
    pub const GS: usize = 22;
    pub const COUNT: usize = 23;
}

global_asm!(
    concat!(
        r#"
    .section .text.entry, "ax"
    .globl _start
_start:
    mov [rip + guestrt_entry_regs + 0*8], rax
    mov [rip + guestrt_entry_regs + 1*8], rbx
    mov [rip + guestrt_entry_regs + 2*8], rcx
    mov [rip + guestrt_entry_regs + 3*8], rdx
    mov [rip + guestrt_entry_regs + 4*8], rsi
    mov [rip + guestrt_entry_regs + 5*8], rdi
    mov [rip + guestrt_entry_regs + 6*8], rbp
    mov [rip + guestrt_entry_regs + 7*8], rsp
    mov [rip + guestrt_entry_regs + 8*8], r8
    mov [rip + guestrt_entry_regs + 9*8], r9
    mov [rip + guestrt_entry_regs + 10*8], r10
    mov [rip + guestrt_entry_regs + 11*8], r11
    mov [rip + guestrt_entry_regs + 12*8], r12
    mov [rip + guestrt_entry_regs + 13*8], r13
    mov [rip + guestrt_entry_regs + 14*8], r14
    mov [rip + guestrt_entry_regs + 15*8], r15
    pushfq
    pop rax
    mov [rip + guestrt_entry_regs + 16*8], rax
    xor eax, eax
    mov ax, cs
    mov [rip + guestrt_entry_regs + 17*8], rax
    mov ax, ss
    mov [rip + guestrt_entry_regs + 18*8], rax
    mov ax, ds
    mov [rip + guestrt_entry_regs + 19*8], rax
    mov ax, es
    mov [rip + guestrt_entry_regs + 20*8], rax
    mov ax, fs
    mov [rip + guestrt_entry_regs + 21*8], rax
    mov ax, gs
    mov [rip + guestrt_entry_regs + 22*8], rax
    lea rsp, [rip + guestrt_stack_top]
    mov rbx, rsi
"#,
        include_str!("clear_ts.S"),
        r#"
    mov rdi, rbx
    xor ebp, ebp
    call guest_main
2:  ud2
    jmp 2b

    .section .bss.guestrt, "aw", @nobits
    .balign 16
    .globl guestrt_entry_regs
guestrt_entry_regs:
    .space 23*8
    .balign 4096
guestrt_stack_bottom:
    .space {stack}
guestrt_stack_top:
    "#
    ),
    stack = const STACK_SIZE,
    fpu_taskswitch = const xenpv::hc::FPU_TASKSWITCH,
);

extern "C" {
    static guestrt_entry_regs: [u64; reg::COUNT];
}

/// The registers Xen (or a trampoline) handed to `_start`.
pub fn entry_regs() -> [u64; reg::COUNT] {
    // SAFETY: written once by `_start` before any Rust code runs, only read afterwards.
    unsafe { core::ptr::addr_of!(guestrt_entry_regs).read_volatile() }
}
