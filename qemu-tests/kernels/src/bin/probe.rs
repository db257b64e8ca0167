//! Probe kernel: the new kernel of a kexec. Runs the start-of-day checks of a direct boot
//! (`pvtest_kernels::checks`), then what only a kexec can get wrong:
//! - `plan`: start_info, the boot stack and the region equal the plan `pvkexec build` wrote
//!   into this kernel's plan slot (the plan travels in the image, inside the kernel segment);
//! - `zeroed`: pages the builder zeroes and this kernel never wrote hold zeroes, not the old
//!   kernel's bytes (its free pool is filled with [`OLD_DATA_POISON`]), file-backed zero pages
//!   the image leaves out as a zero run included;
//! - `event-channels`: only the kept store channel is bound, and it leads back to its far end
//!   (the old kernel's VIRQ, IPI and other bindings are gone);
//! - `no-old-timers`: with no timer armed here, VIRQ_TIMER of every VCPU stays quiet over a
//!   measured wait (and then fires for a timer this kernel arms, which shows the watch can
//!   see one);
//! - `vcpus-parked`: every VCPU but this one is down (`VCPUOP_is_up`);
//! - `watchdogs-gone`: both domain watchdogs can be created (and are destroyed again);
//! - `grants-revoked`: the grant table is v1 and no entry past the reserved refs is offered;
//! - `hidden-frames`: the frames the command line lists (`pvkexec.park=`, `pvkexec.vcpu_info=`)
//!   are not in this kernel's P2M, and they are all the domain holds beyond `nr_pages`
//!   (`XENMEM_current_reservation`);
//! - `ap-wake` (with parked VCPUs): VCPU 1 is brought back through its park mailbox and prints
//!   the PASS line itself; there, `nmi-callback-gone`: an NMI with no callback registered is
//!   dropped, and one with this kernel's callback arrives.
//!
//! After a kexec whose VCPUs were reset instead of parked (an image built with
//! `--xen-vcpu-reset` under a Xen offering XENFEAT_vcpu_reset and
//! XENFEAT_vcpu_info_reregister; skipped, and reported SKIP, anywhere else):
//! - `vcpus-reset`: no VCPU but this one is initialised (`VCPUOP_up` answers -EINVAL, where a
//!   parked VCPU would come up), and VCPU 1 takes a fresh `VCPUOP_initialise` onto this
//!   kernel's tables (stock Xen: -EEXIST) and prints `ap-wake` and `nmi-callback-gone` itself;
//! - `vcpu-info-free`: VCPU 0 has no vcpu_info registration: Xen keeps shared_info's slot up
//!   to date, and registering one here succeeds (stock Xen refuses a second registration);
//!   it is undone again.
//!
//! Command-line words: `mem_mib=N` as for `bootcheck`.
#![no_std]
#![no_main]
// Check results carry their reason in a fixed buffer: these kernels have no heap to box it in.
#![allow(clippy::result_large_err)]

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use kernelrt::entry::{entry_regs, reg};
use kernelrt::report::{check, finish, Why};
use kernelrt::view::Region;
use kernelrt::{clock, shared};
use kernelrt::{cmdline_value, notes::VIRT_BASE, parse_u64, println, why};
use pvhandoff::handoff::{ParkMailbox, PARK_MAILBOX_OFFSET, PARK_WAKE_MAGIC};
use pvhandoff::image::{PlanRecord, PLAN_MAGIC};
use pvtest_kernels::checks::boot_checks;
use pvtest_kernels::OLD_DATA_POISON;
use xenpv::{
    evtchn, evtchnop, hypercall, vcpuop, virq, SharedInfo, StartInfo, VcpuInfo, XenError, PAGE_SIZE,
};

/// Initial contents of the plan slot: `pvkexec build` replaces them with the `PlanRecord`.
const SLOT_UNFILLED: u64 = u64::from_le_bytes(*b"PVKXSLOT");

/// The plan slot, file-backed (`.data`), named by the `PVKEXEC` note below.
#[no_mangle]
static mut PVKEXEC_PLAN_SLOT: PlanRecord = PlanRecord {
    magic: SLOT_UNFILLED,
    nr_pages: 0,
    virt_base: 0,
    region_pages: 0,
    entry: 0,
    rsp: 0,
    start_info_va: 0,
    pt_pfn: 0,
    nr_pt_frames: 0,
    p2m_pfn: 0,
    p2m_pages: 0,
    trampoline_va: 0,
    trampoline_pfn: 0,
    mod_start: 0,
    mod_len: 0,
    fill_pages: 0,
    domain_pages: 0,
    hidden_pages: 0,
    grant_reserve: 0,
    xenstore_pfn: 0,
    console_pfn: 0,
    old_p2m_len: 0,
    flags: 0,
    _reserved: [0; 1],
};

// The loader's plan-slot note (name "PVKEXEC", type 1, payload: the slot's address). Xen's
// libelf ignores notes not named "Xen".
global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 8
    .long 8
    .long 1
    .asciz "PVKEXEC"
    .balign 4
    .quad PVKEXEC_PLAN_SLOT
    .text
    "#
);

/// Bss this kernel never writes: it must read as zero.
static mut UNTOUCHED: [u64; 2048] = [0; 2048];

/// File-backed pages of zeros this kernel never writes: `pvkexec build` leaves them out of the
/// image as a zero run, so the purgatory must hand them over cleared (the old kernel's free
/// frames hold OLDKDATA).
#[repr(C, align(4096))]
struct ZeroRunPages([u64; ZERO_RUN_WORDS]);
const ZERO_RUN_WORDS: usize = 3 * 512;
#[link_section = ".data.zero_run"]
static mut ZERO_RUN: ZeroRunPages = ZeroRunPages([0; ZERO_RUN_WORDS]);

