//! The checks of what Xen's builder (or the purgatory) handed a kernel: one PASS/FAIL line
//! each. `bootcheck` runs them after a direct boot, `probe` after a kexec.

use core::arch::asm;
use kernelrt::entry::reg;
use kernelrt::report::{check, Why};
use kernelrt::view::{m2p, p2m, walk, Region};
use kernelrt::{cmdline_value, parse_u64, println, why};
use xenpv::selector::{FLAT_KERNEL_CS, FLAT_KERNEL_SS};
use xenpv::{hypercall, pte, uvmf, MmuUpdate, StartInfo, PAGE_SIZE};

extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// Two pages the mmu round trip remaps; page aligned so each has its own L1 entry.
#[repr(C, align(4096))]
struct ScratchPages([[u8; PAGE_SIZE as usize]; 2]);
static mut SCRATCH: ScratchPages = ScratchPages([[0; PAGE_SIZE as usize]; 2]);

/// Prints what the kernel was handed, then runs the start-of-day checks; `hidden` frames of
/// the domain are expected to be kept from the kernel (`nr_pages` = `mem_mib=` less them).
pub fn boot_checks(si: &StartInfo, regs: &[u64; reg::COUNT], region: &Region, hidden: u64) {
    println!(
        "PVKEXEC-INFO start_info={:#x} rsp={:#x} nr_pages={:#x} pt_base={:#x} nr_pt_frames={:#x} \
         mfn_list={:#x} mod_start={:#x} mod_len={:#x} flags={:#x} first_p2m_pfn={:#x} nr_p2m_frames={:#x}",
        si as *const _ as u64,
        regs[reg::RSP],
        si.nr_pages,
        si.pt_base,
        si.nr_pt_frames,
        si.mfn_list,
        si.mod_start,
        si.mod_len,
        si.flags,
        si.first_p2m_pfn,
        si.nr_p2m_frames,
    );
    println!(
        "PVKEXEC-INFO cmdline=\"{}\"",
        core::str::from_utf8(si.cmdline()).unwrap_or("<non-utf8>")
    );
    check("magic", check_magic(si));
    check("nr_pages", check_nr_pages(si, hidden));
    check("p2m-m2p", check_p2m_m2p(si));
    check("pagetables", check_pagetables(si, region));
    check("region-end", check_region_end(si, region));
    check("xen-version", check_xen_version());
    check("mmu-roundtrip", check_mmu_roundtrip(si, region));
    check("entry-registers", check_entry_registers(si, regs));
    check("frames-writable", check_frames_writable(si, region));
}

/// Xen's start-of-day registers: `rsi` = start_info, `rsp` = boot stack top (checked against
/// the layout elsewhere), every other GPR 0, flat selectors CS 0xE033 and SS 0xE02B, null
/// DS/ES/FS/GS.
pub fn check_entry_registers(si: &StartInfo, regs: &[u64; reg::COUNT]) -> Result<(), Why> {
    if regs[reg::RSI] != si as *const StartInfo as u64 {
        return why!("rsi {:#x} is not start_info", regs[reg::RSI]);
    }
    for (i, &v) in regs[..=reg::R15].iter().enumerate() {
        if i != reg::RSI && i != reg::RSP && v != 0 {
            return why!(
                "GPR #{} (rax,rbx,rcx,rdx,rsi,rdi,rbp,rsp,r8..r15) is {:#x}, not 0",
                i,
                v
            );
        }
    }
    let sel = |i: usize| regs[i] & 0xFFFF;
    if sel(reg::CS) != FLAT_KERNEL_CS as u64 || sel(reg::SS) != FLAT_KERNEL_SS as u64 {
        return why!(
            "cs {:#x} ss {:#x}, want {:#x} {:#x}",
            sel(reg::CS),
            sel(reg::SS),
            FLAT_KERNEL_CS,
            FLAT_KERNEL_SS
        );
    }
    for (name, i) in [
        ("ds", reg::DS),
        ("es", reg::ES),
        ("fs", reg::FS),
        ("gs", reg::GS),
    ] {
        if sel(i) != 0 {
            return why!("{} is {:#x}, want 0", name, sel(i));
        }
    }
    Ok(())
}

