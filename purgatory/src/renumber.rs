//! Purgatory stage 3 (docs/kexec-image.md): renumbering. The free pool is checked, every frame
//! the new kernel gets at a fixed place or keeps hidden is marked (pass 1), then the new P2M
//! is written as it is computed and Xen's M2P updated in batches (pass 2). Which frame each
//! PFN gets is [`crate::frames`]'s rule.

use crate::failure::Failure;
use crate::frames::Ctx;
use crate::grants::{self, Revoked};
use crate::plan::Checked;
use pvhandoff::renumber::{is_present, Frames};
use xenpv::{mmu, MmuUpdate};

/// The free pool against the plan: what the new region takes from it.
pub struct Pool {
    /// PFNs `[0, fill)` are built here: the region, an unmapped initrd, a relocated P2M and
    /// its tables. The trampoline page lies past them.
    pub fill: u64,
    /// Region PFNs no segment covers: they take the pool's first frames.
    pub holes: u64,
    /// Old PFN ranges (first, count) the purgatory still reads besides the image: the old
    /// start_info, the old P2M list.
    pub keep_out: [(u64, u64); 2],
}

/// Checks that the free pool lies in the domain, holds the holes, the park area and the grant
/// reserve, and none of what the purgatory still reads; then the image's frames
/// ([`check_image_frames`]).
pub fn check_pool(c: &mut Ctx, k: &Checked) -> Result<Pool, Failure> {
    let (h, plan, old_nr) = (c.h, &k.plan, k.old_nr);
    let fill = plan.fill_pages;
    if fill < plan.region_pages || fill > plan.trampoline_pfn || plan.trampoline_pfn >= old_nr {
        return Err(Failure::Plan(
            "the plan's built PFNs overlap the trampoline page or the domain's end",
        ));
    }
    let holes = fill - c.fixed_below(fill);
    let pool = c.pool();
    if !pool.is_ascending() {
        return Err(Failure::Plan(
            "the handoff's free pool list (pool_pfns_va) is not strictly ascending: a frame repeats or the order is wrong",
        ));
    }
    let past_domain = match pool {
        Frames::Run { first, count } => first.checked_add(count).is_none_or(|e| e > old_nr),
        Frames::List(l) => l.last().is_some_and(|&p| p >= old_nr),
    };
    if past_domain {
        return Err(Failure::Plan(
            "the handoff's free pool lies past the domain's frames",
        ));
    }
    if holes + k.park_pages + plan.grant_reserve > pool.len() {
        return Err(Failure::Plan(
            "the free pool is smaller than the new region's holes and the park area",
        ));
    }
    if pool.iter().any(|p| !is_present(c.old_p2m[p as usize])) {
        return Err(Failure::Plan(
            "the handoff's free pool holds a balloon hole (a PFN with no frame)",
        ));
    }
    // The pool must not hold what the purgatory still reads: the image, the old start_info,
    // the old P2M list.
    let si_old_pfn = (h.old_start_info_va - h.old_virt_base) / 4096;
    let p2m_first = (k.old_si.mfn_list - h.old_virt_base) / 4096;
    let p2m_pages = (old_nr * 8).div_ceil(4096);
    let image_in_pool = match c.image() {
        Frames::Run { first, count } => c.meets_pool(first, count),
        image => image.iter().any(|p| c.meets_pool(p, 1)),
    };
    if image_in_pool || c.meets_pool(si_old_pfn, 1) || c.meets_pool(p2m_first, p2m_pages) {
        return Err(Failure::Plan(
            "the handoff's free pool overlaps the image, the old start_info or the old P2M",
        ));
    }
    let keep_out = [(si_old_pfn, 1), (p2m_first, p2m_pages)];
    check_image_frames(c, old_nr, &keep_out)?;
    Ok(Pool {
        fill,
        holes,
        keep_out,
    })
}

/// The image's frames (listed from handoff v6) must be the domain's, present in the old P2M,
/// distinct, and not the old start_info or P2M list: the bitmap finds repeats (each frame
/// marked, then unmarked, before pass 1 marks anything).
fn check_image_frames(c: &mut Ctx, old_nr: u64, keep_out: &[(u64, u64)]) -> Result<(), Failure> {
    let image = c.image();
    let mut bad = None;
    for (i, pfn) in image.iter().enumerate() {
        let inside = |&(first, n): &(u64, u64)| pfn >= first && pfn - first < n;
        // Balloon holes are marked already, and so is a frame listed twice.
        if pfn >= old_nr || c.is_used(pfn) || keep_out.iter().any(inside) {
            bad = Some(i);
            break;
        }
        c.mark(pfn);
    }
    for pfn in image.iter().take(bad.unwrap_or(usize::MAX)) {
        c.unmark(pfn);
    }
    match bad {
        Some(_) => Err(Failure::Plan(
            "an image frame (image_pfns_va) is not the domain's, is a balloon hole, is listed twice, or is the old start_info or P2M list",
        )),
        None => Ok(()),
    }
}

