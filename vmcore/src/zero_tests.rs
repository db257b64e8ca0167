//! Host tests: zero runs found, bounded and left out, and the file read back the way crash
//! 8.0.2 (`read_netdump`: `[p_filesz, p_memsz)` zero-filled, any other address outside the
//! file data a read error) and makedumpfile 1.7.2 (`readpage_elf`, `is_in_segs`, and its mmap
//! path's `offset_to_pt_load_end`) read it.

extern crate std;

use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

use crate::zero::{is_zero, MIN_ZERO_RUN};
use crate::*;
use goblin::elf::{program_header::PT_LOAD, Elf};
use proptest::prelude::*;

/// Every maximal run of zero frames in `pages` (ascending MFN, `true` for a zero frame),
/// contiguous MFNs only: what a finder with room for everything keeps.
fn zero_runs_of(pages: &[(u64, bool)]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    let mut open: Option<Run> = None;
    for &(mfn, zero) in pages {
        match (&mut open, zero) {
            (Some(r), true) if r.end() == mfn => r.pages += 1,
            (_, true) => {
                out.extend(open.take());
                open = Some(Run { mfn, pages: 1 });
            }
            (_, false) => out.extend(open.take()),
        }
    }
    out.extend(open);
    out
}

fn find<'a>(
    frames: &Frames<'_>,
    zero: &dyn Fn(u64) -> bool,
    table: &'a mut [Run],
    min: u64,
) -> ZeroRuns<'a> {
    let mut f = ZeroRunFinder::new(table, min, frames);
    for mfn in frames.mfns() {
        f.page(mfn, zero(mfn));
    }
    f.finish()
}

fn cpus() -> [CpuState; 1] {
    [CpuState::default()]
}

fn notes<'a>(cpus: &'a [CpuState], fll: u64) -> Notes<'a> {
    Notes {
        cpus,
        vmcoreinfo: b"OSRELEASE=6.1.0-57-amd64\n",
        xen: CrashXenInfo::guest(4, 17, fll),
    }
}

/// A frame's contents: zeros, or its MFN in every word (so a misplaced page shows).
fn content(mfn: u64, zero: bool) -> Vec<u8> {
    if zero {
        vec![0; 4096]
    } else {
        (0..512)
            .flat_map(|_| (mfn | 1 << 60).to_le_bytes())
            .collect()
    }
}

/// The whole file, pages as `content` gives them (only the written ones).
fn file(v: &Vmcore<'_>, zero: &dyn Fn(u64) -> bool) -> Vec<u8> {
    let mut f = vec![0u8; v.header_len() as usize];
    let mut s = v.header();
    assert_eq!(s.fill(&mut f), f.len());
    assert!(s.is_done());
    for slot in v.pages() {
        assert_eq!(slot.offset, f.len() as u64);
        f.extend(content(slot.mfn, zero(slot.mfn)));
    }
    assert_eq!(f.len() as u64, v.file_len());
    f
}

/// A PT_LOAD as both readers keep it.
#[derive(Clone, Copy, Debug)]
struct Seg {
    offset: u64,
    start: u64,
    file: u64,
    mem: u64,
}

fn segs(f: &[u8]) -> Vec<Seg> {
    let elf = Elf::parse(f).unwrap();
    elf.program_headers
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .map(|p| Seg {
            offset: p.p_offset,
            start: p.p_paddr,
            file: p.p_filesz,
            mem: p.p_memsz,
        })
        .collect()
}

/// crash's `read_netdump` for a page (several PT_LOADs): the first segment whose file data
/// holds it, or whose zero fill (`[phys_start + p_filesz, phys_start + p_memsz)`) does.
fn crash_read(f: &[u8], segs: &[Seg], paddr: u64) -> Result<Vec<u8>, &'static str> {
    for s in segs {
        if paddr >= s.start && paddr < s.start + s.file {
            let at = (paddr - s.start + s.offset) as usize;
            return Ok(f[at..at + 4096].to_vec());
        }
        if s.mem != s.file && paddr >= s.start + s.file && paddr < s.start + s.mem {
            return Ok(vec![0; 4096]);
        }
    }
    Err("READ_ERROR: offset not found")
}

/// makedumpfile's `readpage_elf` for a whole page (`closest_pt_load` with distance 4096:
/// the segment holding it, by `p_memsz`), and `is_in_segs` (`paddr_to_offset`: by
/// `p_filesz`).
fn makedumpfile_read(f: &[u8], segs: &[Seg], paddr: u64) -> Result<Vec<u8>, &'static str> {
    let Some(s) = segs
        .iter()
        .find(|s| paddr >= s.start && paddr < s.start + s.mem)
    else {
        return Err("Attempt to read non-existent page");
    };
    if paddr - s.start < s.file {
        let at = (paddr - s.start + s.offset) as usize;
        Ok(f[at..at + 4096].to_vec())
    } else {
        Ok(vec![0; 4096])
    }
}

