//! Host tests: frames as runs, the bounded sweep, and frame-list pages given a page at a
//! time, each against the sorting they replace.

extern crate std;

use std::string::ToString;
use std::vec;
use std::vec::Vec;

use crate::p2m::{self, FrameList, FrameListShape, ENTRIES, INVALID_ENTRY};
use crate::*;
use proptest::prelude::*;

/// MFNs in a list; counts the passes made over it.
struct Listed {
    mfns: Vec<u64>,
    calls: u32,
}

impl Listed {
    fn new(mfns: Vec<u64>) -> Self {
        Listed { mfns, calls: 0 }
    }
}

impl MfnSource for Listed {
    type Error = &'static str;

    fn each_mfn(&mut self, mfn: &mut dyn FnMut(u64)) -> Result<(), &'static str> {
        self.calls += 1;
        self.mfns.iter().for_each(|&m| mfn(m));
        Ok(())
    }
}

fn swept(mfns: &[u64], words: usize) -> (Vec<Run>, usize, usize, u32) {
    let mut bitmap = vec![0u64; words];
    let mut runs = vec![Run::default(); MAX_RUNS];
    let mut src = Listed::new(mfns.to_vec());
    let s = sweep(&mut src, &mut bitmap, &mut runs).unwrap();
    assert_eq!(s.passes, src.calls);
    (
        s.frames.runs().collect(),
        s.frames.pages(),
        s.frames.duplicates(),
        s.passes,
    )
}

fn sorted(mfns: &[u64]) -> (Vec<Run>, usize, usize) {
    let mut v = mfns.to_vec();
    let f = Frames::from_unsorted(&mut v).unwrap();
    (f.runs().collect(), f.pages(), f.duplicates())
}

#[test]
fn a_run_that_crosses_windows_stays_one_run() {
    // A 64-frame window: 60..70 spans two, 200 is a third.
    let (runs, pages, dups, passes) = swept(&[69, 60, 61, 62, 63, 64, 65, 66, 67, 68, 200], 1);
    assert_eq!(
        runs,
        [Run { mfn: 60, pages: 10 }, Run { mfn: 200, pages: 1 }]
    );
    assert_eq!((pages, dups, passes), (11, 0, 3));
}

#[test]
fn windows_without_frames_cost_no_pass() {
    // Frames 40 bits apart: one pass per frame's window, none for the empty ones between.
    let mfns = [MAX_MFN, 1 << 30, 5, 1 << 20];
    let (runs, _, _, passes) = swept(&mfns, 1);
    assert_eq!(runs.len(), 4);
    assert_eq!(passes, 4);
    // No frame in the first window: one pass finds where they start.
    let (_, _, _, passes) = swept(&[1 << 30, (1 << 30) + 1], 1);
    assert_eq!(passes, 2);
}

#[test]
fn duplicates_are_counted_and_dumped_once() {
    let (runs, pages, dups, _) = swept(&[7, 7, 8, 7, 100, 100], 2);
    assert_eq!(runs, [Run { mfn: 7, pages: 2 }, Run { mfn: 100, pages: 1 }]);
    assert_eq!((pages, dups), (3, 3));
}

#[test]
fn sweep_refusals_are_named() {
    let mut runs = vec![Run::default(); 4];
    let bad = |mfns: Vec<u64>, words: usize, runs: &mut [Run]| {
        let mut bitmap = vec![0u64; words];
        sweep(&mut Listed::new(mfns), &mut bitmap, runs).unwrap_err()
    };
    assert_eq!(
        bad(vec![], 1, &mut runs),
        SweepError::Frames(Error::NoMemory)
    );
    assert_eq!(
        bad(vec![1], 0, &mut runs),
        SweepError::Frames(Error::EmptyBitmap)
    );
    assert_eq!(
        bad(vec![3, MAX_MFN + 1, 1 << 63], 1, &mut runs),
        SweepError::Frames(Error::MfnTooLarge { mfn: MAX_MFN + 1 })
    );
    // Five runs for a table of four: counted, then refused.
    assert_eq!(
        bad(vec![0, 2, 4, 6, 8], 1, &mut runs),
        SweepError::Frames(Error::RunTableTooSmall {
            runs: 5,
            capacity: 4
        })
    );
    // More runs than e_phnum counts, whatever the table.
    let mut big = vec![Run::default(); MAX_RUNS + 10];
    let every_other: Vec<u64> = (0..=MAX_RUNS as u64).map(|i| 2 * i).collect();
    assert_eq!(
        bad(every_other, 1024, &mut big),
        SweepError::Frames(Error::TooManyRuns {
            runs: MAX_RUNS + 1,
            max: MAX_RUNS
        })
    );
    struct Failing;
    impl MfnSource for Failing {
        type Error = &'static str;
        fn each_mfn(&mut self, _: &mut dyn FnMut(u64)) -> Result<(), &'static str> {
            Err("old frame 0x1234 cannot be mapped")
        }
    }
    let mut bitmap = [0u64; 1];
    let e = sweep(&mut Failing, &mut bitmap, &mut runs).unwrap_err();
    assert_eq!(e.to_string(), "old frame 0x1234 cannot be mapped");
}

