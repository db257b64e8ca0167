    // fpu_taskswitch(0): CR0.TS clear, so SSE code runs without a #NM handler (the prebuilt
    // core uses SSE). Clobbers rax, rdi, rcx and r11; the operand is xenpv::hc::FPU_TASKSWITCH.
    mov eax, {fpu_taskswitch}
    xor edi, edi
    syscall
