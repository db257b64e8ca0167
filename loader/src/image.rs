//! Building and inspecting kexec image files (format: `pvhandoff::image`).

use crate::error::{LoadError, Reason};
use crate::kernel::ParsedKernel;
use crate::plan::plan_kernel;
use crate::purgatory::{place, PURGATORY_ELF};
use pvhandoff::chunks::{ChunkTableHeader, CHUNKS_MAGIC, CHUNK_PAGES, CHUNK_SIZE, NO_CHUNKS};
use pvhandoff::image::CrashAliases;
use pvhandoff::image::{
    ImageHeader, PlanRecord, IMAGE_MAGIC, IMAGE_VERSION, MAX_SEGMENTS, PLAN_MAGIC,
    SEG_FLAG_METADATA, SEG_FLAG_PURGATORY_MAPPING, SEG_FLAG_TEMPLATE,
};
use pvhandoff::zero::{find_runs, ZeroRun, ZeroRunsHeader, ZERO_RUNS_MAGIC};
use pvhandoff::{SegmentDesc, SegmentKind};
use pvlayout::{InitrdPlacement, Mode, Plan};
use sha2::{Digest, Sha256};
use xenpv::Pod;

/// Where the purgatory (and the trampoline page at its start) is mapped: a lower-half address
/// outside any kernel's region, identical in the old and the new page tables.
pub const PURGATORY_BASE: u64 = 0x0000_0000_4000_0000;

/// Frames of the domain kept from the new kernel (docs/smp.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hidden {
    /// The park area and the placed vcpu_info frames.
    pub vcpu_pages: u64,
    /// Frames reserved for grants a backend still maps.
    pub grant_reserve: u64,
    /// Built for a hypervisor that resets VCPUs (`PlanRecord::flags`'s
    /// `PLAN_FLAG_VCPU_RESET`): `vcpu_pages` is 0, and the purgatory resets the old kernel's
    /// VCPUs instead of parking them.
    pub vcpu_reset: bool,
    /// A Linux crash kernel (docs/kdump.md): the crashed kernel's frames the purgatory gives
    /// PFNs past its RAM and the ELF core header area (`PLAN_FLAG_ALIASES`); `None` for every
    /// other image.
    pub aliases: Option<CrashAliases>,
}

impl Hidden {
    /// All hidden frames; `None` when the sum does not fit in 64 bits.
    pub fn pages(self) -> Option<u64> {
        self.vcpu_pages.checked_add(self.grant_reserve)
    }
}

/// A built image and the plan it carries out.
pub struct BuiltImage {
    pub bytes: Vec<u8>,
    pub plan: Plan,
    pub purgatory_relocations: usize,
}

fn pages(len: u64) -> u64 {
    len.div_ceil(4096)
}

const PAGE: u64 = 4096;

/// The kernel segment's contents: the kernel's loaded bytes from `virt_kstart` to its last
/// file byte (gaps zero-filled), with what the loader writes into it (the hypercall page, the
/// plan record) laid over them. Made page by page from the ELF when read, never whole in
/// memory.
struct KernelContent<'a> {
    kernel: &'a ParsedKernel,
    len: u64,
    /// `(offset, bytes)` written over the loaded bytes, in order.
    patches: Vec<(u64, Vec<u8>)>,
}

impl<'a> KernelContent<'a> {
    fn new(kernel: &'a ParsedKernel) -> Self {
        let len = kernel
            .segments
            .iter()
            .map(|s| s.dest - kernel.virt_kstart + s.filesz)
            .max()
            .unwrap_or(0);
        KernelContent {
            kernel,
            len,
            patches: Vec::new(),
        }
    }

    /// Writes `bytes` at `at` (growing the contents with zeros when that lies past them).
    fn patch(&mut self, at: u64, bytes: &[u8]) {
        self.len = self.len.max(at + bytes.len() as u64);
        self.patches.push((at, bytes.to_vec()));
    }

