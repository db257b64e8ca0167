// The park page's code and data (purgatory/src/park.rs copies it into the park frame; named
// operands come from xenpv and pvhandoff). Intel syntax, position-independent: it runs at the
// park page's VA in both the old tables and the private ones. rdi = this VCPU's id.

    .section .rodata.park, "a"
    .balign 16
    .globl pvkexec_park_code
pvkexec_park_code:
    mov r12, rdi
    // mmuext_op(NEW_BASEPTR, private L4): off the old tables for good.
    lea rdi, [rip + pvkexec_park_op]
    mov esi, 1
    xor edx, edx
    mov r10d, {domid_self}
    mov eax, {hc_mmuext_op}
    syscall
    lea rcx, [rip + pvkexec_park_status]
    mov [rcx + r12 * 8], rax                // the boot VCPU reads the result here
.Lpark_down:
    mov eax, {hc_vcpu_op}                   // vcpu_op(DOWN, self): a wake-up returns here
    mov edi, {vcpuop_down}
    mov rsi, r12
    xor edx, edx
    syscall
    // Woken: is there a complete wake-up record for this VCPU?
    lea rbx, [rip + pvkexec_park_code]
    add rbx, {mailbox}
    mov rax, r12
    shl rax, 6                              // 64-byte ParkMailbox per VCPU
    add rbx, rax
    mov rax, [rbx + {mb_magic}]
    movabs rcx, {wake}
    cmp rax, rcx
    jne .Lpark_down
    // The mailbox's op: NEW_BASEPTR to the new kernel's L4.
    mov dword ptr [rbx + {mb_op} + {op_cmd}], {mmuext_new_baseptr}
    mov dword ptr [rbx + {mb_op} + {op_cmd} + 4], 0
    mov rax, [rbx + {mb_l4_mfn}]
    mov [rbx + {mb_op} + {op_arg1}], rax
    mov qword ptr [rbx + {mb_op} + {op_arg2}], 0
    lea rdi, [rbx + {mb_op}]
    mov esi, 1
    xor edx, edx
    mov r10d, {domid_self}
    mov eax, {hc_mmuext_op}
    syscall
    test rax, rax
    jnz .Lpark_down
    // On the new kernel's tables now (they map this page at the same VA).
    mov qword ptr [rbx + {mb_magic}], 0
    mov rsp, [rbx + {mb_rsp}]
    mov rdi, r12
    jmp qword ptr [rbx + {mb_entry}]
    .balign 8
    .globl pvkexec_park_op
pvkexec_park_op:                            // mmuext_op: cmd, pad, arg1 (private L4), arg2
    .long {mmuext_new_baseptr}, 0
    .quad 0, 0
    .globl pvkexec_park_status
pvkexec_park_status:                        // per VCPU: the NEW_BASEPTR result, -1 until then
    .rept {max}
    .quad -1
    .endr
    .globl pvkexec_park_end
pvkexec_park_end:
