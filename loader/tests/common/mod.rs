//! Kernel files for the loader's tests: Xen notes and small ELF64 PV kernels.
#![allow(dead_code)] // each test file uses its own part

/// The kernels' VIRT_BASE (Linux's).
pub const VIRT_BASE: u64 = 0xffff_ffff_8000_0000;

/// Appends a Xen ELF note of type `ty`.
pub fn note(out: &mut Vec<u8>, ty: u32, desc: &[u8]) {
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(b"Xen\0");
    out.extend_from_slice(desc);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A small ELF64 PV kernel: `loads` PT_LOADs of (paddr, filesz, memsz) and a PT_NOTE.
pub fn elf_with(loads: &[(u64, u64, u64)], notes: &[u8], entry: u64) -> Vec<u8> {
    let phnum = loads.len() + 1;
    let data_off = 64 + 56 * phnum as u64;
    let mut body = Vec::new();
    let mut phdrs = Vec::new();
    let mut off = data_off;
    for &(paddr, filesz, memsz) in loads {
        let mut ph = Vec::new();
        ph.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        ph.extend_from_slice(&7u32.to_le_bytes()); // RWX
        ph.extend_from_slice(&off.to_le_bytes());
        ph.extend_from_slice(&(VIRT_BASE + paddr).to_le_bytes());
        ph.extend_from_slice(&paddr.to_le_bytes());
        ph.extend_from_slice(&filesz.to_le_bytes());
        ph.extend_from_slice(&memsz.to_le_bytes());
        ph.extend_from_slice(&4096u64.to_le_bytes());
        phdrs.push(ph);
        body.extend((0..filesz).map(|i| (i * 7 + paddr) as u8));
        off += filesz;
    }
    let mut ph = Vec::new();
    ph.extend_from_slice(&4u32.to_le_bytes()); // PT_NOTE
    ph.extend_from_slice(&4u32.to_le_bytes());
    ph.extend_from_slice(&off.to_le_bytes());
    ph.extend_from_slice(&0u64.to_le_bytes());
    ph.extend_from_slice(&0u64.to_le_bytes());
    ph.extend_from_slice(&(notes.len() as u64).to_le_bytes());
    ph.extend_from_slice(&(notes.len() as u64).to_le_bytes());
    ph.extend_from_slice(&4u64.to_le_bytes());
    phdrs.push(ph);
    body.extend_from_slice(notes);

    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&62u16.to_le_bytes()); // x86-64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&entry.to_le_bytes());
    e.extend_from_slice(&64u64.to_le_bytes()); // phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // shoff
    e.extend_from_slice(&0u32.to_le_bytes());
    e.extend_from_slice(&64u16.to_le_bytes());
    e.extend_from_slice(&56u16.to_le_bytes());
    e.extend_from_slice(&(phnum as u16).to_le_bytes());
    e.extend_from_slice(&64u16.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    for ph in phdrs {
        e.extend_from_slice(&ph);
    }
    e.extend_from_slice(&body);
    e
}

/// The whole contents of the first segment of `kind` in a built image, zero-run pages as zeros
/// (the file leaves those out).
pub fn contents(image: &[u8], kind: pvhandoff::SegmentKind) -> Vec<u8> {
    use pvhandoff::zero::Piece;
    let view = pvhandoff::image::ImageView::parse(image).unwrap();
    let i = view
        .segments()
        .position(|s| s.kind == kind as u32)
        .expect("a segment of that kind");
    let mut out = Vec::new();
    for piece in view.pieces(i, 0, u64::MAX).unwrap() {
        match piece {
            Piece::Bytes(b) => out.extend_from_slice(b),
            Piece::Zeros(n) => out.resize(out.len() + n as usize, 0),
        }
    }
    assert_eq!(out.len() as u64, view.segment(i).len);
    out
}
