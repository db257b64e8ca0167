//! Patch (b) on a patched hypervisor: `VCPUOP_reset`'s refusals, then twice: VCPU 1 taken down
//! (periodic timer stopped, a single-shot timer armed, vcpu_info, runstate and time areas
//! registered), reset, and run again from a fresh context.
//!
//! Before the first reset VCPU 1 goes down with an LDT loaded, whose page Xen then holds as a
//! descriptor page (a writable mapping of it is refused); the reset drops that, so the page
//! can be mapped writable again.
//!
//! After each reset: `VCPUOP_up` is refused until `VCPUOP_initialise`; an event for VCPU 1 is
//! flagged in its shared_info slot, not in the page it had registered; no timer event comes
//! for it while it is down (its single-shot timer stopped, its periodic one not running); and
//! once VCPU 1 runs again, its periodic timer ticks at the default period,
//! its old vcpu_info page and its runstate and time areas stay poisoned, and it can register
//! them all again.

use crate::ap;
use crate::pages::{C, L, NAMES, R, RUNSTATE_OFFSET, TIME_AREA_OFFSET};
use crate::pump::MS;
use crate::{expect_err, setup_vcpu1, start_vcpu1, vcpu1_down, Ctx};
use core::sync::atomic::Ordering;
use guestrt::println;
use kernelrt::report::{check, fail, pass, skip, Why};
use kernelrt::shared::InfoPtr;
use kernelrt::{shared, why};
use xenpv::{hypercall, vcpuop, XenError};

const WAIT: u64 = 2000 * MS;
/// VIRQ_TIMER ticks VCPU 1 may count in its 200 ms at the default 10 ms period.
const TICKS_MIN: u64 = 5;
const TICKS_MAX: u64 = 40;

/// The checks of one round.
struct Names {
    reset: &'static str,
    up_refused: &'static str,
    slot: &'static str,
    singleshot: &'static str,
    runs: &'static str,
    timers: &'static str,
    dropped: &'static str,
    again: &'static str,
}

const ROUNDS: [Names; 2] = [
    Names {
        reset: "vcpu-reset-1",
        up_refused: "vcpu-reset-1-up-before-initialise",
        slot: "vcpu-reset-1-vcpu-info-slot",
        singleshot: "vcpu-reset-1-no-timer-while-down",
        runs: "vcpu-reset-1-runs",
        timers: "vcpu-reset-1-periodic-default",
        dropped: "vcpu-reset-1-areas-dropped",
        again: "vcpu-reset-1-register-again",
    },
    Names {
        reset: "vcpu-reset-2",
        up_refused: "vcpu-reset-2-up-before-initialise",
        slot: "vcpu-reset-2-vcpu-info-slot",
        singleshot: "vcpu-reset-2-no-timer-while-down",
        runs: "vcpu-reset-2-runs",
        timers: "vcpu-reset-2-periodic-default",
        dropped: "vcpu-reset-2-areas-dropped",
        again: "vcpu-reset-2-register-again",
    },
];

pub fn run(c: &mut Ctx) {
    expect_err(
        "vcpu-reset-self",
        "VCPUOP_reset of VCPU 0 by itself",
        hypercall::vcpu_reset(0),
        XenError::Einval,
    );
    expect_err(
        "vcpu-reset-up",
        "VCPUOP_reset of VCPU 1 while it is up",
        hypercall::vcpu_reset(1),
        XenError::Ebusy,
    );
    expect_err(
        "vcpu-reset-out-of-range",
        "VCPUOP_reset of VCPU nr_vcpus",
        hypercall::vcpu_reset(c.nr_vcpus),
        XenError::Enoent,
    );
    let ldt = prepare_ldt(c);
    if let Err(w) = vcpu1_down(c) {
        fail(ROUNDS[0].reset, format_args!("taking VCPU 1 down: {}", w));
        return;
    }
    let ldt = ldt.and_then(|()| ldt_held(c));
    let ldt_held = ldt.is_ok();
    check("vcpu-reset-ldt-held-while-down", ldt);
    let arg = 0u64;
    // SAFETY: VCPUOP_reset takes no argument; Xen must refuse a non-NULL one without using it
    // (it points at a live local either way).
    let nonnull = unsafe { hypercall::vcpu_op(vcpuop::RESET, 1, &arg as *const u64 as u64) };
    expect_err(
        "vcpu-reset-nonnull-arg",
        "VCPUOP_reset of down VCPU 1 with an argument",
        nonnull.map(drop),
        XenError::Einval,
    );
    for (i, names) in ROUNDS.iter().enumerate() {
        if round(c, i as u64 + 1, names, (i == 0).then_some(ldt_held)).is_err() {
            break;
        }
        if i + 1 < ROUNDS.len() {
            if let Err(w) = vcpu1_down(c) {
                fail(
                    ROUNDS[i + 1].reset,
                    format_args!("taking VCPU 1 down: {}", w),
                );
                break;
            }
        }
    }
    if c.nr_vcpus > 2 {
        let reset = hypercall::vcpu_reset(2);
        let up = ap::up(2);
        match (reset, up) {
            (Ok(()), Err(XenError::Einval)) => pass("vcpu-reset-never-initialised"),
            (r, u) => fail(
                "vcpu-reset-never-initialised",
                format_args!(
                    "VCPU 2 (never initialised): VCPUOP_reset {:?} (expected Ok), then VCPUOP_up {:?} (expected EINVAL)",
                    r, u
                ),
            ),
        }
    } else {
        skip(
            "vcpu-reset-never-initialised",
            format_args!("the domain has no VCPU 2"),
        );
    }
}

