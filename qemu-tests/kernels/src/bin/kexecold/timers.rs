//! Timers as a running kernel has them on every VCPU: VIRQ_TIMER bound, a 10 ms periodic timer
//! and a single-shot timer 100 ms ahead.

use core::sync::atomic::{AtomicU64, Ordering};
use kernelrt::report::Why;
use kernelrt::{shared, why};
use xenpv::{hypercall, virq, SharedInfo, StartInfo};

/// The periodic timer's period.
pub const PERIOD_NS: u64 = 10_000_000;
/// How far ahead the single-shot timer is armed.
pub const SINGLE_SHOT_AHEAD_NS: u64 = 100_000_000;

/// Where shared_info is mapped (for the APs' timers; 0 before).
static SHARED: AtomicU64 = AtomicU64::new(0);

/// Maps shared_info and starts the boot VCPU's timers; returns the VIRQ_TIMER port.
pub fn start(si: &StartInfo) -> Result<u32, Why> {
    let sh = match shared::map_shared_info(si) {
        Ok(s) => s,
        Err(e) => return why!("mapping shared_info: {}", e),
    };
    SHARED.store(sh as *const SharedInfo as u64, Ordering::Release);
    let port = match hypercall::evtchn_bind_virq(virq::TIMER, 0) {
        Ok(p) => p,
        Err(e) => return why!("binding VIRQ_TIMER: {}", e),
    };
    if let Err(e) = hypercall::vcpu_set_periodic_timer(0, PERIOD_NS) {
        return why!("VCPUOP_set_periodic_timer: {}", e);
    }
    if let Err(e) = hypercall::set_timer_op(shared::system_time_ns(sh, 0) + SINGLE_SHOT_AHEAD_NS) {
        return why!("set_timer_op: {}", e);
    }
    Ok(port)
}

/// shared_info, once [`start`] mapped it (the APs start after it did).
pub fn shared_info() -> Option<&'static SharedInfo> {
    let va = SHARED.load(Ordering::Acquire);
    // SAFETY: a non-zero SHARED is where `start` mapped shared_info; the page stays mapped.
    (va != 0).then(|| unsafe { &*(va as *const SharedInfo) })
}
