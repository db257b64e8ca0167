//! Zero runs (image version 3): runs of all-zero pages of a segment's contents that the image
//! file does not store. The segment's descriptor still describes its whole contents (`len`
//! bytes, their SHA-256 and chunk digests, zero pages included); its data in the file is those
//! contents with the zero-run pages left out, every stored page in order, the last one padded to
//! 4 KiB. The purgatory gives a zero-run page a free-pool frame and has Xen clear it, as it does
//! for a segment's bss.
//!
//! The records live in one segment of kind `ZeroRuns` (flag `METADATA`): a [`ZeroRunsHeader`]
//! and `nr_runs` x [`ZeroRun`], sorted by segment, then page, none overlapping another. Only
//! placed segments (no flag: kernel, initrd, start_info) that come after the table in the
//! descriptor table may have runs, and the purgatory segment comes before it, so a reader finds
//! the table, and a kernel side the purgatory, with version 2's rule (each segment's data takes
//! `round_up(len, 4096)` bytes) before it has read a record. [`crate::image::ImageView::parse`]
//! checks the table's SHA-256 against its descriptor before it uses any record, then
//! [`ZeroRuns::check`] refuses records that do not describe the image by name.

use crate::image::{SEG_FLAG_METADATA, SEG_FLAG_PURGATORY_MAPPING, SEG_FLAG_TEMPLATE};
use crate::segment::SegmentDesc;
use xenpv::{assert_layout, Pod};

/// `b"PVKXZERO"` as a little-endian u64.
pub const ZERO_RUNS_MAGIC: u64 = u64::from_le_bytes(*b"PVKXZERO");
const PAGE: u64 = 4096;

/// The zero-run table's header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZeroRunsHeader {
    pub magic: u64,
    pub nr_runs: u32,
    pub _reserved: u32,
}
assert_layout!(ZeroRunsHeader, 16; magic @ 0, nr_runs @ 8, _reserved @ 12);
// SAFETY: a u64 and two u32s without gaps (offsets above): any bits are a value.
unsafe impl Pod for ZeroRunsHeader {}

/// Pages `[first_page, first_page + pages)` of segment `segment`'s contents are zero and not
/// stored in the file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZeroRun {
    /// Index of the segment in the descriptor table.
    pub segment: u32,
    pub _reserved: u32,
    /// First page, counted from the start of the segment's contents.
    pub first_page: u64,
    pub pages: u64,
    /// The segment's zero pages in the runs before this one (checked): with it, where any page
    /// lies in the file is one binary search over the runs, however many there are.
    pub zeros_before: u64,
}
assert_layout!(ZeroRun, 32; segment @ 0, _reserved @ 4, first_page @ 8, pages @ 16,
    zeros_before @ 24);
// SAFETY: two u32s and three u64s without gaps (offsets above): any bits are a value.
unsafe impl Pod for ZeroRun {}

/// Bytes of one record.
pub const RECORD: usize = core::mem::size_of::<ZeroRun>();

/// Bytes of a table of `nr_runs` records.
pub const fn table_len(nr_runs: u64) -> u64 {
    16 + RECORD as u64 * nr_runs
}

/// Why a zero-run table is refused; `run` is a record's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroRunError {
    /// The bytes are not a header with the magic followed by exactly `nr_runs` records.
    BadTable,
    /// The image has more than one zero-run table.
    SecondTable,
    /// The purgatory segment comes after the zero-run table (a kernel side finds it with
    /// version 2's rule, which holds only before the table).
    PurgatoryAfterTable,
    /// A record names no segment of the image.
    NoSegment { run: u32, segment: u32 },
    /// A record names a segment that may have no runs: the purgatory, a template or
    /// metadata, or one at or before the table.
    NotPlaced { run: u32, segment: u32 },
    /// A record with no pages.
    Empty { run: u32 },
    /// A record before the one it follows (order: segment, then page).
    Unsorted { run: u32 },
    /// A record overlapping the one before it.
    Overlap { run: u32 },
    /// A record past the end of its segment's pages.
    Outside { run: u32, segment: u32 },
    /// A record's `zeros_before` is not the pages of its segment's runs before it.
    BadCount { run: u32 },
}

