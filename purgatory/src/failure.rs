//! Why the purgatory refuses to enter the new kernel: one value per failure, printed as the
//! last line before it crashes the domain. A leaf module: every stage returns these.

/// What went wrong, for the purgatory's last line before it crashes the domain.
pub enum Failure {
    Plan(&'static str),
    /// An AP never reached the park entry.
    ApMissing {
        vcpu: u64,
        cycles: u64,
    },
    /// An AP's cleanup step failed.
    ApStep {
        vcpu: u64,
        step: &'static str,
        errno: u32,
    },
    /// An AP did not go down on its private tables.
    ApStillUp {
        vcpu: u64,
        cycles: u64,
    },
    /// A grant entry someone still maps: it cannot be revoked.
    GrantInUse {
        grant_ref: u32,
        domid: u16,
        frame: u32,
    },
    /// The grant table is v2 and Xen would not set it back to v1.
    GrantV2 {
        err: xenpv::XenError,
    },
    Hypercall {
        call: &'static str,
        frame: u64,
        err: xenpv::XenError,
    },
    /// `VCPUOP_reset` of a VCPU that went down failed.
    VcpuReset {
        vcpu: u64,
        err: xenpv::XenError,
    },
    /// Moving VCPU 0's vcpu_info back to its shared_info slot failed.
    VcpuInfoUnregister {
        err: xenpv::XenError,
    },
    /// A piece of the ELF core header for a Linux crash kernel cannot be made.
    CoreHeader {
        what: &'static str,
        err: vmcore::Error,
    },
    /// The crashed kernel's frames make more runs than the header area has program headers.
    CoreRuns {
        capacity: u64,
    },
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Failure::Plan(why) => f.write_str(why),
            Failure::ApMissing { vcpu, cycles } => write!(
                f,
                "VCPU {vcpu} did not reach the park entry (still in the old kernel after {cycles} TSC cycles)"
            ),
            Failure::ApStep { vcpu, step, errno } => write!(
                f,
                "VCPU {vcpu}: {step} failed: {}",
                xenpv::XenError::from_errno(*errno as i64)
            ),
            Failure::GrantInUse {
                grant_ref,
                domid,
                frame,
            } => write!(
                f,
                "grant ref {grant_ref} (frame {frame:#x}, to domain {domid}) is still mapped and cannot be revoked, and no hidden frame is left for it (pvkexec build --grant-reserve N)"
            ),
            Failure::GrantV2 { err } => write!(
                f,
                "the grant table is v2 and GNTTABOP_set_version(1) failed: {err} (a grant past the reserved refs is still mapped, or the old kernel still maps its status frames)"
            ),
            Failure::ApStillUp { vcpu, cycles } => write!(
                f,
                "VCPU {vcpu} is still up {cycles} TSC cycles after it was sent to the park page"
            ),
            Failure::Hypercall { call, frame, err } => {
                write!(f, "{call} on frame {frame:#x} failed: {err}")
            }
            Failure::VcpuReset { vcpu, err } => write!(
                f,
                "vcpu_op(reset) of VCPU {vcpu} failed: {err} (it would keep the old kernel's registrations, and no new kernel could initialise it)"
            ),
            Failure::VcpuInfoUnregister { err } => write!(
                f,
                "vcpu_op(register_vcpu_info, unregister) of VCPU 0 failed: {err} (Xen would go on writing the old kernel's vcpu_info frame)"
            ),
            Failure::CoreHeader { what, err } => {
                write!(f, "the crash kernel's ELF core header: {what}: {err}")
            }
            Failure::CoreRuns { capacity } => write!(
                f,
                "the crash kernel's ELF core header: the crashed kernel's frames make more than {capacity} runs, the program headers its area holds"
            ),
        }
    }
}
