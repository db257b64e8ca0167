//! The dumped frames of a domain of any size, in memory that does not grow with it.
//!
//! A vmcore's `PT_LOAD`s are the runs of its sorted MFNs, and its pages follow in ascending
//! MFN order. Sorting every MFN needs a table as large as the domain; instead [`sweep`] asks
//! its [`MfnSource`] for every MFN once per *window* of machine frames, marks the ones inside
//! the window in a bitmap and turns the marks into runs, ascending. The next window starts at
//! the lowest MFN seen above the current one, so windows holding no frame cost nothing, and
//! one pass covers `64 * bitmap.len()` machine frames (a 1 MiB bitmap: 32 GiB of machine
//! memory). What it keeps is the bitmap and the runs, at most [`MAX_RUNS`](crate::MAX_RUNS)
//! (the `PT_LOAD`s `e_phnum` can count), both in the caller's storage.

use crate::frames::{Frames, Run, MAX_MFN};
use crate::Error;

/// Every MFN a dump holds, given again for each window.
pub trait MfnSource {
    type Error;

    /// Calls `mfn` with every frame the dump holds, in any order, repeats allowed; every call
    /// must give the same frames. An MFN past 52 bits is refused ([`Error::MfnTooLarge`]).
    fn each_mfn(&mut self, mfn: &mut dyn FnMut(u64)) -> Result<(), Self::Error>;
}

/// Why a sweep stopped: its source failed, or the frames cannot make a vmcore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepError<E> {
    Source(E),
    Frames(Error),
}

impl<E: core::fmt::Display> core::fmt::Display for SweepError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SweepError::Source(e) => e.fmt(f),
            SweepError::Frames(e) => e.fmt(f),
        }
    }
}

impl<E> From<Error> for SweepError<E> {
    fn from(e: Error) -> Self {
        SweepError::Frames(e)
    }
}

/// A sweep's result: the frames (as runs in the caller's table) and how many passes over the
/// source it took.
#[derive(Clone, Copy, Debug)]
pub struct Swept<'a> {
    pub frames: Frames<'a>,
    pub passes: u32,
}

/// Collects the frames `source` gives into runs in `runs`, with `bitmap` as the window
/// (see the module's text). Duplicates are counted and dumped once.
pub fn sweep<'a, S: MfnSource>(
    source: &mut S,
    bitmap: &mut [u64],
    runs: &'a mut [Run],
) -> Result<Swept<'a>, SweepError<S::Error>> {
    if bitmap.is_empty() {
        return Err(Error::EmptyBitmap.into());
    }
    let span = bitmap.len() as u64 * 64;
    let mut table = RunTable::new(runs);
    let mut duplicates = 0usize;
    let mut passes = 0u32;
    let mut base = 0u64;
    loop {
        bitmap.fill(0);
        let mut next: Option<u64> = None;
        let mut too_large: Option<u64> = None;
        source
            .each_mfn(&mut |mfn| {
                if mfn > MAX_MFN {
                    too_large.get_or_insert(mfn);
                } else if mfn < base {
                    // An earlier window's.
                } else if mfn - base < span {
                    let bit = mfn - base;
                    let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
                    if bitmap[word] & mask != 0 {
                        duplicates += 1;
                    }
                    bitmap[word] |= mask;
                } else if next.is_none_or(|n| mfn < n) {
                    next = Some(mfn);
                }
            })
            .map_err(SweepError::Source)?;
        passes = passes.saturating_add(1);
        if let Some(mfn) = too_large {
            return Err(Error::MfnTooLarge { mfn }.into());
        }
        for (w, &word) in bitmap.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                table.add(base + w as u64 * 64 + u64::from(bits.trailing_zeros()));
                bits &= bits - 1;
            }
        }
        match next {
            Some(n) => base = n,
            None => break,
        }
    }
    let stored = table.finish()?;
    Ok(Swept {
        frames: Frames::from_runs(stored, duplicates)?,
        passes,
    })
}

/// Runs built from ascending MFNs; counted past the table's end so a refusal can say how
/// many there are.
struct RunTable<'a> {
    slots: &'a mut [Run],
    capacity: usize,
    stored: usize,
    count: usize,
    open: Option<Run>,
}

impl<'a> RunTable<'a> {
    fn new(slots: &'a mut [Run]) -> Self {
        let capacity = slots.len().min(crate::MAX_RUNS);
        RunTable {
            slots,
            capacity,
            stored: 0,
            count: 0,
            open: None,
        }
    }

    /// Adds `mfn`, above every MFN added before.
    fn add(&mut self, mfn: u64) {
        match &mut self.open {
            Some(run) if run.end() == mfn => run.pages += 1,
            _ => {
                self.close();
                self.open = Some(Run { mfn, pages: 1 });
            }
        }
    }

    fn close(&mut self) {
        if let Some(run) = self.open.take() {
            if self.stored < self.capacity {
                self.slots[self.stored] = run;
                self.stored += 1;
            }
            self.count += 1;
        }
    }

    fn finish(mut self) -> Result<&'a [Run], Error> {
        self.close();
        if self.count > crate::MAX_RUNS {
            return Err(Error::TooManyRuns {
                runs: self.count,
                max: crate::MAX_RUNS,
            });
        }
        if self.count > self.capacity {
            return Err(Error::RunTableTooSmall {
                runs: self.count,
                capacity: self.capacity,
            });
        }
        Ok(&self.slots[..self.stored])
    }
}
