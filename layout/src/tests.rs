extern crate std;
use super::*;
use proptest::prelude::*;
use std::vec;

fn kernel(virt_base: u64, len: u64) -> KernelInfo {
    KernelInfo {
        virt_base,
        virt_kstart: virt_base,
        virt_kend: virt_base + len,
        entry: virt_base,
        hypercall_page: None,
        init_p2m: None,
        mod_start_pfn: false,
        pae_mode_yes: false,
    }
}

fn req(mode: Mode, k: KernelInfo, initrd_len: Option<u64>, nr_pages: u64) -> PlanRequest {
    PlanRequest {
        kernel: k,
        initrd_len,
        nr_pages,
        mode,
        trampoline: None,
    }
}

fn r(start: u64, end: u64) -> Range {
    Range { start, end }
}

/// 2 MiB kernel at virt_base 0, 65536 pages, no initrd, as Xen's dom0 builder places it
/// (`xen/arch/x86/pv/dom0_build.c`: P2M, start_info, tables found by its sizing loop, stack).
#[test]
fn worked_example_dom0() {
    let p = plan(&req(Mode::Dom0, kernel(0, 2 << 20), None, 65536)).unwrap();
    assert_eq!(p.p2m, r(0x200000, 0x280000));
    assert_eq!(p.start_info.start, 0x280000);
    assert_eq!(p.page_tables, r(0x281000, 0x286000));
    assert_eq!(p.start_info_fields.nr_pt_frames, 5);
    assert_eq!(p.stack, r(0x286000, 0x287000));
    assert_eq!(p.rsp, 0x287000);
    assert_eq!(p.region.end, 0x400000);
    // L4, then first L1, L2, L3, then the second L1 (the region spans two 2 MiB ranges).
    let levels: vec::Vec<u8> = p.table_frames.iter().map(|f| f.level).collect();
    assert_eq!(levels, vec![4, 1, 2, 3, 1]);
}

/// The same kernel as libxenguest places it (`tools/libs/guest/xg_dom_x86.c`
/// `alloc_pgtables_pv`; xenstore and console pages after start_info).
#[test]
fn worked_example_domu() {
    let p = plan(&req(Mode::DomU, kernel(0, 2 << 20), None, 65536)).unwrap();
    assert_eq!(p.p2m, r(0x200000, 0x280000));
    assert_eq!(p.start_info.start, 0x280000);
    assert_eq!(p.xenstore, Some(0x281000));
    assert_eq!(p.console, Some(0x282000));
    assert_eq!(p.page_tables, r(0x283000, 0x288000));
    assert_eq!(p.stack, r(0x288000, 0x289000));
    assert_eq!(p.rsp, 0x289000);
    assert_eq!(p.region.end, 0x400000);
    let levels: vec::Vec<u8> = p.table_frames.iter().map(|f| f.level).collect();
    assert_eq!(levels, vec![4, 3, 2, 1, 1]);
    // libxl replaces libxenguest's default SIF_VIRT_P2M_4TOOLS with its own flags, 0.
    assert_eq!(p.start_info_fields.flags, 0);
}

/// Debian 6.1's bzImage as its ELF notes describe it (INIT_P2M, MOD_START_PFN).
fn debian61() -> KernelInfo {
    KernelInfo {
        virt_base: 0xffffffff80000000,
        virt_kstart: 0xffffffff81000000,
        virt_kend: 0xffffffff84a00000,
        entry: 0xffffffff83a2d1c0,
        hypercall_page: None,
        init_p2m: Some(0x8000000000),
        mod_start_pfn: true,
        pae_mode_yes: true,
    }
}

/// A gzip header and trailer for a blob of `len` bytes whose ISIZE is `isize`.
fn gzip_blob(len: usize, isize: u32) -> vec::Vec<u8> {
    let mut b = vec![0u8; len];
    b[..2].copy_from_slice(&[0x1f, 0x8b]);
    b[len - 4..].copy_from_slice(&isize.to_le_bytes());
    b
}

fn norm(s: &str) -> std::string::String {
    s.split_whitespace().collect::<vec::Vec<_>>().join(" ")
}

