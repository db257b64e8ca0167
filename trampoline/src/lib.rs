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
    include_str!("trampoline.S"),
    op_cmd = const core::mem::offset_of!(xenpv::MmuextOp, cmd),
    op_arg1 = const core::mem::offset_of!(xenpv::MmuextOp, arg1),
    op_size = const core::mem::size_of::<xenpv::MmuextOp>(),
    mmuext_new_baseptr = const xenpv::mmuext::NEW_BASEPTR,
    mmuext_unpin_table = const xenpv::mmuext::UNPIN_TABLE,
    domid_self = const xenpv::DOMID_SELF,
    hc_mmuext_op = const xenpv::hc::MMUEXT_OP,
    hc_sched_op = const xenpv::hc::SCHED_OP,
    schedop_shutdown = const xenpv::schedop::SHUTDOWN,
    shutdown_crash = const xenpv::ShutdownReason::Crash as u32,
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
