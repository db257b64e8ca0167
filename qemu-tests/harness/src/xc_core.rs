//! Xen's `xl dump-core` files (xc_core ELF, tools/libs/guest/xg_core.c) read on the host and
//! rewritten with the `vmcore` crate into pvkexec's vmcore shape: machine-address PT_LOADs, a
//! "Xen" CRASH_INFO note naming a P2M frame list, VMCOREINFO, one NT_PRSTATUS per VCPU.
//!
//! The xc_core file gives every page with its PFN and MFN (`.xen_p2m`, `.xen_pages`) and the
//! VCPUs' `vcpu_guest_context` (`.xen_prstatus`). The converter writes a fresh P2M (leaf
//! pages, frame-list pages, frame-list-list page) into frames numbered past the domain's
//! highest MFN, as the capture kernel writes one into its own frames: crash reads all three
//! levels through the dump by machine address. This proves the format on a real kernel's
//! memory before the capture kernel exists.

use anyhow::{bail, Context, Result};
use goblin::elf::Elf;
use std::collections::HashMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;
use xenpv::abi::{CpuUserRegs, VcpuGuestContext};

use vmcore::p2m::{self, FrameList};
use vmcore::{CpuState, CrashXenInfo, Frames, Notes, UserRegs, Vmcore, PAGE_SIZE};

const XEN_ELFNOTE_DUMPCORE_HEADER: u32 = 0x0200_0001;
const XEN_ELFNOTE_DUMPCORE_XEN_VERSION: u32 = 0x0200_0002;
const PAGE: usize = PAGE_SIZE as usize;

/// An xc_core file in memory.
pub struct XcCore {
    bytes: Vec<u8>,
    /// `.xen_p2m`: `(pfn, mfn)` of page `i` of `.xen_pages`.
    pub p2m: Vec<(u64, u64)>,
    pages_offset: usize,
    /// The VCPUs' registers (`.xen_prstatus`).
    pub vcpus: Vec<CpuUserRegs>,
    /// `fs_base`, `gs_base_kernel` of each VCPU.
    pub segment_bases: Vec<(u64, u64)>,
    pub xen_version: (u64, u64),
}

