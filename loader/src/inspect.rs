//! Sealing an image (the header digest in the purgatory's parameter block) and checking one:
//! the header digest first, then the zero-run table, then every segment and chunk digest over
//! the segments' whole contents (zero-run pages as zeros), read piece by piece so an image of
//! any size is checked in bounded memory.

use crate::error::{LoadError, Reason};
use crate::input::{open_checked, Role};
use crate::kernel::ParsedKernel;
use crate::purgatory::PURGATORY_ELF;
use goblin::elf::Elf;
use pvhandoff::chunks::{chunk_digest_of, ChunkTable, CHUNK_PAGES, CHUNK_SIZE, NO_CHUNKS};
use pvhandoff::image::{
    check_header_digest, HeaderDigestError, ImageHeader, ImageParams, IMAGE_MAGIC, IMAGE_VERSION,
    MAX_SEGMENTS, SEG_FLAG_PURGATORY_MAPPING,
};
use pvhandoff::zero::{self, Pieces, SegmentZeros, ZeroRuns};
use pvhandoff::{SegmentDesc, SegmentHasher, SegmentKind};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use xenpv::Pod;

/// The purgatory's parameter block symbol (`purgatory/src/verify.rs`).
const PARAMS_SYMBOL: &str = "PVKEXEC_IMAGE_PARAMS";

fn image_err(input: &str, why: impl Into<String>) -> LoadError {
    LoadError::new(input, None, Reason::Image(why.into()))
}

/// The image places whole pages: a kernel whose first byte is not on a page boundary (an
/// odd PADDR_OFFSET or PT_LOAD address) cannot be placed exactly, and is refused rather than
/// shifted.
pub fn check_kernel_start(input: &str, k: &ParsedKernel) -> Result<(), LoadError> {
    if k.virt_kstart.is_multiple_of(4096) {
        return Ok(());
    }
    Err(LoadError::new(
        input,
        None,
        Reason::Layout(format!(
            "the kernel starts at {:#x} (first PT_LOAD paddr + VIRT_BASE - PADDR_OFFSET {:#x}), \
             not on a page boundary: the image places whole pages",
            k.virt_kstart, k.paddr_offset
        )),
    ))
}

/// Offset of the parameter block in the placed purgatory (its link address: linked at 0).
pub fn params_offset() -> Result<u64, String> {
    let elf = Elf::parse(PURGATORY_ELF).map_err(|e| e.to_string())?;
    elf.syms
        .iter()
        .find(|s| elf.strtab.get_at(s.st_name) == Some(PARAMS_SYMBOL))
        .map(|s| s.st_value)
        .ok_or_else(|| format!("no {PARAMS_SYMBOL} symbol in the purgatory"))
}

/// Callers pass at least 64 bytes; fewer would read as an all-zero header (wrong magic).
fn header_of(bytes: &[u8]) -> ImageHeader {
    ImageHeader::read_from(bytes).unwrap_or_else(ImageHeader::zeroed)
}

fn desc_of(table: &[u8], i: usize) -> SegmentDesc {
    let at = 64 + 64 * i;
    // Callers checked the table holds descriptor `i`.
    SegmentDesc::read_from(&table[at..at + 64]).unwrap_or_else(SegmentDesc::zeroed)
}

/// Seals a built image's header and descriptor table (`table`): sets `params_offset` and
/// returns where the purgatory's parameter block lies in its segment and the block to write
/// there (the header digest). The purgatory segment's descriptor digest was taken over
/// `purgatory` as linked, with the block's filled fields as zeros, which they are there.
pub fn seal(table: &mut [u8], purgatory: &[u8]) -> Result<(usize, [u8; 48]), LoadError> {
    let purgatory_err = |e: String| image_err("embedded purgatory", e);
    let off = params_offset().map_err(purgatory_err)? as usize;
    let linked = purgatory.get(off..off + 48).and_then(ImageParams::read);
    if linked != Some(ImageParams::EMPTY) {
        return Err(purgatory_err(format!(
            "{PARAMS_SYMBOL} at {off:#x} is not an unfilled parameter block"
        )));
    }
    table[20..24].copy_from_slice(&(off as u32).to_le_bytes());
    let params = ImageParams {
        table_len: table.len() as u64,
        header_digest: pvhandoff::digest::sha256(table),
        ..ImageParams::EMPTY
    };
    Ok((off, params.to_bytes()))
}

