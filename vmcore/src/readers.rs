//! Host tests: the P2M a vmcore names, read back the way makedumpfile 1.7.2 and crash 8.0.2
//! read a Xen kdump (makedumpfile: `get_machdep_info_x86_64`, `ptom_xen`, `is_in_segs`, and
//! `__exclude_unnecessary_pages` walking every PFN of a present memory section; crash:
//! `x86_64_xen_kdump_p2m_create`, `xen_kdump_p2m`), for domains of sizes that end inside a
//! section, ballooned domains with holes in their P2M, and domains whose last frames are not
//! present. The vmcore is built as the capture kernel builds it: the old kernel's own leaf
//! pages, a frame list in pages of its own, and those pages dumped.

extern crate std;

use std::collections::HashMap;
use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;

use crate::p2m::{self, FrameList, FrameListShape, Page, ENTRIES, INVALID_ENTRY};
use crate::*;
use goblin::elf::{program_header::PT_LOAD, Elf};

/// PFNs of an x86_64 memory section (`SECTION_SIZE_BITS` 27): how far makedumpfile walks
/// `mem_map` past a domain's last PFN.
const SECTION_PFNS: u64 = 1 << (27 - 12);
/// Where the synthetic domains' frames, leaf pages and the capture kernel's pages lie.
const DATA_MFN: u64 = 0x20_0000;
const LEAF_MFN: u64 = 0x100_0000;
const OWN_MFN: u64 = 0x200_0000;

/// A domain at its panic: its P2M and where its leaf pages are (the leaves of a wholly
/// missing range may all be one shared page, as Linux's `p2m_missing`).
struct Domain {
    p2m: Vec<u64>,
    leaves: Vec<u64>,
}

impl Domain {
    /// `mib` MiB of frames, as Linux's P2M has them: `ALIGN(nr_pages, 512)` entries, those
    /// past `nr_pages` invalid.
    fn sized(mib: u64) -> Self {
        let nr = mib * 256;
        let len = nr.next_multiple_of(ENTRIES as u64);
        let p2m = (0..len)
            .map(|pfn| {
                if pfn < nr {
                    DATA_MFN + pfn
                } else {
                    INVALID_ENTRY
                }
            })
            .collect();
        Domain::with_p2m(p2m)
    }

    fn with_p2m(p2m: Vec<u64>) -> Self {
        let leaves = (0..p2m::leaf_pages_for(p2m.len() as u64))
            .map(|i| LEAF_MFN + i)
            .collect();
        Domain { p2m, leaves }
    }

    /// Leaf `i`'s entries.
    fn leaf(&self, i: usize) -> Page {
        let mut page = [0; ENTRIES];
        p2m::leaf_page(&self.p2m, i, &mut page).unwrap();
        page
    }
}

/// MFNs in a list, given to a sweep.
struct Listed<'a>(&'a [u64]);

impl MfnSource for Listed<'_> {
    type Error = ();

    fn each_mfn(&mut self, mfn: &mut dyn FnMut(u64)) -> Result<(), ()> {
        self.0.iter().for_each(|&m| mfn(m));
        Ok(())
    }
}

/// A vmcore's header and the contents of the frames the readers look into.
struct Dump {
    /// Each `PT_LOAD`'s machine addresses: start, end of its file data, end of its memory
    /// (the zeros left out between the two).
    loads: Vec<(u64, u64, u64)>,
    fll: u64,
    pages: HashMap<u64, Page>,
}

/// Writes the domain's vmcore as the capture kernel does: frame list over the old leaves,
/// padded with a missing leaf and a missing frame-list page; the present frames, the leaves
/// and its own pages dumped.
fn capture(d: &Domain) -> Dump {
    capture_without(d, &|_| false)
}

/// As [`capture`], leaving out of every `PT_LOAD` the frames of the PFNs `omit` names (as
/// the PFNs a balloon gave back are).
fn capture_without(d: &Domain, omit: &dyn Fn(u64) -> bool) -> Dump {
    capture_with(d, omit, None)
}

