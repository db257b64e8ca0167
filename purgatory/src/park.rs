//! The VCPUs other than the boot VCPU: their entry, their cleanup, and the park page they end
//! on.
//!
//! The kernel side sends each AP to the AP entry (`_start_ap`, `AP_ENTRY_OFFSET` past `_start`,
//! in main.rs) with its VCPU id. An AP stops its own timers, drops its GDT, LDT, user L4 and
//! NMI callback, helps verify digests, reports in, and waits for the boot VCPU to set up the
//! park area (frames hidden from the new kernel): a private
//! L4 -> L3 -> L2 -> L1 tree mapping only the park page, at the same VA as in the old tables.
//! There the AP switches to the private tree (`NEW_BASEPTR`, so the old tables lose their last
//! user once the boot VCPU leaves them) and takes itself down with `VCPUOP_down`, for good:
//! woken, it goes down again unless the new kernel left it a wake-up record
//! (`pvhandoff::handoff::ParkMailbox`). The boot VCPU checks with `VCPUOP_is_up` that each is
//! down.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use pvhandoff::handoff::{MAX_VCPUS, PARK_MAILBOX_OFFSET, PARK_WAKE_MAGIC};
use xenpv::hypercall;

const N: usize = MAX_VCPUS as usize;

global_asm!(
    r#"
    .section .rodata.park, "a"
    .balign 16
    .globl pvkexec_park_code
pvkexec_park_code:
    mov r12, rdi
    lea rdi, [rip + pvkexec_park_op]
    mov esi, 1
    xor edx, edx
    mov r10d, 0x7ff0
    mov eax, 26
    syscall
    lea rcx, [rip + pvkexec_park_status]
    mov [rcx + r12 * 8], rax
1:  mov eax, 24
    mov edi, 2
    mov rsi, r12
    xor edx, edx
    syscall
    // Woken: is there a complete wake-up record for this VCPU?
    lea rbx, [rip + pvkexec_park_code]
    add rbx, {mailbox}
    mov rax, r12
    shl rax, 6
    add rbx, rax
    mov rax, [rbx]
    movabs rcx, {wake}
    cmp rax, rcx
    jne 1b
    mov dword ptr [rbx + 32], 5
    mov dword ptr [rbx + 36], 0
    mov rax, [rbx + 8]
    mov [rbx + 40], rax
    mov qword ptr [rbx + 48], 0
    lea rdi, [rbx + 32]
    mov esi, 1
    xor edx, edx
    mov r10d, 0x7ff0
    mov eax, 26
    syscall
    test rax, rax
    jnz 1b
    // On the new kernel's tables now (they map this page at the same VA).
    mov qword ptr [rbx], 0
    mov rsp, [rbx + 24]
    mov rdi, r12
    jmp qword ptr [rbx + 16]
    .balign 8
    .globl pvkexec_park_op
pvkexec_park_op:
    .long 5, 0
    .quad 0, 0
    .globl pvkexec_park_status
pvkexec_park_status:
    .rept {max}
    .quad -1
    .endr
    .globl pvkexec_park_end
pvkexec_park_end:
    "#,
    max = const MAX_VCPUS,
    mailbox = const PARK_MAILBOX_OFFSET,
    wake = const PARK_WAKE_MAGIC,
);

extern "C" {
    static pvkexec_park_code: u8;
    static pvkexec_park_op: u8;
    static pvkexec_park_status: u8;
    static pvkexec_park_end: u8;
}

/// The park page's code and data (copied into the park frame by the boot VCPU), and the
/// offsets of the `NEW_BASEPTR` op and of the per-VCPU status words in it.
pub struct ParkBlob {
    pub bytes: &'static [u8],
    pub op_offset: usize,
    pub status_offset: usize,
}

pub fn blob() -> ParkBlob {
    const _: () = assert!(PARK_MAILBOX_OFFSET + 64 * MAX_VCPUS <= 4096);
    // SAFETY: linker symbols of the `.rodata.park` blob above; only their addresses are used
    // and the bytes between them are read.
    unsafe {
        let start = core::ptr::addr_of!(pvkexec_park_code) as usize;
        let end = core::ptr::addr_of!(pvkexec_park_end) as usize;
        ParkBlob {
            bytes: core::slice::from_raw_parts(start as *const u8, end - start),
            op_offset: core::ptr::addr_of!(pvkexec_park_op) as usize - start,
            status_offset: core::ptr::addr_of!(pvkexec_park_status) as usize - start,
        }
    }
}

