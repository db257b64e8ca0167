//! The ELF64 core file ("vmcore") of a crashed Xen PV x86_64 Linux, in the shape `crash` and
//! `makedumpfile` already read for PV kernels (their dom0 path):
//!
//! - `ET_CORE`, `EM_X86_64`; one `PT_NOTE`, then one `PT_LOAD` per run of contiguous machine
//!   frames with `p_paddr` = MFN << 12 (`p_vaddr` 0), page data page-aligned after the header;
//! - the notes: one "CORE" `NT_PRSTATUS` per CPU, "VMCOREINFO" (the old kernel's text), and
//!   "Xen" `XEN_ELFNOTE_CRASH_INFO` (Xen's `crash_xen_info_t`) whose last word is the MFN of
//!   the old kernel's P2M frame-list-list page ([`p2m`] builds one).
//!
//! Runs of zero frames may be left out ([`zero`]): each is a `PT_LOAD` with `p_filesz` 0,
//! which the readers give back as zeros.
//!
//! `no_std` without `alloc`: the capture kernel streams the header out of a
//! [`HeaderStream`] into its own buffers and then writes each frame at the offset
//! [`Vmcore::pages`] gives. Nothing here reads memory or panics on bad input.

#![no_std]
#![forbid(unsafe_code)]

pub mod elfcorehdr;
mod error;
mod frames;
mod header;
pub mod p2m;
pub mod prstatus;
pub mod sweep;
pub mod zero;

pub use error::Error;
pub use frames::{present_mfn, Frames, Mfns, Run, Runs, MAX_MFN};
pub use header::{HeaderStream, PageSlot, Pages};
pub use prstatus::{CpuState, ElfPrstatus, UserRegs};
pub use sweep::{sweep, MfnSource, SweepError, Swept};
pub use zero::{Load, Loads, ZeroRunFinder, ZeroRuns};

/// Bytes of a page and of every `PT_LOAD` unit.
pub const PAGE_SIZE: u64 = xenpv::PAGE_SIZE;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = xenpv::PAGE_SHIFT;

/// Most CPUs a dump describes (Debian's `CONFIG_NR_CPUS`).
pub const MAX_CPUS: usize = 8192;
/// Most bytes of VMCOREINFO text accepted (Linux's note holds one page; this leaves room).
pub const MAX_VMCOREINFO: usize = 1 << 20;
/// Most `PT_LOAD`s: `e_phnum` is 16 bits, 0xffff (`PN_XNUM`) is an escape that Linux's
/// `/proc/vmcore` does not handle, and one header is the `PT_NOTE`.
pub const MAX_RUNS: usize = 0xfffe;

/// Linux's `elf_prstatus` note type.
pub const NT_PRSTATUS: u32 = 1;
/// Xen's `XEN_ELFNOTE_CRASH_INFO` (xen/include/public/elfnote.h).
pub const XEN_ELFNOTE_CRASH_INFO: u32 = 0x0100_0001;
/// Linux's VMCOREINFO note carries type 0 (kernel/crash_core.c `append_elf_note(..., 0, ...)`).
pub const NT_VMCOREINFO: u32 = 0;

/// Xen's `crash_xen_info_t` for x86_64 (xen/include/xen/elfcore.h): eight common words, then
/// `xen_phys_start` and `dom0_pfn_to_mfn_frame_list_list` (10 `unsigned long`s, 80 bytes).
/// `crash` takes the P2M MFN from the last word and the version from the first two;
/// `makedumpfile` reads the 80-byte form as its `xen_crash_info_v2_t`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CrashXenInfo {
    pub xen_major_version: u64,
    pub xen_minor_version: u64,
    /// The remaining common words are hypervisor addresses in a Xen dump; 0 for a guest.
    pub xen_extra_version: u64,
    pub xen_changeset: u64,
    pub xen_compiler: u64,
    pub xen_compile_date: u64,
    pub xen_compile_time: u64,
    pub tainted: u64,
    /// Where Xen itself is loaded; 0 for a guest dump.
    pub xen_phys_start: u64,
    /// MFN of the P2M frame-list-list page (see [`p2m`]).
    pub dom0_pfn_to_mfn_frame_list_list: u64,
}

const _: () = {
    assert!(core::mem::size_of::<CrashXenInfo>() == 80);
    assert!(core::mem::offset_of!(CrashXenInfo, xen_phys_start) == 64);
    assert!(core::mem::offset_of!(CrashXenInfo, dom0_pfn_to_mfn_frame_list_list) == 72);
};

impl CrashXenInfo {
    /// A guest's note: Xen's version and the frame-list-list MFN, every other word 0.
    pub fn guest(xen_major: u64, xen_minor: u64, frame_list_list_mfn: u64) -> Self {
        CrashXenInfo {
            xen_major_version: xen_major,
            xen_minor_version: xen_minor,
            dom0_pfn_to_mfn_frame_list_list: frame_list_list_mfn,
            ..CrashXenInfo::default()
        }
    }