fn makedumpfile_in_segs(segs: &[Seg], paddr: u64) -> bool {
    segs.iter()
        .any(|s| paddr >= s.start && paddr < s.start + s.file)
}

/// makedumpfile's mmap path (`mappage_elf`, `update_mmap_range`): for a page at file offset
/// `offset` it maps the file up to `offset_to_pt_load_end(offset)` (the first segment whose
/// `[p_offset, p_offset + p_memsz)` holds the offset) and takes the mapping as contiguous in
/// machine addresses. Sound only if that end is the end of the page's own segment's data.
fn makedumpfile_mmap_end(segs: &[Seg], offset: u64) -> Option<u64> {
    segs.iter()
        .find(|s| offset >= s.offset && offset < s.offset + s.mem)
        .map(|s| s.offset + s.mem)
}

/// Every written page's mmap range ends with its own segment's data.
fn check_mmap_ranges(segs: &[Seg]) {
    for s in segs.iter().filter(|s| s.file > 0) {
        for page in (0..s.file).step_by(4096) {
            assert_eq!(
                makedumpfile_mmap_end(segs, s.offset + page),
                Some(s.offset + s.file),
                "segment at {:#x}",
                s.start
            );
        }
    }
}

#[test]
fn is_zero_looks_at_every_byte() {
    let mut page = vec![0u8; 4096];
    assert!(is_zero(&page));
    for at in [0, 7, 8, 63, 64, 2047, 4095] {
        page[at] = 1;
        assert!(!is_zero(&page), "byte {at}");
        page[at] = 0;
    }
    assert!(is_zero(&[]));
    assert!(is_zero(&[0; 70]));
    assert!(!is_zero(&[
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9
    ]));
    let mut odd = [0u8; 70];
    odd[69] = 1;
    assert!(!is_zero(&odd));
}

#[test]
fn a_run_cut_at_zero_runs_reads_back_as_the_frames() {
    // Runs 0x100..0x140 and 0x200..0x220. Zeros: 0x110..0x120 (inside), 0x130..0x140 (the
    // run's tail), 0x200..0x210 (the second run's head); 0x105 alone is shorter than the
    // minimum and stays.
    let zero = |m: u64| {
        (0x110..0x120).contains(&m)
            || (0x130..0x140).contains(&m)
            || (0x200..0x210).contains(&m)
            || m == 0x105
    };
    let mut mfns: Vec<u64> = (0x100..0x140).chain(0x200..0x220).collect();
    let frames = Frames::from_unsorted(&mut mfns).unwrap();
    let mut table = [Run::default(); 8];
    let zeros = find(&frames, &zero, &mut table, MIN_ZERO_RUN);
    assert_eq!(
        zeros.runs(),
        [
            Run {
                mfn: 0x110,
                pages: 16
            },
            Run {
                mfn: 0x130,
                pages: 16
            },
            Run {
                mfn: 0x200,
                pages: 16
            }
        ]
    );
    assert_eq!(
        (zeros.pages(), zeros.zero_pages(), zeros.min_pages()),
        (48, 49, 16)
    );
    let c = cpus();
    let v = Vmcore::leaving_out(frames, zeros, notes(&c, 0x101)).unwrap();
    let loads: Vec<Load> = v.loads().collect();
    let load = |mfn, pages, zero| Load { mfn, pages, zero };
    assert_eq!(
        loads,
        [
            load(0x100, 0x10, false),
            load(0x110, 0x10, true),
            load(0x120, 0x10, false),
            load(0x130, 0x10, true),
            load(0x200, 0x10, true),
            load(0x210, 0x10, false)
        ]
    );
    assert_eq!(v.phnum(), 7);
    assert_eq!(v.data_pages(), 0x60 - 48);
    let f = file(&v, &zero);
    let segs = segs(&f);
    let (d, end) = (v.header_len(), v.file_len());
    assert_eq!(end, d + 0x30 * 4096);
    let got: Vec<(u64, u64, u64, u64)> = segs
        .iter()
        .map(|s| (s.start >> 12, s.offset, s.file >> 12, s.mem >> 12))
        .collect();
    assert_eq!(
        got,
        [
            (0x100, d, 0x10, 0x10),
            (0x110, end, 0, 0x10),
            (0x120, d + 0x10 * 4096, 0x10, 0x10),
            (0x130, end, 0, 0x10),
            (0x200, end, 0, 0x10),
            (0x210, d + 0x20 * 4096, 0x10, 0x10)
        ]
    );
    check_mmap_ranges(&segs);
    for mfn in (0x100..0x140).chain(0x200..0x220) {
        let want = content(mfn, zero(mfn));
        assert_eq!(crash_read(&f, &segs, mfn << 12).unwrap(), want, "{mfn:#x}");
        assert_eq!(makedumpfile_read(&f, &segs, mfn << 12).unwrap(), want);
        // makedumpfile counts a page left out as no data (exclude_nodata_pages).
        let left_out = zeros.runs().iter().any(|r| (r.mfn..r.end()).contains(&mfn));
        assert_eq!(makedumpfile_in_segs(&segs, mfn << 12), !left_out);
    }
    for mfn in [0xff, 0x140, 0x1ff, 0x220] {
        assert!(crash_read(&f, &segs, mfn << 12).is_err());
        assert!(makedumpfile_read(&f, &segs, mfn << 12).is_err());
    }
}

