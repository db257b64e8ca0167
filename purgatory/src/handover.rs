//! Purgatory stages 3 and 4 (docs/kexec-image.md): hand the domain's frames to the new kernel
//! in its own pseudo-physical order and build its start-of-day state, then leave through the
//! trampoline. [`build`] is the sequence; each step is a stage module. Nothing irreversible
//! happens before the plan, the free pool and every AP's arrival are checked, and the first
//! failure ends the sequence (the caller crashes the domain with its message).

use crate::failure::Failure;
use crate::frames::{self, Batches, Ctx};
use crate::{
    alias, aps, elfcore, events, frontends, grants, plan, quiesce, renumber, rings, start_info,
    tables, watches,
};
use pvhandoff::handoff::Handoff;
use pvhandoff::image::ImageView;

/// Everything the switch needs once the new state is built.
pub struct Ready {
    pub new_l4_mfn: u64,
    pub old_l4_mfn: u64,
    pub start_info_va: u64,
    pub rsp: u64,
    pub entry: u64,
    pub trampoline_va: u64,
    pub hypercalls: u64,
    /// Frames the domain has (each one's M2P entry was written).
    pub frames: u64,
}

/// Builds the new domain state, stage by stage.
pub fn build(h: &Handoff, image: &ImageView) -> Result<Ready, Failure> {
    // Stage 3 checks: the plan against the domain, then the free pool.
    let k = plan::check(h, image)?;
    let (used, batches, alias_drops) = frames::working_memory(h, k.old_nr)?;
    let Batches { m2p, ext: clears } = batches;
    let old_p2m = frames::old_p2m(k.old_si);
    let mut c = Ctx::new(h, image, k.plan, old_p2m, used, alias_drops)?;
    let rings = rings::keep(&mut c, &k)?;
    let pool = renumber::check_pool(&mut c, &k)?;
    // Stage 2's end: every AP in the purgatory, offered grants revoked.
    aps::wait_arrivals(k.nr_vcpus)?;
    let revoked = grants::revoke_offered(&mut c, k.plan.grant_reserve)?;
    // Where Xen resets VCPUs: every AP reset and VCPU 0's vcpu_info back in shared_info
    // before any frame changes hands (so no vcpu_info frame needs hiding); nothing to park.
    if k.reset {
        c.hypercalls += 1; // plan::check's XENVER_get_features
        aps::reset(&mut c, k.nr_vcpus)?;
    }
    // The old kernel's xenstore watches, while the old store channel is still bound.
    if let Some(r) = rings.as_ref() {
        watches::reset(&mut c, r)?;
        // A Linux crash kernel finds the crashed kernel's frontends Connected: hand them back
        // (their backends unmap the old grants) before any frame changes hands.
        if k.plan.crash_aliases().is_some() {
            frontends::reset_all(&mut c, r)?;
        }
    }
    // Stage 3: renumbering.
    let hidden = renumber::mark_taken(&mut c, &k, &pool, &revoked)?;
    let work_pages = frames::check_work_frames(&c, k.old_nr, &pool.keep_out)?;
    renumber::write_p2m(&mut c, m2p, &k, &pool, &hidden, work_pages)?;
    // A Linux crash kernel: every old frame at a PFN past its mem=.
    let aliases = k.plan.crash_aliases();
    if let Some(a) = aliases {
        alias::all(&mut c, &k, a.count)?;
    }
    // Stage 4: tables, parked APs, start_info, pin, quiesce, event channels.
    let table_frames = tables::build(&mut c, image, clears, pool.fill)?;
    // The ELF core header once the area's frames are cleared (tables::build clears holes).
    if let Some(a) = aliases {
        elfcore::build(&mut c, &k, a)?;
    }
    let parked = match k.nr_vcpus > 1 && !k.reset {
        true => Some(aps::park(&mut c, k.nr_vcpus, hidden.park_first)?),
        false => None,
    };
    c.scratch_unmap()?;
    let si = start_info::complete(&c, &k, rings.as_ref())?;
    let new_l4_mfn = tables::pin(&mut c, table_frames)?;
    quiesce::descriptor_tables(&mut c)?;
    let (vcpus, watchdogs) = quiesce::timers_and_areas(&mut c)?;
    let kept = events::record_kept(h, rings.as_ref())?;
    events::reset(&mut c)?;
    start_info::append_words(
        si,
        parked.as_ref(),
        &k.vcpu_info,
        k.plan.grant_reserve,
        revoked.busy(),
    )?;
    events::rebind_kept(h, si, kept, rings.as_ref())?;
    say_quiesced(vcpus, watchdogs, &revoked);
    // Stage 5 (the trampoline) needs the old and new L4 and the new kernel's registers.
    let old_l4_pfn = (k.old_si.pt_base - h.old_virt_base) / 4096;
    Ok(Ready {
        new_l4_mfn,
        old_l4_mfn: c.old_p2m[old_l4_pfn as usize],
        start_info_va: k.plan.start_info_va,
        rsp: k.plan.rsp,
        entry: k.plan.entry,
        trampoline_va: k.plan.trampoline_va,
        hypercalls: c.hypercalls,
        frames: k.present,
    })
}

/// The line that says what stage 4 stopped and dropped.
fn say_quiesced(vcpu: u32, watchdogs: u32, revoked: &grants::Revoked) {
    say!(
        "purgatory: timers stopped, runstate and time areas of {vcpu} VCPUs dropped, {watchdogs} watchdogs destroyed, {} grant entries revoked ({} table frames{}), {} still mapped on frames outside the handed-over ones left alone, event channels reset (FIFO ABI gone), descriptor tables dropped",
        revoked.entries,
        revoked.frames,
        if revoked.from_v2 {
            "; the table was v2, set back to v1, which cleared every entry past the reserved refs"
        } else {
            ""
        },
        revoked.left
    );
}