/// As [`capture_without`], and with `zero` (an MFN's page is all zeros) the zero runs left
/// out as the capture kernel's `pvkexec.dump_zero=skip` finds them.
fn capture_with(
    d: &Domain,
    omit: &dyn Fn(u64) -> bool,
    zero: Option<&dyn Fn(u64) -> bool>,
) -> Dump {
    let mut pages = HashMap::new();
    for (i, &leaf) in d.leaves.iter().enumerate() {
        let content = d.leaf(i);
        let old = pages.insert(leaf, content);
        assert!(
            old.is_none_or(|o| o == content),
            "a shared leaf must be shared"
        );
    }
    let missing_leaf = OWN_MFN;
    let missing_list = OWN_MFN + 1;
    let fl = FrameList::new(&d.leaves, missing_leaf).unwrap();
    let mut page = [0; ENTRIES];
    p2m::missing_leaf_page(&mut page);
    pages.insert(missing_leaf, page);
    fl.missing_frame_list_page(&mut page);
    pages.insert(missing_list, page);
    let lists: Vec<u64> = (0..fl.frame_list_pages())
        .map(|i| OWN_MFN + 2 + i as u64)
        .collect();
    // The capture kernel fills each frame-list page from one crash-record list page.
    let shape = FrameListShape::new(d.leaves.len(), missing_leaf).unwrap();
    for (i, &m) in lists.iter().enumerate() {
        let first = i * ENTRIES;
        let names = &d.leaves[first..first + shape.leaves_in(i).unwrap()];
        shape.frame_list_page(i, names, &mut page).unwrap();
        let mut whole = [0; ENTRIES];
        fl.frame_list_page(i, &mut whole).unwrap();
        assert_eq!(page, whole, "frame-list page {i}");
        pages.insert(m, page);
    }
    let fll = OWN_MFN + 2 + lists.len() as u64;
    fl.frame_list_list_page(&lists, missing_list, &mut page)
        .unwrap();
    pages.insert(fll, page);
    assert_eq!(fll + 1 - OWN_MFN, p2m::own_pages_for(d.leaves.len()) as u64);

    let mut mfns: Vec<u64> = d
        .p2m
        .iter()
        .enumerate()
        .filter(|&(pfn, _)| !omit(pfn as u64))
        .filter_map(|(_, &e)| present_mfn(e))
        .chain(d.leaves.iter().copied())
        .chain(OWN_MFN..=fll)
        .collect();
    // The capture kernel's way: a sweep in bounded memory, here with windows of 65536
    // frames so that every domain takes several; it must find what sorting finds.
    let mut bitmap = vec![0u64; 1024];
    let mut runs = vec![Run::default(); MAX_RUNS];
    let swept = sweep(&mut Listed(&mfns), &mut bitmap, &mut runs).unwrap();
    let frames = swept.frames;
    let sorted = Frames::from_unsorted(&mut mfns).unwrap();
    assert!(frames.runs().eq(sorted.runs()));
    assert_eq!(
        (frames.pages(), frames.duplicates()),
        (sorted.pages(), sorted.duplicates())
    );
    let cpus = [CpuState::default()];
    let notes = Notes {
        cpus: &cpus,
        vmcoreinfo: b"OSRELEASE=6.1.0-57-amd64\n",
        xen: CrashXenInfo::guest(4, 17, fll),
    };
    let mut table = vec![Run::default(); 4096];
    let zeros = match zero {
        None => ZeroRuns::NONE,
        Some(zero) => {
            let mut finder = ZeroRunFinder::new(&mut table, zero::MIN_ZERO_RUN, &frames);
            for mfn in frames.mfns() {
                finder.page(mfn, zero(mfn) && !pages.contains_key(&mfn));
            }
            finder.finish()
        }
    };
    let v = Vmcore::leaving_out(frames, zeros, notes).unwrap();
    read_dump(&header_bytes(&v), pages)
}

fn header_bytes(v: &Vmcore<'_>) -> Vec<u8> {
    let mut out = vec![0u8; v.header_len() as usize];
    let mut s = v.header();
    assert_eq!(s.fill(&mut out), out.len());
    assert!(s.is_done());
    out
}

