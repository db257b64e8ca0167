//! Host tests: the produced header parsed back with goblin.

extern crate std;

use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use crate::p2m::{self, FrameList};
use crate::*;
use goblin::elf::{program_header::*, Elf};
use proptest::prelude::*;

fn regs(seed: u64) -> UserRegs {
    UserRegs {
        r15: seed,
        rax: seed + 10,
        orig_ax: !0,
        rip: 0xffff_ffff_8100_0000 + seed,
        cs: 0xe033,
        sp: 0xffff_c900_0000_0000 + seed,
        ss: 0xe02b,
        gs: seed + 26,
        ..UserRegs::default()
    }
}

fn cpus(n: usize) -> Vec<CpuState> {
    (0..n)
        .map(|i| CpuState {
            pid: i as i32 + 100,
            regs: regs(i as u64),
        })
        .collect()
}

const INFO: &[u8] = b"OSRELEASE=6.1.0-57-amd64\nPAGESIZE=4096\nNUMBER(phys_base)=0\n";

/// The whole header, streamed in chunks of `chunk` bytes.
fn header(v: &Vmcore<'_>, chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = v.header();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = s.fill(&mut buf);
        out.extend_from_slice(&buf[..n]);
        if n < chunk {
            break;
        }
    }
    assert!(s.is_done());
    assert_eq!(s.remaining(), 0);
    assert_eq!(s.fill(&mut buf), 0);
    out
}

/// A file whose pages hold their MFN in the first word.
fn file(v: &Vmcore<'_>, chunk: usize) -> Vec<u8> {
    let mut f = header(v, chunk);
    assert_eq!(f.len() as u64, v.header_len());
    for slot in v.pages() {
        assert_eq!(slot.offset, f.len() as u64);
        let mut page = vec![0u8; 4096];
        page[..8].copy_from_slice(&slot.mfn.to_le_bytes());
        f.extend_from_slice(&page);
    }
    assert_eq!(f.len() as u64, v.file_len());
    f
}

struct Note {
    name: Vec<u8>,
    n_type: u32,
    desc: Vec<u8>,
}

/// Notes parsed by hand from the PT_NOTE (goblin's parser is checked against this too).
fn notes(f: &[u8], elf: &Elf<'_>) -> Vec<Note> {
    let ph = elf
        .program_headers
        .iter()
        .find(|p| p.p_type == PT_NOTE)
        .unwrap();
    let mut at = ph.p_offset as usize;
    let end = at + ph.p_filesz as usize;
    let word = |o: usize| u32::from_le_bytes(f[o..o + 4].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    while at < end {
        let (namesz, descsz, n_type) = (word(at), word(at + 4), word(at + 8) as u32);
        let name = f[at + 12..at + 12 + namesz].to_vec();
        let d = at + 12 + namesz.next_multiple_of(4);
        out.push(Note {
            name,
            n_type,
            desc: f[d..d + descsz].to_vec(),
        });
        at = d + descsz.next_multiple_of(4);
    }
    assert_eq!(at, end);
    out
}

fn sample<'a>(mfns: &'a mut [u64], cpus: &'a [CpuState], info: &'a [u8]) -> Vmcore<'a> {
    let frames = Frames::from_unsorted(mfns).unwrap();
    let fll = frames.mfns().next().unwrap();
    let notes = Notes {
        cpus,
        vmcoreinfo: info,
        xen: CrashXenInfo::guest(4, 17, fll),
    };
    Vmcore::new(frames, notes).unwrap()
}

