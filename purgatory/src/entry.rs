//! Purgatory stage 1 (docs/kexec-image.md): the entry points. The boot VCPU's `_start` and the
//! APs' `_start_ap` check the handoff block, take a stack in its working memory, clear CR0.TS
//! (`fpu_taskswitch(0)`), drop the old kernel's NMI callback and end any NMI the VCPU was sent
//! here from (`HYPERVISOR_iret`, so Xen unmasks NMIs for the new kernel), and call into Rust
//! with that unregister's result; [`handoff`] reads the block for the Rust side.

use core::arch::global_asm;
use pvhandoff::handoff::{Handoff, HANDOFF_MAGIC, HANDOFF_VERSION};

// The entry code (`entry.S`), fed with the ABI's numbers.
global_asm!(
    include_str!("entry.S"),
    ap_offset = const pvhandoff::handoff::AP_ENTRY_OFFSET,
    max_vcpus = const pvhandoff::handoff::MAX_VCPUS,
    magic = const HANDOFF_MAGIC,
    version = const HANDOFF_VERSION,
    work_va = const core::mem::offset_of!(Handoff, work_va),
    work_pages = const core::mem::offset_of!(Handoff, work_pages),
    fixed = const pvhandoff::handoff::WORK_FIXED_PAGES,
    bsp_top = const pvhandoff::handoff::WORK_BSP_STACK_TOP,
    hc_fpu_taskswitch = const xenpv::hc::FPU_TASKSWITCH,
    hc_console_io = const xenpv::hc::CONSOLE_IO,
    hc_sched_op = const xenpv::hc::SCHED_OP,
    schedop_shutdown = const xenpv::schedop::SHUTDOWN,
    shutdown_crash = const xenpv::ShutdownReason::Crash as u32,
    hc_callback_op = const xenpv::hc::CALLBACK_OP,
    callbackop_unregister = const xenpv::callback::OP_UNREGISTER,
    callback_type_nmi = const xenpv::callback::TYPE_NMI,
    hc_iret = const xenpv::hc::IRET,
    kernel_ss = const xenpv::selector::FLAT_KERNEL_SS,
    // RPL 3 in an iret frame's CS means a return to guest user mode.
    kernel_cs = const xenpv::selector::FLAT_KERNEL_CS & !3,
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