/// The `PT_LOAD`s and the "Xen" note's frame-list-list MFN, as the readers find them.
fn read_dump(header: &[u8], pages: HashMap<u64, Page>) -> Dump {
    let elf = Elf::parse(header).unwrap();
    let loads: Vec<(u64, u64, u64)> = elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .map(|p| (p.p_paddr, p.p_paddr + p.p_filesz, p.p_paddr + p.p_memsz))
        .collect();
    let xen = elf
        .iter_note_headers(header)
        .unwrap()
        .map(|n| n.unwrap())
        .find(|n| n.name == "Xen" && n.n_type == XEN_ELFNOTE_CRASH_INFO)
        .expect("a Xen CRASH_INFO note");
    // Both readers take the last word of the descriptor.
    let fll = u64::from_le_bytes(xen.desc[xen.desc.len() - 8..].try_into().unwrap());
    assert!(loads.iter().all(|l| l.0 <= l.1 && l.1 <= l.2));
    assert!(loads.windows(2).all(|w| w[0].2 <= w[1].0));
    Dump { loads, fll, pages }
}

impl Dump {
    /// The `PT_LOAD` whose memory holds `maddr`.
    fn load(&self, maddr: u64) -> Option<(u64, u64, u64)> {
        // The PT_LOADs ascend (checked in read_dump).
        let i = self.loads.partition_point(|&(_, _, end)| end <= maddr);
        self.loads.get(i).copied().filter(|l| l.0 <= maddr)
    }

    /// makedumpfile's `is_in_segs` (`paddr_to_offset`: the file data only; a frame left out
    /// as zeros is "no data", `exclude_nodata_pages`).
    fn in_segs(&self, maddr: u64) -> bool {
        self.load(maddr)
            .is_some_and(|(_, data_end, _)| maddr < data_end)
    }

    /// `readmem(PADDR, mfn << 12, page)`: only frames in a `PT_LOAD` can be read; those in
    /// its memory past its file data read as zeros (crash's zero fill, makedumpfile's
    /// `readpage_elf`).
    fn read(&self, mfn: u64) -> Result<&Page, String> {
        static ZERO: Page = [0; ENTRIES];
        let Some((_, data_end, _)) = self.load(mfn << 12).filter(|_| mfn <= MAX_MFN) else {
            return Err(format!(
                "readmem: machine address {:#x} is not in the dump",
                mfn << 12
            ));
        };
        if mfn << 12 >= data_end {
            return Ok(&ZERO);
        }
        Ok(self.pages.get(&mfn).unwrap_or(&ZERO))
    }
}

/// makedumpfile's `p2m_mfn_frame_list`: the leaf MFNs it gathered.
struct Makedumpfile {
    frame_list: Vec<u64>,
}

impl Makedumpfile {
    /// `get_machdep_info_x86_64`: the frame-list-list up to its first zero, each frame-list
    /// page up to its first zero; a short page ends the copy.
    fn open(d: &Dump) -> Result<Self, String> {
        let top = d
            .read(d.fll)
            .map_err(|e| format!("Can't read p2m_mfn: {e}"))?;
        let mut counts = Vec::new();
        for &m in top.iter().take_while(|&&m| m != 0) {
            let page = d.read(m).map_err(|e| format!("Can't get frame_mfn: {e}"))?;
            counts.push(page.iter().take_while(|&&w| w != 0).count());
        }
        let total: usize = counts.iter().sum();
        let mut frame_list = Vec::new();
        for (&m, &n) in top.iter().zip(&counts) {
            frame_list.extend_from_slice(&d.read(m)?[..n]);
            if n != ENTRIES {
                break;
            }
        }
        if frame_list.len() != total {
            return Err(format!(
                "a short frame-list page before the last: {total} frames counted, {} read \
                 (the rest uninitialised)",
                frame_list.len()
            ));
        }
        Ok(Makedumpfile { frame_list })
    }

    /// `ptom_xen`: the machine address of `pfn` (C's `pfn_to_paddr`: a 64-bit shift).
    fn ptom(&self, d: &Dump, pfn: u64) -> Result<u64, String> {
        let idx = (pfn / ENTRIES as u64) as usize;
        let Some(&leaf) = self.frame_list.get(idx) else {
            return Err(format!("ptom_xen: Invalid mfn_idx({idx})."));
        };
        let entries = d.read(leaf).map_err(|e| format!("Can't get mfn: {e}"))?;
        Ok(entries[pfn as usize % ENTRIES] << 12)
    }

