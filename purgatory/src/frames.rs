//! The renumbering's bookkeeping (docs/kexec-image.md, purgatory stage 3): which old frame each
//! new PFN gets (the rule is `pvhandoff::renumber`, unit-tested on the host), which frames are
//! taken, and the hypercalls that write frames on the way. Frames that become page tables
//! lose their direct-map alias first, so that Xen can validate them.
//!
//! The image's frames and the free pool are runs of old PFNs or, from handoff version 6, lists
//! ([`Frames`]): the `k`-th hole takes pool entry `k`. A segment's zero-run pages (image
//! version 3) are holes too: the image holds no frame for them.
//!
//! Working memory (the frame bitmap and the hypercall batches) is the handoff's (version 5),
//! sized to the domain, so the purgatory's own size does not depend on the domain's. Hole
//! frames are written through the kernel side's direct map when there is one (no hypercall per
//! page); batches are as large as the working memory holds, and the direct-map aliases of
//! frames that become tables are dropped in one multicall.

use crate::failure::Failure;
use pvhandoff::handoff::{
    Handoff, WORK_BITMAP_OFFSET, WORK_M2P_BATCH, WORK_M2P_OFFSET, WORK_MMUEXT_BATCH,
    WORK_MMUEXT_OFFSET, WORK_MULTICALL_BATCH, WORK_MULTICALL_OFFSET,
};
use pvhandoff::image::{
    ImageView, PlanRecord, SEG_FLAG_METADATA, SEG_FLAG_PURGATORY_MAPPING, SEG_FLAG_TEMPLATE,
};
use pvhandoff::renumber::{FrameBitmap, Frames, Placed, Placement, Source};
use xenpv::{hc, hypercall, pte, uvmf, MmuUpdate, MmuextOp, MulticallEntry, StartInfo};

/// The working memory's batches (the bitmap lives in [`Ctx`]).
pub struct Batches<'w> {
    pub m2p: &'w mut [MmuUpdate],
    pub ext: &'w mut [MmuextOp],
}

