//! The 3-level P2M frame list Xen's tools, `crash` and `makedumpfile` read: one
//! frame-list-list page naming frame-list pages, each naming 512 P2M leaf pages, each holding
//! 512 P2M entries (PFN -> MFN). All three levels hold 512 little-endian `u64` MFNs per page.
//!
//! A 6.1 PV domU may publish `~0` instead of a frame-list-list in shared_info (its P2M is a
//! virtually mapped list, `SIF_VIRT_P2M_4TOOLS`), so the capture kernel builds one from the
//! MFNs of the old P2M's leaf pages (in its own pages, and in the crash record's list pages,
//! which are full frame-list pages but the last). Those pages must then be dumped too: both
//! tools read every level through the dump by machine address.
//!
//! **The list covers every PFN up to [`COVERED_PFNS`]** (512 GiB), in the shape Linux's own
//! list has (arch/x86/xen/p2m.c, `xen_build_mfn_list_list`): past the domain's leaves, every
//! slot of the last frame-list page names one shared *missing leaf* (512 `~0` entries,
//! Linux's `p2m_missing`), and every frame-list-list slot past the last frame-list page names
//! one shared *missing frame-list page* (512 times the missing leaf, Linux's
//! `p2m_mid_missing_mfn`). The readers need that:
//! - makedumpfile counts the frame-list-list's entries up to the first zero and each
//!   frame-list page's up to its first zero, and fails on any PFN past them (`ptom_xen:
//!   Invalid mfn_idx`). It translates every PFN of every present memory section (128 MiB on
//!   x86_64) up to the section's end, so a list that stops at the domain's last PFN fails
//!   for any domain that is not a whole number of sections.
//! - A PFN whose entry names a frame outside the dump's `PT_LOAD`s (`~0`: a hole, a ballooned
//!   or missing page) is skipped by makedumpfile and unreadable to crash; that is how both
//!   already treat a dom0 dump's holes.
//!
//! Two own pages besides the frame-list pages and the frame-list-list: the cost does not grow
//! with the coverage.

use crate::{Error, MAX_MFN};

/// MFNs per page at every level.
pub const ENTRIES: usize = 512;
/// Most P2M leaf pages one frame-list-list names (512 frame-list pages of 512).
pub const MAX_LEAVES: usize = ENTRIES * ENTRIES;
/// PFNs the frame list covers: 512 x 512 x 512 (Linux's `MAX_P2M_PFN`, 512 GiB of pages).
pub const COVERED_PFNS: u64 = (MAX_LEAVES * ENTRIES) as u64;
/// A P2M entry for no frame (Linux's `INVALID_P2M_ENTRY`).
pub const INVALID_ENTRY: u64 = !0;

/// One page of 512 MFNs (or P2M entries).
pub type Page = [u64; ENTRIES];

/// P2M leaf pages needed for `nr_pfns` PFNs.
pub const fn leaf_pages_for(nr_pfns: u64) -> u64 {
    nr_pfns.div_ceil(ENTRIES as u64)
}

