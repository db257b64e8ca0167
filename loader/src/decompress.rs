//! Bounded decompression of every format Linux uses for a bzImage payload (and of a gzip'd
//! ELF). Every decoder streams into one [`ElfSink`], which stops with [`Reason::TooLarge`] one
//! byte past the bound and keeps only the bytes of the ELF the stream forms, so a hostile
//! payload costs neither unbounded memory nor more than the bound in time. The ELF is kept in
//! a [`SparseBuf`]: its all-zero pages (a kernel's bss and alignment gaps, about half of it)
//! are never written, so they cost no memory.

use crate::error::Reason;
use std::io::Read;

/// Payload compression formats, detected by their magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Bzip2,
    Xz,
    Zstd,
    Lzma,
    Lzo,
    Lz4,
    /// An uncompressed ELF payload (Xen's dom0 loader accepts it).
    None,
}

impl Compression {
    /// Detects the format from the first bytes (the order of Xen's domU bzImage loader).
    pub fn detect(b: &[u8]) -> Option<Self> {
        let starts = |m: &[u8]| b.starts_with(m);
        Some(if starts(&[0x1F, 0x8B]) || starts(&[0x1F, 0x9E]) {
            Self::Gzip
        } else if starts(b"BZh") {
            Self::Bzip2
        } else if starts(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
            Self::Xz
        } else if starts(&[0x28, 0xB5, 0x2F, 0xFD]) {
            Self::Zstd
        } else if starts(&[0x5D, 0x00]) {
            Self::Lzma
        } else if starts(&[0x89, b'L', b'Z', b'O', 0x00]) {
            Self::Lzo
        } else if starts(&[0x02, 0x21, 0x4C, 0x18]) {
            Self::Lz4
        } else if starts(b"\x7fELF") {
            Self::None
        } else {
            return None;
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Bzip2 => "bzip2",
            Self::Xz => "xz",
            Self::Zstd => "zstd",
            Self::Lzma => "lzma",
            Self::Lzo => "lzo",
            Self::Lz4 => "lz4",
            Self::None => "uncompressed",
        }
    }
}

/// Bytes appended into zeroed memory without writing any 4 KiB page of it that stays zero:
/// the allocator hands out fresh zero pages for large blocks, and a page nobody writes is never
/// made resident.
pub struct SparseBuf {
    /// Zeroed memory; `len` bytes of it hold what was appended.
    buf: Vec<u8>,
    len: usize,
}

const PAGE: usize = 4096;

/// `cap` zero bytes, or `None` when the allocator has no such block.
fn zeroed(cap: usize) -> Option<Vec<u8>> {
    if cap == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u8>(cap).ok()?;
    // SAFETY: the layout's size is not zero (checked above).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of `cap` u8s (alignment 1,
    // capacity `cap`), and alloc_zeroed initialised all `cap` bytes, so length `cap` is sound.
    Some(unsafe { Vec::from_raw_parts(ptr, cap, cap) })
}

impl SparseBuf {
    pub fn new() -> Self {
        SparseBuf {
            buf: Vec::new(),
            len: 0,
        }
    }

