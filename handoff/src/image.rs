//! The kexec image file (loader -> kernel side), version 1:
//!
//! | offset | content |
//! | --- | --- |
//! | 0 | [`ImageHeader`] (64 bytes) |
//! | 64 | `nr_segments` x [`SegmentDesc`] (64 bytes each) |
//! | `data_offset` | segment data, each segment's `len` bytes starting on a 4 KiB boundary, in order |
//!
//! Everything is little-endian. A segment's data occupies `round_up(len, 4096)` bytes of the
//! file; the rest of its `nr_pages` (bss, padding) is zero in the new domain.

use crate::segment::SegmentDesc;
use xenpv::assert_layout;

/// `b"PVKXIMG\0"`.
pub const IMAGE_MAGIC: [u8; 8] = *b"PVKXIMG\0";
pub const IMAGE_VERSION: u32 = 1;
/// The purgatory segment is mapped at `purgatory_base`, not placed at a PFN of the new domain.
pub const SEG_FLAG_PURGATORY_MAPPING: u32 = 1;
/// A template the purgatory turns into fresh frames at `dest_pfn` (page tables in PFN terms),
/// rather than frames placed as they are.
pub const SEG_FLAG_TEMPLATE: u32 = 2;
/// Metadata for the purgatory (the [`PlanRecord`]); not part of the new domain.
pub const SEG_FLAG_METADATA: u32 = 4;

/// `b"PVKXPLAN"` as a little-endian u64.
pub const PLAN_MAGIC: u64 = u64::from_le_bytes(*b"PVKXPLAN");

/// What the purgatory needs of the plan (segment kind `Plan`, flag [`SEG_FLAG_METADATA`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanRecord {
    pub magic: u64,
    /// Pages of the new domain.
    pub nr_pages: u64,
    pub virt_base: u64,
    /// Pages of the initial region (`[virt_base, v_end)`).
    pub region_pages: u64,
    pub entry: u64,
    pub rsp: u64,
    pub start_info_va: u64,
    pub pt_pfn: u64,
    pub nr_pt_frames: u64,
    pub p2m_pfn: u64,
    pub p2m_pages: u64,
    pub trampoline_va: u64,
    /// PFN the trampoline page (the purgatory's first page) gets in the new domain.
    pub trampoline_pfn: u64,
    /// start_info's `mod_start` and `mod_len` (0 without an initrd).
    pub mod_start: u64,
    pub mod_len: u64,
    /// PFNs `[0, fill_pages)` are built by the purgatory (the region, an unmapped initrd and a
    /// relocated P2M with its tables); the rest are the new kernel's free RAM.
    pub fill_pages: u64,
    /// Frames of the domain (the old kernel's `nr_pages`): `nr_pages + hidden_pages`.
    pub domain_pages: u64,
    /// Frames kept from the new kernel (no PFN below its `nr_pages`): the park area of the
    /// VCPUs the purgatory parks ([`PARK_PAGES`] when the old kernel ran several VCPUs).
    pub hidden_pages: u64,
    /// Of the hidden frames, how many are reserved for frames of grants a backend still maps
    /// at the kexec (unused ones hide free frames).
    pub grant_reserve: u64,
    pub _reserved: [u64; 5],
}

/// The park area: the parked VCPUs' private L4, L3, L2 and L1, and the park page (code and
/// data) they run from.
pub const PARK_PAGES: u64 = 5;
assert_layout!(PlanRecord, 192; magic @ 0, nr_pages @ 8, virt_base @ 16, region_pages @ 24,
    entry @ 32, rsp @ 40, start_info_va @ 48, pt_pfn @ 56, nr_pt_frames @ 64, p2m_pfn @ 72,
    p2m_pages @ 80, trampoline_va @ 88, trampoline_pfn @ 96, mod_start @ 104, mod_len @ 112, fill_pages @ 120, domain_pages @ 128,
    hidden_pages @ 136, grant_reserve @ 144);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    pub magic: [u8; 8],
    pub version: u32,
    /// Size of this header (64).
    pub header_size: u32,
    pub nr_segments: u32,
    pub _pad: u32,
    /// Virtual address (lower half) the purgatory was relocated for.
    pub purgatory_base: u64,
    /// Purgatory entry point (absolute).
    pub purgatory_entry: u64,
    /// The new kernel's entry point.
    pub kernel_entry: u64,
    /// File offset of the first segment's data.
    pub data_offset: u64,
    /// Size of the whole file.
    pub total_size: u64,
}
assert_layout!(ImageHeader, 64; magic @ 0, version @ 8, header_size @ 12, nr_segments @ 16,
    purgatory_base @ 24, purgatory_entry @ 32, kernel_entry @ 40, data_offset @ 48, total_size @ 56);

/// Why an image cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    TooShort,
    BadMagic,
    BadVersion(u32),
    /// A segment (index) whose data lies outside the file.
    SegmentOutside(usize),
    TooManySegments(u32),
}

/// Maximum segments an image may hold.
pub const MAX_SEGMENTS: u32 = 64;

fn round_page(v: u64) -> Option<u64> {
    v.checked_add(4095).map(|x| x & !4095)
}

/// A validated view of an image in memory.
pub struct ImageView<'a> {
    bytes: &'a [u8],
    pub header: ImageHeader,
}

impl<'a> ImageView<'a> {
    /// Checks the header and that every segment's data lies inside `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ImageError> {
        if bytes.len() < 64 {
            return Err(ImageError::TooShort);
        }
        // SAFETY: 64 bytes are present; ImageHeader is plain old data, read unaligned.
        let header = unsafe { (bytes.as_ptr() as *const ImageHeader).read_unaligned() };
        if header.magic != IMAGE_MAGIC {
            return Err(ImageError::BadMagic);
        }
        if header.version != IMAGE_VERSION || header.header_size != 64 {
            return Err(ImageError::BadVersion(header.version));
        }
        if header.nr_segments > MAX_SEGMENTS {
            return Err(ImageError::TooManySegments(header.nr_segments));
        }
        let view = ImageView { bytes, header };
        let table_end = 64 + 64 * header.nr_segments as u64;
        if table_end > bytes.len() as u64 || header.data_offset < table_end {
            return Err(ImageError::TooShort);
        }
        for i in 0..header.nr_segments as usize {
            view.data(i)?;
        }
        Ok(view)
    }

    /// Descriptor `i`.
    pub fn segment(&self, i: usize) -> SegmentDesc {
        let at = 64 + 64 * i;
        // SAFETY: `parse` checked that the descriptor table lies inside `bytes`; SegmentDesc is
        // plain old data, read unaligned.
        unsafe { (self.bytes[at..at + 64].as_ptr() as *const SegmentDesc).read_unaligned() }
    }

    /// Segments in file order.
    pub fn segments(&self) -> impl Iterator<Item = SegmentDesc> + '_ {
        (0..self.header.nr_segments as usize).map(|i| self.segment(i))
    }

    /// File offset of segment `i`'s data.
    pub fn data_offset(&self, i: usize) -> Result<u64, ImageError> {
        let mut off = self.header.data_offset;
        for j in 0..i {
            off = round_page(self.segment(j).len)
                .and_then(|l| off.checked_add(l))
                .ok_or(ImageError::SegmentOutside(j))?;
        }
        Ok(off)
    }

    /// Segment `i`'s `len` data bytes.
    pub fn data(&self, i: usize) -> Result<&'a [u8], ImageError> {
        let off = self.data_offset(i)?;
        let end = off
            .checked_add(self.segment(i).len)
            .ok_or(ImageError::SegmentOutside(i))?;
        self.bytes
            .get(off as usize..end as usize)
            .ok_or(ImageError::SegmentOutside(i))
    }
}
