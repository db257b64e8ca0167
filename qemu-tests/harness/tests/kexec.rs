//! Kexec under real Xen 4.17 in the initial domain (dom0 layout; 1, 2 or 4 VCPUs): `pvkexec
//! build` makes an image whose new kernel is the boot-check kernel; the old test kernel
//! (kexecold) maps the purgatory and enters it; the purgatory checks every segment's SHA-256,
//! renumbers the frames, builds and pins the new tables and switches through the trampoline;
//! the new kernel then runs all its checks. One flipped byte in a segment is named by the
//! purgatory, which crashes the domain and never enters the new kernel.

use harness::tools::{self, BuildMode, PvkexecBuild};
use harness::{guest, BootConfig, BootResult, Module, Verdict};
use pvhandoff::image::ImageView;
use pvhandoff::zero::{ZeroRun, ZeroRunsHeader, ZERO_RUNS_MAGIC};
use std::path::{Path, PathBuf};
use std::process::Command;
use xenpv::Pod;

fn build_image(name: &str, mem_mib: u64, initrd: Option<&Path>) -> PathBuf {
    build_image_for(name, mem_mib, initrd, 1)
}

/// An image for a domain whose old kernel runs `vcpus` VCPUs (a park area when more than one).
fn build_image_for(name: &str, mem_mib: u64, initrd: Option<&Path>, vcpus: u32) -> PathBuf {
    let out = harness::cache_dir().join(format!("kexec-{name}.img"));
    let mut b = probe_build(mem_mib, &out);
    b.old_vcpus = Some(vcpus);
    b.initrd = initrd.map(Path::to_path_buf);
    let o = b.run().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{name}] pvkexec build:\n{}", o.stdout);
    out
}

/// `pvkexec build` of the probe for a `mem_mib` MiB initial domain (`--append mem_mib=N`).
fn probe_build(mem_mib: u64, out: &Path) -> PvkexecBuild {
    let probe = guest::binary("probe").unwrap();
    let mut b = PvkexecBuild::new(&probe, mem_mib, BuildMode::Dom0, out);
    b.append = Some(format!("mem_mib={mem_mib}"));
    b
}

fn run(name: &str, image: &Path, mem_mib: u64) -> BootResult {
    run_with(name, image, mem_mib, "")
}

/// Runs the old kernel with `cmdline` (e.g. a `kexec_fault=` word).
fn run_with(name: &str, image: &Path, mem_mib: u64, cmdline: &str) -> BootResult {
    run_smp(name, image, mem_mib, cmdline, 1)
}

/// Runs the old kernel on `vcpus` VCPUs.
fn run_smp(name: &str, image: &Path, mem_mib: u64, cmdline: &str, vcpus: u32) -> BootResult {
    let mut cfg = BootConfig::new(guest::binary("kexecold").unwrap());
    cfg.vcpus = vcpus;
    // The old kernel keeps a loopback channel standing in for a domU's xenstore channel.
    cfg.cmdline = format!("kexec_store=loopback {cmdline}");
    cfg.mem_mib = mem_mib;
    cfg.tag = name.into();
    cfg.modules.push(Module {
        path: image.to_path_buf(),
        args: String::new(),
    });
    harness::boot(&cfg).unwrap()
}

/// Flips one byte in the middle of the bytes the file stores for segment `index` and returns
/// the corrupted copy.
fn corrupt(image: &Path, index: usize, name: &str) -> PathBuf {
    let mut bytes = std::fs::read(image).unwrap();
    let view = ImageView::parse(&bytes).unwrap();
    let off = view.data_offset(index).unwrap() as usize;
    let stored = view.stored(index).unwrap().len();
    bytes[off + stored / 2] ^= 0x20;
    let out = harness::cache_dir().join(format!("kexec-{name}.img"));
    std::fs::write(&out, bytes).unwrap();
    // The host-side check sees it too.
    let o = Command::new(tools::pvkexec().unwrap())
        .arg("inspect")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "pvkexec inspect must refuse a corrupted image"
    );
    out
}

