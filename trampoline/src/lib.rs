//! The trampoline: the few instructions that run across the address-space switch. They live
//! in the purgatory's first page (section `.text.trampoline`, placed right after the entry by
//! ldscripts/purgatory.ld, which asserts the page boundary), and that page is mapped at the same
//! address in the old and the new page tables.
//!
//! Registers in: `rdi` = new L4 MFN, `r8` = old L4 MFN, `rsi` = start_info VA, `rdx` = boot
//! stack top, `rcx` = entry. One `mmuext_op` with two operations switches to the new L4
//! (`MMUEXT_NEW_BASEPTR`) and unpins the old one (Xen reads the second operation through the
//! new tables: this page is mapped there too). Then every other register is zeroed and the new
//! kernel entered with `rsi` and `rsp` set. If the switch fails the domain is crashed.
#![no_std]

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.trampoline, "ax"
    .globl purgatory_trampoline
purgatory_trampoline:
    mov r12, rsi
    mov r13, rdx
    mov r14, rcx
    lea r9, [rip + trampoline_ops]
    mov dword ptr [r9], 5
    mov [r9 + 8], rdi
    mov dword ptr [r9 + 24], 4
    mov [r9 + 32], r8
    mov rdi, r9
    mov esi, 2
    xor edx, edx
    mov r10d, 0x7ff0
    mov eax, 26
    syscall
    test rax, rax
    jnz 3f
    mov rsi, r12
    mov rsp, r13
    mov rax, r14
    xor ebx, ebx
    xor ecx, ecx
    xor edx, edx
    xor edi, edi
    xor ebp, ebp
    xor r8d, r8d
    xor r9d, r9d
    xor r10d, r10d
    xor r11d, r11d
    xor r12d, r12d
    xor r13d, r13d
    xor r14d, r14d
    xor r15d, r15d
    push rax
    xor eax, eax
    ret
    /* The switch failed: crash the domain (reason 3), never enter the kernel. */
3:  lea rsi, [rip + trampoline_ops]
    mov dword ptr [rsi], 3
    mov edi, 2
    mov eax, 29
    syscall
    jmp 3b
    .balign 8
trampoline_ops:
    .space 48
    .globl purgatory_trampoline_end
purgatory_trampoline_end:
    .text
    "#
);

extern "C" {
    fn purgatory_trampoline();
    static purgatory_trampoline_end: u8;
}

/// Start and end address of the trampoline code and data.
pub fn bounds() -> (u64, u64) {
    (
        purgatory_trampoline as *const () as u64,
        core::ptr::addr_of!(purgatory_trampoline_end) as u64,
    )
}
