//! Zero pages left out of a vmcore (the capture kernel's `pvkexec.dump_zero=skip`).
//!
//! A run of zero frames inside a run of dumped frames is written as no bytes: it becomes a
//! `PT_LOAD` of its own with `p_filesz` 0 and `p_memsz` the run, and the frames before and
//! after it are `PT_LOAD`s whose file and memory sizes are equal. Both readers give the
//! frames of a `PT_LOAD` past its `p_filesz` back as zeros: crash 8.0.2 zero-fills a read in
//! `[p_filesz, p_memsz)` (netdump.c `read_netdump`, `pls->zero_fill`), makedumpfile 1.7.2
//! too (`readpage_elf`). The zero-only `PT_LOAD`s' `p_offset` is the end of the file's data,
//! not the file offset where the zeros would have been: makedumpfile's mmap path takes a
//! `PT_LOAD`'s file range as `[p_offset, p_offset + p_memsz)` (`offset_to_pt_load_end`) and
//! maps that much as if it were contiguous in machine addresses, so a `p_memsz` past
//! `p_filesz` over other `PT_LOAD`s' data (the shape makedumpfile's own ELF output has:
//! zeros at a `PT_LOAD`'s end, or `p_offset` 0) makes it read those frames from the wrong
//! place, or past the end of the file (a segfault in 1.7.2).
//!
//! Each run left out costs at most two program headers, and `e_phnum` counts at most
//! [`MAX_RUNS`]: [`ZeroRunFinder`] keeps the runs of at least a minimum length in a table of
//! the caller's, and when the table is full doubles the minimum and drops the runs now too
//! short, so what it keeps is always every zero run of at least its final minimum, whatever
//! the domain's size.

use crate::frames::{Frames, Run, Runs};
use crate::{Error, MAX_RUNS};

/// The shortest run of zero frames the capture kernel leaves out (64 KiB): each run left out
/// costs one or two 56-byte program headers, and crash and makedumpfile look a `PT_LOAD` up by
/// a linear search, so single zero pages are not worth one.
pub const MIN_ZERO_RUN: u64 = 16;

/// Whether `bytes` are all zero; stops at the first 64 bytes that are not.
pub fn is_zero(bytes: &[u8]) -> bool {
    let mut lines = bytes.chunks_exact(64);
    let lines_zero = lines.by_ref().all(|line| {
        line.chunks_exact(8).fold(0u64, |acc, w| {
            acc | u64::from_ne_bytes(w.try_into().unwrap_or([1; 8]))
        }) == 0
    });
    lines_zero && lines.remainder().iter().all(|&b| b == 0)
}

/// Runs of zero frames a vmcore leaves out: ascending, each inside one run of the dumped
/// frames, apart from each other (checked against the frames by
/// [`Vmcore::leaving_out`](crate::Vmcore::leaving_out)).
#[derive(Clone, Copy, Debug, Default)]
pub struct ZeroRuns<'a> {
    runs: &'a [Run],
    pages: u64,
    min_pages: u64,
    zero_pages: u64,
}

impl<'a> ZeroRuns<'a> {
    /// Nothing left out: every frame written.
    pub const NONE: ZeroRuns<'static> = ZeroRuns {
        runs: &[],
        pages: 0,
        min_pages: 0,
        zero_pages: 0,
    };

    /// Runs given as they are (a sum that overflows is refused by the layout).
    pub fn from_runs(runs: &'a [Run]) -> Self {
        ZeroRuns {
            runs,
            pages: runs.iter().fold(0u64, |a, r| a.saturating_add(r.pages)),
            min_pages: runs.iter().map(|r| r.pages).min().unwrap_or(0),
            zero_pages: 0,
        }
    }

    pub fn runs(&self) -> &'a [Run] {
        self.runs
    }

    /// Frames left out.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The shortest run left out could be (a finder's final minimum).
    pub fn min_pages(&self) -> u64 {
        self.min_pages
    }

    /// Zero frames the finder saw, left out or not (0 for runs given).
    pub fn zero_pages(&self) -> u64 {
        self.zero_pages
    }
}

/// Finds the zero runs to leave out while the caller reads every dumped frame once, in the
/// order the vmcore holds them (ascending MFN, [`Frames::mfns`]).
#[derive(Debug)]
pub struct ZeroRunFinder<'a> {
    table: &'a mut [Run],
    capacity: usize,
    len: usize,
    min_pages: u64,
    open: Option<Run>,
    zero_pages: u64,
}

impl<'a> ZeroRunFinder<'a> {
    /// Keeps runs of at least `min_pages` (at least 1) in `table`, and no more than the
    /// program headers `frames` leave room for (each run left out may add two `PT_LOAD`s:
    /// itself and the rest of its run).
    pub fn new(table: &'a mut [Run], min_pages: u64, frames: &Frames<'_>) -> Self {
        let room = MAX_RUNS.saturating_sub(frames.run_count()) / 2;
        ZeroRunFinder {
            capacity: table.len().min(room),
            table,
            len: 0,
            min_pages: min_pages.max(1),
            open: None,
            zero_pages: 0,
        }
    }

