//! Segment descriptors: what the loader produced, where it goes, and its digest.

use xenpv::assert_layout;

/// What a segment holds; the purgatory names it when its digest does not match.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    Kernel = 1,
    Initrd = 2,
    StartInfo = 3,
    P2m = 4,
    PageTables = 5,
    Stack = 6,
    Purgatory = 7,
    Plan = 8,
    /// Per-chunk SHA-256s of the other segments ([`crate::chunks`]).
    ChunkDigests = 9,
    /// The runs of zero pages the file does not store (image version 3, [`crate::zero`]).
    ZeroRuns = 10,
}

impl SegmentKind {
    /// Decodes a descriptor's `kind` field.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Kernel,
            2 => Self::Initrd,
            3 => Self::StartInfo,
            4 => Self::P2m,
            5 => Self::PageTables,
            6 => Self::Stack,
            7 => Self::Purgatory,
            8 => Self::Plan,
            9 => Self::ChunkDigests,
            10 => Self::ZeroRuns,
            _ => return None,
        })
    }

    /// Lower-case name used in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Initrd => "initrd",
            Self::StartInfo => "start-info",
            Self::P2m => "p2m",
            Self::PageTables => "page-tables",
            Self::Stack => "stack",
            Self::Purgatory => "purgatory",
            Self::Plan => "plan",
            Self::ChunkDigests => "chunk-digests",
            Self::ZeroRuns => "zero-runs",
        }
    }
}

/// One segment: `len` bytes placed at `dest_pfn` onwards in the new kernel's pseudo-physical
/// space, padded with zeros to `nr_pages` pages; `sha256` covers the `len` bytes (zero-run
/// pages included: the file may leave those out, [`crate::zero`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentDesc {
    /// A [`SegmentKind`].
    pub kind: u32,
    pub flags: u32,
    pub dest_pfn: u64,
    pub nr_pages: u64,
    pub len: u64,
    pub sha256: [u8; 32],
}
assert_layout!(SegmentDesc, 64; kind @ 0, flags @ 4, dest_pfn @ 8, nr_pages @ 16, len @ 24,
    sha256 @ 32);
// SAFETY: integers and a byte array without gaps (offsets above; the digest ends at 64).
unsafe impl xenpv::Pod for SegmentDesc {}

impl SegmentDesc {
    /// The kind's name, or `unknown` for a value this build does not know.
    pub fn kind_name(&self) -> &'static str {
        SegmentKind::from_u32(self.kind).map_or("unknown", SegmentKind::name)
    }
}
