//! A pvkexec vmcore read on the host without loading it: its `PT_LOAD`s, its zero frames, a
//! frame by machine address (the readers' zero fill for a `PT_LOAD`'s memory past its file
//! data included) and the P2M it names, to check what `pvkexec.dump_zero=skip` left out
//! (docs/vmcore.md).

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

const PAGE: u64 = 4096;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_CRASH_INFO: u32 = 0x0100_0001;

/// One `PT_LOAD`, in frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    pub offset: u64,
    pub mfn: u64,
    /// Frames the file holds.
    pub data: u64,
    /// Frames after them read as zeros (`p_memsz - p_filesz`).
    pub zeros: u64,
}

/// The zero frames of a vmcore's data, in file order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZeroCount {
    /// Frames the file holds.
    pub frames: u64,
    pub zero: u64,
    /// Zero frames in runs of contiguous MFNs of at least the length asked.
    pub in_runs: u64,
    /// The longest such run.
    pub longest: u64,
}

pub struct VmcoreFile {
    file: File,
    pub loads: Vec<Load>,
    /// The "Xen" note's frame-list-list MFN.
    pub frame_list_list: u64,
    /// Each "CORE" `NT_PRSTATUS` note's `rip` and `rsp`, in note order (CPU 0 first).
    pub cpu_regs: Vec<CpuRegs>,
}

/// A CPU's instruction and stack pointers as its `NT_PRSTATUS` note gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuRegs {
    pub rip: u64,
    pub rsp: u64,
}

/// `pr_reg` starts 112 bytes into `struct elf_prstatus` (x86_64); `rip` and `rsp` are its
/// words 16 and 19 (`user_regs_struct`).
const PR_REG: usize = 112;

