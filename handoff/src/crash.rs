//! The crash record (kernel side at panic -> capture kernel): what a crashed old kernel leaves
//! for the kernel that saves its memory (docs/kdump.md). One page of old memory, outside the
//! frames the crash kernel gets; its MFN is on the crash kernel's command line as
//! `pvkexec.crash=0x<mfn>`. The module (`kmod/panic.c`, `struct crash_record`) writes it
//! in its panic path; nothing in it is trusted before [`CrashRecord::check`] passes.

use xenpv::assert_layout;

/// `b"PVKXCRSH"` as a little-endian u64.
pub const CRASH_RECORD_MAGIC: u64 = u64::from_le_bytes(*b"PVKXCRSH");
pub const CRASH_RECORD_VERSION: u32 = 2;
/// CPUs the record has slots for (the purgatory parks as many).
pub const CRASH_MAX_CPUS: usize = crate::handoff::MAX_VCPUS as usize;
/// MFNs a page of the P2M directory holds (list pages and directory pages alike).
pub const DIR_PAGE_ENTRIES: usize = 512;
/// P2M pages one list page names: 512 x 512 PFNs, 1 GiB of the old domain.
pub const LIST_P2M_PAGES: u64 = DIR_PAGE_ENTRIES as u64;
/// List pages one directory page names (slots `0..511`); slot [`DIR_NEXT`] names the next
/// directory page (0 in the last). A chain of directory pages has no size limit: 511 GiB of
/// PFNs per directory page.
pub const DIR_LISTS: u64 = DIR_PAGE_ENTRIES as u64 - 1;
/// The directory page slot that names the next directory page.
pub const DIR_NEXT: usize = DIR_PAGE_ENTRIES - 1;
/// A page of the P2M directory (a list page or a directory page).
pub type DirPage = [u64; DIR_PAGE_ENTRIES];
/// Largest MFN a record may name (52-bit machine addresses).
pub const MAX_MFN: u64 = (1 << 40) - 1;
/// Bytes the record's SHA-256 covers (every field before the digest).
pub const CRASH_DIGESTED_BYTES: usize = 1976;
/// Largest VMCOREINFO note the record may name (Linux's is `VMCOREINFO_NOTE_SIZE`: a 4 KiB
/// text plus the note's header and name, 4132 bytes).
pub const MAX_VMCOREINFO_NOTE: u64 = 8192;
/// The command-line word that names the record's frame.
pub const CRASH_CMDLINE_KEY: &str = "pvkexec.crash";

/// [`CrashCpu::state`]: the CPU was not online at the panic.
pub const CPU_NONE: u32 = 0;
/// The CPU saved its own registers (the panicking CPU, or one that took the module's NMI).
pub const CPU_SAVED: u32 = 1;
/// The CPU did not answer the NMI: it was put down from outside, its registers are unknown.
pub const CPU_STOPPED: u32 = 2;

/// Registers in Linux's x86-64 `user_regs_struct` order (the order of `NT_PRSTATUS`'s
/// `pr_reg`): r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_ax rip cs
/// eflags rsp ss fs_base gs_base ds es fs gs.
pub const NR_REGS: usize = 27;
/// Index of `rip` and `rsp` in [`CrashCpu::regs`].
pub const REG_RIP: usize = 16;
pub const REG_RSP: usize = 19;

/// One CPU at the panic.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashCpu {
    pub vcpu: u32,
    pub state: u32,
    /// The task that ran there (`current->pid`; 0: the idle task or unknown).
    pub pid: u64,
    pub regs: [u64; NR_REGS],
}
assert_layout!(CrashCpu, 232; vcpu @ 0, state @ 4, pid @ 8, regs @ 16);

