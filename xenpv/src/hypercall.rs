//! Hypercall wrappers for a 64-bit PV guest kernel.
//!
//! A hypercall is `syscall` in guest kernel mode: number in `rax`, arguments in `rdi, rsi, rdx,
//! r10, r8`, result in `rax`; `rcx` and `r11` are clobbered by the instruction and Xen may rewrite
//! the argument registers (debug builds poison them, continuations rewind them), so every
//! argument register is treated as clobbered. No hypercall page is needed.
//!
//! Wrappers that can change the guest's address space, descriptor tables or memory are `unsafe`;
//! ones that only read or report are safe. Every one returns `Result<_, XenError>`.

use crate::abi::*;
use crate::consts::*;
use crate::errno::XenError;
use core::arch::asm;

/// Issues hypercall `nr` with five arguments and returns Xen's raw result.
///
/// # Safety
/// The arguments must be valid for hypercall `nr`: pointers must reference memory of the
/// layout Xen expects for that call, and the effect of the call must be sound for the caller.
#[inline(always)]
pub unsafe fn raw5(nr: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: i64;
    // SAFETY: the caller vouches for the arguments; the asm declares every register the
    // hypercall path may change (rcx/r11 by syscall, the argument registers by Xen).
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as i64 => ret,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            inlateout("r10") a4 => _,
            inlateout("r8") a5 => _,
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
    ret
}

/// [`raw5`] with fewer arguments.
///
/// # Safety
/// As for [`raw5`].
#[inline(always)]
pub unsafe fn raw3(nr: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { raw5(nr, a1, a2, a3, 0, 0) }
}

/// [`raw5`] with fewer arguments.
///
/// # Safety
/// As for [`raw5`].
#[inline(always)]
pub unsafe fn raw2(nr: u64, a1: u64, a2: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { raw5(nr, a1, a2, 0, 0, 0) }
}

fn check(ret: i64) -> Result<u64, XenError> {
    XenError::check(ret)
}

/// `console_io(CONSOLEIO_write)`: writes bytes to Xen's console (initial domain, or a Xen
/// built with verbose debug). Returns the number of bytes Xen took.
pub fn console_write(bytes: &[u8]) -> Result<u64, XenError> {
    // SAFETY: Xen only reads `bytes.len()` bytes from a live slice.
    check(unsafe {
        raw3(
            hc::CONSOLE_IO,
            consoleio::WRITE,
            bytes.len() as u64,
            bytes.as_ptr() as u64,
        )
    })
}

/// `sched_op(SCHEDOP_shutdown)`; returns only if Xen refused.
pub fn shutdown(reason: ShutdownReason) -> XenError {
    let arg = SchedShutdown {
        reason: reason as u32,
    };
    // SAFETY: Xen reads a 4-byte sched_shutdown from a live local.
    let ret = unsafe { raw2(hc::SCHED_OP, schedop::SHUTDOWN, &arg as *const _ as u64) };
    match check(ret) {
        Err(e) => e,
        Ok(_) => XenError::Other(0),
    }
}

/// `sched_op(SCHEDOP_yield)`.
pub fn sched_yield() -> Result<(), XenError> {
    // SAFETY: yield takes no argument.
    check(unsafe { raw2(hc::SCHED_OP, schedop::YIELD, 0) }).map(drop)
}

/// `sched_op(SCHEDOP_poll)` on `ports` until `timeout_abs_ns` (0 = none). Does not unmask.
pub fn sched_poll(ports: &[u32], timeout_abs_ns: u64) -> Result<(), XenError> {
    let arg = SchedPoll {
        ports: ports.as_ptr() as u64,
        nr_ports: ports.len() as u32,
        _pad: 0,
        timeout: timeout_abs_ns,
    };
    // SAFETY: Xen reads the poll record and `nr_ports` u32s from live memory.
    check(unsafe { raw2(hc::SCHED_OP, schedop::POLL, &arg as *const _ as u64) }).map(drop)
}

/// `SCHEDOP_watchdog {id, timeout}`: id 0 creates a domain watchdog (returns its id), a
/// nonzero id re-arms it, or with timeout 0 destroys it (-EINVAL if it does not exist).
pub fn sched_watchdog(id: u32, timeout_s: u32) -> Result<u64, XenError> {
    let arg = SchedWatchdog {
        id,
        timeout: timeout_s,
    };
    // SAFETY: Xen reads the record; a watchdog only ever shuts this domain down.
    check(unsafe { raw2(hc::SCHED_OP, schedop::WATCHDOG, &arg as *const _ as u64) })
}

