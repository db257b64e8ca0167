//! Digest verification, shared out across the VCPUs: each VCPU (the boot VCPU from the start,
//! each AP as soon as it arrives) claims the next unverified piece until none is left. With
//! the image's chunk-digest table (verified first, by the boot VCPU, against its own
//! descriptor digest) the pieces are 1 MiB chunks, so one large segment is hashed by several
//! VCPUs at once; without it they are whole segments. A segment's contents include its
//! zero-run pages, hashed as zeros (the file does not store them); the zero-run table itself
//! was checked against its digest when the image was parsed, before any record was used.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use pvhandoff::chunks::{chunk_digest_of, chunks_of, ChunkTable, CHUNK_PAGES, NO_CHUNKS};
use pvhandoff::digest::verify_pieces;
use pvhandoff::image::{
    check_header_digest, HeaderDigestError, ImageParams, ImageView, MAX_SEGMENTS,
    SEG_FLAG_PURGATORY_MAPPING,
};
use pvhandoff::{verify_segment, SegmentKind};

/// The image's header digest, filled in by the loader after relocation (it finds the block by
/// this symbol). It lives in this code's own pages, so it is read without trusting the image.
#[no_mangle]
#[used]
#[link_section = ".pvkexec_params"]
static mut PVKEXEC_IMAGE_PARAMS: ImageParams = ImageParams::EMPTY;

/// Checks the image's header and descriptor table against the digest the loader recorded in
/// this purgatory, before any of their fields is used.
pub fn header(image: &[u8]) -> Result<(), HeaderDigestError> {
    // SAFETY: a static of this binary, only ever read; volatile so the compiler cannot assume
    // the value it was linked with (the loader changes it).
    let params = unsafe { core::ptr::addr_of!(PVKEXEC_IMAGE_PARAMS).read_volatile() };
    check_header_digest(image, &params)
}

const N: usize = MAX_SEGMENTS as usize;

/// 0 until the boot VCPU has looked at the chunk table, then 1 (chunks) or 2 (whole segments).
static MODE: AtomicU32 = AtomicU32::new(0);
/// Next piece to claim, and how many are finished.
static NEXT: AtomicU32 = AtomicU32::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);
/// Per segment: a mismatch (`1 | actual digest prefix << 32`), and which VCPUs hashed it.
static MISMATCH: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static HASHED_BY: [AtomicU32; N] = [const { AtomicU32::new(0) }; N];

/// What became of one segment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified, by these VCPUs (bit mask).
    Ok(u32),
    /// The first 4 bytes of a digest found (the segment's, or a chunk's).
    Mismatch([u8; 4]),
    /// The purgatory's own segment: it runs from those pages and cannot vouch for itself.
    SelfSkipped,
}

fn table<'a>(image: &ImageView<'a>) -> Option<(usize, ChunkTable<'a>)> {
    let i = image
        .segments()
        .position(|s| s.kind == SegmentKind::ChunkDigests as u32)?;
    Some((i, ChunkTable::parse(image.data(i).ok()?)?))
}

/// Boot VCPU: checks the chunk table's own digest (a mismatch is recorded against it) and
/// opens the work to every VCPU. The zero-run table was checked whole by `ImageView::parse`.
pub fn open(image: &ImageView) {
    if let (_, Some(z)) = image.zero_runs() {
        HASHED_BY[z].fetch_or(1, Ordering::Relaxed);
    }
    let mode = match image
        .segments()
        .position(|s| s.kind == SegmentKind::ChunkDigests as u32)
    {
        Some(i) => {
            let seg = image.segment(i);
            let ok = image
                .data(i)
                .map(|d| verify_segment(i, &seg, d.chunks(4096)))
                .map_err(|_| ());
            HASHED_BY[i].fetch_or(1, Ordering::Relaxed);
            match ok {
                Ok(Ok(())) if table(image).is_some() => 1,
                Ok(Err(m)) => {
                    record_mismatch(i, &m.actual);
                    2
                }
                _ => 2,
            }
        }
        None => 2,
    };
    MODE.store(mode, Ordering::Release);
}

