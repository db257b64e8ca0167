//! Zero runs (image version 3): a segment's all-zero pages are left out of the file and named
//! in the zero-run table; the contents, their digests and `pvkexec inspect` are the same as if
//! they were stored, and a changed record is refused or fails a digest.

mod common;
use common::{contents, elf_with, note, VIRT_BASE};
use loader::image::build_image;
use proptest::prelude::*;
use pvhandoff::image::{find_purgatory, ImageError, ImageView};
use pvhandoff::zero::{ZeroRun, ZeroRunError, ZeroRunsHeader, ZERO_RUNS_MAGIC};
use pvhandoff::SegmentKind;
use xenpv::Pod;

const PAGE: usize = 4096;

fn notes() -> Vec<u8> {
    let mut n = Vec::new();
    note(&mut n, 6, b"linux\0");
    note(&mut n, 5, b"xen-3.0\0");
    note(&mut n, 3, &VIRT_BASE.to_le_bytes());
    note(&mut n, 4, &0u64.to_le_bytes());
    note(&mut n, 1, &(VIRT_BASE + 0x1000).to_le_bytes());
    n
}

/// A kernel of `pages` file-backed pages (its last one `tail` bytes long) whose page `p` is
/// zero where `zero[p]`, and its loaded bytes.
fn kernel_with_zero_pages(zero: &[bool], tail: usize) -> (Vec<u8>, Vec<u8>) {
    let len = (zero.len() - 1) * PAGE + tail;
    let mut elf = elf_with(&[(0, len as u64, len as u64 + 0x2000)], &notes(), VIRT_BASE);
    let data_off = 64 + 56 * 2;
    for (p, &z) in zero.iter().enumerate() {
        if z {
            let at = data_off + p * PAGE;
            elf[at..(at + PAGE).min(data_off + len)].fill(0);
        }
    }
    let loaded = elf[data_off..data_off + len].to_vec();
    (elf, loaded)
}

fn build(elf: &[u8], initrd: Option<&[u8]>) -> Vec<u8> {
    let k = loader::parse_kernel("zk", elf).unwrap();
    build_image(
        "zk",
        &k,
        initrd,
        "",
        16384,
        Default::default(),
        pvlayout::Mode::Dom0,
    )
    .unwrap()
    .bytes
}

fn inspect_ok(image: &[u8]) -> bool {
    matches!(loader::image::inspect("img", image), Ok((_, true)))
}

/// Pages of `bytes` (the last one partial) that hold a non-zero byte.
fn nonzero_pages(bytes: &[u8]) -> u64 {
    bytes
        .chunks(PAGE)
        .filter(|p| p.iter().any(|&b| b != 0))
        .count() as u64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Any pattern of zero pages in a kernel and an initrd: the image stores exactly their
    /// non-zero pages (plus the other segments' and the header's), the contents read back
    /// whole, and every digest checks.
    #[test]
    fn zero_pages_round_trip_through_an_image(
        zero in proptest::collection::vec(any::<bool>(), 1..24),
        tail in 1usize..=PAGE,
        rd_zero in proptest::collection::vec(any::<bool>(), 1..12),
    ) {
        let (elf, loaded) = kernel_with_zero_pages(&zero, tail);
        let initrd: Vec<u8> = rd_zero
            .iter()
            .enumerate()
            .flat_map(|(p, &z)| (0..PAGE).map(move |i| if z { 0 } else { (i + p) as u8 | 1 }))
            .collect();
        let image = build(&elf, Some(&initrd));
        prop_assert!(inspect_ok(&image));
        prop_assert_eq!(contents(&image, SegmentKind::Kernel), loaded.clone());
        prop_assert_eq!(contents(&image, SegmentKind::Initrd), initrd.clone());
        let view = ImageView::parse(&image).unwrap();
        let kernel = view.segments().position(|s| s.kind == SegmentKind::Kernel as u32).unwrap();
        let initrd_at = view.segments().position(|s| s.kind == SegmentKind::Initrd as u32).unwrap();
        prop_assert_eq!(view.stored(kernel).unwrap().len().div_ceil(PAGE) as u64,
                        nonzero_pages(&loaded));
        prop_assert_eq!(view.zeros(kernel).zero_pages(),
                        loaded.len().div_ceil(PAGE) as u64 - nonzero_pages(&loaded));
        prop_assert_eq!(view.zeros(initrd_at).zero_pages(),
                        rd_zero.iter().filter(|&&z| z).count() as u64);
        // The file: header page, then every segment's stored pages.
        let stored: u64 = (0..view.header.nr_segments as usize)
            .map(|i| (view.stored(i).unwrap().len() as u64).next_multiple_of(PAGE as u64))
            .sum();
        prop_assert_eq!(image.len() as u64, view.header.data_offset + stored);
    }
}

