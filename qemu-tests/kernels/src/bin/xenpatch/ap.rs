//! VCPU 1, driven by VCPU 0 through atomics and its doorbell port. Each incarnation (`gen`,
//! 0 at the first `VCPUOP_initialise`, then one more after each `VCPUOP_reset`) runs from a
//! fresh context:
//! 1. after a reset, checks what it finds: its shared_info slot holds a valid time record,
//!    and VIRQ_TIMER ticks at the default period while it runs (its previous life stopped
//!    the periodic timer, so ticks mean the reset restored it);
//! 2. on `SETUP`: registers its vcpu_info (when told where), runstate and time areas;
//! 3. on `PING`: sends VCPU 0 a ping and waits for the ack on its doorbell, until told to
//!    stop;
//! 4. on `DOWN`: loads an LDT when told where ([`LDT_VA`]: Xen then maps it and types its
//!    page), stops its periodic timer, arms a single-shot timer and takes itself down, as
//!    Linux's CPU offlining does. Should Xen ever resume this context, it counts it
//!    ([`RESUMED`]) and goes down again.
//!
//! VCPU 1 prints nothing: VCPU 0 reports what it recorded.

use crate::pump::{boot_now, now_from, MS};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernelrt::shared::{self, InfoPtr};
use xenpv::{
    hypercall, selector, vcpuop, vgcf, SharedInfo, VcpuGuestContext, VcpuRegisterArea, XenError,
};

/// VCPU 1's stack (VCPU 0 has the boot stack; no other VCPU runs).
const AP_STACK: usize = 16384;
#[repr(C, align(4096))]
struct ApStack([u8; AP_STACK]);
static mut AP_STACK_1: ApStack = ApStack([0; AP_STACK]);

/// States VCPU 1 reports (`gen << 8 | state`).
pub mod st {
    pub const CHECKED: u64 = 1;
    pub const READY: u64 = 2;
    pub const PING_DONE: u64 = 3;
    pub const GOING_DOWN: u64 = 4;
}
/// Commands VCPU 0 gives (`gen << 8 | cmd`), in this order within an incarnation.
pub mod cmd {
    pub const SETUP: u64 = 1;
    pub const PING: u64 = 2;
    pub const DOWN: u64 = 3;
}

pub static STATE: AtomicU64 = AtomicU64::new(0);
static CMD: AtomicU64 = AtomicU64::new(0);
static STOP_PING: AtomicBool = AtomicBool::new(true);
pub static PINGS_SENT: AtomicU64 = AtomicU64::new(0);
/// How often a context that went down was resumed (VCPUOP_up without re-initialising).
pub static RESUMED: AtomicU64 = AtomicU64::new(0);
/// The first failed step of an incarnation: `step << 32 | errno` (0 = none).
pub static STEP_ERROR: AtomicU64 = AtomicU64::new(0);
/// After a reset: 0 the slot's time record is valid, 1 never stable, 2 no TSC scale.
pub static SLOT_TIME: AtomicU64 = AtomicU64::new(0);
/// After a reset: VIRQ_TIMER ticks seen in [`TICK_WINDOW`].
pub static TICKS: AtomicU64 = AtomicU64::new(0);
/// Absolute Xen time of the single-shot timer armed before going down.
pub static SSHOT_DEADLINE: AtomicU64 = AtomicU64::new(0);