/// A zero-run table's records (a view over its bytes; the header is checked).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZeroRuns<'a> {
    records: &'a [u8],
}

impl<'a> ZeroRuns<'a> {
    /// No runs (an image without a table).
    pub const NONE: ZeroRuns<'static> = ZeroRuns { records: &[] };

    /// Reads a table: the header's magic, and exactly `nr_runs` records after it.
    pub fn parse(table: &'a [u8]) -> Result<Self, ZeroRunError> {
        let h = ZeroRunsHeader::read_from(table).ok_or(ZeroRunError::BadTable)?;
        if h.magic != ZERO_RUNS_MAGIC || table.len() as u64 != table_len(h.nr_runs as u64) {
            return Err(ZeroRunError::BadTable);
        }
        Ok(ZeroRuns {
            records: &table[16..],
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len() / RECORD
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record `k`.
    pub fn get(&self, k: usize) -> Option<ZeroRun> {
        ZeroRun::read_from(self.records.get(k.checked_mul(RECORD)?..)?)
    }

    /// Every record, in order.
    pub fn iter(self) -> impl Iterator<Item = ZeroRun> + 'a {
        (0..self.len()).filter_map(move |k| self.get(k))
    }

    /// Checks every record against the image's `nr_segments` descriptors (`desc(i)`), the
    /// table being segment `table_index`: each names a placed segment after the table, has
    /// pages, lies inside the segment's `ceil(len / 4096)` pages, and follows the record before
    /// it (segment, then page) without overlapping it; then each one's `zeros_before`.
    pub fn check(
        &self,
        table_index: usize,
        nr_segments: usize,
        desc: impl Fn(usize) -> SegmentDesc,
    ) -> Result<(), ZeroRunError> {
        let mut prev: Option<ZeroRun> = None;
        for (k, r) in self.iter().enumerate() {
            let run = k as u32;
            let i = r.segment as usize;
            if i >= nr_segments {
                return Err(ZeroRunError::NoSegment {
                    run,
                    segment: r.segment,
                });
            }
            let d = desc(i);
            let fixed_flags = SEG_FLAG_PURGATORY_MAPPING | SEG_FLAG_TEMPLATE | SEG_FLAG_METADATA;
            if i <= table_index || d.flags & fixed_flags != 0 {
                return Err(ZeroRunError::NotPlaced {
                    run,
                    segment: r.segment,
                });
            }
            if r.pages == 0 {
                return Err(ZeroRunError::Empty { run });
            }
            if r.first_page
                .checked_add(r.pages)
                .is_none_or(|end| end > d.len.div_ceil(PAGE))
            {
                return Err(ZeroRunError::Outside {
                    run,
                    segment: r.segment,
                });
            }
            if let Some(p) = prev {
                if r.segment < p.segment || (r.segment == p.segment && r.first_page < p.first_page)
                {
                    return Err(ZeroRunError::Unsorted { run });
                }
                // Checked above: the previous record ends inside its segment.
                if r.segment == p.segment && r.first_page < p.first_page + p.pages {
                    return Err(ZeroRunError::Overlap { run });
                }
            }
            prev = Some(r);
        }
        // Every run lies inside its segment: the sums stay below its page count.
        let mut before = 0u64;
        let mut segment = None;
        for (k, r) in self.iter().enumerate() {
            if segment != Some(r.segment) {
                (segment, before) = (Some(r.segment), 0);
            }
            if r.zeros_before != before {
                return Err(ZeroRunError::BadCount { run: k as u32 });
            }
            before += r.pages;
        }
        Ok(())
    }

    /// The runs of segment `segment` (the records are sorted: two binary searches). Only
    /// meaningful for a table [`ZeroRuns::check`] accepted.
    pub fn of_segment(&self, segment: u32) -> SegmentZeros<'a> {
        let first = self.partition(|r| r.segment < segment);
        let end = self.partition(|r| r.segment <= segment);
        SegmentZeros {
            runs: ZeroRuns {
                records: &self.records[first * RECORD..end * RECORD],
            },
        }
    }

    /// The first record for which `before` is false (`before` holds for a prefix).
    fn partition(&self, before: impl Fn(&ZeroRun) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid) {
                Some(r) if before(&r) => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo
    }
}

/// The zero runs of one segment: sorted, inside its pages, not overlapping (from a checked
/// table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentZeros<'a> {
    runs: ZeroRuns<'a>,
}

