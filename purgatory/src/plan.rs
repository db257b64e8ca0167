//! Purgatory stage 3's first step (docs/kexec-image.md): the image's plan record checked
//! against this domain before anything irreversible happens: its size, its VCPUs, and the
//! hidden frames (park area, placed `vcpu_info` frames, grant reserve) it counted.

use crate::failure::Failure;
use pvhandoff::handoff::{Handoff, MAX_VCPUS};
use pvhandoff::image::{ImageView, PlanRecord};
use pvhandoff::renumber::{hidden_pages, park_pages, plan_matches_p2m, present_frames};
use xenpv::StartInfo;

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
    /// Frames of the park area (`pvhandoff::renumber::park_pages`).
    pub park_pages: u64,
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
    // Hidden frames: the park area (with several VCPUs), each placed vcpu_info frame, then the
    // grant reserve (frames of grants still mapped, the rest free frames).
    let park_pages = park_pages(nr_vcpus);
    let vcpu_info = placed_vcpu_info(h, nr_vcpus, old_nr)?;
    let frames = vcpu_info.frames().len() as u64;
    if Some(hidden) != hidden_pages(nr_vcpus, frames, plan.grant_reserve) {
        return Err(Failure::Plan(
            "the image hides a different number of frames than the park area and the placed vcpu_info need (pvkexec build --old-vcpus N [--old-vcpu-info])",
        ));
    }
    Ok(Checked {
        plan,
        old_si,
        old_nr,
        present,
        nr_vcpus,
        park_pages,
        vcpu_info,
    })
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
    let mut p = VcpuInfoPlacement {
        per_vcpu: [(0, 0); MAX_VCPUS as usize],
        nr_vcpus: nr_vcpus as usize,
        pfns: [0; MAX_VCPUS as usize],
        nr_pfns: 0,
    };
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