    /// The 80 descriptor bytes, little-endian.
    pub fn to_bytes(&self) -> [u8; 80] {
        let words = [
            self.xen_major_version,
            self.xen_minor_version,
            self.xen_extra_version,
            self.xen_changeset,
            self.xen_compiler,
            self.xen_compile_date,
            self.xen_compile_time,
            self.tainted,
            self.xen_phys_start,
            self.dom0_pfn_to_mfn_frame_list_list,
        ];
        let mut out = [0u8; 80];
        for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

/// What the notes say, all given by the caller.
#[derive(Clone, Copy, Debug)]
pub struct Notes<'a> {
    /// One `NT_PRSTATUS` each, in this order (crash maps them to CPUs 0, 1, ...).
    pub cpus: &'a [CpuState],
    /// The old kernel's VMCOREINFO text (no note header); empty leaves the note out.
    pub vmcoreinfo: &'a [u8],
    /// The "Xen" note's descriptor; its frame-list-list MFN must be one of the dumped frames.
    pub xen: CrashXenInfo,
}

/// A vmcore's whole layout: header, notes and where each frame's bytes go.
#[derive(Clone, Copy, Debug)]
pub struct Vmcore<'a> {
    frames: Frames<'a>,
    zeros: ZeroRuns<'a>,
    notes: Notes<'a>,
    layout: header::Layout,
}

impl<'a> Vmcore<'a> {
    /// Checks the inputs and computes the layout: every frame written.
    pub fn new(frames: Frames<'a>, notes: Notes<'a>) -> Result<Self, Error> {
        Vmcore::leaving_out(frames, ZeroRuns::NONE, notes)
    }

    /// As [`Vmcore::new`], the frames of `zeros` left out of the file (read back as zeros:
    /// [`zero`]). Each must lie inside one run of `frames`, and the `PT_LOAD`s they make
    /// must fit `e_phnum`.
    pub fn leaving_out(
        frames: Frames<'a>,
        zeros: ZeroRuns<'a>,
        notes: Notes<'a>,
    ) -> Result<Self, Error> {
        check_notes(&frames, &notes)?;
        let layout = header::Layout::compute(&frames, &zeros, &notes)?;
        Ok(Vmcore {
            frames,
            zeros,
            notes,
            layout,
        })
    }

    /// Bytes before the first page: ELF header, program headers, notes, padding to a page.
    pub fn header_len(&self) -> u64 {
        self.layout.data_offset
    }

    /// Bytes of the whole file.
    pub fn file_len(&self) -> u64 {
        self.layout.file_len
    }

    /// Program headers (`PT_NOTE` and every `PT_LOAD`).
    pub fn phnum(&self) -> u16 {
        self.layout.phnum
    }

    /// Where the notes are and how long they are (the `PT_NOTE`'s `p_offset`, `p_filesz`).
    pub fn notes_range(&self) -> (u64, u64) {
        (self.layout.notes_offset, self.layout.notes_len)
    }

    /// The frames dumped (those left out as zeros included).
    pub fn frames(&self) -> &Frames<'a> {
        &self.frames
    }

    /// The zero runs left out.
    pub fn zero_runs(&self) -> &ZeroRuns<'a> {
        &self.zeros
    }

    /// Frames whose bytes the file holds.
    pub fn data_pages(&self) -> u64 {
        self.layout.data_pages
    }

    /// The `PT_LOAD`s, ascending.
    pub fn loads(&self) -> Loads<'a> {
        Loads::new(&self.frames, &self.zeros)
    }

    /// The header bytes `[0, header_len)`, filled into caller buffers in order.
    pub fn header(&self) -> HeaderStream<'a> {
        HeaderStream::new(self.frames, self.zeros, self.notes, self.layout)
    }

    /// Every frame written, in file order: its file offset and its MFN (ascending MFN
    /// order; the frames left out are skipped).
    pub fn pages(&self) -> Pages<'a> {
        Pages::new(&self.frames, &self.zeros, &self.layout)
    }
}

fn check_notes(frames: &Frames<'_>, notes: &Notes<'_>) -> Result<(), Error> {
    elfcorehdr::check_notes(notes)?;
    let fll = notes.xen.dom0_pfn_to_mfn_frame_list_list;
    if !frames.contains(fll) {
        return Err(Error::FrameListListNotDumped { mfn: fll });
    }
    Ok(())
}

#[cfg(test)]
mod elfcorehdr_tests;
#[cfg(test)]
mod readers;
#[cfg(test)]
mod sweep_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod zero_tests;