/// The record. Field meanings: docs/kdump.md, "The crash record".
///
/// **The P2M directory.** The record names the old P2M's pages (the pages of Linux's P2M
/// array, 512 entries each) through two levels of old memory the module allocated: *list
/// pages*, each holding the MFNs of 512 consecutive P2M pages (0 past the last), and
/// *directory pages*, a chain: slots `0..511` hold the MFNs of 511 consecutive list pages (0
/// past the last), slot [`DIR_NEXT`] the next directory page's MFN (0 in the last). The
/// directory is used for every domain size; its chain has no length limit (one directory
/// page per 511 GiB of PFNs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashRecord {
    pub magic: u64,
    pub version: u32,
    /// CPUs online at the panic.
    pub nr_cpus: u32,
    pub panic_cpu: u32,
    /// `(major << 16) | minor` of the hypervisor.
    pub xen_version: u32,
    /// Entries of the old P2M the dump covers: shared_info's `max_pfn` (Linux's
    /// `xen_p2m_last_pfn`), at most `xen_p2m_size`, which spans the whole virtual P2M area.
    pub p2m_len: u64,
    /// shared_info's `arch.max_pfn` as the old kernel left it.
    pub max_pfn: u64,
    /// shared_info's `arch.pfn_to_mfn_frame_list_list` as the old kernel left it (`!0`: the
    /// old kernel published none).
    pub frame_list_list: u64,
    /// Machine address and size of the old kernel's VMCOREINFO ELF note.
    pub vmcoreinfo_maddr: u64,
    pub vmcoreinfo_size: u64,
    /// MFN of the first directory page.
    pub p2m_dir: u64,
    /// Directory pages in the chain: `p2m_lists` divided by [`DIR_LISTS`], rounded up.
    pub p2m_dir_pages: u64,
    /// List pages the directory names (the module's, for the most PFNs the domain may reach;
    /// the dump uses those `p2m_len` needs).
    pub p2m_lists: u64,
    pub cpus: [CrashCpu; CRASH_MAX_CPUS],
    /// Xen system time (ns) when the panic path began.
    pub panic_time_ns: u64,
    pub _reserved: [u64; 3],
    /// SHA-256 of the first [`CRASH_DIGESTED_BYTES`] bytes.
    pub sha256: [u8; 32],
}
assert_layout!(CrashRecord, 2008; magic @ 0, version @ 8, nr_cpus @ 12, panic_cpu @ 16,
    xen_version @ 20, p2m_len @ 24, max_pfn @ 32, frame_list_list @ 40,
    vmcoreinfo_maddr @ 48, vmcoreinfo_size @ 56, p2m_dir @ 64, p2m_dir_pages @ 72,
    p2m_lists @ 80, cpus @ 88, panic_time_ns @ 1944, _reserved @ 1952, sha256 @ 1976);
const _: () = assert!(core::mem::offset_of!(CrashRecord, sha256) == CRASH_DIGESTED_BYTES);
// SAFETY: integers and byte arrays only, without gaps (offsets above; 232-byte CPU slots of
// u32, u32 and u64s; the digest ends at 2008).
unsafe impl xenpv::Pod for CrashRecord {}
// SAFETY: as above: two u32 then u64s, no padding.
unsafe impl xenpv::Pod for CrashCpu {}

/// Why a crash record is not trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    Short(usize),
    Magic(u64),
    Version(u32),
    Digest,
    Cpus(u32),
    PanicCpu(u32),
    /// `p2m_len` is 0, or needs more list pages than the record names.
    P2mLen {
        len: u64,
        lists: u64,
    },
    /// More (or fewer) list pages than the record's directory pages hold.
    Lists {
        lists: u64,
        dir_pages: u64,
    },
    /// The first directory page's MFN is 0 or past [`MAX_MFN`].
    Dir(u64),
    Vmcoreinfo(u64),
}

impl core::fmt::Display for RecordError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            RecordError::Short(n) => write!(
                f,
                "{n} bytes, a crash record has {}",
                core::mem::size_of::<CrashRecord>()
            ),
            RecordError::Magic(m) => write!(f, "magic {m:#x} is not PVKXCRSH"),
            RecordError::Version(v) => {
                write!(f, "version {v}, this reader knows {CRASH_RECORD_VERSION}")
            }
            RecordError::Digest => f.write_str("its SHA-256 does not match its contents"),
            RecordError::Cpus(n) => write!(f, "{n} CPUs, at most {CRASH_MAX_CPUS} and at least 1"),
            RecordError::PanicCpu(c) => write!(f, "panic CPU {c} is not one of its CPUs"),
            RecordError::P2mLen { len, lists } => write!(
                f,
                "a P2M of {len} entries does not fit its {lists} list pages \
                 ({LIST_P2M_PAGES} P2M pages each)"
            ),
            RecordError::Lists { lists, dir_pages } => write!(
                f,
                "{lists} list pages named through {dir_pages} directory pages, which hold \
                 {DIR_LISTS} each ({} needed)",
                lists.div_ceil(DIR_LISTS)
            ),
            RecordError::Dir(mfn) => write!(f, "directory page mfn {mfn:#x} is no frame"),
            RecordError::Vmcoreinfo(s) => {
                write!(
                    f,
                    "a VMCOREINFO note of {s} bytes (at most {MAX_VMCOREINFO_NOTE})"
                )
            }
        }
    }
}