/// Set by VCPU 0 before each incarnation runs.
pub static SHARED: AtomicU64 = AtomicU64::new(0);
/// VA of the vcpu_info Xen writes for VCPU 1 (its clock).
pub static LIVE: AtomicU64 = AtomicU64::new(0);
/// Where `SETUP` registers VCPU 1's vcpu_info itself (MFN 0: it does not).
pub static SELF_VI_MFN: AtomicU64 = AtomicU64::new(0);
pub static SELF_VI_OFFSET: AtomicU64 = AtomicU64::new(0);
/// Its VA (VCPU 1's clock once registered).
pub static SELF_VI_VA: AtomicU64 = AtomicU64::new(0);
pub static RUNSTATE_VA: AtomicU64 = AtomicU64::new(0);
pub static TIME_AREA_VA: AtomicU64 = AtomicU64::new(0);
/// Where `DOWN` loads an LDT of one descriptor from (0: it does not).
pub static LDT_VA: AtomicU64 = AtomicU64::new(0);
/// Selector of LDT entry 0 (TI set, RPL 3: a 64-bit PV kernel runs in ring 3).
const LDT_SELECTOR: u16 = 0x7;
pub static TIMER1: AtomicU32 = AtomicU32::new(0);
pub static DOORBELL1: AtomicU32 = AtomicU32::new(0);
pub static PING: AtomicU32 = AtomicU32::new(0);

/// How long after a reset VCPU 1 counts timer ticks.
pub const TICK_WINDOW: u64 = 200 * MS;
/// How far ahead the single-shot timer is armed before going down.
pub const SSHOT_AHEAD: u64 = 300 * MS;

pub fn pinging() -> bool {
    !STOP_PING.load(Ordering::Relaxed)
}

fn sh() -> &'static SharedInfo {
    // SAFETY: VCPU 0 stores where it mapped shared_info before any AP runs; it stays mapped.
    unsafe { &*(SHARED.load(Ordering::Acquire) as *const SharedInfo) }
}

fn now() -> u64 {
    match LIVE.load(Ordering::Acquire) {
        0 => boot_now(),
        // SAFETY: LIVE only ever holds the address of an `InfoPtr` (shared_info's slot or one
        // of this kernel's vcpu_info pages).
        va => now_from(unsafe { InfoPtr::new(va as *mut xenpv::VcpuInfo) }),
    }
}

