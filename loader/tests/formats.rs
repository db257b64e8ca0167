//! Every container and payload compression on real compressed data (compressed here with the
//! crates' encoders), and bad inputs that must give clear errors, never panics.

use loader::decompress::Compression;
use loader::kernel::{parse_kernel, Container};
use loader::Reason;
use proptest::prelude::*;
use std::io::Write;

mod common;
use common::{elf_with, note, VIRT_BASE};

fn pv_notes(extra: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut n = Vec::new();
    note(&mut n, 6, b"linux\0");
    note(&mut n, 5, b"xen-3.0\0");
    note(&mut n, 3, &VIRT_BASE.to_le_bytes());
    note(&mut n, 4, &0u64.to_le_bytes());
    note(&mut n, 1, &(VIRT_BASE + 0x1000).to_le_bytes());
    for (ty, d) in extra {
        note(&mut n, *ty, d);
    }
    n
}

fn test_elf() -> Vec<u8> {
    elf_with(
        &[(0, 0x3000, 0x3000), (0x3000, 0x1800, 0x5000)],
        &pv_notes(&[]),
        VIRT_BASE + 0x1000,
    )
}

fn bzimage(payload: &[u8], declared: u32) -> Vec<u8> {
    let setup_sects = 4u8;
    let mut b = vec![0u8; (setup_sects as usize + 1) * 512];
    b[0x1F1] = setup_sects;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
    let mut p = payload.to_vec();
    p.extend_from_slice(&declared.to_le_bytes());
    b[0x248..0x24C].copy_from_slice(&0x40u32.to_le_bytes()); // payload_offset
    b[0x24C..0x250].copy_from_slice(&(p.len() as u32).to_le_bytes());
    b.extend(std::iter::repeat_n(0xCC, 0x40));
    b.extend_from_slice(&p);
    b
}

fn lz4_legacy(data: &[u8]) -> Vec<u8> {
    let mut out = 0x184C_2102u32.to_le_bytes().to_vec();
    for chunk in data.chunks(8 << 20) {
        let c = lz4_flex::block::compress(chunk);
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        out.extend_from_slice(&c);
    }
    out
}

/// A minimal lzop file (version 0x1030, method 1, no checksums) with LZO1X blocks.
fn lzop(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x89, b'L', b'Z', b'O', 0x00, 0x0D, 0x0A, 0x1A, 0x0A];
    out.extend_from_slice(&0x1030u16.to_be_bytes()); // version
    out.extend_from_slice(&0x2080u16.to_be_bytes()); // library version
    out.extend_from_slice(&0x0940u16.to_be_bytes()); // version needed
    out.push(1); // method
    out.push(5); // level
    out.extend_from_slice(&0u32.to_be_bytes()); // flags
    out.extend_from_slice(&0o100644u32.to_be_bytes()); // mode
    out.extend_from_slice(&0u32.to_be_bytes()); // mtime low
    out.extend_from_slice(&0u32.to_be_bytes()); // mtime high
    out.push(0); // name length
    out.extend_from_slice(&0u32.to_be_bytes()); // header checksum (not verified)
    for chunk in data.chunks(256 * 1024) {
        let c = lzokay_native::compress(chunk).unwrap();
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        if c.len() < chunk.len() {
            out.extend_from_slice(&(c.len() as u32).to_be_bytes());
            out.extend_from_slice(&c);
        } else {
            out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            out.extend_from_slice(chunk);
        }
    }
    out.extend_from_slice(&0u32.to_be_bytes());
    out
}