fn assert_kexec_passed(r: &BootResult, segments: usize) {
    assert_eq!(r.verdict, Verdict::Pass, "log:\n{}", r.log);
    let verified = format!("purgatory: digests verified: {segments} segments");
    r.assert_logged(&[
        "purgatory: entered",
        &verified,
        "purgatory: frames renumbered",
        "(their direct-map aliases dropped)",
        "purgatory: timers stopped, runstate and time areas of",
        "event channels reset (FIFO ABI gone)",
        "grant entries revoked",
        "(loopback pair re-created)",
    ]);
    assert!(!r.log.contains("mismatch"));
    // The new kernel's report comes after the purgatory's last line.
    let after = r
        .log
        .split(harness::PURGATORY_ENTERING)
        .nth(1)
        .expect("the purgatory's switch line");
    for check in harness::probe_checks() {
        let line = format!("PVKEXEC-TEST PASS {check}");
        assert!(
            after.contains(&line),
            "no {line:?} after the switch:\n{}",
            r.log
        );
    }
    assert!(r.failed().is_empty());
}

#[test]
fn kexec_into_probe_64mib() {
    let image = build_image("plain-64M", 64, None);
    let r = run("kexec-64M", &image, 64);
    assert_kexec_passed(&r, 7);
    r.assert_logged(&[" 4 grant entries revoked"]);
}

#[test]
fn kexec_into_probe_with_initrd_1gib() {
    let len = (3 << 20) + 123;
    let initrd = tools::test_file(len).unwrap();
    let image = build_image("initrd-1G", 1024, Some(&initrd));
    let r = run("kexec-initrd-1G", &image, 1024);
    assert_kexec_passed(&r, 8);
    r.assert_logged(&["p2m-m2p frames=262144", &format!("mod_len={len:#x}")]);
    assert_batched(&r, "kexec-initrd-1G", 262144);
}

/// The purgatory's "N hypercalls in all for F frames" line: at most one hypercall per 512
/// frames of the domain. Returns N.
fn assert_batched(r: &BootResult, name: &str, frames: u64) -> u64 {
    let line = r
        .log
        .lines()
        .find(|l| l.contains("hypercalls in all for"))
        .unwrap_or_else(|| panic!("no hypercall count in:\n{}", r.log));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "hypercalls").unwrap();
    let n: u64 = words[at - 1].parse().unwrap();
    let f: u64 = words[at + 4].parse().unwrap();
    assert_eq!(f, frames, "{line}");
    assert!(
        n * 512 <= f,
        "more than one hypercall per 512 frames: {line}"
    );
    eprintln!("[{name}] {n} hypercalls for {f} frames");
    n
}

/// A 6 GiB domain with 2 VCPUs (past the 4 GiB the purgatory's static bitmap used to cover):
/// the purgatory's working memory comes from the handoff, sized to the domain; every probe
/// check passes and the purgatory stays within one hypercall per 512 frames.
#[test]
fn kexec_6gib_domain_with_2_vcpus() {
    let image = build_image_for("smp2-6G", 6144, None, 2);
    let mut cfg = BootConfig::new(guest::binary("kexecold").unwrap());
    cfg.vcpus = 2;
    cfg.cmdline = "kexec_store=loopback".into();
    cfg.mem_mib = 6144;
    cfg.timeout = std::time::Duration::from_secs(900);
    cfg.tag = "kexec-6G-2vcpus".into();
    cfg.modules.push(Module {
        path: image.clone(),
        args: String::new(),
    });
    let start = std::time::Instant::now();
    let r = harness::boot(&cfg).unwrap();
    let wall = start.elapsed();
    assert_kexec_passed(&r, 7);
    assert_parked(&r, 2);
    r.assert_logged(&[
        "hidden-frames 5 (domain 1572864 frames, nr_pages 1572859)",
        "purgatory working memory: 102 frames",
    ]);
    let n = assert_batched(&r, "kexec-6G-2vcpus", 1572864);
    eprintln!("[kexec-6G-2vcpus] wall time {wall:.1?}, {n} hypercalls");
}