impl VmcoreFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut eh = [0u8; 64];
        file.read_exact_at(&mut eh, 0)?;
        if &eh[..4] != b"\x7fELF" || eh[4] != 2 {
            bail!("{}: not an ELF64 file", path.display());
        }
        let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let phoff = u64_at(&eh, 32);
        let phnum = u16::from_le_bytes([eh[56], eh[57]]) as usize;
        let mut ph = vec![0u8; phnum * 56];
        file.read_exact_at(&mut ph, phoff)?;
        let mut loads = Vec::new();
        let mut frame_list_list = None;
        let mut cpu_regs = Vec::new();
        for p in ph.chunks_exact(56) {
            let (offset, paddr, filesz, memsz) =
                (u64_at(p, 8), u64_at(p, 24), u64_at(p, 32), u64_at(p, 40));
            match u32_at(p, 0) {
                PT_LOAD => {
                    if paddr % PAGE != 0 || filesz % PAGE != 0 || memsz < filesz {
                        bail!(
                            "{}: PT_LOAD at {paddr:#x} is not whole frames",
                            path.display()
                        );
                    }
                    loads.push(Load {
                        offset,
                        mfn: paddr / PAGE,
                        data: filesz / PAGE,
                        zeros: (memsz - filesz) / PAGE,
                    });
                }
                PT_NOTE => {
                    let mut notes = vec![0u8; filesz as usize];
                    file.read_exact_at(&mut notes, offset)?;
                    let mut at = 0;
                    while at + 12 <= notes.len() {
                        let (namesz, descsz, kind) = (
                            u32_at(&notes, at) as usize,
                            u32_at(&notes, at + 4) as usize,
                            u32_at(&notes, at + 8),
                        );
                        let desc = at + 12 + namesz.next_multiple_of(4);
                        if &notes[at + 12..at + 12 + namesz] == b"Xen\0"
                            && kind == XEN_ELFNOTE_CRASH_INFO
                        {
                            frame_list_list = Some(u64_at(&notes, desc + descsz - 8));
                        }
                        if &notes[at + 12..at + 12 + namesz] == b"CORE\0"
                            && kind == 1
                            && descsz >= PR_REG + 27 * 8
                        {
                            cpu_regs.push(CpuRegs {
                                rip: u64_at(&notes, desc + PR_REG + 16 * 8),
                                rsp: u64_at(&notes, desc + PR_REG + 19 * 8),
                            });
                        }
                        at = desc + descsz.next_multiple_of(4);
                    }
                }
                _ => {}
            }
        }
        Ok(VmcoreFile {
            file,
            loads,
            frame_list_list: frame_list_list
                .with_context(|| format!("{}: no Xen CRASH_INFO note", path.display()))?,
            cpu_regs,
        })
    }

    /// Frames the `PT_LOAD`s name (those left out as zeros included).
    pub fn frames(&self) -> u64 {
        self.loads.iter().map(|l| l.data + l.zeros).sum()
    }

    /// Frames left out as zeros.
    pub fn left_out(&self) -> u64 {
        self.loads.iter().map(|l| l.zeros).sum()
    }

    /// The zero frames the file holds, and those in runs of at least `min_run` contiguous
    /// MFNs (a run goes on only through frames the file holds).
    pub fn count_zero(&self, min_run: u64) -> Result<ZeroCount> {
        let mut c = ZeroCount::default();
        // The open run: its next MFN and length.
        let mut run: Option<(u64, u64)> = None;
        let close = |run: &mut Option<(u64, u64)>, c: &mut ZeroCount| {
            if let Some((_, len)) = run.take() {
                if len >= min_run {
                    c.in_runs += len;
                    c.longest = c.longest.max(len);
                }
            }
        };
        let mut buf = vec![0u8; 256 * PAGE as usize];
        for l in &self.loads {
            let mut done = 0;
            while done < l.data {
                let n = (l.data - done).min(256);
                let bytes = &mut buf[..(n * PAGE) as usize];
                self.file.read_exact_at(bytes, l.offset + done * PAGE)?;
                for (i, page) in bytes.chunks_exact(PAGE as usize).enumerate() {
                    let mfn = l.mfn + done + i as u64;
                    c.frames += 1;
                    if page.iter().all(|&b| b == 0) {
                        c.zero += 1;
                        match &mut run {
                            Some((next, len)) if *next == mfn => {
                                *next += 1;
                                *len += 1;
                            }
                            _ => {
                                close(&mut run, &mut c);
                                run = Some((mfn + 1, 1));
                            }
                        }
                    } else {
                        close(&mut run, &mut c);
                    }
                }
                done += n;
            }
            // A run does not go on over frames left out, nor into the next PT_LOAD's.
            close(&mut run, &mut c);
        }
        close(&mut run, &mut c);
        Ok(c)
    }

    /// Frame `mfn` as crash and makedumpfile read it: from the file, zeros past a
    /// `PT_LOAD`'s file data, `None` outside every `PT_LOAD`.
    pub fn read_mfn(&self, mfn: u64) -> Result<Option<Vec<u8>>> {
        let Some(l) = self
            .loads
            .iter()
            .find(|l| mfn >= l.mfn && mfn < l.mfn + l.data + l.zeros)
        else {
            return Ok(None);
        };
        let mut page = vec![0u8; PAGE as usize];
        if mfn - l.mfn < l.data {
            self.file
                .read_exact_at(&mut page, l.offset + (mfn - l.mfn) * PAGE)?;
        }
        Ok(Some(page))
    }

    fn words(&self, mfn: u64) -> Result<Vec<u64>> {
        let page = self
            .read_mfn(mfn)?
            .with_context(|| format!("P2M page mfn {mfn:#x} is not in the dump"))?;
        Ok(page
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
            .collect())
    }

    /// The first PFN (of the P2M the Xen note names) whose frame lies in `pick`, with that
    /// frame's MFN.
    pub fn pfn_where(&self, pick: impl Fn(u64) -> bool) -> Result<Option<(u64, u64)>> {
        let top = self.words(self.frame_list_list)?;
        let mut seen_leaves = std::collections::HashSet::new();
        let mut pfn = 0u64;
        for &list in top.iter().take_while(|&&m| m != 0) {
            for &leaf in self.words(list)?.iter() {
                if leaf == 0 {
                    return Ok(None);
                }
                // The missing leaf (every entry ~0) repeats to 512 GiB of PFNs: skip its
                // repeats.
                if seen_leaves.insert(leaf) {
                    for (i, &e) in self.words(leaf)?.iter().enumerate() {
                        if e >> 62 == 0 && pick(e) {
                            return Ok(Some((pfn + i as u64, e)));
                        }
                    }
                }
                pfn += 512;
            }
        }
        Ok(None)
    }
}