fn compress(format: Compression, data: &[u8]) -> Vec<u8> {
    match format {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Bzip2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Xz => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Lzma => {
            let opts = xz2::stream::LzmaOptions::new_preset(6).unwrap();
            let stream = xz2::stream::Stream::new_lzma_encoder(&opts).unwrap();
            let mut e = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(data, 19).unwrap(),
        Compression::Lz4 => lz4_legacy(data),
        Compression::Lzo => lzop(data),
        Compression::None => data.to_vec(),
    }
}

const ALL: [Compression; 8] = [
    Compression::Gzip,
    Compression::Bzip2,
    Compression::Xz,
    Compression::Lzma,
    Compression::Zstd,
    Compression::Lz4,
    Compression::Lzo,
    Compression::None,
];

#[test]
fn every_bzimage_compression_yields_the_original_elf() {
    let elf = test_elf();
    for format in ALL {
        let payload = compress(format, &elf);
        assert_eq!(Compression::detect(&payload), Some(format));
        let image = bzimage(&payload, elf.len() as u32);
        let k = parse_kernel(format.name(), &image)
            .unwrap_or_else(|e| panic!("{}: {e}", format.name()));
        if format == Compression::None {
            // An uncompressed payload is taken whole, size trailer included.
            assert!(k.elf.starts_with(&elf));
        } else {
            assert_eq!(k.elf, elf, "{}", format.name());
        }
        assert_eq!(
            k.container,
            Container::BzImage {
                version: 0x020F,
                compression: format
            }
        );
        assert_eq!(k.virt_kstart, VIRT_BASE);
        assert_eq!(k.virt_kend, VIRT_BASE + 0x8000);
        assert_eq!(k.entry, VIRT_BASE + 0x1000);
    }
}

#[test]
fn plain_and_gzip_elf() {
    let elf = test_elf();
    let k = parse_kernel("plain", &elf).unwrap();
    assert_eq!(k.container, Container::Elf);
    assert_eq!(k.segments.len(), 2);
    assert_eq!(k.segments[1].dest, VIRT_BASE + 0x3000);
    let k = parse_kernel("gz", &compress(Compression::Gzip, &elf)).unwrap();
    assert_eq!(k.container, Container::GzipElf);
    assert_eq!(k.elf, elf);
}

#[test]
fn payload_past_its_bound_is_refused() {
    let elf = test_elf();
    for format in [
        Compression::Gzip,
        Compression::Xz,
        Compression::Zstd,
        Compression::Lz4,
        Compression::Lzo,
    ] {
        let image = bzimage(&compress(format, &elf), (elf.len() / 2) as u32);
        let err = parse_kernel("bomb", &image).unwrap_err();
        assert!(
            matches!(err.reason, Reason::TooLarge { .. }),
            "{}: {err}",
            format.name()
        );
    }
}

#[test]
fn bad_inputs_name_the_reason() {
    let elf = test_elf();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "truncated"),
        (
            "wrong magic",
            b"MZ this is not a kernel at all".to_vec(),
            "no ELF, gzip or bzImage",
        ),
        ("truncated elf", elf[..40].to_vec(), "truncated"),
        (
            "truncated bzimage",
            bzimage(&compress(Compression::Xz, &elf), elf.len() as u32)[..0x300].to_vec(),
            "outside",
        ),
        (
            "bad gzip",
            {
                let mut g = compress(Compression::Gzip, &elf);
                g.truncate(g.len() / 2);
                g
            },
            "gzip",
        ),
        (
            "overlapping loads",
            elf_with(
                &[(0, 0x3000, 0x3000), (0x2000, 0x100, 0x100)],
                &pv_notes(&[]),
                VIRT_BASE + 0x1000,
            ),
            "overlaps",
        ),
        (
            "out-of-order loads",
            elf_with(
                &[(0x4000, 0x100, 0x100), (0, 0x100, 0x100)],
                &pv_notes(&[]),
                VIRT_BASE + 0x1000,
            ),
            "overlaps or precedes",
        ),
        (
            "numeric note of 3 bytes",
            elf_with(
                &[(0, 0x3000, 0x3000)],
                &pv_notes(&[(15, vec![1, 2, 3])]),
                VIRT_BASE + 0x1000,
            ),
            "numeric payload of 3 bytes",
        ),
        (
            "INIT_P2M inside the kernel",
            elf_with(
                &[(0, 0x3000, 0x3000)],
                &pv_notes(&[(15, (VIRT_BASE + 0x2000).to_le_bytes().to_vec())]),
                VIRT_BASE + 0x1000,
            ),
            "INIT_P2M",
        ),
        (
            "no notes",
            elf_with(&[(0, 0x3000, 0x3000)], &[], VIRT_BASE + 0x1000),
            "no Xen ELF notes",
        ),
        (
            "required unprovidable feature",
            elf_with(
                &[(0, 0x3000, 0x3000)],
                &pv_notes(&[(10, b"!auto_translated_physmap\0".to_vec())]),
                VIRT_BASE + 0x1000,
            ),
            "cannot have",
        ),
        (
            "unknown required feature",
            elf_with(
                &[(0, 0x3000, 0x3000)],
                &pv_notes(&[(10, b"!flying\0".to_vec())]),
                VIRT_BASE + 0x1000,
            ),
            "unknown feature",
        ),
        (
            "entry outside",
            elf_with(
                &[(0, 0x3000, 0x3000)],
                &pv_notes(&[(1, (VIRT_BASE + 0x9000).to_le_bytes().to_vec())]),
                VIRT_BASE,
            ),
            "entry",
        ),
    ];
    for (name, bytes, want) in cases {
        let err = parse_kernel(name, &bytes).expect_err(name).to_string();
        assert!(
            err.starts_with(name),
            "{name}: error does not name the input: {err}"
        );
        assert!(err.contains(want), "{name}: {err:?} lacks {want:?}");
    }
    // A note whose size runs past its area is refused with the offset of that note.
    let mut n = pv_notes(&[]);
    let len = n.len();
    n[len - 20..len - 16].copy_from_slice(&0x1000u32.to_le_bytes()); // descsz of the last note
    let err = parse_kernel(
        "bad note size",
        &elf_with(&[(0, 0x3000, 0x3000)], &n, VIRT_BASE + 0x1000),
    )
    .unwrap_err();
    assert!(
        err.offset.is_some() && err.to_string().contains("run past"),
        "{err}"
    );
    // 32-bit ELF.
    let mut e32 = elf.clone();
    e32[4] = 1;
    assert!(parse_kernel("elf32", &e32)
        .unwrap_err()
        .to_string()
        .contains("32-bit"));
}