/// libxenguest's log from `xl -vvv create` in the domU rig (docs/domu-rig.md): Debian 6.1, 256 MiB, a gzip'd
/// initramfs of 0x102d8e bytes that unpacks to 0x203774 (placed: 0x203784).
const ORACLE_256: &str = "\
xc_dom_alloc_segment:   kernel       : 0xffffffff81000000 -> 0xffffffff84a00000  (pfn 0x1000 + 0x3a00 pages)
xc_dom_alloc_page   :   start info   : 0xffffffff84a00000 (pfn 0x4a00)
xc_dom_alloc_page   :   xenstore     : 0xffffffff84a01000 (pfn 0x4a01)
xc_dom_alloc_page   :   console      : 0xffffffff84a02000 (pfn 0x4a02)
count_pgtables: 0x0000007fffffffff/39: 0x0000ff8000000000 -> 0x0000ffffffffffff, 1 table(s)
count_pgtables: 0x000000003fffffff/30: 0x0000ffff80000000 -> 0x0000ffffbfffffff, 1 table(s)
count_pgtables: 0x00000000001fffff/21: 0x0000ffff80000000 -> 0x0000ffff84bfffff, 38 table(s)
xc_dom_alloc_segment:   page tables  : 0xffffffff84a03000 -> 0xffffffff84a2c000  (pfn 0x4a03 + 0x29 pages)
xc_dom_alloc_page   :   boot stack   : 0xffffffff84a2c000 (pfn 0x4a2c)
xc_dom_build_image  : virt_alloc_end : 0xffffffff84a2d000
xc_dom_build_image  : virt_pgtab_end : 0xffffffff84c00000
xc_dom_alloc_segment:   module0      : 0xffffffff84c00000 -> 0xffffffff84e03784  (pfn 0x4c00 + 0x204 pages)
count_pgtables: 0x0000007fffffffff/39: 0x0000008000000000 -> 0x000000ffffffffff, 1 table(s)
count_pgtables: 0x000000003fffffff/30: 0x0000008000000000 -> 0x000000803fffffff, 1 table(s)
count_pgtables: 0x00000000001fffff/21: 0x0000008000000000 -> 0x00000080001fffff, 1 table(s)
xc_dom_alloc_segment:   phys2mach    : 0xffffffff84e04000 -> 0xffffffff84e87000  (pfn 0x4e04 + 0x83 pages)";

#[test]
fn debian61_domu_matches_libxenguest_log() {
    let blob = gzip_blob(0x102d8e, 0x203774);
    assert_eq!(domu_module_len(&blob), 0x203784);
    let p = plan(&req(
        Mode::DomU,
        debian61(),
        Some(domu_module_len(&blob)),
        0x10000,
    ))
    .unwrap();
    let ours: vec::Vec<_> = p.builder_log.iter().map(|l| norm(l)).collect();
    let want: vec::Vec<_> = ORACLE_256.lines().map(norm).collect();
    assert_eq!(ours, want);
    let si = &p.start_info_fields;
    assert_eq!(si.address, 0xffffffff84a00000);
    assert_eq!(p.xenstore, Some(0xffffffff84a01000));
    assert_eq!(p.console, Some(0xffffffff84a02000));
    assert_eq!((si.pt_base, si.nr_pt_frames), (0xffffffff84a03000, 0x29));
    assert_eq!(p.rsp, 0xffffffff84a2d000);
    assert_eq!(p.region, r(0xffffffff80000000, 0xffffffff84c00000));
    assert_eq!(p.initrd, Some(InitrdPlacement::Unmapped { pfn: 0x4c00 }));
    assert_eq!((si.mod_start, si.mod_len), (0x4c00, 0x204000));
    assert_eq!(si.flags, xenpv::sif::MOD_START_PFN);
    assert_eq!(si.mfn_list, 0x8000000000);
    assert_eq!((si.first_p2m_pfn, si.nr_p2m_frames), (0x4e04, Some(0x83)));
    // The P2M's frames first, then its L3, L2 and L1.
    let m = build_p2m_mapping(&p, si.first_p2m_pfn).unwrap();
    assert_eq!(
        (m.data_pfn, m.data_pages, m.nr_frames),
        (0x4e04, 0x80, 0x83)
    );
    let t: vec::Vec<_> = m.tables.iter().map(|t| (t.level, t.pfn)).collect();
    assert_eq!(t, vec![(3, 0x4e84), (2, 0x4e85), (1, 0x4e86)]);
}

/// With 512 and 1024 MiB only the phys2mach line changes (the same rig's logs).
#[test]
fn debian61_domu_p2m_grows_with_memory() {
    let blob = gzip_blob(0x102d8e, 0x203774);
    for (pages, p2m_pages) in [(0x20000u64, 0x103u64), (0x40000, 0x203)] {
        let p = plan(&req(
            Mode::DomU,
            debian61(),
            Some(domu_module_len(&blob)),
            pages,
        ))
        .unwrap();
        let mut want: vec::Vec<_> = ORACLE_256.lines().map(norm).collect();
        let last = want.len() - 1;
        want[last] = norm(&std::format!(
            "xc_dom_alloc_segment: phys2mach : 0xffffffff84e04000 -> {:#x} (pfn 0x4e04 + {:#x} pages)",
            0xffffffff84e04000u64 + (pages * 8).next_multiple_of(4096) + 3 * 4096,
            p2m_pages
        ));
        let ours: vec::Vec<_> = p.builder_log.iter().map(|l| norm(l)).collect();
        assert_eq!(ours, want, "{pages:#x} pages");
        assert_eq!(p.start_info_fields.nr_p2m_frames, Some(p2m_pages));
    }
}

