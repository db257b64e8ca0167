//! A domU's xenstore and console rings. xenstored and xenconsoled keep the old domain's ring
//! frames mapped, so the new kernel must get THE SAME frames: the image's plan names the PFNs
//! libxenguest would use for them (start_info PFN + 1 and + 2), and the renumbering gives those
//! PFNs the frames the old start_info names (`store_mfn`, `console.domU.mfn`). Their event
//! channels are kept too (`events`): the ones the old start_info names, which xenstored and
//! xenconsoled are bound to (a port the handoff names besides them is closed like any other).

use crate::failure::Failure;
use crate::frames::Ctx;
use crate::plan::Checked;
use pvhandoff::handoff::Handoff;
use pvhandoff::image::PlanRecord;
use xenpv::{sif, StartInfo};

/// The old domain's ring frames, as old PFNs and MFNs, and their ports.
#[derive(Clone, Copy)]
pub struct Rings {
    pub store_old_pfn: u64,
    pub console_old_pfn: u64,
    pub store_mfn: u64,
    pub console_mfn: u64,
    pub store_port: u32,
    pub console_port: u32,
}

/// Xen's M2P entry of `mfn` (read-only in every PV guest).
fn m2p(mfn: u64) -> u64 {
    // SAFETY: Xen maps the M2P table read-only at M2P_VIRT_START in every 64-bit PV guest;
    // entries of frames the domain does not own read as an invalid PFN, never fault for MFNs
    // Xen handed to this domain (the caller checks the result against the P2M).
    unsafe { ((xenpv::layout::M2P_VIRT_START + mfn * 8) as *const u64).read_volatile() }
}

/// The old PFN of `mfn`, if the old P2M agrees it is the domain's frame.
fn old_pfn(mfn: u64, old_p2m: &[u64]) -> Option<u64> {
    if mfn == 0 || mfn >= 1 << 40 {
        return None;
    }
    let pfn = m2p(mfn);
    (old_p2m.get(pfn as usize) == Some(&mfn)).then_some(pfn)
}

/// Where the old domain's console ring is mapped (a domU builder maps it in the initial
/// region), for the purgatory's own prints; `None` in the initial domain.
pub fn console_va(h: &Handoff, old_si: &StartInfo) -> Option<u64> {
    if old_si.flags & sif::INITDOMAIN != 0 || old_si.console_mfn >= 1 << 40 {
        return None;
    }
    let pfn = m2p(old_si.console_mfn);
    (pfn < old_si.nr_pages).then(|| h.old_virt_base + pfn * 4096)
}

/// The rings a domU-layout image keeps; `None` for a dom0-layout image in the initial domain.
/// An image built for the other kind of domain is refused, named.
pub fn find(
    plan: &PlanRecord,
    old_si: &StartInfo,
    old_p2m: &[u64],
) -> Result<Option<Rings>, Failure> {
    let domu_image = plan.xenstore_pfn != 0 || plan.console_pfn != 0;
    let domu = old_si.flags & sif::INITDOMAIN == 0;
    match (domu_image, domu) {
        (false, false) => return Ok(None),
        (false, true) => {
            return Err(Failure::Plan(
                "the image has the dom0 layout but this is a domU: its new kernel would have no xenstore or console ring (pvkexec build --mode domu)",
            ))
        }
        (true, false) => {
            return Err(Failure::Plan(
                "the image has the domU layout but this is the initial domain, which has no xenstore or console ring pages (pvkexec build --mode dom0)",
            ))
        }
        (true, true) => {}
    }
    let ring_pfns = [plan.xenstore_pfn, plan.console_pfn];
    if plan.xenstore_pfn == plan.console_pfn
        || ring_pfns
            .iter()
            .any(|&p| p >= plan.fill_pages || p == plan.trampoline_pfn)
    {
        return Err(Failure::Plan(
            "the plan's xenstore and console PFNs are not two distinct PFNs of the built region",
        ));
    }
    let (Some(store_old_pfn), Some(console_old_pfn)) = (
        old_pfn(old_si.store_mfn, old_p2m),
        old_pfn(old_si.console_mfn, old_p2m),
    ) else {
        return Err(Failure::Plan(
            "the old start_info's xenstore or console frame is not a frame of this domain",
        ));
    };
    Ok(Some(Rings {
        store_old_pfn,
        console_old_pfn,
        store_mfn: old_si.store_mfn,
        console_mfn: old_si.console_mfn,
        store_port: old_si.store_evtchn,
        console_port: old_si.console_evtchn,
    }))
}

/// A domU keeps its xenstore and console ring frames at libxenguest's PFNs for them: the
/// renumbering gives those PFNs the old frames.
pub fn keep(c: &mut Ctx, k: &Checked) -> Result<Option<Rings>, Failure> {
    let plan = &k.plan;
    let rings = find(plan, k.old_si, c.old_p2m)?;
    if let Some(r) = &rings {
        c.add_ring(plan.xenstore_pfn, r.store_old_pfn)?;
        c.add_ring(plan.console_pfn, r.console_old_pfn)?;
    }
    Ok(rings)
}
