//! Stage 2: hand the domain's frames to the new kernel in its own pseudo-physical order and
//! build its start-of-day state, then leave through the trampoline.
//!
//! Renumbering (design.md section 4): every new PFN gets a frame of the domain:
//! - a PFN covered by a placed segment gets the frame that already holds those bytes (the
//!   image's pages in the old kernel's module): nothing is copied;
//! - the trampoline PFN gets the purgatory's first frame (the trampoline page);
//! - other PFNs of the new initial region ("holes": P2M list, bss, tables, stack, padding) get
//!   frames of the handoff's free pool, in order; those that become page tables lose their
//!   direct-map alias first, so that Xen can validate them;
//! - all remaining PFNs get the remaining frames in ascending old-PFN order.
//!
//! The new P2M is written while it is computed, with Xen's M2P updated for every frame in
//! batches. Page tables come from the loader's template (entries in PFN terms), translated
//! into the hole frames at the table PFNs; the new L4 is pinned before the switch.
//!
//! Working memory (the frame bitmap and the hypercall batches) is the handoff's (version 5),
//! sized to the domain, so the purgatory's own size does not depend on the domain's. Hole
//! frames are written through the kernel side's direct map when there is one (no hypercall per
//! page); batches are as large as the working memory holds, and the direct-map aliases of
//! frames that become tables are dropped in one multicall.

use crate::{events, grants, park, rings};
use pvhandoff::handoff::{
    Handoff, MAX_VCPUS, WORK_BITMAP_OFFSET, WORK_M2P_BATCH, WORK_M2P_OFFSET, WORK_MMUEXT_BATCH,
    WORK_MMUEXT_OFFSET, WORK_MULTICALL_BATCH, WORK_MULTICALL_OFFSET,
};
use pvhandoff::image::{
    ImageView, PlanRecord, MAX_SEGMENTS, PARK_PAGES, PLAN_MAGIC, SEG_FLAG_METADATA,
    SEG_FLAG_PURGATORY_MAPPING, SEG_FLAG_TEMPLATE,
};
use pvhandoff::SegmentKind;
use xenpv::{
    evtchnop, hc, hypercall, mmu, mmuext, pte, sif, uvmf, vcpuop, EvtchnReset, MmuUpdate, MmuextOp,
    MulticallEntry, StartInfo, VcpuRegisterArea, DOMID_SELF,
};

/// The working memory's batches (the bitmap lives in [`Ctx`]).
struct Batches<'w> {
    m2p: &'w mut [MmuUpdate],
    ext: &'w mut [MmuextOp],
}

/// What went wrong, for the purgatory's last line before it crashes the domain.
pub enum Failure {
    Plan(&'static str),
    /// An AP never reached the park entry.
    ApMissing {
        vcpu: u64,
        cycles: u64,
    },
    /// An AP's cleanup step failed.
    ApStep {
        vcpu: u64,
        step: &'static str,
        errno: u32,
    },
    /// An AP did not go down on its private tables.
    ApStillUp {
        vcpu: u64,
        cycles: u64,
    },
    /// A grant entry someone still maps: it cannot be revoked.
    GrantInUse {
        grant_ref: u32,
        domid: u16,
        frame: u32,
    },
    /// The grant table is v2 and Xen would not set it back to v1.
    GrantV2 {
        err: xenpv::XenError,
    },
    Hypercall {
        call: &'static str,
        frame: u64,
        err: xenpv::XenError,
    },
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Failure::Plan(why) => f.write_str(why),
            Failure::ApMissing { vcpu, cycles } => write!(
                f,
                "VCPU {vcpu} did not reach the park entry (still in the old kernel after {cycles} TSC cycles)"
            ),
            Failure::ApStep { vcpu, step, errno } => write!(
                f,
                "VCPU {vcpu}: {step} failed: {}",
                xenpv::XenError::from_errno(*errno as i64)
            ),
            Failure::GrantInUse {
                grant_ref,
                domid,
                frame,
            } => write!(
                f,
                "grant ref {grant_ref} (frame {frame:#x}, to domain {domid}) is still mapped and cannot be revoked, and no hidden frame is left for it (pvkexec build --grant-reserve N)"
            ),
            Failure::GrantV2 { err } => write!(
                f,
                "the grant table is v2 and GNTTABOP_set_version(1) failed: {err} (a grant past the reserved refs is still mapped, or the old kernel still maps its status frames)"
            ),
            Failure::ApStillUp { vcpu, cycles } => write!(
                f,
                "VCPU {vcpu} is still up {cycles} TSC cycles after it was sent to the park page"
            ),
            Failure::Hypercall { call, frame, err } => {
                write!(f, "{call} on frame {frame:#x} failed: {err}")
            }
        }
    }
}

/// Everything the switch needs once the new state is built.
pub struct Ready {
    pub new_l4_mfn: u64,
    pub old_l4_mfn: u64,
    pub start_info_va: u64,
    pub rsp: u64,
    pub entry: u64,
    pub trampoline_va: u64,
    pub hypercalls: u64,
    /// Frames of the domain (each one's M2P entry was written).
    pub frames: u64,
}

/// A placed segment: new PFNs `[dest_pfn, dest_pfn + pages)` take the old frames from
/// `old_pfn` on (the image's pages in the module).
#[derive(Clone, Copy, Default)]
struct Placed {
    dest_pfn: u64,
    pages: u64,
    old_pfn: u64,
}