/// How long VIRQ_TIMER is watched with no timer armed (Xen system time).
const QUIET_NS: u64 = 300_000_000;

#[no_mangle]
extern "C" fn guest_main(si: *const StartInfo) -> ! {
    // SAFETY: the purgatory (or Xen) passes a mapped start_info page in rsi.
    let si = unsafe { &*si };
    let regs = entry_regs();
    let region = Region::from_stack_top(VIRT_BASE, regs[reg::RSP]);
    kernelrt::console_init(si, &region);
    // Before anything else maps or writes pages: what this kernel was handed.
    check("zeroed", check_zeroed(si, &regs));
    let hidden = match plan() {
        p if p.magic == PLAN_MAGIC => p.hidden_pages,
        _ => 0,
    };
    boot_checks(si, &regs, &region, hidden);
    check("plan", check_plan(si, &regs, &region));
    let shared = match shared::map_shared_info(si) {
        Ok(sh) => {
            check("event-channels", check_ports(si));
            if si.flags & xenpv::sif::INITDOMAIN == 0 {
                check("domu-rings", check_rings(si));
                check("xenstore", check_xenstore(si, &region));
            }
            match clock::vcpu0(si, sh) {
                Ok(clk) => check("no-old-timers", check_no_old_timers(sh, clk)),
                Err(why) => kernelrt::report::fail("no-old-timers", format_args!("{}", why)),
            }
            Some(sh)
        }
        Err(e) => {
            kernelrt::report::fail(
                "shared-info",
                format_args!("mapping shared_info {:#x}: {}", si.shared_info, e),
            );
            None
        }
    };
    check("vcpus-parked", check_vcpus_parked());
    let reset = vcpus_were_reset();
    match (reset, shared) {
        (Ok(()), Some(sh)) => check("vcpus-reset", check_vcpus_reset(si, sh)),
        (Ok(()), None) => {
            kernelrt::report::fail("vcpus-reset", format_args!("shared_info is not mapped"))
        }
        (Err(why), _) => {
            skipped("vcpus-reset", why);
            if let Err(why) = wake_parked_vcpu(si) {
                kernelrt::report::fail("ap-wake", format_args!("{}", why));
            }
        }
    }
    check("hidden-frames", check_hidden(si));
    // After the blocking waits: nothing the old kernel registered (a runstate area, say) has
    // written into this kernel's zeroed pages meanwhile.
    check("no-late-writes", check_zeroed(si, &regs));
    check("watchdogs-gone", check_watchdogs());
    check("grants-revoked", check_grants(si));
    check("fifo-gone", check_fifo_gone(si));
    // Last: it registers a vcpu_info here for a moment.
    match (reset, shared) {
        (Ok(()), Some(sh)) => check("vcpu-info-free", check_vcpu_info_free(si, sh)),
        (Ok(()), None) => {
            kernelrt::report::fail("vcpu-info-free", format_args!("shared_info is not mapped"))
        }
        (Err(why), _) => skipped("vcpu-info-free", why),
    }
    finish()
}

/// A check that does not apply here: `PVKEXEC-TEST SKIP <name>: <why>` (neither PASS nor FAIL).
fn skipped(name: &str, why: &str) {
    println!("PVKEXEC-TEST SKIP {}: {}", name, why);
}

/// `Ok` when the kexec reset the old kernel's VCPUs instead of parking them: the image says
/// so (built with `--xen-vcpu-reset`; the purgatory enters it only when the kernel side and
/// Xen confirmed) and Xen offers both features; else why the reset checks do not apply.
fn vcpus_were_reset() -> Result<(), &'static str> {
    let p = plan();
    if p.magic != PLAN_MAGIC || !p.resets_vcpus() {
        return Err("the image parks the old kernel's VCPUs (built without --xen-vcpu-reset)");
    }
    let both = (1 << xenpv::xenfeat::VCPU_RESET) | (1 << xenpv::xenfeat::VCPU_INFO_REREGISTER);
    match hypercall::xen_features(0) {
        Ok(f) if f & both == both => Ok(()),
        Ok(_) => {
            Err("Xen offers no XENFEAT_vcpu_reset and XENFEAT_vcpu_info_reregister (stock Xen)")
        }
        Err(_) => Err("XENVER_get_features failed"),
    }
}