fn record_mismatch(seg: usize, actual: &[u8]) {
    let prefix = u32::from_be_bytes([actual[0], actual[1], actual[2], actual[3]]) as u64;
    let _ =
        MISMATCH[seg].compare_exchange(0, 1 | prefix << 32, Ordering::AcqRel, Ordering::Relaxed);
}

/// Number of pieces in the current mode.
fn pieces(image: &ImageView, t: &Option<(usize, ChunkTable)>) -> u32 {
    match t {
        Some((_, t)) => t.header.nr_entries,
        None => image.header.nr_segments,
    }
}

/// Verifies pieces until none is left to claim; `vcpu` is recorded with each. Waits (bounded)
/// for the boot VCPU's [`open`]; returns false if it never came.
pub fn share(image: &ImageView, vcpu: u32) -> bool {
    let mut spins = 0u64;
    let mode = loop {
        match MODE.load(Ordering::Acquire) {
            0 if spins < 10_000_000 => {
                spins += 1;
                core::hint::spin_loop();
            }
            0 => return false,
            m => break m,
        }
    };
    let t = if mode == 1 { table(image) } else { None };
    let nr = pieces(image, &t);
    loop {
        let k = NEXT.fetch_add(1, Ordering::AcqRel);
        if k >= nr {
            return true;
        }
        match &t {
            Some((ti, table)) => chunk(image, table, *ti, k, vcpu),
            None => whole(image, k as usize, vcpu),
        }
        DONE.fetch_add(1, Ordering::AcqRel);
    }
}

/// Chunk entry `k`: find its segment, hash its bytes, compare.
fn chunk(image: &ImageView, table: &ChunkTable, table_index: usize, k: u32, vcpu: u32) {
    let nr = image.header.nr_segments as usize;
    let Some(seg) = (0..nr).find(|&i| {
        let first = table.header.first_entry[i];
        first != NO_CHUNKS && k >= first && ((k - first) as u64) < chunks_of(image.segment(i).len)
    }) else {
        // An entry no segment claims: the table does not describe this image.
        record_mismatch(table_index, &[0; 4]);
        return;
    };
    let c = (k - table.header.first_entry[seg]) as u64;
    HASHED_BY[seg].fetch_or(1 << vcpu, Ordering::Relaxed);
    // The chunk's pages of the contents, zero runs as zeros.
    let Ok(pieces) = image.pieces(seg, c * CHUNK_PAGES, (c + 1) * CHUNK_PAGES) else {
        record_mismatch(seg, &[0; 4]);
        return;
    };
    let found = chunk_digest_of(pieces);
    if table.entry(k) != Some(&found[..]) {
        record_mismatch(seg, &found);
    }
}

/// Whole segment `i`.
fn whole(image: &ImageView, i: usize, vcpu: u32) {
    let seg = image.segment(i);
    let is = |k: SegmentKind| seg.kind == k as u32;
    if seg.flags & SEG_FLAG_PURGATORY_MAPPING != 0
        || is(SegmentKind::ChunkDigests)
        || is(SegmentKind::ZeroRuns)
    {
        return;
    }
    HASHED_BY[i].fetch_or(1 << vcpu, Ordering::Relaxed);
    match image.pieces(i, 0, u64::MAX) {
        Ok(pieces) => {
            if let Err(m) = verify_pieces(i, &seg, pieces) {
                record_mismatch(i, &m.actual);
            }
        }
        Err(_) => record_mismatch(i, &[0; 4]),
    }
}

/// Whether every piece is finished (also when the table itself failed: nothing is opened).
pub fn all_done(image: &ImageView) -> bool {
    let t = if MODE.load(Ordering::Acquire) == 1 {
        table(image)
    } else {
        None
    };
    DONE.load(Ordering::Acquire) >= pieces(image, &t)
}

/// Segment `i`'s outcome.
pub fn outcome(image: &ImageView, i: usize) -> Outcome {
    if image.segment(i).flags & SEG_FLAG_PURGATORY_MAPPING != 0 {
        return Outcome::SelfSkipped;
    }
    match MISMATCH[i].load(Ordering::Acquire) {
        0 => Outcome::Ok(HASHED_BY[i].load(Ordering::Relaxed)),
        m => Outcome::Mismatch(((m >> 32) as u32).to_be_bytes()),
    }
}