impl CrashRecord {
    /// Reads and checks a record: magic, version, digest, then the bounds every later use
    /// relies on.
    pub fn read_checked(bytes: &[u8]) -> Result<CrashRecord, RecordError> {
        let r: CrashRecord = xenpv::Pod::read_from(bytes).ok_or(RecordError::Short(bytes.len()))?;
        r.check(&bytes[..CRASH_DIGESTED_BYTES])?;
        Ok(r)
    }

    fn check(&self, digested: &[u8]) -> Result<(), RecordError> {
        if self.magic != CRASH_RECORD_MAGIC {
            return Err(RecordError::Magic(self.magic));
        }
        if self.version != CRASH_RECORD_VERSION {
            return Err(RecordError::Version(self.version));
        }
        if crate::digest::sha256(digested) != self.sha256 {
            return Err(RecordError::Digest);
        }
        if self.nr_cpus == 0 || self.nr_cpus as usize > CRASH_MAX_CPUS {
            return Err(RecordError::Cpus(self.nr_cpus));
        }
        if self.panic_cpu >= self.nr_cpus {
            return Err(RecordError::PanicCpu(self.panic_cpu));
        }
        if self.p2m_len == 0 || self.lists_used() > self.p2m_lists {
            return Err(RecordError::P2mLen {
                len: self.p2m_len,
                lists: self.p2m_lists,
            });
        }
        if self.p2m_dir_pages != self.p2m_lists.div_ceil(DIR_LISTS) {
            return Err(RecordError::Lists {
                lists: self.p2m_lists,
                dir_pages: self.p2m_dir_pages,
            });
        }
        if self.p2m_dir == 0 || self.p2m_dir > MAX_MFN {
            return Err(RecordError::Dir(self.p2m_dir));
        }
        if self.vmcoreinfo_size > MAX_VMCOREINFO_NOTE {
            return Err(RecordError::Vmcoreinfo(self.vmcoreinfo_size));
        }
        Ok(())
    }

    /// Pages of the old P2M (512 entries each).
    pub fn p2m_pages(&self) -> u64 {
        self.p2m_len.div_ceil(512)
    }

    /// List pages that name the P2M's `p2m_len` entries (at most `p2m_lists`).
    pub fn lists_used(&self) -> u64 {
        self.p2m_pages().div_ceil(LIST_P2M_PAGES)
    }

    /// The CPUs online at the panic.
    pub fn cpus(&self) -> &[CrashCpu] {
        &self.cpus[..(self.nr_cpus as usize).min(CRASH_MAX_CPUS)]
    }

    /// The list pages [`CrashRecord::lists_used`] counts, in order, through the directory
    /// chain (a checked record's).
    pub fn list_pages(&self) -> ListPages {
        ListPages {
            next_dir: self.p2m_dir,
            dirs_read: 0,
            dir: [0; DIR_PAGE_ENTRIES],
            index: 0,
            count: self.lists_used(),
        }
    }
}

/// Why the directory walk stopped (`E`: the caller's error reading a page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirError<E> {
    /// A directory page could not be read.
    Read { mfn: u64, error: E },
    /// Directory page `dir` (0 the first) is named as 0, and list page `list` needs it.
    ChainEnds { dir: u64, list: u64 },
    /// List page `list` is named as `mfn`: 0, or past [`MAX_MFN`].
    ListMfn { list: u64, mfn: u64 },
}

impl<E: core::fmt::Display> core::fmt::Display for DirError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DirError::Read { mfn, error } => {
                write!(f, "reading directory page mfn {mfn:#x}: {error}")
            }
            DirError::ChainEnds { dir, list } => write!(
                f,
                "the chain ends before directory page {dir}, which list page {list} needs"
            ),
            DirError::ListMfn { list, mfn } => {
                write!(f, "list page {list} is named as mfn {mfn:#x}: no frame")
            }
        }
    }
}