/// Every frame of the domain except the kernel's own bootstrap tables can be mapped writable:
/// nothing is left typed (old page tables, descriptor tables) or pinned by someone else. Each
/// frame is mapped at the first scratch page through its L1 entry, 256 requests per
/// `mmu_update`; the scratch page gets its own frame back afterwards.
pub fn check_frames_writable(si: &StartInfo, region: &Region) -> Result<(), Why> {
    let p2m = p2m(si);
    let va = core::ptr::addr_of_mut!(SCRATCH) as u64;
    let w = match walk(si, region, va) {
        Ok(w) => w,
        Err(e) => return why!("scratch page: {}", e),
    };
    let slot = w.l1_slot(p2m, va);
    let pt_pfn = region.va_pfn(si.pt_base).unwrap_or(u64::MAX);
    let own_tables = pt_pfn..pt_pfn + si.nr_pt_frames;
    let mut batch = [MmuUpdate::default(); 256];
    let mut n = 0;
    let mut first_pfn = 0u64;
    let mut result = Ok(());
    for pfn in 0..si.nr_pages {
        if own_tables.contains(&pfn) {
            continue;
        }
        if n == 0 {
            first_pfn = pfn;
        }
        batch[n] = MmuUpdate {
            ptr: slot | xenpv::mmu::NORMAL_PT_UPDATE,
            val: pte::make(p2m[pfn as usize], pte::L1_FLAGS | pte::D),
        };
        n += 1;
        if n == batch.len() || pfn + 1 == si.nr_pages {
            // SAFETY: only the scratch page's L1 entry changes; nothing references the page.
            if let Err(e) = unsafe { hypercall::mmu_update(&batch[..n]) } {
                result = why!(
                    "a frame among pfn {:#x}.. (batch of {}) cannot be mapped writable: {}",
                    first_pfn,
                    n,
                    e
                );
                break;
            }
            n = 0;
        }
    }
    // SAFETY: restores the scratch page's own frame.
    let restored = unsafe { hypercall::update_va_mapping(va, w.l1e, uvmf::INVLPG) };
    result?;
    if let Err(e) = restored {
        return why!("restoring the scratch mapping: {}", e);
    }
    println!(
        "PVKEXEC-INFO frames-writable {} of {} frames (own {} table frames excluded)",
        si.nr_pages - si.nr_pt_frames,
        si.nr_pages,
        si.nr_pt_frames
    );
    Ok(())
}

pub fn check_magic(si: &StartInfo) -> Result<(), Why> {
    let magic = si.magic_str();
    if magic == b"xen-3.0-x86_64" {
        Ok(())
    } else {
        why!(
            "magic is {:?}, want \"xen-3.0-x86_64\"",
            core::str::from_utf8(magic).unwrap_or("<non-utf8>")
        )
    }
}

pub fn check_nr_pages(si: &StartInfo, hidden: u64) -> Result<(), Why> {
    let Some(mib) = cmdline_value(si.cmdline(), "mem_mib").and_then(parse_u64) else {
        return why!("no mem_mib=N on the command line");
    };
    let want = (mib * (1 << 20) / PAGE_SIZE).saturating_sub(hidden);
    if si.nr_pages == want {
        Ok(())
    } else {
        why!(
            "nr_pages {} but dom0_mem={}M less {} hidden frames is {} pages",
            si.nr_pages,
            mib,
            hidden,
            want
        )
    }
}

pub fn check_p2m_m2p(si: &StartInfo) -> Result<(), Why> {
    let p2m = p2m(si);
    for (pfn, &mfn) in p2m.iter().enumerate() {
        let back = m2p(mfn);
        if back != pfn as u64 {
            return why!("pfn {:#x} -> mfn {:#x} -> m2p {:#x}", pfn, mfn, back);
        }
    }
    println!("PVKEXEC-INFO p2m-m2p frames={}", p2m.len());
    Ok(())
}