/// The purgatory takes its stacks from the handoff's working memory only after checking the
/// block (a version-4 block has none: named by the entry code, domain crashed), and refuses
/// working frames inside the free pool before any frame changes hands.
#[test]
fn working_memory_from_the_handoff_is_checked() {
    let image = build_image("plain-64M-work", 64, None);
    let r = run_with("kexec-handoff-v4", &image, 64, "kexec_fault=handoff-v4");
    assert_eq!(r.verdict, Verdict::Crashed, "log:\n{}", r.log);
    r.assert_logged(&[
        "purgatory: the handoff block (rdi) is not a version-6 block with working memory",
        "Hardware Dom0 crashed",
    ]);
    assert!(!r.log.contains("purgatory: entered"), "log:\n{}", r.log);
    let r = run_with("kexec-work-in-pool", &image, 64, "kexec_fault=work-in-pool");
    r.assert_refused("purgatory: a working-memory frame (work_pfns_va) is not the domain's, or lies in the free pool");
    assert!(!r.log.contains("frames renumbered"), "log:\n{}", r.log);
}

#[test]
fn kexec_into_probe_with_initrd_64mib() {
    let initrd = tools::test_file((1 << 20) + 5).unwrap();
    let image = build_image("initrd-64M-ok", 64, Some(&initrd));
    assert_kexec_passed(&run("kexec-initrd-64M", &image, 64), 8);
}

/// Past 1 GiB: the P2M spans 768 pages and the kernel side's direct map needs two L2 tables.
#[test]
fn kexec_into_probe_1536mib() {
    let image = build_image("plain-1536M", 1536, None);
    let r = run("kexec-1536M", &image, 1536);
    assert_kexec_passed(&r, 7);
    r.assert_logged(&["p2m-m2p frames=393216"]);
}

#[test]
fn flipped_byte_in_each_verified_segment_is_named() {
    let initrd = tools::test_file((1 << 20) + 5).unwrap();
    let image = build_image("initrd-64M", 64, Some(&initrd));
    for (index, kind) in [
        (2usize, "kernel"),
        (3, "initrd"),
        (4, "start-info"),
        (5, "page-tables"),
        (6, "plan"),
        (7, "chunk-digests"),
    ] {
        let name = format!("corrupt-{kind}");
        let bad = corrupt(&image, index, &name);
        let r = run(&name, &bad, 64);
        assert_eq!(r.verdict, Verdict::Crashed, "log:\n{}", r.log);
        let line = format!("purgatory: segment {index} ({kind}): SHA-256 mismatch");
        r.assert_logged(&[&line, "Hardware Dom0 crashed"]);
        assert!(!r.log.contains("digests verified"), "log:\n{}", r.log);
        assert!(
            !r.log.contains("PVKEXEC-TEST PASS"),
            "the new kernel must not run:\n{}",
            r.log
        );
    }
}

/// Changes the image's bytes with `edit` and returns the copy; `pvkexec inspect` must refuse it.
fn edited(image: &Path, name: &str, edit: impl Fn(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(image).unwrap();
    edit(&mut bytes);
    let out = harness::cache_dir().join(format!("kexec-{name}.img"));
    std::fs::write(&out, bytes).unwrap();
    let o = Command::new(tools::pvkexec().unwrap())
        .arg("inspect")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "pvkexec inspect must refuse {name}"
    );
    out
}

