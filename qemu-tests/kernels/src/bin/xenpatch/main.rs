//! Test kernel for pvkexec's two Xen patches (xen-patches/), run as Xen's initial domain with
//! two or more VCPUs:
//! - (a) `VCPUOP_register_vcpu_info` may move a registered vcpu_info, keeping its contents
//!   and flagging every selector word afterwards, or move it back to shared_info's slot
//!   (`mfn` = `VCPU_INFO_UNREGISTER_MFN`); `XENFEAT_vcpu_info_reregister` (21);
//! - (b) `VCPUOP_reset` resets a VCPU of the caller's that is down, so it can be initialised
//!   and run again; `XENFEAT_vcpu_reset` (22).
//!
//! On a hypervisor with the patches ([`moves`], [`reset`]) VCPU 0 moves its vcpu_info between
//! two pages a hundred times while its periodic timer ticks, VCPU 1 pings it over an IPI port
//! and it notifies itself over a loopback channel, counting every event through the vcpu_info
//! Xen writes; it unregisters it; it resets VCPU 1 twice and runs it again each time. Without
//! them ([`stock`]) it checks that the same calls get stock Xen's answers.
//!
//! Command-line words: `xenpatch.expect=patched|stock` says which hypervisor the harness booted
//! (the feature bits must agree, and that side's checks run whatever the bits say); without
//! it each side follows its feature bit.
#![no_std]
#![no_main]
// Check results carry their reason in a fixed buffer: these kernels have no heap to box it in.
#![allow(clippy::result_large_err)]

mod ap;
mod moves;
mod pages;
mod pump;
mod reset;
mod stock;

use core::sync::atomic::Ordering;
use guestrt::println;
use kernelrt::entry::{entry_regs, reg};
use kernelrt::notes::VIRT_BASE;
use kernelrt::report::{check, fail, finish, pass, Why};
use kernelrt::shared::{self, InfoPtr};
use kernelrt::view::{p2m, Region};
use kernelrt::{cmdline_value, why};
use pages::Pages;
use pump::{Ports, Pump};
use xenpv::{hypercall, virq, xenfeat, SharedInfo, StartInfo, XenError};

/// VCPU 0's periodic timer: the shortest period Xen accepts, so ticks keep coming.
const PERIOD_NS: u64 = 1_000_000;

/// What the checks share.
pub struct Ctx {
    pub sh: &'static SharedInfo,
    pub pump: Pump,
    pub pages: Pages,
    /// `major << 16 | minor`.
    pub version: u32,
    pub nr_vcpus: u32,
    pub l4_mfn: u64,
    /// VCPU 1's incarnation.
    pub gen: u64,
    /// The page holding VCPU 1's registered vcpu_info.
    pub vcpu1_page: usize,
}

