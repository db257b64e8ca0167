//! Purgatory stage 4's quiescing (docs/kexec-image.md): what Xen would go on doing for the old
//! kernel stops. This VCPU's descriptor tables and user L4 are dropped, its timers stopped,
//! every VCPU's runstate and time areas dropped and the domain watchdogs destroyed.

use crate::failure::Failure;
use crate::frames::Ctx;
use xenpv::{hc, hypercall, vcpuop, MulticallEntry, VcpuRegisterArea};

/// Drops the GDT, LDT and user L4 the old kernel may have left on this VCPU.
pub fn descriptor_tables(c: &mut Ctx) -> Result<(), Failure> {
    c.hypercalls += 2;
    crate::vcpu::drop_descriptor_tables().map_err(|d| match d {
        crate::vcpu::Dropped::Gdt(err) => Failure::Hypercall {
            call: "set_gdt(0 entries)",
            frame: 0,
            err,
        },
        crate::vcpu::Dropped::LdtOrUserL4(err) => Failure::Hypercall {
            call: "mmuext_op(SET_LDT 0, NEW_USER_BASEPTR 0)",
            frame: 0,
            err,
        },
    })?;
    Ok(())
}

/// VCPUs whose runstate and time areas one multicall drops.
const QUIESCE_CHUNK: u32 = 16;

/// One multicall entry.
fn call(op: u64, args: &[u64]) -> MulticallEntry {
    let mut e = MulticallEntry {
        op,
        ..Default::default()
    };
    e.args[..args.len()].copy_from_slice(args);
    e
}

/// The Xen error of a multicall entry's result (`None`: it succeeded).
fn entry_err(e: &MulticallEntry) -> Option<xenpv::XenError> {
    (e.result != 0).then(|| xenpv::XenError::from_errno((e.result as i64).wrapping_neg()))
}

/// Stops this VCPU's timers (the new kernel arms its own), drops every VCPU's runstate and
/// secondary time areas (Xen would go on writing them at the old kernel's VAs, inside the new
/// kernel) and destroys the domain watchdogs (ids 1 and 2 outlive the kernel that armed them).
/// The first multicall carries the timers, the watchdogs and VCPUs 0..16; more follow only
/// for a domain with more VCPUs (-ENOENT marks the end). Returns (VCPUs, watchdogs destroyed).
pub fn timers_and_areas(c: &mut Ctx) -> Result<(u32, u32), Failure> {
    let none = VcpuRegisterArea { addr: 0 };
    let none_ptr = &none as *const _ as u64;
    let wd = [
        xenpv::SchedWatchdog { id: 1, timeout: 0 },
        xenpv::SchedWatchdog { id: 2, timeout: 0 },
    ];
    let mut watchdogs = 0;
    let mut first = 0u32;
    loop {
        let head = first == 0;
        let ents = &mut *c.alias_drops;
        let mut n = 0;
        if head {
            ents[0] = call(hc::SET_TIMER_OP, &[0]);
            ents[1] = call(hc::VCPU_OP, &[vcpuop::STOP_PERIODIC_TIMER, 0, 0]);
            for (i, w) in wd.iter().enumerate() {
                let arg = w as *const _ as u64;
                ents[2 + i] = call(hc::SCHED_OP, &[xenpv::schedop::WATCHDOG, arg]);
            }
            n = 4;
        }
        for v in first..first + QUIESCE_CHUNK {
            for op in [
                vcpuop::REGISTER_RUNSTATE_MEMORY_AREA,
                vcpuop::REGISTER_VCPU_TIME_MEMORY_AREA,
            ] {
                ents[n] = call(hc::VCPU_OP, &[op, v as u64, none_ptr]);
                n += 1;
            }
        }
        c.hypercalls += 1;
        let ents = &mut c.alias_drops[..n];
        // SAFETY: every entry only stops a timer, a watchdog or Xen's copies into a registered
        // area; `none` and `wd` outlive the call.
        unsafe { hypercall::multicall(ents) }.map_err(|err| Failure::Hypercall {
            call: "multicall(timers, watchdogs, runstate and time areas)",
            frame: 0,
            err,
        })?;
        let mut rest = &ents[..];
        if head {
            let names = ["set_timer_op(0)", "vcpu_op(stop_periodic_timer)"];
            for (e, name) in rest[..2].iter().zip(names) {
                if let Some(err) = entry_err(e) {
                    return Err(Failure::Hypercall {
                        call: name,
                        frame: 0,
                        err,
                    });
                }
            }
            for (i, e) in rest[2..4].iter().enumerate() {
                match entry_err(e) {
                    None => watchdogs += 1,
                    Some(xenpv::XenError::Einval) => {}
                    Some(err) => {
                        return Err(Failure::Hypercall {
                            call: "sched_op(watchdog, destroy)",
                            frame: i as u64 + 1,
                            err,
                        })
                    }
                }
            }
            rest = &rest[4..];
        }
        let names = [
            "vcpu_op(register_runstate_memory_area, NULL)",
            "vcpu_op(register_vcpu_time_memory_area, NULL)",
        ];
        for (k, pair) in rest.chunks(2).enumerate() {
            let v = first + k as u32;
            for (e, name) in pair.iter().zip(names) {
                match entry_err(e) {
                    None => {}
                    Some(xenpv::XenError::Enoent) => return Ok((v, watchdogs)),
                    Some(err) => {
                        return Err(Failure::Hypercall {
                            call: name,
                            frame: v as u64,
                            err,
                        })
                    }
                }
            }
        }
        first += QUIESCE_CHUNK;
    }
}