/// Every page of the kernel image and of the bootstrap tables is mapped through tables inside
/// `[pt_base, pt_base + nr_pt_frames)` at the MFN the P2M gives its PFN; the table frames are
/// mapped read-only, the kernel read-write.
pub fn check_pagetables(si: &StartInfo, region: &Region) -> Result<(), Why> {
    let p2m = p2m(si);
    // SAFETY: linker-script symbols; only their addresses are used.
    let (kstart, kend) = unsafe {
        (
            &__kernel_start as *const u8 as u64,
            &__kernel_end as *const u8 as u64,
        )
    };
    let pt_end = si.pt_base + si.nr_pt_frames * PAGE_SIZE;
    let mut pages = 0u64;
    for (range, writable) in [((kstart, kend), true), ((si.pt_base, pt_end), false)] {
        let mut va = range.0;
        while va < range.1 {
            let walk = match walk(si, region, va) {
                Ok(w) => w,
                Err(e) => return why!("va {:#x}: {}", va, e),
            };
            let pfn = (va - region.virt_base) / PAGE_SIZE;
            let want = p2m.get(pfn as usize).copied().unwrap_or(u64::MAX);
            if pte::mfn(walk.l1e) != want {
                return why!(
                    "va {:#x}: L1 maps mfn {:#x}, P2M says {:#x}",
                    va,
                    pte::mfn(walk.l1e),
                    want
                );
            }
            if (walk.l1e & pte::RW != 0) != writable {
                return why!("va {:#x}: L1 entry {:#x} writability wrong", va, walk.l1e);
            }
            pages += 1;
            va += PAGE_SIZE;
        }
    }
    println!(
        "PVKEXEC-INFO pagetables pages-walked={} kernel={:#x}-{:#x}",
        pages, kstart, kend
    );
    Ok(())
}

/// The last page of the padded region is mapped and the first page past it is not.
pub fn check_region_end(si: &StartInfo, region: &Region) -> Result<(), Why> {
    if let Err(e) = walk(si, region, region.end - PAGE_SIZE) {
        return why!(
            "last page {:#x} of the region: {}",
            region.end - PAGE_SIZE,
            e
        );
    }
    if walk(si, region, region.end).is_ok() {
        return why!("{:#x} past the padded end is mapped", region.end);
    }
    println!("PVKEXEC-INFO region-end={:#x}", region.end);
    Ok(())
}

/// The hypercall's version equals the one CPUID leaf 0x40000001 reports (forced-emulation CPUID,
/// so Xen answers rather than the CPU).
pub fn check_xen_version() -> Result<(), Why> {
    let version = match hypercall::xen_version() {
        Ok(v) => v,
        Err(e) => return why!("xen_version: {}", e),
    };
    let extra = hypercall::xen_extraversion().unwrap_or([0; 16]);
    let extra_len = extra.iter().position(|&b| b == 0).unwrap_or(16);
    let (signature, leaf1) = (xen_cpuid(0x4000_0000), xen_cpuid(0x4000_0001));
    println!(
        "PVKEXEC-INFO xen-version {}.{}{} cpuid-signature={}",
        version >> 16,
        version & 0xFFFF,
        core::str::from_utf8(&extra[..extra_len]).unwrap_or(""),
        if signature.1 == 0x566e_6558 {
            "XenVMMXenVMM"
        } else {
            "?"
        }
    );
    if version >> 16 < 4 {
        return why!("xen_version {:#x}: major below 4", version);
    }
    if signature.1 != 0x566e_6558 {
        return why!("cpuid 0x40000000 ebx {:#x} is not \"XenV\"", signature.1);
    }
    if leaf1.0 != version {
        return why!("hypercall says {:#x}, cpuid says {:#x}", version, leaf1.0);
    }
    Ok(())
}