/// Every VCPU but this one is down and not initialised (`VCPUOP_up` answers -EINVAL; a parked
/// VCPU would come up at its old context), and VCPU 1 takes a fresh `VCPUOP_initialise` onto
/// this kernel's tables and stack (stock Xen answers -EEXIST for a VCPU initialised before):
/// there it prints `ap-wake` and runs `nmi-callback-gone`, then goes down.
fn check_vcpus_reset(si: &StartInfo, sh: &SharedInfo) -> Result<(), Why> {
    let n = nr_vcpus();
    for k in 1..n {
        // SAFETY: VCPUOP_up takes no argument; Xen refuses it for a VCPU never initialised.
        match unsafe { hypercall::vcpu_op(vcpuop::UP, k, 0) } {
            Err(XenError::Einval) => {}
            Ok(_) => {
                return why!(
                    "VCPUOP_up({}) succeeded: the VCPU kept an old context (parked, not reset)",
                    k
                )
            }
            Err(e) => return why!("VCPUOP_up({}): {} (want -EINVAL: not initialised)", k, e),
        }
    }
    if n < 2 {
        println!("PVKEXEC-INFO vcpus-reset: one VCPU, nothing to reset");
        return Ok(());
    }
    // VCPU 1 gets no event callback: its upcalls stay masked (its periodic timer, back at Xen's
    // default after the reset, may mark VIRQ_TIMER pending).
    // SAFETY: shared_info is mapped writable; the mask byte of VCPU 1's slot, which VCPU 1
    // (down) does not use.
    unsafe {
        core::ptr::write_volatile(
            core::ptr::addr_of!(sh.vcpu_info[1].evtchn_upcall_mask) as *mut u8,
            1,
        )
    };
    let l4_pfn = (si.pt_base - VIRT_BASE) / PAGE_SIZE;
    let l4_mfn = kernelrt::view::p2m(si)[l4_pfn as usize];
    let top = core::ptr::addr_of!(AP_STACK) as u64 + 16384;
    // SAFETY: all-zero is a valid vcpu_guest_context (no FPU state, no traps, no LDT).
    let mut ctx: xenpv::VcpuGuestContext = unsafe { core::mem::zeroed() };
    ctx.flags = xenpv::vgcf::IN_KERNEL;
    ctx.user_regs.rip = probe_ap_entry as *const () as u64;
    ctx.user_regs.rsp = top;
    ctx.user_regs.rdi = 1;
    ctx.user_regs.cs = xenpv::selector::FLAT_KERNEL_CS;
    ctx.user_regs.ss = xenpv::selector::FLAT_KERNEL_SS;
    ctx.kernel_ss = xenpv::selector::FLAT_KERNEL_SS as u64;
    ctx.kernel_sp = top;
    ctx.ctrlreg[3] = l4_mfn << 12;
    // SAFETY: `ctx` is a complete context on this kernel's pinned L4 and VCPU 1's own stack;
    // VCPU 1 runs `probe_ap_main`, which touches only its own state and atomics.
    if let Err(e) = unsafe { hypercall::vcpu_op(vcpuop::INITIALISE, 1, &ctx as *const _ as u64) } {
        return why!(
            "VCPUOP_initialise(1): {} (-EEXIST: the old kernel's context survived)",
            e
        );
    }
    // SAFETY: VCPU 1 was just initialised at `probe_ap_entry`.
    if let Err(e) = unsafe { hypercall::vcpu_op(vcpuop::UP, 1, 0) } {
        return why!("VCPUOP_up(1) after VCPUOP_initialise: {}", e);
    }
    let mut spins = 0u64;
    while AP_RAN.load(Ordering::Acquire) == 0 {
        spins += 1;
        if spins > 2_000_000 {
            return why!("VCPU 1 did not run the probe's code after VCPUOP_initialise and up");
        }
        let _ = hypercall::sched_yield();
    }
    println!(
        "PVKEXEC-INFO vcpus-reset VCPUs 1..{} not initialised; VCPU 1 initialised afresh on this kernel's tables",
        n - 1
    );
    Ok(())
}

/// A page for a vcpu_info registration of this kernel's own.
#[repr(C, align(4096))]
struct VcpuInfoPage([u8; 4096]);
static mut OWN_VCPU_INFO: VcpuInfoPage = VcpuInfoPage([0; 4096]);

/// VCPU 0 has no vcpu_info registration left: shared_info's slot is the one Xen updates (its
/// time record changes across blocking polls), and registering a vcpu_info here succeeds,
/// which stock Xen refuses after any registration (undone again with the unregister MFN).
fn check_vcpu_info_free(si: &StartInfo, sh: &'static SharedInfo) -> Result<(), Why> {
    let slot = &sh.vcpu_info[0];
    let slot_ptr = shared::InfoPtr::slot(sh, 0);
    let Some(before) = slot_ptr.time_record() else {
        return why!("shared_info's vcpu_info slot of VCPU 0 holds no consistent time record");
    };
    let mut updated = false;
    for _ in 0..100 {
        // Blocking switches this VCPU out and in: Xen writes its time into its vcpu_info.
        let now = shared::time_ns(slot);
        if let Err(e) = hypercall::sched_poll(&[], now + 10_000_000) {
            return why!("SCHEDOP_poll: {}", e);
        }
        if slot_ptr
            .time_record()
            .is_some_and(|t| t.version != before.version)
        {
            updated = true;
            break;
        }
    }
    if !updated {
        return why!(
            "Xen does not update shared_info's vcpu_info slot of VCPU 0 (time version {} over 100 polls): a registration elsewhere survived",
            before.version
        );
    }
    let va = core::ptr::addr_of!(OWN_VCPU_INFO) as u64;
    let mfn = kernelrt::view::p2m(si)[((va - VIRT_BASE) / PAGE_SIZE) as usize];
    let rec = xenpv::VcpuRegisterVcpuInfo {
        mfn,
        offset: 0,
        rsvd: 0,
    };
    // SAFETY: `rec` names a page of this kernel that nothing else uses; Xen moves VCPU 0's
    // vcpu_info there until it is unregistered below (the clock reads the slot after that).
    let registered =
        unsafe { hypercall::vcpu_op(vcpuop::REGISTER_VCPU_INFO, 0, &rec as *const _ as u64) };
    if let Err(e) = registered {
        return why!(
            "VCPUOP_register_vcpu_info(0) into a page of this kernel: {} (-EINVAL: the old kernel's registration survived)",
            e
        );
    }
    // SAFETY: the page is this kernel's, mapped for its life, aligned, and used for nothing but
    // VCPU 0's vcpu_info now.
    let placed = unsafe { shared::InfoPtr::new(va as *mut VcpuInfo) }.time_record();
    if let Err(e) = hypercall::vcpu_info_unregister(0) {
        return why!("unregistering the vcpu_info registered here: {}", e);
    }
    match placed {
        Some(t) if t.system_time != 0 => {
            println!(
                "PVKEXEC-INFO vcpu-info-free shared_info's slot updated after time version {}; a registration here took (system time {} ns) and was undone",
                before.version, t.system_time
            );
            Ok(())
        }
        _ => why!("the vcpu_info registered here holds no time record"),
    }
}

/// A page whose L1 entry is borrowed to read the grant table.
static mut GRANT_WINDOW: Page = Page([0; PAGE_SIZE as usize]);