/// The renumbering's state, shared by the stages that hand out and write frames.
pub struct Ctx<'a> {
    pub h: &'a Handoff,
    pub plan: PlanRecord,
    pub old_p2m: &'a [u64],
    /// The image's placed segments, a domU's two ring pages, the trampoline, the image's
    /// frames and the pool.
    placement: Placement<'a>,
    /// Hypercalls made so far (reported before the switch).
    pub hypercalls: u64,
    /// One bit per old PFN: the frame has its new place (working memory).
    used: FrameBitmap<'a>,
    /// Direct-map aliases to drop, as `update_va_mapping` entries of one multicall.
    pub alias_drops: &'a mut [MulticallEntry],
    nr_alias_drops: usize,
    /// The scratch VA maps a frame now.
    scratch_live: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(
        h: &'a Handoff,
        image: &ImageView<'a>,
        plan: PlanRecord,
        old_p2m: &'a [u64],
        used: &'a mut [u64],
        alias_drops: &'a mut [MulticallEntry],
    ) -> Result<Self, Failure> {
        let mut c = Ctx {
            h,
            plan,
            old_p2m,
            placement: Placement::new(plan.trampoline_pfn, image_frames(h), pool_frames(h)),
            hypercalls: 0,
            used: FrameBitmap::new(used),
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
                .ok()
                .filter(|o| o.is_multiple_of(4096))
                .ok_or(Failure::Plan(
                    "segment outside the image or not page aligned in it",
                ))?;
            if s.flags & SEG_FLAG_PURGATORY_MAPPING != 0 {
                c.placement
                    .set_trampoline(off / 4096)
                    .map_err(Failure::Plan)?;
            } else {
                // A zero run's pages take no image frame: they are holes, cleared in stage 4.
                c.placement
                    .add(Placed {
                        dest_pfn: s.dest_pfn,
                        pages: s.len.div_ceil(4096),
                        from: Source::Image(off / 4096),
                        zeros: image.zeros(i),
                    })
                    .map_err(Failure::Plan)?;
            }
        }
        if !c.placement.has_trampoline() {
            return Err(Failure::Plan("the image has no purgatory segment"));
        }
        // A ballooned domain's holes: no PFN gets them, and a frame the handoff names there
        // is refused as taken.
        c.used.mark_absent(old_p2m);
        Ok(c)
    }

    /// Gives new `pfn` the old frame at `old_pfn` (a domU ring page).
    pub fn add_ring(&mut self, pfn: u64, old_pfn: u64) -> Result<(), Failure> {
        self.placement.add_ring(pfn, old_pfn).map_err(Failure::Plan)
    }

    /// The old PFN whose frame a placed segment (or the trampoline) gives new `pfn`, if any.
    pub fn fixed(&self, pfn: u64) -> Option<u64> {
        self.placement.fixed(pfn)
    }

    /// Old PFN of free-pool entry `k` (holes first, then the park area and grant reserve).
    pub fn pool_pfn(&self, k: u64) -> u64 {
        self.placement.pool_pfn(k)
    }

    /// The free pool's old PFNs (a run, or the handoff v6 list).
    pub fn pool(&self) -> Frames<'a> {
        self.placement.pool()
    }

    /// The image's old PFNs (a run, or the handoff v6 list).
    pub fn image(&self) -> Frames<'a> {
        self.placement.image()
    }

    /// Whether old PFN `old` holds a page of the image.
    pub fn in_image(&self, old: u64) -> bool {
        self.placement.in_image(old)
    }

    /// Old PFN of the hole frame given to new `pfn` (a region PFN no segment covers).
    pub fn hole_old_pfn(&self, pfn: u64) -> u64 {
        self.placement.hole_old_pfn(pfn)
    }

    /// Whether old PFNs `[first, first + count)` meet the free pool.
    pub fn meets_pool(&self, first: u64, count: u64) -> bool {
        self.placement.meets_pool(first, count)
    }

    /// Queues the removal of the kernel side's direct-map alias of an old frame about to
    /// become a table; [`Ctx::drop_aliases`] sends the queue as one multicall.
    pub fn drop_alias(&mut self, old_pfn: u64) -> Result<(), Failure> {
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
    pub fn drop_aliases(&mut self) -> Result<(), Failure> {
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
    pub fn pool_page(&mut self, old_pfn: u64) -> Result<*mut u64, Failure> {
        if self.h.direct_map_va != 0 {
            return Ok((self.h.direct_map_va + old_pfn * 4096) as *mut u64);
        }
        self.scratch_map(self.old_p2m[old_pfn as usize])
    }

    /// A writable view of the frame new region `pfn` gets.
    pub fn region_page(&mut self, pfn: u64) -> Result<*mut u64, Failure> {
        match self.fixed(pfn) {
            Some(_) => self.scratch_map(self.region_mfn(pfn)),
            None => self.pool_page(self.hole_old_pfn(pfn)),
        }
    }

    pub fn mark(&mut self, old: u64) {
        self.used.mark(old);
    }

    pub fn is_used(&self, old: u64) -> bool {
        self.used.is_used(old)
    }

    pub fn unmark(&mut self, old: u64) {
        self.used.unmark(old);
    }

    /// The next frame for the rest of the PFNs: the first unused old PFN from `cursor` on,
    /// marked.
    pub fn take_next(&mut self, cursor: &mut u64, old_nr: u64) -> Result<u64, Failure> {
        self.used
            .take_next(cursor, old_nr)
            .ok_or(Failure::Plan("ran out of frames while renumbering"))
    }

    /// New frame (MFN) of a PFN inside the new region.
    pub fn region_mfn(&self, pfn: u64) -> u64 {
        if let Some(old) = self.fixed(pfn) {
            return self.old_p2m[old as usize];
        }
        self.old_p2m[self.hole_old_pfn(pfn) as usize]
    }

    /// Number of region PFNs below `pfn` that placed segments cover (segments are ranges).
    pub fn fixed_below(&self, pfn: u64) -> u64 {
        self.placement.fixed_below(pfn)
    }

    pub fn scratch_map(&mut self, mfn: u64) -> Result<*mut u64, Failure> {
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

    pub fn scratch_unmap(&mut self) -> Result<(), Failure> {
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
    pub fn clear_pages(&mut self, ops: &[MmuextOp]) -> Result<(), Failure> {
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

    pub fn flush_m2p(&mut self, batch: &[MmuUpdate]) -> Result<(), Failure> {
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

/// The handoff's working memory for a domain of `old_nr` frames: the bitmap's words, the
/// batches and the multicall entries. Its frames are checked later ([`check_work_frames`]).
pub fn working_memory(
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
        // Cleared by the bitmap (`FrameBitmap::new`).
        let used = core::slice::from_raw_parts_mut(at(WORK_BITMAP_OFFSET) as *mut u64, words);
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
pub fn check_work_frames(c: &Ctx, old_nr: u64, keep_out: &[(u64, u64)]) -> Result<u64, Failure> {
    let h = c.h;
    for k in 0..h.work_pages {
        // SAFETY: the handoff lists work_pages old PFNs at work_pfns_va; read only.
        let pfn = unsafe {
            (h.work_pfns_va as *const u64)
                .add(k as usize)
                .read_volatile()
        };
        let inside = |&(first, n): &(u64, u64)| pfn >= first && pfn - first < n;
        if pfn >= old_nr
            || c.meets_pool(pfn, 1)
            || c.in_image(pfn)
            || keep_out.iter().any(inside)
            || c.is_used(pfn)
        {
            return Err(Failure::Plan(
                "a working-memory frame (work_pfns_va) is not the domain's, or lies in the free pool, the image, the old start_info or P2M list, or is a frame the new kernel gets at a fixed place",
            ));
        }
    }
    Ok(h.work_pages)
}

/// The image's old PFNs: the handoff v6 list, or (its VA 0) the pages of the old initial
/// region under `image_va`.
fn image_frames(h: &Handoff) -> Frames<'static> {
    let count = h.image_len.div_ceil(4096);
    if h.image_pfns_va == 0 {
        return Frames::Run {
            first: (h.image_va - h.old_virt_base) / 4096,
            count,
        };
    }
    // SAFETY: the handoff lists one u64 per image page at image_pfns_va (aligned and inside
    // the address space: `Handoff::check`); the old kernel's memory, only read.
    Frames::List(unsafe {
        core::slice::from_raw_parts(h.image_pfns_va as *const u64, count as usize)
    })
}

/// The free pool's old PFNs: the handoff v6 list, or (its VA 0) the v5 range.
fn pool_frames(h: &Handoff) -> Frames<'static> {
    if h.pool_pfns_va == 0 {
        return Frames::Run {
            first: h.free_first_pfn,
            count: h.free_pages,
        };
    }
    // SAFETY: the handoff lists pool_pages u64s at pool_pfns_va (aligned and inside the
    // address space: `Handoff::check`); the old kernel's memory, only read.
    Frames::List(unsafe {
        core::slice::from_raw_parts(h.pool_pfns_va as *const u64, h.pool_pages as usize)
    })
}

/// The old P2M list the old start_info names.
pub fn old_p2m(old_si: &StartInfo) -> &'static [u64] {
    // SAFETY: the old P2M list is mapped at mfn_list for nr_pages entries; only read.
    unsafe { core::slice::from_raw_parts(old_si.mfn_list as *const u64, old_si.nr_pages as usize) }
}
