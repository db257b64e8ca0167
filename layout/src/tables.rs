//! Bootstrap page-table frames: how many cover a region (plus an optional extra page), and
//! which frame maps what, in the order a builder allocates them.

use crate::Range;
use alloc::vec::Vec;

/// One table frame of the bootstrap tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFrame {
    /// 4 = L4 .. 1 = L1.
    pub level: u8,
    /// Virtual span this table translates (the whole address space for the L4).
    pub covers: Range,
    /// PFN of the frame in the new domain.
    pub pfn: u64,
}

/// Span shift of one table of `level` (an L1 covers 2 MiB, an L2 1 GiB, an L3 512 GiB).
pub(crate) fn span_shift(level: u8) -> u32 {
    12 + 9 * level as u32
}

/// Indices (VA >> span) of the tables of `level` that `[lo, hi)` needs.
pub(crate) fn spans(lo: u64, hi: u64, level: u8) -> core::ops::RangeInclusive<u64> {
    let s = span_shift(level);
    (lo >> s)..=((hi - 1) >> s)
}

/// Tables per level (index 1..=3; index 0 unused) needed for `[lo, hi)` plus `extra` page,
/// and the extra page's additional tables in order L3, L2, L1 (those the region does not share).
pub(crate) fn extra_tables(lo: u64, hi: u64, extra: Option<u64>) -> Vec<(u8, u64)> {
    let mut out = Vec::new();
    if let Some(page) = extra {
        for level in [3u8, 2, 1] {
            let idx = page >> span_shift(level);
            if !spans(lo, hi, level).contains(&idx) {
                out.push((level, idx));
            }
        }
    }
    out
}

/// Number of table frames (1 L4 + L3s + L2s + L1s) covering `[lo, hi)` and the extra page.
pub fn count_tables(lo: u64, hi: u64, extra: Option<u64>) -> u64 {
    let region: u64 = [3u8, 2, 1]
        .iter()
        .map(|&l| {
            let r = spans(lo, hi, l);
            r.end() - r.start() + 1
        })
        .sum();
    1 + region + extra_tables(lo, hi, extra).len() as u64
}

/// The covered span of a table of `level` with span index `idx`.
pub(crate) fn cover(level: u8, idx: u64) -> Range {
    let s = span_shift(level);
    let start = idx << s;
    // Sign-extend into the canonical upper half where bit 47 is set.
    let canon = |v: u64| {
        if v & (1 << 47) != 0 {
            v | 0xFFFF_0000_0000_0000
        } else {
            v
        }
    };
    Range {
        start: canon(start),
        end: canon(start).wrapping_add(1 << s),
    }
}