#[test]
fn nothing_left_out_is_the_plain_vmcore_byte_for_byte() {
    let mut mfns: Vec<u64> = (0x100..0x140).chain(0x200..0x220).collect();
    let frames = Frames::from_unsorted(&mut mfns).unwrap();
    let zero = |m: u64| m.is_multiple_of(3);
    let c = cpus();
    let plain = Vmcore::new(frames, notes(&c, 0x101)).unwrap();
    let mut table: [Run; 0] = [];
    let none = find(&frames, &zero, &mut table, 1);
    assert_eq!(none.runs(), []);
    let same = Vmcore::leaving_out(frames, none, notes(&c, 0x101)).unwrap();
    assert_eq!(file(&plain, &zero), file(&same, &zero));
}

#[test]
fn bad_zero_runs_are_refused_by_index() {
    let mut mfns: Vec<u64> = (0x100..0x140).chain(0x200..0x220).collect();
    let frames = Frames::from_unsorted(&mut mfns).unwrap();
    let c = cpus();
    let run = |mfn, pages| Run { mfn, pages };
    let cases: [(&[Run], usize); 7] = [
        (&[run(0x140, 4)], 0),                // in the gap between the runs
        (&[run(0x13e, 4)], 0),                // across a run's end
        (&[run(0x110, 0)], 0),                // empty
        (&[run(0x110, 4), run(0x114, 4)], 1), // touching the one before
        (&[run(0x120, 4), run(0x110, 4)], 1), // out of order
        (&[run(0x110, 4), run(0x112, 4)], 1), // overlapping
        (&[run(0x300, 1)], 0),                // past the last run
    ];
    for (runs, index) in cases {
        let e =
            Vmcore::leaving_out(frames, ZeroRuns::from_runs(runs), notes(&c, 0x101)).unwrap_err();
        assert_eq!(e, Error::BadZeroRun { index }, "{runs:?}");
    }
    let whole = [run(0x100, 0x40), run(0x200, 0x20)];
    let v = Vmcore::leaving_out(frames, ZeroRuns::from_runs(&whole), notes(&c, 0x101)).unwrap();
    assert_eq!((v.phnum(), v.data_pages()), (3, 0));
    assert_eq!(v.file_len(), v.header_len());
}

#[test]
fn a_full_table_doubles_the_minimum_and_keeps_the_longest() {
    // Zero runs of 1 to 40 frames, each followed by one non-zero frame, in one run.
    let mut mfns = Vec::new();
    let mut zero_set = Vec::new();
    let mut mfn = 0x1000u64;
    for len in 1..=40u64 {
        zero_set.extend(mfn..mfn + len);
        mfns.extend(mfn..=mfn + len);
        mfn += len + 1;
    }
    let zero = |m: u64| zero_set.binary_search(&m).is_ok();
    let frames = Frames::from_unsorted(&mut mfns).unwrap();
    let mut table = [Run::default(); 10];
    let zeros = find(&frames, &zero, &mut table, 2);
    // 2 -> 4 -> 8 -> 16 -> 32: 9 runs of 32..=40 frames.
    assert_eq!(zeros.min_pages(), 32);
    let lens: Vec<u64> = zeros.runs().iter().map(|r| r.pages).collect();
    assert_eq!(lens, (32..=40).collect::<Vec<_>>());
    assert_eq!(zeros.zero_pages(), (1..=40).sum::<u64>());
}