/// Per VCPU: 0 not yet arrived, 1 arrived clean, else `step << 32 | errno` of a failed step.
static ARRIVED: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
/// The park page's VA once the park area is ready (0 before).
static PARK_GO: AtomicU64 = AtomicU64::new(0);

/// Steps of an AP's cleanup, for the boot VCPU's failure line.
pub const AP_STEPS: [&str; 5] = [
    "set_timer_op(0)",
    "vcpu_op(stop_periodic_timer)",
    "vcpu_op(stop_singleshot_timer)",
    "set_gdt(0) / mmuext_op(SET_LDT 0, NEW_USER_BASEPTR 0)",
    "callback_op(unregister NMI)",
];

#[no_mangle]
extern "C" fn purgatory_ap_main(handoff: u64, vcpu: u64) -> ! {
    let me = vcpu as u32;
    let mut result = 1u64;
    let mut fail = |step: u64, e: xenpv::XenError| {
        if result == 1 {
            result = (step + 1) << 32 | e.errno() as u64;
        }
    };
    if let Err(e) = hypercall::set_timer_op(0) {
        fail(0, e);
    }
    if let Err(e) = hypercall::vcpu_stop_periodic_timer(me) {
        fail(1, e);
    }
    if let Err(e) = hypercall::vcpu_stop_singleshot_timer(me) {
        fail(2, e);
    }
    if let Err(crate::vcpu::Dropped::Gdt(e) | crate::vcpu::Dropped::LdtOrUserL4(e)) =
        crate::vcpu::drop_descriptor_tables()
    {
        fail(3, e);
    }
    // An NMI callback into the old kernel would outlive it (the kernel side may have sent
    // this VCPU here by NMI; its HYPERVISOR_iret ended that NMI).
    let nmi = xenpv::CallbackRegister {
        kind: xenpv::callback::TYPE_NMI,
        ..Default::default()
    };
    // SAFETY: unregistering leaves this VCPU with no NMI callback, as Xen starts a VCPU.
    if let Err(e) = unsafe { hypercall::callback_op(xenpv::callback::OP_UNREGISTER, &nmi) } {
        fail(4, e);
    }
    // Help verify the digests (the boot VCPU checks the handoff and the image too, and
    // crashes the domain if either is bad).
    if let Some(h) = crate::entry::handoff(handoff) {
        // SAFETY: as for the boot VCPU: the image is mapped readable at image_va.
        let bytes =
            unsafe { core::slice::from_raw_parts(h.image_va as *const u8, h.image_len as usize) };
        if let Ok(image) = pvhandoff::image::ImageView::parse(bytes) {
            let _ = crate::verify::share(&image, me);
        }
    }
    ARRIVED[vcpu as usize].store(result, Ordering::Release);
    loop {
        // Reads memory while it waits; a yield (one hypercall) only every 2^22 TSC cycles.
        let mut park = 0;
        crate::wait::spin_until(1 << 22, || {
            park = PARK_GO.load(Ordering::Acquire);
            park != 0
        });
        if park != 0 {
            // SAFETY: the park page is mapped at `park` in the current (old) tables and in the
            // private tree; its code takes the VCPU id in rdi and never returns.
            unsafe {
                core::arch::asm!("jmp {p}", p = in(reg) park, in("rdi") vcpu, options(noreturn))
            }
        }
        let _ = hypercall::sched_yield();
    }
}

/// What an AP reported: `None` while it has not arrived.
pub fn arrival(vcpu: usize) -> Option<Result<(), (&'static str, u32)>> {
    match ARRIVED[vcpu].load(Ordering::Acquire) {
        0 => None,
        1 => Some(Ok(())),
        v => Some(Err((
            AP_STEPS[((v >> 32) as usize - 1).min(AP_STEPS.len() - 1)],
            v as u32,
        ))),
    }
}

/// Releases the APs to the park page at `va`.
pub fn release(va: u64) {
    PARK_GO.store(va, Ordering::Release);
}