/// `xen_version(XENVER_version)`: `major << 16 | minor`.
pub fn xen_version() -> Result<u32, XenError> {
    // SAFETY: XENVER_version takes no buffer.
    check(unsafe { raw2(hc::XEN_VERSION, xenver::VERSION, 0) }).map(|v| v as u32)
}

/// `xen_version(XENVER_extraversion)`: e.g. `.7`.
pub fn xen_extraversion() -> Result<[u8; 16], XenError> {
    let mut buf = [0u8; 16];
    // SAFETY: Xen writes 16 bytes into a live local buffer.
    check(unsafe {
        raw2(
            hc::XEN_VERSION,
            xenver::EXTRAVERSION,
            buf.as_mut_ptr() as u64,
        )
    })?;
    Ok(buf)
}

/// `xen_version(XENVER_get_features)` for submap `idx`.
pub fn xen_features(idx: u32) -> Result<u32, XenError> {
    let mut info = XenFeatureInfo {
        submap_idx: idx,
        submap: 0,
    };
    // SAFETY: Xen reads and writes one xen_feature_info in a live local.
    check(unsafe {
        raw2(
            hc::XEN_VERSION,
            xenver::GET_FEATURES,
            &mut info as *mut _ as u64,
        )
    })?;
    Ok(info.submap)
}

/// `fpu_taskswitch(set)`: `false` clears CR0.TS so SSE code may run without a #NM handler.
pub fn fpu_taskswitch(set: bool) -> Result<(), XenError> {
    // SAFETY: only toggles the virtual CR0.TS of this vCPU.
    check(unsafe { raw2(hc::FPU_TASKSWITCH, set as u64, 0) }).map(drop)
}

/// `mmu_update` on this domain's memory. Returns the number of requests done.
///
/// # Safety
/// The updates change live page tables or the M2P: the caller must keep its own code, stack
/// and data mapped and must not create mappings that break memory safety.
pub unsafe fn mmu_update(reqs: &[MmuUpdate]) -> Result<u64, XenError> {
    let mut done: u64 = 0;
    // SAFETY: Xen reads `reqs.len()` entries and writes `done`; the effect is the caller's.
    check(unsafe {
        raw5(
            hc::MMU_UPDATE,
            reqs.as_ptr() as u64,
            reqs.len() as u64,
            &mut done as *mut _ as u64,
            DOMID_SELF as u64,
            0,
        )
    })?;
    Ok(done)
}

/// `mmuext_op` on this domain. Returns the number of operations done.
///
/// # Safety
/// As for [`mmu_update`]: pins, base-pointer switches and LDT changes alter the address space.
pub unsafe fn mmuext_op(ops: &[MmuextOp]) -> Result<u64, XenError> {
    let mut done: u64 = 0;
    // SAFETY: Xen reads `ops.len()` entries and writes `done`; the effect is the caller's.
    check(unsafe {
        raw5(
            hc::MMUEXT_OP,
            ops.as_ptr() as u64,
            ops.len() as u64,
            &mut done as *mut _ as u64,
            DOMID_SELF as u64,
            0,
        )
    })?;
    Ok(done)
}

/// `update_va_mapping(va, pte, flags)`.
///
/// # Safety
/// Changes the mapping of `va`: the caller must not hold references into the old mapping.
pub unsafe fn update_va_mapping(va: u64, pte: u64, flags: u64) -> Result<(), XenError> {
    // SAFETY: the caller owns the mapping of `va`.
    check(unsafe { raw3(hc::UPDATE_VA_MAPPING, va, pte, flags) }).map(drop)
}

/// `set_gdt(frames, entries)`; `entries == 0` drops any guest GDT.
///
/// # Safety
/// Segment selectors in use must stay valid: load flat selectors before dropping a GDT.
pub unsafe fn set_gdt(frames: &[u64], entries: u64) -> Result<(), XenError> {
    // SAFETY: Xen reads `ceil(entries/512)` MFNs from `frames`; the effect is the caller's.
    check(unsafe { raw2(hc::SET_GDT, frames.as_ptr() as u64, entries) }).map(drop)
}

/// `set_timer_op(abs_ns)`; 0 cancels the single-shot timer.
pub fn set_timer_op(abs_ns: u64) -> Result<(), XenError> {
    // SAFETY: only arms or cancels this vCPU's single-shot timer.
    check(unsafe { raw2(hc::SET_TIMER_OP, abs_ns, 0) }).map(drop)
}