    /// Fills `buf` with page `p` of the contents.
    fn page(&self, p: u64, buf: &mut [u8; PAGE as usize]) {
        buf.fill(0);
        let (start, end) = (p * PAGE, (p + 1) * PAGE);
        let mut lay = |at: u64, src: &[u8]| {
            let (from, to) = (at.max(start), (at + src.len() as u64).min(end));
            if from < to {
                buf[(from - start) as usize..(to - start) as usize]
                    .copy_from_slice(&src[(from - at) as usize..(to - at) as usize]);
            }
        };
        let k = self.kernel;
        for s in &k.segments {
            // The parser checked every PT_LOAD's file bytes lie in the ELF.
            lay(
                s.dest - k.virt_kstart,
                &k.elf[s.offset as usize..(s.offset + s.filesz) as usize],
            );
        }
        for (at, bytes) in &self.patches {
            lay(*at, bytes);
        }
    }
}

/// A segment's contents as the builder reads them: bytes in memory, or the kernel's.
enum Content<'a> {
    Bytes(&'a [u8]),
    Kernel(&'a KernelContent<'a>),
}

impl Content<'_> {
    fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Kernel(k) => k.len,
        }
    }

    /// Page `p`, padded with zeros to 4 KiB (the file's form of the last, partial page).
    fn page<'b>(&'b self, p: u64, buf: &'b mut [u8; PAGE as usize]) -> &'b [u8; PAGE as usize] {
        match self {
            Content::Bytes(b) => {
                let at = (p * PAGE) as usize;
                let src = &b[at.min(b.len())..(at + PAGE as usize).min(b.len())];
                if src.len() == PAGE as usize {
                    return src.try_into().expect("one page");
                }
                buf.fill(0);
                buf[..src.len()].copy_from_slice(src);
                buf
            }
            Content::Kernel(k) => {
                k.page(p, buf);
                buf
            }
        }
    }
}

/// One segment of the image being built: its descriptor, contents, and what the first pass
/// over them found.
struct Seg<'a> {
    desc: SegmentDesc,
    content: Content<'a>,
    /// Whether zero pages may be left out of the file (placed segments: no flags).
    sparse: bool,
    /// Whether the chunk table has entries for it.
    chunked: bool,
    /// The runs of zero pages left out of the file, `(first_page, pages)`.
    runs: Vec<(u64, u64)>,
    chunks: Vec<[u8; 32]>,
}

impl<'a> Seg<'a> {
    fn new(
        kind: SegmentKind,
        flags: u32,
        dest_pfn: u64,
        nr_pages: u64,
        content: Content<'a>,
    ) -> Self {
        Seg {
            desc: SegmentDesc {
                kind: kind as u32,
                flags,
                dest_pfn,
                nr_pages,
                len: content.len(),
                sha256: [0; 32],
            },
            content,
            sparse: flags == 0,
            chunked: flags & SEG_FLAG_PURGATORY_MAPPING == 0,
            runs: Vec::new(),
            chunks: Vec::new(),
        }
    }

    /// The first pass: the SHA-256 of the whole contents, of each 1 MiB chunk, and (for a
    /// placed segment) the runs of zero pages.
    fn scan(&mut self) {
        let len = self.desc.len;
        let pages = len.div_ceil(PAGE);
        let mut whole = Sha256::new();
        let mut chunk = Sha256::new();
        let mut zero = Vec::new();
        let mut buf = [0u8; PAGE as usize];
        for p in 0..pages {
            let page = self.content.page(p, &mut buf);
            let n = (len - p * PAGE).min(PAGE) as usize;
            whole.update(&page[..n]);
            if self.chunked {
                chunk.update(&page[..n]);
                if (p + 1) % CHUNK_PAGES == 0 || p + 1 == pages {
                    self.chunks
                        .push(std::mem::take(&mut chunk).finalize().into());
                }
            }
            if self.sparse {
                zero.push(page.iter().all(|&b| b == 0));
            }
        }
        self.desc.sha256 = whole.finalize().into();
        if self.sparse {
            self.runs = find_runs(len, |p| zero[p as usize]).collect();
        }
    }

    fn zero_pages(&self) -> u64 {
        self.runs.iter().map(|r| r.1).sum()
    }