struct Ctx<'a> {
    h: &'a Handoff,
    plan: PlanRecord,
    old_p2m: &'a [u64],
    /// Placed segments, computed once: `fixed` runs for every PFN of the domain.
    /// The image's placed segments, and a domU's two ring pages.
    placed: [Placed; MAX_SEGMENTS as usize + 2],
    nr_placed: usize,
    /// Old PFN of the purgatory's first page (the trampoline page).
    trampoline_old_pfn: u64,
    hypercalls: u64,
    /// One bit per old PFN: the frame has its new place (working memory).
    used: &'a mut [u64],
    /// Direct-map aliases to drop, as `update_va_mapping` entries of one multicall.
    alias_drops: &'a mut [MulticallEntry],
    nr_alias_drops: usize,
    /// The scratch VA maps a frame now.
    scratch_live: bool,
}

impl<'a> Ctx<'a> {
    fn new(
        h: &'a Handoff,
        image: &ImageView,
        plan: PlanRecord,
        old_p2m: &'a [u64],
        used: &'a mut [u64],
        alias_drops: &'a mut [MulticallEntry],
    ) -> Result<Self, Failure> {
        let mut c = Ctx {
            h,
            plan,
            old_p2m,
            placed: [Placed::default(); MAX_SEGMENTS as usize + 2],
            nr_placed: 0,
            trampoline_old_pfn: u64::MAX,
            hypercalls: 0,
            used,
            alias_drops,
            nr_alias_drops: 0,
            scratch_live: false,
        };
        for (i, s) in image.segments().enumerate() {
            if s.flags & (SEG_FLAG_TEMPLATE | SEG_FLAG_METADATA) != 0 {
                continue;
            }
            let off = image
                .data_offset(i)
                .map_err(|_| Failure::Plan("segment outside the image"))?;
            let old_pfn = (h.image_va + off - h.old_virt_base) / 4096;
            if s.flags & SEG_FLAG_PURGATORY_MAPPING != 0 {
                c.trampoline_old_pfn = old_pfn;
            } else {
                c.placed[c.nr_placed] = Placed {
                    dest_pfn: s.dest_pfn,
                    pages: s.len.div_ceil(4096),
                    old_pfn,
                };
                c.nr_placed += 1;
            }
        }
        if c.trampoline_old_pfn == u64::MAX {
            return Err(Failure::Plan("the image has no purgatory segment"));
        }
        Ok(c)
    }

    /// Gives new `pfn` the old frame at `old_pfn` (a domU ring page): it must be no PFN a
    /// segment fills, and the frame no segment's, the trampoline's or the free pool's.
    fn add_ring(&mut self, pfn: u64, old_pfn: u64) -> Result<(), Failure> {
        let taken = self.fixed(pfn).is_some()
            || old_pfn == self.trampoline_old_pfn
            || self.meets_pool(old_pfn, 1)
            || self
                .placed()
                .iter()
                .any(|p| old_pfn >= p.old_pfn && old_pfn < p.old_pfn + p.pages);
        if taken || self.nr_placed == self.placed.len() {
            return Err(Failure::Plan(
                "a xenstore or console ring frame lies in the image, the free pool or a segment's PFNs",
            ));
        }
        self.placed[self.nr_placed] = Placed {
            dest_pfn: pfn,
            pages: 1,
            old_pfn,
        };
        self.nr_placed += 1;
        Ok(())
    }

    fn placed(&self) -> &[Placed] {
        &self.placed[..self.nr_placed]
    }

    /// The old PFN whose frame a placed segment (or the trampoline) gives new `pfn`, if any.
    fn fixed(&self, pfn: u64) -> Option<u64> {
        if pfn == self.plan.trampoline_pfn {
            return Some(self.trampoline_old_pfn);
        }
        self.placed()
            .iter()
            .find(|p| pfn >= p.dest_pfn && pfn < p.dest_pfn + p.pages)
            .map(|p| p.old_pfn + (pfn - p.dest_pfn))
    }

    /// First old PFN of the free pool (handoff contract: nothing the purgatory reads).
    fn clean_start(&self) -> u64 {
        self.h.free_first_pfn
    }

    /// Old PFN of the hole frame given to new `pfn` (a region PFN no segment covers).
    fn hole_old_pfn(&self, pfn: u64) -> u64 {
        self.clean_start() + pfn - self.fixed_below(pfn)
    }

    /// Whether old PFNs `[first, first + count)` meet the free pool.
    fn meets_pool(&self, first: u64, count: u64) -> bool {
        let pool = self.h.free_first_pfn..self.h.free_first_pfn + self.h.free_pages;
        first < pool.end && pool.start < first + count
    }

    /// Queues the removal of the kernel side's direct-map alias of an old frame about to
    /// become a table; [`Ctx::drop_aliases`] sends the queue as one multicall.
    fn drop_alias(&mut self, old_pfn: u64) -> Result<(), Failure> {
        if self.h.direct_map_va == 0 {
            return Ok(());
        }
        if self.nr_alias_drops == self.alias_drops.len() {
            self.drop_aliases()?;
        }
        self.alias_drops[self.nr_alias_drops] = MulticallEntry {
            op: hc::UPDATE_VA_MAPPING,
            result: 0,
            args: [
                self.h.direct_map_va + old_pfn * 4096,
                0,
                uvmf::INVLPG,
                0,
                0,
                0,
            ],
        };
        self.nr_alias_drops += 1;
        Ok(())
    }

