//! Patch (a) on a patched hypervisor: VCPU 0's vcpu_info moves between pages A and B while
//! its periodic timer ticks every millisecond, VCPU 1 pings it and it notifies itself; then
//! the rule for another VCPU's registration, and unregistering.
//!
//! Each move must keep every event: the loopback notification sent just before it, then a
//! new timer tick and a new ping, all found through the new page. Right after the move the
//! new page must have the upcall flag and every selector bit set, and a time record Xen
//! updated (version even and newer, time not behind). The old page is poisoned once the
//! move has settled and must stay so while ticks and pings keep coming.

use crate::ap;
use crate::pages::{A, B, C, D, NAMES};
use crate::pump::MS;
use crate::{expect_err, Ctx};
use core::sync::atomic::Ordering;
use guestrt::println;
use kernelrt::report::{check, fail, pass, skip, Why};
use kernelrt::shared::InfoPtr;
use kernelrt::why;
use xenpv::{hypercall, VcpuTimeInfo, XenError};

/// Moves between A and B (an even number: the last one lands on A).
const MOVES: u32 = 100;
/// How long one expected event may take under QEMU's TCG.
const WAIT: u64 = 2000 * MS;

pub fn run(c: &mut Ctx) {
    // shared_info's slot went stale when VCPU 0 registered at A: its version must not change
    // until the unregistration.
    let stale = InfoPtr::slot(c.sh, 0).time_record().map(|t| t.version);
    if let Err(e) = ap::command(c.gen, ap::cmd::PING) {
        fail(
            "vcpu-info-move-events",
            format_args!("ringing VCPU 1: {}", e),
        );
    }
    move_loop(c);
    remote(c);
    check("vcpu-info-unregister", unregister(c, stale));
    check("vcpu-info-unregister-unregistered", unregister_again(c));
    check("vcpu-info-register-after-unregister", register_after(c));
    if c.nr_vcpus > 32 {
        expect_err(
            "vcpu-info-unregister-id32",
            "unregistering VCPU 32",
            hypercall::vcpu_info_unregister(32),
            XenError::Einval,
        );
    } else {
        skip(
            "vcpu-info-unregister-id32",
            format_args!(
                "the domain has {} VCPUs, none with an id of 32 or more",
                c.nr_vcpus
            ),
        );
    }
    check("vcpu-info-pings-all-seen", pings_all_seen(c));
}

/// The first failure of each per-move check.
#[derive(Default)]
struct Firsts {
    flags: Option<Why>,
    time: Option<Why>,
    quiet: Option<Why>,
}

fn move_loop(c: &mut Ctx) {
    let mut f = Firsts::default();
    let mut done = 0;
    let mut events = Ok(());
    let mut cur = A;
    for i in 0..MOVES {
        let to = if cur == A { B } else { A };
        events = one_move(c, &mut f, i, cur, to);
        if events.is_err() {
            break;
        }
        cur = to;
        done += 1;
    }
    if events.is_ok() {
        // A longer quiet spell for the page left last.
        let old = if cur == A { B } else { A };
        events = c
            .pump
            .wait_traffic("100 timer ticks after the last move", 100, 10 * WAIT);
        if let (Err(off), None) = (c.pages.poisoned(old), &f.quiet) {
            f.quiet = Some(Why::new(format_args!(
                "page {} written at offset {:#x} over 100 ticks after the last move",
                NAMES[old], off
            )));
        }
    }
    if events.is_ok() && c.pump.selfs != c.pump.self_sent {
        events = why!(
            "{} loopback notifications sent, {} seen",
            c.pump.self_sent,
            c.pump.selfs
        );
    }
    if let (Ok(()), Some(e)) = (&events, c.pump.ack_error) {
        events = why!("acking a ping: {}", e);
    }
    println!(
        "PVKEXEC-INFO xenpatch: {} moves of VCPU 0's vcpu_info: {} timer ticks, {} pings, {} of {} loopback notifications seen through the page Xen wrote",
        done, c.pump.ticks, c.pump.pings, c.pump.selfs, c.pump.self_sent
    );
    let short = |f: Option<Why>| match f {
        Some(w) => Err(w),
        None if done < MOVES => why!("only {} of {} moves ran", done, MOVES),
        None => Ok(()),
    };
    check("vcpu-info-move-events", events);
    check("vcpu-info-move-flags", short(f.flags));
    check("vcpu-info-move-time", short(f.time));
    check("vcpu-info-move-old-page-quiet", short(f.quiet));
}

