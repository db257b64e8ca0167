//! The APs: brought up with `VCPUOP_initialise` on their own stack and GDT, with VIRQ_TIMER
//! bound, a periodic and a single-shot timer running and an NMI callback registered; then
//! they sleep. At the kexec each AP gets `VCPUOP_send_nmi`, and its NMI handler leaves for
//! the purgatory's AP entry through `HYPERVISOR_iret`.
//!
//! A kernel without NMI callbacks (`kexec_ap_stop=ipi`): the APs register none and sleep in
//! `SCHEDOP_poll` on their own IPI port only; at the kexec each gets an event on that port
//! (`EVTCHNOP_send`), wakes, finds the port pending in the FIFO event array and jumps to the
//! purgatory's AP entry from its normal context.

use crate::frames::Layout;
use crate::{events, gdt, timers};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use guestrt::println;
use kernelrt::report::Why;
use kernelrt::{shared, why};
use pvhandoff::handoff::MAX_VCPUS;
use xenpv::{
    callback, evtchn, hypercall, selector, vcpuop, vgcf, virq, CallbackRegister, VcpuGuestContext,
    XenError,
};

const MAX_APS: usize = MAX_VCPUS as usize;
const AP_STACK: usize = 16384;
#[repr(C, align(4096))]
struct ApStacks([[u8; AP_STACK]; MAX_APS]);
static mut AP_STACKS: ApStacks = ApStacks([[0; AP_STACK]; MAX_APS]);
/// APs that finished their setup; per AP, 0 or the step and errno of its failed step.
static AP_READY: AtomicU32 = AtomicU32::new(0);
static AP_ERROR: [AtomicU64; MAX_APS] = [const { AtomicU64::new(0) }; MAX_APS];
static AP_GDT: [AtomicU64; MAX_APS] = [const { AtomicU64::new(0) }; MAX_APS];
/// The purgatory's AP entry once the kexec starts (0 before).
static KEXEC_GO: AtomicU64 = AtomicU64::new(0);
/// The handoff block the APs pass on (in rdi), set before [`KEXEC_GO`].
static KEXEC_BLOCK: AtomicU64 = AtomicU64::new(0);
/// A VCPU that ignores the kexec (fault injection; 0 = none).
static STUCK: AtomicU64 = AtomicU64::new(0);
/// The APs are stopped by an IPI each, not an NMI (`kexec_ap_stop=ipi`).
static STOP_BY_IPI: AtomicBool = AtomicBool::new(false);
/// Each VCPU's IPI port (0 until bound).
static IPI_PORT: [AtomicU32; MAX_APS] = [const { AtomicU32::new(0) }; MAX_APS];
/// PENDING in a FIFO event word.
const FIFO_PENDING: u32 = 1 << evtchn::FIFO_PENDING;

/// VCPUs of the domain: `VCPUOP_is_up` answers -ENOENT past the last one.
pub fn count() -> u32 {
    for k in 1..MAX_VCPUS as u32 {
        if let Err(XenError::Enoent) = hypercall::vcpu_is_up(k) {
            return k;
        }
    }
    MAX_VCPUS as u32
}

/// An IPI port per VCPU, bound before the APs start so each AP knows its port
/// (EVTCHNOP_bind_ipi accepts a VCPU that is not up yet).
pub fn bind_ipis(nr_vcpus: u32) -> Result<(), Why> {
    for k in 0..nr_vcpus {
        match hypercall::evtchn_bind_ipi(k) {
            Ok(port) if port < 1024 => IPI_PORT[k as usize].store(port, Ordering::Release),
            Ok(port) => return why!("IPI port {} of VCPU {} past the event-array page", port, k),
            Err(e) => return why!("EVTCHNOP_bind_ipi(VCPU {}): {}", k, e),
        }
    }
    Ok(())
}

/// A kernel without NMI callbacks: the APs will be stopped by IPI.
pub fn stop_by_ipi() {
    STOP_BY_IPI.store(true, Ordering::Relaxed);
    println!("PVKEXEC-INFO kexec: no NMI callbacks: APs will be stopped by IPI");
}

// An AP's first instructions: CR0.TS cleared, then Rust with the VCPU id in rdi.
core::arch::global_asm!(
    concat!(
        r#"
    .text
    .globl kexecold_ap_entry
kexecold_ap_entry:
    mov rbx, rdi
"#,
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../kernelrt/src/clear_ts.S")),
        r#"
    mov rdi, rbx
    call kexecold_ap_main
2:  ud2
    jmp 2b
    "#
    ),
    fpu_taskswitch = const xenpv::hc::FPU_TASKSWITCH,
);

extern "C" {
    fn kexecold_ap_entry();
}