/// `pvkexec.grants_busy=ref:mfn,...`: grants a backend still mapped at the kexec.
fn busy_grants(si: &StartInfo) -> impl Iterator<Item = (u64, u64)> + '_ {
    cmdline_value(si.cmdline(), "pvkexec.grants_busy")
        .unwrap_or(b"")
        .split(|&b| b == b',')
        .filter_map(|e| {
            let mut rm = e.splitn(2, |&b| b == b':');
            Some((parse_u64(rm.next()?)?, parse_u64(rm.next()?)?))
        })
}

/// The table is v1, as in a new domain, and no grant entry past the reserved refs (0..7) is
/// valid except those the command line lists as still mapped: nothing else the old kernel
/// offered is still offered (this kernel offers none).
fn check_grants(si: &StartInfo) -> Result<(), Why> {
    match shared::grant_version() {
        Ok(1) => {}
        Ok(v) => return why!("the grant table is v{}, a new domain's is v1", v),
        Err(e) => return why!("GNTTABOP_get_version: {}", e),
    }
    let mut frames = [0u64; 16];
    let nr = match shared::grant_frames(&mut frames) {
        Ok(n) => n,
        Err(e) => return why!("grant table frames: {}", e),
    };
    let region = Region::from_stack_top(VIRT_BASE, entry_regs()[reg::RSP]);
    let va = core::ptr::addr_of_mut!(GRANT_WINDOW) as u64;
    let original = match kernelrt::view::walk(si, &region, va) {
        Ok(w) => w.l1e,
        Err(e) => return why!("grant window: {}", e),
    };
    let mut found = None;
    for (f, &mfn) in frames[..nr].iter().enumerate() {
        // SAFETY: the window page is unreferenced; it maps a grant frame until restored.
        if let Err(e) = unsafe {
            hypercall::update_va_mapping(
                va,
                xenpv::pte::make(mfn, xenpv::pte::L1_FLAGS),
                xenpv::uvmf::INVLPG,
            )
        } {
            found = Some(Err(e));
            break;
        }
        let first = if f == 0 {
            xenpv::gnttabop::NR_RESERVED_ENTRIES as usize
        } else {
            0
        };
        for e in first..512 {
            // SAFETY: entry e's flags in the mapped grant frame.
            let flags = unsafe { ((va + e as u64 * 8) as *const u16).read_volatile() };
            let listed = busy_grants(si).any(|(r, _)| r == (f * 512 + e) as u64);
            if flags & xenpv::gtf::TYPE_MASK != 0 && !listed {
                found = Some(Ok((f * 512 + e, flags)));
                break;
            }
        }
        if found.is_some() {
            break;
        }
    }
    // SAFETY: puts the window page's own frame back.
    let restored = unsafe { hypercall::update_va_mapping(va, original, xenpv::uvmf::INVLPG) };
    match (found, restored) {
        (Some(Err(e)), _) => why!("mapping a grant frame: {}", e),
        (Some(Ok((r, flags))), _) => why!("grant ref {} is still offered (flags {:#x})", r, flags),
        (None, Err(e)) => why!("restoring the grant window: {}", e),
        (None, Ok(())) => {
            println!(
                "PVKEXEC-INFO grants-revoked {} frames scanned, no entry offered but the {} listed as still mapped",
                nr,
                busy_grants(si).count()
            );
            Ok(())
        }
    }
}

/// Both domain watchdogs can be created (Xen offers two): none of the old kernel's survived.
fn check_watchdogs() -> Result<(), Why> {
    let mut ids = [0u64; 2];
    for (i, id) in ids.iter_mut().enumerate() {
        match hypercall::sched_watchdog(0, 600) {
            Ok(v) => *id = v,
            Err(e) => {
                return why!(
                    "creating watchdog {} of 2: {} (an old kernel's watchdog survived?)",
                    i + 1,
                    e
                )
            }
        }
    }
    for id in ids {
        if let Err(e) = hypercall::sched_watchdog(id as u32, 0) {
            return why!("destroying watchdog {}: {}", id, e);
        }
    }
    println!(
        "PVKEXEC-INFO watchdogs-gone created and destroyed ids {} and {}",
        ids[0], ids[1]
    );
    Ok(())
}

#[repr(C, align(4096))]
struct Page([u8; PAGE_SIZE as usize]);
/// This kernel's FIFO control block for VCPU 0 (used only by the last check).
static mut FIFO_CONTROL: Page = Page([0; PAGE_SIZE as usize]);

/// The FIFO event ABI the old kernel initialised is gone: `EVTCHNOP_init_control` succeeds
/// here (it fails with -EINVAL on a VCPU that already has a control block). Runs last: it
/// switches this domain to FIFO.
fn check_fifo_gone(si: &StartInfo) -> Result<(), Why> {
    let va = core::ptr::addr_of!(FIFO_CONTROL) as u64;
    let mfn = kernelrt::view::p2m(si)[((va - VIRT_BASE) / PAGE_SIZE) as usize];
    let mut ic = xenpv::EvtchnInitControl {
        control_gfn: mfn,
        offset: 0,
        vcpu: 0,
        link_bits: 0,
        _pad: [0; 7],
    };
    // SAFETY: `ic` names a zeroed page of this kernel as VCPU 0's control block.
    match unsafe { hypercall::event_channel_op(evtchnop::INIT_CONTROL, &mut ic as *mut _ as u64) } {
        Ok(_) => {
            println!(
                "PVKEXEC-INFO fifo-gone init_control ok, link_bits={}",
                ic.link_bits
            );
            Ok(())
        }
        Err(e) => why!(
            "EVTCHNOP_init_control: {} (the old kernel's FIFO ABI survived?)",
            e
        ),
    }
}

