//! Purgatory stage 3's first step (docs/kexec-image.md): the image's plan record checked
//! against this domain before anything irreversible happens: its size, its VCPUs, whether the
//! other VCPUs are parked or reset (an image built for a hypervisor that resets them, which the
//! kernel side and Xen itself must confirm), and the hidden frames (park area, placed
//! `vcpu_info` frames, grant reserve) it counted.

use crate::failure::Failure;
use pvhandoff::handoff::{Handoff, HANDOFF_XEN_RESETS_VCPUS, MAX_VCPUS};
use pvhandoff::image::{ImageView, PlanRecord};
use pvhandoff::renumber::{hidden_pages, plan_matches_p2m, plan_park_pages, present_frames};
use xenpv::{hypercall, xenfeat, StartInfo};

/// The plan and the domain it was checked against.
pub struct Checked {
    pub plan: PlanRecord,
    /// The old kernel's live start_info (read only).
    pub old_si: &'static StartInfo,
    /// Entries of the old P2M (old `nr_pages`): the old PFN space.
    pub old_nr: u64,
    /// Frames the domain has: the old P2M's entries that are no balloon hole.
    pub present: u64,
    pub nr_vcpus: u64,
    /// The other VCPUs are reset (`VCPUOP_reset`) and VCPU 0's vcpu_info unregistered, not
    /// parked and hidden (docs/smp.md): the image says so and the kernel side and Xen confirm.
    pub reset: bool,
    /// Frames of the park area (`pvhandoff::renumber::plan_park_pages`: none with `reset`).
    pub park_pages: u64,
    /// The placed vcpu_info frames to hide (none with `reset`: they are unregistered before
    /// any frame changes hands).
    pub vcpu_info: VcpuInfoPlacement,
}

/// Reads the plan record and checks it against the domain. Nothing irreversible happens
/// before it passes.
pub fn check(h: &Handoff, image: &ImageView) -> Result<Checked, Failure> {
    let plan = image
        .plan_record()
        .ok_or(Failure::Plan("the image has no valid plan record"))?;
    // The record's own consistency (the rules `pvkexec inspect` applies) before any field of
    // it sizes or places anything.
    plan.check().map_err(Failure::Plan)?;
    // SAFETY: the kernel side passes its live start_info; only read here.
    let old_si = unsafe { &*(h.old_start_info_va as *const StartInfo) };
    let old_nr = old_si.nr_pages;
    let present = present_frames(crate::frames::old_p2m(old_si));
    plan_matches_p2m(plan.domain_pages, plan.old_p2m_len, old_nr, present)
        .map_err(Failure::Plan)?;
    if plan.nr_pages.checked_add(plan.hidden_pages) != Some(present) {
        return Err(Failure::Plan(
            "the image's nr_pages and hidden frames are not the domain's present frames",
        ));
    }
    let hidden = plan.hidden_pages;
    let nr_vcpus = h.nr_vcpus.max(1);
    if nr_vcpus > MAX_VCPUS {
        return Err(Failure::Plan("more VCPUs than the purgatory parks"));
    }
    let reset = resets_vcpus(h, &plan)?;
    // Hidden frames: the park area (with several VCPUs parked), each placed vcpu_info frame
    // (unless unregistered), then the grant reserve (frames of grants still mapped, the rest
    // free frames).
    let park_pages = plan_park_pages(&plan, nr_vcpus);
    let vcpu_info = match reset {
        true => VcpuInfoPlacement::none(nr_vcpus),
        false => placed_vcpu_info(h, nr_vcpus, old_nr)?,
    };
    let frames = vcpu_info.frames().len() as u64;
    let parked = if reset { 1 } else { nr_vcpus };
    if Some(hidden) != hidden_pages(parked, frames, plan.grant_reserve) {
        return Err(Failure::Plan(match reset {
            true => "the image hides a different number of frames than its grant reserve, and with VCPUs reset nothing else is hidden",
            false => "the image hides a different number of frames than the park area and the placed vcpu_info need (pvkexec build --old-vcpus N [--old-vcpu-info])",
        }));
    }
    Ok(Checked {
        plan,
        old_si,
        old_nr,
        present,
        nr_vcpus,
        reset,
        park_pages,
        vcpu_info,
    })
}