/// Where every segment's data lies, from the (not yet trusted) header and table, and the
/// zero-run table (its digest and records checked).
struct Layout {
    header: ImageHeader,
    descs: Vec<SegmentDesc>,
    offsets: Vec<u64>,
    /// The zero-run table's bytes (empty: none) and its index.
    zero_table: Vec<u8>,
    zero_at: Option<usize>,
}

impl Layout {
    /// Checks what [`pvhandoff::image::ImageView::parse`] checks, against a file of `file_len`
    /// bytes: `table` is the header and descriptor table.
    fn of(src: &mut impl Source, table: &[u8], file_len: u64) -> Result<Layout, String> {
        let header = header_of(table);
        let n = header.nr_segments as usize;
        let descs: Vec<SegmentDesc> = (0..n).map(|i| desc_of(table, i)).collect();
        if header.data_offset < table.len() as u64 {
            return Err(format!(
                "data offset {:#x} lies inside the descriptor table",
                header.data_offset
            ));
        }
        let is_table = |d: &&SegmentDesc| d.kind == SegmentKind::ZeroRuns as u32;
        let zero_at = descs.iter().position(|d| is_table(&d));
        if descs.iter().filter(is_table).count() > 1 {
            return Err("zero-run table refused: more than one".into());
        }
        let purgatory = descs
            .iter()
            .position(|d| d.flags & SEG_FLAG_PURGATORY_MAPPING != 0);
        if let (Some(z), Some(p)) = (zero_at, purgatory) {
            if p > z {
                return Err(format!(
                    "zero-run table refused: segment {z}, before the purgatory (segment {p})"
                ));
            }
        }
        let mut layout = Layout {
            header,
            descs,
            offsets: Vec::with_capacity(n),
            zero_table: Vec::new(),
            zero_at: None,
        };
        let mut off = header.data_offset;
        for i in 0..n {
            let d = layout.descs[i];
            let stored = zero::stored_len(d.len, &layout.zeros(i));
            let end = off.checked_add(stored).filter(|&e| e <= file_len);
            let Some(end) = end else {
                return Err(format!(
                    "segment {i}: {stored} bytes at {off:#x} lie outside the {file_len}-byte file",
                ));
            };
            layout.offsets.push(off);
            if zero_at == Some(i) {
                layout.zero_table = read_zero_table(src, &layout.descs, i, off)?;
                layout.zero_at = Some(i);
            }
            off = end.next_multiple_of(4096);
        }
        Ok(layout)
    }

    fn purgatory(&self) -> Option<(usize, &SegmentDesc)> {
        self.descs
            .iter()
            .enumerate()
            .find(|(_, d)| d.flags & SEG_FLAG_PURGATORY_MAPPING != 0)
    }

    /// Segment `i`'s zero runs (none before the table is read).
    fn zeros(&self, i: usize) -> SegmentZeros<'_> {
        match self.zero_at {
            Some(_) => ZeroRuns::parse(&self.zero_table)
                .map(|t| t.of_segment(i as u32))
                .unwrap_or_default(),
            None => SegmentZeros::NONE,
        }
    }
}

