//! Purgatory stage 1 (docs/kexec-image.md): the entry points. The boot VCPU's `_start` and the
//! APs' `_start_ap` check the handoff block, take a stack in its working memory, clear CR0.TS
//! (`fpu_taskswitch(0)`) and call into Rust; [`handoff`] reads the block for the Rust side.

use core::arch::global_asm;
use pvhandoff::handoff::{Handoff, HANDOFF_MAGIC, HANDOFF_VERSION};

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

/// Reads the handoff block the kernel side passed.
pub fn handoff(ptr: u64) -> Option<Handoff> {
    if ptr == 0 || !ptr.is_multiple_of(8) {
        return None;
    }
    // SAFETY: the kernel side passes the address of a mapped, aligned handoff block; it is
    // only read, and its magic and version are checked before any field is trusted.
    let h = unsafe { (ptr as *const Handoff).read_volatile() };
    (h.magic == HANDOFF_MAGIC && h.version == HANDOFF_VERSION).then_some(h)
}