/// Pages a frame list over `leaves` leaf pages needs in the caller's memory: its frame-list
/// pages, the missing leaf, the missing frame-list page and the frame-list-list.
pub const fn own_pages_for(leaves: usize) -> usize {
    leaves.div_ceil(ENTRIES) + 3
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

/// Contents of the missing leaf: no PFN it covers has a frame.
pub fn missing_leaf_page(out: &mut Page) {
    out.fill(INVALID_ENTRY);
}

/// The shape of a frame list over `leaves` leaf pages, padded to [`COVERED_PFNS`] with the
/// missing leaf and the missing frame-list page, for a caller that gives the leaves' MFNs a
/// frame-list page at a time (the capture kernel reads them from the crash record's list
/// pages, so it never holds them all).
#[derive(Clone, Copy, Debug)]
pub struct FrameListShape {
    leaves: usize,
    missing_leaf: u64,
}

impl FrameListShape {
    /// `leaves` leaf pages (PFNs `0 .. 512 leaves`); `missing_leaf_mfn` is where the caller
    /// put [`missing_leaf_page`].
    pub fn new(leaves: usize, missing_leaf_mfn: u64) -> Result<Self, Error> {
        if leaves == 0 {
            return Err(Error::NoP2mLeaves);
        }
        if leaves > MAX_LEAVES {
            return Err(Error::TooManyP2mLeaves {
                leaves,
                max: MAX_LEAVES,
            });
        }
        check_shared("missing leaf", missing_leaf_mfn)?;
        Ok(FrameListShape {
            leaves,
            missing_leaf: missing_leaf_mfn,
        })
    }

    /// Leaf pages of the domain's own (the PFNs past them read as holes).
    pub fn leaves(&self) -> usize {
        self.leaves
    }

    /// Frame-list pages naming the domain's leaves (the caller finds this many frames, plus
    /// the missing frame-list page and the frame-list-list).
    pub fn frame_list_pages(&self) -> usize {
        self.leaves.div_ceil(ENTRIES)
    }

    /// Leaf pages frame-list page `index` names (512 but in the last).
    pub fn leaves_in(&self, index: usize) -> Result<usize, Error> {
        let pages = self.frame_list_pages();
        if index >= pages {
            return Err(Error::FrameListIndex { index, pages });
        }
        Ok((self.leaves - index * ENTRIES).min(ENTRIES))
    }

    /// Contents of frame-list page `index`: `leaf_mfns` (the MFNs of leaves `512 index` on,
    /// exactly [`FrameListShape::leaves_in`] of them), then the missing leaf.
    pub fn frame_list_page(
        &self,
        index: usize,
        leaf_mfns: &[u64],
        out: &mut Page,
    ) -> Result<(), Error> {
        let needed = self.leaves_in(index)?;
        if leaf_mfns.len() != needed {
            return Err(Error::LeafCount {
                index,
                given: leaf_mfns.len(),
                needed,
            });
        }
        check_mfns(leaf_mfns)?;
        out.fill(self.missing_leaf);
        out[..needed].copy_from_slice(leaf_mfns);
        Ok(())
    }

    /// Contents of the missing frame-list page: the missing leaf 512 times.
    pub fn missing_frame_list_page(&self, out: &mut Page) {
        out.fill(self.missing_leaf);
    }

    /// Contents of the frame-list-list page, given where the caller put the frame-list pages
    /// (`frame_list_mfns[i]` holds frame-list page `i`) and the missing frame-list page:
    /// every one of its 512 slots names a page.
    pub fn frame_list_list_page(
        &self,
        frame_list_mfns: &[u64],
        missing_frame_list_mfn: u64,
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
        check_shared("missing frame-list page", missing_frame_list_mfn)?;
        out.fill(missing_frame_list_mfn);
        out[..needed].copy_from_slice(frame_list_mfns);
        Ok(())
    }
}

/// The frame list over the old P2M's leaf pages, given all at once, padded to
/// [`COVERED_PFNS`] with the missing leaf and the missing frame-list page.
#[derive(Clone, Copy, Debug)]
pub struct FrameList<'a> {
    leaves: &'a [u64],
    shape: FrameListShape,
}

impl<'a> FrameList<'a> {
    /// `leaf_mfns[i]` is the MFN of the P2M page holding PFNs `512 i .. 512 i + 511`;
    /// `missing_leaf_mfn` is where the caller put [`missing_leaf_page`].
    pub fn new(leaf_mfns: &'a [u64], missing_leaf_mfn: u64) -> Result<Self, Error> {
        let shape = FrameListShape::new(leaf_mfns.len(), missing_leaf_mfn)?;
        check_mfns(leaf_mfns)?;
        Ok(FrameList {
            leaves: leaf_mfns,
            shape,
        })
    }

    /// Leaf pages of the domain's own (the PFNs past them read as holes).
    pub fn leaves(&self) -> usize {
        self.leaves.len()
    }

    /// Frame-list pages naming the domain's leaves (the caller finds this many frames, plus
    /// the missing frame-list page and the frame-list-list).
    pub fn frame_list_pages(&self) -> usize {
        self.shape.frame_list_pages()
    }

    /// Contents of frame-list page `index`: the MFNs of its leaf pages, then the missing leaf.
    pub fn frame_list_page(&self, index: usize, out: &mut Page) -> Result<(), Error> {
        let n = self.shape.leaves_in(index)?;
        let start = index * ENTRIES;
        self.shape
            .frame_list_page(index, &self.leaves[start..start + n], out)
    }

    /// Contents of the missing frame-list page: the missing leaf 512 times.
    pub fn missing_frame_list_page(&self, out: &mut Page) {
        self.shape.missing_frame_list_page(out)
    }

    /// Contents of the frame-list-list page, given where the caller put the frame-list pages
    /// (`frame_list_mfns[i]` holds [`FrameList::frame_list_page`] `i`) and the missing
    /// frame-list page: every one of its 512 slots names a page.
    pub fn frame_list_list_page(
        &self,
        frame_list_mfns: &[u64],
        missing_frame_list_mfn: u64,
        out: &mut Page,
    ) -> Result<(), Error> {
        self.shape
            .frame_list_list_page(frame_list_mfns, missing_frame_list_mfn, out)
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

/// A shared page's MFN: 0 would end the readers' count, past 52 bits is no frame.
fn check_shared(page: &'static str, mfn: u64) -> Result<(), Error> {
    if mfn == 0 || mfn > MAX_MFN {
        return Err(Error::SharedPageMfn { page, mfn });
    }
    Ok(())
}

/// A page of MFNs as the bytes that go into memory or the dump (little-endian).
pub fn page_bytes(page: &Page, out: &mut [u8; 4096]) {
    for (chunk, w) in out.chunks_exact_mut(8).zip(page) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
}