/// The stack VCPU 1 gets when the probe wakes it.
#[repr(C, align(4096))]
struct ApStack([u8; 16384]);
static mut AP_STACK: ApStack = ApStack([0; 16384]);
/// Set by the woken VCPU (its id + 1).
static AP_RAN: AtomicU64 = AtomicU64::new(0);

global_asm!(
    concat!(
        r#"
    .text
    .globl probe_ap_entry
probe_ap_entry:
    mov rbx, rdi
"#,
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../kernelrt/src/clear_ts.S")),
        r#"
    mov rdi, rbx
    call probe_ap_main
2:  ud2
    jmp 2b
    "#
    ),
    fpu_taskswitch = const xenpv::hc::FPU_TASKSWITCH,
);

extern "C" {
    fn probe_ap_entry();
}

/// VCPU 1, woken out of the park page onto this kernel's tables: reports from itself, checks
/// that no NMI callback of the old kernel survived, and goes down again.
#[no_mangle]
extern "C" fn probe_ap_main(vcpu: u64) -> ! {
    println!(
        "PVKEXEC-INFO ap-wake VCPU {} runs the probe's code on the probe's tables",
        vcpu
    );
    kernelrt::report::pass("ap-wake");
    check("nmi-callback-gone", check_nmi(vcpu as u32));
    AP_RAN.store(vcpu + 1, Ordering::Release);
    loop {
        let _ = hypercall::vcpu_down(vcpu as u32);
    }
}

/// NMIs this kernel's handler has seen.
static NMI_SEEN: AtomicU64 = AtomicU64::new(0);

// This kernel's NMI callback: Xen bounces here with rcx and r11 on top of an iret frame; it
// counts the NMI and returns with HYPERVISOR_iret (rax, r11, rcx, flags on top of the frame).
global_asm!(
    r#"
    .text
    .globl probe_nmi_entry
probe_nmi_entry:
    pop rcx
    pop r11
    push 0
    push rcx
    push r11
    push rax
    lock inc qword ptr [rip + {seen}]
    mov eax, {iret}
    syscall
2:  ud2
    jmp 2b
    "#,
    seen = sym NMI_SEEN,
    iret = const xenpv::hc::IRET,
);

extern "C" {
    fn probe_nmi_entry();
}

/// On the woken VCPU: an NMI with no callback registered here is dropped (an old kernel's
/// callback that survived would take this VCPU into whatever now lies at its address); then,
/// with this kernel's own callback, an NMI arrives, which shows NMIs are not masked (so the
/// first one was a real test).
fn check_nmi(vcpu: u32) -> Result<(), Why> {
    // Delivered on the way back from Xen.
    if let Err(e) = hypercall::vcpu_send_nmi(vcpu) {
        return why!("VCPUOP_send_nmi: {}", e);
    }
    let cb = xenpv::CallbackRegister {
        kind: xenpv::callback::TYPE_NMI,
        flags: 0,
        _pad: 0,
        address: probe_nmi_entry as *const () as u64,
    };
    // SAFETY: the handler counts and returns through HYPERVISOR_iret.
    if let Err(e) = unsafe { hypercall::callback_op(xenpv::callback::OP_REGISTER, &cb) } {
        return why!("registering an NMI callback: {}", e);
    }
    // This time the handler runs.
    let sent = hypercall::vcpu_send_nmi(vcpu);
    let seen = NMI_SEEN.load(Ordering::Acquire);
    // This VCPU is left without an NMI callback again.
    let _ = hypercall::callback_unregister(xenpv::callback::TYPE_NMI);
    match (sent, seen) {
        (Err(e), _) => why!("VCPUOP_send_nmi: {}", e),
        (Ok(_), 1) => {
            println!("PVKEXEC-INFO nmi-callback-gone: first NMI dropped, second one seen by this kernel's handler");
            Ok(())
        }
        (Ok(_), 0) => why!(
            "no NMI reached this kernel's handler: NMIs are masked, so the first test proves nothing"
        ),
        (Ok(_), n) => why!(
            "{} NMIs reached this kernel's handler, want 1: the one sent with no callback registered here was not dropped (an old callback survived)",
            n
        ),
    }
}

/// With VCPUs parked (`pvkexec.park=<mfn>@<va>` on the command line): maps the park page at
/// that VA, leaves VCPU 1 a wake-up record for this kernel's L4, entry and a stack, and
/// brings it up; VCPU 1 prints the `ap-wake` PASS line itself.
fn wake_parked_vcpu(si: &StartInfo) -> Result<(), Why> {
    let Some(word) = cmdline_value(si.cmdline(), "pvkexec.park") else {
        return Ok(());
    };
    let mut parts = word.split(|&b| b == b'@');
    let (Some(mfn), Some(va)) = (
        parts.next().and_then(parse_u64),
        parts.next().and_then(parse_u64),
    ) else {
        return why!("pvkexec.park= is not <mfn>@<va>");
    };
    // SAFETY: the park page's VA is the purgatory's lower-half slot next to the trampoline
    // page, unused by this kernel; the frame is the domain's own, not a table.
    if let Err(e) = unsafe {
        hypercall::update_va_mapping(
            va,
            xenpv::pte::make(mfn, xenpv::pte::L1_FLAGS | xenpv::pte::D),
            xenpv::uvmf::INVLPG,
        )
    } {
        return why!("mapping the park page {:#x} at {:#x}: {}", mfn, va, e);
    }
    let l4_pfn = (si.pt_base - VIRT_BASE) / PAGE_SIZE;
    let l4_mfn = kernelrt::view::p2m(si)[l4_pfn as usize];
    let stack_top = core::ptr::addr_of!(AP_STACK) as u64 + 16384;
    let record = (va + PARK_MAILBOX_OFFSET + 64) as *mut ParkMailbox;
    // SAFETY: the park page is mapped writable at `va`; VCPU 1's record is at its offset.
    unsafe {
        (*record).l4_mfn = l4_mfn;
        (*record).entry = probe_ap_entry as *const () as u64;
        (*record).rsp = stack_top;
        core::sync::atomic::fence(Ordering::Release);
        core::ptr::write_volatile(&mut (*record).magic, PARK_WAKE_MAGIC);
    }
    // SAFETY: VCPU 1 is parked; bringing it up runs the park code, which reads the record.
    if let Err(e) = unsafe { hypercall::vcpu_op(vcpuop::UP, 1, 0) } {
        return why!("VCPUOP_up(1): {}", e);
    }
    let mut spins = 0u64;
    while AP_RAN.load(Ordering::Acquire) == 0 {
        spins += 1;
        if spins > 2_000_000 {
            return why!("VCPU 1 did not run the probe's code after VCPUOP_up");
        }
        let _ = hypercall::sched_yield();
    }
    Ok(())
}