/// Brings VCPUs `1..nr_vcpus` up on the kernel's tables (L4 `l4_mfn`) and waits until each
/// has its GDT, VIRQ_TIMER and timers; with `stuck`, VCPU 1 will ignore the kexec.
pub fn start(l4_mfn: u64, l: &Layout, p2m: &[u64], stuck: bool) -> Result<(), Why> {
    if stuck {
        STUCK.store(1, Ordering::Relaxed);
        println!("PVKEXEC-INFO kexec: fault injected: VCPU 1 will ignore the kexec");
    }
    for k in 1..l.nr_vcpus {
        AP_GDT[k as usize].store(p2m[l.ap_gdt[k as usize] as usize], Ordering::Relaxed);
        initialise(k, l4_mfn)?;
    }
    wait_until_ready(l.nr_vcpus)?;
    println!(
        "PVKEXEC-INFO kexec: VCPUs 1..{} up with their own GDT, VIRQ_TIMER and running timers",
        l.nr_vcpus - 1
    );
    Ok(())
}

/// `VCPUOP_initialise` and `VCPUOP_up` of AP `k` at `kexecold_ap_entry` on its own stack.
fn initialise(k: u32, l4_mfn: u64) -> Result<(), Why> {
    // SAFETY: all-zero is a valid vcpu_guest_context (no FPU state, no traps, no LDT).
    let mut ctx: VcpuGuestContext = unsafe { core::mem::zeroed() };
    // SAFETY: taking the address of AP k's stack, which only AP k uses.
    let top = unsafe { core::ptr::addr_of!(AP_STACKS.0[k as usize]) as u64 } + AP_STACK as u64;
    ctx.flags = vgcf::IN_KERNEL;
    ctx.user_regs.rip = kexecold_ap_entry as *const () as u64;
    ctx.user_regs.rsp = top;
    ctx.user_regs.rdi = k as u64;
    ctx.user_regs.cs = selector::FLAT_KERNEL_CS;
    ctx.user_regs.ss = selector::FLAT_KERNEL_SS;
    ctx.kernel_ss = selector::FLAT_KERNEL_SS as u64;
    ctx.kernel_sp = top;
    ctx.ctrlreg[3] = l4_mfn << 12;
    // SAFETY: `ctx` is a complete context for VCPU k on the kernel's own tables and stack;
    // the AP runs `kexecold_ap_main`, which touches only its own state and atomics.
    let up = unsafe {
        hypercall::vcpu_op(vcpuop::INITIALISE, k, &ctx as *const _ as u64)
            .and_then(|_| hypercall::vcpu_op(vcpuop::UP, k, 0))
    };
    if let Err(e) = up {
        return why!("VCPUOP_initialise/up of VCPU {}: {}", k, e);
    }
    Ok(())
}

/// Yields until every AP reported, then names the first that failed a step.
fn wait_until_ready(nr_vcpus: u32) -> Result<(), Why> {
    let mut yields = 0u64;
    while AP_READY.load(Ordering::Acquire) < nr_vcpus - 1 {
        yields += 1;
        if yields > 1_000_000 {
            return why!(
                "only {} of {} APs came up",
                AP_READY.load(Ordering::Relaxed),
                nr_vcpus - 1
            );
        }
        let _ = hypercall::sched_yield();
    }
    for (k, e) in AP_ERROR.iter().enumerate().take(nr_vcpus as usize).skip(1) {
        let e = e.load(Ordering::Relaxed);
        if e != 0 {
            return why!(
                "VCPU {} setup: step {} failed with errno {}",
                k,
                e >> 32,
                e as u32
            );
        }
    }
    Ok(())
}

/// An AP's life: its GDT, VIRQ_TIMER, timers and NMI callback (each step's failure recorded
/// for the boot VCPU), then asleep until the kexec.
#[no_mangle]
extern "C" fn kexecold_ap_main(vcpu: u64) -> ! {
    let k = vcpu as usize;
    let err = |step: u64, e: XenError| {
        AP_ERROR[k].store(step << 32 | e.errno() as u64, Ordering::Relaxed);
    };
    if let Err(e) = gdt::install(AP_GDT[k].load(Ordering::Relaxed)) {
        err(1, e);
    }
    if let Err(e) = hypercall::evtchn_bind_virq(virq::TIMER, vcpu as u32) {
        err(2, e);
    }
    if let Err(e) = hypercall::vcpu_set_periodic_timer(vcpu as u32, timers::PERIOD_NS) {
        err(3, e);
    }
    // The boot VCPU mapped shared_info before bringing the APs up.
    let single_shot = match timers::shared_info() {
        Some(sh) => {
            hypercall::set_timer_op(shared::system_time_ns(sh, k) + timers::SINGLE_SHOT_AHEAD_NS)
        }
        None => Err(XenError::Einval),
    };
    if let Err(e) = single_shot {
        err(4, e);
    }
    let stuck = STUCK.load(Ordering::Relaxed) == vcpu;
    let by_ipi = STOP_BY_IPI.load(Ordering::Relaxed);
    // The kexec reaches this VCPU as an NMI (`kexecold_nmi_entry`); a VCPU meant to ignore it
    // (fault injection) registers no NMI callback, so Xen drops the NMI.
    if !stuck && !by_ipi {
        let cb = CallbackRegister {
            kind: callback::TYPE_NMI,
            flags: 0,
            _pad: 0,
            address: kexecold_nmi_entry as *const () as u64,
        };
        // SAFETY: the handler below never returns into the interrupted code; it leaves for
        // the purgatory with HYPERVISOR_iret.
        if let Err(e) = unsafe { hypercall::callback_op(callback::OP_REGISTER, &cb) } {
            err(5, e);
        }
    }
    AP_READY.fetch_add(1, Ordering::Release);
    if by_ipi && !stuck {
        wait_for_ipi(k);
    }
    // Asleep until kicked (SCHEDOP_poll on no port, no timeout); the NMI wakes it.
    loop {
        let _ = hypercall::sched_poll(&[], 0);
    }
}