/// Writes the header digest for the image's (changed) header and descriptor table into its
/// purgatory's parameter block, as a loader would have: what the purgatory then finds is a
/// consistent image, only its zero-run records say something else.
fn reseal(image: &mut [u8]) {
    let (_, _, off) = find_purgatory(image).unwrap();
    let params_offset = u32::from_le_bytes(image[20..24].try_into().unwrap()) as usize;
    let nr = u32::from_le_bytes(image[16..20].try_into().unwrap()) as usize;
    let table_len = 64 + 64 * nr;
    let digest = pvhandoff::digest::sha256(&image[..table_len]);
    let at = off as usize + params_offset;
    image[at + 8..at + 16].copy_from_slice(&(table_len as u64).to_le_bytes());
    image[at + 16..at + 48].copy_from_slice(&digest);
}

/// Replaces the zero-run table (segment 1) with `runs`, its descriptor's `len` and SHA-256
/// with theirs, and reseals the header digest.
fn with_runs(image: &[u8], runs: &[ZeroRun]) -> Vec<u8> {
    let mut out = image.to_vec();
    let view = ImageView::parse(image).unwrap();
    assert_eq!(view.segment(1).kind, SegmentKind::ZeroRuns as u32);
    let off = view.data_offset(1).unwrap() as usize;
    let mut table = ZeroRunsHeader {
        magic: ZERO_RUNS_MAGIC,
        nr_runs: runs.len() as u32,
        _reserved: 0,
    }
    .as_bytes()
    .to_vec();
    for r in runs {
        table.extend_from_slice(r.as_bytes());
    }
    assert!(table.len() <= PAGE);
    out[off..off + PAGE].fill(0);
    out[off..off + table.len()].copy_from_slice(&table);
    let desc = 64 + 64;
    out[desc + 24..desc + 32].copy_from_slice(&(table.len() as u64).to_le_bytes());
    out[desc + 32..desc + 64].copy_from_slice(&pvhandoff::digest::sha256(&table));
    reseal(&mut out);
    out
}

fn runs_of(image: &[u8]) -> Vec<ZeroRun> {
    ImageView::parse(image)
        .unwrap()
        .zero_runs()
        .0
        .iter()
        .collect()
}

/// A kernel with zero pages 2, 3 and 6 of 9 (the probe's kind of zero run, twice).
fn sample() -> Vec<u8> {
    let zero = [false, false, true, true, false, false, true, false, false];
    let image = build(&kernel_with_zero_pages(&zero, 100).0, None);
    assert!(inspect_ok(&image));
    assert_eq!(
        runs_of(&image)
            .iter()
            .map(|r| (r.segment, r.first_page, r.pages))
            .collect::<Vec<_>>(),
        [(2, 2, 2), (2, 6, 1)]
    );
    image
}

fn inspect_err(image: &[u8]) -> String {
    match loader::image::inspect("img", image) {
        Err(e) => e.to_string(),
        Ok((text, ok)) => panic!("inspect accepted it (all ok: {ok}):\n{text}"),
    }
}

#[test]
fn a_changed_record_fails_the_table_digest() {
    let image = sample();
    let view = ImageView::parse(&image).unwrap();
    let at = view.data_offset(1).unwrap() as usize + 16 + 8; // run 0's first_page
    let mut bad = image.clone();
    bad[at] += 1;
    assert_eq!(
        ImageView::parse(&bad).err(),
        Some(ImageError::ZeroRunsDigest)
    );
    assert!(inspect_err(&bad).contains("zero-run table refused"));
    // A kernel side still finds the purgatory (it reads no record).
    assert!(find_purgatory(&bad).is_ok());
}

#[test]
fn malformed_records_are_refused_by_name_even_when_sealed() {
    let image = sample();
    let good = runs_of(&image);
    let run = |segment, first_page, pages| ZeroRun {
        segment,
        _reserved: 0,
        first_page,
        pages,
        zeros_before: 0,
    };
    let uncounted = ZeroRun {
        zeros_before: 0,
        ..good[1]
    };
    let cases: Vec<(Vec<ZeroRun>, ZeroRunError)> = vec![
        (
            vec![good[0], run(2, 3, 1), good[1]],
            ZeroRunError::Overlap { run: 1 },
        ),
        (vec![good[1], good[0]], ZeroRunError::Unsorted { run: 1 }),
        (vec![good[0], uncounted], ZeroRunError::BadCount { run: 1 }),
        (
            vec![good[0], run(2, 9, 1)],
            ZeroRunError::Outside { run: 1, segment: 2 },
        ),
        (vec![run(2, 2, 0)], ZeroRunError::Empty { run: 0 }),
        // The purgatory, the table itself, the page tables, the plan.
        (
            vec![run(0, 0, 1)],
            ZeroRunError::NotPlaced { run: 0, segment: 0 },
        ),
        (
            vec![run(1, 0, 1)],
            ZeroRunError::NotPlaced { run: 0, segment: 1 },
        ),
        (
            vec![run(4, 0, 1)],
            ZeroRunError::NotPlaced { run: 0, segment: 4 },
        ),
        (
            vec![run(40, 0, 1)],
            ZeroRunError::NoSegment {
                run: 0,
                segment: 40,
            },
        ),
    ];
    for (runs, why) in cases {
        let bad = with_runs(&image, &runs);
        assert_eq!(
            ImageView::parse(&bad).err(),
            Some(ImageError::ZeroRuns(why)),
            "{runs:?}"
        );
        let text = inspect_err(&bad);
        assert!(text.contains(&format!("{why:?}")), "{text}");
    }
}

