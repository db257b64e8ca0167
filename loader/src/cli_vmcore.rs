//! `pvkexec vmcore --disk DEV -o FILE`: after a kdump, the capture kernel has written the
//! vmcore (an ELF core file) from sector 0 of the dump disk it was told (`pvkexec.dump=`);
//! this cuts it out: the file ends where its last program header's data ends.

use crate::cli_common::{CliError, EXIT_BAD_INPUT};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

const ELF_HEADER: usize = 64;
const PHDR_SIZE: u64 = 56;

fn bad(disk: &Path, why: impl std::fmt::Display) -> CliError {
    CliError {
        message: format!("{}: {why}", disk.display()),
        code: EXIT_BAD_INPUT,
    }
}

/// The vmcore's length: the end of the furthest program header's data, checked against the
/// disk's size.
pub fn vmcore_len(disk: &Path, f: &mut (impl Read + Seek), disk_len: u64) -> Result<u64, CliError> {
    let mut eh = [0u8; ELF_HEADER];
    f.read_exact(&mut eh)
        .map_err(|e| bad(disk, format!("reading the ELF header: {e}")))?;
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || u16::from_le_bytes([eh[16], eh[17]]) != 4 {
        return Err(bad(
            disk,
            "no ELF64 core file at sector 0: the capture kernel wrote no vmcore here",
        ));
    }
    let word = |r: std::ops::Range<usize>| {
        let mut b = [0u8; 8];
        b[..r.len()].copy_from_slice(&eh[r]);
        u64::from_le_bytes(b)
    };
    let (phoff, phentsize, phnum) = (word(32..40), word(54..56), word(56..58));
    if phentsize != PHDR_SIZE || phnum == 0 {
        return Err(bad(
            disk,
            format!("ELF program headers of {phentsize} bytes x {phnum}"),
        ));
    }
    let table = phnum * PHDR_SIZE;
    if phoff.checked_add(table).is_none_or(|e| e > disk_len) {
        return Err(bad(disk, "the program headers lie past the disk's end"));
    }
    let mut ph = vec![0u8; table as usize];
    f.seek(SeekFrom::Start(phoff))
        .and_then(|_| f.read_exact(&mut ph))
        .map_err(|e| bad(disk, format!("reading {phnum} program headers: {e}")))?;
    let mut end = phoff + table;
    for (i, p) in ph.chunks_exact(PHDR_SIZE as usize).enumerate() {
        let field = |at: usize| u64::from_le_bytes(p[at..at + 8].try_into().unwrap_or_default());
        let data_end = field(8)
            .checked_add(field(32))
            .ok_or_else(|| bad(disk, format!("program header {i}: offset + size overflows")))?;
        end = end.max(data_end);
    }
    if end > disk_len {
        return Err(bad(
            disk,
            format!("the vmcore reaches byte {end}, past the disk's {disk_len}: it was cut short"),
        ));
    }
    Ok(end)
}

/// `pvkexec vmcore --disk DISK -o OUT`.
pub fn vmcore(disk: &Path, out: &Path) -> Result<String, CliError> {
    let mut f = File::open(disk).map_err(|e| bad(disk, format!("cannot open: {e}")))?;
    let disk_len = f
        .seek(SeekFrom::End(0))
        .map_err(|e| bad(disk, format!("cannot find its size: {e}")))?;
    f.seek(SeekFrom::Start(0))
        .map_err(|e| bad(disk, format!("cannot seek: {e}")))?;
    let len = vmcore_len(disk, &mut f, disk_len)?;
    f.seek(SeekFrom::Start(0))
        .map_err(|e| bad(disk, format!("cannot seek: {e}")))?;
    let refused = |e: std::io::Error| CliError::refused(format!("{}: {e}", out.display()));
    let mut o = File::create(out).map_err(refused)?;
    let copied = std::io::copy(&mut f.take(len), &mut o).map_err(refused)?;
    o.flush().map_err(refused)?;
    if copied != len {
        return Err(bad(
            disk,
            format!("read {copied} of the vmcore's {len} bytes"),
        ));
    }
    Ok(format!(
        "vmcore: {len} bytes from {} written to {}\n",
        disk.display(),
        out.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn core(phdrs: &[(u64, u64)]) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[16] = 4;
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54] = 56;
        b[56] = phdrs.len() as u8;
        for (i, &(off, size)) in phdrs.iter().enumerate() {
            let at = 64 + 56 * i;
            b[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            b[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        }
        b
    }

    fn len(b: &[u8]) -> Result<u64, CliError> {
        vmcore_len(Path::new("d"), &mut Cursor::new(b), b.len() as u64)
    }

    #[test]
    fn the_core_ends_with_its_furthest_data() {
        assert_eq!(len(&core(&[(4096, 100), (200, 10)])).unwrap(), 4196);
        assert_eq!(len(&core(&[(4096, 4096)])).unwrap(), 8192);
    }

    #[test]
    fn what_is_no_whole_core_is_named() {
        let e = len(&[0u8; 8192]).unwrap_err();
        assert!(e.message.contains("no ELF64 core file"), "{}", e.message);
        let e = len(&core(&[(4096, 8192)])).unwrap_err();
        assert!(e.message.contains("cut short"), "{}", e.message);
        let e = len(&core(&[(u64::MAX, 1)])).unwrap_err();
        assert!(e.message.contains("overflows"), "{}", e.message);
        let mut b = core(&[(4096, 1)]);
        b[56] = 0;
        assert!(len(&b).unwrap_err().message.contains("x 0"));
        assert!(len(&b[..10]).is_err());
    }
}