/// No segment digest covers the header and descriptor table: the purgatory checks them
/// against the digest the loader left in its own parameter block before it reads a field.
#[test]
fn changed_header_or_descriptor_is_refused_by_the_purgatory() {
    let image = build_image("header-64M", 64, None);
    let bump = |at: usize| move |b: &mut Vec<u8>| b[at] = b[at].wrapping_add(1);
    let desc = |i: usize, field: usize| 64 + 64 * i + field;
    let nr = |b: &[u8]| u32::from_le_bytes(b[16..20].try_into().unwrap());
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    // Segments: purgatory, zero runs, kernel, start_info, tables, plan, chunk digests.
    let cases: Vec<(&str, Edit)> = vec![
        ("dest-pfn", Box::new(bump(desc(2, 8)))),
        ("nr-pages", Box::new(bump(desc(2, 16)))),
        // start_info's descriptor claims to be an initrd.
        ("kind", Box::new(move |b: &mut Vec<u8>| b[desc(3, 0)] = 2)),
        ("kernel-entry", Box::new(bump(40 + 1))),
        // One descriptor fewer (the chunk table's): the kernel side still finds the purgatory.
        (
            "nr-segments",
            Box::new(move |b: &mut Vec<u8>| {
                let n = nr(b) - 1;
                b[16..20].copy_from_slice(&n.to_le_bytes());
            }),
        ),
    ];
    for (name, edit) in cases {
        let bad = edited(&image, &format!("header-{name}"), edit);
        let r = run(&format!("header-{name}"), &bad, 64);
        r.assert_refused("purgatory: kexec image header and descriptor table refused: Mismatch");
        assert!(!r.log.contains("digest ok"), "{name}: log:\n{}", r.log);
    }
    // No segments at all: the kernel side cannot even find the purgatory.
    let bad = edited(&image, "header-no-segments", |b| b[16..20].fill(0));
    let r = run("header-no-segments", &bad, 64);
    r.assert_logged(&["module is not a kexec image: NoSegments"]);
    assert!(!r.log.contains("purgatory: entered"), "log:\n{}", r.log);
}

/// Seals the image's (changed) header and descriptor table again: their SHA-256 into the
/// purgatory's parameter block, as the loader does. What the purgatory then checks is a
/// consistent image whose zero-run records lie.
fn reseal(b: &mut [u8]) {
    let (_, _, off) = pvhandoff::image::find_purgatory(b).unwrap();
    let params = off as usize + u32::from_le_bytes(b[20..24].try_into().unwrap()) as usize;
    let table_len = 64 + 64 * u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
    let digest = pvhandoff::digest::sha256(&b[..table_len]);
    b[params + 8..params + 16].copy_from_slice(&(table_len as u64).to_le_bytes());
    b[params + 16..params + 48].copy_from_slice(&digest);
}

/// Writes `runs` as the image's zero-run table (segment 1) with its descriptor's length and
/// SHA-256, and reseals the header digest.
fn write_zero_runs(b: &mut [u8], runs: &[ZeroRun]) {
    let off = pvhandoff::image::find_purgatory(b).unwrap().2 as usize;
    let purgatory_len = u64::from_le_bytes(b[64 + 24..64 + 32].try_into().unwrap()) as usize;
    let at = off + purgatory_len.next_multiple_of(4096);
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
    b[at..at + 4096].fill(0);
    b[at..at + table.len()].copy_from_slice(&table);
    let desc = 64 + 64; // segment 1
    b[desc + 24..desc + 32].copy_from_slice(&(table.len() as u64).to_le_bytes());
    b[desc + 32..desc + 64].copy_from_slice(&pvhandoff::digest::sha256(&table));
    reseal(b);
}

