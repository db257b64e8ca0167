//! On a hypervisor without the patches: the same calls get stock Xen's answers, and the
//! premises the patched checks rely on hold (a down VCPU's registered page and single-shot
//! timer keep being written and firing; an initialised VCPU cannot be initialised again).

use crate::pages::B;
use crate::pump::MS;
use crate::{expect_err, vcpu1_down, Ctx};
use core::sync::atomic::Ordering;
use kernelrt::report::{check, fail, Why};
use kernelrt::{shared, why};
use xenpv::{hypercall, XenError};

const WAIT: u64 = 2000 * MS;

pub fn vcpu_info(c: &mut Ctx) {
    c.pages.poison(B);
    let want = if c.before_4_18() {
        XenError::Einval
    } else {
        XenError::Ebusy
    };
    expect_err(
        "stock-vcpu-info-reregister",
        "registering VCPU 0's vcpu_info again (at B)",
        c.pages.register(0, B),
        want,
    );
    check("stock-vcpu-info-stays", stays(c));
    expect_err(
        "stock-vcpu-info-unregister",
        "unregistering VCPU 0's vcpu_info",
        hypercall::vcpu_info_unregister(0),
        XenError::Einval,
    );
}

/// The refused registration left A in place: ticks come through A, B stays poisoned.
fn stays(c: &mut Ctx) -> Result<(), Why> {
    c.pump.wait_traffic("timer ticks through A", 3, WAIT)?;
    if let Err(off) = c.pages.poisoned(B) {
        return why!("page B written at offset {:#x}", off);
    }
    Ok(())
}

pub fn reset(c: &mut Ctx) {
    expect_err(
        "stock-vcpu-reset-self",
        "VCPUOP_reset of VCPU 0 by itself",
        hypercall::vcpu_reset(0),
        XenError::Enosys,
    );
    expect_err(
        "stock-vcpu-reset-up",
        "VCPUOP_reset of VCPU 1 while it is up",
        hypercall::vcpu_reset(1),
        XenError::Enosys,
    );
    // Xen looks the VCPU up before it looks at the command.
    expect_err(
        "stock-vcpu-reset-out-of-range",
        "VCPUOP_reset of VCPU nr_vcpus",
        hypercall::vcpu_reset(c.nr_vcpus),
        XenError::Enoent,
    );
    if let Err(w) = vcpu1_down(c) {
        fail(
            "stock-vcpu-reset-down",
            format_args!("taking VCPU 1 down: {}", w),
        );
        return;
    }
    expect_err(
        "stock-vcpu-reset-down",
        "VCPUOP_reset of VCPU 1 while it is down",
        hypercall::vcpu_reset(1),
        XenError::Enosys,
    );
    expect_err(
        "stock-vcpu-reinitialise",
        "VCPUOP_initialise of the down VCPU 1",
        crate::ap::initialise(c.gen + 1, c.l4_mfn),
        XenError::Eexist,
    );
    check(
        "stock-down-vcpu-events-reach-registered-page",
        events_reach(c),
    );
    check("stock-down-vcpu-singleshot-fires", singleshot_fires(c));
}

/// An event for the down VCPU 1 is flagged in the page it registered.
fn events_reach(c: &mut Ctx) -> Result<(), Why> {
    let info = c.pages.info(c.vcpu1_page);
    info.clear_flags();
    let bell = c.pump.ports.doorbell1;
    if let Err(e) = shared::send(bell) {
        return why!("EVTCHNOP_send on VCPU 1's doorbell: {}", e);
    }
    match info.flags() {
        (1, sel) if sel & 1 << (bell / 64) != 0 => Ok(()),
        (up, sel) => why!(
            "not flagged in VCPU 1's registered page: upcall_pending {} pending_sel {:#x}",
            up,
            sel
        ),
    }
}

/// The single-shot timer VCPU 1 armed before going down fires while it is down.
fn singleshot_fires(c: &mut Ctx) -> Result<(), Why> {
    let timer1 = c.pump.ports.timer1;
    shared::clear_pending(c.sh, timer1);
    let deadline = crate::ap::SSHOT_DEADLINE.load(Ordering::Relaxed) + 100 * MS;
    c.pump.wait("the single-shot timer's deadline", WAIT, |p| {
        p.now() > deadline
    })?;
    if !shared::pending(c.sh, timer1) {
        return why!("VCPU 1's VIRQ_TIMER did not fire while it was down");
    }
    Ok(())
}
