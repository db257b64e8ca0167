//! The purgatory's renumbering rules (docs/kexec-image.md, purgatory stage 3), as pure logic
//! unit-tested on the host. Which old frame each new PFN gets:
//! - a PFN covered by a placed segment gets the frame that already holds those bytes (the
//!   image's pages in the old kernel's memory, a run or the handoff v6 list): nothing is
//!   copied; a page of a segment's zero run (image version 3) has no frame in the image and is
//!   a hole like the segment's bss;
//! - the trampoline PFN gets the purgatory's first frame (the trampoline page);
//! - other PFNs of the built PFNs ("holes": P2M list, bss, tables, stack, padding) get frames
//!   of the handoff's free pool in its order: the `k`-th hole takes pool entry `k` (a run of
//!   old PFNs, or the handoff v6 list, [`Frames`]);
//! - all remaining PFNs get the remaining frames in ascending old-PFN order ([`FrameBitmap`]).
//!
//! And which frames are kept from the new kernel ([`hidden_pages`]): the loader counts them
//! into the plan record, the purgatory checks that count, the probe checks what it was told.

use crate::image::{
    ImageView, PlanRecord, MAX_SEGMENTS, PARK_PAGES, SEG_FLAG_METADATA, SEG_FLAG_PURGATORY_MAPPING,
    SEG_FLAG_TEMPLATE,
};
use crate::zero::SegmentZeros;

/// Old frames the handoff names: a run of old PFNs (the v5 rule) or a list (version 6).
#[derive(Clone, Copy, Debug)]
pub enum Frames<'a> {
    /// Old PFNs `[first, first + count)`.
    Run { first: u64, count: u64 },
    /// Old PFNs as listed. [`Frames::meets`] needs it strictly ascending (the free pool's
    /// list); the image's list may be in any order.
    List(&'a [u64]),
}

impl<'a> Frames<'a> {
    pub const NONE: Frames<'static> = Frames::Run { first: 0, count: 0 };

    pub fn len(&self) -> u64 {
        match *self {
            Frames::Run { count, .. } => count,
            Frames::List(l) => l.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Old PFN of entry `i`; `None` past the end.
    pub fn get(&self, i: u64) -> Option<u64> {
        match *self {
            Frames::Run { first, count } => (i < count).then(|| first + i),
            Frames::List(l) => l.get(usize::try_from(i).ok()?).copied(),
        }
    }

    /// Whether any of old PFNs `[first, first + count)` is one of these frames (a list must be
    /// strictly ascending: one binary search).
    pub fn meets(&self, first: u64, count: u64) -> bool {
        let end = first.saturating_add(count);
        match *self {
            Frames::Run { first: f, count: c } => first < f.saturating_add(c) && f < end,
            Frames::List(l) => {
                let at = l.partition_point(|&p| p < first);
                l.get(at).is_some_and(|&p| p < end)
            }
        }
    }

    /// Whether a list is strictly ascending (a run always is).
    pub fn is_ascending(&self) -> bool {
        match *self {
            Frames::Run { .. } => true,
            Frames::List(l) => l.windows(2).all(|w| w[0] < w[1]),
        }
    }

    /// Every old PFN, in order.
    pub fn iter(self) -> impl Iterator<Item = u64> + 'a {
        (0..self.len()).filter_map(move |i| self.get(i))
    }
}

/// A run of new PFNs `[dest_pfn, dest_pfn + pages)` that takes old frames: a segment's pages
/// of the image, or a domU's ring page. The pages of `zeros` take none: they are holes, and
/// the pages the image stores follow one another from `from`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placed<'a> {
    pub dest_pfn: u64,
    /// The segment's content pages, zero-run pages included.
    pub pages: u64,
    pub from: Source,
    pub zeros: SegmentZeros<'a>,
}