    /// Bytes of the file the segment's data takes: its stored pages.
    fn file_bytes(&self) -> u64 {
        (self.desc.len.div_ceil(PAGE) - self.zero_pages()) * PAGE
    }

    /// Writes the stored pages (every page no run names, the last one padded).
    fn write(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut runs = self.runs.iter().peekable();
        let mut buf = [0u8; PAGE as usize];
        let mut p = 0;
        let pages = self.desc.len.div_ceil(PAGE);
        while p < pages {
            if let Some(&&(first, n)) = runs.peek() {
                if first == p {
                    p += n;
                    runs.next();
                    continue;
                }
            }
            out.write_all(self.content.page(p, &mut buf))?;
            p += 1;
        }
        Ok(())
    }
}

/// PFN of a domU ring page (0 in the dom0 layout, which has none).
fn ring_pfn(plan: &Plan, va: Option<u64>) -> u64 {
    va.map_or(0, |va| (va - plan.virt_base) / 4096)
}

/// A plain-data value's bytes (`xenpv::Pod`: no padding), as a file holds them.
fn pod_bytes<T: Pod>(v: &T) -> Vec<u8> {
    v.as_bytes().to_vec()
}

/// The start_info page the new kernel finds, except the fields only known at run time
/// (`shared_info`, power-management flag bits), which the purgatory fills in.
fn start_info_page(plan: &Plan, cmdline: &str, nr_p2m_frames: u64) -> Result<Vec<u8>, LoadError> {
    let si = &plan.start_info_fields;
    let mut s = xenpv::StartInfo::zeroed();
    s.magic[..si.magic.len()].copy_from_slice(si.magic.as_bytes());
    s.nr_pages = si.nr_pages;
    s.flags = si.flags;
    s.pt_base = si.pt_base;
    s.nr_pt_frames = si.nr_pt_frames;
    s.mfn_list = si.mfn_list;
    s.mod_start = si.mod_start;
    s.mod_len = si.mod_len;
    s.first_p2m_pfn = si.first_p2m_pfn;
    s.nr_p2m_frames = nr_p2m_frames;
    if cmdline.len() >= s.cmd_line.len() {
        return Err(LoadError::new(
            "--append",
            None,
            Reason::Layout(format!(
                "command line of {} bytes exceeds 1023",
                cmdline.len()
            )),
        ));
    }
    s.cmd_line[..cmdline.len()].copy_from_slice(cmdline.as_bytes());
    let mut page = pod_bytes(&s);
    page.resize(4096, 0);
    Ok(page)
}

/// Builds the image for `kernel` (and `initrd`) in a domain of `domain_pages` frames, of which
/// `hidden` are kept from the new kernel; `cmdline` becomes the new kernel's start_info
/// command line.
pub fn build_image(
    input: &str,
    kernel: &ParsedKernel,
    initrd: Option<&[u8]>,
    cmdline: &str,
    domain_pages: u64,
    hidden: Hidden,
    mode: Mode,
) -> Result<BuiltImage, LoadError> {
    build_image_for(&BuildRequest {
        input,
        kernel,
        initrd,
        cmdline,
        domain_pages,
        old_p2m_len: 0,
        hidden,
        mode,
        builder: crate::plan::DomuBuilder::default(),
    })
}

/// [`build_image`] from a whole request (a ballooned domain's `old_p2m_len` included).
pub fn build_image_for(req: &BuildRequest) -> Result<BuiltImage, LoadError> {
    let mut bytes = Vec::new();
    let (plan, purgatory_relocations) = build_into(req, &mut bytes, "image")?;
    Ok(BuiltImage {
        bytes,
        plan,
        purgatory_relocations,
    })
}

/// [`build_image`] written straight to `path`, so the image is never whole in memory; returns
/// the plan and the purgatory relocations applied. A failed build leaves no file.
pub fn build_image_file(
    req: &BuildRequest,
    path: &std::path::Path,
) -> Result<(Plan, usize), LoadError> {
    let name = path.display().to_string();
    let file = std::fs::File::create(path)
        .map_err(|e| LoadError::new(&name, None, Reason::Write(e.to_string())))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let built = build_into(req, &mut out, &name).and_then(|r| {
        out.into_inner()
            .map_err(|e| LoadError::new(&name, None, Reason::Write(e.error().to_string())))
            .map(|_| r)
    });
    if built.is_err() {
        let _ = std::fs::remove_file(path);
    }
    built
}

