// The trampoline (trampoline/src/lib.rs feeds the named operands from xenpv). Intel syntax.
// In: rdi = new L4 MFN, r8 = old L4 MFN, rsi = start_info VA, rdx = boot stack top, rcx = entry.

    .section .text.trampoline, "ax"
    .globl purgatory_trampoline
purgatory_trampoline:
    mov r12, rsi
    mov r13, rdx
    mov r14, rcx
    // Two mmuext ops: NEW_BASEPTR (new L4), then UNPIN_TABLE (old L4), read by Xen through
    // the new tables (this page is mapped there too).
    lea r9, [rip + trampoline_ops]
    mov dword ptr [r9 + {op_cmd}], {mmuext_new_baseptr}
    mov [r9 + {op_arg1}], rdi
    mov dword ptr [r9 + {op_size} + {op_cmd}], {mmuext_unpin_table}
    mov [r9 + {op_size} + {op_arg1}], r8
    mov rdi, r9
    mov esi, 2
    xor edx, edx
    mov r10d, {domid_self}
    mov eax, {hc_mmuext_op}
    syscall
    test rax, rax
    jnz .Lswitch_failed
    // The new kernel's entry state: rsi = start_info, rsp = stack top, every other register 0.
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
    // The switch failed: crash the domain, never enter the kernel.
.Lswitch_failed:
    lea rsi, [rip + trampoline_ops]         // a sched_shutdown (its reason) over the ops
    mov dword ptr [rsi], {shutdown_crash}
    mov edi, {schedop_shutdown}
    mov eax, {hc_sched_op}
    syscall
    jmp .Lswitch_failed
    .balign 8
trampoline_ops:                             // two mmuext_op structures
    .space 2 * {op_size}
    .globl purgatory_trampoline_end
purgatory_trampoline_end:
    .text