/// VCPUs of the domain (`VCPUOP_is_up` answers -ENOENT past the last).
fn nr_vcpus() -> u32 {
    let mut k = 1;
    while k < 64 && hypercall::vcpu_is_up(k) != Err(XenError::Enoent) {
        k += 1;
    }
    k
}

/// Every VCPU but this one is down.
fn check_vcpus_parked() -> Result<(), Why> {
    let n = nr_vcpus();
    for k in 1..n {
        match hypercall::vcpu_is_up(k) {
            Ok(false) => {}
            Ok(true) => return why!("VCPU {} is up: it was not parked", k),
            Err(e) => return why!("VCPUOP_is_up({}): {}", k, e),
        }
    }
    println!("PVKEXEC-INFO vcpus-parked {} of {} VCPUs down", n - 1, n);
    Ok(())
}

/// The domain's reservation is `nr_pages` plus the plan's hidden frames: nothing else is
/// held back, nothing lost.
fn check_hidden(si: &StartInfo) -> Result<(), Why> {
    let p = plan();
    if p.magic != PLAN_MAGIC {
        return why!("no plan (see the plan check)");
    }
    // The listed frames: the park page (its four table frames come with it) and the placed
    // vcpu_info frames; none may be in this kernel's P2M.
    let mut parked = false;
    if let Some(word) = cmdline_value(si.cmdline(), "pvkexec.park") {
        let mfn = word
            .split(|&b| b == b'@')
            .next()
            .and_then(parse_u64)
            .unwrap_or(0);
        if kernelrt::view::m2p(mfn) < si.nr_pages {
            return why!("the park page {:#x} is in this kernel's RAM", mfn);
        }
        parked = true;
    }
    // Distinct vcpu_info frames (VCPUs may share one).
    let mut seen = [0u64; 8];
    let mut distinct = 0;
    for (_, mfn, _) in clock::vcpu_info_list(si) {
        if kernelrt::view::m2p(mfn) < si.nr_pages {
            return why!("the vcpu_info frame {:#x} is in this kernel's RAM", mfn);
        }
        if !seen[..distinct].contains(&mfn) && distinct < seen.len() {
            seen[distinct] = mfn;
            distinct += 1;
        }
    }
    // The grant reserve: the frames of grants still mapped (listed), the rest free frames.
    for (_, mfn) in busy_grants(si) {
        if kernelrt::view::m2p(mfn) < si.nr_pages {
            return why!(
                "the still-mapped grant frame {:#x} is in this kernel's RAM",
                mfn
            );
        }
    }
    // The loader's and the purgatory's rule (its park area only where the VCPUs were parked).
    let vcpus = if parked { u64::from(nr_vcpus()) } else { 1 };
    let listed = pvhandoff::renumber::hidden_pages(vcpus, distinct as u64, p.grant_reserve)
        .unwrap_or(u64::MAX);
    if listed != p.hidden_pages {
        return why!(
            "the command line lists {} hidden frames, the plan {}",
            listed,
            p.hidden_pages
        );
    }
    let held = match hypercall::memory_current_reservation() {
        Ok(v) => v,
        Err(e) => return why!("XENMEM_current_reservation: {}", e),
    };
    if held != si.nr_pages + p.hidden_pages {
        return why!(
            "the domain holds {} frames: nr_pages {} + {} hidden expected",
            held,
            si.nr_pages,
            p.hidden_pages
        );
    }
    println!(
        "PVKEXEC-INFO hidden-frames {} (domain {} frames, nr_pages {})",
        p.hidden_pages, held, si.nr_pages
    );
    Ok(())
}

fn plan() -> PlanRecord {
    // SAFETY: written by the loader into the image, only read here.
    unsafe { core::ptr::addr_of!(PVKEXEC_PLAN_SLOT).read_volatile() }
}

/// start_info and the layout equal the plan the loader computed.
fn check_plan(si: &StartInfo, regs: &[u64; reg::COUNT], region: &Region) -> Result<(), Why> {
    let p = plan();
    if p.magic == SLOT_UNFILLED {
        return why!("the plan slot is unfilled: this kernel was not loaded by pvkexec build");
    }
    if p.magic != PLAN_MAGIC {
        return why!("the plan slot holds magic {:#x}, not a plan", p.magic);
    }
    extern "C" {
        fn _start();
    }
    let va = |pfn: u64| p.virt_base + pfn * PAGE_SIZE;
    let pairs: [(&str, u64, u64); 9] = [
        ("nr_pages", si.nr_pages, p.nr_pages),
        ("virt_base", region.virt_base, p.virt_base),
        ("region end", region.end, va(p.region_pages)),
        ("entry", _start as *const () as u64, p.entry),
        ("rsp", regs[reg::RSP], p.rsp),
        ("start_info", si as *const StartInfo as u64, p.start_info_va),
        ("pt_base", si.pt_base, va(p.pt_pfn)),
        ("nr_pt_frames", si.nr_pt_frames, p.nr_pt_frames),
        ("mfn_list", si.mfn_list, va(p.p2m_pfn)),
    ];
    for (name, got, want) in pairs {
        if got != want {
            return why!("{}: handed {:#x}, the plan says {:#x}", name, got, want);
        }
    }
    if si.mod_start != p.mod_start || si.mod_len != p.mod_len {
        return why!(
            "initrd {:#x}+{:#x}, the plan says {:#x}+{:#x}",
            si.mod_start,
            si.mod_len,
            p.mod_start,
            p.mod_len
        );
    }
    println!(
        "PVKEXEC-INFO plan nr_pages={:#x} region_pages={:#x} pt_pfn={:#x} p2m_pfn={:#x} trampoline_pfn={:#x}",
        p.nr_pages, p.region_pages, p.pt_pfn, p.p2m_pfn, p.trampoline_pfn
    );
    Ok(())
}