    /// Sends the queued alias removals: one hypercall, each entry's result checked.
    fn drop_aliases(&mut self) -> Result<(), Failure> {
        let n = self.nr_alias_drops;
        if n == 0 {
            return Ok(());
        }
        self.nr_alias_drops = 0;
        self.hypercalls += 1;
        let dm = self.h.direct_map_va;
        let old_p2m = self.old_p2m;
        let frame = |e: &MulticallEntry| old_p2m[((e.args[0] - dm) / 4096) as usize];
        let entries = &mut self.alias_drops[..n];
        // SAFETY: each entry clears the direct-map VA of a free-pool frame: nothing the
        // purgatory uses lives there (handoff contract), and clearing a leaf entry changes no
        // table.
        unsafe { hypercall::multicall(entries) }.map_err(|err| Failure::Hypercall {
            call: "multicall(update_va_mapping(direct-map alias, 0))",
            frame: frame(&entries[0]),
            err,
        })?;
        match entries.iter().find(|e| e.result != 0) {
            Some(e) => Err(Failure::Hypercall {
                call: "update_va_mapping(direct-map alias, 0)",
                frame: frame(e),
                err: xenpv::XenError::from_errno((e.result as i64).wrapping_neg()),
            }),
            None => Ok(()),
        }
    }

    /// A writable view of old pool frame `old_pfn`: through the direct map (no hypercall) or,
    /// without one, through the scratch VA.
    fn pool_page(&mut self, old_pfn: u64) -> Result<*mut u64, Failure> {
        if self.h.direct_map_va != 0 {
            return Ok((self.h.direct_map_va + old_pfn * 4096) as *mut u64);
        }
        self.scratch_map(self.old_p2m[old_pfn as usize])
    }

    /// A writable view of the frame new region `pfn` gets.
    fn region_page(&mut self, pfn: u64) -> Result<*mut u64, Failure> {
        match self.fixed(pfn) {
            Some(_) => self.scratch_map(self.region_mfn(pfn)),
            None => self.pool_page(self.hole_old_pfn(pfn)),
        }
    }

    fn mark(&mut self, old: u64) {
        self.used[(old / 64) as usize] |= 1 << (old % 64);
    }

    fn is_used(&self, old: u64) -> bool {
        self.used[(old / 64) as usize] & (1 << (old % 64)) != 0
    }

    /// New frame (MFN) of a PFN inside the new region.
    fn region_mfn(&self, pfn: u64) -> u64 {
        if let Some(old) = self.fixed(pfn) {
            return self.old_p2m[old as usize];
        }
        self.old_p2m[self.hole_old_pfn(pfn) as usize]
    }

    /// Number of region PFNs below `pfn` that placed segments cover (segments are ranges).
    fn fixed_below(&self, pfn: u64) -> u64 {
        self.placed()
            .iter()
            .map(|p| (p.dest_pfn + p.pages).min(pfn).saturating_sub(p.dest_pfn))
            .sum()
    }

    fn scratch_map(&mut self, mfn: u64) -> Result<*mut u64, Failure> {
        self.hypercalls += 1;
        // SAFETY: the scratch VA is a purgatory-owned L1 slot nothing else uses; it is pointed
        // at frames the new kernel will own and that nothing else references now.
        unsafe {
            hypercall::update_va_mapping(
                self.h.scratch_va,
                pte::make(mfn, pte::L1_FLAGS | pte::D),
                uvmf::INVLPG,
            )
        }
        .map_err(|err| Failure::Hypercall {
            call: "update_va_mapping(scratch)",
            frame: mfn,
            err,
        })?;
        self.scratch_live = true;
        Ok(self.h.scratch_va as *mut u64)
    }

    fn scratch_unmap(&mut self) -> Result<(), Failure> {
        if !self.scratch_live {
            return Ok(());
        }
        self.scratch_live = false;
        self.hypercalls += 1;
        // SAFETY: clearing the scratch entry removes the purgatory's only alias of new frames.
        unsafe { hypercall::update_va_mapping(self.h.scratch_va, 0, uvmf::INVLPG) }.map_err(|err| {
            Failure::Hypercall {
                call: "update_va_mapping(scratch, 0)",
                frame: 0,
                err,
            }
        })
    }

    /// Zeroes hole frames with `MMUEXT_CLEAR_PAGE` (Xen clears them; no mapping needed).
    fn clear_pages(&mut self, ops: &[MmuextOp]) -> Result<(), Failure> {
        if ops.is_empty() {
            return Ok(());
        }
        self.hypercalls += 1;
        // SAFETY: each op clears one hole frame of the domain that nothing uses now.
        unsafe { hypercall::mmuext_op(ops) }.map_err(|err| Failure::Hypercall {
            call: "mmuext_op(CLEAR_PAGE)",
            frame: ops[0].arg1,
            err,
        })?;
        Ok(())
    }

    fn flush_m2p(&mut self, batch: &[MmuUpdate]) -> Result<(), Failure> {
        if batch.is_empty() {
            return Ok(());
        }
        self.hypercalls += 1;
        // SAFETY: MACHPHYS_UPDATE only changes Xen's M2P records of the domain's own frames.
        unsafe { hypercall::mmu_update(batch) }.map_err(|err| Failure::Hypercall {
            call: "mmu_update(MACHPHYS_UPDATE)",
            frame: batch[0].ptr >> 12,
            err,
        })?;
        Ok(())
    }
}

/// The handoff's working memory for a domain of `old_nr` frames: the zeroed bitmap, the
/// batches and the multicall entries. Its frames are checked later ([`check_work_frames`]).
fn working_memory(
    h: &Handoff,
    old_nr: u64,
) -> Result<
    (
        &'static mut [u64],
        Batches<'static>,
        &'static mut [MulticallEntry],
    ),
    Failure,
