//! What a running Linux has registered with Xen besides timers: a runstate and a secondary
//! time area per VCPU, both domain watchdogs, optionally a channel standing in for a domU's
//! xenstore channel, and the FIFO event ABI.

use crate::frames::Layout;
use crate::tables::DIRECT_MAP;
use core::sync::atomic::{AtomicU64, Ordering};
use guestrt::println;
use kernelrt::report::Why;
use kernelrt::{shared, why};
use xenpv::{
    evtchnop, hypercall, vcpuop, EvtchnExpandArray, EvtchnInitControl, VcpuRegisterArea, PAGE_SIZE,
};

/// The FIFO event array's first page in the direct map (0 before the FIFO ABI is on).
static EVENT_ARRAY: AtomicU64 = AtomicU64::new(0);

/// Where the FIFO event array's first page (ports 0..1023) is mapped, once it is.
pub fn event_array() -> Option<u64> {
    let va = EVENT_ARRAY.load(Ordering::Acquire);
    (va != 0).then_some(va)
}

/// Registers them all (the areas in the page at `runstate_va`); with `keep_store`, a loopback
/// pair whose unbound end is kept for the new kernel: returns its port, else 0.
pub fn register(l: &Layout, p2m: &[u64], runstate_va: u64, keep_store: bool) -> Result<u32, Why> {
    areas(l.nr_vcpus, runstate_va)?;
    // Both domain watchdogs Xen offers, armed far ahead (they would kill the new kernel).
    for _ in 0..2 {
        if let Err(e) = hypercall::sched_watchdog(0, 600) {
            return why!("SCHEDOP_watchdog(create): {}", e);
        }
    }
    // An initial domain has no xenstore channel (Linux as dom0 would take one for a domU's).
    let (store, peer) = match keep_store.then(shared::loopback_pair) {
        None => (0, 0),
        Some(Ok(p)) => p,
        Some(Err(e)) => return why!("loopback interdomain pair: {}", e),
    };
    fifo(l, p2m)?;
    println!(
        "PVKEXEC-INFO kexec: runstate and time areas registered at {:#x}, 2 watchdogs armed, store channel port {} (peer {}) kept, FIFO event ABI on {} VCPUs with an event-array page",
        runstate_va, store, peer, l.nr_vcpus
    );
    Ok(store)
}

/// A runstate area per VCPU (Xen writes it at that VA on every context switch, in whatever
/// tables are current) and a secondary time area (Linux's vDSO pvclock).
fn areas(nr_vcpus: u32, runstate_va: u64) -> Result<(), Why> {
    for k in 0..nr_vcpus {
        let area = VcpuRegisterArea {
            addr: runstate_va + k as u64 * 64,
        };
        // SAFETY: the area lies in the last padding page of the initial region, which nothing
        // else uses; Xen writes a vcpu_runstate_info (48 bytes) there.
        let r = unsafe {
            hypercall::vcpu_op(
                vcpuop::REGISTER_RUNSTATE_MEMORY_AREA,
                k,
                &area as *const _ as u64,
            )
        };
        if let Err(e) = r {
            return why!("VCPUOP_register_runstate_memory_area({}): {}", k, e);
        }
    }
    for k in 0..nr_vcpus {
        let area = VcpuRegisterArea {
            addr: runstate_va + 0x800 + k as u64 * 32,
        };
        // SAFETY: as for the runstate area: the last padding page of the region; Xen writes a
        // vcpu_time_info there.
        let r = unsafe {
            hypercall::vcpu_op(
                vcpuop::REGISTER_VCPU_TIME_MEMORY_AREA,
                k,
                &area as *const _ as u64,
            )
        };
        if let Err(e) = r {
            return why!("VCPUOP_register_vcpu_time_memory_area({}): {}", k, e);
        }
    }
    Ok(())
}

/// The FIFO event ABI: a control block per VCPU (Xen keeps them mapped) and the event array
/// page, as Linux adds it (without one no port can be raised).
fn fifo(l: &Layout, p2m: &[u64]) -> Result<(), Why> {
    for k in 0..l.nr_vcpus {
        let mut ic = EvtchnInitControl {
            control_gfn: p2m[l.fifo[k as usize] as usize],
            offset: 0,
            vcpu: k,
            link_bits: 0,
            _pad: [0; 7],
        };
        // SAFETY: `ic` names a zeroed frame of ours as VCPU k's control block; Xen maps it.
        let r = unsafe {
            hypercall::event_channel_op(evtchnop::INIT_CONTROL, &mut ic as *mut _ as u64)
        };
        if let Err(e) = r {
            return why!("EVTCHNOP_init_control(VCPU {}): {}", k, e);
        }
    }
    let mut ea = EvtchnExpandArray {
        array_gfn: p2m[l.event_array as usize],
    };
    // SAFETY: `ea` names a zeroed frame of ours as the first event-array page; Xen maps it.
    let r =
        unsafe { hypercall::event_channel_op(evtchnop::EXPAND_ARRAY, &mut ea as *mut _ as u64) };
    if let Err(e) = r {
        return why!("EVTCHNOP_expand_array(gfn {:#x}): {}", ea.array_gfn, e);
    }
    EVENT_ARRAY.store(DIRECT_MAP + l.event_array * PAGE_SIZE, Ordering::Release);
    Ok(())
}