/// What [`build_image`] takes (see there).
pub struct BuildRequest<'a> {
    /// Names the kernel in errors.
    pub input: &'a str,
    pub kernel: &'a ParsedKernel,
    pub initrd: Option<&'a [u8]>,
    pub cmdline: &'a str,
    /// Frames the domain has.
    pub domain_pages: u64,
    /// A ballooned domain: entries of the old kernel's P2M (its start_info `nr_pages`), of
    /// which `domain_pages` are present (the plan record's `old_p2m_len`); 0: no holes.
    pub old_p2m_len: u64,
    pub hidden: Hidden,
    pub mode: Mode,
    /// Which libxenguest's initrd placement a domU image follows (4.17: gunzipped).
    pub builder: crate::plan::DomuBuilder,
}

/// Builds the image and writes it to `out` (named `out_name` in errors).
fn build_into(
    req: &BuildRequest,
    out: &mut dyn ImageOut,
    out_name: &str,
) -> Result<(Plan, usize), LoadError> {
    let BuildRequest {
        input,
        kernel,
        initrd,
        cmdline,
        domain_pages,
        old_p2m_len,
        hidden,
        mode,
        builder,
    } = *req;
    if old_p2m_len != 0 && old_p2m_len < domain_pages {
        return Err(LoadError::new(
            input,
            None,
            Reason::Input(format!(
                "the domain has {domain_pages} frames, more than its start-of-day P2M's \
                 {old_p2m_len} entries (ballooned up past its start)"
            )),
        ));
    }
    if hidden.vcpu_reset && hidden.vcpu_pages != 0 {
        return Err(LoadError::new(
            "--xen-vcpu-reset",
            None,
            Reason::Input(format!(
                "{} frames hidden for the old kernel's VCPUs, but with VCPUs reset the \
                 purgatory hides none",
                hidden.vcpu_pages
            )),
        ));
    }
    let grant_reserve = hidden.grant_reserve;
    let nr_pages = hidden
        .pages()
        .and_then(|h| domain_pages.checked_sub(h))
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            LoadError::new(
                "--grant-reserve",
                None,
                Reason::Input(format!(
                    "{} frames for the old kernel's VCPUs and a grant reserve of {grant_reserve} \
                     frames leave nothing of a {domain_pages}-frame domain",
                    hidden.vcpu_pages
                )),
            )
        })?;
    let hidden_pages = domain_pages - nr_pages;
    crate::inspect::check_kernel_start(input, kernel)?;
    // A domU's builder gunzips a gzip'd initrd; the segment carries what it would place.
    let module = initrd.map(|i| crate::plan::placed_module_for(i, mode, builder));
    let initrd = module.as_ref().map(|m| &m.bytes[..]);
    // Aliases of every old frame lie past the crash kernel's own PFNs: start_info's nr_pages
    // and the P2M cover them (the plan record's nr_pages stays the frames it renumbers).
    let alias_count = hidden.aliases.map_or(0, |a| a.count);
    let plan = plan_kernel(
        input,
        kernel,
        module.as_ref().map(|m| m.len),
        nr_pages + alias_count,
        mode,
        Some(PURGATORY_BASE),
    )?;
    let purgatory = place(PURGATORY_ELF, PURGATORY_BASE)
        .map_err(|e| LoadError::new("embedded purgatory", None, Reason::Purgatory(e)))?;
    let layout_err = |e: pvlayout::PlanError| LoadError::new(input, None, Reason::Plan(e));
    let trampoline_pfn = nr_pages - 1;
    let mut tables = pvlayout::build_tables(&plan, Some(trampoline_pfn)).map_err(layout_err)?;
    let region_pages = (plan.region.end - plan.region.start) / 4096;
    // A relocated P2M (INIT_P2M) gets its own tables after the region and any unmapped initrd,
    // hooked into the region's L4.
    let p2m_map = if plan.p2m_relocated {
        let first = plan.start_info_fields.first_p2m_pfn;
        let m = pvlayout::build_p2m_mapping(&plan, first).map_err(layout_err)?;
        let l4 = tables
            .iter_mut()
            .find(|t| t.level == 4)
            .ok_or_else(|| layout_err(pvlayout::PlanError::Unsupported("no L4 planned")))?;
        if l4.entries[m.l4_slot] != 0 {
            return Err(layout_err(pvlayout::PlanError::Unsupported(
                "INIT_P2M shares an L4 slot with the region or the trampoline",
            )));
        }
        l4.entries[m.l4_slot] = m.l4_entry;
        Some(m)
    } else {
        None
    };
    let (p2m_pfn, p2m_pages, nr_p2m_frames, fill_pages) = match &p2m_map {
        Some(m) => (
            m.data_pfn,
            m.data_pages,
            m.nr_frames,
            plan.start_info_fields.first_p2m_pfn + m.nr_frames,
        ),
        None => (
            (plan.p2m.start - plan.virt_base) / 4096,
            pages(plan.p2m.end - plan.p2m.start),
            0,
            region_pages,
        ),
    };
    let initrd_end = match plan.initrd {
        Some(InitrdPlacement::Unmapped { pfn }) => pfn + pages(plan.start_info_fields.mod_len),
        _ => 0,
    };
    let fill_pages = fill_pages.max(initrd_end);
    if fill_pages > trampoline_pfn {
        return Err(layout_err(pvlayout::PlanError::TooSmall {
            needed: fill_pages + 1,
            nr_pages,
        }));
    }
    let mut kcontent = KernelContent::new(kernel);
    if let Some((at, page)) = crate::hypercall_page::page_for(input, kernel)? {
        kcontent.patch(at, &page);
    }
    let start_info = start_info_page(&plan, cmdline, nr_p2m_frames)?;
    let pt_pfn = (plan.page_tables.start - plan.virt_base) / 4096;
    let nr_pt = plan.start_info_fields.nr_pt_frames;
    let mut pt_template = vec![0u8; (nr_pt * 4096) as usize];
    for t in &tables {
        let at = ((t.pfn - pt_pfn) * 4096) as usize;
        for (i, e) in t.entries.iter().enumerate() {
            pt_template[at + i * 8..at + i * 8 + 8].copy_from_slice(&e.to_le_bytes());
        }
    }
    let record = PlanRecord {
        magic: PLAN_MAGIC,
        nr_pages,
        virt_base: plan.virt_base,
        region_pages,
        entry: plan.entry,
        rsp: plan.rsp,
        start_info_va: plan.start_info.start,
        pt_pfn,
        nr_pt_frames: nr_pt,
        p2m_pfn,
        p2m_pages,
        trampoline_va: PURGATORY_BASE,
        trampoline_pfn,
        mod_start: plan.start_info_fields.mod_start,
        mod_len: plan.start_info_fields.mod_len,
        fill_pages,
        domain_pages,
        hidden_pages,
        grant_reserve,
        xenstore_pfn: ring_pfn(&plan, plan.xenstore),
        console_pfn: ring_pfn(&plan, plan.console),
        old_p2m_len,
        flags: match req.hidden.vcpu_reset {
            true => pvhandoff::image::PLAN_FLAG_VCPU_RESET,
            false => 0,
        } | match req.hidden.aliases {
            Some(_) => pvhandoff::image::PLAN_FLAG_ALIASES,
            None => 0,
        },
        _reserved: [req.hidden.aliases.map_or(0, CrashAliases::word)],
    };
    if let Some(a) = req.hidden.aliases {
        if let Err(why) = record.check() {
            return Err(LoadError::new(
                input,
                None,
                crate::error::Reason::Layout(format!(
                    "{why}: {} old frames aliased and an ELF core header area of {} frames in a \
                     crash kernel of {} frames whose built PFNs end at {fill_pages}",
                    a.count, a.header_pages, record.nr_pages
                )),
            ));
        }
    }
    let record_bytes = pod_bytes(&record);
    if let Some(slot) = kernel.notes.plan_slot {
        // The kernel asked for the plan: it travels in the kernel segment (digest included).
        let at = slot.checked_sub(kernel.virt_kstart).filter(|a| {
            a.checked_add(record_bytes.len() as u64)
                .is_some_and(|e| e <= kcontent.len)
        });
        let Some(at) = at else {
            return Err(LoadError::new(
                input,
                None,
                Reason::Note(format!(
                    "PVKEXEC plan slot {slot:#x} is not {} file-backed bytes of the kernel ({:#x}..{:#x})",
                    record_bytes.len(),
                    kernel.virt_kstart,
                    kernel.virt_kstart + kcontent.len
                )),
            ));
        };
        kcontent.patch(at, &record_bytes);
    }
    let mut p2m_template = Vec::new();
    if let Some(m) = &p2m_map {
        for t in &m.tables {
            for e in t.entries.iter() {
                p2m_template.extend_from_slice(&e.to_le_bytes());
            }
        }
    }

    // File order: the purgatory and the zero-run table first, so that no segment before
    // either has zero runs (a kernel side finds the purgatory with version 2's rule), then the
    // placed segments, the templates and the metadata; the chunk table last.
    let mut segs: Vec<Seg> = Vec::new();
    segs.push(Seg::new(
        SegmentKind::Purgatory,
        SEG_FLAG_PURGATORY_MAPPING,
        PURGATORY_BASE / 4096,
        pages(purgatory.image.len() as u64),
        Content::Bytes(&purgatory.image),
    ));
    const ZERO_RUNS_AT: usize = 1;
    segs.push(Seg::new(
        SegmentKind::ZeroRuns,
        SEG_FLAG_METADATA,
        0,
        0,
        Content::Bytes(&[]),
    ));
    segs.push(Seg::new(
        SegmentKind::Kernel,
        0,
        (kernel.virt_kstart - plan.virt_base) / 4096,
        pages(kernel.virt_kend - kernel.virt_kstart),
        Content::Kernel(&kcontent),
    ));
    if let Some(data) = initrd {
        let pfn = match plan.initrd {
            Some(InitrdPlacement::Mapped(r)) => (r.start - plan.virt_base) / 4096,
            Some(InitrdPlacement::Unmapped { pfn }) => pfn,
            None => unreachable!("an initrd was planned"),
        };
        let nr = pages(data.len() as u64);
        segs.push(Seg::new(
            SegmentKind::Initrd,
            0,
            pfn,
            nr,
            Content::Bytes(data),
        ));
    }
    let si_pfn = (plan.start_info.start - plan.virt_base) / 4096;
    segs.push(Seg::new(
        SegmentKind::StartInfo,
        0,
        si_pfn,
        1,
        Content::Bytes(&start_info),
    ));
    segs.push(Seg::new(
        SegmentKind::PageTables,
        SEG_FLAG_TEMPLATE,
        pt_pfn,
        nr_pt,
        Content::Bytes(&pt_template),
    ));
    if let Some(m) = &p2m_map {
        segs.push(Seg::new(
            SegmentKind::PageTables,
            SEG_FLAG_TEMPLATE,
            m.tables[0].pfn,
            m.tables.len() as u64,
            Content::Bytes(&p2m_template),
        ));
    }
    segs.push(Seg::new(
        SegmentKind::Plan,
        SEG_FLAG_METADATA,
        0,
        0,
        Content::Bytes(&record_bytes),
    ));
    for (i, seg) in segs.iter_mut().enumerate() {
        if i != ZERO_RUNS_AT {
            seg.scan();
        }
    }

    // The zero-run table: every run found, by segment index (then page).
    let nr_runs: usize = segs.iter().map(|s| s.runs.len()).sum();
    let mut zero_table = pod_bytes(&ZeroRunsHeader {
        magic: ZERO_RUNS_MAGIC,
        nr_runs: u32::try_from(nr_runs).map_err(|_| {
            LoadError::new(
                input,
                None,
                Reason::Layout(format!("{nr_runs} zero runs: more than a table holds")),
            )
        })?,
        _reserved: 0,
    });
    for (i, seg) in segs.iter().enumerate() {
        let mut zeros_before = 0;
        for &(first_page, pages) in &seg.runs {
            zero_table.extend_from_slice(
                ZeroRun {
                    segment: i as u32,
                    _reserved: 0,
                    first_page,
                    pages,
                    zeros_before,
                }
                .as_bytes(),
            );
            zeros_before += pages;
        }
    }
    segs[ZERO_RUNS_AT] = Seg::new(
        SegmentKind::ZeroRuns,
        SEG_FLAG_METADATA,
        0,
        0,
        Content::Bytes(&zero_table),
    );
    // Parsing the image checks the whole table: no chunk digests for it.
    segs[ZERO_RUNS_AT].chunked = false;
    segs[ZERO_RUNS_AT].scan();

    // Per-chunk digests of every segment's contents but the purgatory's and the zero-run
    // table's: several VCPUs can then verify one large segment at once.
    let mut chunk_header = ChunkTableHeader {
        magic: CHUNKS_MAGIC,
        chunk_size: CHUNK_SIZE as u32,
        nr_entries: 0,
        first_entry: [NO_CHUNKS; MAX_SEGMENTS as usize],
    };
    let mut chunk_digests = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        if !seg.chunked {
            continue;
        }
        chunk_header.first_entry[i] = chunk_header.nr_entries;
        for c in &seg.chunks {
            chunk_digests.extend_from_slice(c);
            chunk_header.nr_entries += 1;
        }
    }
    let mut chunk_table = pod_bytes(&chunk_header);
    chunk_table.extend_from_slice(&chunk_digests);
    drop(chunk_digests);
    let mut chunks_seg = Seg::new(
        SegmentKind::ChunkDigests,
        SEG_FLAG_METADATA,
        0,
        0,
        Content::Bytes(&chunk_table),
    );
    chunks_seg.chunked = false;
    chunks_seg.scan();
    segs.push(chunks_seg);

    let table_len = 64 + 64 * segs.len();
    let data_offset = (table_len as u64).next_multiple_of(4096);
    let total_size = segs.iter().fold(data_offset, |at, s| at + s.file_bytes());
    let header = ImageHeader {
        magic: IMAGE_MAGIC,
        version: IMAGE_VERSION,
        header_size: 64,
        nr_segments: segs.len() as u32,
        params_offset: 0, // set by seal()
        purgatory_base: PURGATORY_BASE,
        purgatory_entry: purgatory.entry,
        kernel_entry: plan.entry,
        data_offset,
        total_size,
    };
    let mut head = vec![0u8; data_offset as usize];
    head[..64].copy_from_slice(&pod_bytes(&header));
    for (i, s) in segs.iter().enumerate() {
        let at = 64 + 64 * i;
        head[at..at + 64].copy_from_slice(&pod_bytes(&s.desc));
    }
    // The header digest goes into the purgatory's parameter block, outside its own digest.
    let (params_at, block) = crate::inspect::seal(&mut head[..table_len], &purgatory.image)?;
    let mut sealed = purgatory.image.clone();
    sealed[params_at..params_at + block.len()].copy_from_slice(&block);
    segs[0].content = Content::Bytes(&sealed);
    let write = |e: std::io::Error| LoadError::new(out_name, None, Reason::Write(e.to_string()));
    out.reserve(total_size);
    out.write_all(&head).map_err(write)?;
    for s in &segs {
        s.write(&mut *out).map_err(write)?;
    }
    out.flush().map_err(write)?;
    Ok((plan, purgatory.relocations))
}

/// Where [`build_into`] writes: a file or memory, told the image's size before the first byte.
trait ImageOut: std::io::Write {
    fn reserve(&mut self, _total: u64) {}
}

impl ImageOut for Vec<u8> {
    fn reserve(&mut self, total: u64) {
        self.reserve_exact(usize::try_from(total).unwrap_or(0));
    }
}

impl<W: std::io::Write> ImageOut for std::io::BufWriter<W> {}

pub use crate::inspect::inspect;