    /// Room for `cap` bytes in all (moving what is kept, page by page, zero pages skipped);
    /// `false` when the memory cannot be had.
    pub fn grow(&mut self, cap: usize) -> bool {
        if cap <= self.buf.len() {
            return true;
        }
        let Some(mut bigger) = zeroed(cap) else {
            return false;
        };
        copy_nonzero(&mut bigger[..self.len], &self.buf[..self.len]);
        self.buf = bigger;
        true
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Appends `bytes` (room checked by the caller: [`SparseBuf::grow`]).
    pub fn extend(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        copy_nonzero(&mut self.buf[self.len..end], bytes);
        self.len = end;
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The bytes appended (the memory past them is given back only as far as the allocator
    /// does; it was never written).
    pub fn into_vec(mut self) -> Vec<u8> {
        self.buf.truncate(self.len);
        self.buf
    }

    /// A copy of `bytes` whose zero pages stay untouched (a plain copy when the memory cannot
    /// be had in one block).
    pub fn copy_of(bytes: &[u8]) -> Vec<u8> {
        let mut b = SparseBuf::new();
        if !b.grow(bytes.len()) {
            return bytes.to_vec();
        }
        b.extend(bytes);
        b.into_vec()
    }
}

impl Default for SparseBuf {
    fn default() -> Self {
        Self::new()
    }
}

/// Copies `src` into the zeroed `dst` (same length) by destination page, leaving alone every
/// page whose bytes are all zero.
fn copy_nonzero(dst: &mut [u8], src: &[u8]) {
    let base = dst.as_ptr() as usize;
    let mut at = 0;
    while at < src.len() {
        let n = (PAGE - (base + at) % PAGE).min(src.len() - at);
        let piece = &src[at..at + n];
        if piece.iter().any(|&b| b != 0) {
            dst[at..at + n].copy_from_slice(piece);
        }
        at += n;
    }
}

/// Where decompressed bytes go: counted against the bound, and kept only as far as the ELF
/// they form reaches (its header, program and section header tables and what those point
/// at). What follows (Linux appends its relocation table to the ELF) is counted and dropped,
/// so memory is bounded by the ELF's own extent, never by how far a stream inflates.
pub struct ElfSink {
    format: Compression,
    limit: u64,
    what: &'static str,
    kept: SparseBuf,
    total: u64,
    /// Bytes to keep; grows as the headers are read.
    need: u64,
    stage: Stage,
    /// The stream must be an ELF image (else: any bytes, all kept).
    elf: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the 64-byte ELF header.
    Header,
    /// Waiting for the program header table (ends at the first value), then the section
    /// header table (ends at the second).
    Tables {
        ph_end: u64,
        sh_end: u64,
        ph_done: bool,
        sh_done: bool,
    },
    /// Every table read: `need` is final.
    Done,
}

fn le(b: &[u8], at: u64, n: usize) -> u64 {
    let at = at as usize;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(&b[at..at + n]);
    u64::from_le_bytes(v)
}

impl ElfSink {
    /// A sink for at most `limit` decompressed bytes; `what` says what the limit is.
    pub fn new(format: Compression, limit: u64, what: &'static str) -> Self {
        ElfSink {
            format,
            limit,
            what,
            kept: SparseBuf::new(),
            total: 0,
            need: 64,
            stage: Stage::Header,
            elf: true,
        }
    }

    /// A sink that keeps every byte up to `limit` (any content).
    pub fn raw(format: Compression, limit: u64, what: &'static str) -> Self {
        ElfSink {
            need: limit,
            stage: Stage::Done,
            elf: false,
            ..Self::new(format, limit, what)
        }
    }

    fn too_large(&self) -> Reason {
        Reason::TooLarge {
            format: self.format.name(),
            limit: self.limit,
            what: self.what,
        }
    }

    /// Takes the next decompressed bytes.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<(), Reason> {
        self.total = self.total.saturating_add(chunk.len() as u64);
        if self.total > self.limit {
            return Err(self.too_large());
        }
        while !chunk.is_empty() && (self.kept.len as u64) < self.need {
            let take = ((self.need - self.kept.len as u64) as usize).min(chunk.len());
            let want = self.kept.len + take;
            if want > self.kept.capacity() {
                // An ELF's extent is known from its headers: room for all of it at once (its
                // zero pages cost nothing). Any other stream grows geometrically.
                let room = match self.elf {
                    true => self.need.min(self.limit),
                    false => (self.kept.capacity() as u64 * 2)
                        .max(1 << 16)
                        .min(self.need),
                };
                let room = usize::try_from(room).unwrap_or(usize::MAX).max(want);
                if !self.kept.grow(room) {
                    return Err(bad(
                        self.format,
                        format!("cannot allocate {room} bytes for the output"),
                    ));
                }
            }
            self.kept.extend(&chunk[..take]);
            chunk = &chunk[take..];
            self.advance()?;
        }
        Ok(())
    }

    /// Reads whatever headers are complete and raises `need` to what they reference.
    fn advance(&mut self) -> Result<(), Reason> {
        let have = self.kept.len as u64;
        let b = self.kept.as_slice();
        match self.stage {
            Stage::Header if have >= 64 => {
                if !b.starts_with(b"\x7fELF") {
                    return Err(bad(self.format, "payload is not an ELF image"));
                }
                if b[4] != 2 || b[5] != 1 {
                    // Not ELF64 little-endian: the ELF reader names it; keep the header only.
                    self.stage = Stage::Done;
                    return Ok(());
                }
                let table = |off: u64, num: u64, size: u64| off.saturating_add(num * size);
                let ph_end = table(le(b, 0x20, 8), le(b, 0x38, 2), le(b, 0x36, 2));
                let sh_end = table(le(b, 0x28, 8), le(b, 0x3C, 2), le(b, 0x3A, 2));
                self.need = self.need.max(ph_end).max(sh_end);
                self.stage = Stage::Tables {
                    ph_end,
                    sh_end,
                    ph_done: false,
                    sh_done: false,
                };
                self.advance()
            }
            Stage::Tables {
                ph_end,
                sh_end,
                mut ph_done,
                mut sh_done,
            } => {
                if !ph_done && have >= ph_end {
                    let (off, num, size) = (le(b, 0x20, 8), le(b, 0x38, 2), le(b, 0x36, 2));
                    if size >= 0x28 {
                        for i in 0..num {
                            let ph = off + i * size;
                            let end = le(b, ph + 8, 8).saturating_add(le(b, ph + 0x20, 8));
                            self.need = self.need.max(end);
                        }
                    }
                    ph_done = true;
                }
                if !sh_done && have >= sh_end {
                    let (off, num, size) = (le(b, 0x28, 8), le(b, 0x3C, 2), le(b, 0x3A, 2));
                    if size >= 0x28 {
                        for i in 0..num {
                            let sh = off + i * size;
                            const SHT_NOBITS: u64 = 8;
                            if le(b, sh + 4, 4) != SHT_NOBITS {
                                let end = le(b, sh + 0x18, 8).saturating_add(le(b, sh + 0x20, 8));
                                self.need = self.need.max(end);
                            }
                        }
                    }
                    sh_done = true;
                }
                self.stage = if ph_done && sh_done {
                    Stage::Done
                } else {
                    Stage::Tables {
                        ph_end,
                        sh_end,
                        ph_done,
                        sh_done,
                    }
                };
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The kept ELF bytes and the whole stream's length.
    pub fn finish(self) -> Result<(Vec<u8>, u64), Reason> {
        if self.elf && !self.kept.as_slice().starts_with(b"\x7fELF") {
            return Err(bad(self.format, "payload is not an ELF image"));
        }
        Ok((self.kept.into_vec(), self.total))
    }
}

/// Feeds everything `reader` yields into `sink`, 64 KiB at a time.
fn pump(format: Compression, mut reader: impl Read, sink: &mut ElfSink) -> Result<(), Reason> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad(format, e)),
        };
        sink.push(&buf[..n])?;
    }
}

fn bad(format: Compression, reason: impl ToString) -> Reason {
    Reason::Decompress {
        format: format.name(),
        reason: reason.to_string(),
    }
}

/// A decompressed ELF: its bytes, and how long the whole stream was (the ELF plus what
/// follows it, which is not kept).
#[derive(Debug)]
pub struct Decompressed {
    pub elf: Vec<u8>,
    pub stream_len: u64,
}

/// Decompresses `data` in `format`, which must yield an ELF image, producing at most `limit`
/// bytes (`what` says what the limit is, for the error). Memory stays within the ELF's own
/// extent however far the stream would inflate.
pub fn decompress_elf(
    format: Compression,
    data: &[u8],
    limit: u64,
    what: &'static str,
) -> Result<Decompressed, Reason> {
    let mut sink = ElfSink::new(format, limit, what);
    run(format, data, &mut sink)?;
    let (elf, stream_len) = sink.finish()?;
    Ok(Decompressed { elf, stream_len })
}

/// Decompresses `data` in `format` whole, producing at most `limit` bytes.
pub fn decompress(format: Compression, data: &[u8], limit: u64) -> Result<Vec<u8>, Reason> {
    let mut sink = ElfSink::raw(format, limit, "the bound asked for");
    run(format, data, &mut sink)?;
    Ok(sink.finish()?.0)
}

fn run(format: Compression, data: &[u8], sink: &mut ElfSink) -> Result<(), Reason> {
    let sink = &mut *sink;
    match format {
        Compression::Gzip => pump(format, flate2::read::GzDecoder::new(data), sink)?,
        Compression::Bzip2 => pump(format, bzip2::read::BzDecoder::new(data), sink)?,
        Compression::Xz => {
            let stream =
                xz2::stream::Stream::new_stream_decoder(u64::MAX, 0).map_err(|e| bad(format, e))?;
            pump(format, xz2::read::XzDecoder::new_stream(data, stream), sink)?
        }
        Compression::Lzma => {
            // Linux's "lzma" is the legacy .lzma (LZMA-alone) container.
            let stream =
                xz2::stream::Stream::new_lzma_decoder(u64::MAX).map_err(|e| bad(format, e))?;
            pump(format, xz2::read::XzDecoder::new_stream(data, stream), sink)?
        }
        Compression::Zstd => {
            let decoder =
                ruzstd::decoding::StreamingDecoder::new(data).map_err(|e| bad(format, e))?;
            pump(format, decoder, sink)?
        }
        Compression::Lz4 => lz4_legacy(data, sink)?,
        Compression::Lzo => lzop(data, sink)?,
        Compression::None => sink.push(data)?,
    }
    Ok(())
}

fn u32_le(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        data.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u32_be(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        data.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u16_be(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        data.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// LZ4 legacy frame (what Linux's `lz4 -l` writes): magic 0x184C2102, then blocks of a
/// little-endian u32 compressed size and an LZ4 block of at most 8 MiB output. A repeated magic
/// starts another frame. lz4_flex decodes the blocks; the framing is this small loop because
/// lz4_flex's frame decoder reads only the modern frame format.
fn lz4_legacy(data: &[u8], out: &mut ElfSink) -> Result<(), Reason> {
    const MAGIC: u32 = 0x184C_2102;
    const MAX_BLOCK: usize = 8 << 20;
    let f = Compression::Lz4;
    let mut blocks = 0u64;
    let mut at = 4;
    let mut block = vec![0u8; MAX_BLOCK];
    while let Some(size) = u32_le(data, at) {
        at += 4;
        if size == MAGIC {
            continue;
        }
        let input = data
            .get(at..at.saturating_add(size as usize))
            .ok_or_else(|| {
                bad(
                    f,
                    format!("block of {size} bytes at {:#x} past the end", at - 4),
                )
            })?;
        let n = lz4_flex::block::decompress_into(input, &mut block).map_err(|e| bad(f, e))?;
        out.push(&block[..n])?;
        blocks += 1;
        at += size as usize;
    }
    if blocks == 0 {
        return Err(bad(f, "no blocks"));
    }
    Ok(())
}

/// lzop container (what Linux's `lzop -9` writes): header, then blocks of big-endian
/// `dst_len`, `src_len` and optional checksums, each block stored or LZO1X-compressed, ending
/// with `dst_len == 0`. No crate parses the lzop container, and the LZO1X crates available
/// panic on corrupt input (lzokay-native 0.1 subtracts with overflow, found by this crate's
/// property tests), so both are written here with every access bounds-checked.
fn lzop(data: &[u8], out: &mut ElfSink) -> Result<(), Reason> {
    const F_ADLER32_D: u32 = 0x1;
    const F_ADLER32_C: u32 = 0x2;
    const F_H_EXTRA_FIELD: u32 = 0x40;
    const F_CRC32_D: u32 = 0x100;
    const F_CRC32_C: u32 = 0x200;
    const F_H_FILTER: u32 = 0x800;
    let f = Compression::Lzo;
    let short = || bad(f, "truncated lzop header");
    let mut at = 9; // magic
    let version = u16_be(data, at).ok_or_else(short)?;
    at += 4; // version, library version
    if version >= 0x0940 {
        at += 2; // version needed
    }
    let method = *data.get(at).ok_or_else(short)?;
    if !(1..=3).contains(&method) {
        return Err(bad(f, format!("unknown lzop method {method}")));
    }
    at += 1;
    if version >= 0x0940 {
        at += 1; // level
    }
    let flags = u32_be(data, at).ok_or_else(short)?;
    at += 4;
    if flags & F_H_FILTER != 0 {
        at += 4;
    }
    at += 8; // mode, mtime low
    if version >= 0x0940 {
        at += 4; // mtime high
    }
    let name_len = *data.get(at).ok_or_else(short)? as usize;
    at += 1 + name_len + 4; // name, header checksum
    if flags & F_H_EXTRA_FIELD != 0 {
        let extra = u32_be(data, at).ok_or_else(short)? as usize;
        at += 4 + extra + 4;
    }
    loop {
        let dst_len = u32_be(data, at).ok_or_else(|| bad(f, "truncated block header"))? as usize;
        at += 4;
        if dst_len == 0 {
            break;
        }
        let src_len = u32_be(data, at).ok_or_else(|| bad(f, "truncated block header"))? as usize;
        at += 4;
        if dst_len > 64 << 20 || src_len > dst_len {
            return Err(bad(f, format!("bad block sizes {src_len} -> {dst_len}")));
        }
        if out.total.saturating_add(dst_len as u64) > out.limit {
            return Err(out.too_large());
        }
        if flags & (F_ADLER32_D | F_CRC32_D) != 0 {
            at += 4;
        }
        if src_len < dst_len && flags & (F_ADLER32_C | F_CRC32_C) != 0 {
            at += 4;
        }
        let block = data
            .get(at..at.saturating_add(src_len))
            .ok_or_else(|| bad(f, "block past the end"))?;
        at += src_len;
        if src_len == dst_len {
            out.push(block)?;
        } else {
            let plain = lzo1x(block, dst_len).map_err(|e| bad(f, e))?;
            if plain.len() != dst_len {
                return Err(bad(
                    f,
                    format!("block gave {} bytes, header says {dst_len}", plain.len()),
                ));
            }
            out.push(&plain)?;
        }
    }
    Ok(())
}

/// LZO1X decompression (the format of Linux's `lib/lzo` and liblzo2's `lzo1x_decompress_safe`)
/// into at most `max_out` bytes. Every read of the input and every back-reference is checked;
/// corrupt input is an error, never a panic or an out-of-bounds access.
pub fn lzo1x(input: &[u8], max_out: usize) -> Result<Vec<u8>, String> {
    let mut out: Vec<u8> = Vec::with_capacity(max_out.min(1 << 20));
    let mut ip = 0usize;
    let byte = |ip: &mut usize| -> Result<usize, String> {
        let b = *input.get(*ip).ok_or("input overrun")?;
        *ip += 1;
        Ok(b as usize)
    };
    // A run of zero bytes extends a length by 255 each, then the next byte is added.
    let extended = |ip: &mut usize, base: usize| -> Result<usize, String> {
        let mut zeros = 0usize;
        while *input.get(*ip).ok_or("input overrun")? == 0 {
            *ip += 1;
            zeros += 1;
            if zeros > max_out / 255 + 1 {
                return Err("length run longer than the output".into());
            }
        }
        Ok(base + zeros * 255 + byte(ip)?)
    };
    let literals = |ip: &mut usize, out: &mut Vec<u8>, n: usize| -> Result<(), String> {
        let run = input
            .get(*ip..*ip + n)
            .ok_or("literal run past the input")?;
        if out.len() + n > max_out {
            return Err("output overrun".into());
        }
        out.extend_from_slice(run);
        *ip += n;
        Ok(())
    };
    let copy_match = |out: &mut Vec<u8>, distance: usize, len: usize| -> Result<(), String> {
        if distance == 0 || distance > out.len() {
            return Err(format!("back-reference {distance} before the output start"));
        }
        if out.len() + len > max_out {
            return Err("output overrun".into());
        }
        let from = out.len() - distance;
        for i in 0..len {
            let b = out[from + i];
            out.push(b);
        }
        Ok(())
    };

    let mut state; // literals copied after the last match (0..3), or 4 after a literal run
    let first = *input.first().ok_or("empty block")? as usize;
    if first > 17 {
        ip = 1;
        let t = first - 17;
        literals(&mut ip, &mut out, t)?;
        state = if t < 4 { t } else { 4 };
    } else {
        state = 0;
    }
    loop {
        let t = byte(&mut ip)?;
        let (distance, len);
        if t < 16 {
            if state == 0 {
                let n = if t == 0 { extended(&mut ip, 15)? } else { t } + 3;
                literals(&mut ip, &mut out, n)?;
                state = 4;
                continue;
            }
            let low = byte(&mut ip)?;
            if state == 4 {
                distance = 1 + 0x800 + (t >> 2) + (low << 2);
                len = 3;
            } else {
                distance = 1 + (t >> 2) + (low << 2);
                len = 2;
            }
            copy_match(&mut out, distance, len)?;
            state = t & 3;
        } else if t >= 64 {
            let low = byte(&mut ip)?;
            distance = 1 + ((t >> 2) & 7) + (low << 3);
            len = (t >> 5) + 1;
            copy_match(&mut out, distance, len)?;
            state = t & 3;
        } else if t >= 32 {
            len = if t & 31 == 0 {
                extended(&mut ip, 31)?
            } else {
                t & 31
            } + 2;
            let d = byte(&mut ip)? | (byte(&mut ip)? << 8);
            distance = 1 + (d >> 2);
            copy_match(&mut out, distance, len)?;
            state = d & 3;
        } else {
            len = if t & 7 == 0 {
                extended(&mut ip, 7)?
            } else {
                t & 7
            } + 2;
            let d = byte(&mut ip)? | (byte(&mut ip)? << 8);
            let high = (t & 8) << 11;
            if high == 0 && d >> 2 == 0 {
                // End of stream marker: a match of length 3 with distance 0x4000.
                if len != 3 {
                    return Err("bad end-of-stream marker".into());
                }
                return Ok(out);
            }
            distance = 0x4000 + high + (d >> 2);
            copy_match(&mut out, distance, len)?;
            state = d & 3;
        }
        literals(&mut ip, &mut out, state)?;
    }
}
