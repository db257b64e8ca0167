//! The free pool poisoned: what the old kernel leaves in frames it hands over, so that a new
//! kernel can tell the old kernel's bytes from the zeroes it was promised.

use crate::tables::DIRECT_MAP;
use pvtest_kernels::OLD_DATA_POISON;
use xenpv::PAGE_SIZE;

/// Pages of the free pool filled with the poison (all of it up to this many).
const POISON_PAGES: u64 = 16384;

/// Fills the first [`POISON_PAGES`] frames of `[first, end)` with [`OLD_DATA_POISON`], through
/// the direct map; returns how many.
pub fn poison(first: u64, end: u64) -> u64 {
    let end = end.min(first + POISON_PAGES);
    for pfn in first..end {
        let page = (DIRECT_MAP + pfn * PAGE_SIZE) as *mut u64;
        for i in 0..512 {
            // SAFETY: the direct map maps every free-pool frame writable, and nothing else
            // uses them.
            unsafe { page.add(i).write_volatile(OLD_DATA_POISON) };
        }
    }
    end.saturating_sub(first)
}