#[test]
fn a_stored_page_claimed_zero_fails_the_segment_digest() {
    let image = sample();
    let view = ImageView::parse(&image).unwrap();
    let good = runs_of(&image);
    // Run 1 (page 6) also claims page 7, whose bytes leave the file: everything after the
    // kernel stays where it was, and only the kernel's contents change.
    let mut claimed = good.clone();
    claimed[1].pages += 1;
    let mut bad = with_runs(&image, &claimed);
    let kernel_off = view.data_offset(2).unwrap() as usize;
    let page7 = kernel_off + (7 - 3) * PAGE; // stored index of content page 7: 4
    bad.drain(page7..page7 + PAGE);
    let total = (bad.len() as u64).to_le_bytes();
    bad[56..64].copy_from_slice(&total);
    reseal(&mut bad);
    let v = ImageView::parse(&bad).expect("the records describe the image");
    let seg = v.segment(2);
    assert!(pvhandoff::digest::verify_pieces(2, &seg, v.pieces(2, 0, u64::MAX).unwrap()).is_err());
    // The other segments still check, and inspect names the kernel.
    for i in 3..v.header.nr_segments as usize {
        let s = v.segment(i);
        assert!(pvhandoff::digest::verify_pieces(i, &s, v.pieces(i, 0, u64::MAX).unwrap()).is_ok());
    }
    let (text, ok) = loader::image::inspect("img", &bad).unwrap();
    assert!(!ok);
    assert!(
        text.lines()
            .any(|l| l.contains("segment 2 kernel") && l.ends_with("MISMATCH")),
        "{text}"
    );
}

/// The cache `cargo xtask test` provisions (harness::cache_dir's rule).
fn cache_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("PVKEXEC_CACHE").filter(|d| !d.is_empty()) {
        return dir.into();
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => std::path::PathBuf::from(home).join(".cache/pvkexec"),
        None => concat!(env!("CARGO_MANIFEST_DIR"), "/../target/pvkexec-cache").into(),
    }
}

/// Debian bullseye's 5.10 bzImage (a 7 MB file, a 60.8 MB ELF, 54 MiB of kernel segment of
/// which 29.7 MB are zero pages): its image holds the non-zero pages of its segments and one
/// header page, nothing more.
#[test]
fn bullseye_510_image_is_its_nonzero_pages() {
    let path = cache_dir().join("linux-bullseye/vmlinuz");
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!(
            "skipped: {} is absent (cargo xtask provision fetches it)",
            path.display()
        );
        return;
    };
    let k = loader::parse_kernel("bullseye", &bytes).unwrap();
    let image = build_image(
        "bullseye",
        &k,
        None,
        "console=hvc0",
        65536,
        Default::default(),
        pvlayout::Mode::DomU,
    )
    .unwrap()
    .bytes;
    assert!(inspect_ok(&image));
    let view = ImageView::parse(&image).unwrap();
    let mut nonzero = 0u64;
    for (i, s) in view.segments().enumerate() {
        let c = if view.zeros(i).is_empty() {
            view.data(i).unwrap().to_vec()
        } else {
            contents(&image, SegmentKind::from_u32(s.kind).unwrap())
        };
        nonzero += nonzero_pages(&c);
    }
    let kernel = view.segment(2);
    let pool = pvhandoff::renumber::pool_demand(&view, 1).unwrap();
    let zero_pages = view.zeros(2).zero_pages();
    eprintln!(
        "bullseye 5.10: kernel segment {} bytes, image {} bytes, non-zero pages {nonzero}, \
         zero-run pages {zero_pages}, free pool {pool} frames ({} without the zero runs)",
        kernel.len,
        image.len(),
        pool - zero_pages
    );
    assert!(
        image.len() as u64 <= (nonzero + 4) * PAGE as u64,
        "{} bytes for {nonzero} non-zero pages",
        image.len()
    );
    assert!(view.zeros(2).zero_pages() * PAGE as u64 > kernel.len / 3);
}