/// Pages the builder zeroes and this kernel has not written: untouched bss, the boot stack
/// below the word the entry code pushed, the padding up to the region end, the P2M list past
/// `nr_pages` entries and the start_info page past its structure.
fn check_zeroed(si: &StartInfo, regs: &[u64; reg::COUNT]) -> Result<(), Why> {
    let rsp = regs[reg::RSP];
    let region = Region::from_stack_top(VIRT_BASE, rsp);
    let p2m_end = (si.mfn_list + si.nr_pages * 8).next_multiple_of(PAGE_SIZE);
    let si_va = si as *const StartInfo as u64;
    let untouched = core::ptr::addr_of!(UNTOUCHED) as u64;
    let zero_run = core::ptr::addr_of!(ZERO_RUN) as u64;
    let ranges: [(&str, u64, u64); 6] = [
        ("untouched bss", untouched, untouched + 2048 * 8),
        (
            "zero-run pages",
            zero_run,
            zero_run + ZERO_RUN_WORDS as u64 * 8,
        ),
        ("boot stack", rsp - PAGE_SIZE, rsp - 64),
        ("padding", rsp, region.end),
        ("P2M tail", si.mfn_list + si.nr_pages * 8, p2m_end),
        (
            "start_info tail",
            si_va + core::mem::size_of::<StartInfo>() as u64,
            si_va + PAGE_SIZE,
        ),
    ];
    let mut words = 0u64;
    for (name, start, end) in ranges {
        let mut va = start;
        while va < end {
            // SAFETY: every range lies in the mapped initial region (bss, boot stack, padding,
            // P2M list, start_info page); reading it changes nothing.
            let w = unsafe { (va as *const u64).read_volatile() };
            if w == OLD_DATA_POISON {
                return why!(
                    "{} at {:#x} holds the old kernel's data (OLDKDATA)",
                    name,
                    va
                );
            }
            if w != 0 {
                return why!("{} at {:#x} holds {:#x}, not 0", name, va, w);
            }
            va += 8;
            words += 1;
        }
    }
    println!("PVKEXEC-INFO zeroed words={}", words);
    Ok(())
}

/// Only the kept channel is open: `store_evtchn` (if set) is an interdomain channel whose far
/// end leads back to it; every other port of the domain is closed, so nothing else the old
/// kernel bound survived.
/// domU: the xenstore and console rings are the frames at libxenguest's PFNs for them
/// (start_info's PFN + 1 and + 2, as the plan record names them), and start_info names them.
fn check_rings(si: &StartInfo) -> Result<(), Why> {
    let si_pfn = (si as *const StartInfo as u64 - VIRT_BASE) / PAGE_SIZE;
    let p = plan();
    if p.magic == PLAN_MAGIC && (p.xenstore_pfn, p.console_pfn) != (si_pfn + 1, si_pfn + 2) {
        return why!(
            "plan names xenstore PFN {:#x} and console PFN {:#x}, start_info is at PFN {:#x}",
            p.xenstore_pfn,
            p.console_pfn,
            si_pfn
        );
    }
    for (name, mfn, want) in [
        ("store_mfn", si.store_mfn, si_pfn + 1),
        ("console.domU.mfn", si.console_mfn, si_pfn + 2),
    ] {
        let pfn = kernelrt::view::m2p(mfn);
        if pfn != want {
            return why!("{} {:#x} is PFN {:#x}, not {:#x}", name, mfn, pfn, want);
        }
    }
    println!(
        "PVKEXEC-INFO domu-rings store_mfn {:#x} at PFN {:#x}, console mfn {:#x} at PFN {:#x}",
        si.store_mfn,
        si_pfn + 1,
        si.console_mfn,
        si_pfn + 2
    );
    Ok(())
}

/// domU: xenstored answers on the ring and channel this kernel was handed: its own `domid`
/// and `name` (relative paths, under /local/domain/<domid>), printed for the harness to compare
/// with what xl says.
fn check_xenstore(si: &StartInfo, region: &Region) -> Result<(), Why> {
    let pfn = kernelrt::view::m2p(si.store_mfn);
    let Some(va) = region.pfn_va(pfn) else {
        return why!(
            "store_mfn {:#x} (PFN {:#x}) is not in the initial mapping",
            si.store_mfn,
            pfn
        );
    };
    // SAFETY: the xenstore ring page is mapped writable in the initial region, and only this
    // check uses it.
    let mut xs = unsafe { kernelrt::xenstore::Xenstore::new(va, si.store_evtchn) };
    let mut domid = [0u8; 16];
    let mut name = [0u8; 64];
    let n = match xs.read("domid", &mut domid) {
        Ok(n) => n,
        Err(e) => return why!("xenstore read domid: {:?}", e),
    };
    let domid = core::str::from_utf8(&domid[..n]).unwrap_or("?");
    let m = match xs.read("name", &mut name) {
        Ok(m) => m,
        Err(e) => return why!("xenstore read name: {:?}", e),
    };
    let name = core::str::from_utf8(&name[..m]).unwrap_or("?");
    println!("PVKEXEC-INFO xenstore domid={} name={}", domid, name);
    Ok(())
}