impl XcCore {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(bytes).with_context(|| format!("{}: not a usable xc_core file", path.display()))
    }

    fn parse(bytes: Vec<u8>) -> Result<Self> {
        let elf = Elf::parse(&bytes).context("ELF")?;
        let section = |name: &str| -> Result<(usize, usize)> {
            let sh = elf
                .section_headers
                .iter()
                .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(name))
                .with_context(|| format!("no {name} section"))?;
            let (off, len) = (sh.sh_offset as usize, sh.sh_size as usize);
            if off.checked_add(len).is_none_or(|end| end > bytes.len()) {
                bail!("{name} runs past the file's end (truncated dump?)");
            }
            Ok((off, len))
        };
        let (nr_vcpus, nr_pages, xen_version) = read_notes(&bytes, section(".note.Xen")?)?;
        let (p2m_off, p2m_len) = section(".xen_p2m")?;
        if p2m_len != nr_pages * 16 {
            bail!(".xen_p2m holds {p2m_len} bytes for {nr_pages} pages");
        }
        let p2m = (0..nr_pages)
            .map(|i| {
                (
                    u64_at(&bytes, p2m_off + 16 * i),
                    u64_at(&bytes, p2m_off + 16 * i + 8),
                )
            })
            .collect();
        let (pages_offset, pages_len) = section(".xen_pages")?;
        if pages_len != nr_pages * PAGE {
            bail!(".xen_pages holds {pages_len} bytes for {nr_pages} pages");
        }
        let (ctx_off, ctx_len) = section(".xen_prstatus")?;
        let (vcpus, segment_bases) = read_contexts(&bytes, ctx_off, ctx_len, nr_vcpus)?;
        Ok(XcCore {
            bytes,
            p2m,
            pages_offset,
            vcpus,
            segment_bases,
            xen_version,
        })
    }

    fn page(&self, i: usize) -> &[u8] {
        let at = self.pages_offset + i * PAGE;
        &self.bytes[at..at + PAGE]
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// `(nr_vcpus, nr_pages, (major, minor))` from the dump-core header and version notes.
fn read_notes(bytes: &[u8], (off, len): (usize, usize)) -> Result<(usize, usize, (u64, u64))> {
    let (mut header, mut version) = (None, None);
    let mut at = off;
    while at + 12 <= off + len {
        let (namesz, descsz, n_type) = (
            u32_at(bytes, at) as usize,
            u32_at(bytes, at + 4) as usize,
            u32_at(bytes, at + 8),
        );
        let desc = at + 12 + namesz.next_multiple_of(4);
        if desc + descsz > off + len {
            bail!(".note.Xen: a note runs past the section");
        }
        match n_type {
            XEN_ELFNOTE_DUMPCORE_HEADER if descsz >= 32 => {
                // xch_magic, xch_nr_vcpus, xch_nr_pages, xch_page_size
                if u64_at(bytes, desc + 24) != PAGE_SIZE {
                    bail!("dump-core page size is not 4096");
                }
                header = Some((u64_at(bytes, desc + 8), u64_at(bytes, desc + 16)));
            }
            XEN_ELFNOTE_DUMPCORE_XEN_VERSION if descsz >= 16 => {
                version = Some((u64_at(bytes, desc), u64_at(bytes, desc + 8)));
            }
            _ => {}
        }
        at = desc + descsz.next_multiple_of(4);
    }
    let (vcpus, pages) = header.context("no XEN_ELFNOTE_DUMPCORE_HEADER note")?;
    let version = version.context("no XEN_ELFNOTE_DUMPCORE_XEN_VERSION note")?;
    Ok((vcpus as usize, pages as usize, version))
}

type Contexts = (Vec<CpuUserRegs>, Vec<(u64, u64)>);

/// Each VCPU's `cpu_user_regs` and segment bases from its `vcpu_guest_context` (x86_64
/// layout, xenpv::abi; the section's entries are `vcpu_guest_context_any_t`, at least as big).
fn read_contexts(bytes: &[u8], off: usize, len: usize, nr: usize) -> Result<Contexts> {
    if nr == 0 || !len.is_multiple_of(nr) || len / nr < size_of::<VcpuGuestContext>() {
        bail!(".xen_prstatus: {len} bytes for {nr} VCPUs");
    }
    let stride = len / nr;
    let mut regs = Vec::new();
    let mut bases = Vec::new();
    for v in 0..nr {
        let ctx = off + v * stride;
        let u = ctx + std::mem::offset_of!(VcpuGuestContext, user_regs);
        let w = |o: usize| u64_at(bytes, u + o);
        let h = |o: usize| u16::from_le_bytes([bytes[u + o], bytes[u + o + 1]]);
        use std::mem::offset_of as at;
        regs.push(CpuUserRegs {
            r15: w(at!(CpuUserRegs, r15)),
            r14: w(at!(CpuUserRegs, r14)),
            r13: w(at!(CpuUserRegs, r13)),
            r12: w(at!(CpuUserRegs, r12)),
            rbp: w(at!(CpuUserRegs, rbp)),
            rbx: w(at!(CpuUserRegs, rbx)),
            r11: w(at!(CpuUserRegs, r11)),
            r10: w(at!(CpuUserRegs, r10)),
            r9: w(at!(CpuUserRegs, r9)),
            r8: w(at!(CpuUserRegs, r8)),
            rax: w(at!(CpuUserRegs, rax)),
            rcx: w(at!(CpuUserRegs, rcx)),
            rdx: w(at!(CpuUserRegs, rdx)),
            rsi: w(at!(CpuUserRegs, rsi)),
            rdi: w(at!(CpuUserRegs, rdi)),
            rip: w(at!(CpuUserRegs, rip)),
            cs: h(at!(CpuUserRegs, cs)),
            rflags: w(at!(CpuUserRegs, rflags)),
            rsp: w(at!(CpuUserRegs, rsp)),
            ss: h(at!(CpuUserRegs, ss)),
            es: h(at!(CpuUserRegs, es)),
            ds: h(at!(CpuUserRegs, ds)),
            fs: h(at!(CpuUserRegs, fs)),
            gs: h(at!(CpuUserRegs, gs)),
            ..CpuUserRegs::default()
        });
        bases.push((
            u64_at(bytes, ctx + std::mem::offset_of!(VcpuGuestContext, fs_base)),
            u64_at(
                bytes,
                ctx + std::mem::offset_of!(VcpuGuestContext, gs_base_kernel),
            ),
        ));
    }
    Ok((regs, bases))
}

/// Linux's `user_regs_struct` for a VCPU that was in the kernel (GS base: the kernel's).
fn user_regs(r: &CpuUserRegs, (fs_base, gs_base): (u64, u64)) -> UserRegs {
    UserRegs {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        rbp: r.rbp,
        rbx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        rax: r.rax,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        orig_ax: !0,
        rip: r.rip,
        cs: r.cs.into(),
        flags: r.rflags,
        sp: r.rsp,
        ss: r.ss.into(),
        fs_base,
        gs_base,
        ds: r.ds.into(),
        es: r.es.into(),
        fs: r.fs.into(),
        gs: r.gs.into(),
    }
}

/// The old kernel's VMCOREINFO text: the note Linux keeps in its own pages (header with
/// `n_namesz` 11 and type 0, name "VMCOREINFO", text starting `OSRELEASE=`), found by scanning
/// the pages in PFN order (the note may cross into the next PFN).
pub fn find_vmcoreinfo(core: &XcCore) -> Option<Vec<u8>> {
    let mut by_pfn: Vec<(u64, usize)> = core
        .p2m
        .iter()
        .enumerate()
        .map(|(i, &(p, _))| (p, i))
        .collect();
    by_pfn.sort_unstable();
    const NAME: &[u8] = b"VMCOREINFO\0\0OSRELEASE=";
    for (k, &(pfn, i)) in by_pfn.iter().enumerate() {
        let page = core.page(i);
        let Some(at) = page.windows(NAME.len()).position(|w| w == NAME) else {
            continue;
        };
        if at < 12 || u32_at(page, at - 12) != 11 || u32_at(page, at - 4) != 0 {
            continue;
        }
        let len = u32_at(page, at - 8) as usize;
        let mut text = page[at + 12..].to_vec();
        let mut next = k + 1;
        while text.len() < len {
            let &(p, j) = by_pfn.get(next)?;
            if p != pfn + (next - k) as u64 {
                return None;
            }
            text.extend_from_slice(core.page(j));
            next += 1;
        }
        text.truncate(len);
        return Some(text);
    }
    None
}

/// What [`convert`] wrote.
#[derive(Clone, Debug)]
pub struct Converted {
    pub frames: usize,
    pub runs: usize,
    /// Frames of the synthesized P2M (leaves, frame list, frame-list-list).
    pub p2m_frames: usize,
    pub frame_list_list_mfn: u64,
    pub vmcoreinfo_len: usize,
    pub file_len: u64,
}

/// Writes `core` as a pvkexec-shape vmcore to `out`.
pub fn convert(core: &XcCore, out: &Path) -> Result<Converted> {
    let synth = SynthP2m::build(core)?;
    let mut mfns: Vec<u64> = core.p2m.iter().map(|&(_, m)| m).collect();
    mfns.extend(synth.pages.keys());
    let frames = Frames::from_unsorted(&mut mfns).map_err(|e| anyhow::anyhow!("frames: {e}"))?;
    let vmcoreinfo = find_vmcoreinfo(core).context("no VMCOREINFO note in the dump's pages")?;
    let cpus: Vec<CpuState> = core
        .vcpus
        .iter()
        .zip(&core.segment_bases)
        .map(|(r, &b)| CpuState {
            pid: 0,
            regs: user_regs(r, b),
        })
        .collect();
    let notes = Notes {
        cpus: &cpus,
        vmcoreinfo: &vmcoreinfo,
        xen: CrashXenInfo::guest(
            core.xen_version.0,
            core.xen_version.1,
            synth.frame_list_list,
        ),
    };
    let v = Vmcore::new(frames, notes).map_err(|e| anyhow::anyhow!("vmcore layout: {e}"))?;
    write_vmcore(core, &synth, &v, out)?;
    Ok(Converted {
        frames: v.frames().pages(),
        runs: v.frames().run_count(),
        p2m_frames: synth.pages.len(),
        frame_list_list_mfn: synth.frame_list_list,
        vmcoreinfo_len: vmcoreinfo.len(),
        file_len: v.file_len(),
    })
}

fn write_vmcore(core: &XcCore, synth: &SynthP2m, v: &Vmcore<'_>, out: &Path) -> Result<()> {
    let index: HashMap<u64, usize> = core
        .p2m
        .iter()
        .enumerate()
        .map(|(i, &(_, m))| (m, i))
        .collect();
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut header = v.header();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = header.fill(&mut buf);
        w.write_all(&buf[..n])?;
        if n < buf.len() {
            break;
        }
    }
    for slot in v.pages() {
        let bytes: &[u8] = match synth.pages.get(&slot.mfn) {
            Some(p) => p,
            None => core.page(index[&slot.mfn]),
        };
        w.write_all(bytes)?;
    }
    w.flush()?;
    Ok(())
}