/// `vcpu_op(cmd, vcpu, arg)`.
///
/// # Safety
/// `arg` must point at the structure `cmd` expects (or be 0 where it takes none), and the
/// effect (a vCPU going down or up, registered areas) must be sound for the caller.
pub unsafe fn vcpu_op(cmd: u64, vcpu: u32, arg: u64) -> Result<u64, XenError> {
    // SAFETY: forwarded contract.
    check(unsafe { raw3(hc::VCPU_OP, cmd, vcpu as u64, arg) })
}

/// `event_channel_op(cmd, arg)`.
///
/// # Safety
/// `arg` must point at the structure `cmd` expects.
pub unsafe fn event_channel_op(cmd: u64, arg: u64) -> Result<u64, XenError> {
    // SAFETY: forwarded contract.
    check(unsafe { raw2(hc::EVENT_CHANNEL_OP, cmd, arg) })
}

/// `grant_table_op(cmd, uop, count)`; each op's own `status` says how it went.
///
/// # Safety
/// `uop` must point at `count` structures `cmd` expects; mapping and revoking grants changes
/// what other domains can reach.
pub unsafe fn grant_table_op(cmd: u64, uop: u64, count: u32) -> Result<u64, XenError> {
    // SAFETY: forwarded contract.
    check(unsafe { raw3(hc::GRANT_TABLE_OP, cmd, uop, count as u64) })
}

/// `memory_op(cmd, arg)`.
///
/// # Safety
/// `arg` must point at the structure `cmd` expects; reservation changes alter the P2M.
pub unsafe fn memory_op(cmd: u64, arg: u64) -> Result<u64, XenError> {
    // SAFETY: forwarded contract.
    check(unsafe { raw2(hc::MEMORY_OP, cmd, arg) })
}

/// `callback_op(cmd, arg)`.
///
/// # Safety
/// A registered callback must be code that can handle the event.
pub unsafe fn callback_op(cmd: u64, arg: &CallbackRegister) -> Result<u64, XenError> {
    // SAFETY: forwarded contract.
    check(unsafe { raw2(hc::CALLBACK_OP, cmd, arg as *const _ as u64) })
}

/// `multicall(entries)`: each entry's own result lands in its `result` field.
///
/// # Safety
/// As for every hypercall the entries name.
pub unsafe fn multicall(entries: &mut [MulticallEntry]) -> Result<(), XenError> {
    // SAFETY: forwarded contract; Xen writes only the `result` fields.
    check(unsafe {
        raw2(
            hc::MULTICALL,
            entries.as_mut_ptr() as u64,
            entries.len() as u64,
        )
    })
    .map(drop)
}

/// `EVTCHNOP_send` on a local port: notifies its far end (e.g. xenconsoled for the console
/// ring's port).
pub fn evtchn_send(port: u32) -> Result<(), XenError> {
    let mut arg = EvtchnSend { port };
    // SAFETY: Xen reads one evtchn_send from a live local; raising an event on one of our own
    // ports only notifies its far end.
    check(unsafe {
        raw2(
            hc::EVENT_CHANNEL_OP,
            evtchnop::SEND,
            &mut arg as *mut _ as u64,
        )
    })
    .map(drop)
}

/// `VCPUOP_is_up`: whether `vcpu` is up; -ENOENT past the domain's last VCPU.
pub fn vcpu_is_up(vcpu: u32) -> Result<bool, XenError> {
    // SAFETY: VCPUOP_is_up takes no argument and only reads the VCPU's state.
    check(unsafe { raw3(hc::VCPU_OP, vcpuop::IS_UP, vcpu as u64, 0) }).map(|up| up != 0)
}

/// `VCPUOP_stop_periodic_timer` for `vcpu` (Xen allows only the calling VCPU).
pub fn vcpu_stop_periodic_timer(vcpu: u32) -> Result<(), XenError> {
    // SAFETY: takes no argument; stopping a timer changes no memory.
    check(unsafe { raw3(hc::VCPU_OP, vcpuop::STOP_PERIODIC_TIMER, vcpu as u64, 0) }).map(drop)
}

/// `VCPUOP_stop_singleshot_timer` for `vcpu` (Xen allows only the calling VCPU).
pub fn vcpu_stop_singleshot_timer(vcpu: u32) -> Result<(), XenError> {
    // SAFETY: takes no argument; stopping a timer changes no memory.
    check(unsafe { raw3(hc::VCPU_OP, vcpuop::STOP_SINGLESHOT_TIMER, vcpu as u64, 0) }).map(drop)
}

