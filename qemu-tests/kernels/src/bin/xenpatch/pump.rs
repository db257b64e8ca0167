//! VCPU 0's events and clock. Event upcalls stay masked (no callback is registered); VCPU 0
//! finds its events the way Linux's upcall handler does, through the `vcpu_info` Xen writes
//! now ([`Pump::live`]): the upcall flag, then the selector words, then shared_info's pending
//! bits. An event whose pending bit is set but which that vcpu_info never flagged is lost to
//! such a kernel, and a wait for it times out.

use crate::ap;
use core::sync::atomic::Ordering;
use kernelrt::report::Why;
use kernelrt::shared::InfoPtr;
use kernelrt::{shared, why};
use xenpv::{hypercall, SharedInfo, VcpuTimeInfo};

/// Xen time from the snapshot taken at boot, for when no live record can be read.
static mut BOOT_CLOCK: VcpuTimeInfo = VcpuTimeInfo {
    version: 0,
    pad0: 0,
    tsc_timestamp: 0,
    system_time: 0,
    tsc_to_system_mul: 0,
    tsc_shift: 0,
    flags: 0,
    pad1: [0; 2],
};

/// Keeps a copy of `info`'s time record as the fallback clock (before any AP runs).
pub fn snapshot_clock(info: InfoPtr) -> Result<(), Why> {
    match info.time_record() {
        // SAFETY: written once by VCPU 0 before any other VCPU runs; only read afterwards.
        Some(t) if t.tsc_to_system_mul != 0 => unsafe { BOOT_CLOCK = t },
        Some(_) => return why!("VCPU 0's time record has no TSC scale"),
        None => return why!("VCPU 0's time record is never stable"),
    }
    Ok(())
}

/// Xen system time (ns) from `info`'s record, or from the boot snapshot when `info` holds no
/// readable record.
pub fn now_from(info: InfoPtr) -> u64 {
    match info.time_record() {
        Some(t) if t.tsc_to_system_mul != 0 => t.system_time_at(shared::rdtsc()),
        _ => boot_now(),
    }
}

/// Xen system time (ns) from the boot snapshot.
pub fn boot_now() -> u64 {
    // SAFETY: written before any AP ran (`snapshot_clock`), read-only since.
    unsafe { (*core::ptr::addr_of!(BOOT_CLOCK)).system_time_at(shared::rdtsc()) }
}

pub const MS: u64 = 1_000_000;

/// The ports VCPU 0 uses.
#[derive(Clone, Copy)]
pub struct Ports {
    /// VIRQ_TIMER of VCPU 0 (its periodic timer runs).
    pub timer0: u32,
    /// IPI port delivered to VCPU 0, which VCPU 1 sends its pings on.
    pub ping: u32,
    /// IPI port delivered to VCPU 1: its doorbell (commands, ping acks).
    pub doorbell1: u32,
    /// VIRQ_TIMER of VCPU 1.
    pub timer1: u32,
    /// A loopback interdomain pair: sending on `self_b` raises `self_u` on VCPU 0.
    pub self_u: u32,
    pub self_b: u32,
}

pub struct Pump {
    pub sh: &'static SharedInfo,
    /// The vcpu_info Xen writes for VCPU 0 now (shared_info's slot, or a registered one).
    pub live: InfoPtr,
    pub ports: Ports,
    pub ticks: u64,
    pub pings: u64,
    pub selfs: u64,
    pub self_sent: u64,
    pub others: u64,
    /// A ping ack that could not be sent.
    pub ack_error: Option<xenpv::XenError>,
}

impl Pump {
    pub fn now(&self) -> u64 {
        now_from(self.live)
    }

    /// Takes what the live vcpu_info flags; each ping is counted and acked on VCPU 1's
    /// doorbell.
    pub fn drain(&mut self) {
        let p = self.ports;
        let (mut t, mut pi, mut s, mut o) = (0, 0, 0, 0);
        let mine = [p.timer0, p.ping, p.self_u];
        self.live.take_events(self.sh, &mine, |port| {
            if port == p.timer0 {
                t += 1;
            } else if port == p.ping {
                pi += 1;
            } else if port == p.self_u {
                s += 1;
            } else {
                o += 1;
            }
        });
        self.ticks += t;
        self.selfs += s;
        self.others += o;
        for _ in 0..pi {
            self.pings += 1;
            if let Err(e) = shared::send(p.doorbell1) {
                self.ack_error.get_or_insert(e);
            }
        }
    }

    /// Notifies VCPU 0 itself through the loopback pair.
    pub fn send_self(&mut self) -> Result<(), Why> {
        match shared::send(self.ports.self_b) {
            Ok(()) => {
                self.self_sent += 1;
                Ok(())
            }
            Err(e) => why!("EVTCHNOP_send(loopback port {}): {}", self.ports.self_b, e),
        }
    }

    /// Pumps events until `done` holds, for at most `timeout` ns of Xen time.
    pub fn wait(
        &mut self,
        what: &str,
        timeout: u64,
        mut done: impl FnMut(&Pump) -> bool,
    ) -> Result<(), Why> {
        let start = self.now();
        loop {
            self.drain();
            if done(self) {
                return Ok(());
            }
            let now = self.now();
            if now.saturating_sub(start) > timeout {
                return Err(self.stuck(what, timeout));
            }
            // Sleeps until one of VCPU 0's ports is pending in shared_info (or 2 ms pass):
            // Xen's view, which the live vcpu_info must then show.
            let p = self.ports;
            let _ = hypercall::sched_poll(&[p.timer0, p.ping, p.self_u], now + 2 * MS);
        }
    }

    /// Waits for `n` new timer ticks and, when VCPU 1 pings, `n` new pings.
    pub fn wait_traffic(&mut self, what: &str, n: u64, timeout: u64) -> Result<(), Why> {
        let (t0, p0) = (self.ticks, self.pings);
        let pinging = ap::pinging();
        self.wait(what, timeout, |p| {
            p.ticks >= t0 + n && (!pinging || p.pings >= p0 + n)
        })
    }

    fn stuck(&self, what: &str, timeout: u64) -> Why {
        let p = self.ports;
        let (up, sel) = self.live.flags();
        Why::new(format_args!(
            "{} not within {} ms (ticks {}, pings {} of {} sent, self {} of {}; pending in shared_info: timer {} ping {} self {}; live vcpu_info upcall {} sel {:#x})",
            what,
            timeout / MS,
            self.ticks,
            self.pings,
            ap::PINGS_SENT.load(Ordering::Relaxed),
            self.selfs,
            self.self_sent,
            shared::pending(self.sh, p.timer0),
            shared::pending(self.sh, p.ping),
            shared::pending(self.sh, p.self_u),
            up,
            sel
        ))
    }
}