#[test]
fn the_table_leaves_room_for_the_runs_in_e_phnum() {
    // MAX_RUNS - 4 runs of three frames: room for two zero runs (each may add two PT_LOADs).
    let runs = MAX_RUNS as u64 - 4;
    let mut mfns: Vec<u64> = (0..runs).flat_map(|i| 4 * i..4 * i + 3).collect();
    let frames = Frames::from_unsorted(&mut mfns).unwrap();
    assert_eq!(frames.run_count(), MAX_RUNS - 4);
    // The first two runs end in two zero frames.
    let zero = |m: u64| m < 8 && !m.is_multiple_of(4);
    let mut table = vec![Run::default(); 100];
    let zeros = find(&frames, &zero, &mut table, 1);
    assert_eq!(zeros.runs().len(), 2);
    assert_eq!(zeros.min_pages(), 1);
    let c = cpus();
    let v = Vmcore::leaving_out(frames, zeros, notes(&c, 0)).unwrap();
    // A zero run at a run's end adds one PT_LOAD.
    assert_eq!(usize::from(v.phnum()), 1 + MAX_RUNS - 4 + 2);
    // The finder keeps no more than e_phnum leaves room for: three runs of one zero frame
    // each, and room for two, so the minimum doubles past them.
    let singles = |m: u64| m == 1 || m == 5 || m == 9;
    let mut table = vec![Run::default(); 100];
    let kept = find(&frames, &singles, &mut table, 1);
    assert_eq!((kept.runs().len(), kept.min_pages()), (0, 2));
    // Zero runs that add PT_LOADs past e_phnum are refused.
    let heads: Vec<Run> = (0..5)
        .map(|i| Run {
            mfn: 4 * i,
            pages: 1,
        })
        .collect();
    assert_eq!(
        Vmcore::leaving_out(frames, ZeroRuns::from_runs(&heads), notes(&c, 1)).unwrap_err(),
        Error::TooManyRuns {
            runs: MAX_RUNS + 1,
            max: MAX_RUNS
        }
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The finder keeps exactly the zero runs of at least its final minimum, within its
    /// table; the file holds exactly the other frames, and both readers read every frame
    /// back as it was.
    #[test]
    fn left_out_frames_read_back_as_zeros(
        mut mfns in proptest::collection::vec(0u64..600, 1..400),
        zeros in proptest::collection::btree_set(0u64..600, 0..500),
        capacity in 0usize..12,
        min in 1u64..6,
    ) {
        let zero = |m: u64| zeros.contains(&m);
        let frames = Frames::from_unsorted(&mut mfns).unwrap();
        let mut table = vec![Run::default(); capacity];
        let found = find(&frames, &zero, &mut table, min);
        let pages: Vec<(u64, bool)> = frames.mfns().map(|m| (m, zero(m))).collect();
        let all = zero_runs_of(&pages);
        let want: Vec<Run> = all
            .iter()
            .copied()
            .filter(|r| r.pages >= found.min_pages())
            .collect();
        prop_assert_eq!(found.runs(), &want[..]);
        prop_assert!(found.runs().len() <= capacity);
        prop_assert!(found.min_pages() >= min);
        if all.iter().filter(|r| r.pages >= min).count() <= capacity {
            prop_assert_eq!(found.min_pages(), min);
        }
        prop_assert_eq!(found.zero_pages(), pages.iter().filter(|p| p.1).count() as u64);

        let c = cpus();
        let fll = frames.mfns().next().unwrap();
        let v = Vmcore::leaving_out(frames, found, notes(&c, fll)).unwrap();
        let f = file(&v, &zero);
        let segs = segs(&f);
        prop_assert_eq!(segs.len() + 1, usize::from(v.phnum()));
        // The data follows the header without gaps, in PT_LOAD order; zeros left out are
        // PT_LOADs of their own that point at the end of the data.
        let mut next = v.header_len();
        for s in &segs {
            prop_assert!(s.mem > 0);
            if s.file == 0 {
                prop_assert_eq!(s.offset, v.file_len());
            } else {
                prop_assert_eq!((s.offset, s.file), (next, s.mem));
                next += s.file;
            }
        }
        prop_assert_eq!(next, v.file_len());
        check_mmap_ranges(&segs);
        let left_out: BTreeMap<u64, ()> = found
            .runs()
            .iter()
            .flat_map(|r| (r.mfn..r.end()).map(|m| (m, ())))
            .collect();
        let written: Vec<u64> = v.pages().map(|s| s.mfn).collect();
        let expected: Vec<u64> = frames.mfns().filter(|m| !left_out.contains_key(m)).collect();
        prop_assert_eq!(written, expected);
        for mfn in 0..601u64 {
            let in_dump = frames.contains(mfn);
            let crash = crash_read(&f, &segs, mfn << 12);
            let mdf = makedumpfile_read(&f, &segs, mfn << 12);
            if in_dump {
                let want = content(mfn, zero(mfn));
                prop_assert_eq!(crash.as_ref().ok(), Some(&want));
                prop_assert_eq!(mdf.as_ref().ok(), Some(&want));
            } else {
                prop_assert!(crash.is_err() && mdf.is_err(), "mfn {:#x}", mfn);
            }
            prop_assert_eq!(
                makedumpfile_in_segs(&segs, mfn << 12),
                in_dump && !left_out.contains_key(&mfn)
            );
        }
    }
}