/// The frames kept from the new kernel, in the order they get PFNs past its `nr_pages`.
pub struct Hidden {
    /// Free-pool entry of the park area's first frame (right after the holes).
    pub park_first: u64,
    /// Old PFNs of the frames of grants still mapped.
    busy_pfns: [u64; grants::MAX_BUSY],
    nr_busy: usize,
    /// Free frames that fill the rest of the grant reserve (after the park area).
    fillers: u64,
}

/// Pass 1: marks the frames taken by fixed PFNs, by holes and by the hidden frames.
pub fn mark_taken(
    c: &mut Ctx,
    k: &Checked,
    pool: &Pool,
    revoked: &Revoked,
) -> Result<Hidden, Failure> {
    let (plan, old_nr, park_pages) = (&k.plan, k.old_nr, k.park_pages);
    let (fill, holes) = (pool.fill, pool.holes);
    for p in (0..fill).chain(core::iter::once(plan.trampoline_pfn)) {
        let Some(old) = c.fixed(p) else { continue };
        if old >= old_nr || !is_present(c.old_p2m[old as usize]) {
            return Err(Failure::Plan(
                "a segment's or the trampoline's frame is a balloon hole or past the old P2M",
            ));
        }
        c.mark(old);
    }
    for j in 0..holes + park_pages {
        c.mark(c.pool_pfn(j));
    }
    for &pfn in k.vcpu_info.frames() {
        if c.meets_pool(pfn, 1) || c.is_used(pfn) || c.in_image(pfn) {
            return Err(Failure::Plan(
                "a placed vcpu_info frame lies in the free pool or in the image, or is a balloon hole",
            ));
        }
        c.mark(pfn);
    }
    let park_first = holes;
    // Frames of grants still mapped are kept from the new kernel; the rest of the reserve
    // hides free frames from the pool.
    let mut busy_pfns = [0u64; grants::MAX_BUSY];
    for (i, b) in revoked.busy().iter().enumerate() {
        // SAFETY: Xen maps the M2P read-only for every PV guest; the frame is checked below.
        let pfn = unsafe {
            ((xenpv::layout::M2P_VIRT_START + b.frame * 8) as *const u64).read_volatile()
        };
        if pfn >= old_nr || c.meets_pool(pfn, 1) || c.is_used(pfn) || c.in_image(pfn) {
            return Err(Failure::Plan(
                "a frame a backend still maps is not the domain's, or lies in the image or the free pool",
            ));
        }
        c.mark(pfn);
        busy_pfns[i] = pfn;
    }
    let fillers = plan.grant_reserve - revoked.busy().len() as u64;
    for j in 0..fillers {
        c.mark(c.pool_pfn(park_first + park_pages + j));
    }
    Ok(Hidden {
        park_first,
        busy_pfns,
        nr_busy: revoked.busy().len(),
        fillers,
    })
}

/// Pass 2: the new P2M, written into its frames, and the M2P (the hidden frames get PFNs
/// past the new `nr_pages`).
pub fn write_p2m(
    c: &mut Ctx,
    batch: &mut [MmuUpdate],
    k: &Checked,
    pool: &Pool,
    hidden: &Hidden,
    work_pages: u64,
) -> Result<(), Failure> {
    let (plan, old_nr, park_pages) = (&k.plan, k.old_nr, k.park_pages);
    let (new_nr, fill) = (plan.nr_pages, pool.fill);
    let (park_first, fillers) = (hidden.park_first, hidden.fillers);
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
                    c.old_p2m[c.pool_pfn(holes_seen - 1) as usize]
                }
            }
        } else if pfn == plan.trampoline_pfn {
            let old = c.fixed(pfn).ok_or(Failure::Plan("no trampoline page"))?;
            c.old_p2m[old as usize]
        } else {
            let old = c.take_next(&mut cursor, old_nr)?;
            c.old_p2m[old as usize]
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
    let frames = c.pool();
    let pool_frame = move |j: u64| frames.get(j).unwrap_or(u64::MAX);
    let hidden_frames = (0..park_pages)
        .map(|i| pool_frame(park_first + i))
        .chain(k.vcpu_info.frames().iter().copied())
        .chain(hidden.busy_pfns[..hidden.nr_busy].iter().copied())
        .chain((0..fillers).map(|j| pool_frame(park_first + park_pages + j)));
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
        pool.holes,
        plan.hidden_pages,
        work_pages,
        c.hypercalls
    );
    Ok(())
}