impl Placed<'_> {
    /// Pages that take a frame of the image (the zero-run pages do not).
    pub fn stored_pages(&self) -> u64 {
        self.pages - self.zeros.zero_pages().min(self.pages)
    }

    /// Pages of the run below new PFN `pfn` that take a frame.
    fn fixed_below(&self, pfn: u64) -> u64 {
        let covered = (self.dest_pfn + self.pages)
            .min(pfn)
            .saturating_sub(self.dest_pfn);
        covered - self.zeros.zeros_below(covered)
    }
}

/// Where a placed run's old frames come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Source {
    /// The image's pages from this page index on (their old PFNs are the image's frames').
    Image(u64),
    /// Old PFNs from this one on (a ring page).
    Run(u64),
    /// Counted only ([`pool_demand`]): no frame.
    #[default]
    Counted,
}

/// Placed runs a placement holds: the image's segments and a domU's two ring pages.
pub const MAX_PLACED: usize = MAX_SEGMENTS as usize + 2;

/// The fixed part of the renumbering: placed runs, the trampoline page, the image's frames and
/// the free pool.
#[derive(Clone, Copy, Debug)]
pub struct Placement<'a> {
    placed: [Placed<'a>; MAX_PLACED],
    nr_placed: usize,
    trampoline_pfn: u64,
    trampoline_old_pfn: u64,
    image: Frames<'a>,
    pool: Frames<'a>,
}

impl<'a> Placement<'a> {
    /// A placement with no runs and no trampoline frame yet ([`Placement::set_trampoline`]):
    /// image page `i` is old PFN `image.get(i)`, hole `k` takes old PFN `pool.get(k)`.
    pub fn new(trampoline_pfn: u64, image: Frames<'a>, pool: Frames<'a>) -> Self {
        Placement {
            placed: [Placed::default(); MAX_PLACED],
            nr_placed: 0,
            trampoline_pfn,
            trampoline_old_pfn: u64::MAX,
            image,
            pool,
        }
    }