/// Reads the zero-run table (segment `at`, at file offset `off`), bounded by the records the
/// image's other segments could need, and checks its digest, then its records.
fn read_zero_table(
    src: &mut impl Source,
    descs: &[SegmentDesc],
    at: usize,
    off: u64,
) -> Result<Vec<u8>, String> {
    let pages: u64 = descs[at + 1..]
        .iter()
        .map(|d| d.len.div_ceil(4096))
        .fold(0, u64::saturating_add);
    let len = descs[at].len;
    if len > zero::table_len(pages) {
        return Err(format!(
            "zero-run table refused: {len} bytes, more than records for the {pages} pages after it"
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    src.read_at(off, &mut bytes).map_err(|e| e.to_string())?;
    if pvhandoff::digest::sha256(&bytes) != descs[at].sha256 {
        return Err(format!(
            "zero-run table refused: segment {at}'s bytes do not match its SHA-256 (MISMATCH)"
        ));
    }
    let runs = ZeroRuns::parse(&bytes).map_err(|e| format!("zero-run table refused: {e:?}"))?;
    runs.check(at, descs.len(), |j| descs[j])
        .map_err(|e| format!("zero-run table refused: {e:?}"))?;
    Ok(bytes)
}

/// Reads the header and descriptor table (bounded by [`MAX_SEGMENTS`]).
fn read_table(src: &mut impl Source, len: u64) -> Result<Vec<u8>, String> {
    if len < 64 {
        return Err(format!("{len} bytes: shorter than the 64-byte header"));
    }
    let mut head = vec![0u8; 64];
    src.read_at(0, &mut head).map_err(|e| e.to_string())?;
    let h = header_of(&head);
    if h.magic != IMAGE_MAGIC {
        return Err("no PVKXIMG magic: not a kexec image".into());
    }
    if h.version != IMAGE_VERSION || h.header_size != 64 {
        return Err(format!(
            "version {} with a {}-byte header (this pvkexec reads version {IMAGE_VERSION})",
            h.version, h.header_size
        ));
    }
    if h.nr_segments == 0 || h.nr_segments > MAX_SEGMENTS {
        return Err(format!(
            "{} segments (1 to {MAX_SEGMENTS} allowed)",
            h.nr_segments
        ));
    }
    let table_len = 64 + 64 * h.nr_segments as u64;
    if table_len > len {
        return Err(format!(
            "the table of {} descriptors runs past the {len}-byte file",
            h.nr_segments
        ));
    }
    head.resize(table_len as usize, 0);
    src.read_at(64, &mut head[64..])
        .map_err(|e| e.to_string())?;
    Ok(head)
}

/// Random-access reads of an image.
trait Source {
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl Source for &[u8] {
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let src = usize::try_from(off)
            .ok()
            .and_then(|o| self.get(o..o.checked_add(buf.len())?))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl Source for std::fs::File {
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.seek(SeekFrom::Start(off))?;
        self.read_exact(buf)
    }
}

/// Reads an image and checks every digest; returns the report and whether all matched.
pub fn inspect(input: &str, bytes: &[u8]) -> Result<(String, bool), LoadError> {
    let mut src = bytes;
    check(input, &mut src, bytes.len() as u64)
}

/// [`inspect`] for a file, read piece by piece: a regular file of any size.
pub fn inspect_file(path: &Path) -> Result<(String, bool), LoadError> {
    let (mut file, len) = open_checked(path, Role::Image { max: u64::MAX })?;
    check(&path.display().to_string(), &mut file, len)
}

fn check(input: &str, src: &mut impl Source, len: u64) -> Result<(String, bool), LoadError> {
    let table = read_table(src, len).map_err(|e| image_err(input, e))?;
    let layout = Layout::of(src, &table, len).map_err(|e| image_err(input, e))?;
    let h = layout.header;
    let mut out = format!(
        "kexec image v{}: {} segments, {} bytes\n purgatory at {:#x}, entry {:#x}\n kernel entry {:#x}\n",
        h.version, h.nr_segments, h.total_size, h.purgatory_base, h.purgatory_entry, h.kernel_entry
    );
    let (header_ok, params) = header_check(src, &table, &layout);
    out.push_str(&format!(" header and descriptor table: {}\n", header_ok.1));
    let mut all_ok = header_ok.0;
    let chunk_bytes = chunk_table(src, &layout);
    let chunks = chunk_bytes.as_deref().and_then(ChunkTable::parse);
    let mut chunks_checked = 0u32;
    let mut chunks_bad = 0u32;
    let io = |e: std::io::Error| LoadError::new(input, None, Reason::Io(e.to_string()));
    let mut buf = Vec::new();
    let mut runs_total = (0u64, 0u64);
    for (i, s) in layout.descs.iter().enumerate() {
        let first = chunks
            .as_ref()
            .map(|t| t.header.first_entry[i])
            .filter(|&f| f != NO_CHUNKS);
        let zeros = layout.zeros(i);
        let mut whole = SegmentHasher::new(s);
        let pages = s.len.div_ceil(4096);
        // One chunk's pages at a time: their stored pages are one read.
        for (c, from) in (0..pages).step_by(CHUNK_PAGES as usize).enumerate() {
            let to = from + CHUNK_PAGES;
            let (stored_first, n) = zero::stored_range(s.len, &zeros, from, to);
            buf.resize(n as usize, 0);
            src.read_at(layout.offsets[i] + stored_first * 4096, &mut buf)
                .map_err(io)?;
            if s.flags & SEG_FLAG_PURGATORY_MAPPING != 0 {
                blank_params(&mut buf, stored_first * 4096, params);
            }
            let pieces = Pieces::window(&buf, stored_first, zeros, s.len, from, to);
            for piece in pieces.clone() {
                whole.update_piece(piece);
            }
            if let (Some(first), Some(t)) = (first, chunks.as_ref()) {
                chunks_checked += 1;
                let k = u32::try_from(c).ok().and_then(|c| first.checked_add(c));
                if k.and_then(|k| t.entry(k)) != Some(&chunk_digest_of(pieces)[..]) {
                    chunks_bad += 1;
                }
            }
        }
        let ok = whole.finish() == s.sha256;
        all_ok &= ok;
        let hex: String = s.sha256.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!(
            " segment {i} {:<10} pfn {:#8x} pages {:#6x} len {:#9x} sha256 {hex} {}\n",
            s.kind_name(),
            s.dest_pfn,
            s.nr_pages,
            s.len,
            if ok { "ok" } else { "MISMATCH" }
        ));
        if s.kind == SegmentKind::Purgatory as u32 {
            out.push_str(&format!(
                "   purgatory loaded size {} bytes ({} pages)\n",
                s.len, s.nr_pages
            ));
        }
        if !zeros.is_empty() {
            out.push_str(&zero_runs_line(&zeros));
            runs_total.0 += zeros.len() as u64;
            runs_total.1 += zeros.zero_pages();
        }
        if layout.zero_at == Some(i) {
            out.push_str("   zero-run table: digest and records ok\n");
        }
    }
    if layout.zero_at.is_some() {
        out.push_str(&format!(
            " zero runs: {} runs, {} pages ({} bytes) not stored in the file\n",
            runs_total.0,
            runs_total.1,
            runs_total.1 * 4096
        ));
    }
    if let Some(i) = layout
        .descs
        .iter()
        .position(|s| s.kind == SegmentKind::Plan as u32)
    {
        let line = plan_check(src, &layout, i);
        all_ok &= line.is_ok();
        out.push_str(&format!(
            " plan record: {}\n",
            line.unwrap_or_else(|e| e.to_string())
        ));
    }
    // The chunk digests must agree with the segments too (the purgatory checks those).
    if layout
        .descs
        .iter()
        .any(|s| s.kind == SegmentKind::ChunkDigests as u32)
    {
        match chunks {
            None => {
                all_ok = false;
                out.push_str(" chunk digests: table unreadable\n");
            }
            Some(_) => {
                all_ok &= chunks_bad == 0;
                out.push_str(&format!(
                    " chunk digests: {chunks_checked} chunks of {} KiB, {}\n",
                    CHUNK_SIZE >> 10,
                    if chunks_bad == 0 {
                        "all ok".to_string()
                    } else {
                        format!("{chunks_bad} MISMATCH")
                    }
                ));
            }
        }
    }
    Ok((out, all_ok))
}

/// The line that lists a segment's zero runs (the first few, then how many more).
fn zero_runs_line(zeros: &SegmentZeros) -> String {
    const SHOWN: usize = 8;
    let runs: Vec<String> = (0..zeros.len().min(SHOWN))
        .filter_map(|k| zeros.run(k))
        .map(|(first, n)| format!("{first:#x}+{n:#x}"))
        .collect();
    let more = match zeros.len() {
        n if n > SHOWN => format!(" and {} more", n - SHOWN),
        _ => String::new(),
    };
    format!(
        "   zero runs: {} ({} pages not stored): pages {}{more}\n",
        zeros.len(),
        zeros.zero_pages(),
        runs.join(", ")
    )
}

/// Zeroes the parameter block's filled fields where they fall in `buf` (bytes from `at` of
/// the purgatory segment): the descriptor digest was taken that way.
fn blank_params(buf: &mut [u8], at: u64, params_offset: Option<u64>) {
    let Some(p) = params_offset else { return };
    let f = ImageParams::FILLED;
    let field = p + f.start as u64..p + f.end as u64;
    let end = at + buf.len() as u64;
    for o in field.start.max(at)..field.end.min(end) {
        buf[(o - at) as usize] = 0;
    }
}

/// The header digest check: `((ok, text), params block offset in the purgatory segment)`.
fn header_check(
    src: &mut impl Source,
    table: &[u8],
    layout: &Layout,
) -> ((bool, String), Option<u64>) {
    let Some((i, d)) = layout.purgatory() else {
        return (
            (false, "no purgatory segment holds its digest".into()),
            None,
        );
    };
    let off = layout.header.params_offset as u64;
    let mut block = [0u8; 48];
    if off + 48 > d.len || src.read_at(layout.offsets[i] + off, &mut block).is_err() {
        return (
            (
                false,
                format!("parameter block at {off:#x} lies outside the purgatory segment"),
            ),
            None,
        );
    }
    let params = ImageParams::read(&block).expect("48 bytes");
    let text = match check_header_digest(table, &params) {
        Ok(()) => return ((true, "sha256 ok".into()), Some(off)),
        Err(HeaderDigestError::NotSealed) => "not sealed (no digest in the parameter block)".into(),
        Err(HeaderDigestError::BadLength(l)) => format!("digest covers {l} bytes: MISMATCH"),
        Err(HeaderDigestError::Mismatch(f)) => format!(
            "sha256 MISMATCH (recorded {:02x}{:02x}{:02x}{:02x}..., found {:02x}{:02x}{:02x}{:02x}...)",
            params.header_digest[0], params.header_digest[1], params.header_digest[2],
            params.header_digest[3], f[0], f[1], f[2], f[3]
        ),
        Err(HeaderDigestError::CountMismatch { nr_segments, table_len }) => {
            format!("{nr_segments} segments but a {table_len}-byte table: MISMATCH")
        }
    };
    ((false, text), Some(off))
}

/// The plan record, read and checked for the consistency the loader guarantees.
fn plan_check(src: &mut impl Source, layout: &Layout, i: usize) -> Result<String, &'static str> {
    let len = layout.descs[i].len.min(4096) as usize;
    let mut bytes = vec![0u8; len];
    src.read_at(layout.offsets[i], &mut bytes)
        .map_err(|_| "unreadable")?;
    let r = pvhandoff::image::PlanRecord::read(&bytes).ok_or("no PVKXPLAN record")?;
    r.check()?;
    Ok(format!(
        "ok ({} pages for the new kernel, {} hidden)",
        r.nr_pages, r.hidden_pages
    ))
}

/// Reads the chunk-digest table's bytes (bounded by the chunks the image can hold).
fn chunk_table(src: &mut impl Source, layout: &Layout) -> Option<Vec<u8>> {
    let i = layout
        .descs
        .iter()
        .position(|s| s.kind == SegmentKind::ChunkDigests as u32)?;
    let total: u64 = layout
        .descs
        .iter()
        .map(|d| d.len.div_ceil(CHUNK_SIZE))
        .sum();
    let len = layout.descs[i].len;
    if len > 272 + 32 * total {
        return None;
    }
    let mut bytes = vec![0u8; len as usize];
    src.read_at(layout.offsets[i], &mut bytes).ok()?;
    Some(bytes)
}