impl Ctx {
    /// Xen before 4.18 keeps 4.17's rule for remote registrations and answers a second
    /// registration with -EINVAL (from 4.18 on: -EBUSY).
    pub fn before_4_18(&self) -> bool {
        self.version < (4 << 16 | 18)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Patched,
    Stock,
    Auto,
}

#[no_mangle]
extern "C" fn guest_main(si: *const StartInfo) -> ! {
    // SAFETY: Xen passes a mapped start_info page in rsi; it stays mapped and unchanged.
    let si = unsafe { &*si };
    let region = Region::from_stack_top(VIRT_BASE, entry_regs()[reg::RSP]);
    kernelrt::console_init(si, &region);
    let expect = match cmdline_value(si.cmdline(), "xenpatch.expect") {
        Some(b"patched") => Expect::Patched,
        Some(b"stock") => Expect::Stock,
        _ => Expect::Auto,
    };
    let (patched_a, patched_b) = match features(expect) {
        Ok(sides) => sides,
        Err(why) => {
            fail("xenfeat-bits", format_args!("{}", why));
            finish()
        }
    };
    let mut c = match setup(si, &region) {
        Ok(c) => c,
        Err(why) => {
            fail("setup", format_args!("{}", why));
            finish()
        }
    };
    if patched_a {
        moves::run(&mut c);
    } else {
        stock::vcpu_info(&mut c);
    }
    if patched_b {
        reset::run(&mut c);
    } else {
        stock::reset(&mut c);
    }
    finish()
}

/// The feature bits, checked against what the harness expects; which side of each patch
/// runs its patched checks.
fn features(expect: Expect) -> Result<(bool, bool), Why> {
    let bits = match hypercall::xen_features(0) {
        Ok(b) => b,
        Err(e) => return why!("XENVER_get_features(0): {}", e),
    };
    let a = bits & 1 << xenfeat::VCPU_INFO_REREGISTER != 0;
    let b = bits & 1 << xenfeat::VCPU_RESET != 0;
    println!(
        "PVKEXEC-INFO xenpatch: XENFEAT submap 0 {:#x}: vcpu_info_reregister {}, vcpu_reset {}",
        bits, a, b
    );
    match expect {
        Expect::Patched => {
            check(
                "xenfeat-bits",
                if a && b {
                    Ok(())
                } else {
                    why!(
                        "patched Xen expected, but bit 21 is {} and bit 22 is {}",
                        a,
                        b
                    )
                },
            );
            Ok((true, true))
        }
        Expect::Stock => {
            check(
                "stock-xenfeat-bits",
                if !a && !b {
                    Ok(())
                } else {
                    why!(
                        "stock Xen expected, but bit 21 is {} and bit 22 is {}",
                        a,
                        b
                    )
                },
            );
            Ok((false, false))
        }
        Expect::Auto => Ok((a, b)),
    }
}

/// VCPUs of the domain: `VCPUOP_is_up` answers -ENOENT past the last one.
fn vcpu_count() -> u32 {
    for k in 1..4096 {
        if let Err(XenError::Enoent) = hypercall::vcpu_is_up(k) {
            return k;
        }
    }
    4096
}

/// shared_info, the ports and timers, VCPU 1 up (its vcpu_info registered at C while it was
/// down) and VCPU 0's vcpu_info registered at A.
fn setup(si: &StartInfo, region: &Region) -> Result<Ctx, Why> {
    let sh = match shared::map_shared_info(si) {
        Ok(sh) => sh,
        Err(e) => return why!("mapping shared_info: {}", e),
    };
    pump::snapshot_clock(InfoPtr::slot(sh, 0))?;
    let version = match hypercall::xen_version() {
        Ok(v) => v,
        Err(e) => return why!("XENVER_version: {}", e),
    };
    let nr_vcpus = vcpu_count();
    println!(
        "PVKEXEC-INFO xenpatch: Xen {}.{}, {} VCPUs",
        version >> 16,
        version & 0xffff,
        nr_vcpus
    );
    if nr_vcpus < 2 {
        return why!("{} VCPU: these checks need at least 2", nr_vcpus);
    }
    let p2m = p2m(si);
    let pages = Pages::new(region, p2m)?;
    let l4_mfn = match region.va_pfn(si.pt_base) {
        Some(pfn) => p2m[pfn as usize],
        None => return why!("pt_base {:#x} outside the initial region", si.pt_base),
    };
    let ports = bind_ports()?;
    for port in [
        ports.timer0,
        ports.ping,
        ports.self_u,
        ports.doorbell1,
        ports.timer1,
    ] {
        // SAFETY: reads one word of the mapped shared_info page.
        let mask = unsafe { core::ptr::read_volatile(&sh.evtchn_mask[port as usize / 64]) };
        if mask & 1 << (port % 64) != 0 {
            return why!("port {} is masked: Xen would flag it in no vcpu_info", port);
        }
    }
    if let Err(e) = hypercall::vcpu_set_periodic_timer(0, PERIOD_NS) {
        return why!("VCPUOP_set_periodic_timer(0, 1 ms): {}", e);
    }
    ap::SHARED.store(sh as *const SharedInfo as u64, Ordering::Release);
    ap::TIMER1.store(ports.timer1, Ordering::Relaxed);
    ap::DOORBELL1.store(ports.doorbell1, Ordering::Relaxed);
    ap::PING.store(ports.ping, Ordering::Relaxed);
    ap::RUNSTATE_VA.store(
        pages.va(pages::R) + pages::RUNSTATE_OFFSET,
        Ordering::Relaxed,
    );
    ap::TIME_AREA_VA.store(
        pages.va(pages::R) + pages::TIME_AREA_OFFSET,
        Ordering::Relaxed,
    );
    let pump = Pump {
        sh,
        live: InfoPtr::slot(sh, 0),
        ports,
        ticks: 0,
        pings: 0,
        selfs: 0,
        self_sent: 0,
        others: 0,
        ack_error: None,
    };
    let mut c = Ctx {
        sh,
        pump,
        pages,
        version,
        nr_vcpus,
        l4_mfn,
        gen: 0,
        vcpu1_page: pages::C,
    };
    check("vcpu-info-register", register_both(&mut c));
    Ok(c)
}

fn bind_ports() -> Result<Ports, Why> {
    let timer = |k| hypercall::evtchn_bind_virq(virq::TIMER, k);
    let named = |what: &str, r: Result<u32, XenError>| match r {
        Ok(p) => Ok(p),
        Err(e) => why!("{}: {}", what, e),
    };
    let timer0 = named("EVTCHNOP_bind_virq(VIRQ_TIMER, 0)", timer(0))?;
    let timer1 = named("EVTCHNOP_bind_virq(VIRQ_TIMER, 1)", timer(1))?;
    let ping = named("EVTCHNOP_bind_ipi(0)", hypercall::evtchn_bind_ipi(0))?;
    let doorbell1 = named("EVTCHNOP_bind_ipi(1)", hypercall::evtchn_bind_ipi(1))?;
    let (self_u, self_b) = match shared::loopback_pair() {
        Ok(p) => p,
        Err(e) => return why!("loopback interdomain pair: {}", e),
    };
    println!(
        "PVKEXEC-INFO xenpatch: ports: VIRQ_TIMER {} (VCPU 0) {} (VCPU 1), ping IPI {}, VCPU 1 doorbell IPI {}, loopback {} -> {}",
        timer0, timer1, ping, doorbell1, self_b, self_u
    );
    Ok(Ports {
        timer0,
        ping,
        doorbell1,
        timer1,
        self_u,
        self_b,
    })
}

/// VCPU 1's vcpu_info at C while it is down (the first registration, from VCPU 0), VCPU 1 up
/// and set up, then VCPU 0's own at A; events then come through A.
fn register_both(c: &mut Ctx) -> Result<(), Why> {
    if let Err(e) = c.pages.register(1, pages::C) {
        return why!("VCPU 1 (down) at page C: {}", e);
    }
    ap::LIVE.store(c.pages.info(pages::C).addr(), Ordering::Release);
    start_vcpu1(c, 0)?;
    setup_vcpu1(c)?;
    if let Err(e) = c.pages.register(0, pages::A) {
        return why!("VCPU 0 at page A: {}", e);
    }
    c.pump.live = c.pages.info(pages::A);
    c.pump
        .wait_traffic("timer ticks through page A", 3, 2000 * pump::MS)?;
    Ok(())
}

/// `VCPUOP_initialise` and `VCPUOP_up` of VCPU 1's incarnation `gen`, until it has run its
/// first checks.
pub fn start_vcpu1(c: &mut Ctx, gen: u64) -> Result<(), Why> {
    if let Err(e) = ap::initialise(gen, c.l4_mfn) {
        return why!("VCPUOP_initialise(1): {}", e);
    }
    if let Err(e) = ap::up(1) {
        return why!("VCPUOP_up(1): {}", e);
    }
    c.gen = gen;
    // After a reset VCPU 1 counts its ticks for 200 ms first.
    c.pump.wait("VCPU 1 running", 5000 * pump::MS, |_| {
        ap::state_is(gen, ap::st::CHECKED)
    })
}

/// `SETUP` for VCPU 1's incarnation: areas registered, every step without error.
pub fn setup_vcpu1(c: &mut Ctx) -> Result<(), Why> {
    let gen = c.gen;
    if let Err(e) = ap::command(gen, ap::cmd::SETUP) {
        return why!("ringing VCPU 1's doorbell: {}", e);
    }
    c.pump.wait("VCPU 1 set up", 2000 * pump::MS, |_| {
        ap::state_is(gen, ap::st::READY)
    })?;
    step_errors()
}

/// VCPU 1's first failed step, if any.
pub fn step_errors() -> Result<(), Why> {
    let e = ap::STEP_ERROR.swap(0, Ordering::Relaxed);
    if e == 0 {
        return Ok(());
    }
    let step = match e >> 32 {
        1 => "VCPUOP_register_vcpu_info",
        2 => "VCPUOP_register_runstate_memory_area",
        3 => "VCPUOP_register_vcpu_time_memory_area",
        4 => "EVTCHNOP_send(ping)",
        5 => "VCPUOP_stop_periodic_timer",
        6 => "set_timer_op",
        8 => "MMUEXT_SET_LDT",
        _ => "VCPUOP_down",
    };
    why!(
        "VCPU 1: {}: {}",
        step,
        XenError::from_errno(e as u32 as i64)
    )
}

/// Takes VCPU 1 down the way it goes (periodic timer stopped, single-shot timer armed) and
/// waits until Xen says it is down.
pub fn vcpu1_down(c: &mut Ctx) -> Result<(), Why> {
    let gen = c.gen;
    if let Err(e) = ap::command(gen, ap::cmd::DOWN) {
        return why!("ringing VCPU 1's doorbell: {}", e);
    }
    c.pump.wait("VCPU 1 going down", 2000 * pump::MS, |_| {
        ap::state_is(gen, ap::st::GOING_DOWN)
    })?;
    let mut is_up = Ok(true);
    c.pump.wait("VCPU 1 down", 2000 * pump::MS, |_| {
        is_up = hypercall::vcpu_is_up(1);
        !matches!(is_up, Ok(true))
    })?;
    step_errors()?;
    match is_up {
        Ok(_) => Ok(()),
        Err(e) => why!("VCPUOP_is_up(1): {}", e),
    }
}

/// Reports `got` against the one answer expected.
pub fn expect_err(name: &str, call: &str, got: Result<(), XenError>, want: XenError) {
    match got {
        Err(e) if e == want => pass(name),
        Err(e) => fail(name, format_args!("{}: {} (expected {})", call, e, want)),
        Ok(()) => fail(
            name,
            format_args!("{}: succeeded (expected {})", call, want),
        ),
    }
}
