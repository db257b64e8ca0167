//! The kernel's own GDT (one per VCPU): a null descriptor and a flat data segment at DPL 3
//! (the PV kernel's ring), whose selector is loaded into DS and ES.

use core::arch::asm;
use kernelrt::report::Why;
use kernelrt::why;
use xenpv::{hypercall, XenError};

/// The data selector of the kernel's own GDT (entry 1, RPL 3).
pub const DATA_SELECTOR: u16 = (1 << 3) | 3;

/// Word `i` of a GDT frame: entry 1 is the flat DPL-3 data descriptor, the rest null.
pub fn entries(i: usize) -> u64 {
    match i {
        1 => 0x00cf_f300_0000_ffff,
        _ => 0,
    }
}

/// Installs the GDT in frame `mfn` (filled with [`entries`], mapped read-only everywhere) on
/// the calling VCPU and loads its data selector into DS and ES.
pub fn install(mfn: u64) -> Result<(), XenError> {
    // SAFETY: the frame holds a null and a flat DPL-3 data descriptor and is mapped read-only
    // everywhere; CS/SS stay Xen's flat selectors, which do not depend on the guest GDT.
    unsafe { hypercall::set_gdt(&[mfn], 2) }?;
    // SAFETY: the selector is the flat data descriptor just installed; nothing here relies on
    // DS/ES bases (64-bit mode ignores them).
    unsafe {
        asm!("mov ds, {s:e}", "mov es, {s:e}", s = in(reg) DATA_SELECTOR as u32,
             options(nostack, preserves_flags));
    }
    Ok(())
}

/// [`install`] on the boot VCPU.
pub fn load(mfn: u64) -> Result<(), Why> {
    match install(mfn) {
        Ok(()) => Ok(()),
        Err(e) => why!("set_gdt(mfn {:#x}, 2 entries): {}", mfn, e),
    }
}