    /// The next frame of the dump, and whether it holds only zeros. A zero run goes on only
    /// through contiguous MFNs, so it never crosses from one run of frames into the next.
    pub fn page(&mut self, mfn: u64, zero: bool) {
        if !zero {
            self.close();
            return;
        }
        self.zero_pages += 1;
        match &mut self.open {
            Some(run) if run.end() == mfn => run.pages += 1,
            _ => {
                self.close();
                self.open = Some(Run { mfn, pages: 1 });
            }
        }
    }

    /// Every zero run of at least the final minimum.
    pub fn finish(mut self) -> ZeroRuns<'a> {
        self.close();
        let runs: &'a [Run] = &self.table[..self.len];
        ZeroRuns {
            runs,
            pages: runs.iter().map(|r| r.pages).sum(),
            min_pages: self.min_pages,
            zero_pages: self.zero_pages,
        }
    }

    fn close(&mut self) {
        let Some(run) = self.open.take() else {
            return;
        };
        // A full table (or none) doubles the minimum until the run is too short or there
        // is room: the runs kept are always all those of at least the minimum.
        while run.pages >= self.min_pages && self.len == self.capacity {
            self.min_pages = self.min_pages.saturating_mul(2);
            let mut kept = 0;
            for i in 0..self.len {
                if self.table[i].pages >= self.min_pages {
                    self.table[kept] = self.table[i];
                    kept += 1;
                }
            }
            self.len = kept;
        }
        if run.pages >= self.min_pages {
            self.table[self.len] = run;
            self.len += 1;
        }
    }
}

/// One `PT_LOAD`: `pages` frames from `mfn` on, written to the file, or (`zero`) left out
/// as zeros (`p_filesz` 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    pub mfn: u64,
    pub pages: u64,
    pub zero: bool,
}

/// The `PT_LOAD`s of runs cut at the zero runs left out, ascending.
#[derive(Clone, Debug)]
pub struct Loads<'a> {
    runs: Runs<'a>,
    zeros: &'a [Run],
    /// What is left of a run after a piece of it.
    rest: Option<Run>,
}

impl<'a> Loads<'a> {
    pub(crate) fn new(frames: &Frames<'a>, zeros: &ZeroRuns<'a>) -> Self {
        Loads {
            runs: frames.runs(),
            zeros: zeros.runs,
            rest: None,
        }
    }
}

impl Iterator for Loads<'_> {
    type Item = Load;

    fn next(&mut self) -> Option<Load> {
        let run = match self.rest.take() {
            Some(r) => r,
            None => self.runs.next()?,
        };
        // Checked: a zero run that starts before this run's end lies inside it.
        let Some((z, later)) = self.zeros.split_first().filter(|(z, _)| z.mfn < run.end()) else {
            return Some(Load {
                mfn: run.mfn,
                pages: run.pages,
                zero: false,
            });
        };
        let (piece_end, zero) = if z.mfn > run.mfn {
            (z.mfn, false)
        } else {
            self.zeros = later;
            (z.end().min(run.end()), true)
        };
        if piece_end < run.end() {
            self.rest = Some(Run {
                mfn: piece_end,
                pages: run.end() - piece_end,
            });
        }
        Some(Load {
            mfn: run.mfn,
            pages: piece_end - run.mfn,
            zero,
        })
    }
}

/// Checks `zeros` against `frames` (see [`ZeroRuns`]); the `PT_LOAD`s and the frames written.
pub(crate) fn check(frames: &Frames<'_>, zeros: &ZeroRuns<'_>) -> Result<(usize, u64), Error> {
    let runs = zeros.runs;
    let mut next = 0;
    let mut loads = 0usize;
    let mut left_out = 0u64;
    for run in frames.runs() {
        // The first frame of this run not yet in a PT_LOAD.
        let mut at = run.mfn;
        while let Some(z) = runs.get(next).filter(|z| z.mfn < run.end()) {
            let touches = next > 0 && runs[next - 1].end() == z.mfn;
            let end = z.mfn.checked_add(z.pages);
            if z.pages == 0 || z.mfn < at || touches || end.is_none_or(|e| e > run.end()) {
                return Err(Error::BadZeroRun { index: next });
            }
            // The frames before it, then the zero run.
            loads += usize::from(z.mfn > at) + 1;
            left_out += z.pages;
            at = z.mfn + z.pages;
            next += 1;
        }
        if at < run.end() {
            loads += 1;
        }
    }
    if next < runs.len() {
        return Err(Error::BadZeroRun { index: next });
    }
    Ok((loads, frames.pages() as u64 - left_out))
}