/// A plain (non-gzip) module keeps its size; a gzip ISIZE past 1 GiB is not trusted.
#[test]
fn domu_module_len_follows_xc_dom_check_gzip() {
    assert_eq!(domu_module_len(&[1, 2, 3]), 3);
    assert_eq!(domu_module_len(&[0x1f, 0x8b, 0, 0, 0]), 5);
    assert_eq!(domu_module_len(&gzip_blob(100, 10)), 100);
    assert_eq!(domu_module_len(&gzip_blob(100, 1000)), 1016);
    assert_eq!(domu_module_len(&gzip_blob(100, (1 << 30) + 1)), 100);
}

/// Without MOD_START_PFN the module is mapped right after the kernel, before start_info.
#[test]
fn domu_mapped_initrd_follows_the_kernel() {
    let mut k = debian61();
    k.mod_start_pfn = false;
    let p = plan(&req(Mode::DomU, k, Some(0x203784), 0x10000)).unwrap();
    assert_eq!(
        p.initrd,
        Some(InitrdPlacement::Mapped(r(
            0xffffffff84a00000,
            0xffffffff84c03784
        )))
    );
    assert_eq!(p.start_info.start, 0xffffffff84c04000);
    let si = &p.start_info_fields;
    assert_eq!(
        (si.mod_start, si.mod_len, si.flags),
        (0xffffffff84a00000, 0x203784, 0)
    );
    assert!(p.builder_log[1].contains("module0"));
}

/// The layout Xen 4.17 printed for the boot-check kernel at 64 MiB (see the QEMU tests).
#[test]
fn bootcheck_kernel_at_64mib_matches_xen_log() {
    let k = kernel(0xffffffff80000000, 0x1c000);
    let p = plan(&req(Mode::Dom0, k, None, 16384)).unwrap();
    let text = p.render_xen_arrangement();
    assert_eq!(
        text,
        "VIRTUAL MEMORY ARRANGEMENT:\n \
         Loaded kernel: ffffffff80000000->ffffffff8001c000\n \
         Phys-Mach map: ffffffff8001c000->ffffffff8003c000\n \
         Start info:    ffffffff8003c000->ffffffff8003c4b8\n \
         Page tables:   ffffffff8003d000->ffffffff80042000\n \
         Boot stack:    ffffffff80042000->ffffffff80043000\n \
         TOTAL:         ffffffff80000000->ffffffff80400000\n \
         ENTRY ADDRESS: ffffffff80000000\n"
    );
    assert_eq!(p.start_info_fields.first_p2m_pfn, 0x400);
}

/// Linux 6.1 at 256 MiB as Xen 4.17 laid it out (INIT_P2M, MOD_START_PFN, PAE "yes").
#[test]
fn linux_at_256mib_matches_xen_log() {
    let k = KernelInfo {
        virt_base: 0xffffffff80000000,
        virt_kstart: 0xffffffff81000000,
        virt_kend: 0xffffffff84a00000,
        entry: 0xffffffff830791c0,
        hypercall_page: None,
        init_p2m: Some(0x8000000000),
        mod_start_pfn: true,
        pae_mode_yes: true,
    };
    let p = plan(&req(Mode::Dom0, k.clone(), Some(0xa6d8), 65536)).unwrap();
    assert_eq!(p.p2m, r(0x8000000000, 0x8000080000));
    assert_eq!(p.start_info, r(0xffffffff84a00000, 0xffffffff84a004b8));
    assert_eq!(p.page_tables, r(0xffffffff84a01000, 0xffffffff84a2a000));
    assert_eq!(p.stack, r(0xffffffff84a2a000, 0xffffffff84a2b000));
    assert_eq!(p.region, r(0xffffffff80000000, 0xffffffff84c00000));
    assert_eq!(p.start_info_fields.magic, "xen-3.0-x86_64p");
    assert!(matches!(p.initrd, Some(InitrdPlacement::Unmapped { .. })));
    // 32 MiB is too small, as Xen's builder says ("Domain 0 allocation is too small").
    assert!(matches!(
        plan(&req(Mode::Dom0, k, None, 8192)),
        Err(PlanError::TooSmall { .. })
    ));
}

