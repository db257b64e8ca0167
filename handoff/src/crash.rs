//! The crash record (kernel side at panic -> capture kernel): what a crashed old kernel leaves
//! for the kernel that saves its memory (docs/kdump.md). One page of old memory, outside the
//! frames the crash kernel gets; its MFN is on the crash kernel's command line as
//! `pvkexec.crash=0x<mfn>`. The module (`kmod/panic.c`, `struct crash_record`) writes it
//! in its panic path; nothing in it is trusted before [`CrashRecord::check`] passes.

use xenpv::assert_layout;

/// `b"PVKXCRSH"` as a little-endian u64.
pub const CRASH_RECORD_MAGIC: u64 = u64::from_le_bytes(*b"PVKXCRSH");
pub const CRASH_RECORD_VERSION: u32 = 1;
/// CPUs the record has slots for (the purgatory parks as many).
pub const CRASH_MAX_CPUS: usize = crate::handoff::MAX_VCPUS as usize;
/// List pages the record names: each lists 512 P2M pages (512 x 512 PFNs = 1 GiB), so the
/// record covers domains up to 16 GiB.
pub const CRASH_P2M_LISTS: usize = 16;
/// Bytes the record's SHA-256 covers (every field before the digest).
pub const CRASH_DIGESTED_BYTES: usize = 2080;
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
    /// MFNs of the list pages: each holds the MFNs of 512 consecutive pages of the old P2M
    /// (0 past the last).
    pub p2m_lists: [u64; CRASH_P2M_LISTS],
    pub cpus: [CrashCpu; CRASH_MAX_CPUS],
    /// Xen system time (ns) when the panic path began.
    pub panic_time_ns: u64,
    pub _reserved: [u64; 3],
    /// SHA-256 of the first [`CRASH_DIGESTED_BYTES`] bytes.
    pub sha256: [u8; 32],
}
assert_layout!(CrashRecord, 2112; magic @ 0, version @ 8, nr_cpus @ 12, panic_cpu @ 16,
    xen_version @ 20, p2m_len @ 24, max_pfn @ 32, frame_list_list @ 40,
    vmcoreinfo_maddr @ 48, vmcoreinfo_size @ 56, p2m_lists @ 64, cpus @ 192,
    panic_time_ns @ 2048, _reserved @ 2056, sha256 @ 2080);
// SAFETY: integers and byte arrays only, without gaps (offsets above; 232-byte CPU slots of
// u32, u32 and u64s; the digest ends at 2112).
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
    P2mLen(u64),
    Vmcoreinfo(u64),
}

impl core::fmt::Display for RecordError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            RecordError::Short(n) => write!(f, "{n} bytes, a crash record has 2112"),
            RecordError::Magic(m) => write!(f, "magic {m:#x} is not PVKXCRSH"),
            RecordError::Version(v) => write!(f, "version {v}, this reader knows 1"),
            RecordError::Digest => f.write_str("its SHA-256 does not match its contents"),
            RecordError::Cpus(n) => write!(f, "{n} CPUs, at most {CRASH_MAX_CPUS} and at least 1"),
            RecordError::PanicCpu(c) => write!(f, "panic CPU {c} is not one of its CPUs"),
            RecordError::P2mLen(n) => write!(
                f,
                "a P2M of {n} entries does not fit its {CRASH_P2M_LISTS} list pages"
            ),
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
        if self.p2m_len == 0 || self.p2m_pages() > (CRASH_P2M_LISTS * 512) as u64 {
            return Err(RecordError::P2mLen(self.p2m_len));
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

    /// The CPUs online at the panic.
    pub fn cpus(&self) -> &[CrashCpu] {
        &self.cpus[..(self.nr_cpus as usize).min(CRASH_MAX_CPUS)]
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;
    use xenpv::Pod;

    fn record() -> Vec<u8> {
        let mut r = CrashRecord {
            magic: CRASH_RECORD_MAGIC,
            version: CRASH_RECORD_VERSION,
            nr_cpus: 2,
            panic_cpu: 1,
            xen_version: (4 << 16) | 17,
            p2m_len: 65536,
            max_pfn: 65536,
            frame_list_list: !0,
            vmcoreinfo_maddr: 0x1234_5000,
            vmcoreinfo_size: 4132,
            p2m_lists: [0; CRASH_P2M_LISTS],
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
        r.p2m_lists[0] = 0x4242;
        r.cpus[1].state = CPU_SAVED;
        r.cpus[1].regs[REG_RIP] = 0xffff_ffff_8100_0000;
        let mut b = r.as_bytes().to_vec();
        let d = crate::digest::sha256(&b[..CRASH_DIGESTED_BYTES]);
        b[CRASH_DIGESTED_BYTES..].copy_from_slice(&d);
        b
    }

    #[test]
    fn a_sound_record_reads_back() {
        let r = CrashRecord::read_checked(&record()).unwrap();
        assert_eq!(r.cpus().len(), 2);
        assert_eq!(r.p2m_pages(), 128);
        assert_eq!(r.cpus()[1].regs[REG_RIP], 0xffff_ffff_8100_0000);
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
        let fix = |f: &dyn Fn(&mut CrashRecord)| {
            let mut r = CrashRecord::read_from(&record()).unwrap();
            f(&mut r);
            let mut b = r.as_bytes().to_vec();
            let d = crate::digest::sha256(&b[..CRASH_DIGESTED_BYTES]);
            b[CRASH_DIGESTED_BYTES..].copy_from_slice(&d);
            CrashRecord::read_checked(&b).unwrap_err()
        };
        assert_eq!(fix(&|r| r.nr_cpus = 9), RecordError::Cpus(9));
        assert_eq!(fix(&|r| r.nr_cpus = 0), RecordError::Cpus(0));
        assert_eq!(fix(&|r| r.panic_cpu = 2), RecordError::PanicCpu(2));
        assert_eq!(
            fix(&|r| r.p2m_len = 16 * 512 * 512 + 1),
            RecordError::P2mLen(16 * 512 * 512 + 1)
        );
        assert_eq!(
            fix(&|r| r.vmcoreinfo_size = 8193),
            RecordError::Vmcoreinfo(8193)
        );
        assert_eq!(fix(&|r| r.version = 2), RecordError::Version(2));
        assert_eq!(
            CrashRecord::read_checked(&record()[..100]).unwrap_err(),
            RecordError::Short(100)
        );
        assert!(fix(&|r| r.magic = 1).to_string().contains("PVKXCRSH"));
    }
}