/// A flat data descriptor, present, DPL 3, accessed (so loading it writes nothing).
const LDT_DESCRIPTOR: u64 = 0x00cf_f300_0000_ffff;

/// Page L gets one descriptor and is mapped read-only (Xen types only pages without writable
/// mappings as descriptor pages); VCPU 1 loads it as its LDT when it next goes down.
fn prepare_ldt(c: &Ctx) -> Result<(), Why> {
    c.pages.write_descriptor(L, LDT_DESCRIPTOR);
    if let Err(e) = c.pages.remap(L, false) {
        return why!("mapping page L read-only: {}", e);
    }
    ap::LDT_VA.store(c.pages.va(L), Ordering::Release);
    Ok(())
}

/// While VCPU 1 is down with its LDT loaded, Xen refuses a writable mapping of the LDT page:
/// the check after the reset can fail.
fn ldt_held(c: &Ctx) -> Result<(), Why> {
    match c.pages.remap(L, true) {
        Err(_) => Ok(()),
        Ok(()) => why!(
            "Xen let page L be mapped writable while down VCPU 1 had it as its LDT: the LDT was never mapped"
        ),
    }
}

/// After the reset the LDT page is an ordinary page again: it can be mapped writable.
fn ldt_dropped(c: &Ctx) -> Result<(), Why> {
    match c.pages.remap(L, true) {
        Ok(()) => Ok(()),
        Err(e) => why!(
            "mapping page L writable after the reset: {} (the reset VCPU's LDT still holds it)",
            e
        ),
    }
}

/// One reset of VCPU 1 (down) and its next incarnation `gen`; `Err` ends the rounds. `ldt`:
/// whether VCPU 1 went down holding an LDT (checked after this reset).
fn round(c: &mut Ctx, gen: u64, n: &Names, ldt: Option<bool>) -> Result<(), ()> {
    let former = c.vcpu1_page;
    let resumed = ap::RESUMED.load(Ordering::Relaxed);
    if let Err(e) = hypercall::vcpu_reset(1) {
        fail(n.reset, format_args!("VCPUOP_reset of down VCPU 1: {}", e));
        return Err(());
    }
    pass(n.reset);
    match ldt {
        Some(true) => check("vcpu-reset-ldt-dropped", ldt_dropped(c)),
        Some(false) => fail(
            "vcpu-reset-ldt-dropped",
            format_args!("no LDT was held before the reset"),
        ),
        None => {}
    }
    let slot = InfoPtr::slot(c.sh, 1);
    let timer1 = c.pump.ports.timer1;
    // From here on Xen must write neither VCPU 1's former vcpu_info page nor its areas.
    c.pages.poison(former);
    c.pages.poison(R);
    slot.clear_flags();
    // No event callback is registered: the fresh context must start with upcalls masked.
    slot.mask_upcalls();
    shared::clear_pending(c.sh, timer1);
    match ap::up(1) {
        Err(XenError::Einval) => pass(n.up_refused),
        other => fail(
            n.up_refused,
            format_args!(
                "VCPUOP_up of the reset VCPU 1 before VCPUOP_initialise: {:?} (expected EINVAL)",
                other
            ),
        ),
    }
    check(n.slot, event_in_slot(c, slot, former));
    check(n.singleshot, no_timer_while_down(c));
    ap::LIVE.store(slot.addr(), Ordering::Release);
    ap::SELF_VI_MFN.store(c.pages.mfn[C], Ordering::Relaxed);
    ap::SELF_VI_OFFSET.store(c.pages.info(C).addr() - c.pages.va(C), Ordering::Relaxed);
    ap::SELF_VI_VA.store(c.pages.info(C).addr(), Ordering::Relaxed);
    if let Err(w) = start_vcpu1(c, gen) {
        fail(n.runs, format_args!("{}", w));
        return Err(());
    }
    let resumed_now = ap::RESUMED.load(Ordering::Relaxed);
    check(
        n.runs,
        if resumed_now == resumed {
            Ok(())
        } else {
            why!("the context VCPU 1 went down in was resumed too")
        },
    );
    check(n.timers, timers_after_reset());
    check(n.dropped, areas_dropped(c, former));
    check(n.again, register_again(c));
    c.vcpu1_page = C;
    Ok(())
}