    /// `__exclude_unnecessary_pages` over `pfns`: each PFN's frame if it is in the dump.
    fn walk(&self, d: &Dump, pfns: core::ops::Range<u64>) -> Result<Vec<Option<u64>>, String> {
        pfns.map(|pfn| {
            let maddr = self.ptom(d, pfn).map_err(|e| {
                format!(
                    "{e} Can't convert a physical address({:x}) to machine address.",
                    pfn << 12
                )
            })?;
            Ok(d.in_segs(maddr).then_some(maddr >> 12))
        })
        .collect()
    }
}

/// crash's frame count (`x86_64_xen_kdump_p2m_create`): every frame-list-list entry up to the
/// first zero, the non-zero entries of each frame-list page.
fn crash_p2m_frames(d: &Dump) -> Result<usize, String> {
    let top = d.read(d.fll)?;
    let mut frames = 0;
    for &m in top.iter().take_while(|&&m| m != 0) {
        frames += d.read(m)?.iter().filter(|&&w| w != 0).count();
    }
    Ok(frames)
}

/// The frame each PFN of the domain should read as: its own, or none (a hole).
fn expected(d: &Domain, pfn: u64) -> Option<u64> {
    d.p2m.get(pfn as usize).copied().and_then(present_mfn)
}

/// Checks every PFN makedumpfile walks (to the end of the domain's last section, and a
/// section more) and the last PFNs the list covers.
fn check_readers(d: &Domain) {
    let dump = capture(d);
    let m = Makedumpfile::open(&dump).unwrap();
    let end = (d.p2m.len() as u64).next_multiple_of(SECTION_PFNS) + SECTION_PFNS;
    let got = m
        .walk(&dump, 0..end)
        .unwrap_or_else(|e| panic!("{} PFNs: {e}", d.p2m.len()));
    for (pfn, frame) in got.into_iter().enumerate() {
        assert_eq!(frame, expected(d, pfn as u64), "pfn {pfn:#x}");
    }
    assert_eq!(m.frame_list.len(), p2m::MAX_LEAVES);
    assert_eq!(crash_p2m_frames(&dump).unwrap(), p2m::MAX_LEAVES);
    let last = p2m::COVERED_PFNS - 1;
    assert_eq!(m.walk(&dump, last - 3..last + 1).unwrap(), [None; 4]);
    // Linux's frame list ends there too.
    assert!(m.ptom(&dump, p2m::COVERED_PFNS).is_err());
}

#[test]
fn sizes_that_end_inside_a_section_read_to_the_section_end() {
    // 448 MiB: the reported case; 197: not even a whole leaf; 1.5 GiB + 64 MiB: several
    // frame-list pages; the others whole sections, a whole frame-list page and one leaf more.
    for mib in [448, 197, 1, 128, 256, 1024, 1026, 1536 + 64] {
        check_readers(&Domain::sized(mib));
    }
}

#[test]
fn the_old_list_fails_as_makedumpfile_did() {
    // Without the padding (the list stopping at the domain's last leaf, zeros after), the
    // model fails where makedumpfile 1.7.2 failed on a 448 MiB domain.
    let d = Domain::sized(448);
    let mut dump = capture(&d);
    let mut top = dump.pages[&dump.fll];
    let list = top[0];
    let mut page = dump.pages[&list];
    page[d.leaves.len()..].fill(0);
    dump.pages.insert(list, page);
    top[1..].fill(0);
    dump.pages.insert(dump.fll, top);
    let m = Makedumpfile::open(&dump).unwrap();
    let e = m.walk(&dump, 0..4 * SECTION_PFNS).unwrap_err();
    assert_eq!(
        e,
        "ptom_xen: Invalid mfn_idx(224). Can't convert a physical address(1c000000) to \
         machine address."
    );
}