    /// New `trampoline_pfn` takes the frame of image page `page` (the purgatory's first page).
    pub fn set_trampoline(&mut self, page: u64) -> Result<(), &'static str> {
        self.trampoline_old_pfn = self
            .image
            .get(page)
            .ok_or("the purgatory segment lies past the image's frames")?;
        Ok(())
    }

    /// Whether the trampoline's frame was set.
    pub fn has_trampoline(&self) -> bool {
        self.trampoline_old_pfn != u64::MAX
    }

    /// Adds a segment's run; `Err` when [`MAX_PLACED`] runs are held already, or an image run
    /// runs past the image's frames.
    pub fn add(&mut self, p: Placed<'a>) -> Result<(), &'static str> {
        if self.nr_placed == self.placed.len() {
            return Err("more placed segments than the purgatory holds");
        }
        if let Source::Image(first) = p.from {
            if first
                .checked_add(p.stored_pages())
                .is_none_or(|e| e > self.image.len())
            {
                return Err("a segment lies past the image's frames");
            }
        }
        self.placed[self.nr_placed] = p;
        self.nr_placed += 1;
        Ok(())
    }

    /// Gives new `pfn` the old frame at `old_pfn` (a domU ring page): it must be no PFN a
    /// run fills, and the frame no image page's, the trampoline's or the free pool's.
    pub fn add_ring(&mut self, pfn: u64, old_pfn: u64) -> Result<(), &'static str> {
        let taken = self.covers(pfn)
            || old_pfn == self.trampoline_old_pfn
            || self.meets_pool(old_pfn, 1)
            || self.in_image(old_pfn)
            || self
                .placed()
                .iter()
                .any(|p| matches!(p.from, Source::Run(o) if old_pfn >= o && old_pfn - o < p.pages));
        if taken || self.nr_placed == self.placed.len() {
            return Err(
                "a xenstore or console ring frame lies in the image, the free pool or a segment's PFNs",
            );
        }
        self.add(Placed {
            dest_pfn: pfn,
            pages: 1,
            from: Source::Run(old_pfn),
            zeros: SegmentZeros::NONE,
        })
    }

    /// Whether old PFN `old` holds an image page (a run: one range check; a list: a scan).
    pub fn in_image(&self, old: u64) -> bool {
        match self.image {
            Frames::Run { .. } => self.image.meets(old, 1),
            Frames::List(l) => l.contains(&old),
        }
    }

    fn placed(&self) -> &[Placed<'a>] {
        &self.placed[..self.nr_placed]
    }

    fn run_at(&self, pfn: u64) -> Option<&Placed<'a>> {
        self.placed()
            .iter()
            .find(|p| pfn >= p.dest_pfn && pfn - p.dest_pfn < p.pages)
    }

    /// Whether new `pfn` lies in a placed run (a zero-run page included) or is the trampoline.
    pub fn covers(&self, pfn: u64) -> bool {
        pfn == self.trampoline_pfn || self.run_at(pfn).is_some()
    }

    /// The old PFN whose frame a placed run (or the trampoline) gives new `pfn`, if any; a
    /// zero-run page has none (it is a hole).
    pub fn fixed(&self, pfn: u64) -> Option<u64> {
        if pfn == self.trampoline_pfn {
            return Some(self.trampoline_old_pfn);
        }
        let p = self.run_at(pfn)?;
        let i = pfn - p.dest_pfn;
        let stored = p.zeros.stored_index(i)?;
        match p.from {
            Source::Image(first) => self.image.get(first + stored),
            Source::Run(old) => Some(old + i),
            Source::Counted => Some(u64::MAX),
        }
    }

    /// Number of PFNs below `pfn` that placed runs give a frame (runs are ranges; their
    /// zero-run pages take none).
    pub fn fixed_below(&self, pfn: u64) -> u64 {
        self.placed().iter().map(|p| p.fixed_below(pfn)).sum()
    }

    /// Holes among the built PFNs `[0, fill)`: they take the pool's first frames.
    pub fn holes(&self, fill: u64) -> u64 {
        fill - self.fixed_below(fill)
    }

    /// The free pool's frames.
    pub fn pool(&self) -> Frames<'a> {
        self.pool
    }

    /// The image's frames.
    pub fn image(&self) -> Frames<'a> {
        self.image
    }

    /// Old PFN of pool entry `k` (`u64::MAX` past the pool's end: the purgatory checks the
    /// pool's size against the plan before it asks).
    pub fn pool_pfn(&self, k: u64) -> u64 {
        self.pool.get(k).unwrap_or(u64::MAX)
    }

    /// Old PFN of the pool frame hole `pfn` (a built PFN no run covers) gets: entry `k` for
    /// the `k`-th hole.
    pub fn hole_old_pfn(&self, pfn: u64) -> u64 {
        self.pool_pfn(pfn - self.fixed_below(pfn))
    }

    /// Whether old PFNs `[first, first + count)` meet the free pool.
    pub fn meets_pool(&self, first: u64, count: u64) -> bool {
        self.pool.meets(first, count)
    }
}

/// One bit per old PFN: the frame has its new place. The bits live in the caller's memory
/// (the purgatory's working memory).
pub struct FrameBitmap<'a> {
    words: &'a mut [u64],
}

impl<'a> FrameBitmap<'a> {
    /// A cleared bitmap over `words` (64 frames each).
    pub fn new(words: &'a mut [u64]) -> Self {
        words.fill(0);
        FrameBitmap { words }
    }

    pub fn mark(&mut self, old: u64) {
        self.words[(old / 64) as usize] |= 1 << (old % 64);
    }

    pub fn unmark(&mut self, old: u64) {
        self.words[(old / 64) as usize] &= !(1 << (old % 64));
    }

    pub fn is_used(&self, old: u64) -> bool {
        self.words[(old / 64) as usize] & (1 << (old % 64)) != 0
    }

