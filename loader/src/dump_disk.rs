//! The dump disk a crash kernel is told (`pvkexec.dump=xvdX` or a vbd number), checked when
//! the crash kernel is loaded rather than found wrong at the crash: the capture kernel
//! overwrites it from sector 0 with the whole vmcore. Refused by name: a disk this domain
//! does not have, one too small for the dump, one mounted or held (device mapper, md, swap),
//! and one that holds a file system, partition table or other known signature (`--force`
//! takes the last, never a disk in use).

use std::fmt;
use std::path::{Path, PathBuf};

/// Linux's block major for Xen virtual disks: vbd number = 202 << 8 | 16 * index.
const XVD_MAJOR: u64 = 202;
const PAGE: u64 = 4096;
/// The vmcore's headers and notes: ELF and program headers, one PRSTATUS per CPU, VMCOREINFO,
/// the Xen note; bounded well above what the capture kernel writes.
const HEADER_BOUND: u64 = 4 << 20;

/// Why a dump disk is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Unfit {
    /// `pvkexec.dump=` names no disk of the form the capture kernel takes.
    BadName(String),
    /// No such block device in this domain.
    Missing {
        name: String,
        dev: PathBuf,
    },
    TooSmall {
        name: String,
        have: u64,
        need: u64,
    },
    /// Mounted (or a partition of it is), in /proc/self/mountinfo.
    Mounted {
        name: String,
        at: String,
    },
    /// In use as swap, or held by device mapper or md.
    Held {
        name: String,
        by: String,
    },
    /// Holds a known signature; `--force` overrides.
    HoldsData {
        name: String,
        what: &'static str,
    },
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: &u64| b.div_ceil(1 << 20);
        match self {
            Unfit::BadName(s) => write!(
                f,
                "pvkexec.dump={s}: name the dump disk as xvdX (or its vbd number)"
            ),
            Unfit::Missing { name, dev } => write!(
                f,
                "dump disk {name}: {} does not exist in this domain (pvkexec.dump= names a disk \
                 of this domU)",
                dev.display()
            ),
            Unfit::TooSmall { name, have, need } => write!(
                f,
                "dump disk {name}: too small: {} MiB, and a dump of this domain needs at least \
                 {} MiB",
                mib(have),
                mib(need)
            ),
            Unfit::Mounted { name, at } => write!(
                f,
                "dump disk {name}: mounted at {at}: a dump would overwrite it (not even with \
                 --force)"
            ),
            Unfit::Held { name, by } => write!(
                f,
                "dump disk {name}: in use by {by}: a dump would overwrite it (not even with \
                 --force)"
            ),
            Unfit::HoldsData { name, what } => write!(
                f,
                "dump disk {name}: holds {what}: a dump would overwrite it (--force to use it \
                 anyway)"
            ),
        }
    }
}

/// The disk name `pvkexec.dump=` gives on `cmdline` (`None`: not given).
pub fn named_in(cmdline: &str) -> Option<&str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pvkexec.dump="))
}

/// What `pvkexec.dump_zero=` may say on `cmdline`: `keep` (the default: every frame written)
/// or `skip` (the capture kernel leaves runs of zero frames out of the vmcore;
/// docs/vmcore.md). Anything else is refused when the crash kernel is loaded rather than
/// found wrong at the crash (where the capture kernel writes every frame).
pub fn check_zero_option(cmdline: &str) -> Result<(), String> {
    match cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("pvkexec.dump_zero="))
        .find(|v| !matches!(*v, "keep" | "skip"))
    {
        None => Ok(()),
        Some(v) => Err(format!(
            "pvkexec.dump_zero={v}: say keep (every frame written, the default) or skip (runs \
             of zero frames left out of the vmcore)"
        )),
    }
}

/// `xvdX` for a name or vbd number the capture kernel takes.
pub fn device_name(given: &str) -> Result<String, Unfit> {
    let bad = || Unfit::BadName(given.to_string());
    if let Some(letter) = given.strip_prefix("xvd") {
        return match letter.as_bytes() {
            [c] if c.is_ascii_lowercase() => Ok(given.to_string()),
            _ => Err(bad()),
        };
    }
    let vbd: u64 = given.parse().map_err(|_| bad())?;
    let (major, minor) = (vbd >> 8, vbd & 0xff);
    if major != XVD_MAJOR || minor % 16 != 0 || minor / 16 >= 26 {
        return Err(bad());
    }
    Ok(format!("xvd{}", (b'a' + (minor / 16) as u8) as char))
}

/// Bytes a dump of a domain of `pages` pages (its P2M's length) takes at most: every page,
/// the P2M's own leaf pages and the headers.
pub fn dump_bytes(pages: u64) -> u64 {
    pages
        .saturating_add(pages.div_ceil(512))
        .saturating_mul(PAGE)
        .saturating_add(HEADER_BOUND)
}

