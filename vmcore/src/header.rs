//! The header bytes (ELF header, program headers, notes, padding), produced in order into
//! caller buffers, and the file offsets of the frames that follow.

use crate::frames::Frames;
use crate::prstatus::{ElfPrstatus, PRSTATUS_SIZE};
use crate::zero::{self, Loads, ZeroRuns};
use crate::{Error, Notes, PAGE_SHIFT, PAGE_SIZE};

pub(crate) const EHDR_SIZE: u64 = 64;
pub(crate) const PHDR_SIZE: u64 = 56;
/// `n_namesz`, `n_descsz`, `n_type`.
const NOTE_HEAD: u64 = 12;
const ET_CORE: u16 = 4;
const EM_X86_64: u16 = 62;
pub(crate) const PT_LOAD: u32 = 1;
pub(crate) const PT_NOTE: u32 = 4;
/// Read, write, execute: what Linux's vmcore headers say of memory.
pub(crate) const PF_RWX: u32 = 7;

pub(crate) const CORE_NAME: &[u8] = b"CORE\0";
pub(crate) const VMCOREINFO_NAME: &[u8] = b"VMCOREINFO\0";
pub(crate) const XEN_NAME: &[u8] = b"Xen\0";
pub(crate) const XEN_DESC: u64 = 80;

/// Room for the largest staged piece (a CPU's note: 12 + 8 + 336 bytes).
pub(crate) const STAGE: usize = 384;

pub(crate) const fn pad4(n: u64) -> u64 {
    (n + 3) & !3
}

pub(crate) const fn note_len(name: &[u8], desc: u64) -> u64 {
    NOTE_HEAD + pad4(name.len() as u64) + pad4(desc)
}

const _: () = assert!(note_len(CORE_NAME, PRSTATUS_SIZE as u64) as usize <= STAGE);

/// Offsets and sizes of a vmcore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub phnum: u16,
    pub notes_offset: u64,
    pub notes_len: u64,
    pub data_offset: u64,
    pub file_len: u64,
    /// Frames written (the dumped frames less those left out).
    pub data_pages: u64,
}

impl Layout {
    pub fn compute(
        frames: &Frames<'_>,
        zeros: &ZeroRuns<'_>,
        notes: &Notes<'_>,
    ) -> Result<Self, Error> {
        let (loads, data_pages) = zero::check(frames, zeros)?;
        // The counts are bounded by MAX_RUNS (here), MAX_CPUS and MAX_VMCOREINFO (checked
        // before), so only the page data can overflow.
        if loads > crate::MAX_RUNS {
            return Err(Error::TooManyRuns {
                runs: loads,
                max: crate::MAX_RUNS,
            });
        }
        let phnum = 1 + loads;
        let phnum_u16 = u16::try_from(phnum).map_err(|_| Error::TooManyRuns {
            runs: loads,
            max: crate::MAX_RUNS,
        })?;
        let notes_offset = EHDR_SIZE + PHDR_SIZE * phnum as u64;
        let notes_len = notes.cpus.len() as u64 * note_len(CORE_NAME, PRSTATUS_SIZE as u64)
            + vmcoreinfo_note_len(notes.vmcoreinfo)
            + note_len(XEN_NAME, XEN_DESC);
        let data_offset = (notes_offset + notes_len).next_multiple_of(PAGE_SIZE);
        let file_len = data_pages
            .checked_mul(PAGE_SIZE)
            .and_then(|b| b.checked_add(data_offset))
            .ok_or(Error::SizeOverflow)?;
        Ok(Layout {
            phnum: phnum_u16,
            notes_offset,
            notes_len,
            data_offset,
            file_len,
            data_pages,
        })
    }
}

pub(crate) fn vmcoreinfo_note_len(text: &[u8]) -> u64 {
    if text.is_empty() {
        0
    } else {
        note_len(VMCOREINFO_NAME, text.len() as u64)
    }
}

/// One piece of the header, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece {
    Ehdr,
    NotePhdr,
    LoadPhdr,
    Cpu(usize),
    VmcoreinfoHead,
    VmcoreinfoText,
    VmcoreinfoPad,
    Xen,
    PagePad,
    Done,
}

/// The header bytes in order: each [`HeaderStream::fill`] continues where the last stopped.
#[derive(Clone, Debug)]
pub struct HeaderStream<'a> {
    notes: Notes<'a>,
    layout: Layout,
    loads: Loads<'a>,
    /// File offset of the next `PT_LOAD`'s data.
    load_offset: u64,
    piece: Piece,
    /// Bytes of the current piece, and how many of them are out.
    len: u64,
    pos: u64,
    stage: [u8; STAGE],
    written: u64,
}

impl<'a> HeaderStream<'a> {
    pub(crate) fn new(
        frames: Frames<'a>,
        zeros: ZeroRuns<'a>,
        notes: Notes<'a>,
        layout: Layout,
    ) -> Self {
        let mut s = HeaderStream {
            notes,
            layout,
            loads: Loads::new(&frames, &zeros),
            load_offset: layout.data_offset,
            piece: Piece::Done,
            len: 0,
            pos: 0,
            stage: [0; STAGE],
            written: 0,
        };
        s.enter(Piece::Ehdr);
        s
    }