    /// The first unused old PFN from `*cursor` on and below `end`, marked and returned; the
    /// cursor moves past it. `None` when every frame is used.
    /// Marks every old PFN whose P2M entry is a hole as used, so that no PFN gets it.
    pub fn mark_absent(&mut self, p2m: &[u64]) {
        for (pfn, &e) in p2m.iter().enumerate() {
            if !is_present(e) {
                self.mark(pfn as u64);
            }
        }
    }

    pub fn take_next(&mut self, cursor: &mut u64, end: u64) -> Option<u64> {
        while *cursor < end && self.is_used(*cursor) {
            *cursor += 1;
        }
        if *cursor >= end {
            return None;
        }
        self.mark(*cursor);
        Some(*cursor)
    }
}

/// Frames of the park area for an old kernel that ran `vcpus` VCPUs: with more than one the
/// APs are parked in [`PARK_PAGES`] hidden frames (docs/smp.md).
/// Linux's (and Xen's) marker for a P2M entry with no frame: a hole a balloon driver left.
pub const INVALID_P2M_ENTRY: u64 = !0;

/// Whether a P2M entry names a frame of the domain. Linux also flags identity and foreign
/// entries in the top two bits; neither is a frame the domain owns.
pub const fn is_present(entry: u64) -> bool {
    entry != INVALID_P2M_ENTRY && entry >> 62 == 0
}

/// The frames an old P2M names (a ballooned domain's holes left out).
pub fn present_frames(p2m: &[u64]) -> u64 {
    p2m.iter().filter(|&&e| is_present(e)).count() as u64
}

/// Whether a plan fits the old P2M: its length is `old_p2m_len` (0: `domain_pages`, the
/// records written before balloon holes were handled) and `present` of its entries name a
/// frame, which must be the plan's `domain_pages`.
pub fn plan_matches_p2m(
    domain_pages: u64,
    old_p2m_len: u64,
    p2m_len: u64,
    present: u64,
) -> Result<(), &'static str> {
    let want_len = if old_p2m_len == 0 {
        domain_pages
    } else {
        old_p2m_len
    };
    if want_len != p2m_len {
        return Err("the image was built for another domain size (nr_pages differs)");
    }
    if present != domain_pages {
        return Err(
            "the image was built for another number of present frames (the old P2M's valid entries are not the plan's domain_pages: ballooned since the load?)",
        );
    }
    Ok(())
}

pub const fn park_pages(vcpus: u64) -> u64 {
    if vcpus > 1 {
        PARK_PAGES
    } else {
        0
    }
}

/// The park area an image built by `plan` hides for `vcpus` VCPUs: none when it was built for
/// a hypervisor that resets VCPUs ([`PlanRecord::resets_vcpus`]: nothing is parked).
pub const fn plan_park_pages(plan: &PlanRecord, vcpus: u64) -> u64 {
    if plan.resets_vcpus() {
        0
    } else {
        park_pages(vcpus)
    }
}

/// Frames an image takes from the handoff's free pool when `nr_vcpus` VCPUs are handed over
/// (the purgatory's rule, `check_pool`): the holes of its built PFNs (no segment, no domU
/// ring page covers them, or a segment's zero run does), the park area and the grant reserve. The kernel side's pool must
/// hold that many, or the purgatory refuses the image after the old kernel shut down: the
/// loader checks it first.
pub fn pool_demand(image: &ImageView, nr_vcpus: u64) -> Result<u64, &'static str> {
    let plan = image
        .plan_record()
        .ok_or("the image has no valid plan record")?;
    let mut p = Placement::new(plan.trampoline_pfn, Frames::NONE, Frames::NONE);
    for (i, s) in image.segments().enumerate() {
        if s.flags & (SEG_FLAG_TEMPLATE | SEG_FLAG_METADATA | SEG_FLAG_PURGATORY_MAPPING) == 0 {
            p.add(Placed {
                dest_pfn: s.dest_pfn,
                pages: s.len.div_ceil(4096),
                from: Source::Counted,
                zeros: image.zeros(i),
            })?;
        }
    }
    // A domU image's ring PFNs take the old ring frames, not the pool's.
    for ring in [plan.xenstore_pfn, plan.console_pfn] {
        if ring != 0 && ring < plan.fill_pages && !p.covers(ring) {
            p.add(Placed {
                dest_pfn: ring,
                pages: 1,
                from: Source::Counted,
                zeros: SegmentZeros::NONE,
            })?;
        }
    }
    p.holes(plan.fill_pages)
        .checked_add(plan_park_pages(&plan, nr_vcpus))
        .and_then(|n| n.checked_add(plan.grant_reserve))
        .ok_or("the plan's pool demand overflows")
}