impl<'a> SegmentZeros<'a> {
    /// No zero pages.
    pub const NONE: SegmentZeros<'static> = SegmentZeros {
        runs: ZeroRuns::NONE,
    };

    /// Number of runs.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Run `k` as `(first_page, pages)`.
    pub fn run(&self, k: usize) -> Option<(u64, u64)> {
        self.runs.get(k).map(|r| (r.first_page, r.pages))
    }

    /// All zero pages of the segment.
    pub fn zero_pages(&self) -> u64 {
        match self
            .runs
            .len()
            .checked_sub(1)
            .and_then(|k| self.runs.get(k))
        {
            Some(last) => last.zeros_before + last.pages,
            None => 0,
        }
    }

    /// For content page `page`: how many zero pages lie below it, and whether it is one (one
    /// binary search: each run knows the zero pages before it).
    pub fn locate(&self, page: u64) -> (u64, bool) {
        // Runs that start at or below `page`: a prefix; the last of them decides.
        let n = self.runs.partition(|r| r.first_page <= page);
        match n.checked_sub(1).and_then(|k| self.runs.get(k)) {
            Some(r) if page < r.first_page + r.pages => {
                (r.zeros_before + (page - r.first_page), true)
            }
            Some(r) => (r.zeros_before + r.pages, false),
            None => (0, false),
        }
    }

    /// The index among the stored pages of content page `page`; `None` for a zero page.
    pub fn stored_index(&self, page: u64) -> Option<u64> {
        match self.locate(page) {
            (_, true) => None,
            (below, false) => Some(page - below),
        }
    }

    /// Zero pages among content pages `[0, page)`.
    pub fn zeros_below(&self, page: u64) -> u64 {
        self.locate(page).0
    }
}

/// How many bytes of its file data a segment of `len` content bytes with these runs stores:
/// `len` less the zero-run pages' share of it (a run may hold the last, partial page).
pub fn stored_len(len: u64, zeros: &SegmentZeros) -> u64 {
    let pages = len.div_ceil(PAGE);
    let zero_pages = zeros.zero_pages();
    if zero_pages == 0 {
        return len;
    }
    // The content's last page is zero when the last run ends there.
    let last_zero = zeros
        .run(zeros.len() - 1)
        .is_some_and(|(first, n)| first + n == pages);
    let tail = len - (pages - 1) * PAGE; // bytes of the last page, 1 to 4096
    match last_zero {
        true => len - (zero_pages - 1) * PAGE - tail,
        false => len - zero_pages * PAGE,
    }
}

/// The stored bytes content pages `[from, to)` of a segment of `len` bytes take in its file
/// data: `(first stored page, bytes)` (consecutive: the range's zero pages are left out).
pub fn stored_range(len: u64, zeros: &SegmentZeros, from: u64, to: u64) -> (u64, u64) {
    let pages = len.div_ceil(PAGE);
    let (from, to) = (from.min(pages), to.min(pages));
    let (below_from, below_to) = (zeros.zeros_below(from), zeros.zeros_below(to));
    let first = from - below_from;
    let end = to - below_to;
    let bytes = (end * PAGE)
        .min(stored_len(len, zeros))
        .saturating_sub(first * PAGE);
    (first, bytes)
}