#[test]
fn legacy_xen_guest_string() {
    let notes = loader::notes::XenNotes::from_legacy(
        "GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xffffffff80000000,HYPERCALL_PAGE=0x2,LOADER=generic",
    )
    .unwrap();
    assert_eq!(notes.paddr_offset, Some(VIRT_BASE));
    assert_eq!(notes.hypercall_page, Some(VIRT_BASE + 0x2000));
    assert!(notes.legacy);
}

#[test]
fn debian_bzimage_opens_when_provided() {
    // The QEMU differential test (qemu-tests/harness/tests/plan_vs_xen.rs) always opens
    // Debian's bzImage; this host test does too when `cargo xtask test` names the kernel it
    // provisioned in PVKEXEC_DEBIAN_KERNEL.
    let Some(path) = std::env::var_os("PVKEXEC_DEBIAN_KERNEL") else {
        eprintln!("skipped: PVKEXEC_DEBIAN_KERNEL not set (cargo xtask test sets it)");
        return;
    };
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("PVKEXEC_DEBIAN_KERNEL {}: {e}", path.to_string_lossy()));
    let k = parse_kernel("debian vmlinuz", &bytes).unwrap();
    assert!(matches!(
        k.container,
        Container::BzImage {
            compression: Compression::Xz,
            ..
        }
    ));
    assert_eq!(k.virt_base, VIRT_BASE);
    assert_eq!(k.notes.init_p2m, Some(0x80_0000_0000));
    assert_eq!(k.notes.mod_start_pfn, Some(1));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse_kernel("fuzz", &bytes);
    }

    #[test]
    fn mutated_kernels_never_panic(pos in any::<prop::sample::Index>(), val in any::<u8>(), fmt in 0usize..8) {
        let elf = test_elf();
        let mut image = bzimage(&compress(ALL[fmt], &elf), elf.len() as u32);
        let i = pos.index(image.len());
        image[i] = val;
        let _ = parse_kernel("mutant", &image);
        let mut plain = elf.clone();
        let j = pos.index(plain.len());
        plain[j] = val;
        let _ = parse_kernel("mutant-elf", &plain);
    }
}

proptest! {
    #[test]
    fn lzo1x_round_trips_and_rejects_garbage(
        // At least one byte: the compressor that makes the input refuses an empty one.
        data in proptest::collection::vec(0u8..8, 1..20_000),
        noise in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let c = lzokay_native::compress(&data).unwrap();
        prop_assert_eq!(loader::decompress::lzo1x(&c, data.len()).unwrap(), data.clone());
        // One byte short of the output is an overrun, not a truncation.
        prop_assert!(loader::decompress::lzo1x(&c, data.len() - 1).is_err());
        let _ = loader::decompress::lzo1x(&noise, 1 << 16);
    }
}

