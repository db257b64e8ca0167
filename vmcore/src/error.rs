//! Why a vmcore layout or P2M frame list cannot be made.

use core::fmt;

/// Every refusal names the input at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No present frame: a dump of no memory.
    NoMemory,
    /// The caller's scratch array holds fewer MFNs than the P2M has present entries.
    ScratchTooSmall {
        capacity: usize,
    },
    /// An MFN past the 52-bit machine address space (or a flag bit left in it).
    MfnTooLarge {
        mfn: u64,
    },
    /// No CPU: crash needs at least the panicking CPU's `NT_PRSTATUS`.
    NoCpus,
    TooManyCpus {
        cpus: usize,
        max: usize,
    },
    VmcoreinfoTooLarge {
        len: usize,
        max: usize,
    },
    /// More runs of contiguous frames than `e_phnum` can count.
    TooManyRuns {
        runs: usize,
        max: usize,
    },
    /// The file would be larger than `u64` can say.
    SizeOverflow,
    /// Run `index` of a run list is empty, or not past the run before it with a gap.
    BadRun {
        index: usize,
    },
    /// The caller's run table holds `capacity` runs; the frames make `runs`.
    RunTableTooSmall {
        runs: usize,
        capacity: usize,
    },
    /// A sweep was given no bitmap words.
    EmptyBitmap,
    /// Zero run `index` is empty, not inside one run of the dumped frames, not past the zero
    /// run before it, or touching it.
    BadZeroRun {
        index: usize,
    },
    /// The Xen note's frame-list-list MFN is not a dumped frame: crash could not read it.
    FrameListListNotDumped {
        mfn: u64,
    },
    /// No P2M leaf page given.
    NoP2mLeaves,
    /// More P2M leaf pages than a 512 x 512 frame list can name.
    TooManyP2mLeaves {
        leaves: usize,
        max: usize,
    },
    /// MFN 0 in a frame list: crash and Xen's tools stop at the first zero entry.
    ZeroMfnInFrameList {
        index: usize,
    },
    /// The missing leaf's or missing frame-list page's MFN is 0 or past 52 bits.
    SharedPageMfn {
        page: &'static str,
        mfn: u64,
    },
    /// The caller gave `given` frame-list page MFNs where the list needs `needed`.
    FrameListCount {
        given: usize,
        needed: usize,
    },
    /// Frame-list page `index` was given `given` leaf MFNs where it names `needed`.
    LeafCount {
        index: usize,
        given: usize,
        needed: usize,
    },
    /// A frame-list page index past the last one.
    FrameListIndex {
        index: usize,
        pages: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::NoMemory => write!(f, "no present frame to dump"),
            Error::ScratchTooSmall { capacity } => write!(
                f,
                "the P2M has more present frames than the scratch array's {capacity}"
            ),
            Error::MfnTooLarge { mfn } => {
                write!(f, "MFN {mfn:#x} is past the 52-bit machine address space")
            }
            Error::NoCpus => write!(f, "no CPU state given (one NT_PRSTATUS at least)"),
            Error::TooManyCpus { cpus, max } => {
                write!(f, "{cpus} CPUs given, at most {max}")
            }
            Error::VmcoreinfoTooLarge { len, max } => {
                write!(f, "VMCOREINFO of {len} bytes, at most {max}")
            }
            Error::TooManyRuns { runs, max } => write!(
                f,
                "{runs} runs of contiguous machine frames, at most {max} PT_LOADs fit e_phnum"
            ),
            Error::SizeOverflow => write!(f, "the vmcore's size overflows 64 bits"),
            Error::BadRun { index } => write!(
                f,
                "run {index} is empty, or does not start past the run before it with a gap"
            ),
            Error::RunTableTooSmall { runs, capacity } => write!(
                f,
                "{runs} runs of contiguous machine frames, the run table holds {capacity}"
            ),
            Error::EmptyBitmap => write!(f, "a sweep needs at least one bitmap word"),
            Error::BadZeroRun { index } => write!(
                f,
                "zero run {index} is empty, outside the runs of dumped frames, or not apart \
                 from the zero run before it"
            ),
            Error::FrameListListNotDumped { mfn } => write!(
                f,
                "the P2M frame-list-list MFN {mfn:#x} is not among the dumped frames"
            ),
            Error::NoP2mLeaves => write!(f, "no P2M leaf page given"),
            Error::TooManyP2mLeaves { leaves, max } => {
                write!(
                    f,
                    "{leaves} P2M leaf pages, a frame list names at most {max}"
                )
            }
            Error::ZeroMfnInFrameList { index } => {
                write!(f, "MFN 0 at index {index} of a P2M frame list")
            }
            Error::SharedPageMfn { page, mfn } => {
                write!(f, "the {page}'s MFN {mfn:#x} is 0 or past 52 bits")
            }
            Error::FrameListCount { given, needed } => write!(
                f,
                "{given} frame-list page MFNs given, the frame list needs {needed}"
            ),
            Error::LeafCount {
                index,
                given,
                needed,
            } => write!(
                f,
                "{given} leaf MFNs given for frame-list page {index}, which names {needed}"
            ),
            Error::FrameListIndex { index, pages } => {
                write!(f, "frame-list page {index} asked, there are {pages}")
            }
        }
    }
}
