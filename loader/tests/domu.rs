//! The domU layout end to end on the host: a kernel with INIT_P2M and MOD_START_PFN and a
//! gzip'd initrd become an image whose segments sit where libxenguest would put them, whose
//! initrd is the gunzipped module, and whose plan record names the xenstore and console PFNs.

use loader::image::{build_image, Hidden};
use loader::kernel::parse_kernel;
use pvhandoff::image::{ImageView, PlanRecord};
use pvhandoff::SegmentKind;
use pvlayout::{InitrdPlacement, Mode};
use std::io::Write;

mod common;
use common::{elf_with, note, VIRT_BASE};

const INIT_P2M: u64 = 0x80_0000_0000;

/// An ELF64 PV kernel of one PT_LOAD (`len` bytes at paddr 0x1000000) with the notes a Linux
/// kernel has for the domU builder: INIT_P2M (15) and MOD_START_PFN (16).
fn linux_like_kernel(len: u64) -> Vec<u8> {
    let pa = 0x100_0000;
    let mut notes = Vec::new();
    note(&mut notes, 6, b"linux\0");
    note(&mut notes, 5, b"xen-3.0\0");
    note(&mut notes, 3, &VIRT_BASE.to_le_bytes());
    note(&mut notes, 4, &0u64.to_le_bytes());
    note(&mut notes, 1, &(VIRT_BASE + pa).to_le_bytes());
    note(&mut notes, 15, &INIT_P2M.to_le_bytes());
    note(&mut notes, 16, &1u32.to_le_bytes());
    elf_with(&[(pa, len, len)], &notes, VIRT_BASE + pa)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn domu_image_places_what_libxenguest_would() {
    let k = parse_kernel("linux-like", &linux_like_kernel(0x20_0000)).unwrap();
    let initrd: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let gz = gzip(&initrd);
    let built = build_image(
        "linux-like",
        &k,
        Some(&gz),
        "console=hvc0",
        0x10000,
        Hidden::default(),
        Mode::DomU,
    )
    .unwrap();
    let plan = &built.plan;
    let si = &plan.start_info_fields;
    // The module after virt_pgtab_end, sized ISIZE + 16 in whole pages; the P2M after it.
    let region_pages = (plan.region.end - plan.region.start) / 4096;
    let placed = (initrd.len() as u64 + 16).div_ceil(4096);
    assert_eq!(
        plan.initrd,
        Some(InitrdPlacement::Unmapped { pfn: region_pages })
    );
    assert_eq!((si.mod_start, si.mod_len), (region_pages, placed * 4096));
    assert_eq!(si.flags, xenpv::sif::MOD_START_PFN);
    assert_eq!(si.first_p2m_pfn, region_pages + placed);
    assert_eq!(si.nr_p2m_frames, Some(0x80 + 3));
    assert_eq!(si.mfn_list, INIT_P2M);

    let view = ImageView::parse(&built.bytes).unwrap();
    let find = |kind: SegmentKind| {
        view.segments()
            .enumerate()
            .filter(|(_, s)| s.kind == kind as u32)
            .map(|(i, s)| (s, view.data(i).unwrap()))
            .collect::<Vec<_>>()
    };
    // The initrd segment holds the gunzipped bytes.
    let rd = find(SegmentKind::Initrd);
    assert_eq!(rd.len(), 1);
    assert_eq!(rd[0].0.dest_pfn, region_pages);
    assert_eq!(&rd[0].1[..initrd.len()], &initrd[..]);
    assert_eq!(rd[0].0.len, initrd.len() as u64);
    // The P2M's own L3, L2, L1 follow its 0x80 frames.
    let pts = find(SegmentKind::PageTables);
    assert_eq!(pts.len(), 2);
    assert_eq!(pts[1].0.dest_pfn, si.first_p2m_pfn + 0x80);
    assert_eq!(pts[1].0.nr_pages, 3);
    // The region's L4 points at the P2M's L3 in slot 1 (INIT_P2M 0x8000000000).
    let l4 = u64::from_le_bytes(pts[0].1[8..16].try_into().unwrap());
    assert_eq!(l4 >> 12 & 0xf_ffff_ffff, si.first_p2m_pfn + 0x80);
    // The plan record names the ring pages: start_info PFN + 1 and + 2.
    let (_, rec) = find(SegmentKind::Plan)[0];
    assert!(rec.len() >= std::mem::size_of::<PlanRecord>());
    // SAFETY: the plan segment holds one PlanRecord (length checked).
    let rec = unsafe { (rec.as_ptr() as *const PlanRecord).read_unaligned() };
    let si_pfn = (si.address - VIRT_BASE) / 4096;
    assert_eq!(
        (rec.xenstore_pfn, rec.console_pfn),
        (si_pfn + 1, si_pfn + 2)
    );
    assert_eq!(rec.fill_pages, si.first_p2m_pfn + 0x83);
    let (_, ok) = loader::image::inspect("domu.img", &built.bytes).unwrap();
    assert!(ok);
}

#[test]
fn dom0_image_names_no_ring_pages_and_keeps_the_gzip() {
    let k = parse_kernel("linux-like", &linux_like_kernel(0x20_0000)).unwrap();
    let gz = gzip(&[7u8; 50_000]);
    let built = build_image(
        "linux-like",
        &k,
        Some(&gz),
        "",
        0x10000,
        Hidden::default(),
        Mode::Dom0,
    )
    .unwrap();
    let view = ImageView::parse(&built.bytes).unwrap();
    let i = view
        .segments()
        .position(|s| s.kind == SegmentKind::Initrd as u32)
        .unwrap();
    assert_eq!(view.data(i).unwrap().len(), gz.len());
    let p = view
        .segments()
        .position(|s| s.kind == SegmentKind::Plan as u32)
        .unwrap();
    // SAFETY: as above.
    let rec = unsafe { (view.data(p).unwrap().as_ptr() as *const PlanRecord).read_unaligned() };
    assert_eq!((rec.xenstore_pfn, rec.console_pfn), (0, 0));
}

/// With `PVKEXEC_DEBIAN_KERNEL` (set by `cargo xtask test`) the real Debian 6.1 bzImage gives
/// libxenguest's kernel line of the domU rig's `xl -vvv create` log (docs/domu-rig.md).
#[test]
fn debian_kernel_domu_plan_when_provided() {
    let Some(path) = std::env::var_os("PVKEXEC_DEBIAN_KERNEL") else {
        eprintln!("skipped: PVKEXEC_DEBIAN_KERNEL not set (cargo xtask test sets it)");
        return;
    };
    let k = parse_kernel("debian vmlinuz", &std::fs::read(&path).unwrap()).unwrap();
    let plan = loader::plan::plan_kernel("debian", &k, None, 0x10000, Mode::DomU, None).unwrap();
    let first = plan.builder_log[0].split_whitespace().collect::<Vec<_>>();
    assert_eq!(first[..3], ["xc_dom_alloc_segment:", "kernel", ":"]);
    assert_eq!(first[3], "0xffffffff81000000");
}

/// libxenguest up to 4.19 gunzips a domU's gzip'd initrd; 4.20 places the file as it is; Xen's
/// dom0 builder never gunzips.
#[test]
fn initrd_placement_follows_the_builder() {
    use loader::plan::{placed_module_for, DomuBuilder};
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
    let gz = gzip(&data);
    let m = placed_module_for(&gz, Mode::DomU, DomuBuilder::Xen417);
    assert_eq!((&m.bytes[..], m.len), (&data[..], data.len() as u64 + 16));
    for (mode, builder) in [
        (Mode::DomU, DomuBuilder::Xen420),
        (Mode::Dom0, DomuBuilder::Xen417),
    ] {
        let m = placed_module_for(&gz, mode, builder);
        assert_eq!((&m.bytes[..], m.len), (&gz[..], gz.len() as u64));
    }
    // A gzip header with a broken stream: the raw file, at the size the trailer announced.
    let mut broken = gz.clone();
    broken[20] ^= 0xff;
    let m = placed_module_for(&broken, Mode::DomU, DomuBuilder::Xen417);
    assert_eq!((&m.bytes[..], m.len), (&broken[..], data.len() as u64 + 16));
}
