//! Linux's x86_64 `struct elf_prstatus` (include/uapi/linux/elfcore.h) with `pr_reg` the
//! `user_regs_struct` of arch/x86/include/asm/user_64.h, the descriptor of a "CORE"
//! `NT_PRSTATUS` note.

use core::mem::{offset_of, size_of};

/// `struct user_regs_struct` (x86_64), Linux's order: 27 words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_ax: u64,
    pub rip: u64,
    pub cs: u64,
    pub flags: u64,
    pub sp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

impl UserRegs {
    /// From the words in Linux's order (as a crash record or `pr_reg` holds them).
    pub fn from_words(w: [u64; 27]) -> Self {
        let [r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi, orig_ax, rip, cs, flags, sp, ss, fs_base, gs_base, ds, es, fs, gs] =
            w;
        UserRegs {
            r15,
            r14,
            r13,
            r12,
            rbp,
            rbx,
            r11,
            r10,
            r9,
            r8,
            rax,
            rcx,
            rdx,
            rsi,
            rdi,
            orig_ax,
            rip,
            cs,
            flags,
            sp,
            ss,
            fs_base,
            gs_base,
            ds,
            es,
            fs,
            gs,
        }
    }

    /// The words in Linux's order.
    pub fn words(&self) -> [u64; 27] {
        [
            self.r15,
            self.r14,
            self.r13,
            self.r12,
            self.rbp,
            self.rbx,
            self.r11,
            self.r10,
            self.r9,
            self.r8,
            self.rax,
            self.rcx,
            self.rdx,
            self.rsi,
            self.rdi,
            self.orig_ax,
            self.rip,
            self.cs,
            self.flags,
            self.sp,
            self.ss,
            self.fs_base,
            self.gs_base,
            self.ds,
            self.es,
            self.fs,
            self.gs,
        ]
    }
}

/// One CPU as its note tells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuState {
    /// The task running on it (`pr_pid`; 0 for the idle task).
    pub pid: i32,
    pub regs: UserRegs,
}

/// `struct elf_siginfo`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ElfSiginfo {
    pub si_signo: i32,
    pub si_code: i32,
    pub si_errno: i32,
}

/// `struct __kernel_old_timeval` (x86_64: two longs).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Timeval {
    pub tv_sec: i64,
    pub tv_usec: i64,
}

/// `struct elf_prstatus` for x86_64 (336 bytes; explicit padding so every byte is a field).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ElfPrstatus {
    pub pr_info: ElfSiginfo,
    pub pr_cursig: i16,
    pub _pad0: u16,
    pub pr_sigpend: u64,
    pub pr_sighold: u64,
    pub pr_pid: i32,
    pub pr_ppid: i32,
    pub pr_pgrp: i32,
    pub pr_sid: i32,
    pub pr_utime: Timeval,
    pub pr_stime: Timeval,
    pub pr_cutime: Timeval,
    pub pr_cstime: Timeval,
    pub pr_reg: UserRegs,
    pub pr_fpvalid: i32,
    pub _pad1: u32,
}

/// Bytes of an x86_64 `elf_prstatus`.
pub const PRSTATUS_SIZE: usize = 336;

const _: () = {
    assert!(size_of::<UserRegs>() == 27 * 8);
    assert!(offset_of!(UserRegs, orig_ax) == 15 * 8);
    assert!(offset_of!(UserRegs, rip) == 16 * 8);
    assert!(offset_of!(UserRegs, sp) == 19 * 8);
    assert!(offset_of!(UserRegs, gs) == 26 * 8);
    assert!(size_of::<ElfSiginfo>() == 12);
    assert!(offset_of!(ElfPrstatus, pr_cursig) == 12);
    assert!(offset_of!(ElfPrstatus, pr_sigpend) == 16);
    assert!(offset_of!(ElfPrstatus, pr_sighold) == 24);
    assert!(offset_of!(ElfPrstatus, pr_pid) == 32);
    assert!(offset_of!(ElfPrstatus, pr_ppid) == 36);
    assert!(offset_of!(ElfPrstatus, pr_utime) == 48);
    assert!(offset_of!(ElfPrstatus, pr_cstime) == 96);
    assert!(offset_of!(ElfPrstatus, pr_reg) == 112);
    assert!(offset_of!(ElfPrstatus, pr_fpvalid) == 328);
    assert!(size_of::<ElfPrstatus>() == PRSTATUS_SIZE);
};

impl ElfPrstatus {
    /// The status crash reads for `cpu`: its pid and registers, everything else 0.
    pub fn for_cpu(cpu: &CpuState) -> Self {
        ElfPrstatus {
            pr_pid: cpu.pid,
            pr_reg: cpu.regs,
            ..ElfPrstatus::default()
        }
    }

    /// The descriptor bytes, little-endian, each field at its `offset_of!`.
    pub fn to_bytes(&self) -> [u8; PRSTATUS_SIZE] {
        let mut out = [0u8; PRSTATUS_SIZE];
        let i = offset_of!(ElfPrstatus, pr_info);
        put(&mut out, i, &self.pr_info.si_signo.to_le_bytes());
        put(&mut out, i + 4, &self.pr_info.si_code.to_le_bytes());
        put(&mut out, i + 8, &self.pr_info.si_errno.to_le_bytes());
        put(
            &mut out,
            offset_of!(ElfPrstatus, pr_cursig),
            &self.pr_cursig.to_le_bytes(),
        );
        put(
            &mut out,
            offset_of!(ElfPrstatus, pr_sigpend),
            &self.pr_sigpend.to_le_bytes(),
        );
        put(
            &mut out,
            offset_of!(ElfPrstatus, pr_sighold),
            &self.pr_sighold.to_le_bytes(),
        );
        put(
            &mut out,
            offset_of!(ElfPrstatus, pr_pid),
            &self.pr_pid.to_le_bytes(),
        );
        put(
            &mut out,
            offset_of!(ElfPrstatus, pr_ppid),
            &self.pr_ppid.to_le_bytes(),
        );
        put(
            &mut out,
            offset_of!(ElfPrstatus, pr_pgrp),
            &self.pr_pgrp.to_le_bytes(),
        );
        put(
            &mut out,
            offset_of!(ElfPrstatus, pr_sid),
            &self.pr_sid.to_le_bytes(),
        );
        let times = [
            (offset_of!(ElfPrstatus, pr_utime), self.pr_utime),
            (offset_of!(ElfPrstatus, pr_stime), self.pr_stime),
            (offset_of!(ElfPrstatus, pr_cutime), self.pr_cutime),
            (offset_of!(ElfPrstatus, pr_cstime), self.pr_cstime),
        ];
        for (at, t) in times {
            put(&mut out, at, &t.tv_sec.to_le_bytes());
            put(&mut out, at + 8, &t.tv_usec.to_le_bytes());
        }
        let regs = offset_of!(ElfPrstatus, pr_reg);
        for (n, w) in self.pr_reg.words().into_iter().enumerate() {
            put(&mut out, regs + 8 * n, &w.to_le_bytes());
        }
        put(
            &mut out,
            offset_of!(ElfPrstatus, pr_fpvalid),
            &self.pr_fpvalid.to_le_bytes(),
        );
        out
    }
}

fn put(out: &mut [u8; PRSTATUS_SIZE], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}