/// `EVTCHNOP_status` of this domain's `port`.
pub fn evtchn_status(port: u32) -> Result<EvtchnStatus, XenError> {
    let mut st = EvtchnStatus {
        dom: DOMID_SELF,
        port,
        ..Default::default()
    };
    // SAFETY: Xen fills one evtchn_status in a live local; it changes nothing.
    check(unsafe {
        raw2(
            hc::EVENT_CHANNEL_OP,
            evtchnop::STATUS,
            &mut st as *mut _ as u64,
        )
    })?;
    Ok(st)
}

/// `EVTCHNOP_alloc_unbound`: a new port of this domain that `remote_dom` may bind.
pub fn evtchn_alloc_unbound(remote_dom: u16) -> Result<u32, XenError> {
    let mut a = EvtchnAllocUnbound {
        dom: DOMID_SELF,
        remote_dom,
        port: 0,
    };
    // SAFETY: Xen fills one evtchn_alloc_unbound in a live local; a port is only added.
    check(unsafe {
        raw2(
            hc::EVENT_CHANNEL_OP,
            evtchnop::ALLOC_UNBOUND,
            &mut a as *mut _ as u64,
        )
    })?;
    Ok(a.port)
}

/// `EVTCHNOP_bind_interdomain` to `remote_dom`'s unbound `remote_port`; the local port.
pub fn evtchn_bind_interdomain(remote_dom: u16, remote_port: u32) -> Result<u32, XenError> {
    let mut b = EvtchnBindInterdomain {
        remote_dom,
        _pad: 0,
        remote_port,
        local_port: 0,
    };
    // SAFETY: Xen fills one evtchn_bind_interdomain in a live local; a port is only added.
    check(unsafe {
        raw2(
            hc::EVENT_CHANNEL_OP,
            evtchnop::BIND_INTERDOMAIN,
            &mut b as *mut _ as u64,
        )
    })?;
    Ok(b.local_port)
}

/// `EVTCHNOP_reset` of this domain: every port closed, pending bits cleared, the 2-level ABI
/// back (a FIFO ABI's control blocks are released).
pub fn evtchn_reset_self() -> Result<(), XenError> {
    let reset = EvtchnReset { dom: DOMID_SELF };
    // SAFETY: Xen reads one evtchn_reset from a live local; closing ports changes no memory
    // of this domain (Xen stops writing the FIFO control blocks it had).
    check(unsafe {
        raw2(
            hc::EVENT_CHANNEL_OP,
            evtchnop::RESET,
            &reset as *const _ as u64,
        )
    })
    .map(drop)
}

/// `EVTCHNOP_bind_virq`: binds `virq` on `vcpu` to a new port of this domain; the port.
pub fn evtchn_bind_virq(virq: u32, vcpu: u32) -> Result<u32, XenError> {
    let mut b = EvtchnBindVirq {
        virq,
        vcpu,
        port: 0,
    };
    // SAFETY: Xen fills one evtchn_bind_virq in a live local; a port is only added.
    check(unsafe {
        raw2(
            hc::EVENT_CHANNEL_OP,
            evtchnop::BIND_VIRQ,
            &mut b as *mut _ as u64,
        )
    })?;
    Ok(b.port)
}

/// `EVTCHNOP_bind_ipi`: a new IPI port of this domain, delivered to `vcpu`; the port.
pub fn evtchn_bind_ipi(vcpu: u32) -> Result<u32, XenError> {
    let mut b = EvtchnBindIpi { vcpu, port: 0 };
    // SAFETY: Xen fills one evtchn_bind_ipi in a live local; a port is only added.
    check(unsafe {
        raw2(
            hc::EVENT_CHANNEL_OP,
            evtchnop::BIND_IPI,
            &mut b as *mut _ as u64,
        )
    })?;
    Ok(b.port)
}

/// `VCPUOP_set_periodic_timer` for `vcpu` (Xen allows only the calling VCPU): VIRQ_TIMER
/// every `period_ns`.
pub fn vcpu_set_periodic_timer(vcpu: u32, period_ns: u64) -> Result<(), XenError> {
    let period = VcpuSetPeriodicTimer { period_ns };
    // SAFETY: Xen reads one vcpu_set_periodic_timer from a live local; a timer changes no
    // memory.
    check(unsafe {
        raw3(
            hc::VCPU_OP,
            vcpuop::SET_PERIODIC_TIMER,
            vcpu as u64,
            &period as *const _ as u64,
        )
    })
    .map(drop)
}

