//! The crash kernel's ELF core header, parsed back by goblin as Linux's vmcore code reads it.

extern crate std;

use crate::elfcorehdr::{self, OldRun, RunJoiner};
use crate::{CpuState, CrashXenInfo, Notes, UserRegs};
use goblin::elf::Elf;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

fn joined(frames: &[(u64, u64)]) -> Vec<OldRun> {
    let mut j = RunJoiner::new();
    let mut out: Vec<OldRun> = frames.iter().filter_map(|&(p, m)| j.push(p, m)).collect();
    out.extend(j.finish());
    out
}

#[test]
fn frames_join_where_pfn_and_mfn_both_follow() {
    let runs = joined(&[(10, 100), (11, 101), (12, 200), (14, 201), (15, 202)]);
    assert_eq!(
        runs,
        [
            OldRun {
                addr: 10 << 12,
                mfn: 100,
                pages: 2
            },
            OldRun {
                addr: 12 << 12,
                mfn: 200,
                pages: 1
            },
            OldRun {
                addr: 14 << 12,
                mfn: 201,
                pages: 2
            },
        ]
    );
    assert!(joined(&[]).is_empty());
}

#[test]
fn header_and_notes_parse_with_read_addresses_as_offsets() {
    let runs = joined(&[(0x9000, 0x5000), (0x9001, 0x5001), (0x9100, 0x77)]);
    let cpus = [
        CpuState {
            pid: 7,
            regs: UserRegs::from_words([3; 27]),
        },
        CpuState {
            pid: 0,
            regs: UserRegs::from_words([0; 27]),
        },
    ];
    let notes = Notes {
        cpus: &cpus,
        vmcoreinfo: b"OSRELEASE=6.1.0\nPAGESIZE=4096\n",
        xen: CrashXenInfo::guest(4, 17, 0x5001),
    };
    let notes_at = 0x20_0000;
    let mut file = vec![0u8; notes_at as usize];
    file[..64].copy_from_slice(&elfcorehdr::ehdr(runs.len()).unwrap());
    let mut at = 64;
    let mut put = |b: &[u8]| {
        file[at..at + b.len()].copy_from_slice(b);
        at += b.len();
    };
    let len = elfcorehdr::notes_len(&notes);
    put(&elfcorehdr::note_phdr(notes_at, len));
    for r in &runs {
        put(&elfcorehdr::load_phdr(r));
    }
    assert_eq!(at as u64, elfcorehdr::headers_len(runs.len()));
    let wrote = elfcorehdr::write_notes(&notes, &mut |b| file.extend_from_slice(b)).unwrap();
    assert_eq!(wrote, len);
    assert!(len <= elfcorehdr::notes_len_for(2, notes.vmcoreinfo.len()));

    let elf = Elf::parse(&file).unwrap();
    assert_eq!(elf.header.e_type, goblin::elf::header::ET_CORE);
    assert_eq!(elf.program_headers.len(), 3);
    let note = &elf.program_headers[0];
    assert_eq!(
        (note.p_type, note.p_offset, note.p_filesz),
        (4, notes_at, len)
    );
    let l = &elf.program_headers[1];
    assert_eq!(
        (l.p_type, l.p_offset, l.p_paddr, l.p_filesz),
        (1, 0x9000 << 12, 0x5000 << 12, 0x2000)
    );
    let l = &elf.program_headers[2];
    assert_eq!(
        (l.p_offset, l.p_paddr, l.p_memsz),
        (0x9100 << 12, 0x77 << 12, 0x1000)
    );
    // The notes where the PT_NOTE says (here: at its address in this buffer).
    let names: Vec<(String, u32)> = elf
        .iter_note_headers(&file)
        .unwrap()
        .map(|n| n.unwrap())
        .map(|n| (n.name.to_string(), n.n_type))
        .collect();
    assert_eq!(
        names,
        [
            ("CORE".to_string(), 1),
            ("CORE".to_string(), 1),
            ("VMCOREINFO".to_string(), 0),
            ("Xen".to_string(), 0x0100_0001)
        ]
    );
}

#[test]
fn no_cpu_and_too_many_loads_are_refused() {
    let notes = Notes {
        cpus: &[],
        vmcoreinfo: b"",
        xen: CrashXenInfo::default(),
    };
    assert_eq!(
        elfcorehdr::write_notes(&notes, &mut |_| {}),
        Err(crate::Error::NoCpus)
    );
    assert!(elfcorehdr::ehdr(crate::MAX_RUNS + 1).is_err());
    assert!(elfcorehdr::ehdr(crate::MAX_RUNS).is_ok());
}
