//! Bounded waits on the TSC: how long the boot VCPU waits for another VCPU, and the spin that
//! waits without hypercalls. A leaf module.

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the time-stamp counter (PV guests may execute it).
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (hi as u64) << 32 | lo as u64
}

/// TSC cycles the boot VCPU waits for another VCPU: 2^33, 2.9 s at 3 GHz, 8.6 s at 1 GHz
/// (under QEMU TCG the guest's TSC runs at the host's rate). A check reads memory and pauses:
/// waiting costs no hypercall (the VCPU waited for runs on its own physical CPU, or gets it
/// when Xen ends this one's time slice).
pub const WAIT_CYCLES: u64 = 1 << 33;

/// Spins until `done()`, for at most `cycles` TSC cycles; false if it never was.
pub fn spin_until(cycles: u64, mut done: impl FnMut() -> bool) -> bool {
    let start = rdtsc();
    loop {
        if done() {
            return true;
        }
        if rdtsc().wrapping_sub(start) > cycles {
            return done();
        }
        core::hint::spin_loop();
    }
}