/// The zero-run records are under their own digest, checked before any is used, and what they
/// describe is checked against the image: a record changed in the file, overlapping runs, a
/// run past its segment's pages (each sealed again, as a loader would have) are refused by
/// name before any digest is taken, and a stored page claimed zero (its bytes out of the file,
/// sealed) fails the kernel's digest; the new kernel never runs, nothing changed hands. The
/// probe's 3 file-backed zero pages are the kernel segment's zero run.
#[test]
fn tampered_zero_run_records_are_refused_by_the_purgatory() {
    let image = build_image("zero-runs-64M", 64, None);
    let bytes = std::fs::read(&image).unwrap();
    let view = ImageView::parse(&bytes).unwrap();
    let (runs, _) = view.zero_runs();
    let runs: Vec<ZeroRun> = runs.iter().collect();
    assert_eq!(
        (runs.len(), runs[0].segment, runs[0].pages),
        (1, 2, 3),
        "the probe's zero run"
    );
    let kernel_pages = view.segment(2).len.div_ceil(4096);
    let table_at = view.data_offset(1).unwrap() as usize;
    let kernel_at = view.data_offset(2).unwrap() as usize;
    // The page after the run, and its place among the kernel's stored pages.
    let claimed = runs[0].first_page + runs[0].pages;
    assert!(
        claimed < kernel_pages,
        "a stored page follows the probe's zero run"
    );
    let claimed_stored = claimed - view.zeros(2).zeros_below(claimed);
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let r0 = runs[0];
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "zero-runs-changed",
            Box::new(move |b: &mut Vec<u8>| b[table_at + 16 + 8] ^= 1),
            "purgatory: zero-run table refused: ZeroRunsDigest",
        ),
        (
            "zero-runs-overlap",
            Box::new(move |b: &mut Vec<u8>| {
                let second = ZeroRun {
                    first_page: r0.first_page + 1,
                    pages: 1,
                    ..r0
                };
                write_zero_runs(b, &[r0, second]);
            }),
            "purgatory: zero-run table refused: ZeroRuns(Overlap { run: 1 })",
        ),
        (
            "zero-runs-outside",
            Box::new(move |b: &mut Vec<u8>| {
                let past = ZeroRun {
                    first_page: kernel_pages - 1,
                    pages: 2,
                    ..r0
                };
                write_zero_runs(b, &[past]);
            }),
            "purgatory: zero-run table refused: ZeroRuns(Outside { run: 0, segment: 2 })",
        ),
        (
            "zero-runs-stored-page",
            Box::new(move |b: &mut Vec<u8>| {
                // The page after the run is stored: the record claims it, and its bytes leave
                // the file, so every other segment stays where it was.
                let at = kernel_at + claimed_stored as usize * 4096;
                b.drain(at..at + 4096);
                let total = b.len() as u64;
                b[56..64].copy_from_slice(&total.to_le_bytes());
                let longer = ZeroRun {
                    pages: r0.pages + 1,
                    ..r0
                };
                write_zero_runs(b, &[longer]);
            }),
            "purgatory: segment 2 (kernel): SHA-256 mismatch",
        ),
    ];
    for (name, edit, line) in cases {
        let bad = edited(&image, name, edit);
        let r = run(name, &bad, 64);
        r.assert_refused(line);
        for later in ["digests verified", "frames renumbered"] {
            assert!(!r.log.contains(later), "{name}: {later}:\n{}", r.log);
        }
    }
}

/// A kernel side that leaves its process trees pinned breaks the handoff contract; the frames
/// stay typed as page tables after the switch, and the probe names them.
#[test]
fn pinned_trees_left_by_the_kernel_side_are_caught_by_the_probe() {
    let image = build_image("plain-64M-trees", 64, None);
    let r = run_with("kexec-keep-trees", &image, 64, "kexec_fault=keep-trees");
    assert_eq!(r.verdict, Verdict::GuestFailed, "log:\n{}", r.log);
    r.assert_logged(&[
        harness::PURGATORY_ENTERING,
        "PVKEXEC-TEST FAIL frames-writable: a frame among pfn",
    ]);
    assert_eq!(
        r.failed().len(),
        1,
        "only frames-writable fails:\n{}",
        r.log
    );
}

/// A free pool that holds what the purgatory still reads is refused before anything changes.
#[test]
fn free_pool_overlapping_the_old_p2m_is_refused_by_the_purgatory() {
    let image = build_image("plain-64M-pool", 64, None);
    let r = run_with("kexec-pool-overlap", &image, 64, "kexec_fault=pool-overlap");
    r.assert_refused("purgatory: the handoff's free pool overlaps the image, the old start_info or the old P2M; refusing to enter the new kernel");
}