#[test]
fn header_parses_as_an_x86_64_core_with_runs_and_notes() {
    let mut mfns = vec![0x2001, 0x100, 0x101, 0x102, 0x2000, 0x500, 0x101];
    let c = cpus(2);
    let v = sample(&mut mfns, &c, INFO);
    assert_eq!(v.frames().duplicates(), 1);
    let f = file(&v, 100);
    let elf = Elf::parse(&f).expect("goblin parses the vmcore");
    assert_eq!(elf.header.e_type, goblin::elf::header::ET_CORE);
    assert_eq!(elf.header.e_machine, goblin::elf::header::EM_X86_64);
    assert!(elf.is_64 && elf.little_endian);
    let loads: Vec<_> = elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .map(|p| (p.p_paddr, p.p_filesz, p.p_memsz, p.p_vaddr, p.p_offset))
        .collect();
    let d = v.header_len();
    assert_eq!(d % 4096, 0);
    assert_eq!(
        loads,
        [
            (0x100 << 12, 3 * 4096, 3 * 4096, 0, d),
            (0x500 << 12, 4096, 4096, 0, d + 3 * 4096),
            (0x2000 << 12, 2 * 4096, 2 * 4096, 0, d + 4 * 4096),
        ]
    );
    // Each PT_LOAD's bytes are the frames it names.
    for (paddr, size, _, _, off) in loads {
        for p in 0..size / 4096 {
            let at = (off + p * 4096) as usize;
            let word = u64::from_le_bytes(f[at..at + 8].try_into().unwrap());
            assert_eq!(word, (paddr >> 12) + p);
        }
    }
    assert_eq!(elf.header.e_phnum, 4);
}

#[test]
fn notes_are_prstatus_per_cpu_vmcoreinfo_and_xen_crash_info() {
    let mut mfns = vec![7, 8, 9, 30];
    let c = cpus(3);
    let v = sample(&mut mfns, &c, INFO);
    let f = file(&v, 4096);
    let elf = Elf::parse(&f).unwrap();
    let ns = notes(&f, &elf);
    assert_eq!(ns.len(), 5);
    for (i, n) in ns[..3].iter().enumerate() {
        assert_eq!(n.name, b"CORE\0");
        assert_eq!(n.n_type, NT_PRSTATUS);
        assert_eq!(n.desc.len(), 336);
        let word = |o: usize| u64::from_le_bytes(n.desc[o..o + 8].try_into().unwrap());
        assert_eq!(
            i32::from_le_bytes(n.desc[32..36].try_into().unwrap()),
            100 + i as i32
        );
        // pr_reg at 112: r15 first, rax 11th, orig_ax, rip 17th, sp 20th, gs last.
        assert_eq!(word(112), i as u64);
        assert_eq!(word(112 + 10 * 8), i as u64 + 10);
        assert_eq!(word(112 + 15 * 8), !0);
        assert_eq!(word(112 + 16 * 8), 0xffff_ffff_8100_0000 + i as u64);
        assert_eq!(word(112 + 17 * 8), 0xe033);
        assert_eq!(word(112 + 19 * 8), 0xffff_c900_0000_0000 + i as u64);
        assert_eq!(word(112 + 26 * 8), i as u64 + 26);
    }
    assert_eq!(ns[3].name, b"VMCOREINFO\0");
    assert_eq!(ns[3].n_type, 0);
    assert_eq!(ns[3].desc, INFO);
    assert_eq!(ns[4].name, b"Xen\0");
    assert_eq!(ns[4].n_type, 0x0100_0001);
    let words: Vec<u64> = ns[4]
        .desc
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(words, [4, 17, 0, 0, 0, 0, 0, 0, 0, 7]);
    // goblin's own note iterator agrees.
    let goblin_notes: Vec<_> = elf
        .iter_note_headers(&f)
        .unwrap()
        .map(|n| n.unwrap())
        .map(|n| (n.name.to_string(), n.n_type, n.desc.len()))
        .collect();
    assert_eq!(goblin_notes.len(), 5);
    assert_eq!(goblin_notes[3], (String::from("VMCOREINFO"), 0, INFO.len()));
    assert_eq!(goblin_notes[4], (String::from("Xen"), 0x0100_0001, 80));
}

#[test]
fn empty_vmcoreinfo_leaves_the_note_out() {
    let mut mfns = vec![5];
    let c = cpus(1);
    let v = sample(&mut mfns, &c, b"");
    let f = file(&v, 7);
    let elf = Elf::parse(&f).unwrap();
    let names: Vec<_> = notes(&f, &elf).into_iter().map(|n| n.name).collect();
    assert_eq!(names, [b"CORE\0".to_vec(), b"Xen\0".to_vec()]);
}

