//! Domains far past the 4 GiB the purgatory's static bitmap used to cover, planned and built on
//! the host in both layouts: the plan record keeps its promises, the purgatory segment is the
//! same few pages at every size (no bss carried as zeros, nothing sized to the domain), and the
//! working memory a kernel side must hand over follows `pvhandoff::handoff::work_pages`.

use loader::image::{build_image, Hidden};
use loader::kernel::parse_kernel;
use pvhandoff::handoff::{work_pages, WORK_FIXED_PAGES};
use pvhandoff::image::{ImageView, PlanRecord, SEG_FLAG_PURGATORY_MAPPING};
use pvhandoff::SegmentKind;
use pvlayout::Mode;

mod common;
use common::{elf_with, note, VIRT_BASE};

/// Frames per GiB.
const GIB: u64 = 1 << 18;

/// A PV kernel of one PT_LOAD (`len` bytes at paddr 0) with the basic Xen notes.
fn kernel(len: u64) -> Vec<u8> {
    let mut notes = Vec::new();
    note(&mut notes, 6, b"linux\0");
    note(&mut notes, 5, b"xen-3.0\0");
    note(&mut notes, 3, &VIRT_BASE.to_le_bytes());
    note(&mut notes, 4, &0u64.to_le_bytes());
    note(&mut notes, 1, &VIRT_BASE.to_le_bytes());
    elf_with(&[(0, len, len)], &notes, VIRT_BASE)
}

/// The image for `frames` frames of a domain whose old kernel ran 2 VCPUs (5 hidden frames),
/// with its plan record and the purgatory segment's (len, nr_pages).
fn build(mode: Mode, frames: u64) -> (PlanRecord, (u64, u64)) {
    let k = parse_kernel("k", &kernel(0x5000)).unwrap();
    let hidden = Hidden {
        vcpu_pages: 5,
        grant_reserve: 0,
        vcpu_reset: false,
        aliases: None,
    };
    let built = build_image("k", &k, None, "", frames, hidden, mode)
        .unwrap_or_else(|e| panic!("{mode:?} {frames} frames: {e}"));
    let view = ImageView::parse(&built.bytes).unwrap();
    let plan_at = view
        .segments()
        .position(|s| s.kind == SegmentKind::Plan as u32)
        .unwrap();
    let plan = PlanRecord::read(view.data(plan_at).unwrap()).unwrap();
    let p = view
        .segments()
        .find(|s| s.flags & SEG_FLAG_PURGATORY_MAPPING != 0)
        .unwrap();
    (plan, (p.len, p.nr_pages))
}

#[test]
fn domains_up_to_512_gib_are_planned_in_both_layouts() {
    for mode in [Mode::Dom0, Mode::DomU] {
        let (_, small) = build(mode, 16384);
        for frames in [GIB, 6 * GIB, 64 * GIB, 512 * GIB] {
            let (plan, purgatory) = build(mode, frames);
            assert_eq!(plan.check(), Ok(()), "{mode:?} {frames}");
            assert_eq!(plan.domain_pages, frames);
            assert_eq!(plan.nr_pages + plan.hidden_pages, frames);
            // The P2M list covers every new PFN.
            assert!(plan.p2m_pages * 512 >= plan.nr_pages, "{mode:?} {frames}");
            // The purgatory does not grow with the domain and carries no bss: its pages are
            // exactly its file bytes, and it stays below the 2 MiB the kernel sides map.
            assert_eq!(purgatory, small, "{mode:?} {frames}");
            assert_eq!(purgatory.1, purgatory.0.div_ceil(4096));
            // Code and data only (was 299,880 bytes with its 230 KB bss of bitmap and stacks;
            // 123,524 with a Linux crash kernel's aliases, ELF core header and frontend reset).
            assert!(
                purgatory.0 <= 128 * 1024,
                "purgatory segment of {} bytes",
                purgatory.0
            );
            assert!(purgatory.1 < 511);
        }
    }
    // The working memory a kernel side hands over for 512 GiB: the fixed part and 16 MiB of
    // bitmap (one bit per frame).
    assert_eq!(work_pages(512 * GIB), Some(WORK_FIXED_PAGES + 4096));
}

/// The largest domain this kernel can be planned for is bounded by the region's virtual space
/// (its P2M list lies in the region above VIRT_BASE), not by the purgatory: past it the plan
/// is refused by name.
#[test]
fn past_the_virtual_space_the_plan_is_refused() {
    let k = parse_kernel("k", &kernel(0x5000)).unwrap();
    for mode in [Mode::Dom0, Mode::DomU] {
        let e = build_image("k", &k, None, "", 1024 * GIB, Hidden::default(), mode)
            .err()
            .unwrap_or_else(|| panic!("{mode:?}: 1 TiB fits 2 GiB of virtual space?"));
        assert!(e.to_string().contains("overflow"), "{mode:?}: {e}");
    }
}

/// A ballooned domain: the plan is for the frames it has (49152 of a 65536-entry P2M), and the
/// record names the old P2M's length; more frames than that P2M has entries is refused.
#[test]
fn a_ballooned_domain_is_planned_for_its_present_frames() {
    let k = parse_kernel("k", &kernel(0x5000)).unwrap();
    let req = |domain_pages, old_p2m_len| loader::image::BuildRequest {
        input: "k",
        kernel: &k,
        initrd: None,
        cmdline: "",
        domain_pages,
        old_p2m_len,
        hidden: Hidden {
            vcpu_pages: 5,
            grant_reserve: 0,
            vcpu_reset: false,
            aliases: None,
        },
        mode: Mode::DomU,
        builder: Default::default(),
    };
    let built = loader::image::build_image_for(&req(49152, 65536)).unwrap();
    let view = ImageView::parse(&built.bytes).unwrap();
    let at = view
        .segments()
        .position(|s| s.kind == SegmentKind::Plan as u32)
        .unwrap();
    let plan = PlanRecord::read(view.data(at).unwrap()).unwrap();
    assert_eq!(plan.check(), Ok(()));
    assert_eq!(
        (plan.domain_pages, plan.nr_pages, plan.old_p2m_len),
        (49152, 49147, 65536)
    );
    let e = loader::image::build_image_for(&req(65536, 49152))
        .err()
        .expect("more frames than the old P2M's entries");
    assert!(e.to_string().contains("ballooned up"), "{e}");
}