/// Handoff v6's frame lists (`kexec_lists=1`): the image listed page by page and a pool of
/// every other frame of the old kernel's range (ascending, not contiguous), 2 VCPUs (the park
/// area from pool entries): every probe check passes. A pool list that repeats a frame, and
/// an image list that does, are refused before anything changes hands.
#[test]
fn frame_lists_in_the_handoff_are_followed_and_checked() {
    let image = build_image_for("lists-smp2-64M", 64, None, 2);
    let r = run_smp("kexec-lists", &image, 64, "kexec_lists=1", 2);
    assert_kexec_passed(&r, 7);
    assert_parked(&r, 2);
    r.assert_logged(&["PVKEXEC-INFO kexec: handoff v6 lists: "]);
    let r = run_smp(
        "kexec-pool-list-repeat",
        &image,
        64,
        "kexec_lists=1 kexec_fault=pool-list-repeat",
        2,
    );
    r.assert_refused("purgatory: the handoff's free pool list (pool_pfns_va) is not strictly ascending: a frame repeats or the order is wrong; refusing to enter the new kernel");
    let r = run_smp(
        "kexec-image-list-repeat",
        &image,
        64,
        "kexec_lists=1 kexec_fault=image-list-repeat",
        2,
    );
    r.assert_refused("purgatory: an image frame (image_pfns_va) is not the domain's, is a balloon hole, is listed twice, or is the old start_info or P2M list; refusing to enter the new kernel");
}

/// 2 and 4 VCPUs: the old kernel's APs (own GDT, VIRQ_TIMER, running timers) are parked by the
/// purgatory on private tables in hidden frames; the probe finds them down, no old timer on
/// any VCPU, every frame of its RAM writable and exactly the hidden frames held back, then
/// wakes VCPU 1 through the park mailbox and sees it run its code.
#[test]
fn aps_are_parked_with_2_and_4_vcpus() {
    for vcpus in [2u32, 4] {
        let image = build_image_for(&format!("smp{vcpus}-64M"), 64, None, vcpus);
        let r = run_smp(&format!("kexec-{vcpus}vcpus"), &image, 64, "", vcpus);
        assert_kexec_passed(&r, 7);
        assert_parked(&r, vcpus);
        r.assert_logged(&["hidden-frames 5 (domain 16384 frames, nr_pages 16379)"]);
    }
}

/// A kernel without NMI callbacks (`kexec_ap_stop=ipi`): its APs sleep on their IPI port
/// only, and the kernel side sends each to the purgatory with an event on that port. The
/// APs are parked as with NMIs and the probe passes every check.
#[test]
fn aps_without_nmi_callbacks_are_sent_by_ipi() {
    let image = build_image_for("smp2-ipi-64M", 64, None, 2);
    let r = run_smp("kexec-2vcpus-ipi", &image, 64, "kexec_ap_stop=ipi", 2);
    r.assert_logged(&["PVKEXEC-INFO kexec: APs sent to the purgatory by IPI (EVTCHNOP_send)"]);
    assert_kexec_passed(&r, 7);
    assert_parked(&r, 2);
}

/// The purgatory parked every AP of a `vcpus`-VCPU domain and the probe found them down.
fn assert_parked(r: &BootResult, vcpus: u32) {
    let parked = format!(
        "purgatory: VCPUs 1..{} parked: down on private tables",
        vcpus - 1
    );
    let down = format!("vcpus-parked {} of {vcpus} VCPUs down", vcpus - 1);
    r.assert_logged(&[&parked, &down]);
}

