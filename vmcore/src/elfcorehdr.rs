//! The ELF core header a Linux crash kernel reads at `elfcorehdr=` to make `/proc/vmcore`,
//! for a crashed Xen PV kernel whose frames the crash kernel sees at PFNs past its own RAM
//! (aliases its P2M names). Same notes and machine-address `PT_LOAD`s as a [`crate::Vmcore`]
//! file, but each program header's `p_offset` is where the crash kernel *reads* the bytes
//! (Linux's vmcore code treats `p_offset` of the header it is handed as a physical address in
//! its own address space and computes the file offsets itself).
//!
//! Layout, for a writer with no allocator: the ELF header and its program headers together
//! (Linux reads `e_phnum` headers right after the 64-byte ELF header), the notes anywhere (the
//! `PT_NOTE` says where). The caller streams each piece into memory it owns.

use crate::header::{
    note_len, stage_cpu, stage_ehdr, stage_note_head, stage_phdr, stage_xen, vmcoreinfo_note_len,
    Sizes, CORE_NAME, EHDR_SIZE, PF_RWX, PHDR_SIZE, PT_LOAD, PT_NOTE, STAGE, VMCOREINFO_NAME,
    XEN_DESC, XEN_NAME,
};
use crate::prstatus::PRSTATUS_SIZE;
use crate::{Error, Notes, MAX_CPUS, MAX_RUNS, MAX_VMCOREINFO, PAGE_SHIFT};

/// Bytes of the ELF header.
pub const EHDR_BYTES: u64 = EHDR_SIZE;
/// Bytes of one program header.
pub const PHDR_BYTES: u64 = PHDR_SIZE;

/// Old frames `[mfn, mfn + pages)` that the crash kernel reads at physical address `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OldRun {
    pub addr: u64,
    pub mfn: u64,
    pub pages: u64,
}

/// Joins frames given one at a time (crash-kernel PFN and MFN) into [`OldRun`]s: a frame
/// extends the current run where both its PFN and its MFN follow the run's last.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunJoiner {
    cur: Option<(u64, u64, u64)>,
}

impl RunJoiner {
    pub const fn new() -> Self {
        RunJoiner { cur: None }
    }

    /// Adds frame `mfn` read at PFN `pfn`; returns the run it ends, if any.
    pub fn push(&mut self, pfn: u64, mfn: u64) -> Option<OldRun> {
        match self.cur {
            Some((p, m, n)) if p + n == pfn && m + n == mfn => {
                self.cur = Some((p, m, n + 1));
                None
            }
            prev => {
                self.cur = Some((pfn, mfn, 1));
                prev.map(run)
            }
        }
    }

    /// The last run.
    pub fn finish(self) -> Option<OldRun> {
        self.cur.map(run)
    }
}

fn run((pfn, mfn, pages): (u64, u64, u64)) -> OldRun {
    OldRun {
        addr: pfn << PAGE_SHIFT,
        mfn,
        pages,
    }
}

/// Bytes of the ELF header and `loads + 1` program headers (the `PT_NOTE` first).
pub fn headers_len(loads: usize) -> u64 {
    EHDR_SIZE + PHDR_SIZE * (loads as u64 + 1)
}

/// Most bytes [`write_notes`] writes for `cpus` CPUs and `vmcoreinfo` bytes of text.
pub fn notes_len_for(cpus: usize, vmcoreinfo: usize) -> u64 {
    cpus as u64 * note_len(CORE_NAME, PRSTATUS_SIZE as u64)
        + note_len(VMCOREINFO_NAME, vmcoreinfo as u64)
        + note_len(XEN_NAME, XEN_DESC)
}

/// Bytes [`write_notes`] writes for `notes`.
pub fn notes_len(notes: &Notes<'_>) -> u64 {
    notes.cpus.len() as u64 * note_len(CORE_NAME, PRSTATUS_SIZE as u64)
        + vmcoreinfo_note_len(notes.vmcoreinfo)
        + note_len(XEN_NAME, XEN_DESC)
}