fn one_move(c: &mut Ctx, f: &mut Firsts, i: u32, from: usize, to: usize) -> Result<(), Why> {
    // Flagged in the old page just before the move: the new one must carry it.
    c.pump.send_self()?;
    let before = c.pages.info(from).time_record();
    let t_before = c.pump.now();
    if let Err(e) = c.pages.register(0, to) {
        return why!(
            "move {} (page {} -> {}): VCPUOP_register_vcpu_info: {}",
            i,
            NAMES[from],
            NAMES[to],
            e
        );
    }
    c.pump.live = c.pages.info(to);
    if f.flags.is_none() {
        if let Err(w) = flagged_all(c.pump.live, "after move", i) {
            f.flags = Some(w);
        }
    }
    if f.time.is_none() {
        if let Err(w) = time_after(c, i, before, t_before) {
            f.time = Some(w);
        }
    }
    c.pump.wait(
        "the loopback notification sent before the move",
        WAIT,
        |p| p.selfs >= p.self_sent,
    )?;
    c.pump
        .wait_traffic("a timer tick and a ping after the move", 1, WAIT)?;
    // Settled: the old page is Xen's no longer.
    c.pages.poison(from);
    c.pump
        .wait_traffic("two ticks and pings with the old page poisoned", 2, WAIT)?;
    if let (Err(off), None) = (c.pages.poisoned(from), &f.quiet) {
        f.quiet = Some(Why::new(format_args!(
            "move {}: old page {} written at offset {:#x} after the move to {}",
            i, NAMES[from], off, NAMES[to]
        )));
    }
    Ok(())
}

/// Xen flags every selector word after a move (a spurious upcall), so nothing pending is
/// missed by a kernel that only looks where the flags say.
fn flagged_all(info: InfoPtr, what: &str, i: u32) -> Result<(), Why> {
    match info.flags() {
        (1, u64::MAX) => Ok(()),
        (up, sel) => why!(
            "{} {}: upcall_pending {} pending_sel {:#x} (expected 1 and every bit)",
            what,
            i,
            up,
            sel
        ),
    }
}

/// The live record right after a move: consistent, updated by Xen (version past the one
/// before), and its time not behind the time read before nor a second ahead.
fn time_after(c: &Ctx, i: u32, before: Option<VcpuTimeInfo>, t_before: u64) -> Result<(), Why> {
    let Some(t) = c.pump.live.time_record() else {
        return why!("move {}: time record odd or changing", i);
    };
    if t.tsc_to_system_mul == 0 {
        return why!("move {}: time record without a TSC scale", i);
    }
    if let Some(b) = before {
        if (t.version.wrapping_sub(b.version) as i32) <= 0 {
            return why!(
                "move {}: time version {} not past {} before the move (time not updated)",
                i,
                t.version,
                b.version
            );
        }
    }
    let now = c.pump.now();
    if now < t_before || now - t_before > 1_000_000_000 {
        return why!(
            "move {}: time {} ns after the move, {} ns before",
            i,
            now,
            t_before
        );
    }
    Ok(())
}

/// Another VCPU's registration while it runs: 4.17 keeps its rule (the calling VCPU or one
/// that is down: -EINVAL); from 4.18 Xen pauses the target and the move happens. VCPU 1 runs
/// and pings meanwhile.
fn remote(c: &mut Ctx) {
    let name = "vcpu-info-move-remote-up";
    let moved = c.pages.register(1, D);
    if c.before_4_18() {
        match (moved, hypercall::vcpu_info_unregister(1)) {
            (Err(XenError::Einval), Err(XenError::Einval)) => pass(name),
            (m, u) => fail(
                name,
                format_args!(
                    "VCPU 1 is up: moving its vcpu_info {:?}, unregistering it {:?} (4.17 refuses both with -EINVAL)",
                    m, u
                ),
            ),
        }
        return;
    }
    if let Err(e) = moved {
        fail(
            name,
            format_args!("moving running VCPU 1's vcpu_info C -> D: {}", e),
        );
        return;
    }
    ap::LIVE.store(c.pages.info(D).addr(), Ordering::Release);
    c.vcpu1_page = D;
    check(name, remote_moved(c));
}