/// An event for the reset VCPU 1 (on its doorbell) is flagged in shared_info's slot, and its
/// former page stays poisoned.
fn event_in_slot(c: &mut Ctx, slot: InfoPtr, former: usize) -> Result<(), Why> {
    let bell = c.pump.ports.doorbell1;
    if let Err(e) = shared::send(bell) {
        return why!("EVTCHNOP_send on VCPU 1's doorbell: {}", e);
    }
    let (up, sel) = slot.flags();
    if up != 1 || sel & 1 << (bell / 64) == 0 {
        return why!(
            "an event for VCPU 1 not flagged in its shared_info slot: upcall_pending {} pending_sel {:#x}",
            up,
            sel
        );
    }
    if let Err(off) = c.pages.poisoned(former) {
        return why!(
            "VCPU 1's former vcpu_info page {} written at offset {:#x}",
            NAMES[former],
            off
        );
    }
    Ok(())
}

/// A reset VCPU that is down gets no timer events, as one never brought up: VCPU 1's
/// single-shot timer (armed before it went down) must not fire, and its periodic timer, back
/// at its default period, runs only once the VCPU does (Xen stops a VCPU's periodic timer
/// when it switches away from it). Each VIRQ_TIMER event until past the single-shot's
/// deadline is counted, to name which timer ran.
fn no_timer_while_down(c: &mut Ctx) -> Result<(), Why> {
    let deadline = ap::SSHOT_DEADLINE.load(Ordering::Relaxed);
    let timer1 = c.pump.ports.timer1;
    let (sh, start) = (c.sh, c.pump.now());
    let (mut events, mut first, mut last) = (0u64, 0u64, 0u64);
    c.pump.wait("the single-shot timer's deadline", WAIT, |p| {
        let now = p.now();
        if shared::pending(sh, timer1) {
            shared::clear_pending(sh, timer1);
            if events == 0 {
                first = now;
            }
            last = now;
            events += 1;
        }
        now > deadline + 100 * MS
    })?;
    match events {
        0 => Ok(()),
        1 if first + 50 * MS >= deadline => why!(
            "the single-shot timer VCPU 1 armed before it went down fired after the reset"
        ),
        n => why!(
            "{} VIRQ_TIMER events for down VCPU 1 in {} ms after the reset (first +{} ms, last +{} ms, single-shot due +{} ms): a timer runs",
            n,
            (deadline + 100 * MS).saturating_sub(start) / MS,
            first.saturating_sub(start) / MS,
            last.saturating_sub(start) / MS,
            deadline.saturating_sub(start) / MS
        ),
    }
}

/// What the fresh incarnation found: its slot's time record valid, and the periodic timer
/// back at its default (stopped before the reset).
fn timers_after_reset() -> Result<(), Why> {
    match ap::SLOT_TIME.load(Ordering::Relaxed) {
        0 => {}
        1 => return why!("VCPU 1's shared_info slot has no stable time record"),
        _ => return why!("VCPU 1's shared_info slot has a time record without a TSC scale"),
    }
    let ticks = ap::TICKS.load(Ordering::Relaxed);
    println!(
        "PVKEXEC-INFO xenpatch: VCPU 1 after the reset: {} VIRQ_TIMER ticks in 200 ms",
        ticks
    );
    if !(TICKS_MIN..=TICKS_MAX).contains(&ticks) {
        return why!(
            "{} VIRQ_TIMER ticks in VCPU 1's first 200 ms (the default 10 ms period gives ~20)",
            ticks
        );
    }
    Ok(())
}

/// VCPU 1 ran for 200 ms after the reset: Xen wrote neither its former vcpu_info page nor its
/// runstate and time areas.
fn areas_dropped(c: &Ctx, former: usize) -> Result<(), Why> {
    for page in [former, R] {
        if let Err(off) = c.pages.poisoned(page) {
            return why!(
                "page {} written at offset {:#x} while the reset VCPU 1 ran",
                NAMES[page],
                off
            );
        }
    }
    Ok(())
}

/// VCPU 1 registers its vcpu_info (at C), runstate and time areas again, and Xen writes them.
fn register_again(c: &mut Ctx) -> Result<(), Why> {
    setup_vcpu1(c)?;
    if c.pages
        .info(C)
        .time_record()
        .is_none_or(|t| t.tsc_to_system_mul == 0)
    {
        return why!("no valid time record in VCPU 1's vcpu_info at C");
    }
    let areas = [
        ("runstate area", RUNSTATE_OFFSET as usize, 48),
        ("time area", TIME_AREA_OFFSET as usize, 32),
    ];
    for (what, off, len) in areas {
        if c.pages.range_poisoned(R, off, len).is_ok() {
            return why!("Xen did not write VCPU 1's {} when it was registered", what);
        }
    }
    Ok(())
}