fn xen_cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    let (a, b, c, d): (u32, u32, u32, u32);
    // SAFETY: `ud2; .ascii "xen"; cpuid` is Xen's forced-emulation prefix: Xen emulates the
    // CPUID and skips the prefix. rbx is saved around it because LLVM reserves it.
    unsafe {
        asm!(
            "mov {tmp:r}, rbx",
            ".byte 0x0f, 0x0b, 0x78, 0x65, 0x6e",
            "cpuid",
            "xchg {tmp:r}, rbx",
            tmp = out(reg) b,
            inout("eax") leaf => a,
            inout("ecx") 0 => c,
            out("edx") d,
        );
    }
    (a, b, c, d)
}

/// Maps a spare frame (the domain's last PFN, outside the initial region) at scratch page 0
/// with `update_va_mapping`, writes a pattern, maps the same frame at scratch page 1 with an
/// `mmu_update` on the L1 entry's machine address, reads the pattern back there, and restores
/// both pages.
pub fn check_mmu_roundtrip(si: &StartInfo, region: &Region) -> Result<(), Why> {
    let p2m = p2m(si);
    let spare_pfn = si.nr_pages - 1;
    if region.pfn_va(spare_pfn).is_some() {
        return why!(
            "domain too small: pfn {:#x} is inside the region",
            spare_pfn
        );
    }
    let spare_mfn = p2m[spare_pfn as usize];
    let va0 = core::ptr::addr_of_mut!(SCRATCH) as u64;
    let va1 = va0 + PAGE_SIZE;
    let (w0, w1) = match (walk(si, region, va0), walk(si, region, va1)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return why!("scratch pages: {}", e),
    };
    let pattern = 0x5056_4B45_5845_4321u64 ^ spare_mfn;

    // SAFETY: the scratch pages are ours and nothing holds references into them; both get
    // their original entries back before returning.
    let result = unsafe {
        hypercall::update_va_mapping(
            va0,
            pte::make(spare_mfn, pte::L1_FLAGS | pte::D),
            uvmf::INVLPG,
        )
        .map_err(|e| ("update_va_mapping", e))
        .and_then(|()| {
            (va0 as *mut u64).write_volatile(pattern);
            let l1_maddr = w1.l1_slot(p2m, va1);
            let req = [MmuUpdate {
                ptr: l1_maddr | xenpv::mmu::NORMAL_PT_UPDATE,
                val: pte::make(spare_mfn, pte::L1_FLAGS | pte::D),
            }];
            hypercall::mmu_update(&req).map_err(|e| ("mmu_update", e))
        })
        .and_then(|_| {
            xenpv::hypercall::mmuext_op(&[xenpv::MmuextOp {
                cmd: xenpv::mmuext::INVLPG_LOCAL,
                arg1: va1,
                ..Default::default()
            }])
            .map_err(|e| ("mmuext_op(INVLPG_LOCAL)", e))
        })
        .map(|_| (va1 as *const u64).read_volatile())
    };
    // SAFETY: restores the scratch pages' original L1 entries (their own frames, writable).
    let restored = unsafe {
        hypercall::update_va_mapping(va0, w0.l1e, uvmf::INVLPG)
            .and_then(|()| hypercall::update_va_mapping(va1, w1.l1e, uvmf::INVLPG))
    };
    match (result, restored) {
        (Err((call, e)), _) => why!("{} failed: {}", call, e),
        (_, Err(e)) => why!("restoring the scratch mappings: {}", e),
        (Ok(seen), Ok(())) if seen != pattern => why!(
            "wrote {:#x} through update_va_mapping, read {:#x} through mmu_update",
            pattern,
            seen
        ),
        (Ok(_), Ok(())) => {
            println!("PVKEXEC-INFO mmu-roundtrip spare mfn={:#x}", spare_mfn);
            Ok(())
        }
    }
}