fn record(step: u64, e: XenError) {
    let _ = STEP_ERROR.compare_exchange(
        0,
        step << 32 | e.errno() as u64,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
}

// The AP's first instructions: CR0.TS cleared, then Rust with the VCPU id and incarnation.
core::arch::global_asm!(
    concat!(
        r#"
    .text
    .globl xenpatch_ap_entry
xenpatch_ap_entry:
    mov rbx, rdi
    mov r12, rsi
"#,
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../kernelrt/src/clear_ts.S")),
        r#"
    mov rdi, rbx
    mov rsi, r12
    call xenpatch_ap_main
2:  ud2
    jmp 2b
    "#
    ),
    fpu_taskswitch = const xenpv::hc::FPU_TASKSWITCH,
);

extern "C" {
    fn xenpatch_ap_entry();
}

/// `VCPUOP_initialise` of VCPU 1 with a fresh context: `xenpatch_ap_entry` on its own stack,
/// in the boot page tables (L4 `l4_mfn`), no callbacks.
pub fn initialise(gen: u64, l4_mfn: u64) -> Result<(), XenError> {
    let k = 1;
    // SAFETY: all-zero is a valid vcpu_guest_context (no FPU state, no traps, no LDT).
    let mut ctx: VcpuGuestContext = unsafe { core::mem::zeroed() };
    // Only VCPU 1 runs on this stack, and an earlier incarnation is down (and reset) when a
    // new one is initialised on it.
    let top = core::ptr::addr_of!(AP_STACK_1) as u64 + AP_STACK as u64;
    ctx.flags = vgcf::IN_KERNEL;
    ctx.user_regs.rip = xenpatch_ap_entry as *const () as u64;
    ctx.user_regs.rsp = top;
    ctx.user_regs.rdi = k as u64;
    ctx.user_regs.rsi = gen;
    ctx.user_regs.cs = selector::FLAT_KERNEL_CS;
    ctx.user_regs.ss = selector::FLAT_KERNEL_SS;
    ctx.kernel_ss = selector::FLAT_KERNEL_SS as u64;
    ctx.kernel_sp = top;
    ctx.ctrlreg[3] = l4_mfn << 12;
    // SAFETY: `ctx` is a complete context on this kernel's tables and VCPU 1's own stack; the
    // VCPU runs `xenpatch_ap_main`, which touches only atomics and its own ports.
    unsafe { hypercall::vcpu_op(vcpuop::INITIALISE, k, &ctx as *const _ as u64) }.map(drop)
}

/// `VCPUOP_up`.
pub fn up(k: u32) -> Result<(), XenError> {
    // SAFETY: takes no argument; the VCPU runs the context it was initialised with.
    unsafe { hypercall::vcpu_op(vcpuop::UP, k, 0) }.map(drop)
}

/// Gives VCPU 1 command `c` of incarnation `gen` and rings its doorbell.
pub fn command(gen: u64, c: u64) -> Result<(), XenError> {
    if c == cmd::PING {
        STOP_PING.store(false, Ordering::Relaxed);
    }
    CMD.store(gen << 8 | c, Ordering::Release);
    shared::send(DOORBELL1.load(Ordering::Relaxed))
}

/// Tells VCPU 1 to stop pinging.
pub fn stop_pinging() -> Result<(), XenError> {
    STOP_PING.store(true, Ordering::Release);
    shared::send(DOORBELL1.load(Ordering::Relaxed))
}

pub fn state_is(gen: u64, s: u64) -> bool {
    STATE.load(Ordering::Acquire) == gen << 8 | s
}

/// Sleeps on the doorbell until `done` holds (the doorbell is cleared before each look, so
/// a ring between the look and the sleep is not lost).
fn wait_doorbell(done: impl Fn() -> bool) {
    let port = DOORBELL1.load(Ordering::Relaxed);
    loop {
        shared::clear_pending(sh(), port);
        if done() {
            return;
        }
        let _ = hypercall::sched_poll(&[port], 0);
    }
}

/// The next command of incarnation `gen` after `after`.
fn next_command(gen: u64, after: u64) -> u64 {
    let newer = || {
        let c = CMD.load(Ordering::Acquire);
        c >> 8 == gen && c & 0xff > after
    };
    wait_doorbell(newer);
    CMD.load(Ordering::Acquire) & 0xff
}

#[no_mangle]
extern "C" fn xenpatch_ap_main(k: u64, gen: u64) -> ! {
    let k = k as u32;
    if gen > 0 {
        check_after_reset(k);
    }
    STATE.store(gen << 8 | st::CHECKED, Ordering::Release);
    next_command(gen, 0);
    setup(k);
    STATE.store(gen << 8 | st::READY, Ordering::Release);
    let mut c = next_command(gen, cmd::SETUP);
    if c == cmd::PING {
        ping_until_stopped();
        STATE.store(gen << 8 | st::PING_DONE, Ordering::Release);
        c = next_command(gen, cmd::PING);
    }
    if c == cmd::DOWN {
        go_down(k, gen);
    }
    loop {
        let _ = hypercall::sched_poll(&[], 0);
    }
}

/// What a fresh incarnation finds after a reset: a valid time record in its shared_info
/// slot, and the periodic timer's ticks.
fn check_after_reset(k: u32) {
    let code = match InfoPtr::slot(sh(), k as usize).time_record() {
        None => 1,
        Some(t) if t.tsc_to_system_mul == 0 => 2,
        Some(_) => 0,
    };
    SLOT_TIME.store(code, Ordering::Relaxed);
    // Xen runs a VCPU's periodic timer only while the VCPU runs (a context switch away stops
    // it), so VCPU 1 stays busy while it counts instead of blocking.
    let port = TIMER1.load(Ordering::Relaxed);
    let start = now();
    let mut ticks = 0;
    shared::clear_pending(sh(), port);
    while now() < start + TICK_WINDOW {
        if shared::pending(sh(), port) {
            shared::clear_pending(sh(), port);
            ticks += 1;
        }
        core::hint::spin_loop();
    }
    TICKS.store(ticks, Ordering::Relaxed);
}

/// vcpu_info (when asked), runstate and time areas, as a kernel registers them for a CPU.
fn setup(k: u32) {
    let mfn = SELF_VI_MFN.load(Ordering::Relaxed);
    if mfn != 0 {
        let rec = xenpv::VcpuRegisterVcpuInfo {
            mfn,
            offset: SELF_VI_OFFSET.load(Ordering::Relaxed) as u32,
            rsvd: 0,
        };
        // SAFETY: `rec` names a bss page of this kernel set aside for VCPU 1's vcpu_info.
        match unsafe { hypercall::vcpu_op(vcpuop::REGISTER_VCPU_INFO, k, &rec as *const _ as u64) }
        {
            Ok(_) => LIVE.store(SELF_VI_VA.load(Ordering::Relaxed), Ordering::Release),
            Err(e) => record(1, e),
        }
    }
    let areas = [
        (
            vcpuop::REGISTER_RUNSTATE_MEMORY_AREA,
            RUNSTATE_VA.load(Ordering::Relaxed),
            2,
        ),
        (
            vcpuop::REGISTER_VCPU_TIME_MEMORY_AREA,
            TIME_AREA_VA.load(Ordering::Relaxed),
            3,
        ),
    ];
    for (op, addr, step) in areas {
        let area = VcpuRegisterArea { addr };
        // SAFETY: the area lies in page R of this kernel's bss, set aside for it; Xen writes
        // a runstate record or a time record there.
        if let Err(e) = unsafe { hypercall::vcpu_op(op, k, &area as *const _ as u64) } {
            record(step, e);
        }
    }
}

/// Pings VCPU 0 and waits for each ack until told to stop.
fn ping_until_stopped() {
    let (ping, bell) = (
        PING.load(Ordering::Relaxed),
        DOORBELL1.load(Ordering::Relaxed),
    );
    while pinging() {
        PINGS_SENT.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = shared::send(ping) {
            record(4, e);
            return;
        }
        loop {
            if shared::pending(sh(), bell) {
                shared::clear_pending(sh(), bell);
                break;
            }
            if !pinging() {
                break;
            }
            let _ = hypercall::sched_poll(&[bell], 0);
        }
    }
}

/// `MMUEXT_SET_LDT` at `va` (one entry), then ES loaded from it: Xen maps the LDT page on
/// that first use and holds a descriptor-page type reference on it.
fn load_ldt(va: u64) {
    let op = xenpv::MmuextOp {
        cmd: xenpv::mmuext::SET_LDT,
        _pad: 0,
        arg1: va,
        arg2: 1,
    };
    // SAFETY: `va` is page L of this kernel, mapped read-only, holding one valid flat data
    // descriptor; the LDT affects only segment loads that name it.
    if let Err(e) = unsafe { hypercall::mmuext_op(&[op]) } {
        record(8, e);
        return;
    }
    // SAFETY: LDT entry 0 is a present flat data segment of DPL 3 with its accessed bit set
    // (no write to the read-only page); ES is unused by this kernel in 64-bit mode.
    unsafe {
        core::arch::asm!("mov es, {0:x}", in(reg) LDT_SELECTOR, options(nostack, preserves_flags))
    };
}

/// Stops the periodic timer, arms a single-shot one and takes VCPU `k` down.
fn go_down(k: u32, gen: u64) -> ! {
    let ldt = LDT_VA.swap(0, Ordering::AcqRel);
    if ldt != 0 {
        load_ldt(ldt);
    }
    if let Err(e) = hypercall::vcpu_stop_periodic_timer(k) {
        record(5, e);
    }
    let deadline = now() + SSHOT_AHEAD;
    SSHOT_DEADLINE.store(deadline, Ordering::Relaxed);
    if let Err(e) = hypercall::set_timer_op(deadline) {
        record(6, e);
    }
    STATE.store(gen << 8 | st::GOING_DOWN, Ordering::Release);
    loop {
        match hypercall::vcpu_down(k) {
            // Back only if Xen resumed this context.
            Ok(()) => {
                RESUMED.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                record(7, e);
                loop {
                    let _ = hypercall::sched_poll(&[], 0);
                }
            }
        }
    }
}