    /// Copies the next header bytes into `buf`; returns how many (less than `buf.len()`
    /// only at the end of the header, 0 once it is all out).
    pub fn fill(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() && self.piece != Piece::Done {
            let take = (self.len - self.pos).min((buf.len() - n) as u64) as usize;
            self.copy_out(&mut buf[n..n + take]);
            n += take;
            self.pos += take as u64;
            if self.pos == self.len {
                self.advance();
            }
        }
        self.written += n as u64;
        n
    }

    /// Header bytes produced so far (the file offset the next [`HeaderStream::fill`] starts at).
    pub fn position(&self) -> u64 {
        self.written
    }

    /// Header bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.layout.data_offset - self.written
    }

    pub fn is_done(&self) -> bool {
        self.piece == Piece::Done
    }

    fn copy_out(&self, out: &mut [u8]) {
        let from = self.pos as usize;
        match self.piece {
            Piece::VmcoreinfoText => {
                out.copy_from_slice(&self.notes.vmcoreinfo[from..from + out.len()])
            }
            Piece::VmcoreinfoPad | Piece::PagePad => out.fill(0),
            _ => out.copy_from_slice(&self.stage[from..from + out.len()]),
        }
    }

    /// Moves to the piece after the current one (skipping empty ones).
    fn advance(&mut self) {
        let next = match self.piece {
            Piece::Ehdr => Piece::NotePhdr,
            Piece::NotePhdr | Piece::LoadPhdr if self.loads.clone().next().is_some() => {
                Piece::LoadPhdr
            }
            Piece::NotePhdr | Piece::LoadPhdr => Piece::Cpu(0),
            Piece::Cpu(i) if i + 1 < self.notes.cpus.len() => Piece::Cpu(i + 1),
            Piece::Cpu(_) if self.notes.vmcoreinfo.is_empty() => Piece::Xen,
            Piece::Cpu(_) => Piece::VmcoreinfoHead,
            Piece::VmcoreinfoHead => Piece::VmcoreinfoText,
            Piece::VmcoreinfoText => Piece::VmcoreinfoPad,
            Piece::VmcoreinfoPad => Piece::Xen,
            Piece::Xen => Piece::PagePad,
            Piece::PagePad | Piece::Done => Piece::Done,
        };
        self.enter(next);
        if self.len == 0 && self.piece != Piece::Done {
            self.advance();
        }
    }

    /// Makes `piece` current: stages its bytes and sets its length.
    fn enter(&mut self, piece: Piece) {
        self.piece = piece;
        self.pos = 0;
        self.stage = [0; STAGE];
        self.len = match piece {
            Piece::Ehdr => self.stage_ehdr(),
            Piece::NotePhdr => self.stage_note_phdr(),
            Piece::LoadPhdr => self.stage_load_phdr(),
            Piece::Cpu(i) => self.stage_cpu(i),
            Piece::VmcoreinfoHead => {
                let len = self.notes.vmcoreinfo.len() as u64;
                self.stage_note_head(VMCOREINFO_NAME, len, crate::NT_VMCOREINFO)
            }
            Piece::VmcoreinfoText => self.notes.vmcoreinfo.len() as u64,
            Piece::VmcoreinfoPad => {
                let len = self.notes.vmcoreinfo.len() as u64;
                pad4(len) - len
            }
            Piece::Xen => self.stage_xen(),
            Piece::PagePad => {
                let l = &self.layout;
                l.data_offset - (l.notes_offset + l.notes_len)
            }
            Piece::Done => 0,
        };
    }

    fn stage_ehdr(&mut self) -> u64 {
        stage_ehdr(&mut self.stage, self.layout.phnum)
    }

    fn stage_note_phdr(&mut self) -> u64 {
        let (offset, len) = (self.layout.notes_offset, self.layout.notes_len);
        let sizes = Sizes {
            file: len,
            memory: len,
        };
        stage_phdr(&mut self.stage, PT_NOTE, 0, offset, 0, sizes, 4)
    }

    fn stage_load_phdr(&mut self) -> u64 {
        // advance() enters LoadPhdr only when a PT_LOAD is left.
        let Some(load) = self.loads.next() else {
            return 0;
        };
        let bytes = load.pages << PAGE_SHIFT;
        // A zero-only PT_LOAD points past the data (see the zero module: never over another
        // PT_LOAD's data).
        let (offset, file) = if load.zero {
            (self.layout.file_len, 0)
        } else {
            (self.load_offset, bytes)
        };
        self.load_offset += file;
        let paddr = load.mfn << PAGE_SHIFT;
        stage_phdr(
            &mut self.stage,
            PT_LOAD,
            PF_RWX,
            offset,
            paddr,
            Sizes {
                file,
                memory: bytes,
            },
            PAGE_SIZE,
        )
    }

    fn stage_note_head(&mut self, name: &[u8], desc_len: u64, n_type: u32) -> u64 {
        stage_note_head(&mut self.stage, name, desc_len, n_type)
    }

    fn stage_cpu(&mut self, i: usize) -> u64 {
        stage_cpu(&mut self.stage, &self.notes.cpus[i])
    }

    fn stage_xen(&mut self) -> u64 {
        stage_xen(&mut self.stage, &self.notes.xen)
    }
}

