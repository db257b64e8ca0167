//! The machine frames a dump holds: sorted, unique, grouped into runs of contiguous MFNs (one
//! `PT_LOAD` each).

use crate::Error;

/// Highest MFN of x86_64's 52-bit machine address space.
pub const MAX_MFN: u64 = (1 << (52 - crate::PAGE_SHIFT)) - 1;

/// The MFN of an old P2M entry when it names a frame of the domain: Linux's invalid entry
/// (`~0`) and its identity (bit 62) and foreign (bit 63) flags name none.
pub const fn present_mfn(entry: u64) -> Option<u64> {
    if entry >> 62 == 0 {
        Some(entry)
    } else {
        None
    }
}

/// A run of `pages` machine frames from `mfn` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub mfn: u64,
    pub pages: u64,
}

/// The dumped frames: ascending, unique MFNs (in the caller's storage).
#[derive(Clone, Copy, Debug)]
pub struct Frames<'a> {
    mfns: &'a [u64],
    runs: usize,
    duplicates: usize,
}

impl<'a> Frames<'a> {
    /// Collects the present entries of an old P2M (`p2m`, indexed by PFN) into `scratch`,
    /// then as [`Frames::from_unsorted`]. Extra frames the dump must hold (the capture
    /// kernel's synthesized P2M frame list) go in with [`Frames::from_unsorted`] instead.
    pub fn from_p2m(
        p2m: impl IntoIterator<Item = u64>,
        scratch: &'a mut [u64],
    ) -> Result<Self, Error> {
        let capacity = scratch.len();
        let mut n = 0;
        for mfn in p2m.into_iter().filter_map(present_mfn) {
            let slot = scratch
                .get_mut(n)
                .ok_or(Error::ScratchTooSmall { capacity })?;
            *slot = mfn;
            n += 1;
        }
        Frames::from_unsorted(&mut scratch[..n])
    }

    /// Sorts `mfns` in place and keeps one of each MFN at its front (duplicates are counted,
    /// see [`Frames::duplicates`]; what the slice holds past the unique MFNs is unspecified).
    pub fn from_unsorted(mfns: &'a mut [u64]) -> Result<Self, Error> {
        if let Some(&mfn) = mfns.iter().find(|&&m| m > MAX_MFN) {
            return Err(Error::MfnTooLarge { mfn });
        }
        mfns.sort_unstable();
        let unique = dedup_sorted(mfns);
        let duplicates = mfns.len() - unique;
        Frames::from_sorted(&mfns[..unique], duplicates)
    }

    fn from_sorted(mfns: &'a [u64], duplicates: usize) -> Result<Self, Error> {
        if mfns.is_empty() {
            return Err(Error::NoMemory);
        }
        let runs = Runs { mfns }.count();
        if runs > crate::MAX_RUNS {
            return Err(Error::TooManyRuns {
                runs,
                max: crate::MAX_RUNS,
            });
        }
        Ok(Frames {
            mfns,
            runs,
            duplicates,
        })
    }

    /// The MFNs, ascending and unique.
    pub fn mfns(&self) -> &'a [u64] {
        self.mfns
    }

    /// Frames dumped.
    pub fn pages(&self) -> usize {
        self.mfns.len()
    }

    /// MFNs given more than once (each dumped once).
    pub fn duplicates(&self) -> usize {
        self.duplicates
    }

    /// Runs of contiguous MFNs: the `PT_LOAD`s.
    pub fn run_count(&self) -> usize {
        self.runs
    }

    pub fn runs(&self) -> Runs<'a> {
        Runs { mfns: self.mfns }
    }

    /// Whether `mfn` is dumped.
    pub fn contains(&self, mfn: u64) -> bool {
        self.mfns.binary_search(&mfn).is_ok()
    }

    /// The first of `mfns` that is not dumped: crash reads every level of the P2M frame list
    /// (frame-list pages, leaf pages) through the dump, so all of them must be in it.
    pub fn first_missing(&self, mfns: &[u64]) -> Option<u64> {
        mfns.iter().copied().find(|&m| !self.contains(m))
    }
}

/// Moves the unique values of a sorted slice to its front; returns how many there are.
fn dedup_sorted(v: &mut [u64]) -> usize {
    let mut kept = 0;
    for i in 0..v.len() {
        if kept == 0 || v[i] != v[kept - 1] {
            v[kept] = v[i];
            kept += 1;
        }
    }
    kept
}

/// Iterator over the runs of contiguous MFNs of a sorted, unique slice.
#[derive(Clone, Debug)]
pub struct Runs<'a> {
    mfns: &'a [u64],
}

impl Iterator for Runs<'_> {
    type Item = Run;

    fn next(&mut self) -> Option<Run> {
        let (&first, _) = self.mfns.split_first()?;
        let len = self
            .mfns
            .iter()
            .enumerate()
            .take_while(|&(i, &m)| m == first + i as u64)
            .count();
        self.mfns = &self.mfns[len..];
        Some(Run {
            mfn: first,
            pages: len as u64,
        })
    }
}
