//! SHA-256 verification of segments. The purgatory reaches a segment's bytes page by page
//! (its frames need not be virtually contiguous), so hashing is incremental over chunks.
//! `sha2` picks SHA-NI at run time when CPUID offers it, else its software path.

use crate::segment::SegmentDesc;
use crate::zero::Piece;
use sha2::{Digest, Sha256};

/// Feeds `n` zero bytes to `h` (a zero run's share of a segment's contents).
pub(crate) fn feed_zeros(h: &mut Sha256, n: u64) {
    const ZEROS: [u8; 256] = [0; 256];
    let mut left = n;
    while left > 0 {
        let k = left.min(ZEROS.len() as u64);
        h.update(&ZEROS[..k as usize]);
        left -= k;
    }
}

/// A segment whose bytes do not hash to its descriptor's digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestMismatch {
    /// Index of the segment in the image.
    pub index: usize,
    pub expected: [u8; 32],
    pub actual: [u8; 32],
}

/// Incremental hash of one segment, fed chunk by chunk; bytes past `len` are ignored, so whole
/// pages can be fed.
pub struct SegmentHasher {
    hasher: Sha256,
    left: u64,
}

impl SegmentHasher {
    pub fn new(desc: &SegmentDesc) -> Self {
        SegmentHasher {
            hasher: Sha256::new(),
            left: desc.len,
        }
    }

    /// Feeds the next chunk of the segment.
    pub fn update(&mut self, chunk: &[u8]) {
        let take = (chunk.len() as u64).min(self.left) as usize;
        self.hasher.update(&chunk[..take]);
        self.left -= take as u64;
    }

    /// Feeds `n` zero bytes (a zero run the file does not store).
    pub fn update_zeros(&mut self, n: u64) {
        let take = n.min(self.left);
        feed_zeros(&mut self.hasher, take);
        self.left -= take;
    }

    /// Feeds the next piece of the segment's contents.
    pub fn update_piece(&mut self, piece: Piece) {
        match piece {
            Piece::Bytes(b) => self.update(b),
            Piece::Zeros(n) => self.update_zeros(n),
        }
    }

    /// Bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.left
    }

    /// The digest of what was fed.
    pub fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

/// Hashes segment `index` from `chunks` (consecutive pieces of its bytes) and compares with
/// its descriptor. Too few bytes count as a mismatch: the digest then covers what was there.
pub fn verify_segment<'a>(
    index: usize,
    desc: &SegmentDesc,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), DigestMismatch> {
    verify_pieces(index, desc, chunks.into_iter().map(Piece::Bytes))
}

/// [`verify_segment`] for contents given as [`Piece`]s (a segment with zero runs:
/// [`crate::image::ImageView::pieces`]).
pub fn verify_pieces<'a>(
    index: usize,
    desc: &SegmentDesc,
    pieces: impl IntoIterator<Item = Piece<'a>>,
) -> Result<(), DigestMismatch> {
    let mut h = SegmentHasher::new(desc);
    for piece in pieces {
        if h.remaining() == 0 {
            break;
        }
        h.update_piece(piece);
    }
    let actual = h.finish();
    if actual == desc.sha256 {
        Ok(())
    } else {
        Err(DigestMismatch {
            index,
            expected: desc.sha256,
            actual,
        })
    }
}

/// SHA-256 of a byte string (the loader's side of the contract).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::segment::SegmentKind;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn desc(bytes: &[u8]) -> SegmentDesc {
        SegmentDesc {
            kind: SegmentKind::Kernel as u32,
            flags: 0,
            dest_pfn: 0,
            nr_pages: (bytes.len() as u64).div_ceil(4096),
            len: bytes.len() as u64,
            sha256: sha256(bytes),
        }
    }

    #[test]
    fn known_vector() {
        // FIPS 180-2 example "abc".
        let d = sha256(b"abc");
        assert_eq!(d[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert_eq!(d[28..], [0xf2, 0x00, 0x15, 0xad]);
    }

    #[test]
    fn padded_pages_verify_and_flips_are_caught() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let d = desc(&bytes);
        let mut pages = bytes.clone();
        pages.resize(3 * 4096, 0xEE); // page padding is not part of the digest
        assert_eq!(verify_segment(0, &d, pages.chunks(4096)), Ok(()));
        pages[5000] ^= 1;
        let err = verify_segment(4, &d, pages.chunks(4096)).unwrap_err();
        assert_eq!(err.index, 4);
        assert_eq!(err.expected, d.sha256);
        // Missing bytes are a mismatch, not a pass.
        assert!(verify_segment(0, &d, bytes[..4096].chunks(4096)).is_err());
    }

    proptest! {
        #[test]
        fn any_single_flip_is_detected(len in 1usize..20_000, pos in any::<prop::sample::Index>(),
                                      bit in 0u8..8, chunk in 1usize..5000) {
            let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31)).collect();
            let d = desc(&bytes);
            prop_assert_eq!(verify_segment(0, &d, bytes.chunks(chunk)), Ok(()));
            let mut bad = bytes.clone();
            bad[pos.index(len)] ^= 1 << bit;
            prop_assert!(verify_segment(0, &d, bad.chunks(chunk)).is_err());
        }
    }
}