/// A P2M and its frame list in frames past the domain's highest MFN, padded to 512 GiB of
/// PFNs as the capture kernel pads its own (`vmcore::p2m`).
struct SynthP2m {
    pages: HashMap<u64, Vec<u8>>,
    frame_list_list: u64,
}

impl SynthP2m {
    fn build(core: &XcCore) -> Result<Self> {
        let max_pfn = core.p2m.iter().map(|&(p, _)| p).max().context("no pages")?;
        let max_mfn = core.p2m.iter().map(|&(_, m)| m).max().context("no pages")?;
        let mut table = vec![p2m::INVALID_ENTRY; max_pfn as usize + 1];
        for &(pfn, mfn) in &core.p2m {
            table[pfn as usize] = mfn;
        }
        let leaves = p2m::leaf_pages_for(table.len() as u64) as usize;
        let mut next = max_mfn + 1;
        let mut take = |n: usize| {
            let first = next;
            next += n as u64;
            (first..next).collect::<Vec<u64>>()
        };
        let leaf_mfns = take(leaves);
        let shared = take(3);
        let (missing_leaf, missing_list, fll) = (shared[0], shared[1], shared[2]);
        let fl = FrameList::new(&leaf_mfns, missing_leaf)
            .map_err(|e| anyhow::anyhow!("frame list: {e}"))?;
        let fl_mfns = take(fl.frame_list_pages());
        let mut pages = HashMap::new();
        let mut words = [0u64; p2m::ENTRIES];
        let mut put = |mfn: u64, words: &p2m::Page| {
            let mut b = [0u8; PAGE];
            p2m::page_bytes(words, &mut b);
            pages.insert(mfn, b.to_vec());
        };
        for (i, &m) in leaf_mfns.iter().enumerate() {
            p2m::leaf_page(&table, i, &mut words).map_err(|e| anyhow::anyhow!("{e}"))?;
            put(m, &words);
        }
        for (i, &m) in fl_mfns.iter().enumerate() {
            fl.frame_list_page(i, &mut words)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            put(m, &words);
        }
        p2m::missing_leaf_page(&mut words);
        put(missing_leaf, &words);
        fl.missing_frame_list_page(&mut words);
        put(missing_list, &words);
        fl.frame_list_list_page(&fl_mfns, missing_list, &mut words)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        put(fll, &words);
        Ok(SynthP2m {
            pages,
            frame_list_list: fll,
        })
    }
}
