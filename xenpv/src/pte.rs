//! x86_64 page-table entries as a PV guest writes them: the address field holds a machine
//! frame number (MFN), and Xen accepts only the flag bits its validation allows
//! (`xen/arch/x86/mm.c`: `base_disallow_mask`, `l1_disallow_mask`;
//! `xen/arch/x86/include/asm/x86_64/page.h`).

/// Present.
pub const P: u64 = 1 << 0;
/// Writable.
pub const RW: u64 = 1 << 1;
/// User accessible (Xen sets it itself on validated upper levels).
pub const US: u64 = 1 << 2;
pub const PWT: u64 = 1 << 3;
pub const PCD: u64 = 1 << 4;
/// Accessed.
pub const A: u64 = 1 << 5;
/// Dirty.
pub const D: u64 = 1 << 6;
/// Large page at L2/L3 (Xen refuses it from PV guests), PAT at L1.
pub const PSE: u64 = 1 << 7;
pub const G: u64 = 1 << 8;
/// No-execute.
pub const NX: u64 = 1 << 63;
/// Address bits 12..51.
pub const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Flags of the upper levels Xen's builders write (`P|RW|A|D|US`).
pub const UPPER_FLAGS: u64 = P | RW | A | D | US;
/// Flags of the builders' L1 entries for ordinary pages (`P|RW|A`).
pub const L1_FLAGS: u64 = P | RW | A;
/// Flags of the builders' L1 entries for page-table frames (read-only).
pub const L1_FLAGS_RO: u64 = P | A;

/// Builds an entry from a machine frame number and flags.
pub const fn make(mfn: u64, flags: u64) -> u64 {
    ((mfn << 12) & ADDR_MASK) | flags
}

/// The machine frame number an entry points at.
pub const fn mfn(entry: u64) -> u64 {
    (entry & ADDR_MASK) >> 12
}

/// Whether the entry is present.
pub const fn present(entry: u64) -> bool {
    entry & P != 0
}

/// Index of `va` in the table of `level` (1 = L1 .. 4 = L4).
pub const fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1FF) as usize
}

/// Whether a virtual address is canonical for 48-bit paging.
pub const fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_and_frames() {
        let va = 0xFFFF_FFFF_8020_3000u64;
        assert_eq!(index(va, 4), 511);
        assert_eq!(index(va, 3), 510);
        assert_eq!(index(va, 2), 1);
        assert_eq!(index(va, 1), 3);
        let e = make(0x1234, UPPER_FLAGS | NX);
        assert_eq!(mfn(e), 0x1234);
        assert!(present(e));
        assert!(is_canonical(va));
        assert!(!is_canonical(0x0000_8000_0000_0000));
    }
}
