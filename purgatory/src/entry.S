// Purgatory entry points (purgatory/src/entry.rs feeds the named operands from xenpv and
// pvhandoff). Intel syntax. Both entries check the handoff block before the first push and
// run on stacks in its working memory; a bad block is named on console_io and the domain
// crashed (without a stack no Rust can run). Then each ends an NMI it may have been sent here
// from (pvkexec_end_nmi) and passes that step's result to Rust.

// fpu_taskswitch(0): CR0.TS clear, so SSE code runs without a #NM handler.
.macro clear_ts
    mov eax, {hc_fpu_taskswitch}
    xor edi, edi
    syscall
.endm

// The handoff block at rdi checked before anything trusts it (non-null, 8-byte aligned, magic,
// version, enough working memory), then rsp = its page-aligned working memory; any failure
// jumps to `fail`. `scratch` is clobbered.
.macro check_block scratch, fail
    test rdi, rdi
    jz \fail
    test rdi, 7                             // 8-byte aligned
    jnz \fail
    movabs \scratch, {magic}
    cmp [rdi], \scratch
    jne \fail
    cmp dword ptr [rdi + 8], {version}
    jne \fail
    cmp qword ptr [rdi + {work_pages}], {fixed}
    jb \fail
    mov rsp, [rdi + {work_va}]
    test rsp, 0xfff                         // page-aligned working memory
    jnz \fail
.endm

    .section .text.entry, "ax"
    .globl _start
_start:                                     // rdi = handoff block
    mov rbx, rdi
    check_block rax, .Lbsp_bad_block
    add rsp, {bsp_top}                      // the boot VCPU's stack top
    clear_ts
    call pvkexec_end_nmi                    // rax = the NMI callback's unregister result
    mov rdi, rbx                            // the hypercalls clobbered rdi
    mov rsi, rax
    call purgatory_main
.Lbsp_returned:
    ud2
    jmp .Lbsp_returned
.Lbsp_bad_block:
    jmp pvkexec_bad_handoff

    // The AP entry, at a fixed offset from _start (this block opens .text.entry, which the
    // linker script puts first). The boot VCPU checks the same block; an AP that finds it
    // unusable stops here and the boot VCPU names the block.
    .org {ap_offset}
    .globl _start_ap
_start_ap:                                  // rdi = handoff block, rsi = VCPU id
    mov rax, rsi
    cmp rax, {max_vcpus}
    jae .Lap_stop
    check_block rcx, .Lap_stop
    inc rax                                 // AP k's 8 KiB stack: (k + 1) * 8 KiB past the BSP's
    shl rax, 13
    add rsp, rax
    add rsp, {bsp_top}
    mov rbx, rdi
    mov r12, rsi
    clear_ts
    call pvkexec_end_nmi                    // rax = the NMI callback's unregister result
    mov rdi, rbx
    mov rsi, r12
    mov rdx, rax
    call purgatory_ap_main
.Lap_stop:
    ud2
    jmp .Lap_stop

    .text
    // Called on every VCPU, on its purgatory stack. A kernel side that sent this VCPU here from
    // its NMI handler never ended that NMI: Xen keeps the VCPU's NMI mask (set at delivery,
    // cleared only by the iret hypercall) for the rest of the domain's life, so the new kernel
    // could never take an NMI there. First the old kernel's NMI callback goes (an NMI pending
    // behind the mask would otherwise run it at once); then HYPERVISOR_iret with a frame that
    // returns to the caller on the same stack ends the NMI. Without one in progress the iret
    // changes nothing but registers. Events stay masked (IF clear in the frame). Out: rax = 0,
    // or the unregister's -errno (then no iret: the NMI stays masked, and Rust names it).
    // Clobbers rcx, rdx, rsi, rdi, r8-r11 (Xen's debug builds clobber argument registers).
pvkexec_end_nmi:
    push {callback_type_nmi}                // struct callback_unregister (type = NMI) on the stack
    mov edi, {callbackop_unregister}        // callback_op(CALLBACKOP_unregister, &it)
    mov rsi, rsp
    mov eax, {hc_callback_op}
    syscall
    add rsp, 8                              // the struct off the stack
    test rax, rax
    jnz .Lend_nmi_refused                   // old callback kept: keep the mask too
    pop rcx                                 // the return address: where the iret continues
    mov rdx, rsp                            // the caller's stack as a ret would leave it
    push {kernel_ss}                        // iret_context, bottom up: ss
    push rdx                                // rsp
    push 0                                  // rflags: IF clear, so Xen leaves events masked
    push {kernel_cs}                        // cs with RPL 0: stay in guest kernel mode
    push rcx                                // rip
    push 0                                  // flags: no VGCF_in_syscall, rcx and r11 from here
    push 0                                  // rcx
    push 0                                  // r11
    push 0                                  // rax: the unregister's result, 0
    mov eax, {hc_iret}                      // iret(): ends the NMI, continues at rip
    syscall
.Lend_nmi_returned:                         // never reached: Xen continues at the frame's rip
    ud2
    jmp .Lend_nmi_returned
.Lend_nmi_refused:
    ret

pvkexec_bad_handoff:
    xor edi, edi                            // console_io(CONSOLEIO_write = 0, len, msg)
    lea rdx, [rip + pvkexec_bad_handoff_msg]
    lea rsi, [rip + pvkexec_bad_handoff_msg_end]
    sub rsi, rdx
    mov eax, {hc_console_io}
    syscall
.Lcrash:
    mov edi, {schedop_shutdown}             // sched_op(shutdown, &crash), again if refused
    lea rsi, [rip + pvkexec_shutdown_crash]
    mov eax, {hc_sched_op}
    syscall
    jmp .Lcrash

    .section .rodata.bad_handoff, "a"
    .balign 4
pvkexec_shutdown_crash:
    .long {shutdown_crash}
pvkexec_bad_handoff_msg:
    .ascii "purgatory: the handoff block (rdi) is not a version-6 block with working memory for the stacks (work_va, work_pages): refusing to run\n"
pvkexec_bad_handoff_msg_end:
