//! The kexec image file (loader -> kernel side), version 3:
//!
//! | offset | content |
//! | --- | --- |
//! | 0 | [`ImageHeader`] (64 bytes) |
//! | 64 | `nr_segments` x [`SegmentDesc`] (64 bytes each) |
//! | `data_offset` | segment data in descriptor order, each starting on a 4 KiB boundary |
//!
//! Everything is little-endian. A segment's contents are its `len` bytes; the rest of its
//! `nr_pages` (bss, padding) is zero in the new domain. Its data in the file is those contents
//! less the pages a zero run names (version 3, [`crate::zero`]), the last page padded to
//! 4 KiB: `round_up(len, 4096)` bytes when it has no runs, as in version 2.
//!
//! The header and the descriptor table are covered by a SHA-256 kept in the purgatory's
//! [`ImageParams`] (at `params_offset` in the purgatory segment); the purgatory segment's own
//! digest is taken with the block's filled fields as zeros. See [`check_header_digest`].

use crate::segment::SegmentDesc;
use crate::zero::{stored_len, Pieces, SegmentZeros, ZeroRunError, ZeroRuns};
use crate::SegmentKind;
use xenpv::{assert_layout, Pod};

/// `b"PVKXIMG\0"`.
pub const IMAGE_MAGIC: [u8; 8] = *b"PVKXIMG\0";
/// 3: zero runs ([`crate::zero`]). 2: `params_offset` and the header digest in the
/// purgatory's [`ImageParams`].
pub const IMAGE_VERSION: u32 = 3;
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
    /// Frames the domain has at the kexec: `nr_pages + hidden_pages`. Without balloon holes
    /// that is the old kernel's `nr_pages`; see `old_p2m_len`.
    pub domain_pages: u64,
    /// Frames kept from the new kernel (no PFN below its `nr_pages`): the park area of the
    /// VCPUs the purgatory parks ([`PARK_PAGES`] when the old kernel ran several VCPUs).
    pub hidden_pages: u64,
    /// Of the hidden frames, how many are reserved for frames of grants a backend still maps
    /// at the kexec (unused ones hide free frames).
    pub grant_reserve: u64,
    /// domU layout only (0 in the dom0 layout): the PFNs of the xenstore and console ring
    /// pages. The purgatory gives them the old domain's store and console frames (xenstored
    /// and xenconsoled keep those mapped) and names them in start_info.
    pub xenstore_pfn: u64,
    pub console_pfn: u64,
    /// Entries of the old kernel's P2M (its start_info `nr_pages`) when the domain ballooned
    /// frames out: `domain_pages` of them are present, the rest are holes
    /// (`INVALID_P2M_ENTRY`). 0 (records written before this field): the old P2M has exactly
    /// `domain_pages` entries, all present.
    pub old_p2m_len: u64,
    /// `PLAN_FLAG_*` (offset 176, taken from the reserved words; 0 in records written before
    /// it: the old kernel's other VCPUs are parked).
    pub flags: u64,
    /// 0, or with [`PLAN_FLAG_ALIASES`] the [`CrashAliases`] word.
    pub _reserved: [u64; 1],
}

/// [`PlanRecord::flags`]: the image was built for a hypervisor that resets VCPUs and undoes
/// vcpu_info registrations (pvkexec's Xen patches, `XENFEAT_vcpu_reset` and
/// `XENFEAT_vcpu_info_reregister`): no park area and no vcpu_info frames are hidden, a Linux
/// new kernel keeps its CPUs, and the purgatory resets the other VCPUs instead of parking them.
/// It refuses such an image where Xen or the kernel side does not offer both.
pub const PLAN_FLAG_VCPU_RESET: u64 = 1 << 0;
/// [`PlanRecord::flags`]: a Linux crash kernel (docs/kdump.md, "A Linux crash kernel"). Every
/// frame of the crashed kernel gets an alias PFN past the crash kernel's own, old PFN `p` at
/// `nr_pages + p`, for the reserved word's count of old PFNs; start_info's `nr_pages` and the
/// P2M cover them. The reserved word also names the frames of the ELF core header the
/// purgatory writes at the crash ([`CrashAliases`]); the crash kernel's `mem=` keeps both out
/// of its RAM.
pub const PLAN_FLAG_ALIASES: u64 = 1 << 2;
/// Every flag a record may carry.
pub const PLAN_FLAGS_KNOWN: u64 = PLAN_FLAG_VCPU_RESET | PLAN_FLAG_ALIASES;

/// Frames of the ELF core header area before its notes: the P2M frame-list-list, the last
/// frame-list page (the record's, padded), the missing leaf and the missing frame-list page
/// that the dump's "Xen" note names (crash and makedumpfile read the old P2M through them).
pub const ELFCORE_LIST_PAGES: u64 = 4;
/// Frames of the notes: one `NT_PRSTATUS` per CPU (12 + 8 + 336 bytes), VMCOREINFO (at most
/// [`crate::crash::MAX_VMCOREINFO_NOTE`] bytes of text) and the "Xen" note (96 bytes).
pub const ELFCORE_NOTE_PAGES: u64 =
    (crate::handoff::MAX_VCPUS * 356 + 24 + crate::crash::MAX_VMCOREINFO_NOTE + 96).div_ceil(4096);
/// Most `PT_LOAD`s a core header has (`e_phnum` is 16 bits, 0xffff is an escape, one
/// program header is the `PT_NOTE`).
pub const ELFCORE_MAX_LOADS: u64 = 0xfffe;

/// Frames of the ELF core header area for a crashed kernel of `old_p2m_len` PFNs: room for a
/// `PT_LOAD` per frame (each old frame its own run, and the four list pages), at most
/// [`ELFCORE_MAX_LOADS`].
pub const fn elfcore_pages(old_p2m_len: u64) -> u64 {
    let loads = match old_p2m_len.saturating_add(ELFCORE_LIST_PAGES) {
        n if n > ELFCORE_MAX_LOADS => ELFCORE_MAX_LOADS,
        n => n,
    };
    ELFCORE_LIST_PAGES + ELFCORE_NOTE_PAGES + (64 + 56 * (loads + 1)).div_ceil(4096)
}

/// Where a Linux crash kernel's aliases and ELF core header lie ([`PLAN_FLAG_ALIASES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashAliases {
    /// Old PFNs `[0, count)` aliased at `nr_pages + old PFN`.
    pub count: u64,
    /// Frames of the ELF core header area: PFNs `[first_pfn, nr_pages - 1)`, just below the
    /// trampoline page (their frames come from the free pool; the crash kernel's `mem=`
    /// ends at `first_pfn`).
    pub header_pages: u64,
}

impl CrashAliases {
    /// The reserved word: `count` in bits 0..48, `header_pages` in bits 48..64.
    pub const fn word(self) -> u64 {
        (self.count & ((1 << 48) - 1)) | (self.header_pages << 48)
    }

    pub const fn from_word(w: u64) -> Self {
        CrashAliases {
            count: w & ((1 << 48) - 1),
            header_pages: w >> 48,
        }
    }

    /// The first PFN of the header area in a crash kernel of `nr_pages` renumbered PFNs.
    pub const fn first_pfn(self, nr_pages: u64) -> u64 {
        nr_pages.saturating_sub(1 + self.header_pages)
    }

    /// PFN of the notes.
    pub const fn notes_pfn(self, nr_pages: u64) -> u64 {
        self.first_pfn(nr_pages) + ELFCORE_LIST_PAGES
    }

    /// PFN of the ELF header (`elfcorehdr=`), followed by the program headers.
    pub const fn ehdr_pfn(self, nr_pages: u64) -> u64 {
        self.notes_pfn(nr_pages) + ELFCORE_NOTE_PAGES
    }

    /// Program headers the area holds after the ELF header (the `PT_NOTE` included).
    pub const fn phdr_capacity(self) -> u64 {
        let pages = self
            .header_pages
            .saturating_sub(ELFCORE_LIST_PAGES + ELFCORE_NOTE_PAGES);
        (pages * 4096).saturating_sub(64) / 56
    }
}

impl PlanRecord {
    /// With [`PLAN_FLAG_ALIASES`]: the aliases and the header area.
    pub const fn crash_aliases(&self) -> Option<CrashAliases> {
        match self.flags & PLAN_FLAG_ALIASES {
            0 => None,
            _ => Some(CrashAliases::from_word(self._reserved[0])),
        }
    }

    /// Built for a hypervisor that resets VCPUs ([`PLAN_FLAG_VCPU_RESET`]).
    pub const fn resets_vcpus(&self) -> bool {
        self.flags & PLAN_FLAG_VCPU_RESET != 0
    }
}

/// The park area: the parked VCPUs' private L4, L3, L2 and L1, and the park page (code and
/// data) they run from.
pub const PARK_PAGES: u64 = 5;
assert_layout!(PlanRecord, 192; magic @ 0, nr_pages @ 8, virt_base @ 16, region_pages @ 24,
    entry @ 32, rsp @ 40, start_info_va @ 48, pt_pfn @ 56, nr_pt_frames @ 64, p2m_pfn @ 72,
    p2m_pages @ 80, trampoline_va @ 88, trampoline_pfn @ 96, mod_start @ 104, mod_len @ 112, fill_pages @ 120, domain_pages @ 128,
    hidden_pages @ 136, grant_reserve @ 144, xenstore_pfn @ 152, console_pfn @ 160,
    old_p2m_len @ 168, flags @ 176, _reserved @ 184);
// SAFETY: 23 u64 fields and a [u64; 1], 192 bytes: no padding, any bits a value.
unsafe impl xenpv::Pod for PlanRecord {}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    pub magic: [u8; 8],
    pub version: u32,
    /// Size of this header (64).
    pub header_size: u32,
    pub nr_segments: u32,
    /// Offset of the [`ImageParams`] inside the purgatory segment's data.
    pub params_offset: u32,
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
    params_offset @ 20, purgatory_base @ 24, purgatory_entry @ 32, kernel_entry @ 40, data_offset @ 48, total_size @ 56);
// SAFETY: integers and a byte array that follow one another without gaps (offsets above;
// the last u64 ends at 64).
unsafe impl xenpv::Pod for ImageHeader {}

/// Why an image cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    TooShort,
    BadMagic,
    BadVersion(u32),
    /// A segment (index) whose data lies outside the file.
    SegmentOutside(usize),
    TooManySegments(u32),
    /// `nr_segments` is 0.
    NoSegments,
    /// No segment carries the purgatory.
    NoPurgatory,
    /// The zero-run table's bytes do not hash to its descriptor's SHA-256 (checked before any
    /// record is used).
    ZeroRunsDigest,
    /// The zero-run table is malformed or does not describe this image.
    ZeroRuns(ZeroRunError),
    /// Segment (index) has zero runs: its contents are [`ImageView::pieces`], not one slice.
    ZeroRunsIn(usize),
}

/// Maximum segments an image may hold.
pub const MAX_SEGMENTS: u32 = 64;

fn round_page(v: u64) -> Option<u64> {
    v.checked_add(4095).map(|x| x & !4095)
}

/// The header, checked: magic, version, 1 to [`MAX_SEGMENTS`] segments whose descriptors lie
/// in `bytes` before `data_offset`.
fn checked_header(bytes: &[u8]) -> Result<ImageHeader, ImageError> {
    let header = ImageHeader::read_from(bytes).ok_or(ImageError::TooShort)?;
    if header.magic != IMAGE_MAGIC {
        return Err(ImageError::BadMagic);
    }
    if header.version != IMAGE_VERSION || header.header_size != 64 {
        return Err(ImageError::BadVersion(header.version));
    }
    if header.nr_segments > MAX_SEGMENTS {
        return Err(ImageError::TooManySegments(header.nr_segments));
    }
    if header.nr_segments == 0 {
        return Err(ImageError::NoSegments);
    }
    let table_end = 64 + 64 * header.nr_segments as u64;
    if table_end > bytes.len() as u64 || header.data_offset < table_end {
        return Err(ImageError::TooShort);
    }
    Ok(header)
}

fn desc_at(bytes: &[u8], i: usize) -> SegmentDesc {
    let at = 64 + 64 * i;
    bytes
        .get(at..at + 64)
        .and_then(SegmentDesc::read_from)
        .unwrap_or_else(SegmentDesc::zeroed)
}

/// The purgatory segment as a kernel side finds it, without reading the zero-run table:
/// `(index, descriptor, file offset)`. Every segment before it takes `round_up(len, 4096)`
/// bytes of the file (no zero-run table precedes the purgatory, so none of them has runs).
/// Its `len` bytes must lie in `bytes`.
pub fn find_purgatory(bytes: &[u8]) -> Result<(usize, SegmentDesc, u64), ImageError> {
    let header = checked_header(bytes)?;
    let mut off = header.data_offset;
    for i in 0..header.nr_segments as usize {
        let s = desc_at(bytes, i);
        if s.flags & SEG_FLAG_PURGATORY_MAPPING != 0 {
            return match off.checked_add(s.len) {
                Some(end) if end <= bytes.len() as u64 => Ok((i, s, off)),
                _ => Err(ImageError::SegmentOutside(i)),
            };
        }
        if s.kind == SegmentKind::ZeroRuns as u32 {
            return Err(ImageError::ZeroRuns(ZeroRunError::PurgatoryAfterTable));
        }
        off = round_page(s.len)
            .and_then(|l| off.checked_add(l))
            .ok_or(ImageError::SegmentOutside(i))?;
    }
    Err(ImageError::NoPurgatory)
}

/// A validated view of an image in memory.
pub struct ImageView<'a> {
    bytes: &'a [u8],
    pub header: ImageHeader,
    /// File offset of each segment's data.
    offsets: [u64; MAX_SEGMENTS as usize],
    /// The zero-run table's records (its digest and records checked), and its index.
    zeros: ZeroRuns<'a>,
    zero_table: Option<usize>,
}

impl<'a> ImageView<'a> {
    /// Checks the header, the zero-run table (its SHA-256 against its descriptor first, then
    /// every record: [`ZeroRuns::check`]) and that every segment's data lies inside `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ImageError> {
        if bytes.len() < 64 {
            return Err(ImageError::TooShort);
        }
        let header = checked_header(bytes)?;
        let n = header.nr_segments as usize;
        let mut view = ImageView {
            bytes,
            header,
            offsets: [0; MAX_SEGMENTS as usize],
            zeros: ZeroRuns::NONE,
            zero_table: None,
        };
        let is_table = |s: &SegmentDesc| s.kind == SegmentKind::ZeroRuns as u32;
        let table = view.segments().position(|s| is_table(&s));
        if view.segments().filter(is_table).count() > 1 {
            return Err(ImageError::ZeroRuns(ZeroRunError::SecondTable));
        }
        let purgatory = view
            .segments()
            .position(|s| s.flags & SEG_FLAG_PURGATORY_MAPPING != 0);
        if let (Some(t), Some(p)) = (table, purgatory) {
            if p > t {
                return Err(ImageError::ZeroRuns(ZeroRunError::PurgatoryAfterTable));
            }
        }
        let mut off = header.data_offset;
        for i in 0..n {
            view.offsets[i] = off;
            let s = view.segment(i);
            let stored = stored_len(s.len, &view.zeros(i));
            let end = off
                .checked_add(stored)
                .filter(|&e| e <= bytes.len() as u64)
                .ok_or(ImageError::SegmentOutside(i))?;
            if table == Some(i) {
                let t = &bytes[off as usize..end as usize];
                if crate::digest::sha256(t) != s.sha256 {
                    return Err(ImageError::ZeroRunsDigest);
                }
                let runs = ZeroRuns::parse(t).map_err(ImageError::ZeroRuns)?;
                runs.check(i, n, |j| view.segment(j))
                    .map_err(ImageError::ZeroRuns)?;
                view.zeros = runs;
                view.zero_table = Some(i);
            }
            off = round_page(stored)
                .and_then(|l| off.checked_add(l))
                .ok_or(ImageError::SegmentOutside(i))?;
        }
        Ok(view)
    }

    /// Descriptor `i`.
    pub fn segment(&self, i: usize) -> SegmentDesc {
        // `parse` checked that the descriptor table lies inside `bytes`.
        desc_at(self.bytes, i)
    }

    /// Segments in file order.
    pub fn segments(&self) -> impl Iterator<Item = SegmentDesc> + '_ {
        (0..self.header.nr_segments as usize).map(|i| self.segment(i))
    }

    /// The plan record (segment kind `Plan`, written by the loader under its segment's
    /// digest), if the image has a valid one.
    pub fn plan_record(&self) -> Option<PlanRecord> {
        let i = self
            .segments()
            .position(|s| s.kind == crate::SegmentKind::Plan as u32)?;
        let r = PlanRecord::read_from(self.data(i).ok()?)?;
        (r.magic == PLAN_MAGIC).then_some(r)
    }

    /// Every zero-run record (none without a table), and the table's segment index.
    pub fn zero_runs(&self) -> (ZeroRuns<'a>, Option<usize>) {
        (self.zeros, self.zero_table)
    }

    /// Segment `i`'s zero runs.
    pub fn zeros(&self, i: usize) -> SegmentZeros<'a> {
        match self.zero_table {
            Some(_) => self.zeros.of_segment(i as u32),
            None => SegmentZeros::NONE,
        }
    }

    /// File offset of segment `i`'s data.
    pub fn data_offset(&self, i: usize) -> Result<u64, ImageError> {
        if i >= self.header.nr_segments as usize {
            return Err(ImageError::SegmentOutside(i));
        }
        Ok(self.offsets[i])
    }

    /// The bytes the file stores for segment `i` (its contents less its zero-run pages).
    pub fn stored(&self, i: usize) -> Result<&'a [u8], ImageError> {
        let off = self.data_offset(i)?;
        let end = off
            .checked_add(stored_len(self.segment(i).len, &self.zeros(i)))
            .ok_or(ImageError::SegmentOutside(i))?;
        self.bytes
            .get(off as usize..end as usize)
            .ok_or(ImageError::SegmentOutside(i))
    }

    /// Segment `i`'s `len` bytes, for a segment without zero runs (metadata, templates, the
    /// purgatory: those have none).
    pub fn data(&self, i: usize) -> Result<&'a [u8], ImageError> {
        if !self.zeros(i).is_empty() {
            return Err(ImageError::ZeroRunsIn(i));
        }
        self.stored(i)
    }

    /// Pages `[from, to)` of segment `i`'s contents (zero runs as [`crate::zero::Piece::Zeros`]).
    pub fn pieces(&self, i: usize, from: u64, to: u64) -> Result<Pieces<'a>, ImageError> {
        let zeros = self.zeros(i);
        Ok(Pieces::new(
            self.stored(i)?,
            zeros,
            self.segment(i).len,
            from,
            to,
        ))
    }
}

/// `b"PVKXPARM"`.
pub const PARAMS_MAGIC: [u8; 8] = *b"PVKXPARM";

/// The purgatory's parameter block, a static in its data (symbol `PVKEXEC_IMAGE_PARAMS`) that
/// the loader fills after relocating it. The purgatory reads it from its own memory, so it
/// learns what the header and descriptor table must hash to without trusting the image.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageParams {
    pub magic: [u8; 8],
    /// Bytes the digest covers from the start of the image: the header and the descriptor
    /// table, `64 + 64 * nr_segments` (0: not filled in by a loader).
    pub table_len: u64,
    /// SHA-256 of those bytes. The purgatory segment's descriptor digest is taken with
    /// `table_len` and this field as zeros (it cannot cover its own digest).
    pub header_digest: [u8; 32],
}
assert_layout!(ImageParams, 48; magic @ 0, table_len @ 8, header_digest @ 16);

impl ImageParams {
    /// The block as the purgatory is linked with it: magic only.
    pub const EMPTY: ImageParams = ImageParams {
        magic: PARAMS_MAGIC,
        table_len: 0,
        header_digest: [0; 32],
    };
    /// The bytes of the block the loader fills (`table_len`, `header_digest`): zeros in the
    /// purgatory segment's descriptor digest.
    pub const FILLED: core::ops::Range<usize> = 8..48;

    /// Reads a block from `bytes` (unaligned).
    pub fn read(bytes: &[u8]) -> Option<ImageParams> {
        let b = bytes.get(..core::mem::size_of::<ImageParams>())?;
        let mut p = ImageParams::EMPTY;
        p.magic.copy_from_slice(&b[0..8]);
        p.table_len = u64::from_le_bytes(b[8..16].try_into().ok()?);
        p.header_digest.copy_from_slice(&b[16..48]);
        Some(p)
    }

    /// The block's bytes.
    pub fn to_bytes(&self) -> [u8; 48] {
        let mut b = [0u8; 48];
        b[0..8].copy_from_slice(&self.magic);
        b[8..16].copy_from_slice(&self.table_len.to_le_bytes());
        b[16..48].copy_from_slice(&self.header_digest);
        b
    }
}

/// Why an image's header and descriptor table are not trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderDigestError {
    /// The parameter block has no magic, or no loader filled it in.
    NotSealed,
    /// The digest covers a length that is no header plus descriptor table, or runs past the
    /// image.
    BadLength(u64),
    /// The bytes hash to something else: the first 4 bytes of what they hash to.
    Mismatch([u8; 4]),
    /// The digest matches but the header's `nr_segments` disagrees with the covered length.
    CountMismatch { nr_segments: u32, table_len: u64 },
}

/// Checks the image's first `params.table_len` bytes (header and descriptor table) against
/// `params.header_digest`, reading no header field before the digest matched.
pub fn check_header_digest(bytes: &[u8], params: &ImageParams) -> Result<(), HeaderDigestError> {
    if params.magic != PARAMS_MAGIC || params.table_len == 0 {
        return Err(HeaderDigestError::NotSealed);
    }
    let len = params.table_len;
    let max = 64 + 64 * MAX_SEGMENTS as u64;
    if len < 128 || len > max || !len.is_multiple_of(64) || len > bytes.len() as u64 {
        return Err(HeaderDigestError::BadLength(len));
    }
    let found = crate::digest::sha256(&bytes[..len as usize]);
    if found != params.header_digest {
        return Err(HeaderDigestError::Mismatch([
            found[0], found[1], found[2], found[3],
        ]));
    }
    let nr_segments = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if 64 + 64 * nr_segments as u64 != len {
        return Err(HeaderDigestError::CountMismatch {
            nr_segments,
            table_len: len,
        });
    }
    Ok(())
}