/// domU: the store and console channels are open and lead to dom0 (xenstored, xenconsoled);
/// every other port is closed.
fn check_domu_ports(si: &StartInfo) -> Result<(), Why> {
    let kept = [si.store_evtchn, si.console_evtchn];
    for (name, port) in [("store_evtchn", kept[0]), ("console evtchn", kept[1])] {
        match shared::port_status(port) {
            Ok(st) if st.status == evtchnop::STATUS_INTERDOMAIN && st.remote_dom() == 0 => {}
            Ok(st) => {
                return why!(
                    "{} {} has status {} to dom {}, not interdomain to dom0",
                    name,
                    port,
                    st.status,
                    st.remote_dom()
                )
            }
            Err(e) => return why!("EVTCHNOP_status({} {}): {}", name, port, e),
        }
    }
    let mut port = 1u32;
    while port < evtchn::NR_CHANNELS_2L {
        match shared::port_status(port) {
            Ok(st) if st.status == evtchnop::STATUS_CLOSED => {}
            Ok(_) if kept.contains(&port) => {}
            Ok(st) => {
                return why!(
                    "port {} is open (status {}): left by the old kernel",
                    port,
                    st.status
                )
            }
            Err(XenError::Einval) => break,
            Err(e) => return why!("EVTCHNOP_status({}): {}", port, e),
        }
        port += 1;
    }
    println!(
        "PVKEXEC-INFO event-channels ports 1..{} closed except store_evtchn {} and console evtchn {} (to dom0)",
        port, kept[0], kept[1]
    );
    Ok(())
}

fn check_ports(si: &StartInfo) -> Result<(), Why> {
    if si.flags & xenpv::sif::INITDOMAIN == 0 {
        return check_domu_ports(si);
    }
    let store = si.store_evtchn;
    let mut peer = 0u32;
    if store != 0 {
        let st = match shared::port_status(store) {
            Ok(st) => st,
            Err(e) => return why!("EVTCHNOP_status(store_evtchn {}): {}", store, e),
        };
        if st.status != evtchnop::STATUS_INTERDOMAIN {
            return why!(
                "store_evtchn {} has status {}, not interdomain",
                store,
                st.status
            );
        }
        peer = st.remote_port();
        match shared::port_status(peer) {
            Ok(b) if b.status == evtchnop::STATUS_INTERDOMAIN && b.remote_port() == store => {}
            Ok(b) => {
                return why!(
                    "store_evtchn {}'s far end {} (dom {}) does not lead back (status {}, port {})",
                    store,
                    peer,
                    st.remote_dom(),
                    b.status,
                    b.remote_port()
                )
            }
            // Another domain's port: its status is not ours to read.
            Err(_) => peer = 0,
        }
    }
    let mut port = 1u32;
    loop {
        match shared::port_status(port) {
            Ok(st) if st.status == evtchnop::STATUS_CLOSED => {}
            Ok(_) if port == store || port == peer => {}
            Ok(st) => {
                return why!(
                    "port {} is open (status {}, vcpu {}): left by the old kernel",
                    port,
                    st.status,
                    st.vcpu
                )
            }
            Err(XenError::Einval) => break,
            Err(e) => return why!("EVTCHNOP_status({}): {}", port, e),
        }
        port += 1;
        if port == evtchn::NR_CHANNELS_2L {
            break;
        }
    }
    println!(
        "PVKEXEC-INFO event-channels ports 1..{} closed except store_evtchn {} (far end {})",
        port, store, peer
    );
    Ok(())
}

/// VIRQ_TIMER of every VCPU, bound here with no timer armed, stays quiet for [`QUIET_NS`];
/// then a 20 ms single-shot timer armed here makes VCPU 0's pending within a second.
fn check_no_old_timers(sh: &SharedInfo, clk: &VcpuInfo) -> Result<(), Why> {
    let n = nr_vcpus().min(8) as usize;
    let mut ports = [0u32; 8];
    for (k, port) in ports.iter_mut().enumerate().take(n) {
        *port = match hypercall::evtchn_bind_virq(virq::TIMER, k as u32) {
            Ok(p) => p,
            Err(e) => {
                return why!(
                    "binding VIRQ_TIMER of VCPU {}: {} (still bound by the old kernel?)",
                    k,
                    e
                )
            }
        };
        shared::clear_pending(sh, *port);
    }
    let port = ports[0];
    let start = shared::time_ns(clk);
    let mut now = start;
    while now - start < QUIET_NS {
        if let Some(k) = (0..n).find(|&k| shared::pending(sh, ports[k])) {
            return why!(
                "VIRQ_TIMER of VCPU {} fired {} us after the watch began, with no timer armed here",
                k,
                (now - start) / 1000
            );
        }
        now = shared::time_ns(clk);
    }
    if let Err(e) = hypercall::set_timer_op(now + 20_000_000) {
        return why!("set_timer_op: {}", e);
    }
    let armed = now;
    // Blocking in SCHEDOP_poll also makes Xen switch this VCPU out and in (runstate updates).
    while !shared::pending(sh, port) {
        if let Err(e) = hypercall::sched_poll(&[port], armed + 1_000_000_000) {
            return why!("SCHEDOP_poll: {}", e);
        }
        now = shared::time_ns(clk);
        if now - armed > 1_000_000_000 {
            return why!("a timer armed here did not fire within 1 s: the watch cannot see one");
        }
    }
    println!(
        "PVKEXEC-INFO no-old-timers quiet for {} ms on {} VCPUs' ports; own timer fired on port {} after {} us",
        QUIET_NS / 1_000_000,
        n,
        port,
        (now - armed) / 1000
    );
    Ok(())
}