#[test]
fn run_lists_are_checked() {
    let r = |mfn, pages| Run { mfn, pages };
    let ok = [r(1, 2), r(10, 1), r(MAX_MFN, 1)];
    let f = Frames::from_runs(&ok, 2).unwrap();
    assert_eq!((f.pages(), f.run_count(), f.duplicates()), (4, 3, 2));
    assert!(f.mfns().eq([1, 2, 10, MAX_MFN]));
    for (mfn, inside) in [
        (0, false),
        (1, true),
        (2, true),
        (3, false),
        (9, false),
        (10, true),
    ] {
        assert_eq!(f.contains(mfn), inside, "mfn {mfn}");
    }
    assert_eq!(f.first_missing(&[2, 10, 11]), Some(11));
    let bad = |runs: &[Run]| Frames::from_runs(runs, 0).unwrap_err();
    assert_eq!(bad(&[]), Error::NoMemory);
    assert_eq!(bad(&[r(1, 0)]), Error::BadRun { index: 0 });
    // Adjacent runs would be one PT_LOAD; overlapping or descending ones are no run list.
    assert_eq!(bad(&[r(1, 2), r(3, 1)]), Error::BadRun { index: 1 });
    assert_eq!(bad(&[r(1, 2), r(2, 1)]), Error::BadRun { index: 1 });
    assert_eq!(bad(&[r(5, 1), r(1, 1)]), Error::BadRun { index: 1 });
    assert_eq!(bad(&[r(MAX_MFN, 2)]), Error::MfnTooLarge { mfn: MAX_MFN });
    assert_eq!(bad(&[r(u64::MAX, 2)]), Error::MfnTooLarge { mfn: u64::MAX });
    let many = vec![Run::default(); MAX_RUNS + 1];
    assert!(matches!(bad(&many), Error::TooManyRuns { .. }));
}

/// A vmcore from runs is byte for byte the one from sorted MFNs.
#[test]
fn a_vmcore_from_runs_is_the_one_from_sorted_frames() {
    let mfns: Vec<u64> = (0..5000u64)
        .map(|i| (i * 7919) % 6007 + 0x10_0000)
        .collect();
    let cpus = [CpuState::default(); 2];
    let build = |frames: Frames<'_>| {
        let fll = frames.mfns().nth(17).unwrap();
        let notes = Notes {
            cpus: &cpus,
            vmcoreinfo: b"OSRELEASE=6.1.0\n",
            xen: CrashXenInfo::guest(4, 17, fll),
        };
        let v = Vmcore::new(frames, notes).unwrap();
        let mut head = vec![0u8; v.header_len() as usize];
        assert_eq!(v.header().fill(&mut head), head.len());
        let pages: Vec<PageSlot> = v.pages().collect();
        assert_eq!(pages.len(), v.pages().len());
        (head, pages, v.file_len())
    };
    let mut copy = mfns.clone();
    let from_sorted = build(Frames::from_unsorted(&mut copy).unwrap());
    let mut bitmap = vec![0u64; 8];
    let mut runs = vec![Run::default(); 1000];
    let s = sweep(&mut Listed::new(mfns), &mut bitmap, &mut runs).unwrap();
    assert!(s.passes > 1);
    assert_eq!(build(s.frames), from_sorted);
}

