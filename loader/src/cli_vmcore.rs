//! `pvkexec vmcore --disk DEV -o FILE`: after a kdump, the capture kernel has written the
//! vmcore (an ELF core file) from sector 0 of the dump disk it was told (`pvkexec.dump=`);
//! this cuts it out: the file ends where its last program header's data ends. A disk with no
//! ELF core file at sector 0 holds no dump: exit status 4 ([`EXIT_NO_DUMP`]), told apart from a
//! dump that is damaged or a disk that cannot be read (3).

use crate::cli_common::{CliError, Output, EXIT_BAD_INPUT, EXIT_NO_DUMP};
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

fn no_dump(disk: &Path, why: &str) -> CliError {
    CliError {
        message: format!(
            "{}: no dump on this disk ({why}): the capture kernel wrote no vmcore here",
            disk.display()
        ),
        code: EXIT_NO_DUMP,
    }
}

/// The vmcore's length: the end of the furthest program header's data, checked against the
/// disk's size.
pub fn vmcore_len(disk: &Path, f: &mut (impl Read + Seek), disk_len: u64) -> Result<u64, CliError> {
    let mut eh = [0u8; ELF_HEADER];
    match f.read_exact(&mut eh) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(no_dump(disk, "shorter than an ELF header"))
        }
        Err(e) => return Err(bad(disk, format!("reading the ELF header: {e}"))),
    }
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || u16::from_le_bytes([eh[16], eh[17]]) != 4 {
        return Err(no_dump(disk, "no ELF64 core file at sector 0"));
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
pub fn vmcore(disk: &Path, out: &Path) -> Result<Output, CliError> {
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
    let copied = std::io::copy(&mut (&mut f).take(len), &mut o).map_err(refused)?;
    o.flush().map_err(refused)?;
    if copied != len {
        return Err(bad(
            disk,
            format!("read {copied} of the vmcore's {len} bytes"),
        ));
    }
    // On disk before anyone clears the dump disk's header; then neither copy is kept in the
    // page cache: a dump the size of the domain would otherwise fill it, and a crash kernel
    // loaded next needs its frames (4 MiB blocks the allocator then cannot find).
    o.sync_all().map_err(refused)?;
    drop_cached(&o);
    drop_cached(&f);
    Ok(format!(
        "vmcore: {len} bytes from {} written to {}\n",
        disk.display(),
        out.display()
    )
    .into())
}

/// Advises the kernel that `f`'s cached pages will not be read again (a hint: its failure
/// changes nothing but the page cache).
fn drop_cached(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads the descriptor number, which `f` keeps open.
    let _ = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
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
    fn no_dump_is_told_from_a_damaged_one_by_exit_code() {
        // No dump: zeroes, another ELF file, a disk shorter than a header: exit 4.
        let mut exec = core(&[(4096, 1)]);
        exec[16] = 2; // ET_EXEC
        for (disk, says) in [
            (vec![0u8; 8192], "no ELF64 core file"),
            (exec, "no ELF64 core file"),
            (vec![0x7f, b'E'], "shorter than an ELF header"),
            (Vec::new(), "shorter than an ELF header"),
        ] {
            let e = len(&disk).unwrap_err();
            assert_eq!(e.code, EXIT_NO_DUMP, "{}", e.message);
            assert!(
                e.message.contains("no dump on this disk") && e.message.contains(says),
                "{}",
                e.message
            );
        }
        // A dump that is there but damaged: exit 3, named.
        for (disk, says) in [
            (core(&[(4096, 8192)]), "cut short"),
            (core(&[(u64::MAX, 1)]), "overflows"),
        ] {
            let e = len(&disk).unwrap_err();
            assert_eq!(e.code, EXIT_BAD_INPUT, "{}", e.message);
            assert!(e.message.contains(says), "{}", e.message);
        }
        let mut b = core(&[(4096, 1)]);
        b[56] = 0;
        let e = len(&b).unwrap_err();
        assert!(e.message.contains("x 0") && e.code == EXIT_BAD_INPUT);
    }

    #[test]
    fn vmcore_writes_nothing_when_there_is_no_dump() {
        let dir = std::env::temp_dir().join(format!("pvkexec-vmcore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (disk, out) = (dir.join("disk"), dir.join("vmcore"));
        std::fs::write(&disk, vec![0u8; 4096]).unwrap();
        assert_eq!(vmcore(&disk, &out).unwrap_err().code, EXIT_NO_DUMP);
        assert!(!out.exists());
        std::fs::write(&disk, core(&[(4096, 100)])).unwrap();
        let done = vmcore(&disk, &out).unwrap();
        assert_eq!(done.code, 0);
        assert_eq!(std::fs::metadata(&out).unwrap().len(), 4196);
        let missing = vmcore(&dir.join("none"), &out).unwrap_err();
        assert_eq!(missing.code, EXIT_BAD_INPUT);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
