//! Every VCPU's `vcpu_info` placed in a frame of its own (`VCPUOP_register_vcpu_info`, as
//! Linux does into its per-CPU areas); the handoff lists where.

use crate::frames::Layout;
use guestrt::println;
use kernelrt::report::Why;
use kernelrt::why;
use pvhandoff::handoff::MAX_VCPUS;
use xenpv::{hypercall, vcpuop, VcpuRegisterVcpuInfo};

/// Where each VCPU's vcpu_info was placed (`Handoff::vcpu_info_va` points at it).
static mut VCPU_INFO: [VcpuRegisterVcpuInfo; MAX_VCPUS as usize] = [VcpuRegisterVcpuInfo {
    mfn: 0,
    offset: 0,
    rsvd: 0,
}; MAX_VCPUS as usize];

/// Places them before the APs are up (Xen accepts it only for the calling VCPU or one that
/// is down); returns the records' VA for the handoff.
pub fn place(l: &Layout, p2m: &[u64]) -> Result<u64, Why> {
    for k in 0..l.nr_vcpus {
        let rec = VcpuRegisterVcpuInfo {
            mfn: p2m[l.vcpu_info[k as usize] as usize],
            offset: 0,
            rsvd: 0,
        };
        // SAFETY: `rec` names a zeroed frame of ours; Xen maps it and moves VCPU k's
        // vcpu_info there. Nothing of this kernel reads shared_info's copy for timing after.
        let placed =
            unsafe { hypercall::vcpu_op(vcpuop::REGISTER_VCPU_INFO, k, &rec as *const _ as u64) };
        if let Err(e) = placed {
            return why!("VCPUOP_register_vcpu_info({}): {}", k, e);
        }
        // SAFETY: single writer before the APs run; the purgatory reads it after the jump.
        unsafe { VCPU_INFO[k as usize] = rec };
    }
    println!(
        "PVKEXEC-INFO kexec: vcpu_info of {} VCPUs placed in frames of their own",
        l.nr_vcpus
    );
    Ok(core::ptr::addr_of!(VCPU_INFO) as u64)
}
