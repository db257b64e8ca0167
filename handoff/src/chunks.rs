//! Per-chunk digests (segment kind `ChunkDigests`, flag `METADATA`): the SHA-256 of every
//! [`CHUNK_SIZE`] piece of every other segment, so that several VCPUs can verify one large
//! segment at once. The table's own digest is in its descriptor like any segment's; a segment
//! whose chunks all match the verified table holds exactly the bytes the loader wrote.
//!
//! Layout: [`ChunkTableHeader`], then `nr_entries` x 32-byte digests. Segment `i`'s chunks are
//! entries `first_entry[i]..first_entry[i] + ceil(len_i / CHUNK_SIZE)`; segments without
//! entries (the purgatory, the table itself) have `first_entry[i] = NO_CHUNKS`.

use crate::image::MAX_SEGMENTS;
use sha2::{Digest, Sha256};
use xenpv::assert_layout;

pub const CHUNK_SIZE: u64 = 1 << 20;
/// `b"PVKXCHNK"` as a little-endian u64.
pub const CHUNKS_MAGIC: u64 = u64::from_le_bytes(*b"PVKXCHNK");
pub const NO_CHUNKS: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkTableHeader {
    pub magic: u64,
    pub chunk_size: u32,
    pub nr_entries: u32,
    pub first_entry: [u32; MAX_SEGMENTS as usize],
}
assert_layout!(ChunkTableHeader, 272; magic @ 0, chunk_size @ 8, nr_entries @ 12,
    first_entry @ 16);

/// Chunks of a segment of `len` bytes.
pub fn chunks_of(len: u64) -> u64 {
    len.div_ceil(CHUNK_SIZE)
}

/// SHA-256 of one chunk's bytes.
pub fn chunk_digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A validated view of a chunk table.
pub struct ChunkTable<'a> {
    pub header: ChunkTableHeader,
    digests: &'a [u8],
}

impl<'a> ChunkTable<'a> {
    /// Checks the header and that every entry is present.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len() < core::mem::size_of::<ChunkTableHeader>() {
            return None;
        }
        // SAFETY: the header's bytes are present; it is plain old data, read unaligned.
        let header = unsafe { (bytes.as_ptr() as *const ChunkTableHeader).read_unaligned() };
        if header.magic != CHUNKS_MAGIC || header.chunk_size as u64 != CHUNK_SIZE {
            return None;
        }
        let digests = bytes.get(272..272 + header.nr_entries as usize * 32)?;
        Some(ChunkTable { header, digests })
    }

    /// Entry `k`'s digest.
    pub fn entry(&self, k: u32) -> Option<&'a [u8]> {
        self.digests.get(k as usize * 32..k as usize * 32 + 32)
    }
}