/// A walk over the record's list pages: [`ListPages::next_mfn`] gives their MFNs in order,
/// reading one directory page at a time into its own 4 KiB (the caller's memory does not
/// grow with the domain).
pub struct ListPages {
    next_dir: u64,
    dirs_read: u64,
    dir: DirPage,
    index: u64,
    count: u64,
}

impl ListPages {
    /// List pages the walk gives.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Directory pages read so far.
    pub fn dirs_read(&self) -> u64 {
        self.dirs_read
    }

    /// The next list page's MFN (`None` after the last). `read` copies a frame of old memory
    /// (as little-endian u64s) into its second argument.
    pub fn next_mfn<E>(
        &mut self,
        mut read: impl FnMut(u64, &mut DirPage) -> Result<(), E>,
    ) -> Result<Option<u64>, DirError<E>> {
        if self.index == self.count {
            return Ok(None);
        }
        let slot = (self.index % DIR_LISTS) as usize;
        if slot == 0 {
            if self.next_dir == 0 {
                return Err(DirError::ChainEnds {
                    dir: self.dirs_read,
                    list: self.index,
                });
            }
            let mfn = self.next_dir;
            read(mfn, &mut self.dir).map_err(|error| DirError::Read { mfn, error })?;
            self.dirs_read += 1;
            self.next_dir = self.dir[DIR_NEXT];
        }
        let mfn = self.dir[slot];
        if mfn == 0 || mfn > MAX_MFN {
            return Err(DirError::ListMfn {
                list: self.index,
                mfn,
            });
        }
        self.index += 1;
        Ok(Some(mfn))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::collections::BTreeMap;
    use std::string::ToString;
    use std::vec::Vec;
    use xenpv::Pod;

    type Page = DirPage;
    const GIB_PFNS: u64 = 1 << 18;
    const FIRST_DIR: u64 = 0x800;
    const FIRST_LIST: u64 = 0x10_0000;

    /// A test's old memory: frames by MFN.
    #[derive(Default)]
    struct Memory(BTreeMap<u64, Page>);

    impl Memory {
        fn read(&self, mfn: u64, out: &mut Page) -> Result<(), &'static str> {
            *out = *self.0.get(&mfn).ok_or("no such frame")?;
            Ok(())
        }
    }

    /// The directory the module writes for `lists` list pages (MFNs `FIRST_LIST` on), in
    /// directory pages at `FIRST_DIR` on.
    fn directory(lists: u64) -> Memory {
        let mut mem = Memory::default();
        let dirs = lists.div_ceil(DIR_LISTS);
        for d in 0..dirs {
            let mut page = [0; DIR_PAGE_ENTRIES];
            for (slot, i) in (d * DIR_LISTS..lists.min((d + 1) * DIR_LISTS)).enumerate() {
                page[slot] = FIRST_LIST + i;
            }
            if d + 1 < dirs {
                page[DIR_NEXT] = FIRST_DIR + d + 1;
            }
            mem.0.insert(FIRST_DIR + d, page);
        }
        mem
    }

    /// A record of a domain of `len` PFNs whose directory names `lists` list pages.
    fn raw(len: u64, lists: u64) -> CrashRecord {
        let mut r = CrashRecord {
            magic: CRASH_RECORD_MAGIC,
            version: CRASH_RECORD_VERSION,
            nr_cpus: 2,
            panic_cpu: 1,
            xen_version: (4 << 16) | 17,
            p2m_len: len,
            max_pfn: len,
            frame_list_list: !0,
            vmcoreinfo_maddr: 0x1234_5000,
            vmcoreinfo_size: 4132,
            p2m_dir: FIRST_DIR,
            p2m_dir_pages: lists.div_ceil(DIR_LISTS),
            p2m_lists: lists,
            cpus: [CrashCpu {
                vcpu: 0,
                state: CPU_NONE,
                pid: 0,
                regs: [0; NR_REGS],
            }; CRASH_MAX_CPUS],
            panic_time_ns: 5,
            _reserved: [0; 3],
            sha256: [0; 32],
        };
        r.cpus[1].state = CPU_SAVED;
        r.cpus[1].regs[REG_RIP] = 0xffff_ffff_8100_0000;
        r
    }