/// vcpu_info placed by the old kernel (one frame per VCPU): the purgatory hides those frames
/// past `nr_pages` and names them on the command line; the probe reads its clock there.
/// Without `--old-vcpu-info` the image does not plan those frames, and the purgatory refuses.
#[test]
fn placed_vcpu_info_frames_are_hidden_and_listed() {
    let image = harness::cache_dir().join("kexec-smp2-vcpu-info.img");
    let mut b = probe_build(64, &image);
    b.old_vcpus = Some(2);
    b.old_vcpu_info = true;
    b.run().unwrap_or_else(|e| panic!("{e}"));
    let r = run_smp("kexec-vcpu-info", &image, 64, "kexec_vcpu_info=1", 2);
    assert_kexec_passed(&r, 7);
    r.assert_logged(&[
        "pvkexec.vcpu_info=0:0x",
        "clock: VCPU 0's vcpu_info placed at",
        "hidden-frames 7 (domain 16384 frames, nr_pages 16377)",
    ]);

    let plain = build_image_for("smp2-no-vcpu-info", 64, None, 2);
    let r = run_smp(
        "kexec-vcpu-info-unplanned",
        &plain,
        64,
        "kexec_vcpu_info=1",
        2,
    );
    r.assert_refused("the image hides a different number of frames than the park area and the placed vcpu_info need");
}

/// An old kernel that switched its grant table to v2: the purgatory sets it back to v1 (a new
/// domain's version), which clears every offered entry, and the probe finds a v1 table with
/// nothing offered. With a v2 grant still mapped Xen refuses the switch, and so does the
/// purgatory, named.
#[test]
fn grant_table_v2_is_set_back_to_v1_or_refused() {
    let image = build_image("plain-64M-grant-v2", 64, None);
    let r = run_with("kexec-grant-v2", &image, 64, "kexec_grant=v2");
    r.assert_logged(&["PVKEXEC-INFO kexec: grant table switched to v2"]);
    assert_kexec_passed(&r, 7);
    r.assert_logged(&["the table was v2, set back to v1"]);

    let r = run_with(
        "kexec-grant-v2-in-use",
        &image,
        64,
        "kexec_grant=v2 kexec_fault=grant-in-use",
    );
    r.assert_refused("purgatory: the grant table is v2 and GNTTABOP_set_version(1) failed: ");
    assert!(!r.log.contains("frames renumbered"), "log:\n{}", r.log);
}

/// A grant entry the old kernel still maps (as a backend would) cannot be revoked. Without a
/// grant reserve the purgatory names it and refuses; with one, its frame is kept from the new
/// kernel and listed, and the probe finds it outside its RAM and the entry the only one left.
#[test]
fn grant_still_mapped_is_hidden_or_refused() {
    let image = build_image("plain-64M-grant", 64, None);
    let r = run_with("kexec-grant-in-use", &image, 64, "kexec_fault=grant-in-use");
    r.assert_refused("purgatory: grant ref 8 (frame 0x");
    r.assert_logged(&["is still mapped and cannot be revoked, and no hidden frame is left for it"]);
    assert!(!r.log.contains("frames renumbered"), "log:\n{}", r.log);

    let reserved = harness::cache_dir().join("kexec-grant-reserve.img");
    let mut b = probe_build(64, &reserved);
    b.grant_reserve = Some(2);
    b.run().unwrap_or_else(|e| panic!("{e}"));
    let r = run_with(
        "kexec-grant-hidden",
        &reserved,
        64,
        "kexec_fault=grant-in-use",
    );
    assert_kexec_passed(&r, 7);
    r.assert_logged(&[
        "pvkexec.grants_busy=8:0x",
        "hidden-frames 2 (domain 16384 frames, nr_pages 16382)",
        "but the 1 listed as still mapped",
    ]);
}

/// An AP that never reaches the park entry ends in the purgatory's named failure and a
/// domain crash, before anything changed, not in a hang.
#[test]
fn ap_that_never_arrives_is_named_and_crashes_the_domain() {
    let image = build_image_for("smp2-stuck", 64, None, 2);
    let r = run_smp("kexec-ap-stuck", &image, 64, "kexec_fault=ap-stuck", 2);
    r.assert_refused(
        "purgatory: VCPU 1 did not reach the park entry (still in the old kernel after",
    );
    assert!(!r.log.contains("frames renumbered"), "log:\n{}", r.log);
}
