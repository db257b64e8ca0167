//! Per-chunk digests (segment kind `ChunkDigests`, flag `METADATA`): the SHA-256 of every
//! [`CHUNK_SIZE`] piece of every other segment's contents (zero-run pages included), so that
//! several VCPUs can verify one large segment at once. The table's own digest is in its
//! descriptor like any segment's; a segment whose chunks all match the verified table holds
//! exactly the bytes the loader wrote. The purgatory and the zero-run table have no entries
//! (the table is checked whole when the image is parsed).
//!
//! Layout: [`ChunkTableHeader`], then `nr_entries` x 32-byte digests. Segment `i`'s chunks are
//! entries `first_entry[i]..first_entry[i] + ceil(len_i / CHUNK_SIZE)`; segments without
//! entries (the purgatory, the zero-run table, the table itself) have
//! `first_entry[i] = NO_CHUNKS`.

use crate::image::MAX_SEGMENTS;
use crate::zero::Piece;
use sha2::{Digest, Sha256};
use xenpv::{assert_layout, Pod};

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
// SAFETY: integers without gaps (offsets above; 64 u32 entries end at 272).
unsafe impl xenpv::Pod for ChunkTableHeader {}

/// Chunks of a segment of `len` bytes.
pub fn chunks_of(len: u64) -> u64 {
    len.div_ceil(CHUNK_SIZE)
}

/// SHA-256 of one chunk's bytes.
pub fn chunk_digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// SHA-256 of one chunk given as [`Piece`]s (a segment with zero runs).
pub fn chunk_digest_of<'a>(pieces: impl IntoIterator<Item = Piece<'a>>) -> [u8; 32] {
    let mut h = Sha256::new();
    for piece in pieces {
        match piece {
            Piece::Bytes(b) => h.update(b),
            Piece::Zeros(n) => crate::digest::feed_zeros(&mut h, n),
        }
    }
    h.finalize().into()
}

/// Pages of contents one chunk spans.
pub const CHUNK_PAGES: u64 = CHUNK_SIZE / 4096;

/// A validated view of a chunk table.
pub struct ChunkTable<'a> {
    pub header: ChunkTableHeader,
    digests: &'a [u8],
}

impl<'a> ChunkTable<'a> {
    /// Checks the header and that every entry is present.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let header = ChunkTableHeader::read_from(bytes)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    fn table(entries: &[[u8; 32]], first: &[u32]) -> Vec<u8> {
        let mut h = ChunkTableHeader {
            magic: CHUNKS_MAGIC,
            chunk_size: CHUNK_SIZE as u32,
            nr_entries: entries.len() as u32,
            first_entry: [NO_CHUNKS; MAX_SEGMENTS as usize],
        };
        h.first_entry[..first.len()].copy_from_slice(first);
        let mut out = h.as_bytes().to_vec();
        for e in entries {
            out.extend_from_slice(e);
        }
        out
    }

    #[test]
    fn parses_and_reads_entries() {
        let d = [chunk_digest(b"a"), chunk_digest(b"b")];
        let bytes = table(&d, &[0, NO_CHUNKS, 1]);
        let t = ChunkTable::parse(&bytes).unwrap();
        assert_eq!(t.entry(1), Some(&d[1][..]));
        assert_eq!(t.entry(2), None);
        assert_eq!(t.header.first_entry[1], NO_CHUNKS);
    }

    #[test]
    fn refuses_short_or_foreign_tables() {
        let d = [chunk_digest(b"a")];
        let bytes = table(&d, &[0]);
        assert!(ChunkTable::parse(&bytes[..bytes.len() - 1]).is_none());
        assert!(ChunkTable::parse(&bytes[..100]).is_none());
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert!(ChunkTable::parse(&bad).is_none());
        assert_eq!(chunks_of(0), 0);
        assert_eq!(chunks_of(CHUNK_SIZE + 1), 2);
    }
}