/// The ELF header of a core file of `phnum` program headers, which follow it.
pub(crate) fn stage_ehdr(s: &mut [u8; STAGE], phnum: u16) -> u64 {
    s[..4].copy_from_slice(b"\x7fELF");
    s[4] = 2; // ELFCLASS64
    s[5] = 1; // ELFDATA2LSB
    s[6] = 1; // EV_CURRENT
    put(s, 16, &ET_CORE.to_le_bytes());
    put(s, 18, &EM_X86_64.to_le_bytes());
    put(s, 20, &1u32.to_le_bytes()); // e_version
    put(s, 32, &EHDR_SIZE.to_le_bytes()); // e_phoff
    put(s, 52, &(EHDR_SIZE as u16).to_le_bytes()); // e_ehsize
    put(s, 54, &(PHDR_SIZE as u16).to_le_bytes()); // e_phentsize
    put(s, 56, &phnum.to_le_bytes());
    EHDR_SIZE
}

pub(crate) fn stage_note_head(s: &mut [u8; STAGE], name: &[u8], desc_len: u64, n_type: u32) -> u64 {
    put(s, 0, &(name.len() as u32).to_le_bytes());
    put(s, 4, &(desc_len as u32).to_le_bytes());
    put(s, 8, &n_type.to_le_bytes());
    put(s, 12, name);
    NOTE_HEAD + pad4(name.len() as u64)
}

/// One CPU's "CORE" `NT_PRSTATUS` note.
pub(crate) fn stage_cpu(s: &mut [u8; STAGE], cpu: &crate::CpuState) -> u64 {
    let desc = ElfPrstatus::for_cpu(cpu).to_bytes();
    let head = stage_note_head(s, CORE_NAME, desc.len() as u64, crate::NT_PRSTATUS);
    put(s, head as usize, &desc);
    head + pad4(desc.len() as u64)
}

/// The "Xen" `XEN_ELFNOTE_CRASH_INFO` note.
pub(crate) fn stage_xen(s: &mut [u8; STAGE], xen: &crate::CrashXenInfo) -> u64 {
    let desc = xen.to_bytes();
    let head = stage_note_head(s, XEN_NAME, XEN_DESC, crate::XEN_ELFNOTE_CRASH_INFO);
    put(s, head as usize, &desc);
    head + XEN_DESC
}

/// `p_filesz` and `p_memsz`: 0 and the zeros' size for zeros left out, else the same.
#[derive(Clone, Copy)]
pub(crate) struct Sizes {
    pub file: u64,
    pub memory: u64,
}

pub(crate) fn stage_phdr(
    s: &mut [u8; STAGE],
    p_type: u32,
    flags: u32,
    offset: u64,
    paddr: u64,
    size: Sizes,
    align: u64,
) -> u64 {
    put(s, 0, &p_type.to_le_bytes());
    put(s, 4, &flags.to_le_bytes());
    put(s, 8, &offset.to_le_bytes());
    // p_vaddr (16) stays 0: machine addresses have no kernel virtual address.
    put(s, 24, &paddr.to_le_bytes());
    put(s, 32, &size.file.to_le_bytes()); // p_filesz
    put(s, 40, &size.memory.to_le_bytes()); // p_memsz
    put(s, 48, &align.to_le_bytes());
    PHDR_SIZE
}

fn put(s: &mut [u8; STAGE], at: usize, bytes: &[u8]) {
    s[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Where one frame's bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSlot {
    /// File offset (page aligned).
    pub offset: u64,
    pub mfn: u64,
}

/// The frames written, in file order (ascending MFN), each with its file offset.
#[derive(Clone, Debug)]
pub struct Pages<'a> {
    loads: Loads<'a>,
    /// The next frame of the current `PT_LOAD`'s data, and how many are left there.
    mfn: u64,
    in_load: u64,
    offset: u64,
    left: u64,
}

impl<'a> Pages<'a> {
    pub(crate) fn new(frames: &Frames<'a>, zeros: &ZeroRuns<'a>, layout: &Layout) -> Self {
        Pages {
            loads: Loads::new(frames, zeros),
            mfn: 0,
            in_load: 0,
            offset: layout.data_offset,
            left: layout.data_pages,
        }
    }
}

impl Iterator for Pages<'_> {
    type Item = PageSlot;

    fn next(&mut self) -> Option<PageSlot> {
        while self.in_load == 0 {
            let load = self.loads.next()?;
            self.mfn = load.mfn;
            self.in_load = if load.zero { 0 } else { load.pages };
        }
        let slot = PageSlot {
            offset: self.offset,
            mfn: self.mfn,
        };
        self.mfn += 1;
        self.in_load -= 1;
        // Layout::compute checked that the last offset fits.
        self.offset = self.offset.saturating_add(PAGE_SIZE);
        self.left = self.left.saturating_sub(1);
        Some(slot)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.left).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Pages<'_> {}
