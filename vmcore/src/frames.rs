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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Run {
    pub mfn: u64,
    pub pages: u64,
}

impl Run {
    /// The MFN just past the run.
    pub const fn end(&self) -> u64 {
        self.mfn + self.pages
    }
}

/// Where the dumped frames are kept: every MFN (sorted, unique), or only the runs (sorted,
/// apart), which is what lets a dump of any domain size fit a bounded table
/// ([`crate::sweep`]).
#[derive(Clone, Copy, Debug)]
enum Store<'a> {
    Mfns(&'a [u64]),
    Runs(&'a [Run]),
}

/// The dumped frames: ascending, unique MFNs (in the caller's storage, as MFNs or as runs).
#[derive(Clone, Copy, Debug)]
pub struct Frames<'a> {
    store: Store<'a>,
    pages: usize,
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
        let mfns = &mfns[..unique];
        if mfns.is_empty() {
            return Err(Error::NoMemory);
        }
        let runs = MfnRuns { mfns }.count();
        check_run_count(runs)?;
        Ok(Frames {
            store: Store::Mfns(mfns),
            pages: mfns.len(),
            runs,
            duplicates,
        })
    }

    /// Frames given as their runs: ascending, each at least one frame, apart from the one
    /// before (a gap of at least one MFN, so each is one `PT_LOAD`), within 52 bits.
    /// `duplicates` is what [`Frames::duplicates`] reports (the caller counted them).
    pub fn from_runs(runs: &'a [Run], duplicates: usize) -> Result<Self, Error> {
        if runs.is_empty() {
            return Err(Error::NoMemory);
        }
        check_run_count(runs.len())?;
        let mut pages = 0usize;
        let mut next_free = 0u64;
        for (index, r) in runs.iter().enumerate() {
            let last = r.mfn.checked_add(r.pages).map(|end| end - 1);
            match last {
                _ if r.pages == 0 => return Err(Error::BadRun { index }),
                Some(last) if last <= MAX_MFN => {}
                _ => return Err(Error::MfnTooLarge { mfn: r.mfn }),
            }
            if index > 0 && r.mfn <= next_free {
                return Err(Error::BadRun { index });
            }
            next_free = r.end();
            pages = usize::try_from(r.pages)
                .ok()
                .and_then(|p| pages.checked_add(p))
                .ok_or(Error::SizeOverflow)?;
        }
        Ok(Frames {
            store: Store::Runs(runs),
            pages,
            runs: runs.len(),
            duplicates,
        })
    }

    /// The MFNs, ascending and unique.
    pub fn mfns(&self) -> Mfns<'a> {
        Mfns {
            runs: self.runs(),
            run: Run::default(),
        }
    }

    /// Frames dumped.
    pub fn pages(&self) -> usize {
        self.pages
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
        match self.store {
            Store::Mfns(mfns) => Runs(RunSource::Mfns(MfnRuns { mfns })),
            Store::Runs(runs) => Runs(RunSource::Runs(runs.iter())),
        }
    }

    /// Whether `mfn` is dumped.
    pub fn contains(&self, mfn: u64) -> bool {
        match self.store {
            Store::Mfns(mfns) => mfns.binary_search(&mfn).is_ok(),
            Store::Runs(runs) => {
                // The last run starting at or below `mfn` is the only one that can hold it.
                let after = runs.partition_point(|r| r.mfn <= mfn);
                after > 0 && mfn < runs[after - 1].end()
            }
        }
    }

    /// The first of `mfns` that is not dumped: crash reads every level of the P2M frame list
    /// (frame-list pages, leaf pages) through the dump, so all of them must be in it.
    pub fn first_missing(&self, mfns: &[u64]) -> Option<u64> {
        mfns.iter().copied().find(|&m| !self.contains(m))
    }
}

fn check_run_count(runs: usize) -> Result<(), Error> {
    if runs > crate::MAX_RUNS {
        return Err(Error::TooManyRuns {
            runs,
            max: crate::MAX_RUNS,
        });
    }
    Ok(())
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

/// Iterator over the runs of contiguous MFNs, ascending.
#[derive(Clone, Debug)]
pub struct Runs<'a>(RunSource<'a>);

#[derive(Clone, Debug)]
enum RunSource<'a> {
    Mfns(MfnRuns<'a>),
    Runs(core::slice::Iter<'a, Run>),
}

impl Iterator for Runs<'_> {
    type Item = Run;

    fn next(&mut self) -> Option<Run> {
        match &mut self.0 {
            RunSource::Mfns(m) => m.next(),
            RunSource::Runs(r) => r.next().copied(),
        }
    }
}

/// The runs of a sorted, unique MFN slice.
#[derive(Clone, Debug)]
struct MfnRuns<'a> {
    mfns: &'a [u64],
}

impl Iterator for MfnRuns<'_> {
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

/// Every dumped MFN, ascending.
#[derive(Clone, Debug)]
pub struct Mfns<'a> {
    runs: Runs<'a>,
    /// What is left of the run being walked.
    run: Run,
}

impl Iterator for Mfns<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.run.pages == 0 {
            self.run = self.runs.next()?;
        }
        let mfn = self.run.mfn;
        self.run.mfn += 1;
        self.run.pages -= 1;
        Some(mfn)
    }
}