#[test]
fn bad_inputs_are_refused() {
    let mut k = kernel(0x1000, 0x10000);
    k.init_p2m = Some(0x2000);
    assert_eq!(
        plan(&req(Mode::Dom0, k, None, 65536)),
        Err(PlanError::P2mInsideKernel { p2m_base: 0x2000 })
    );
    let mut k = kernel(0, 0x10000);
    k.entry = 0x20000;
    assert!(matches!(
        plan(&req(Mode::Dom0, k, None, 65536)),
        Err(PlanError::BadKernel(_))
    ));
    let mut rq = req(Mode::Dom0, kernel(0, 0x10000), None, 65536);
    rq.trampoline = Some(0x1000);
    assert_eq!(plan(&rq), Err(PlanError::BadTrampoline(0x1000)));
    assert!(matches!(
        plan(&req(Mode::Dom0, kernel(0, 0x10000), None, 100)),
        Err(PlanError::TooSmall { .. })
    ));
    let k = kernel(0xffff800000000000, 0x10000);
    assert_eq!(
        plan(&req(Mode::Dom0, k, None, 65536)),
        Err(PlanError::OverlapsXen)
    );
    // A 64 TiB kernel would need 32 Mi table frames: refused before any table is listed.
    for mode in [Mode::Dom0, Mode::DomU] {
        assert!(matches!(
            plan(&req(mode, kernel(0, 1 << 46), None, u64::MAX / 16)),
            Err(PlanError::RegionTooLarge { .. })
        ));
    }
}

#[test]
fn trampoline_tables_are_counted() {
    let base = req(Mode::Dom0, kernel(0xffffffff80000000, 0x1c000), None, 16384);
    let without = plan(&base).unwrap();
    let mut with = base.clone();
    with.trampoline = Some(0x7f00_0000_0000);
    let with = plan(&with).unwrap();
    assert_eq!(
        with.start_info_fields.nr_pt_frames,
        without.start_info_fields.nr_pt_frames + 3
    );
    let extra: vec::Vec<u8> = with.table_frames[without.table_frames.len()..]
        .iter()
        .map(|f| f.level)
        .collect();
    assert_eq!(extra, vec![3, 2, 1]);
    assert!(with.table_frames.last().unwrap().covers.start <= 0x7f00_0000_0000);
}