#[test]
fn a_ballooned_domain_reads_its_holes_as_holes() {
    // 320 MiB ballooned down to 256 MiB: scattered holes, ten wholly missing leaves named by
    // one shared missing page (Linux's p2m_missing), and the last frames not present.
    let nr = 320 * 256;
    let mut p2m: Vec<u64> = (0..nr).map(|pfn| DATA_MFN + pfn).collect();
    let mut out = 0;
    for (pfn, entry) in p2m.iter_mut().enumerate() {
        let whole_leaf = (100..110).contains(&(pfn / ENTRIES));
        if whole_leaf || pfn % 7 == 3 || pfn >= nr as usize - 1000 {
            *entry = INVALID_ENTRY;
            out += 1;
        }
    }
    assert!(out > 64 * 256, "{out} frames ballooned out");
    let mut d = Domain::with_p2m(p2m);
    let shared = LEAF_MFN + 0x8000;
    d.leaves[100..110].fill(shared);
    check_readers(&d);
}

#[test]
fn foreign_entries_read_as_holes() {
    // A backend's grant mappings: the other domain's frame, not in this dump.
    let mut d = Domain::sized(200);
    d.p2m[5] = (1 << 63) | 0x7_0000;
    d.p2m[6] = (1 << 63) | 0x7_0001;
    let dump = capture(&d);
    let m = Makedumpfile::open(&dump).unwrap();
    assert_eq!(
        m.walk(&dump, 4..8).unwrap(),
        [Some(DATA_MFN + 4), None, None, Some(DATA_MFN + 7)]
    );
}

#[test]
fn leaf_pages_outside_the_p2m_are_dumped() {
    // The leaves are read through the dump: the capture kernel dumps them whether or not a
    // PFN names them (here none does).
    let d = Domain::sized(4);
    let dump = capture(&d);
    for &leaf in &d.leaves {
        assert!(dump.in_segs(leaf << 12), "leaf {leaf:#x}");
        assert!(!d.p2m.contains(&leaf));
    }
}

#[test]
fn frames_left_out_of_the_dump_read_as_holes() {
    // A dump that leaves some frames out of every PT_LOAD but keeps the P2M's pages: those
    // PFNs read as holes, the walk still reaches the section's end.
    let d = Domain::sized(448);
    let omit = |pfn: u64| pfn.is_multiple_of(3) || (0x4000..0x6000).contains(&pfn);
    let dump = capture_without(&d, &omit);
    let m = Makedumpfile::open(&dump).unwrap();
    let got = m.walk(&dump, 0..4 * SECTION_PFNS).unwrap();
    for (pfn, frame) in got.into_iter().enumerate() {
        let pfn = pfn as u64;
        let want = expected(&d, pfn).filter(|_| !omit(pfn));
        assert_eq!(frame, want, "pfn {pfn:#x}");
    }
}

#[test]
fn zero_frames_left_out_read_as_zeros_and_the_p2m_still_translates() {
    // A 448 MiB domain whose PFNs 0x1000..0x9000 and every fifth PFN (from 2) hold zeros: the long
    // run is left out (the single frames are shorter than the minimum and stay), the P2M's
    // pages are never zero and stay. Every PFN still translates; makedumpfile counts the
    // frames left out as no data, and a read gives zeros.
    let d = Domain::sized(448);
    let zero_pfn = |pfn: u64| (0x1000..0x9000).contains(&pfn) || pfn % 5 == 2;
    let zero_mfn = |mfn: u64| (DATA_MFN..LEAF_MFN).contains(&mfn) && zero_pfn(mfn - DATA_MFN);
    let dump = capture_with(&d, &|_| false, Some(&zero_mfn));
    let full = capture(&d);
    // The run is cut in three: frames, the zeros, frames.
    assert_eq!(dump.loads.len(), full.loads.len() + 2, "{:x?}", dump.loads);
    let m = Makedumpfile::open(&dump).unwrap();
    assert_eq!(crash_p2m_frames(&dump).unwrap(), p2m::MAX_LEAVES);
    let got = m.walk(&dump, 0..4 * SECTION_PFNS).unwrap();
    for (pfn, frame) in got.into_iter().enumerate() {
        let pfn = pfn as u64;
        let left_out = (0x1000..0x9000).contains(&pfn);
        let want = expected(&d, pfn).filter(|_| !left_out);
        assert_eq!(frame, want, "pfn {pfn:#x}");
        if let Some(mfn) = expected(&d, pfn) {
            assert_eq!(m.ptom(&dump, pfn).unwrap(), mfn << 12);
            assert!(dump.read(mfn).unwrap().iter().all(|&w| w == 0) || !zero_pfn(pfn));
        }
    }
}