> {
    let need = pvhandoff::handoff::work_pages(old_nr).ok_or(Failure::Plan(
        "the domain is too large for any working memory",
    ))?;
    if h.work_pages < need {
        return Err(Failure::Plan(
            "the handoff's working memory (work_pages) is smaller than this domain needs (pvhandoff::handoff::work_pages)",
        ));
    }
    let words = old_nr.div_ceil(64) as usize;
    let at = |off: u64| h.work_va + off;
    // SAFETY: the handoff maps work_pages >= need frames writable at work_va for the purgatory
    // alone (handoff contract; size checked above and by the entry code); these ranges lie
    // past the stacks and do not overlap one another (pvhandoff's layout test).
    unsafe {
        let used = core::slice::from_raw_parts_mut(at(WORK_BITMAP_OFFSET) as *mut u64, words);
        used.fill(0);
        let m2p =
            core::slice::from_raw_parts_mut(at(WORK_M2P_OFFSET) as *mut MmuUpdate, WORK_M2P_BATCH);
        let ext = core::slice::from_raw_parts_mut(
            at(WORK_MMUEXT_OFFSET) as *mut MmuextOp,
            WORK_MMUEXT_BATCH,
        );
        let mc = core::slice::from_raw_parts_mut(
            at(WORK_MULTICALL_OFFSET) as *mut MulticallEntry,
            WORK_MULTICALL_BATCH,
        );
        Ok((used, Batches { m2p, ext }, mc))
    }
}

/// The working frames must be the domain's and none the purgatory hands out, clears or reads
/// as something else: not in the free pool (holes, park area, grant reserve) or the image,
/// not the old start_info or P2M list, and no frame pass 1 gave a place (segments, rings,
/// placed vcpu_info, busy grants). Checked before any frame changes hands.
fn check_work_frames(c: &Ctx, old_nr: u64, keep_out: &[(u64, u64)]) -> Result<u64, Failure> {
    let h = c.h;
    for k in 0..h.work_pages {
        // SAFETY: the handoff lists work_pages old PFNs at work_pfns_va; read only.
        let pfn = unsafe {
            (h.work_pfns_va as *const u64)
                .add(k as usize)
                .read_volatile()
        };
        let inside = |&(first, n): &(u64, u64)| pfn >= first && pfn - first < n;
        if pfn >= old_nr || c.meets_pool(pfn, 1) || keep_out.iter().any(inside) || c.is_used(pfn) {
            return Err(Failure::Plan(
                "a working-memory frame (work_pfns_va) is not the domain's, or lies in the free pool, the image, the old start_info or P2M list, or is a frame the new kernel gets at a fixed place",
            ));
        }
    }
    Ok(h.work_pages)
}

fn plan_record(image: &ImageView) -> Option<PlanRecord> {
    let i = image
        .segments()
        .position(|s| s.kind == SegmentKind::Plan as u32)?;
    let data = image.data(i).ok()?;
    if data.len() < core::mem::size_of::<PlanRecord>() {
        return None;
    }
    // SAFETY: the segment holds a PlanRecord written by the loader (length checked, digest
    // verified); read unaligned as plain old data.
    let r = unsafe { (data.as_ptr() as *const PlanRecord).read_unaligned() };
    (r.magic == PLAN_MAGIC).then_some(r)
}