/// Whether the other VCPUs are reset instead of parked: only for an image built so
/// (`pvkexec build --xen-vcpu-reset`), and then the kernel side must have seen both features
/// and Xen must offer them now; otherwise the image hides too few frames to park, so it is
/// refused. An image built for parking parks on any Xen.
fn resets_vcpus(h: &Handoff, plan: &PlanRecord) -> Result<bool, Failure> {
    if !plan.resets_vcpus() {
        return Ok(false);
    }
    if h.flags & HANDOFF_XEN_RESETS_VCPUS != HANDOFF_XEN_RESETS_VCPUS {
        return Err(Failure::Plan(
            "the image was built for a hypervisor that resets VCPUs (pvkexec build --xen-vcpu-reset), and the kernel side did not report XENFEAT_vcpu_reset and XENFEAT_vcpu_info_reregister in the handoff's flags",
        ));
    }
    let features = hypercall::xen_features(0).map_err(|err| Failure::Hypercall {
        call: "xen_version(get_features, submap 0)",
        frame: 0,
        err,
    })?;
    let both = (1 << xenfeat::VCPU_RESET) | (1 << xenfeat::VCPU_INFO_REREGISTER);
    if features & both != both {
        return Err(Failure::Plan(
            "the image was built for a hypervisor that resets VCPUs (pvkexec build --xen-vcpu-reset), and this Xen does not offer XENFEAT_vcpu_reset and XENFEAT_vcpu_info_reregister",
        ));
    }
    Ok(true)
}

/// The `vcpu_info` placements the handoff lists: per VCPU (MFN, offset), and the distinct old
/// PFNs of their frames.
pub struct VcpuInfoPlacement {
    per_vcpu: [(u64, u32); MAX_VCPUS as usize],
    nr_vcpus: usize,
    pfns: [u64; MAX_VCPUS as usize],
    nr_pfns: usize,
}

impl VcpuInfoPlacement {
    /// No placement to hide or name.
    fn none(nr_vcpus: u64) -> Self {
        VcpuInfoPlacement {
            per_vcpu: [(0, 0); MAX_VCPUS as usize],
            nr_vcpus: nr_vcpus as usize,
            pfns: [0; MAX_VCPUS as usize],
            nr_pfns: 0,
        }
    }

    pub fn frames(&self) -> &[u64] {
        &self.pfns[..self.nr_pfns]
    }
}

/// `0:0x1234+0x0,1:0x1235+0x0`: VCPU, MFN and offset of each placed vcpu_info.
impl core::fmt::Display for VcpuInfoPlacement {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut first = true;
        for (k, &(mfn, off)) in self.per_vcpu[..self.nr_vcpus].iter().enumerate() {
            if mfn == 0 {
                continue;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{k}:{mfn:#x}+{off:#x}")?;
        }
        Ok(())
    }
}

fn placed_vcpu_info(h: &Handoff, nr_vcpus: u64, old_nr: u64) -> Result<VcpuInfoPlacement, Failure> {
    let mut p = VcpuInfoPlacement::none(nr_vcpus);
    if h.vcpu_info_va == 0 {
        return Ok(p);
    }
    for k in 0..nr_vcpus as usize {
        // SAFETY: the handoff points at nr_vcpus records in the old kernel's memory; read only.
        let rec = unsafe {
            (h.vcpu_info_va as *const xenpv::VcpuRegisterVcpuInfo)
                .add(k)
                .read_volatile()
        };
        if rec.mfn == 0 {
            continue;
        }
        // SAFETY: Xen maps the M2P read-only for every PV guest; the MFN is checked below.
        let pfn = unsafe {
            ((xenpv::layout::M2P_VIRT_START + rec.mfn * 8) as *const u64).read_volatile()
        };
        if pfn >= old_nr {
            return Err(Failure::Plan(
                "a placed vcpu_info frame is not the domain's",
            ));
        }
        p.per_vcpu[k] = (rec.mfn, rec.offset);
        if !p.frames().contains(&pfn) {
            p.pfns[p.nr_pfns] = pfn;
            p.nr_pfns += 1;
        }
    }
    Ok(p)
}