/// A kernel without NMI callbacks: the AP sleeps on its IPI port (bound before the APs
/// start) and leaves for the purgatory's AP entry when its IPI has arrived (the port's FIFO
/// event word is pending), as an IPI handler would; other wake-ups only poll again.
fn wait_for_ipi(k: usize) -> ! {
    let port = IPI_PORT[k].load(Ordering::Acquire);
    loop {
        let go = KEXEC_GO.load(Ordering::Acquire);
        let pending = events::event_array().is_some_and(|array| {
            // SAFETY: the event-array page is mapped by the direct map and ports are < 1024,
            // so the word lies in it; Xen updates it atomically, a volatile read sees a whole
            // word.
            let word = unsafe { ((array + port as u64 * 4) as *const u32).read_volatile() };
            word & FIFO_PENDING != 0
        });
        if go != 0 && pending {
            // SAFETY: `go` is the purgatory's AP entry, mapped executable in these tables; it
            // takes the handoff block in rdi and the VCPU id in rsi, sets up its own stack and
            // never returns. Events stay masked, as the entry expects.
            unsafe {
                asm!("jmp {go}", go = in(reg) go,
                    in("rdi") KEXEC_BLOCK.load(Ordering::Relaxed),
                    in("rsi") k as u64, options(noreturn))
            }
        }
        // Only this port wakes the poll (no other event, no timer); an event already pending
        // returns at once, so an IPI sent between the check above and here is not lost.
        let _ = hypercall::sched_poll(&[port], 0);
    }
}

// The APs' NMI callback. Xen bounces to it on the AP's stack; it works out the VCPU id from
// that stack and, instead of returning, builds an iret context for the purgatory's AP entry
// (KEXEC_GO) and calls HYPERVISOR_iret, which also ends the NMI (NMIs are masked until an
// iret). Registers: rdi = handoff block (KEXEC_BLOCK), rsi = VCPU id; events stay masked
// (rflags.IF = 0).
core::arch::global_asm!(
    r#"
    .text
    .globl kexecold_nmi_entry
kexecold_nmi_entry:
    lea rax, [rip + {stacks}]
    mov rsi, rsp
    sub rsi, rax
    sub rsi, 8
    shr rsi, {stack_shift}
    mov rcx, [rip + {go}]
    mov rdx, rsp
    push {ss}
    push rdx
    push 0
    push {cs}
    push rcx
    push 0
    push 0
    push 0
    push 0
    mov rdi, [rip + {block}]
    mov eax, {iret}
    syscall
2:  ud2
    jmp 2b
    "#,
    stacks = sym AP_STACKS,
    go = sym KEXEC_GO,
    block = sym KEXEC_BLOCK,
    stack_shift = const AP_STACK.trailing_zeros(),
    ss = const selector::FLAT_KERNEL_SS as u64,
    // A guest-kernel CS with RPL 0: an RPL of 3 would make Xen return to user mode.
    cs = const (selector::FLAT_KERNEL_CS & !3) as u64,
    iret = const xenpv::hc::IRET,
);

extern "C" {
    fn kexecold_nmi_entry();
}

/// Sends the APs to the purgatory's AP entry `ap_entry` with handoff block `block`: an NMI
/// each (or an IPI, for a kernel without NMI callbacks).
pub fn send_to_purgatory(ap_entry: u64, block: u64, nr_vcpus: u32) -> Result<(), Why> {
    KEXEC_BLOCK.store(block, Ordering::Relaxed);
    KEXEC_GO.store(ap_entry, Ordering::Release);
    let by_ipi = STOP_BY_IPI.load(Ordering::Relaxed);
    for k in 1..nr_vcpus {
        if by_ipi {
            let port = IPI_PORT[k as usize].load(Ordering::Relaxed);
            if let Err(e) = shared::send(port) {
                return why!("EVTCHNOP_send(IPI port {} of VCPU {}): {}", port, k, e);
            }
            continue;
        }
        if let Err(e) = hypercall::vcpu_send_nmi(k) {
            return why!("VCPUOP_send_nmi({}): {}", k, e);
        }
    }
    if nr_vcpus > 1 {
        println!(
            "PVKEXEC-INFO kexec: APs sent to the purgatory by {}",
            if by_ipi {
                "IPI (EVTCHNOP_send)"
            } else {
                "VCPUOP_send_nmi"
            }
        );
    }
    Ok(())
}