    /// The record's bytes with its digest written.
    fn sealed(r: &CrashRecord) -> Vec<u8> {
        let mut b = r.as_bytes().to_vec();
        let d = crate::digest::sha256(&b[..CRASH_DIGESTED_BYTES]);
        b[CRASH_DIGESTED_BYTES..].copy_from_slice(&d);
        b
    }

    fn record() -> Vec<u8> {
        sealed(&raw(65536, 1))
    }

    fn refused(f: &dyn Fn(&mut CrashRecord)) -> RecordError {
        let mut r = raw(65536, 1);
        f(&mut r);
        CrashRecord::read_checked(&sealed(&r)).unwrap_err()
    }

    fn walk(r: &CrashRecord, mem: &Memory) -> Result<(Vec<u64>, u64), DirError<&'static str>> {
        let mut w = r.list_pages();
        let mut out = Vec::new();
        while let Some(m) = w.next_mfn(|mfn, page| mem.read(mfn, page))? {
            out.push(m);
        }
        Ok((out, w.dirs_read()))
    }

    #[test]
    fn a_sound_record_reads_back() {
        let b = record();
        let r = CrashRecord::read_checked(&b).unwrap();
        assert_eq!(r.as_bytes(), &b[..]);
        assert_eq!(r.cpus().len(), 2);
        assert_eq!(r.p2m_pages(), 128);
        assert_eq!(r.lists_used(), 1);
        assert_eq!(r.cpus()[1].regs[REG_RIP], 0xffff_ffff_8100_0000);
        assert_eq!(b.len(), 2008);
    }

    #[test]
    fn every_byte_is_under_the_digest_or_is_the_digest() {
        for i in 0..CRASH_DIGESTED_BYTES {
            let mut b = record();
            b[i] ^= 1;
            assert!(CrashRecord::read_checked(&b).is_err(), "byte {i}");
        }
    }

    #[test]
    fn bounds_are_named() {
        assert_eq!(refused(&|r| r.nr_cpus = 9), RecordError::Cpus(9));
        assert_eq!(refused(&|r| r.nr_cpus = 0), RecordError::Cpus(0));
        assert_eq!(refused(&|r| r.panic_cpu = 2), RecordError::PanicCpu(2));
        assert_eq!(
            refused(&|r| r.p2m_len = 0),
            RecordError::P2mLen { len: 0, lists: 1 }
        );
        // 16 list pages hold 16 GiB of PFNs, not one more.
        let e = refused(&|r| {
            *r = raw(16 * GIB_PFNS + 1, 16);
        });
        assert_eq!(
            e,
            RecordError::P2mLen {
                len: 16 * GIB_PFNS + 1,
                lists: 16
            }
        );
        assert!(e.to_string().contains("16 list pages"), "{e}");
        assert_eq!(
            refused(&|r| r.vmcoreinfo_size = 8193),
            RecordError::Vmcoreinfo(8193)
        );
        assert_eq!(refused(&|r| r.version = 1), RecordError::Version(1));
        assert_eq!(
            CrashRecord::read_checked(&record()[..100]).unwrap_err(),
            RecordError::Short(100)
        );
        assert!(refused(&|r| r.magic = 1).to_string().contains("PVKXCRSH"));
        assert_eq!(refused(&|r| r.p2m_dir = 0), RecordError::Dir(0));
        assert_eq!(
            refused(&|r| r.p2m_dir = MAX_MFN + 1),
            RecordError::Dir(MAX_MFN + 1)
        );
    }

    #[test]
    fn a_record_naming_more_list_pages_than_its_directory_pages_hold_is_refused() {
        // 512 list pages need two directory pages of 511.
        let e = refused(&|r| {
            *r = raw(512 * GIB_PFNS, 512);
            r.p2m_dir_pages = 1;
        });
        assert_eq!(
            e,
            RecordError::Lists {
                lists: 512,
                dir_pages: 1
            }
        );
        let text = e.to_string();
        assert!(
            text.contains("512 list pages named through 1 directory pages"),
            "{text}"
        );
        assert!(text.contains("(2 needed)"), "{text}");
        // A chain longer than its list pages need is refused too.
        assert_eq!(
            refused(&|r| r.p2m_dir_pages = 2),
            RecordError::Lists {
                lists: 1,
                dir_pages: 2
            }
        );
        // No list page at all.
        assert_eq!(
            refused(&|r| {
                r.p2m_lists = 0;
                r.p2m_dir_pages = 0;
            }),
            RecordError::P2mLen {
                len: 65536,
                lists: 0
            }
        );
        // A huge count cannot overflow the checks.
        assert_eq!(
            refused(&|r| r.p2m_lists = u64::MAX),
            RecordError::Lists {
                lists: u64::MAX,
                dir_pages: 1
            }
        );
    }

    #[test]
    fn domains_past_16_gib_are_accepted() {
        // (GiB of PFNs, list pages, directory pages)
        for (gib, dirs) in [(17u64, 1u64), (64, 1), (511, 1), (512, 2), (4096, 9)] {
            let r = CrashRecord::read_checked(&sealed(&raw(gib * GIB_PFNS, gib)))
                .unwrap_or_else(|e| panic!("{gib} GiB: {e}"));
            assert_eq!(r.p2m_dir_pages, dirs, "{gib} GiB");
            assert_eq!(r.lists_used(), gib, "{gib} GiB");
        }
        // Room to balloon up: the module names list pages for the domain's maximum.
        let r = CrashRecord::read_checked(&sealed(&raw(20 * GIB_PFNS + 1, 64))).unwrap();
        assert_eq!(r.lists_used(), 21);
    }

    #[test]
    fn the_walk_gives_every_list_page_through_the_chain() {
        for lists in [1u64, 6, 510, 511, 512, 1022, 1023, 1500] {
            let mem = directory(lists);
            let r = raw(lists * GIB_PFNS, lists);
            let (mfns, dirs) = walk(&r, &mem).unwrap();
            let want: Vec<u64> = (0..lists).map(|i| FIRST_LIST + i).collect();
            assert_eq!(mfns, want, "{lists} list pages");
            assert_eq!(dirs, lists.div_ceil(DIR_LISTS), "{lists} list pages");
        }
        // Only the list pages the P2M needs are read: 3 GiB of 600 named.
        let mem = directory(600);
        let (mfns, dirs) = walk(&raw(3 * GIB_PFNS, 600), &mem).unwrap();
        assert_eq!(mfns, [FIRST_LIST, FIRST_LIST + 1, FIRST_LIST + 2]);
        assert_eq!(dirs, 1);
        // A P2M ending inside a P2M page and a list page.
        let (mfns, _) = walk(&raw(2 * GIB_PFNS + 1, 600), &mem).unwrap();
        assert_eq!(mfns.len(), 3);
    }

    #[test]
    fn a_broken_directory_is_named() {
        let r = raw(600 * GIB_PFNS, 600);
        // The chain ends after the first directory page.
        let mut mem = directory(600);
        mem.0.get_mut(&FIRST_DIR).unwrap()[DIR_NEXT] = 0;
        let e = walk(&r, &mem).unwrap_err();
        assert_eq!(e, DirError::ChainEnds { dir: 1, list: 511 });
        assert!(e.to_string().contains("list page 511"), "{e}");
        // A list page named as 0, or past 40 bits.
        let mut mem = directory(600);
        mem.0.get_mut(&(FIRST_DIR + 1)).unwrap()[5] = 0;
        assert_eq!(
            walk(&r, &mem).unwrap_err(),
            DirError::ListMfn { list: 516, mfn: 0 }
        );
        mem.0.get_mut(&(FIRST_DIR + 1)).unwrap()[5] = MAX_MFN + 1;
        assert_eq!(
            walk(&r, &mem).unwrap_err(),
            DirError::ListMfn {
                list: 516,
                mfn: MAX_MFN + 1
            }
        );
        // The second directory page cannot be read.
        let mut mem = directory(600);
        mem.0.remove(&(FIRST_DIR + 1));
        let e = walk(&r, &mem).unwrap_err();
        assert_eq!(
            e,
            DirError::Read {
                mfn: FIRST_DIR + 1,
                error: "no such frame"
            }
        );
        assert!(e.to_string().contains("0x801: no such frame"), "{e}");
    }
}