/// `VCPUOP_send_nmi`: marks an NMI pending for `vcpu` (delivered to its NMI callback, or
/// dropped when it registered none).
pub fn vcpu_send_nmi(vcpu: u32) -> Result<(), XenError> {
    // SAFETY: takes no argument; the NMI runs whatever callback the VCPU registered, which
    // `callback_op` (unsafe) vouched for.
    check(unsafe { raw3(hc::VCPU_OP, vcpuop::SEND_NMI, vcpu as u64, 0) }).map(drop)
}

/// `VCPUOP_down`: takes `vcpu` down (a VCPU may take itself down); `VCPUOP_up` resumes it
/// where it stopped.
pub fn vcpu_down(vcpu: u32) -> Result<(), XenError> {
    // SAFETY: takes no argument; a VCPU held down is a thread that does not run, it changes
    // no memory.
    check(unsafe { raw3(hc::VCPU_OP, vcpuop::DOWN, vcpu as u64, 0) }).map(drop)
}

/// `VCPUOP_reset` (pvkexec's Xen patch): resets `vcpu`, which must be down and not the caller,
/// to the state of a VCPU never initialised, dropping its vcpu_info, runstate and time areas,
/// LDT and timers. -ENOSYS on stock Xen, -EINVAL for the caller, -EBUSY when it is up.
pub fn vcpu_reset(vcpu: u32) -> Result<(), XenError> {
    // SAFETY: takes no argument; it changes only Xen's state of a VCPU that is not running.
    check(unsafe { raw3(hc::VCPU_OP, vcpuop::RESET, vcpu as u64, 0) }).map(drop)
}

/// `VCPUOP_register_vcpu_info` with [`VCPU_INFO_UNREGISTER_MFN`] (pvkexec's Xen patch): `vcpu`'s
/// vcpu_info moves back to its shared_info slot, contents kept. -EINVAL on stock Xen.
pub fn vcpu_info_unregister(vcpu: u32) -> Result<(), XenError> {
    let info = VcpuRegisterVcpuInfo {
        mfn: VCPU_INFO_UNREGISTER_MFN,
        offset: 0,
        rsvd: 0,
    };
    // SAFETY: Xen reads one vcpu_register_vcpu_info from a live local; unregistering makes Xen
    // stop writing the registered page, which it then no longer holds a reference to.
    check(unsafe {
        raw3(
            hc::VCPU_OP,
            vcpuop::REGISTER_VCPU_INFO,
            vcpu as u64,
            &info as *const _ as u64,
        )
    })
    .map(drop)
}

/// `CALLBACKOP_unregister` of this VCPU's callback `kind` (e.g. `callback::TYPE_NMI`).
pub fn callback_unregister(kind: u16) -> Result<(), XenError> {
    let cb = CallbackRegister {
        kind,
        ..Default::default()
    };
    // SAFETY: Xen reads the type from a live local; without a callback the event is dropped,
    // no code runs.
    check(unsafe {
        raw2(
            hc::CALLBACK_OP,
            callback::OP_UNREGISTER,
            &cb as *const _ as u64,
        )
    })
    .map(drop)
}

/// `GNTTABOP_get_version` of this domain's grant table.
pub fn gnttab_get_version() -> Result<u32, XenError> {
    let mut v = GnttabGetVersion {
        dom: DOMID_SELF,
        ..Default::default()
    };
    // SAFETY: Xen fills one gnttab_get_version in a live local; it changes nothing.
    check(unsafe {
        raw3(
            hc::GRANT_TABLE_OP,
            gnttabop::GET_VERSION,
            &mut v as *mut _ as u64,
            1,
        )
    })?;
    Ok(v.version)
}

/// `GNTTABOP_query_size` of this domain's grant table (its `status` field is Xen's answer for
/// the table, the caller's to check).
pub fn gnttab_query_size() -> Result<GnttabQuerySize, XenError> {
    let mut q = GnttabQuerySize {
        dom: DOMID_SELF,
        ..Default::default()
    };
    // SAFETY: Xen fills one gnttab_query_size in a live local; it changes nothing.
    check(unsafe {
        raw3(
            hc::GRANT_TABLE_OP,
            gnttabop::QUERY_SIZE,
            &mut q as *mut _ as u64,
            1,
        )
    })?;
    Ok(q)
}

/// `XENMEM_current_reservation` of this domain: the pages it holds.
pub fn memory_current_reservation() -> Result<u64, XenError> {
    let dom: u16 = DOMID_SELF;
    // SAFETY: Xen reads one domid from a live local; the query changes nothing.
    check(unsafe {
        raw2(
            hc::MEMORY_OP,
            memop::CURRENT_RESERVATION,
            &dom as *const u16 as u64,
        )
    })
}