fn check_invariants(p: &Plan) -> Result<(), TestCaseError> {
    let el = p.elements();
    for (name, range) in &el {
        prop_assert_eq!(range.start % PAGE_SIZE, 0, "{} start aligned", name);
        prop_assert!(
            range.start >= p.region.start && range.end <= p.region.end,
            "{} in region",
            name
        );
    }
    for w in el.windows(2) {
        prop_assert!(w[0].1.end <= w[1].1.start, "{} before {}", w[0].0, w[1].0);
    }
    prop_assert_eq!(p.region.end % (4 << 20), 0);
    prop_assert!(p.region.end - p.stack.end >= 512 << 10);
    prop_assert_eq!(
        p.page_tables.len() / PAGE_SIZE,
        p.start_info_fields.nr_pt_frames
    );
    prop_assert!(p.table_frames.len() as u64 <= p.start_info_fields.nr_pt_frames);
    // Every 2 MiB of the region has an L1, every 1 GiB an L2, every 512 GiB an L3.
    for level in [1u8, 2, 3] {
        for idx in tables::spans(p.region.start, p.region.end, level) {
            let c = tables::cover(level, idx);
            prop_assert!(
                p.table_frames
                    .iter()
                    .any(|f| f.level == level && f.covers == c),
                "no L{} for {:#x}",
                level,
                c.start
            );
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn plan_invariants(
        dom0 in any::<bool>(),
        base_slot in 0u64..3,
        kpages in 1u64..20_000,
        kgap in 0u64..600,
        initrd in proptest::option::of(1u64..50_000_000),
        extra_pages in 0u64..300_000,
    ) {
        let virt_base = [0u64, 0xffffffff80000000, 0x40000000][base_slot as usize];
        let mut k = kernel(virt_base, kpages * PAGE_SIZE);
        k.virt_kstart += kgap * PAGE_SIZE;
        k.virt_kend += kgap * PAGE_SIZE;
        k.entry = k.virt_kstart;
        let nr_pages = kpages + kgap + extra_pages + 2048;
        let mode = if dom0 { Mode::Dom0 } else { Mode::DomU };
        match plan(&req(mode, k, initrd, nr_pages)) {
            Ok(p) => check_invariants(&p)?,
            Err(PlanError::TooSmall { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }

    #[test]
    fn arbitrary_requests_never_panic(
        vb in any::<u64>(), ks in any::<u64>(), ke in any::<u64>(), en in any::<u64>(),
        p2m in proptest::option::of(any::<u64>()), initrd in proptest::option::of(any::<u64>()),
        nr_pages in any::<u64>(), dom0 in any::<bool>(), tramp in proptest::option::of(any::<u64>()),
    ) {
        let k = KernelInfo { virt_base: vb & !0xfff, virt_kstart: ks, virt_kend: ke, entry: en,
            hypercall_page: None, init_p2m: p2m, mod_start_pfn: false, pae_mode_yes: false };
        let mode = if dom0 { Mode::Dom0 } else { Mode::DomU };
        let mut rq = req(mode, k, initrd, nr_pages);
        rq.trampoline = tramp;
        let _ = plan(&rq);
    }
}

/// Walks PFN-term tables like the MMU would, from the L4 (first frame).
fn walk(tables: &[TableImage], va: u64) -> Option<u64> {
    let mut table = &tables[0];
    for level in (1..=4u32).rev() {
        let e = table.entries[xenpv::pte::index(va, level)];
        if e & xenpv::pte::P == 0 {
            return None;
        }
        if level == 1 {
            return Some(e);
        }
        let pfn = xenpv::pte::mfn(e);
        table = tables.iter().find(|t| t.pfn == pfn)?;
    }
    None
}

#[test]
fn table_images_map_the_region_and_the_trampoline() {
    for (mode, k, pages) in [
        (Mode::Dom0, kernel(0xffffffff80000000, 0x1c000), 262144u64),
        (Mode::DomU, kernel(0, 2 << 20), 65536),
        (Mode::Dom0, kernel(0x3fe00000, 0x300000), 300000), // crosses a 1 GiB boundary
    ] {
        let mut rq = req(mode, k, Some(5 << 20), pages);
        rq.trampoline = Some(0x7f00_0000_0000);
        let p = plan(&rq).unwrap();
        let tables = build_tables(&p, Some(0x1234)).unwrap();
        assert_eq!(tables[0].level, 4);
        let mut va = p.region.start;
        while va < p.region.end {
            let e = walk(&tables, va).unwrap_or_else(|| panic!("{va:#x} unmapped"));
            assert_eq!(xenpv::pte::mfn(e), (va - p.virt_base) / PAGE_SIZE);
            let table_page = va >= p.page_tables.start && va < p.page_tables.end;
            assert_eq!(e & xenpv::pte::RW == 0, table_page, "{va:#x}");
            va += PAGE_SIZE;
        }
        assert!(walk(&tables, p.region.end).is_none());
        let t = walk(&tables, 0x7f00_0000_0000).unwrap();
        assert_eq!(xenpv::pte::mfn(t), 0x1234);
        // Every table frame is used, and none twice.
        assert_eq!(tables.len(), p.table_frames.len());
    }
}

/// libxenguest ignores an INIT_P2M at or above virt_base (the P2M stays in the region), and
/// refuses nothing else here; an INIT_P2M whose tables would share the region's is refused by
/// name rather than planned with tables the image could not build.
#[test]
fn domu_init_p2m_rules() {
    let mut k = debian61();
    k.init_p2m = Some(0xffffffffc0000000);
    let p = plan(&req(Mode::DomU, k, None, 0x10000)).unwrap();
    assert!(!p.p2m_relocated);
    assert!(p.builder_log.iter().any(|l| l.contains("phys2mach")));
    assert!(p.p2m.start >= p.region.start && p.p2m.end <= p.region.end);
    // In the region's own L4 slot (below virt_base): its L3 is the region's.
    let mut k = debian61();
    k.init_p2m = Some(0xffffff8000000000);
    assert!(matches!(
        plan(&req(Mode::DomU, k, None, 0x10000)),
        Err(PlanError::Unsupported(_))
    ));
}

/// Too little memory is named, as libxenguest's "segment too large" or "not enough memory for
/// initial mapping".
#[test]
fn domu_too_small_is_named() {
    for pages in [0x3000u64, 0x4b00, 0x4c10] {
        match plan(&req(Mode::DomU, debian61(), Some(0x203784), pages)) {
            Err(PlanError::TooSmall { nr_pages, needed }) => {
                assert_eq!(nr_pages, pages);
                assert!(needed > pages, "{needed:#x} > {pages:#x}");
            }
            other => panic!("{pages:#x} pages: {other:?}"),
        }
    }
}