#[test]
fn bad_inputs_are_named() {
    let c = cpus(1);
    assert_eq!(Frames::from_unsorted(&mut []).unwrap_err(), Error::NoMemory);
    assert_eq!(
        Frames::from_unsorted(&mut [1, MAX_MFN + 1]).unwrap_err(),
        Error::MfnTooLarge { mfn: MAX_MFN + 1 }
    );
    // Every other frame: one run each, one more than e_phnum can count.
    let mut sparse: Vec<u64> = (0..=MAX_RUNS as u64).map(|i| 2 * i).collect();
    assert_eq!(
        Frames::from_unsorted(&mut sparse).unwrap_err(),
        Error::TooManyRuns {
            runs: MAX_RUNS + 1,
            max: MAX_RUNS
        }
    );
    let mut mfns = [3u64, 4];
    let frames = Frames::from_unsorted(&mut mfns).unwrap();
    let notes = |cpus, info, fll| Notes {
        cpus,
        vmcoreinfo: info,
        xen: CrashXenInfo::guest(4, 17, fll),
    };
    let err = |n| Vmcore::new(frames, n).unwrap_err();
    assert_eq!(err(notes(&[], INFO, 3)), Error::NoCpus);
    let many = vec![CpuState::default(); MAX_CPUS + 1];
    assert_eq!(
        err(notes(&many, INFO, 3)),
        Error::TooManyCpus {
            cpus: MAX_CPUS + 1,
            max: MAX_CPUS
        }
    );
    let big = vec![b'x'; MAX_VMCOREINFO + 1];
    assert!(matches!(
        err(notes(&c, &big, 3)),
        Error::VmcoreinfoTooLarge { .. }
    ));
    assert_eq!(
        err(notes(&c, INFO, 9)),
        Error::FrameListListNotDumped { mfn: 9 }
    );
    let mut scratch = [0u64; 2];
    assert_eq!(
        Frames::from_p2m([1, 2, 3], &mut scratch).unwrap_err(),
        Error::ScratchTooSmall { capacity: 2 }
    );
}

#[test]
fn from_p2m_skips_invalid_identity_and_foreign_entries() {
    let mut scratch = [0u64; 8];
    let p2m = [10, p2m::INVALID_ENTRY, 12, 1 << 62 | 13, 1 << 63 | 14, 11];
    let frames = Frames::from_p2m(p2m, &mut scratch).unwrap();
    assert!(frames.mfns().eq([10, 11, 12]));
    assert_eq!(frames.run_count(), 1);
    assert_eq!(frames.first_missing(&[12, 10]), None);
    assert_eq!(frames.first_missing(&[11, 13, 14]), Some(13));
}

#[test]
fn frame_list_names_leaves_then_the_missing_leaf_to_512_gib() {
    let leaves: Vec<u64> = (1..=513).map(|i| 0x1000 + i).collect();
    let fl = FrameList::new(&leaves, 0x9000).unwrap();
    assert_eq!(fl.frame_list_pages(), 2);
    assert_eq!(fl.leaves(), 513);
    assert_eq!(p2m::own_pages_for(513), 5);
    let mut page = [0u64; p2m::ENTRIES];
    fl.frame_list_page(1, &mut page).unwrap();
    assert_eq!(page[0], 0x1000 + 513);
    assert!(page[1..].iter().all(|&w| w == 0x9000));
    fl.frame_list_page(0, &mut page).unwrap();
    assert_eq!(&page[..], &leaves[..512]);
    fl.missing_frame_list_page(&mut page);
    assert!(page.iter().all(|&w| w == 0x9000));
    fl.frame_list_list_page(&[77, 78], 0x9001, &mut page)
        .unwrap();
    assert_eq!(&page[..3], [77, 78, 0x9001]);
    assert!(page[2..].iter().all(|&w| w == 0x9001));
    p2m::missing_leaf_page(&mut page);
    assert!(page.iter().all(|&w| w == p2m::INVALID_ENTRY));
    assert_eq!(p2m::COVERED_PFNS, 1 << 27);
}