/// A `PVKEXEC` note (name "PVKEXEC", not "Xen").
fn pvkexec_note(out: &mut Vec<u8>, ty: u32, desc: &[u8]) {
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(b"PVKEXEC\0");
    out.extend_from_slice(desc);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn elf_with_slot(desc: &[u8]) -> Vec<u8> {
    let mut notes = pv_notes(&[]);
    pvkexec_note(&mut notes, 1, desc);
    elf_with(
        &[(0, 0x3000, 0x3000), (0x3000, 0x1800, 0x5000)],
        &notes,
        VIRT_BASE + 0x1000,
    )
}

#[test]
fn plan_slot_receives_the_plan_record() {
    use pvhandoff::image::{PlanRecord, PLAN_MAGIC};
    let slot = VIRT_BASE + 0x3100;
    let k = parse_kernel("probe-like", &elf_with_slot(&slot.to_le_bytes())).unwrap();
    assert_eq!(k.notes.plan_slot, Some(slot));
    let built = loader::image::build_image(
        "probe-like",
        &k,
        None,
        "x",
        16384,
        Default::default(),
        pvlayout::Mode::Dom0,
    )
    .unwrap();
    let kernel = common::contents(&built.bytes, pvhandoff::SegmentKind::Kernel);
    let at = (slot - VIRT_BASE) as usize;
    let size = std::mem::size_of::<PlanRecord>();
    // SAFETY: a PlanRecord's bytes of the kernel segment, read unaligned as the plain-old-data record.
    let rec = unsafe { (kernel[at..at + size].as_ptr() as *const PlanRecord).read_unaligned() };
    assert_eq!(rec.magic, PLAN_MAGIC);
    assert_eq!(rec.nr_pages, 16384);
    assert_eq!(rec.virt_base, VIRT_BASE);
    // The slot's bytes are covered by the kernel segment's digest: `inspect` agrees.
    let (_, ok) = loader::image::inspect("probe-like", &built.bytes).unwrap();
    assert!(ok);
}

#[test]
fn plan_slot_outside_the_file_bytes_or_malformed_is_refused() {
    // In bss (past the second PT_LOAD's file bytes).
    let k = parse_kernel(
        "bss-slot",
        &elf_with_slot(&(VIRT_BASE + 0x6000).to_le_bytes()),
    )
    .unwrap();
    let err = loader::image::build_image(
        "bss-slot",
        &k,
        None,
        "",
        16384,
        Default::default(),
        pvlayout::Mode::Dom0,
    )
    .err()
    .expect("a slot in bss is refused");
    let text = err.to_string();
    assert!(
        text.contains("bss-slot") && text.contains("plan slot"),
        "{text}"
    );
    // A payload that is not one address.
    let err = parse_kernel("short-slot", &elf_with_slot(&[1, 2, 3, 4])).unwrap_err();
    assert!(
        err.to_string().contains("plan-slot note has 4 bytes"),
        "{err}"
    );
}

fn elf_with_hypercall_page(va: u64) -> Vec<u8> {
    elf_with(
        &[(0, 0x3000, 0x3000), (0x3000, 0x1800, 0x5000)],
        &pv_notes(&[(2, va.to_le_bytes().to_vec())]),
        VIRT_BASE + 0x1000,
    )
}

fn build_dom0(input: &str, k: &loader::ParsedKernel) -> Result<Vec<u8>, loader::LoadError> {
    loader::image::build_image(
        input,
        k,
        None,
        "",
        16384,
        Default::default(),
        pvlayout::Mode::Dom0,
    )
    .map(|b| b.bytes)
}

#[test]
fn hypercall_page_is_written_as_xen_would() {
    use pvhandoff::SegmentKind::Kernel;
    let mut expected = [0u8; 4096];
    xenpv::hypercall_page::fill(&mut expected);
    // In the file bytes of the first PT_LOAD, and in the second one's bss.
    for offset in [0x2000u64, 0x7000] {
        let k = parse_kernel("hc", &elf_with_hypercall_page(VIRT_BASE + offset)).unwrap();
        let image = build_dom0("hc", &k).unwrap();
        let kernel = common::contents(&image, Kernel);
        let at = offset as usize;
        assert_eq!(&kernel[at..at + 4096], &expected[..], "page at {offset:#x}");
        // The rest of the kernel is the file's (the page replaced only itself).
        assert_eq!(kernel[0x1fff], ((0x1fffu64 * 7) as u8));
        let (_, ok) = loader::image::inspect("hc", &image).unwrap();
        assert!(ok, "the segment digest covers the written page");
    }
    // A kernel without the note keeps its bytes.
    let k = parse_kernel("plain", &test_elf()).unwrap();
    let image = build_dom0("plain", &k).unwrap();
    assert_eq!(
        common::contents(&image, Kernel)[0x2000],
        (0x2000u64 * 7) as u8
    );
}

#[test]
fn hypercall_page_off_the_kernel_or_unaligned_is_refused() {
    for (va, why) in [
        (VIRT_BASE + 0x2010, "not page-aligned"),
        // Inside the initial region (start info follows the kernel) but not the kernel's.
        (VIRT_BASE + 0x8000, "not a page of the kernel image"),
    ] {
        let k = parse_kernel("hc-bad", &elf_with_hypercall_page(va)).unwrap();
        let err = build_dom0("hc-bad", &k).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("hc-bad") && text.contains("HYPERCALL_PAGE") && text.contains(why),
            "{text}"
        );
    }
}
