//! Event channels the new kernel keeps: the xenstore and console channels a domU has with
//! dom0 (the handoff names their local ports). Their far ends are recorded before
//! `EVTCHNOP_reset`, and re-bound after it: to the same remote domain and port, or, for a
//! loopback pair whose both ends were this domain's, as a fresh pair.

use crate::failure::Failure;
use crate::frames::Ctx;
use crate::rings::Rings;
use pvhandoff::handoff::Handoff;
use xenpv::{evtchnop, hypercall, sif, EvtchnStatus, StartInfo, DOMID_SELF};

/// A kept port's far end.
#[derive(Clone, Copy)]
pub struct Kept {
    pub old_port: u32,
    pub remote_dom: u16,
    pub remote_port: u32,
    /// Both ends are this domain's.
    pub loopback: bool,
}

fn status(port: u32) -> Result<EvtchnStatus, Failure> {
    hypercall::evtchn_status(port).map_err(|err| Failure::Hypercall {
        call: "event_channel_op(STATUS) of a kept port",
        frame: port as u64,
        err,
    })
}

/// Records where kept `port` leads; it must be an interdomain channel. A loopback pair (both
/// ends this domain's) is recognised only where `allow_loopback` (the initial domain, domid 0):
/// a domU cannot tell its own domid from dom0's here, and its kept channels lead to dom0.
pub fn record(port: u32, allow_loopback: bool) -> Result<Kept, Failure> {
    let st = status(port)?;
    if st.status != evtchnop::STATUS_INTERDOMAIN {
        return Err(Failure::Plan(
            "a port the handoff keeps is not an interdomain channel",
        ));
    }
    let (remote_dom, remote_port) = (st.remote_dom(), st.remote_port());
    let back = status(remote_port).ok();
    let loopback = allow_loopback
        && back.is_some_and(|b| {
            b.status == evtchnop::STATUS_INTERDOMAIN
                && b.remote_port() == port
                && b.remote_dom() == remote_dom
        });
    Ok(Kept {
        old_port: port,
        remote_dom,
        remote_port,
        loopback,
    })
}

/// Binds `k` again after the reset; returns the new local port.
pub fn rebind(k: &Kept) -> Result<u32, Failure> {
    let fail = |call: &'static str| {
        move |err| Failure::Hypercall {
            call,
            frame: k.old_port as u64,
            err,
        }
    };
    if k.loopback {
        let port = hypercall::evtchn_alloc_unbound(DOMID_SELF).map_err(fail(
            "event_channel_op(ALLOC_UNBOUND) for a kept loopback port",
        ))?;
        hypercall::evtchn_bind_interdomain(DOMID_SELF, port).map_err(fail(
            "event_channel_op(BIND_INTERDOMAIN) for a kept loopback port",
        ))?;
        return Ok(port);
    }
    // The far end became unbound to this domain when the reset closed our end.
    hypercall::evtchn_bind_interdomain(k.remote_dom, k.remote_port).map_err(fail(
        "event_channel_op(BIND_INTERDOMAIN) to a kept port's far end",
    ))
}

/// The kept channels' far ends, recorded before the reset closes them.
pub struct KeptPorts {
    store: Option<Kept>,
    console: Option<Kept>,
}

/// Records the kept channels: in a domU the old start_info's channels to xenstored and
/// xenconsoled, in the initial domain the ports the handoff names.
pub fn record_kept(h: &Handoff, rings: Option<&Rings>) -> Result<KeptPorts, Failure> {
    let (store_port, console_port) = match rings {
        Some(r) => (r.store_port, r.console_port),
        None => (h.keep_store_port, h.keep_console_port),
    };
    let loopback_allowed = rings.is_none();
    let kept_store = match store_port {
        0 => None,
        p => Some(record(p, loopback_allowed)?),
    };
    let kept_console = match console_port {
        0 => None,
        p => Some(record(p, loopback_allowed)?),
    };
    Ok(KeptPorts {
        store: kept_store,
        console: kept_console,
    })
}

/// Closes every event channel of the domain (`EVTCHNOP_reset`).
pub fn reset(c: &mut Ctx) -> Result<(), Failure> {
    // Event channels survive a kexec: the old kernel's VIRQ and IPI bindings would make the
    // new kernel's own bindings fail (-EEXIST) and deliver old events. Closing them all also
    // clears their pending bits and returns the domain to the 2-level ABI.
    // The purgatory's own console port, in a domU, is re-bound with the kept ones.
    c.hypercalls += 1;
    hypercall::evtchn_reset_self().map_err(|err| Failure::Hypercall {
        call: "event_channel_op(RESET, DOMID_SELF)",
        frame: 0,
        err,
    })
}

/// Re-binds the kept channels after the reset and writes their new ports into the new
/// start_info `si`; in a domU the purgatory's own lines go on through the console ring.
pub fn rebind_kept(
    h: &Handoff,
    si: &mut StartInfo,
    kept: KeptPorts,
    rings: Option<&Rings>,
) -> Result<(), Failure> {
    if let Some(k) = kept.store {
        si.store_evtchn = rebind(&k)?;
        say!(
            "purgatory: kept store port {} re-bound as port {} ({})",
            k.old_port,
            si.store_evtchn,
            if k.loopback {
                "loopback pair re-created"
            } else {
                "same far end"
            }
        );
    }
    if let Some(k) = kept.console {
        let port = rebind(&k)?;
        // dom0's start_info has VGA information where a domU's has the console channel.
        if si.flags & sif::INITDOMAIN == 0 {
            si.console_evtchn = port;
        }
        // The purgatory's own lines go on through the ring, notifying the new port.
        if let (Some(r), true) = (rings, guestrt::console::uses_ring()) {
            guestrt::console::use_ring(h.old_virt_base + r.console_old_pfn * 4096, port);
        }
        say!(
            "purgatory: kept console port {} re-bound as port {}",
            k.old_port,
            port
        );
    }
    Ok(())
}