/// A piece of a segment's contents, in order: bytes the file stores, or that many zero bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Bytes(&'a [u8]),
    Zeros(u64),
}

/// A segment's contents from one page to another, as [`Piece`]s: each stretch of stored pages
/// is one slice of the file, each zero run one [`Piece::Zeros`]; nothing past `len`.
#[derive(Clone, Debug)]
pub struct Pieces<'a> {
    stored: &'a [u8],
    /// The stored page `stored` starts with.
    base: u64,
    zeros: SegmentZeros<'a>,
    len: u64,
    page: u64,
    end_page: u64,
    /// Zero pages below `page`.
    zeros_below: u64,
    /// The first run that ends after `page`.
    next_run: usize,
}

impl<'a> Pieces<'a> {
    /// Pages `[from, to)` of the contents of a segment of `len` bytes whose stored data is
    /// `stored` (at least [`stored_len`] bytes: callers check; a shorter slice ends the pieces
    /// early, and a digest then does not match).
    pub fn new(stored: &'a [u8], zeros: SegmentZeros<'a>, len: u64, from: u64, to: u64) -> Self {
        Self::window(stored, 0, zeros, len, from, to)
    }

    /// [`Pieces::new`] from a window of the stored data that starts with stored page `base`
    /// (a reader that holds only the pages of the range: [`Pieces::stored_range`]).
    pub fn window(
        stored: &'a [u8],
        base: u64,
        zeros: SegmentZeros<'a>,
        len: u64,
        from: u64,
        to: u64,
    ) -> Self {
        let end_page = to.min(len.div_ceil(PAGE));
        let from = from.min(end_page);
        let next_run = zeros.runs.partition(|r| r.first_page + r.pages <= from);
        Pieces {
            stored,
            base,
            zeros,
            len,
            page: from,
            end_page,
            zeros_below: zeros.zeros_below(from),
            next_run,
        }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        if self.page >= self.end_page {
            return None;
        }
        let bytes_to = |page: u64| (page * PAGE).min(self.len);
        let start = self.page;
        match self.zeros.run(self.next_run) {
            Some((first, n)) if first <= start => {
                let stop = (first + n).min(self.end_page);
                self.page = stop;
                self.zeros_below += stop - start;
                if stop == first + n {
                    self.next_run += 1;
                }
                Some(Piece::Zeros(bytes_to(stop) - start * PAGE))
            }
            next => {
                let stop = next.map_or(self.end_page, |(first, _)| first.min(self.end_page));
                self.page = stop;
                let at = (start - self.zeros_below)
                    .checked_sub(self.base)
                    .and_then(|p| usize::try_from(p * PAGE).ok())?;
                let n = (bytes_to(stop) - start * PAGE) as usize;
                match self.stored.get(at..at.checked_add(n)?) {
                    Some(b) => Some(Piece::Bytes(b)),
                    None => {
                        self.page = self.end_page;
                        None
                    }
                }
            }
        }
    }
}

