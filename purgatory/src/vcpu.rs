//! What every VCPU drops before it leaves the old kernel: its descriptor tables and user L4.

use xenpv::{hypercall, mmuext, MmuextOp, XenError};

/// Which drop failed, for the failure line.
pub enum Dropped {
    Gdt(XenError),
    LdtOrUserL4(XenError),
}

/// Null data selectors, then no guest GDT (`set_gdt(0)`), no LDT and no user-mode L4 for the
/// calling VCPU: the state Xen gives a fresh VCPU. CS and SS stay Xen's flat selectors.
pub fn drop_descriptor_tables() -> Result<(), Dropped> {
    // SAFETY: the purgatory runs on Xen's flat CS/SS and uses no segment bases, so null data
    // selectors change nothing it relies on; afterwards no selector refers to the guest GDT,
    // so dropping it cannot fault; kernel mode uses neither the LDT nor the user L4.
    unsafe {
        core::arch::asm!("mov ds, {z:e}", "mov es, {z:e}", "mov fs, {z:e}", "mov gs, {z:e}",
            z = in(reg) 0u32, options(nostack, preserves_flags));
        hypercall::set_gdt(&[], 0).map_err(Dropped::Gdt)?;
        hypercall::mmuext_op(&[
            MmuextOp {
                cmd: mmuext::SET_LDT,
                ..Default::default()
            },
            MmuextOp {
                cmd: mmuext::NEW_USER_BASEPTR,
                ..Default::default()
            },
        ])
        .map_err(Dropped::LdtOrUserL4)?;
    }
    Ok(())
}