/// Builds the new domain state. Nothing irreversible happens before the plan is checked.
pub fn build(h: &Handoff, image: &ImageView) -> Result<Ready, Failure> {
    let plan = plan_record(image).ok_or(Failure::Plan("the image has no valid plan record"))?;
    // SAFETY: the kernel side passes its live start_info; only read here.
    let old_si = unsafe { &*(h.old_start_info_va as *const StartInfo) };
    let old_nr = old_si.nr_pages;
    if plan.domain_pages != old_nr || plan.nr_pages + plan.hidden_pages != old_nr {
        return Err(Failure::Plan(
            "the image was built for another domain size (nr_pages differs)",
        ));
    }
    let new_nr = plan.nr_pages;
    let hidden = plan.hidden_pages;
    let nr_vcpus = h.nr_vcpus.max(1);
    if nr_vcpus > MAX_VCPUS {
        return Err(Failure::Plan("more VCPUs than the purgatory parks"));
    }
    // Hidden frames: the park area (with several VCPUs), each placed vcpu_info frame, then the
    // grant reserve (frames of grants still mapped, the rest free frames).
    let park_pages = if nr_vcpus > 1 { PARK_PAGES } else { 0 };
    let vcpu_info = placed_vcpu_info(h, nr_vcpus, old_nr)?;
    let grant_reserve = plan.grant_reserve;
    if hidden != park_pages + vcpu_info.frames().len() as u64 + grant_reserve {
        return Err(Failure::Plan(
            "the image hides a different number of frames than the park area and the placed vcpu_info need (pvkexec build --old-vcpus N [--old-vcpu-info])",
        ));
    }
    let (used, batches, alias_drops) = working_memory(h, old_nr)?;
    let Batches {
        m2p: batch,
        ext: clears,
    } = batches;
    // SAFETY: the old P2M list is mapped at mfn_list for nr_pages entries; only read.
    let old_p2m =
        unsafe { core::slice::from_raw_parts(old_si.mfn_list as *const u64, old_nr as usize) };
    let mut c = Ctx::new(h, image, plan, old_p2m, used, alias_drops)?;
    // A domU keeps its xenstore and console ring frames at libxenguest's PFNs for them.
    let rings = rings::find(&plan, old_si, old_p2m)?;
    if let Some(r) = &rings {
        c.add_ring(plan.xenstore_pfn, r.store_old_pfn)?;
        c.add_ring(plan.console_pfn, r.console_old_pfn)?;
    }
    // PFNs [0, fill) are built here: the region, an unmapped initrd, a relocated P2M and its
    // tables. The trampoline page lies past them.
    let fill = plan.fill_pages;
    if fill < plan.region_pages || fill > plan.trampoline_pfn || plan.trampoline_pfn >= old_nr {
        return Err(Failure::Plan(
            "the plan's built PFNs overlap the trampoline page or the domain's end",
        ));
    }
    let holes = fill - c.fixed_below(fill);
    h.free_first_pfn
        .checked_add(h.free_pages)
        .filter(|&e| e <= old_nr)
        .ok_or(Failure::Plan(
            "the handoff's free pool lies past the domain's frames",
        ))?;
    if holes + park_pages + grant_reserve > h.free_pages {
        return Err(Failure::Plan(
            "the free pool is smaller than the new region's holes and the park area",
        ));
    }
    // The pool must not hold what the purgatory still reads: the image, the old start_info,
    // the old P2M list.
    let image_first = (h.image_va - h.old_virt_base) / 4096;
    let si_old_pfn = (h.old_start_info_va - h.old_virt_base) / 4096;
    let p2m_first = (old_si.mfn_list - h.old_virt_base) / 4096;
    if c.meets_pool(image_first, h.image_len.div_ceil(4096))
        || c.meets_pool(si_old_pfn, 1)
        || c.meets_pool(p2m_first, (old_nr * 8).div_ceil(4096))
    {
        return Err(Failure::Plan(
            "the handoff's free pool overlaps the image, the old start_info or the old P2M",
        ));
    }
    // Every AP must be in the purgatory before anything changes.
    wait_arrivals(nr_vcpus)?;
    // Grant entries the old kernel offered: revoked now; those still mapped must fit the
    // image's grant reserve, or the kexec stops before any frame changes hands.
    let revoked = grants::revoke(&mut |mfn| c.scratch_map(mfn).map(|p| p as *mut u8))?;
    c.scratch_unmap()?;
    c.hypercalls += revoked.hypercalls;
    if let Some(b) = revoked.busy().get(grant_reserve as usize) {
        return Err(Failure::GrantInUse {
            grant_ref: b.grant_ref,
            domid: b.domid,
            frame: b.frame as u32,
        });
    }
    // Pass 1: frames taken by fixed PFNs and by holes.
    for p in 0..fill {
        if let Some(old) = c.fixed(p) {
            c.mark(old);
        }
    }
    if let Some(old) = c.fixed(plan.trampoline_pfn) {
        c.mark(old);
    }
    for k in 0..holes + park_pages {
        c.mark(c.clean_start() + k);
    }
    for &pfn in vcpu_info.frames() {
        if c.meets_pool(pfn, 1) || c.is_used(pfn) {
            return Err(Failure::Plan(
                "a placed vcpu_info frame lies in the free pool or in the image",
            ));
        }
        c.mark(pfn);
    }
    let park_first = c.clean_start() + holes;
    // Frames of grants still mapped are kept from the new kernel; the rest of the reserve
    // hides free frames from the pool.
    let mut busy_pfns = [0u64; grants::MAX_BUSY];
    for (i, b) in revoked.busy().iter().enumerate() {
        // SAFETY: Xen maps the M2P read-only for every PV guest; the frame is checked below.
        let pfn = unsafe {
            ((xenpv::layout::M2P_VIRT_START + b.frame * 8) as *const u64).read_volatile()
        };
        if pfn >= old_nr || c.meets_pool(pfn, 1) || c.is_used(pfn) {
            return Err(Failure::Plan(
                "a frame a backend still maps is not the domain's, or lies in the image or the free pool",
            ));
        }
        c.mark(pfn);
        busy_pfns[i] = pfn;
    }
    let fillers = grant_reserve - revoked.busy().len() as u64;
    for k in 0..fillers {
        c.mark(park_first + park_pages + k);
    }
    let work_pages = check_work_frames(
        &c,
        old_nr,
        &[
            (image_first, h.image_len.div_ceil(4096)),
            (si_old_pfn, 1),
            (p2m_first, (old_nr * 8).div_ceil(4096)),
        ],
    )?;

    // Pass 2: the new P2M, written into its frames, and the M2P.
    let mut n = 0usize;
    let mut cursor = 0u64;
    let mut page: *mut u64 = core::ptr::null_mut();
    let mut holes_seen = 0u64;
    for pfn in 0..new_nr {
        let mfn = if pfn < fill {
            match c.fixed(pfn) {
                Some(old) => c.old_p2m[old as usize],
                None => {
                    holes_seen += 1;
                    c.old_p2m[(c.clean_start() + holes_seen - 1) as usize]
                }
            }
        } else if pfn == plan.trampoline_pfn {
            let old = c.fixed(pfn).ok_or(Failure::Plan("no trampoline page"))?;
            c.old_p2m[old as usize]
        } else {
            while cursor < old_nr && c.is_used(cursor) {
                cursor += 1;
            }
            if cursor >= old_nr {
                return Err(Failure::Plan("ran out of frames while renumbering"));
            }
            c.mark(cursor);
            c.old_p2m[cursor as usize]
        };
        if pfn % 512 == 0 {
            page = c.region_page(plan.p2m_pfn + pfn / 512)?;
            for i in 0..512 {
                // SAFETY: `page` maps the P2M frame writable; 512 entries fill it.
                unsafe { page.add(i).write_volatile(0) };
            }
        }
        // SAFETY: `page` maps the P2M frame holding entry `pfn`.
        unsafe { page.add((pfn % 512) as usize).write_volatile(mfn) };
        batch[n] = MmuUpdate {
            ptr: (mfn << 12) | mmu::MACHPHYS_UPDATE,
            val: pfn,
        };
        n += 1;
        if n == batch.len() {
            c.flush_m2p(batch)?;
            n = 0;
        }
    }
    // The hidden frames have no PFN below the new nr_pages.
    let hidden_frames = (0..park_pages)
        .map(|i| park_first + i)
        .chain(vcpu_info.frames().iter().copied())
        .chain(busy_pfns[..revoked.busy().len()].iter().copied())
        .chain((0..fillers).map(|k| park_first + park_pages + k));
    for (i, old) in hidden_frames.enumerate() {
        if n == batch.len() {
            c.flush_m2p(batch)?;
            n = 0;
        }
        batch[n] = MmuUpdate {
            ptr: (c.old_p2m[old as usize] << 12) | mmu::MACHPHYS_UPDATE,
            val: new_nr + i as u64,
        };
        n += 1;
    }
    c.flush_m2p(&batch[..n])?;
    say!(
        "purgatory: frames renumbered: {} PFNs, {} from the free pool, {} hidden, M2P updated; {} frames of working memory ({} hypercalls so far)",
        new_nr,
        holes,
        hidden,
        work_pages,
        c.hypercalls
    );

    // Pass 3: translate the table templates, zero the other holes, finish start_info.
    let mut templates: [(u64, u64, &[u8]); 4] = [(0, 0, &[]); 4];
    let mut nr_templates = 0;
    for (i, s) in image.segments().enumerate() {
        if s.flags & SEG_FLAG_TEMPLATE == 0 || s.kind != SegmentKind::PageTables as u32 {
            continue;
        }
        let data = image
            .data(i)
            .map_err(|_| Failure::Plan("page-table template outside the image"))?;
        if nr_templates == templates.len()
            || (data.len() as u64) < s.nr_pages * 4096
            || s.dest_pfn + s.nr_pages > fill
        {
            return Err(Failure::Plan(
                "a page-table template is short, outside the built PFNs or one too many",
            ));
        }
        templates[nr_templates] = (s.dest_pfn, s.nr_pages, data);
        nr_templates += 1;
    }
    let templates = &templates[..nr_templates];
    if !templates.iter().any(|t| t.0 == plan.pt_pfn) {
        return Err(Failure::Plan(
            "the image has no template for the tables at pt_base",
        ));
    }
    let p2m_range = plan.p2m_pfn..plan.p2m_pfn + plan.p2m_pages;
    let mut nr_clears = 0;
    let mut table_frames = 0u64;
    for pfn in 0..fill {
        if c.fixed(pfn).is_some() || p2m_range.contains(&pfn) {
            continue;
        }
        let Some(&(first, _, template)) = templates.iter().find(|t| pfn >= t.0 && pfn < t.0 + t.1)
        else {
            // A hole that is no table: zeroed by Xen, in batches.
            clears[nr_clears] = MmuextOp {
                cmd: mmuext::CLEAR_PAGE,
                arg1: c.region_mfn(pfn),
                ..Default::default()
            };
            nr_clears += 1;
            if nr_clears == clears.len() {
                c.clear_pages(clears)?;
                nr_clears = 0;
            }
            continue;
        };
        table_frames += 1;
        let old = c.hole_old_pfn(pfn);
        let dst = c.region_page(pfn)?;
        c.drop_alias(old)?;
        for i in 0..512usize {
            let at = ((pfn - first) * 4096) as usize + i * 8;
            let e = u64::from_le_bytes(template[at..at + 8].try_into().unwrap_or([0; 8]));
            let value = if pte::present(e) {
                let target = pte::mfn(e);
                let mfn = if target == plan.trampoline_pfn {
                    c.old_p2m[c.fixed(target).ok_or(Failure::Plan("no trampoline"))? as usize]
                } else if target < fill {
                    c.region_mfn(target)
                } else {
                    return Err(Failure::Plan(
                        "a table template maps a PFN the purgatory does not build",
                    ));
                };
                (e & !pte::ADDR_MASK) | (mfn << 12)
            } else {
                0
            };
            // SAFETY: `dst` maps this table frame (a hole) writable; 512 entries fill it.
            unsafe { dst.add(i).write_volatile(value) };
        }
    }
    c.clear_pages(&clears[..nr_clears])?;
    c.drop_aliases()?;
    let parked = if nr_vcpus > 1 {
        Some(park_aps(&mut c, nr_vcpus, park_first)?)
    } else {
        None
    };
    c.scratch_unmap()?;
    let si_pfn = (plan.start_info_va - plan.virt_base) / 4096;
    let si_old = c
        .fixed(si_pfn)
        .ok_or(Failure::Plan("no start_info segment"))?;
    let si_va = h.old_virt_base + si_old * 4096;
    // SAFETY: the start_info segment's page is mapped writable in the old region (it is an
    // image page in the module), verified, and not used by anything else.
    unsafe {
        let si = &mut *(si_va as *mut StartInfo);
        si.shared_info = old_si.shared_info;
        si.flags |= old_si.flags & sif::PM_MASK;
        if let Some(r) = &rings {
            si.store_mfn = r.store_mfn;
            si.console_mfn = r.console_mfn;
        }
    }

    // Pin the new L4: Xen validates the whole new tree now.
    let new_l4_mfn = c.region_mfn(plan.pt_pfn);
    c.hypercalls += 1;
    // SAFETY: pinning validates the new tables; no mapping in use changes.
    unsafe {
        hypercall::mmuext_op(&[MmuextOp {
            cmd: mmuext::PIN_L4_TABLE,
            arg1: new_l4_mfn,
            ..Default::default()
        }])
    }
    .map_err(|err| Failure::Hypercall {
        call: "mmuext_op(PIN_L4_TABLE)",
        frame: new_l4_mfn,
        err,
    })?;
    say!(
        "purgatory: tables pinned: {} frames (pt_base at pfn {:#x}), L4 mfn {:#x}{}",
        table_frames,
        plan.pt_pfn,
        new_l4_mfn,
        if h.direct_map_va != 0 {
            " (their direct-map aliases dropped)"
        } else {
            ""
        }
    );

    // Descriptor tables and the user L4 the old kernel may have left.
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

    // This VCPU's timers, every VCPU's runstate and time areas and the domain watchdogs, in
    // as few multicalls as the domain's VCPUs need.
    let (vcpu, watchdogs) = quiesce(&mut c)?;
    // Kept channels: their far ends, before the reset closes them.
    // In a domU: the old start_info's channels to xenstored and xenconsoled.
    let (store_port, console_port) = match &rings {
        Some(r) => (r.store_port, r.console_port),
        None => (h.keep_store_port, h.keep_console_port),
    };
    let loopback_allowed = rings.is_none();
    let kept_store = match store_port {
        0 => None,
        p => Some(events::record(p, loopback_allowed)?),
    };
    let kept_console = match console_port {
        0 => None,
        p => Some(events::record(p, loopback_allowed)?),
    };
    // Event channels survive a kexec: the old kernel's VIRQ and IPI bindings would make the
    // new kernel's own bindings fail (-EEXIST) and deliver old events. Closing them all also
    // clears their pending bits and returns the domain to the 2-level ABI.
    c.hypercalls += 1;
    let reset = EvtchnReset { dom: DOMID_SELF };
    // SAFETY: `reset` is a valid evtchn_reset for the whole call; only this domain's ports
    // change, and the purgatory uses none (its console is console_io).
    unsafe { hypercall::event_channel_op(evtchnop::RESET, &reset as *const _ as u64) }.map_err(
        |err| Failure::Hypercall {
            call: "event_channel_op(RESET, DOMID_SELF)",
            frame: 0,
            err,
        },
    )?;
    // SAFETY: as above: the start_info page in the old region, written only here.
    let si = unsafe { &mut *(si_va as *mut StartInfo) };
    if let Some(p) = &parked {
        append_word(si, format_args!("pvkexec.park={:#x}@{:#x}", p.page, p.va))?;
    }
    if !vcpu_info.frames().is_empty() {
        append_word(si, format_args!("pvkexec.vcpu_info={}", vcpu_info))?;
    }
    if grant_reserve > 0 {
        append_word(
            si,
            format_args!("pvkexec.grants_busy={}", BusyList(revoked.busy())),
        )?;
    }
    if let Some(k) = kept_store {
        si.store_evtchn = events::rebind(&k)?;
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
    if let Some(k) = kept_console {
        let port = events::rebind(&k)?;
        // dom0's start_info has VGA information where a domU's has the console channel.
        if si.flags & sif::INITDOMAIN == 0 {
            si.console_evtchn = port;
        }
        // The purgatory's own lines go on through the ring, notifying the new port.
        if let (Some(r), true) = (&rings, guestrt::console::uses_ring()) {
            guestrt::console::use_ring(h.old_virt_base + r.console_old_pfn * 4096, port);
        }
        say!(
            "purgatory: kept console port {} re-bound as port {}",
            k.old_port,
            port
        );
    }
    say!(
        "purgatory: timers stopped, runstate and time areas of {vcpu} VCPUs dropped, {watchdogs} watchdogs destroyed, {} grant entries revoked ({} table frames{}), event channels reset (FIFO ABI gone), descriptor tables dropped",
        revoked.entries,
        revoked.frames,
        if revoked.from_v2 {
            "; the table was v2, set back to v1, which cleared every entry past the reserved refs"
        } else {
            ""
        }
    );

    let old_l4_pfn = (old_si.pt_base - h.old_virt_base) / 4096;
    Ok(Ready {
        new_l4_mfn,
        old_l4_mfn: c.old_p2m[old_l4_pfn as usize],
        start_info_va: plan.start_info_va,
        rsp: plan.rsp,
        entry: plan.entry,
        trampoline_va: plan.trampoline_va,
        hypercalls: c.hypercalls,
        frames: old_nr,
    })
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
fn quiesce(c: &mut Ctx) -> Result<(u32, u32), Failure> {
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

/// TSC cycles the boot VCPU waits for another VCPU: 2^33, 2.9 s at 3 GHz, 8.6 s at 1 GHz
/// (under QEMU TCG the guest's TSC runs at the host's rate). A check reads memory and pauses:
/// waiting costs no hypercall (the VCPU waited for runs on its own physical CPU, or gets it
/// when Xen ends this one's time slice).
pub const WAIT_CYCLES: u64 = 1 << 33;

/// Spins until `done()`, for at most `cycles` TSC cycles; false if it never was.
pub fn spin_until(cycles: u64, mut done: impl FnMut() -> bool) -> bool {
    let start = crate::rdtsc();
    loop {
        if done() {
            return true;
        }
        if crate::rdtsc().wrapping_sub(start) > cycles {
            return done();
        }
        core::hint::spin_loop();
    }
}

/// Waits until every AP reported in at the AP entry, and checks its cleanup.
fn wait_arrivals(nr_vcpus: u64) -> Result<(), Failure> {
    if nr_vcpus <= 1 {
        return Ok(());
    }
    for vcpu in 1..nr_vcpus {
        spin_until(WAIT_CYCLES, || park::arrival(vcpu as usize).is_some());
        match park::arrival(vcpu as usize) {
            Some(Ok(())) => {}
            Some(Err((step, errno))) => return Err(Failure::ApStep { vcpu, step, errno }),
            None => {
                return Err(Failure::ApMissing {
                    vcpu,
                    cycles: WAIT_CYCLES,
                })
            }
        }
    }
    say!(
        "purgatory: VCPUs 1..{} arrived: timers stopped, GDT, LDT and user L4 dropped",
        nr_vcpus - 1
    );
    Ok(())
}

/// Builds the park area in the hidden frames from old PFN `first` (private L4, L3, L2, L1 and
/// the park page), maps the park page at the same VA in the old tables, releases the APs to
/// it and waits until `VCPUOP_is_up` says each is down on its private tables.
fn park_aps(c: &mut Ctx, nr_vcpus: u64, first: u64) -> Result<Parked, Failure> {
    let va = c.h.scratch_va - 4096;
    let mfn = |i: u64| c.old_p2m[(first + i) as usize];
    let (l4, l3, l2, l1, page) = (mfn(0), mfn(1), mfn(2), mfn(3), mfn(4));
    for (_frame, level, next, flags) in [
        (l4, 4u32, l3, pte::UPPER_FLAGS),
        (l3, 3, l2, pte::UPPER_FLAGS),
        (l2, 2, l1, pte::UPPER_FLAGS),
        (l1, 1, page, pte::L1_FLAGS | pte::D),
    ] {
        let dst = c.pool_page(first + 4 - level as u64)?;
        let slot = pte::index(va, level);
        for i in 0..512usize {
            let e = if i == slot { pte::make(next, flags) } else { 0 };
            // SAFETY: `dst` maps this hidden table frame writable; 512 entries fill it.
            unsafe { dst.add(i).write_volatile(e) };
        }
    }
    let blob = park::blob();
    if blob.bytes.len() as u64 > pvhandoff::handoff::PARK_MAILBOX_OFFSET {
        return Err(Failure::Plan("the park code runs into the park mailboxes"));
    }
    let dst = c.pool_page(first + 4)? as *mut u8;
    for i in 0..4096usize {
        let b = blob.bytes.get(i).copied().unwrap_or(0);
        // SAFETY: `dst` maps the park frame writable; 4096 bytes fill it.
        unsafe { dst.add(i).write_volatile(b) };
    }
    // SAFETY: the op's arg1 (8 bytes past its start) inside the park frame just written.
    unsafe { (dst.add(blob.op_offset + 8) as *mut u64).write_unaligned(l4) };
    c.scratch_unmap()?;
    for i in 0..4 {
        c.drop_alias(first + i)?;
    }
    c.drop_aliases()?;
    c.hypercalls += 1;
    // SAFETY: the L1 slot below the scratch VA belongs to the purgatory mapping and is free
    // (checked against the purgatory's size by the caller's plan); it maps the park frame.
    unsafe {
        hypercall::update_va_mapping(va, pte::make(page, pte::L1_FLAGS | pte::D), uvmf::INVLPG)
    }
    .map_err(|err| Failure::Hypercall {
        call: "update_va_mapping(park page)",
        frame: page,
        err,
    })?;
    park::release(va);
    for vcpu in 1..nr_vcpus {
        // SAFETY: the park page is mapped at `va`; the AP writes its NEW_BASEPTR result there
        // just before it goes down.
        let status = || unsafe {
            ((va + blob.status_offset as u64 + vcpu * 8) as *const u64).read_volatile()
        };
        // The result first (a memory read), then Xen's word that the VCPU is down.
        spin_until(WAIT_CYCLES, || status() != u64::MAX);
        let mut polls = 0u64;
        loop {
            c.hypercalls += 1;
            polls += 1;
            // SAFETY: VCPUOP_is_up only reads the VCPU's state.
            match unsafe { hypercall::vcpu_op(vcpuop::IS_UP, vcpu as u32, 0) } {
                Ok(0) => break,
                Ok(_) if polls < 1000 => {
                    spin_until(WAIT_CYCLES / 1000, || false);
                }
                Ok(_) => {
                    return Err(Failure::ApStillUp {
                        vcpu,
                        cycles: WAIT_CYCLES,
                    })
                }
                Err(err) => {
                    return Err(Failure::Hypercall {
                        call: "vcpu_op(is_up)",
                        frame: vcpu,
                        err,
                    })
                }
            }
        }
        let status = status();
        if status == u64::MAX {
            return Err(Failure::ApStillUp {
                vcpu,
                cycles: WAIT_CYCLES,
            });
        }
        if status != 0 {
            return Err(Failure::Hypercall {
                call: "the AP's mmuext_op(NEW_BASEPTR, private L4)",
                frame: l4,
                err: xenpv::XenError::from_errno((status as i64).wrapping_neg()),
            });
        }
    }
    say!(
        "purgatory: VCPUs 1..{} parked: down on private tables (L4 mfn {:#x}) in {} hidden frames",
        nr_vcpus - 1,
        l4,
        PARK_PAGES
    );
    Ok(Parked { page, va })
}

/// The park page of parked VCPUs, for the `pvkexec.park=` command-line word.
pub struct Parked {
    pub page: u64,
    pub va: u64,
}

/// Appends ` <word>` to a start_info command line.
fn append_word(si: &mut StartInfo, word: core::fmt::Arguments) -> Result<(), Failure> {
    struct Line<'a> {
        buf: &'a mut [u8],
        len: usize,
    }
    impl core::fmt::Write for Line<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.len + s.len();
            // Keep the last byte for the terminating NUL.
            if end >= self.buf.len() {
                return Err(core::fmt::Error);
            }
            self.buf[self.len..end].copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    let len = si
        .cmd_line
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(si.cmd_line.len());
    let mut line = Line {
        buf: &mut si.cmd_line,
        len,
    };
    let sep = if len == 0 { "" } else { " " };
    core::fmt::write(&mut line, format_args!("{sep}{word}"))
        .map_err(|_| Failure::Plan("no room on the command line for a pvkexec. word"))?;
    Ok(())
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
    fn frames(&self) -> &[u64] {
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

/// `8:0x1234,9:0x1235` (ref and frame of each grant still mapped); `none` if there is none.
struct BusyList<'a>(&'a [grants::Busy]);

impl core::fmt::Display for BusyList<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{:#x}", b.grant_ref, b.frame)?;
        }
        Ok(())
    }
}