/// The capture kernel's own memory for the sweep (a 1 MiB bitmap, a table of MAX_RUNS) holds
/// a 6 GiB domain and a 64 GiB one as it holds 1 GiB: the domain's size changes the time
/// (one pass reads every P2M entry), not the memory.
#[test]
fn domains_of_6_and_64_gib_fit_the_same_bounded_storage() {
    for gib in [1u64, 6, 64] {
        let nr = gib << 18;
        // Xen gives a domain its memory in large extents, here 2 MiB ones in descending
        // machine order across a 256 GiB host, plus the leaf pages elsewhere.
        let extent = 512u64;
        let p2m = (0..nr).map(|pfn| {
            let e = pfn / extent;
            (0x400_0000 - (e + 1) * 3 * extent) + pfn % extent
        });
        let leaves = p2m::leaf_pages_for(nr);
        let mut src = Generated { p2m, leaves };
        let mut bitmap = vec![0u64; (1 << 20) / 8];
        let mut runs = vec![Run::default(); MAX_RUNS];
        let s = sweep(&mut src, &mut bitmap, &mut runs).unwrap();
        assert_eq!(s.frames.pages() as u64, nr + leaves);
        assert_eq!(s.frames.run_count() as u64, nr / extent + 1);
        // 256 GiB of machine frames in 32 GiB windows.
        assert!(s.passes <= 9, "{gib} GiB: {} passes", s.passes);
    }
}

/// A P2M given by a function of the PFN, and its leaf pages at 0x10000 on.
struct Generated<F> {
    p2m: F,
    leaves: u64,
}

impl<F: Iterator<Item = u64> + Clone> MfnSource for Generated<F> {
    type Error = ();

    fn each_mfn(&mut self, mfn: &mut dyn FnMut(u64)) -> Result<(), ()> {
        self.p2m.clone().filter_map(present_mfn).for_each(&mut *mfn);
        (0..self.leaves).for_each(|i| mfn(0x10000 + i));
        Ok(())
    }
}

#[test]
fn frame_list_pages_given_a_page_at_a_time() {
    let leaves: Vec<u64> = (0..1300).map(|i| 0x5000 + i).collect();
    let fl = FrameList::new(&leaves, 9).unwrap();
    let shape = FrameListShape::new(leaves.len(), 9).unwrap();
    assert_eq!(shape.frame_list_pages(), 3);
    let (mut a, mut b) = ([0; ENTRIES], [0; ENTRIES]);
    for i in 0..3 {
        let n = shape.leaves_in(i).unwrap();
        assert_eq!(n, [512, 512, 276][i]);
        shape
            .frame_list_page(i, &leaves[i * 512..i * 512 + n], &mut a)
            .unwrap();
        fl.frame_list_page(i, &mut b).unwrap();
        assert_eq!(a, b);
    }
    assert_eq!(a[276], 9);
    assert_eq!(
        shape.frame_list_page(2, &leaves[..10], &mut a),
        Err(Error::LeafCount {
            index: 2,
            given: 10,
            needed: 276
        })
    );
    assert_eq!(
        shape.leaves_in(3),
        Err(Error::FrameListIndex { index: 3, pages: 3 })
    );
    assert_eq!(
        shape.frame_list_page(0, &[0; 512], &mut a),
        Err(Error::ZeroMfnInFrameList { index: 0 })
    );
    assert!(matches!(FrameListShape::new(0, 9), Err(Error::NoP2mLeaves)));
    assert!(matches!(
        FrameListShape::new(1, INVALID_ENTRY),
        Err(Error::SharedPageMfn { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any frames, any window size: the sweep finds the runs, pages and duplicates sorting
    /// finds.
    #[test]
    fn sweep_agrees_with_sorting(
        mfns in proptest::collection::vec(
            prop_oneof![0u64..300, 1000u64..1100, (MAX_MFN - 200)..=MAX_MFN],
            1..400,
        ),
        words in 1usize..6,
    ) {
        let (runs, pages, dups, _) = swept(&mfns, words);
        prop_assert_eq!((runs, pages, dups), sorted(&mfns));
    }
}