#[test]
fn frame_list_refusals_are_named() {
    let leaves: Vec<u64> = (1..=513).map(|i| 0x1000 + i).collect();
    let fl = FrameList::new(&leaves, 0x9000).unwrap();
    let mut page = [0u64; p2m::ENTRIES];
    assert_eq!(
        fl.frame_list_page(2, &mut page).unwrap_err(),
        Error::FrameListIndex { index: 2, pages: 2 }
    );
    assert_eq!(
        fl.frame_list_list_page(&[77], 0x9001, &mut page)
            .unwrap_err(),
        Error::FrameListCount {
            given: 1,
            needed: 2
        }
    );
    assert_eq!(
        fl.frame_list_list_page(&[77, 0], 0x9001, &mut page)
            .unwrap_err(),
        Error::ZeroMfnInFrameList { index: 1 }
    );
    assert_eq!(
        fl.frame_list_list_page(&[77, 78], 0, &mut page)
            .unwrap_err(),
        Error::SharedPageMfn {
            page: "missing frame-list page",
            mfn: 0
        }
    );
    assert_eq!(
        FrameList::new(&[5, 0], 0x9000).unwrap_err(),
        Error::ZeroMfnInFrameList { index: 1 }
    );
    assert_eq!(
        FrameList::new(&[5], MAX_MFN + 1).unwrap_err(),
        Error::SharedPageMfn {
            page: "missing leaf",
            mfn: MAX_MFN + 1
        }
    );
    assert_eq!(FrameList::new(&[], 0x9000).unwrap_err(), Error::NoP2mLeaves);
    let too_many = vec![1u64; p2m::MAX_LEAVES + 1];
    assert!(matches!(
        FrameList::new(&too_many, 0x9000).unwrap_err(),
        Error::TooManyP2mLeaves { .. }
    ));
    let e = Error::SharedPageMfn {
        page: "missing leaf",
        mfn: 0,
    };
    assert_eq!(
        e.to_string(),
        "the missing leaf's MFN 0x0 is 0 or past 52 bits"
    );
}

#[test]
fn leaf_pages_pad_with_invalid_entries() {
    let p2m: Vec<u64> = (0..600).collect();
    assert_eq!(p2m::leaf_pages_for(600), 2);
    let mut page = [0u64; p2m::ENTRIES];
    p2m::leaf_page(&p2m, 1, &mut page).unwrap();
    assert_eq!(page[0], 512);
    assert_eq!(page[87], 599);
    assert!(page[88..].iter().all(|&w| w == p2m::INVALID_ENTRY));
    assert!(p2m::leaf_page(&p2m, 2, &mut page).is_err());
    let mut bytes = [0u8; 4096];
    p2m::page_bytes(&page, &mut bytes);
    assert_eq!(bytes[8..16], 513u64.to_le_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any chunk size gives the same header; runs cover exactly the unique MFNs in order.
    #[test]
    fn streaming_and_runs_agree(
        mut mfns in proptest::collection::vec(0u64..4096, 1..300),
        chunk in 1usize..5000,
        ncpus in 1usize..5,
    ) {
        let c = cpus(ncpus);
        let mut sorted = mfns.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let v = sample(&mut mfns, &c, INFO);
        let whole = header(&v, 1 << 16);
        prop_assert_eq!(&header(&v, chunk), &whole);
        let elf = Elf::parse(&whole).unwrap();
        let mut covered = Vec::new();
        let mut next_offset = v.header_len();
        for p in elf.program_headers.iter().filter(|p| p.p_type == PT_LOAD) {
            prop_assert_eq!(p.p_offset, next_offset);
            next_offset += p.p_filesz;
            covered.extend((0..p.p_filesz / 4096).map(|i| (p.p_paddr >> 12) + i));
        }
        prop_assert_eq!(next_offset, v.file_len());
        prop_assert_eq!(&covered, &sorted);
        let pages: Vec<u64> = v.pages().map(|s| s.mfn).collect();
        prop_assert_eq!(&pages, &sorted);
    }
}

#[test]
fn registers_round_trip_through_linux_word_order() {
    let r = regs(7);
    assert_eq!(UserRegs::from_words(r.words()), r);
    let mut w = [0u64; 27];
    w[16] = 0xffff_ffff_8100_0000; // rip
    w[19] = 0xffff_c900_0000_1000; // sp
    let r = UserRegs::from_words(w);
    assert_eq!((r.rip, r.sp, r.r15), (w[16], w[19], 0));
}
