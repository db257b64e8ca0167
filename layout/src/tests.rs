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

/// xen-pv-reference.md section 5.2, worked example, dom0 column.
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

/// xen-pv-reference.md section 5.2, worked example, domU column.
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
    assert_eq!(p.start_info_fields.flags, xenpv::sif::VIRT_P2M_4TOOLS);
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
