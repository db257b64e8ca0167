//! The embedded purgatory: a static PIE linked at 0 (built by `build.rs` from `purgatory/`),
//! placed by the loader at a page-aligned address of its choice. Placing it means flattening its
//! one PT_LOAD into a blob and applying its `R_X86_64_RELATIVE` relocations for that address;
//! any other relocation type is refused rather than guessed.

use goblin::elf::{program_header, Elf};
use thiserror::Error;

/// The purgatory ELF this loader was built with.
pub static PURGATORY_ELF: &[u8] = include_bytes!(env!("PVKEXEC_PURGATORY_ELF"));

const R_X86_64_RELATIVE: u32 = 8;

/// Why the purgatory ELF cannot be placed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PurgatoryError {
    #[error("purgatory ELF: {0}")]
    Elf(String),
    #[error("purgatory ELF: expected exactly one PT_LOAD, found {0}")]
    LoadCount(usize),
    #[error("purgatory ELF: PT_LOAD at {vaddr:#x} (linked at 0 expected) or past the file")]
    BadLoad { vaddr: u64 },
    #[error(
        "purgatory ELF: relocation {index} has type {kind}, only R_X86_64_RELATIVE is handled"
    )]
    RelocType { index: usize, kind: u32 },
    #[error("purgatory ELF: relocation {index} writes at {offset:#x}, outside the image")]
    RelocOutside { index: usize, offset: u64 },
    #[error("purgatory base {0:#x} is not page aligned")]
    Unaligned(u64),
}

/// The purgatory laid out for one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedPurgatory {
    /// Virtual address of byte 0 of `image`.
    pub base: u64,
    /// The loaded bytes (bss included as zeros), relocated for `base`.
    pub image: Vec<u8>,
    /// Entry point (absolute).
    pub entry: u64,
    /// Number of relocations applied.
    pub relocations: usize,
}

/// Flattens and relocates `elf_bytes` for `base`.
pub fn place(elf_bytes: &[u8], base: u64) -> Result<PlacedPurgatory, PurgatoryError> {
    if !base.is_multiple_of(4096) {
        return Err(PurgatoryError::Unaligned(base));
    }
    let elf = Elf::parse(elf_bytes).map_err(|e| PurgatoryError::Elf(e.to_string()))?;
    let loads: Vec<_> = elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == program_header::PT_LOAD)
        .collect();
    let [load] = loads.as_slice() else {
        return Err(PurgatoryError::LoadCount(loads.len()));
    };
    let file_end = load.p_offset.checked_add(load.p_filesz);
    if load.p_vaddr != 0
        || load.p_memsz < load.p_filesz
        || file_end.is_none_or(|end| end > elf_bytes.len() as u64)
    {
        return Err(PurgatoryError::BadLoad {
            vaddr: load.p_vaddr,
        });
    }
    let mut image = vec![0u8; load.p_memsz as usize];
    let start = load.p_offset as usize;
    image[..load.p_filesz as usize]
        .copy_from_slice(&elf_bytes[start..start + load.p_filesz as usize]);

    let relas = elf.dynrelas.iter().collect::<Vec<_>>();
    for (index, rela) in relas.iter().enumerate() {
        if rela.r_type != R_X86_64_RELATIVE {
            return Err(PurgatoryError::RelocType {
                index,
                kind: rela.r_type,
            });
        }
        let at = rela.r_offset as usize;
        let slot = image
            .get_mut(at..at.wrapping_add(8))
            .ok_or(PurgatoryError::RelocOutside {
                index,
                offset: rela.r_offset,
            })?;
        let value = base.wrapping_add(rela.r_addend.unwrap_or(0) as u64);
        slot.copy_from_slice(&value.to_le_bytes());
    }
    Ok(PlacedPurgatory {
        base,
        entry: base.wrapping_add(elf.entry),
        image,
        relocations: relas.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_purgatory_relocates_for_two_bases() {
        let a = place(PURGATORY_ELF, 0x1000_0000).unwrap();
        let b = place(PURGATORY_ELF, 0x2000_0000).unwrap();
        assert!(
            a.relocations > 0,
            "a static PIE carries RELATIVE relocations"
        );
        assert_eq!(a.image.len(), b.image.len());
        assert_eq!(a.entry - a.base, b.entry - b.base);
        // The images differ exactly in the relocated slots, by the base difference.
        let diffs = a.image.iter().zip(&b.image).filter(|(x, y)| x != y).count();
        assert!(diffs > 0 && diffs <= a.relocations * 8);
        assert_eq!(
            place(PURGATORY_ELF, 0x1234),
            Err(PurgatoryError::Unaligned(0x1234))
        );
        assert!(place(&PURGATORY_ELF[..100], 0).is_err());
    }
}