/// Frames kept from the new kernel (docs/smp.md): the park area, each distinct frame holding a
/// placed `vcpu_info`, and the grant reserve. `None` when the sum does not fit in 64 bits.
pub fn hidden_pages(vcpus: u64, vcpu_info_frames: u64, grant_reserve: u64) -> Option<u64> {
    park_pages(vcpus)
        .checked_add(vcpu_info_frames)?
        .checked_add(grant_reserve)
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;

    /// Image pages (old PFNs, listed): 100, 101, 102, 200, 300, 400. Segments at PFNs 0..3
    /// (image pages 0..3) and 5..6 (page 3), trampoline 20 (page 4), pool from old 50, 10
    /// frames.
    const IMAGE: [u64; 6] = [100, 101, 102, 200, 300, 400];

    fn sample() -> Placement<'static> {
        sample_with_pool(Frames::Run {
            first: 50,
            count: 10,
        })
    }

    /// [`sample`]'s segments and trampoline with another pool.
    fn sample_with_pool(pool: Frames<'static>) -> Placement<'static> {
        let mut p = Placement::new(20, Frames::List(&IMAGE), pool);
        assert!(!p.has_trampoline());
        p.set_trampoline(4).unwrap();
        assert!(p.has_trampoline());
        p.add(Placed {
            dest_pfn: 0,
            pages: 3,
            from: Source::Image(0),
            zeros: SegmentZeros::NONE,
        })
        .unwrap();
        p.add(Placed {
            dest_pfn: 5,
            pages: 1,
            from: Source::Image(3),
            zeros: SegmentZeros::NONE,
        })
        .unwrap();
        p
    }

    #[test]
    fn fixed_pfns_take_their_runs_frames_and_holes_the_pool_in_order() {
        let p = sample();
        assert_eq!(p.fixed(0), Some(100));
        assert_eq!(p.fixed(2), Some(102));
        assert_eq!(p.fixed(3), None);
        assert_eq!(p.fixed(5), Some(200));
        assert_eq!(p.fixed(20), Some(300));
        assert_eq!(p.fixed_below(0), 0);
        assert_eq!(p.fixed_below(4), 3);
        assert_eq!(p.fixed_below(8), 4);
        // Built PFNs 0..8: 4 fixed, holes 3, 4, 6, 7 take pool frames 50, 51, 52, 53.
        assert_eq!(p.holes(8), 4);
        let holes: [u64; 4] = [3, 4, 6, 7].map(|pfn| p.hole_old_pfn(pfn));
        assert_eq!(holes, [50, 51, 52, 53]);
    }

    #[test]
    fn balloon_holes_are_skipped_and_counted() {
        let h = INVALID_P2M_ENTRY;
        let p2m = [10, h, 12, h, h, 15, 1 << 62 | 16, 17];
        assert_eq!(present_frames(&p2m), 4);
        let mut words = [0u64; 1];
        let mut b = FrameBitmap::new(&mut words);
        b.mark_absent(&p2m);
        b.mark(0);
        let mut cursor = 0;
        let taken: [Option<u64>; 3] = core::array::from_fn(|_| b.take_next(&mut cursor, 8));
        assert_eq!(taken, [Some(2), Some(5), Some(7)]);
        assert_eq!(b.take_next(&mut cursor, 8), None);
    }

    #[test]
    fn a_plan_must_match_the_p2m_length_and_its_present_frames() {
        assert_eq!(plan_matches_p2m(100, 0, 100, 100), Ok(()));
        assert_eq!(plan_matches_p2m(75, 100, 100, 75), Ok(()));
        assert!(plan_matches_p2m(100, 0, 100, 75).is_err());
        assert!(plan_matches_p2m(75, 0, 100, 75).is_err());
        assert!(plan_matches_p2m(75, 100, 100, 74).is_err());
        assert!(plan_matches_p2m(75, 120, 100, 75).is_err());
    }

    /// A zero-run table for segment 2 with runs where `zero` is true.
    fn zero_table(zero: &[bool]) -> std::vec::Vec<u8> {
        use crate::zero::{find_runs, ZeroRun, ZeroRunsHeader, ZERO_RUNS_MAGIC};
        use xenpv::Pod;
        let runs: std::vec::Vec<(u64, u64)> =
            find_runs(zero.len() as u64 * 4096, |p| zero[p as usize]).collect();
        let h = ZeroRunsHeader {
            magic: ZERO_RUNS_MAGIC,
            nr_runs: runs.len() as u32,
            _reserved: 0,
        };
        let mut out = h.as_bytes().to_vec();
        let mut zeros_before = 0;
        for (first_page, pages) in runs {
            let r = ZeroRun {
                segment: 2,
                _reserved: 0,
                first_page,
                pages,
                zeros_before,
            };
            out.extend_from_slice(r.as_bytes());
            zeros_before += pages;
        }
        out
    }

    proptest::proptest! {
        /// A segment's zero-run pages take no frame and count as holes (pool frames in order);
        /// its stored pages take the image's frames in order; `fixed_below` counts exactly the
        /// PFNs that take a frame, so hole `k` is pool entry `k`.
        #[test]
        fn zero_run_pages_are_holes(zero in proptest::collection::vec(proptest::bool::ANY, 1..40),
                                    dest in 0u64..5) {
            let bytes = zero_table(&zero);
            let table = crate::zero::ZeroRuns::parse(&bytes).unwrap();
            let zeros = table.of_segment(2);
            let pages = zero.len() as u64;
            let stored = pages - zeros.zero_pages();
            let image = Frames::Run { first: 100, count: stored + 1 };
            let pool = Frames::Run { first: 500, count: 100 };
            let fill = dest + pages + 2;
            let mut p = Placement::new(fill, image, pool);
            p.set_trampoline(stored).unwrap();
            let seg = Placed { dest_pfn: dest, pages, from: Source::Image(0), zeros };
            let mut short = Placement::new(fill, Frames::Run { first: 100, count: stored.saturating_sub(1) }, pool);
            proptest::prop_assert_eq!(short.add(seg).is_ok(), stored == 0);
            p.add(seg).unwrap();
            let mut next_image = 100;
            let mut next_hole = 500;
            let mut taking = 0;
            for pfn in 0..fill {
                proptest::prop_assert_eq!(p.fixed_below(pfn), taking);
                let in_seg = pfn >= dest && pfn < dest + pages;
                proptest::prop_assert_eq!(p.covers(pfn), in_seg);
                match p.fixed(pfn) {
                    Some(old) => {
                        proptest::prop_assert!(in_seg && !zero[(pfn - dest) as usize]);
                        proptest::prop_assert_eq!(old, next_image);
                        next_image += 1;
                        taking += 1;
                    }
                    None => {
                        proptest::prop_assert!(!in_seg || zero[(pfn - dest) as usize]);
                        proptest::prop_assert_eq!(p.hole_old_pfn(pfn), next_hole);
                        next_hole += 1;
                    }
                }
            }
            proptest::prop_assert_eq!(next_image, 100 + stored);
            proptest::prop_assert_eq!(p.holes(fill), fill - stored);
            // A ring page may not take a zero-run page's PFN either.
            if let Some(z) = zero.iter().position(|&z| z) {
                proptest::prop_assert!(p.add_ring(dest + z as u64, 9000).is_err());
            }
        }
    }

    #[test]
    fn pool_overlap_is_half_open() {
        let p = sample();
        assert!(!p.meets_pool(40, 10));
        assert!(p.meets_pool(40, 11));
        assert!(p.meets_pool(59, 1));
        assert!(!p.meets_pool(60, 5));
    }

    #[test]
    fn ring_frames_must_be_free_of_runs_pool_and_trampoline() {
        let mut p = sample();
        // A PFN a segment fills, the trampoline's frame, a pool frame, a segment's frame, an
        // image page no segment places.
        assert!(p.add_ring(1, 500).is_err());
        assert!(p.add_ring(9, 300).is_err());
        assert!(p.add_ring(9, 55).is_err());
        assert!(p.add_ring(9, 101).is_err());
        assert!(p.add_ring(9, 400).is_err());
        p.add_ring(9, 500).unwrap();
        assert_eq!(p.fixed(9), Some(500));
        assert_eq!(p.holes(10), 10 - 5);
        // The other ring may not take the same frame.
        assert!(p.add_ring(11, 500).is_err());
    }

    #[test]
    fn placement_refuses_runs_past_its_capacity() {
        let mut p = Placement::new(0, Frames::NONE, Frames::NONE);
        for i in 0..MAX_PLACED as u64 {
            p.add(Placed {
                dest_pfn: 10 + i,
                pages: 1,
                from: Source::Run(100 + i),
                zeros: SegmentZeros::NONE,
            })
            .unwrap();
        }
        assert!(p.add(Placed::default()).is_err());
        assert!(p.add_ring(1000, 5000).is_err());
    }

    #[test]
    fn a_listed_pool_gives_hole_k_entry_k() {
        const POOL: [u64; 6] = [7, 9, 40, 41, 90, 1000];
        let mut p = sample_with_pool(Frames::List(&POOL));
        // Built PFNs 0..8: holes 3, 4, 6, 7 take the first four listed frames.
        let holes: [u64; 4] = [3, 4, 6, 7].map(|pfn| p.hole_old_pfn(pfn));
        assert_eq!(holes, [7, 9, 40, 41]);
        // The park area and reserve take the entries after the holes; past the end: none.
        assert_eq!(p.pool_pfn(4), 90);
        assert_eq!(p.pool_pfn(5), 1000);
        assert_eq!(p.pool_pfn(6), u64::MAX);
        // Membership is the list's, not the span's.
        assert!(p.meets_pool(9, 1) && p.meets_pool(1000, 1));
        assert!(!p.meets_pool(8, 1) && !p.meets_pool(10, 30) && !p.meets_pool(1001, 5));
        assert!(p.meets_pool(10, 31) && p.meets_pool(0, 8) && p.meets_pool(91, 910));
        assert!(!p.meets_pool(0, 0) && !p.meets_pool(u64::MAX, 1));
        // A ring frame in the listed pool is refused; one between its entries is not.
        assert!(p.add_ring(10, 40).is_err());
        p.add_ring(10, 8).unwrap();
        assert_eq!(p.fixed(10), Some(8));
    }

    #[test]
    fn an_image_run_and_the_same_frames_listed_place_alike() {
        const LISTED: [u64; 5] = [100, 101, 102, 103, 104];
        let run = Frames::Run {
            first: 100,
            count: 5,
        };
        for image in [run, Frames::List(&LISTED)] {
            let mut p = Placement::new(9, image, Frames::NONE);
            p.set_trampoline(4).unwrap();
            p.add(Placed {
                dest_pfn: 2,
                pages: 3,
                from: Source::Image(1),
                zeros: SegmentZeros::NONE,
            })
            .unwrap();
            let got: [Option<u64>; 6] = [1, 2, 3, 4, 5, 9].map(|pfn| p.fixed(pfn));
            assert_eq!(
                got,
                [None, Some(101), Some(102), Some(103), None, Some(104)]
            );
            assert!(p.in_image(100) && p.in_image(104) && !p.in_image(105));
            // A segment or trampoline past the image's pages is refused, not read past.
            let past = Placed {
                dest_pfn: 20,
                pages: 2,
                from: Source::Image(4),
                zeros: SegmentZeros::NONE,
            };
            assert!(p.add(past).is_err());
            assert!(p.set_trampoline(5).is_err());
            let huge = Placed {
                dest_pfn: 20,
                pages: u64::MAX,
                from: Source::Image(1),
                zeros: SegmentZeros::NONE,
            };
            assert!(p.add(huge).is_err());
        }
    }

    #[test]
    fn frame_lists_report_order_length_and_entries() {
        let l = [3u64, 5, 5, 8];
        assert!(!Frames::List(&l).is_ascending());
        assert!(Frames::List(&l[..2]).is_ascending());
        assert!(Frames::List(&[]).is_ascending() && Frames::List(&[]).is_empty());
        assert!(Frames::NONE.is_empty() && Frames::NONE.is_ascending());
        let run = Frames::Run {
            first: u64::MAX - 1,
            count: 1,
        };
        assert_eq!(run.get(0), Some(u64::MAX - 1));
        assert_eq!(run.get(1), None);
        assert!(run.meets(u64::MAX - 1, 5) && !run.meets(0, u64::MAX - 1));
        let mut it = Frames::List(&l).iter();
        assert_eq!((it.next(), it.nth(2), it.next()), (Some(3), Some(8), None));
    }

    #[test]
    fn bitmap_hands_out_unused_frames_in_ascending_order() {
        let mut words = [u64::MAX; 2];
        let mut b = FrameBitmap::new(&mut words);
        for used in [0, 1, 3, 64, 70] {
            b.mark(used);
        }
        assert!(b.is_used(64) && !b.is_used(65));
        // The purgatory's image check marks and then unmarks frames: only that bit goes.
        b.mark(65);
        b.unmark(65);
        assert!(b.is_used(64) && !b.is_used(65));
        let mut cursor = 0;
        let mut got = [0u64; 4];
        for g in got.iter_mut() {
            *g = b.take_next(&mut cursor, 128).unwrap();
        }
        assert_eq!(got, [2, 4, 5, 6]);
        // Everything below 8 is taken; past the end there is nothing.
        let mut c = 0;
        assert_eq!(b.take_next(&mut c, 7), None);
        assert_eq!(c, 7);
    }

    #[test]
    fn hidden_frames_count_park_area_vcpu_info_and_grant_reserve() {
        assert_eq!(park_pages(0), 0);
        assert_eq!(park_pages(1), 0);
        assert_eq!(park_pages(2), PARK_PAGES);
        assert_eq!(hidden_pages(1, 0, 0), Some(0));
        assert_eq!(hidden_pages(1, 1, 3), Some(4));
        assert_eq!(hidden_pages(4, 2, 8), Some(PARK_PAGES + 10));
        assert_eq!(hidden_pages(2, 1, u64::MAX), None);
    }

    #[test]
    fn an_image_for_vcpu_reset_hides_no_park_area() {
        use xenpv::Pod;
        let parked = PlanRecord::zeroed();
        let reset = PlanRecord {
            flags: crate::image::PLAN_FLAG_VCPU_RESET,
            ..PlanRecord::zeroed()
        };
        assert_eq!(plan_park_pages(&parked, 1), 0);
        assert_eq!(plan_park_pages(&parked, 4), PARK_PAGES);
        assert_eq!(plan_park_pages(&reset, 4), 0);
    }
}