/// Checks what the notes hold (at least one CPU, within [`MAX_CPUS`] and
/// [`MAX_VMCOREINFO`]).
pub fn check_notes(notes: &Notes<'_>) -> Result<(), Error> {
    if notes.cpus.is_empty() {
        return Err(Error::NoCpus);
    }
    if notes.cpus.len() > MAX_CPUS {
        return Err(Error::TooManyCpus {
            cpus: notes.cpus.len(),
            max: MAX_CPUS,
        });
    }
    if notes.vmcoreinfo.len() > MAX_VMCOREINFO {
        return Err(Error::VmcoreinfoTooLarge {
            len: notes.vmcoreinfo.len(),
            max: MAX_VMCOREINFO,
        });
    }
    Ok(())
}

/// The notes in a vmcore's order (one `NT_PRSTATUS` per CPU, VMCOREINFO, "Xen"), handed to
/// `out` piece by piece; returns the bytes written ([`notes_len`]).
pub fn write_notes(notes: &Notes<'_>, out: &mut dyn FnMut(&[u8])) -> Result<u64, Error> {
    check_notes(notes)?;
    let mut stage = [0u8; STAGE];
    let mut written = 0;
    let mut emit = |bytes: &[u8]| {
        out(bytes);
        written += bytes.len() as u64;
    };
    for cpu in notes.cpus {
        stage.fill(0);
        let n = stage_cpu(&mut stage, cpu) as usize;
        emit(&stage[..n]);
    }
    if !notes.vmcoreinfo.is_empty() {
        stage.fill(0);
        let text = notes.vmcoreinfo;
        let n = stage_note_head(
            &mut stage,
            VMCOREINFO_NAME,
            text.len() as u64,
            crate::NT_VMCOREINFO,
        ) as usize;
        emit(&stage[..n]);
        emit(text);
        emit(&[0u8; 3][..(text.len().next_multiple_of(4) - text.len())]);
    }
    stage.fill(0);
    let n = stage_xen(&mut stage, &notes.xen) as usize;
    emit(&stage[..n]);
    Ok(written)
}

/// The ELF header of a core file with `loads` `PT_LOAD`s after its `PT_NOTE`.
pub fn ehdr(loads: usize) -> Result<[u8; EHDR_SIZE as usize], Error> {
    if loads > MAX_RUNS {
        return Err(Error::TooManyRuns {
            runs: loads,
            max: MAX_RUNS,
        });
    }
    let mut stage = [0u8; STAGE];
    stage_ehdr(&mut stage, loads as u16 + 1);
    let mut out = [0u8; EHDR_SIZE as usize];
    out.copy_from_slice(&stage[..EHDR_SIZE as usize]);
    Ok(out)
}

/// The `PT_NOTE`: `len` bytes of notes the crash kernel reads at physical address `addr`.
pub fn note_phdr(addr: u64, len: u64) -> [u8; PHDR_SIZE as usize] {
    let sizes = Sizes {
        file: len,
        memory: len,
    };
    phdr(PT_NOTE, 0, addr, 0, sizes, 4)
}

/// One `PT_LOAD`: machine address `p_paddr`, read at `p_offset`.
pub fn load_phdr(r: &OldRun) -> [u8; PHDR_SIZE as usize] {
    let bytes = r.pages << PAGE_SHIFT;
    let sizes = Sizes {
        file: bytes,
        memory: bytes,
    };
    phdr(
        PT_LOAD,
        PF_RWX,
        r.addr,
        r.mfn << PAGE_SHIFT,
        sizes,
        1 << PAGE_SHIFT,
    )
}

fn phdr(kind: u32, flags: u32, offset: u64, paddr: u64, s: Sizes, align: u64) -> [u8; 56] {
    let mut stage = [0u8; STAGE];
    stage_phdr(&mut stage, kind, flags, offset, paddr, s, align);
    let mut out = [0u8; PHDR_SIZE as usize];
    out.copy_from_slice(&stage[..PHDR_SIZE as usize]);
    out
}