fn remote_moved(c: &mut Ctx) -> Result<(), Why> {
    let d = c.pages.info(D);
    flagged_all(d, "VCPU 1's move to D", 0)?;
    if d.time_record().is_none_or(|t| t.tsc_to_system_mul == 0) {
        return why!("VCPU 1's time record in D is not valid");
    }
    c.pump
        .wait_traffic("a tick and a ping after VCPU 1's move", 1, WAIT)?;
    c.pages.poison(C);
    // VCPU 1 reads only shared_info's pending bits, so its flags in D are VCPU 0's to clear
    // and watch: each ack on its doorbell must show there.
    d.clear_flags();
    c.pump
        .wait_traffic("ticks and pings with C poisoned", 3, WAIT)?;
    let (up, sel) = d.flags();
    let word = c.pump.ports.doorbell1 / 64;
    if up != 1 || sel & 1 << word == 0 {
        return why!(
            "acks on VCPU 1's doorbell not flagged in D: upcall_pending {} pending_sel {:#x}",
            up,
            sel
        );
    }
    if let Err(off) = c.pages.poisoned(C) {
        return why!(
            "VCPU 1's old page C written at offset {:#x} after its move",
            off
        );
    }
    Ok(())
}

/// VCPU 0's vcpu_info back to shared_info's slot (stale until now): it carries the events and
/// the time from then on, and the page left is no longer written.
fn unregister(c: &mut Ctx, stale: Option<u32>) -> Result<(), Why> {
    let slot = InfoPtr::slot(c.sh, 0);
    let now_stale = slot.time_record().map(|t| t.version);
    if stale.is_none() || now_stale != stale {
        return why!(
            "shared_info's slot changed while VCPU 0's vcpu_info was registered elsewhere (version {:?} -> {:?})",
            stale,
            now_stale
        );
    }
    let left = page_of(c, c.pump.live).unwrap_or(A);
    c.pump.send_self()?;
    let before = c.pump.live.time_record();
    let t_before = c.pump.now();
    if let Err(e) = hypercall::vcpu_info_unregister(0) {
        return why!("unregistering VCPU 0's vcpu_info: {}", e);
    }
    c.pump.live = slot;
    flagged_all(slot, "after unregistering", 0)?;
    time_after(c, 0, before, t_before)?;
    c.pump.wait(
        "the loopback notification sent before unregistering",
        WAIT,
        |p| p.selfs >= p.self_sent,
    )?;
    c.pump
        .wait_traffic("a tick and a ping in shared_info's slot", 1, WAIT)?;
    c.pages.poison(left);
    c.pump
        .wait_traffic("ticks and pings in shared_info's slot", 3, WAIT)?;
    if let Err(off) = c.pages.poisoned(left) {
        return why!(
            "page {} written at offset {:#x} after unregistering",
            NAMES[left],
            off
        );
    }
    Ok(())
}

fn page_of(c: &Ctx, info: InfoPtr) -> Option<usize> {
    [A, B, C, D].into_iter().find(|&i| c.pages.info(i) == info)
}

/// Unregistering when nothing is registered succeeds and changes nothing.
fn unregister_again(c: &mut Ctx) -> Result<(), Why> {
    if let Err(e) = hypercall::vcpu_info_unregister(0) {
        return why!("unregistering again: {}", e);
    }
    c.pump
        .wait_traffic("ticks and pings in shared_info's slot", 2, WAIT)
}

/// A registration after the unregistration is a first registration again; then back.
fn register_after(c: &mut Ctx) -> Result<(), Why> {
    if let Err(e) = c.pages.register(0, B) {
        return why!("registering at B after unregistering: {}", e);
    }
    c.pump.live = c.pages.info(B);
    flagged_all(c.pump.live, "registering after unregistering", 0)?;
    c.pump.wait_traffic("ticks and pings through B", 2, WAIT)?;
    if let Err(e) = hypercall::vcpu_info_unregister(0) {
        return why!("unregistering B: {}", e);
    }
    c.pump.live = InfoPtr::slot(c.sh, 0);
    c.pump
        .wait_traffic("ticks and pings in shared_info's slot", 2, WAIT)
}

/// VCPU 1 stops pinging: every ping it sent was seen.
fn pings_all_seen(c: &mut Ctx) -> Result<(), Why> {
    if let Err(e) = ap::stop_pinging() {
        return why!("ringing VCPU 1: {}", e);
    }
    let gen = c.gen;
    c.pump.wait("VCPU 1 to stop pinging", WAIT, |_| {
        ap::state_is(gen, ap::st::PING_DONE)
    })?;
    c.pump.wait("the last ping", WAIT, |p| {
        p.pings >= ap::PINGS_SENT.load(Ordering::Relaxed)
    })?;
    let sent = ap::PINGS_SENT.load(Ordering::Relaxed);
    if c.pump.pings != sent {
        return why!("{} pings sent, {} seen", sent, c.pump.pings);
    }
    crate::step_errors()?;
    println!(
        "PVKEXEC-INFO xenpatch: {} pings sent by VCPU 1, all seen",
        sent
    );
    Ok(())
}
