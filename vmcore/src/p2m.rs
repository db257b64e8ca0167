//! The 3-level P2M frame list Xen's tools and `crash` read: one frame-list-list page naming
//! frame-list pages, each naming up to 512 P2M leaf pages, each holding 512 P2M entries
//! (PFN -> MFN). All three levels hold 512 little-endian `u64` MFNs per page.
//!
//! A 6.1 PV domU may publish `~0` instead of a frame-list-list in shared_info (its P2M is a
//! virtually mapped list, `SIF_VIRT_P2M_4TOOLS`), so the capture kernel builds one in its own
//! pages from the MFNs of the old P2M's leaf pages. Those pages must then be dumped too:
//! `crash` reads every level through the dump by machine address, and stops at the first
//! zero entry of the frame-list-list and counts the non-zero entries of each frame-list page.

use crate::{Error, MAX_MFN};

/// MFNs per page at every level.
pub const ENTRIES: usize = 512;
/// Most P2M leaf pages one frame-list-list names (512 frame-list pages of 512).
pub const MAX_LEAVES: usize = ENTRIES * ENTRIES;
/// A P2M entry for no frame (Linux's `INVALID_P2M_ENTRY`).
pub const INVALID_ENTRY: u64 = !0;

/// One page of 512 MFNs (or P2M entries).
pub type Page = [u64; ENTRIES];

/// P2M leaf pages needed for `nr_pfns` PFNs.
pub const fn leaf_pages_for(nr_pfns: u64) -> u64 {
    nr_pfns.div_ceil(ENTRIES as u64)
}

/// Leaf page `index` of a P2M given as its entries (`p2m[pfn]`): 512 entries, those past the
/// end `INVALID_ENTRY`. For a caller that writes a fresh P2M copy rather than naming the old
/// kernel's own leaf pages.
pub fn leaf_page(p2m: &[u64], index: usize, out: &mut Page) -> Result<(), Error> {
    let pages = p2m.len().div_ceil(ENTRIES);
    let start = index
        .checked_mul(ENTRIES)
        .filter(|&s| s < p2m.len())
        .ok_or(Error::FrameListIndex { index, pages })?;
    let part = &p2m[start..p2m.len().min(start + ENTRIES)];
    out.fill(INVALID_ENTRY);
    out[..part.len()].copy_from_slice(part);
    Ok(())
}

/// The frame list over the old P2M's leaf pages.
#[derive(Clone, Copy, Debug)]
pub struct FrameList<'a> {
    leaves: &'a [u64],
}

impl<'a> FrameList<'a> {
    /// `leaf_mfns[i]` is the MFN of the P2M page holding PFNs `512 i .. 512 i + 511`.
    pub fn new(leaf_mfns: &'a [u64]) -> Result<Self, Error> {
        if leaf_mfns.is_empty() {
            return Err(Error::NoP2mLeaves);
        }
        if leaf_mfns.len() > MAX_LEAVES {
            return Err(Error::TooManyP2mLeaves {
                leaves: leaf_mfns.len(),
                max: MAX_LEAVES,
            });
        }
        check_mfns(leaf_mfns)?;
        Ok(FrameList { leaves: leaf_mfns })
    }

    /// Frame-list pages needed (the caller finds this many frames, plus one for the
    /// frame-list-list).
    pub fn frame_list_pages(&self) -> usize {
        self.leaves.len().div_ceil(ENTRIES)
    }

    /// Contents of frame-list page `index`: the MFNs of its leaf pages, then zeros.
    pub fn frame_list_page(&self, index: usize, out: &mut Page) -> Result<(), Error> {
        let pages = self.frame_list_pages();
        if index >= pages {
            return Err(Error::FrameListIndex { index, pages });
        }
        let start = index * ENTRIES;
        let part = &self.leaves[start..self.leaves.len().min(start + ENTRIES)];
        out.fill(0);
        out[..part.len()].copy_from_slice(part);
        Ok(())
    }

    /// Contents of the frame-list-list page, given where the caller put the frame-list pages
    /// (`frame_list_mfns[i]` holds [`FrameList::frame_list_page`] `i`).
    pub fn frame_list_list_page(
        &self,
        frame_list_mfns: &[u64],
        out: &mut Page,
    ) -> Result<(), Error> {
        let needed = self.frame_list_pages();
        if frame_list_mfns.len() != needed {
            return Err(Error::FrameListCount {
                given: frame_list_mfns.len(),
                needed,
            });
        }
        check_mfns(frame_list_mfns)?;
        out.fill(0);
        out[..needed].copy_from_slice(frame_list_mfns);
        Ok(())
    }
}

fn check_mfns(mfns: &[u64]) -> Result<(), Error> {
    if let Some(index) = mfns.iter().position(|&m| m == 0) {
        return Err(Error::ZeroMfnInFrameList { index });
    }
    if let Some(&mfn) = mfns.iter().find(|&&m| m > MAX_MFN) {
        return Err(Error::MfnTooLarge { mfn });
    }
    Ok(())
}

/// A page of MFNs as the bytes that go into memory or the dump (little-endian).
pub fn page_bytes(page: &Page, out: &mut [u8; 4096]) {
    for (chunk, w) in out.chunks_exact_mut(8).zip(page) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
}