/// What the system says about one disk, read by [`inspect`]; apart so the judgement is tested
/// without a disk.
#[derive(Debug, Default)]
pub struct Facts {
    pub exists: bool,
    pub bytes: u64,
    /// The first [`HEAD_BYTES`] of the disk.
    pub head: Vec<u8>,
    pub mountinfo: String,
    pub swaps: String,
    /// Entries of /sys/class/block/NAME/holders (and of its partitions').
    pub holders: Vec<String>,
}

/// Enough of the disk to see every signature [`signature`] knows.
pub const HEAD_BYTES: usize = 69 * 1024;

/// Reads the facts of `/dev/NAME` from /sys, /proc and the disk's first sectors.
pub fn inspect(name: &str) -> std::io::Result<Facts> {
    use std::io::Read;
    let dev = Path::new("/dev").join(name);
    let sys = Path::new("/sys/class/block").join(name);
    if !dev.exists() || !sys.exists() {
        return Ok(Facts::default());
    }
    let sectors: u64 = std::fs::read_to_string(sys.join("size"))?
        .trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut holders = Vec::new();
    let mut dirs = vec![sys.join("holders")];
    for e in std::fs::read_dir(&sys)?.flatten() {
        if e.file_name().to_string_lossy().starts_with(name) {
            dirs.push(e.path().join("holders"));
        }
    }
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(d) {
            holders.extend(
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    let mut head = Vec::with_capacity(HEAD_BYTES);
    std::fs::File::open(&dev)?
        .take(HEAD_BYTES as u64)
        .read_to_end(&mut head)?;
    Ok(Facts {
        exists: true,
        bytes: sectors.saturating_mul(512),
        head,
        mountinfo: std::fs::read_to_string("/proc/self/mountinfo")?,
        swaps: std::fs::read_to_string("/proc/swaps").unwrap_or_default(),
        holders,
    })
}

/// Judges one disk: `Ok` when a dump of `need` bytes may overwrite it.
pub fn judge(name: &str, f: &Facts, need: u64, force: bool) -> Result<(), Unfit> {
    let dev = format!("/dev/{name}");
    if !f.exists {
        return Err(Unfit::Missing {
            name: name.into(),
            dev: dev.into(),
        });
    }
    // The disk or one of its partitions (/dev/xvdb1).
    let is_ours = |src: &str| {
        src.strip_prefix(&dev)
            .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
    };
    for line in f.mountinfo.lines() {
        // Fields after " - ": fs type, mount source, super options.
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let source = right.split_whitespace().nth(1).unwrap_or("");
        if is_ours(source) {
            let at = left.split_whitespace().nth(4).unwrap_or("?");
            return Err(Unfit::Mounted {
                name: name.into(),
                at: at.into(),
            });
        }
    }
    for line in f.swaps.lines().skip(1) {
        if line.split_whitespace().next().is_some_and(is_ours) {
            return Err(Unfit::Held {
                name: name.into(),
                by: "swap".into(),
            });
        }
    }
    if let Some(h) = f.holders.first() {
        return Err(Unfit::Held {
            name: name.into(),
            by: h.clone(),
        });
    }
    if f.bytes < need {
        return Err(Unfit::TooSmall {
            name: name.into(),
            have: f.bytes,
            need,
        });
    }
    if let Some(what) = signature(&f.head) {
        if !force {
            return Err(Unfit::HoldsData {
                name: name.into(),
                what,
            });
        }
    }
    Ok(())
}

/// The first known signature in a disk's first bytes: file systems, swap, volume and
/// partition headers (the magic numbers blkid checks for these; blkid itself is not in every
/// domU). A vmcore left by an earlier crash is not one: the collection unit saves it first.
pub fn signature(head: &[u8]) -> Option<&'static str> {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    const SIGNATURES: &[(usize, &[u8], &str)] = &[
        (1080, &[0x53, 0xef], "an ext2/3/4 file system"),
        (0, b"XFSB", "an XFS file system"),
        (65600, b"_BHRfS_M", "a btrfs file system"),
        (4086, b"SWAPSPACE2", "a swap area"),
        (4086, b"SWAP-SPACE", "a swap area"),
        (0, b"LUKS\xba\xbe", "a LUKS header"),
        (512, b"LABELONE", "an LVM physical volume"),
        (512, b"EFI PART", "a GPT partition table"),
        (54, b"FAT", "a FAT file system"),
        (82, b"FAT32", "a FAT file system"),
        (32769, b"CD001", "an ISO 9660 file system"),
        (0x10040, b"ReIsEr", "a ReiserFS file system"),
        (1024, &[0x10, 0x20, 0xf5, 0xf2], "an F2FS file system"),
    ];
    for (off, magic, what) in SIGNATURES {
        if at(*off, magic) {
            return Some(what);
        }
    }
    // An MBR: the boot signature and at least one partition entry with a type.
    if at(510, &[0x55, 0xaa]) && (0..4).any(|i| head.get(446 + 16 * i + 4).is_some_and(|t| *t != 0))
    {
        return Some("an MBR partition table");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(bytes: u64) -> Facts {
        Facts {
            exists: true,
            bytes,
            head: vec![0; HEAD_BYTES],
            mountinfo: "22 1 202:0 / / rw,relatime shared:1 - ext4 /dev/xvda rw\n".into(),
            swaps: "Filename Type Size Used Priority\n".into(),
            holders: Vec::new(),
        }
    }

    #[test]
    fn names_and_vbd_numbers() {
        assert_eq!(named_in("a pvkexec.dump=xvdb b"), Some("xvdb"));
        assert_eq!(named_in("console=hvc0"), None);
        assert_eq!(device_name("xvdb").unwrap(), "xvdb");
        assert_eq!(device_name("51728").unwrap(), "xvdb");
        assert_eq!(device_name("51712").unwrap(), "xvda");
        for bad in ["sda", "xvd", "xvdB", "xvdbb", "51729", "2049", "-1", ""] {
            assert!(matches!(device_name(bad), Err(Unfit::BadName(_))), "{bad}");
        }
    }

    #[test]
    fn dump_zero_is_keep_or_skip() {
        for ok in [
            "",
            "pvkexec.dump=xvdb",
            "a pvkexec.dump_zero=skip",
            "pvkexec.dump_zero=keep",
        ] {
            assert_eq!(check_zero_option(ok), Ok(()), "{ok}");
        }
        for bad in [
            "pvkexec.dump_zero=",
            "pvkexec.dump_zero=yes",
            "pvkexec.dump_zero=skip pvkexec.dump_zero=Skip",
        ] {
            let e = check_zero_option(bad).unwrap_err();
            assert!(
                e.starts_with("pvkexec.dump_zero=") && e.contains("keep"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_blank_disk_large_enough_is_taken() {
        let need = dump_bytes(131072);
        assert!(judge("xvdb", &blank(need), need, false).is_ok());
    }

    #[test]
    fn each_unfit_disk_is_refused_by_name() {
        let need = dump_bytes(131072);
        let missing = judge("xvdz", &Facts::default(), need, true).unwrap_err();
        assert!(missing.to_string().contains("xvdz"), "{missing}");
        let small = judge("xvdc", &blank(32 << 20), need, true).unwrap_err();
        assert!(small.to_string().contains("too small: 32 MiB"), "{small}");

        let mut ext4 = blank(need);
        ext4.head[1080] = 0x53;
        ext4.head[1081] = 0xef;
        let e = judge("xvdb", &ext4, need, false).unwrap_err();
        assert!(e.to_string().contains("ext2/3/4"), "{e}");
        assert!(judge("xvdb", &ext4, need, true).is_ok(), "--force takes it");

        let mut mounted = ext4;
        mounted
            .mountinfo
            .push_str("40 22 202:16 / /mnt/dump rw - ext4 /dev/xvdb rw\n");
        let e = judge("xvdb", &mounted, need, true).unwrap_err();
        assert_eq!(
            e,
            Unfit::Mounted {
                name: "xvdb".into(),
                at: "/mnt/dump".into()
            }
        );
        assert!(e.to_string().contains("mounted at /mnt/dump"));

        let mut part = blank(need);
        part.mountinfo
            .push_str("41 22 202:17 / /srv rw - ext4 /dev/xvdb1 rw\n");
        assert!(matches!(
            judge("xvdb", &part, need, true),
            Err(Unfit::Mounted { .. })
        ));
        // xvdbb is another disk, not a partition of xvdb.
        let mut other = blank(need);
        other
            .mountinfo
            .push_str("41 22 202:17 / /srv rw - ext4 /dev/xvdbb rw\n");
        assert!(judge("xvdb", &other, need, false).is_ok());

        let mut swap = blank(need);
        swap.swaps.push_str("/dev/xvdb partition 1024 0 -2\n");
        assert!(matches!(
            judge("xvdb", &swap, need, true),
            Err(Unfit::Held { .. })
        ));
        let mut dm = blank(need);
        dm.holders.push("dm-0".into());
        let e = judge("xvdb", &dm, need, true).unwrap_err();
        assert!(e.to_string().contains("in use by dm-0"), "{e}");
    }

    #[test]
    fn signatures() {
        let mut h = vec![0u8; HEAD_BYTES];
        assert_eq!(signature(&h), None);
        h[510] = 0x55;
        h[511] = 0xaa;
        assert_eq!(signature(&h), None, "a boot signature without partitions");
        h[446 + 4] = 0x83;
        assert_eq!(signature(&h), Some("an MBR partition table"));
        let mut x = vec![0u8; HEAD_BYTES];
        x[..4].copy_from_slice(b"XFSB");
        assert_eq!(signature(&x), Some("an XFS file system"));
        let mut s = vec![0u8; HEAD_BYTES];
        s[4086..4096].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(signature(&s), Some("a swap area"));
        // An ELF vmcore from an earlier crash is not a file system.
        let mut core = vec![0u8; HEAD_BYTES];
        core[..4].copy_from_slice(b"\x7fELF");
        assert_eq!(signature(&core), None);
        // A short read (a tiny disk) is not out of bounds.
        assert_eq!(signature(&[0u8; 100]), None);
    }
}