/// The runs of all-zero pages of `len` content bytes, page by page: `is_zero(p)` says whether
/// page `p`'s bytes (the last one's up to `len`) are all zero. Yields `(first_page, pages)`.
pub fn find_runs(
    len: u64,
    mut is_zero: impl FnMut(u64) -> bool,
) -> impl Iterator<Item = (u64, u64)> {
    let pages = len.div_ceil(PAGE);
    let mut p = 0;
    core::iter::from_fn(move || {
        while p < pages && !is_zero(p) {
            p += 1;
        }
        if p >= pages {
            return None;
        }
        let first = p;
        while p < pages && is_zero(p) {
            p += 1;
        }
        Some((first, p - first))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::SEG_FLAG_METADATA;
    use crate::SegmentKind;
    use proptest::prelude::*;
    extern crate std;
    use std::vec::Vec;

    /// `runs` with each one's `zeros_before` filled in as a loader writes it.
    fn counted(runs: &[ZeroRun]) -> Vec<ZeroRun> {
        let mut out = runs.to_vec();
        for k in 0..out.len() {
            out[k].zeros_before = match k.checked_sub(1).map(|j| out[j]) {
                Some(p) if p.segment == out[k].segment => p.zeros_before + p.pages,
                _ => 0,
            };
        }
        out
    }

    /// The table's bytes, the records written as they are.
    fn raw_table(runs: &[ZeroRun]) -> Vec<u8> {
        let h = ZeroRunsHeader {
            magic: ZERO_RUNS_MAGIC,
            nr_runs: runs.len() as u32,
            _reserved: 0,
        };
        let mut out = h.as_bytes().to_vec();
        for r in runs {
            out.extend_from_slice(r.as_bytes());
        }
        out
    }

    /// The table's bytes, each record's count filled in.
    fn table(runs: &[ZeroRun]) -> Vec<u8> {
        raw_table(&counted(runs))
    }

    fn run(segment: u32, first_page: u64, pages: u64) -> ZeroRun {
        ZeroRun {
            segment,
            _reserved: 0,
            first_page,
            pages,
            zeros_before: 0,
        }
    }

    /// Descriptors: 0 purgatory, 1 the table, 2 a 10-page kernel, 3 a 3-page template, 4 a
    /// 2.5-page start_info-like segment.
    fn descs(i: usize) -> SegmentDesc {
        let (kind, flags, len) = match i {
            0 => (SegmentKind::Purgatory, SEG_FLAG_PURGATORY_MAPPING, 8192),
            1 => (SegmentKind::ZeroRuns, SEG_FLAG_METADATA, 64),
            2 => (SegmentKind::Kernel, 0, 10 * 4096),
            3 => (SegmentKind::PageTables, SEG_FLAG_TEMPLATE, 3 * 4096),
            _ => (SegmentKind::StartInfo, 0, 2 * 4096 + 100),
        };
        SegmentDesc {
            kind: kind as u32,
            flags,
            dest_pfn: 0,
            nr_pages: 16,
            len,
            sha256: [0; 32],
        }
    }

    fn checked(runs: &[ZeroRun]) -> Result<(), ZeroRunError> {
        let bytes = table(runs);
        ZeroRuns::parse(&bytes)?.check(1, 5, descs)
    }

    #[test]
    fn malformed_records_are_refused_by_name() {
        assert_eq!(checked(&[run(2, 0, 1), run(2, 4, 6), run(4, 2, 1)]), Ok(()));
        assert_eq!(
            checked(&[run(9, 0, 1)]),
            Err(ZeroRunError::NoSegment { run: 0, segment: 9 })
        );
        for seg in [0, 1, 3] {
            assert_eq!(
                checked(&[run(seg, 0, 1)]),
                Err(ZeroRunError::NotPlaced {
                    run: 0,
                    segment: seg
                })
            );
        }
        assert_eq!(
            checked(&[run(2, 3, 0)]),
            Err(ZeroRunError::Empty { run: 0 })
        );
        assert_eq!(
            checked(&[run(2, 5, 6)]),
            Err(ZeroRunError::Outside { run: 0, segment: 2 })
        );
        assert_eq!(
            checked(&[run(4, 3, 1)]),
            Err(ZeroRunError::Outside { run: 0, segment: 4 })
        );
        assert_eq!(
            checked(&[run(2, u64::MAX, 2)]),
            Err(ZeroRunError::Outside { run: 0, segment: 2 })
        );
        assert_eq!(
            checked(&[run(2, 4, 2), run(2, 5, 1)]),
            Err(ZeroRunError::Overlap { run: 1 })
        );
        assert_eq!(
            checked(&[run(2, 4, 2), run(2, 1, 1)]),
            Err(ZeroRunError::Unsorted { run: 1 })
        );
        assert_eq!(
            checked(&[run(4, 0, 1), run(2, 1, 1)]),
            Err(ZeroRunError::Unsorted { run: 1 })
        );
        // Adjacent runs are allowed (a loader may split one).
        assert_eq!(checked(&[run(2, 4, 2), run(2, 6, 1)]), Ok(()));
        // Each record's count of the zero pages before it, per segment.
        let runs = counted(&[run(2, 0, 1), run(2, 4, 6), run(4, 2, 1)]);
        assert_eq!(
            runs.iter().map(|r| r.zeros_before).collect::<Vec<_>>(),
            [0, 1, 0]
        );
        assert_eq!(
            ZeroRuns::parse(&raw_table(&runs))
                .unwrap()
                .check(1, 5, descs),
            Ok(())
        );
        for (k, wrong) in [(0, 1), (1, 0), (1, 2), (2, 7)] {
            let mut bad = runs.clone();
            bad[k].zeros_before = wrong;
            assert_eq!(
                ZeroRuns::parse(&raw_table(&bad))
                    .unwrap()
                    .check(1, 5, descs),
                Err(ZeroRunError::BadCount { run: k as u32 })
            );
        }
        // The table itself: magic, and exactly nr_runs records.
        let good = table(&[run(2, 0, 1)]);
        assert!(ZeroRuns::parse(&good).is_ok());
        assert_eq!(
            ZeroRuns::parse(&good[..good.len() - 1]),
            Err(ZeroRunError::BadTable)
        );
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(ZeroRuns::parse(&longer), Err(ZeroRunError::BadTable));
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert_eq!(ZeroRuns::parse(&bad), Err(ZeroRunError::BadTable));
        assert_eq!(ZeroRuns::parse(&good[..8]), Err(ZeroRunError::BadTable));
    }

    #[test]
    fn a_segment_locates_its_pages() {
        let bytes = table(&[run(2, 1, 2), run(2, 6, 3), run(4, 2, 1)]);
        let t = ZeroRuns::parse(&bytes).unwrap();
        let z = t.of_segment(2);
        assert_eq!((z.len(), z.zero_pages()), (2, 5));
        let stored: Vec<Option<u64>> = (0..10).map(|p| z.stored_index(p)).collect();
        use core::option::Option::{None as Z, Some as S};
        assert_eq!(stored, [S(0), Z, Z, S(1), S(2), S(3), Z, Z, Z, S(4)]);
        assert_eq!(z.zeros_below(2), 1);
        assert_eq!(z.zeros_below(10), 5);
        assert!(t.of_segment(3).is_empty());
        assert_eq!(t.of_segment(4).zero_pages(), 1);
        // 2.5 pages with the last, partial one zero: 8192 bytes stored.
        assert_eq!(stored_len(2 * 4096 + 100, &t.of_segment(4)), 8192);
        assert_eq!(stored_len(10 * 4096, &z), 5 * 4096);
        assert_eq!(stored_len(777, &SegmentZeros::NONE), 777);
    }

    /// Stores `content` as a v3 image would: the pages the runs leave, the last one padded.
    fn store(content: &[u8], runs: &[(u64, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (p, page) in content.chunks(4096).enumerate() {
            let p = p as u64;
            if !runs.iter().any(|&(f, n)| p >= f && p < f + n) {
                out.extend_from_slice(page);
                out.resize(out.len().next_multiple_of(4096), 0);
            }
        }
        out
    }

    fn rebuild(pieces: Pieces) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Bytes(b) => out.extend_from_slice(b),
                Piece::Zeros(n) => out.resize(out.len() + n as usize, 0),
            }
        }
        out
    }

    /// Content of `pages` pages (the last `tail` bytes long) where `zero[p]` pages are zero.
    fn content(zero: &[bool], tail: usize) -> Vec<u8> {
        let mut c = Vec::new();
        for (p, &z) in zero.iter().enumerate() {
            let n = if p + 1 == zero.len() { tail } else { 4096 };
            c.extend((0..n).map(|i| if z { 0 } else { (i * 7 + p + 1) as u8 | 1 }));
        }
        c
    }

    proptest! {
        /// Runs found in any content, written as a table, read back and checked, rebuild the
        /// content exactly, whole or from any page to any page, from the stored pages alone.
        #[test]
        fn runs_round_trip(zero in proptest::collection::vec(any::<bool>(), 1..40),
                           tail in 1usize..=4096, from in 0u64..45, to in 0u64..45) {
            let c = content(&zero, tail);
            let len = c.len() as u64;
            let found: Vec<(u64, u64)> = find_runs(len, |p| {
                let s = (p * 4096) as usize;
                c[s..(s + 4096).min(c.len())].iter().all(|&b| b == 0)
            }).collect();
            prop_assert_eq!(found.iter().map(|r| r.1).sum::<u64>(),
                            zero.iter().filter(|&&z| z).count() as u64);
            let records: Vec<ZeroRun> = found.iter().map(|&(f, n)| run(2, f, n)).collect();
            let bytes = table(&records);
            let t = ZeroRuns::parse(&bytes).unwrap();
            let desc = |i: usize| SegmentDesc { len, ..descs(i) };
            prop_assert_eq!(t.check(1, 5, desc), Ok(()));
            let z = t.of_segment(2);
            let stored = store(&c, &found);
            prop_assert_eq!(stored.len() as u64, stored_len(len, &z).next_multiple_of(4096));
            prop_assert_eq!(rebuild(Pieces::new(&stored, z, len, 0, u64::MAX)), c.clone());
            let (a, b) = (from.min(to), from.max(to));
            let want = &c[((a * 4096) as usize).min(c.len())..((b * 4096) as usize).min(c.len())];
            prop_assert_eq!(rebuild(Pieces::new(&stored, z, len, a, b)), want.to_vec());
            // A reader holding only the range's stored pages rebuilds it too.
            let (first, n) = stored_range(len, &z, a, b);
            let window = &stored[(first * 4096) as usize..(first * 4096 + n) as usize];
            prop_assert_eq!(rebuild(Pieces::window(window, first, z, len, a, b)), want.to_vec());
        }

        /// A changed record either is refused by the check or rebuilds other content (which
        /// the segment's digest then refuses): never the same content from other records.
        #[test]
        fn changed_records_are_refused_or_change_the_content(
            zero in proptest::collection::vec(any::<bool>(), 2..30), k in any::<prop::sample::Index>(),
            field in 0usize..4, delta in 1u64..4, up in any::<bool>()) {
            let c = content(&zero, 4096);
            let len = c.len() as u64;
            let found: Vec<(u64, u64)> = find_runs(len, |p| zero[p as usize]).collect();
            prop_assume!(!found.is_empty());
            let mut records =
                counted(&found.iter().map(|&(f, n)| run(2, f, n)).collect::<Vec<_>>());
            let r = &mut records[k.index(found.len())];
            let change = |v: u64| if up { v.wrapping_add(delta) } else { v.wrapping_sub(delta) };
            match field {
                0 => r.first_page = change(r.first_page),
                1 => r.pages = change(r.pages),
                2 => r.zeros_before = change(r.zeros_before),
                _ => r.segment = change(r.segment as u64) as u32,
            }
            // Written as they are (no recount): a changed count is a changed record too.
            let bytes = raw_table(&records);
            let t = ZeroRuns::parse(&bytes).unwrap();
            let desc = |i: usize| SegmentDesc { len, ..descs(i) };
            if t.check(1, 5, desc).is_ok() {
                let stored = store(&c, &found);
                let z = t.of_segment(2);
                prop_assert_ne!(rebuild(Pieces::new(&stored, z, len, 0, u64::MAX)), c);
            }
        }
    }
}
