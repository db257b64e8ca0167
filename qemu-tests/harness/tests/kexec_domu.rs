//! Kexec in PV domUs built by Xen's own toolstack (the rig of `harness::domu`), and the domU
//! layout against libxenguest itself. One shared dom0 boot (Xen 4.17) runs, one after another:
//! - the old test kernel (kexecold) with a `pvkexec build --mode domu` image as its ramdisk,
//!   kexecing into the probe: 1 VCPU at 256 MiB, and 2 VCPUs at 1 GiB with an initrd; every
//!   probe check passes, plus `domu-rings` (the new kernel's xenstore and console rings are the
//!   old domain's frames, at libxenguest's PFNs) and `xenstore` (its `domid` and `name` read
//!   through the kept ring and channel are what xl shows);
//! - a corrupted image: the purgatory names the segment, xl reports the domain's crash;
//! - the same old kernel kexecing into Debian 6.1 with a busybox initramfs and a disk: init
//!   runs, xen-blkfront connects through xenstore and reads the harness's marker;
//! - and into Debian bullseye's 5.10, which needs the hypercall page the loader writes;
//! - Debian 6.1 (bookworm bzImage) at 256, 512 and 1024 MiB, with and without a gzip'd
//!   initramfs, built only (`xl -vvv create -p`, then destroyed) for the domain builder's log:
//!   `pvkexec plan --mode domu` must print the same allocation lines.
//!
//! A second dom0 boot (Xen 4.20, trixie toolstack) builds Debian 6.12 the same six ways for the
//! same comparison with `--toolstack 4.20`, then kexecs the old test kernel into 6.12 with a
//! disk.

use harness::domu::{DomuResult, DomuRig, DomuSpec, DomuVerdict, RigRun};
use harness::provision::{self, DebianLinux};
use harness::tools::{self, BuildMode, PvkexecBuild};
use harness::{guest, initramfs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const PLAN_MEMS: [u64; 3] = [256, 512, 1024];
const INITRD_1G_LEN: usize = (3 << 20) + 123;
const DISK_MARKER: &str = "PVKEXEC-DISK-MARKER-kexec-domu";

/// `pvkexec build --mode domu` for the probe, for an old kernel of `vcpus` VCPUs.
fn build_image(name: &str, mem_mib: u64, initrd: Option<&Path>, vcpus: u32) -> PathBuf {
    let probe = guest::binary("probe").unwrap();
    let append = format!("mem_mib={mem_mib}");
    build_image_of(name, &probe, &append, mem_mib, initrd, vcpus)
}

/// `pvkexec build --mode domu` for `kernel`, for Xen 4.17's toolstack.
fn build_image_of(
    name: &str,
    kernel: &Path,
    append: &str,
    mem_mib: u64,
    initrd: Option<&Path>,
    vcpus: u32,
) -> PathBuf {
    build_image_for(name, kernel, append, mem_mib, initrd, vcpus, "4.17")
}

/// `pvkexec build --mode domu --toolstack T` for `kernel`.
fn build_image_for(
    name: &str,
    kernel: &Path,
    append: &str,
    mem_mib: u64,
    initrd: Option<&Path>,
    vcpus: u32,
    toolstack: &str,
) -> PathBuf {
    let out = harness::cache_dir().join(format!("kexec-domu-{name}.img"));
    let mut b = PvkexecBuild::new(kernel, mem_mib, BuildMode::Domu, &out);
    b.toolstack = Some(toolstack.into());
    b.old_vcpus = Some(vcpus);
    b.append = Some(append.into());
    b.initrd = initrd.map(Path::to_path_buf);
    b.run().unwrap_or_else(|e| panic!("{e}"));
    out
}

/// A copy of `image` with one byte of the kernel segment (segment 2) flipped.
fn corrupt_kernel_segment(image: &Path, name: &str) -> PathBuf {
    let mut bytes = std::fs::read(image).unwrap();
    let view = pvhandoff::image::ImageView::parse(&bytes).unwrap();
    assert_eq!(view.segment(2).kind_name(), "kernel");
    let off = view.data_offset(2).unwrap() as usize;
    let stored = view.stored(2).unwrap().len();
    bytes[off + stored / 2] ^= 0x20;
    let out = harness::cache_dir().join(format!("kexec-domu-{name}.img"));
    std::fs::write(&out, bytes).unwrap();
    out
}

fn kexec_spec(name: &str, mem_mib: u64, vcpus: u32, initrd: Option<&Path>) -> DomuSpec {
    let mut s = DomuSpec::new(name, guest::binary("kexecold").unwrap());
    s.ramdisk = Some(build_image(name, mem_mib, initrd, vcpus));
    s.mem_mib = mem_mib;
    s.vcpus = vcpus;
    s.timeout = Duration::from_secs(60);
    s
}

fn plan_name_for(prefix: &str, mem: u64, initrd: bool) -> String {
    format!("{prefix}-{mem}{}", if initrd { "-rd" } else { "" })
}

/// Build-only domUs of `kernel` at every size of [`PLAN_MEMS`], without and with the gzip'd
/// busybox initramfs.
fn plan_specs(prefix: &str, kernel: &Path) -> Vec<DomuSpec> {
    let rd = initramfs::ensure_initramfs().unwrap();
    let mut v = Vec::new();
    for mem in PLAN_MEMS {
        for with_rd in [false, true] {
            let mut s = DomuSpec::new(&plan_name_for(prefix, mem, with_rd), kernel);
            s.mem_mib = mem;
            s.ramdisk = with_rd.then(|| rd.clone());
            s.cmdline = "console=hvc0".into();
            s.build_only = true;
            s.timeout = Duration::from_secs(60);
            v.push(s);
        }
    }
    v
}

fn specs() -> Vec<DomuSpec> {
    let initrd = tools::test_file(INITRD_1G_LEN).unwrap();
    let mut v = vec![
        kexec_spec("kexec-256m", 256, 1, None),
        kexec_spec("kexec-1g-2vcpus", 1024, 2, Some(&initrd)),
    ];
    // Debian 6.1 after the kexec: INIT_P2M (the relocated P2M with its own tables), the
    // gunzipped initramfs past virt_pgtab_end, and xenbus over the kept xenstore ring.
    v.push(linux_kexec_spec(
        "kexec-linux61",
        DebianLinux::Bookworm,
        &initramfs::ensure_initramfs_blkfront().unwrap(),
        "4.17",
        Some(DISK_MARKER),
    ));
    // Debian bullseye's 5.10 asks for a hypercall page: the loader writes Xen's.
    v.push(linux_kexec_spec(
        "kexec-linux510",
        DebianLinux::Bullseye,
        &initramfs::ensure_initramfs().unwrap(),
        "4.17",
        None,
    ));
    // A corrupted image: the purgatory names the segment and crashes the domain.
    let mut bad = kexec_spec("kexec-corrupt", 256, 1, None);
    bad.ramdisk = Some(corrupt_kernel_segment(
        bad.ramdisk.as_ref().unwrap(),
        "kexec-corrupt-bad",
    ));
    bad.timeout = Duration::from_secs(60);
    v.push(bad);
    // The bzImage as users pass it. (Its 65 MB ELF would be quicker for libxenguest to load,
    // but six copies in dom0's initramfs leave dom0 too little memory to start the toolstack.)
    let bzimage = provision::ensure_linux(DebianLinux::Bookworm).unwrap();
    v.extend(plan_specs("plan61", &bzimage));
    v
}

struct Shared {
    run: Result<RigRun, String>,
    specs: Vec<DomuSpec>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let specs = specs();
        let rig = DomuRig {
            tag: "kexec-domu".into(),
            ..DomuRig::default()
        };
        let run = rig.run_for_tests(&specs);
        Shared { run, specs }
    })
}

fn domu(name: &str) -> &'static DomuResult {
    let run = shared().run.as_ref().expect("the domU rig failed");
    run.domus.iter().find(|d| d.name == name).unwrap()
}

/// The purgatory ran in the domU and the probe passed every check after the switch.
fn assert_kexec_passed(r: &DomuResult) {
    let log = r.log();
    assert_eq!(r.verdict, DomuVerdict::Pass, "{log}");
    for line in [
        "purgatory: entered",
        "purgatory: frames renumbered",
        "purgatory: kept store port",
        "purgatory: kept console port",
        "event channels reset (FIFO ABI gone)",
    ] {
        assert!(log.contains(line), "no {line:?} in:\n{log}");
    }
    let after = log
        .split(harness::PURGATORY_ENTERING)
        .nth(1)
        .expect("the purgatory's switch line");
    let mut checks = harness::probe_checks();
    checks.extend(["domu-rings", "xenstore"]);
    for check in checks {
        let line = format!("PVKEXEC-TEST PASS {check}");
        assert!(
            after.contains(&line),
            "no {line:?} after the switch:\n{log}"
        );
    }
    assert!(r.failed().is_empty(), "{log}");
    // What the new kernel read through xenstore is what xl says of the domain.
    let domid =
        r.xl.iter()
            .find_map(|l| l.split("(domid ").nth(1)?.split(')').next())
            .expect("xl names the domid");
    let line = format!("PVKEXEC-INFO xenstore domid={domid} name={}", r.name);
    assert!(
        after.contains(&line),
        "no {line:?} after the switch:\n{log}"
    );
}

#[test]
fn kexec_domu_into_probe_256mib() {
    assert_kexec_passed(domu("kexec-256m"));
}

#[test]
fn kexec_domu_into_probe_2vcpus_1gib_with_initrd() {
    let r = domu("kexec-1g-2vcpus");
    assert_kexec_passed(r);
    let log = r.log();
    for line in [
        // 5 frames of the 1 GiB are the park area, hidden from the new kernel.
        "p2m-m2p frames=262139".to_string(),
        "hidden-frames 5 (domain 262144 frames, nr_pages 262139)".to_string(),
        format!("mod_len={INITRD_1G_LEN:#x}"),
        "purgatory: VCPUs 1..1 parked".to_string(),
    ] {
        assert!(log.contains(&line), "no {line:?} in:\n{log}");
    }
}

/// A Linux new kernel ran its busybox init to the end (the domain powered off) and printed
/// `lines` after the purgatory's switch.
fn assert_linux_reached_init(r: &DomuResult, lines: &[&str]) {
    assert_eq!(r.verdict, DomuVerdict::PoweredOff, "{}", r.log());
    r.assert_after_switch(&[initramfs::INIT_MARKER, initramfs::DONE_MARKER]);
    r.assert_after_switch(lines);
}

/// Debian 6.1 kexec'd in a domU reaches its init, whose blkfront connects through xenstore
/// (kept ring and channel) and reads the marker the harness wrote into the disk.
#[test]
fn kexec_domu_into_debian_61_reads_its_disk() {
    let r = domu("kexec-linux61");
    // The gunzipped initramfs where libxenguest would put it (PFN 0x4c00, after the region).
    let marker = format!("{}{DISK_MARKER}", initramfs::DISK_MARKER_PREFIX);
    assert_linux_reached_init(
        r,
        &[
            "RAMDISK: [mem 0x04c00000-",
            "PVKEXEC-LINUX blkfront=loaded",
            &marker,
        ],
    );
}

/// Debian bullseye's 5.10 makes its first hypercall through the page it asked for
/// (XEN_ELFNOTE_HYPERCALL_PAGE); kexec'd in a domU, it reaches its init.
#[test]
fn kexec_domu_into_debian_510_with_a_hypercall_page() {
    let r = domu("kexec-linux510");
    assert_linux_reached_init(r, &["Linux version 5.10.", "PVKEXEC-LINUX uname-r=5.10."]);
}

/// One flipped byte in the kernel segment: the purgatory names it (through the console ring,
/// flushed before the crash), xl reports the crash, the new kernel never runs.
#[test]
fn corrupted_image_in_a_domu_is_named_and_crashes() {
    let r = domu("kexec-corrupt");
    let log = r.log();
    assert_eq!(r.verdict, DomuVerdict::Crashed, "{log}");
    assert_eq!(r.shutdown_reason, Some(3), "{log}");
    assert!(
        log.contains("purgatory: segment 2 (kernel): SHA-256 mismatch"),
        "{log}"
    );
    assert!(!log.contains(harness::PURGATORY_ENTERING), "{log}");
    assert!(!log.contains("PVKEXEC-TEST PASS"), "{log}");
}

/// Lines of the allocation decisions: `xc_dom_alloc_segment`, `xc_dom_alloc_page`,
/// `count_pgtables` and `xc_dom_build_image`'s `virt_*` lines, whitespace normalised.
fn allocation_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    lines
        .filter(|l| {
            l.starts_with("xc_dom_alloc_segment")
                || l.starts_with("xc_dom_alloc_page")
                || l.starts_with("count_pgtables")
                || (l.starts_with("xc_dom_build_image") && l.contains("virt_"))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// `pvkexec plan --mode domu`'s builder lines for a spec built by `toolstack`'s libxenguest.
fn planned(spec: &DomuSpec, toolstack: &str) -> Vec<String> {
    let mut cmd = Command::new(tools::pvkexec().unwrap());
    cmd.arg("plan").arg("--kernel").arg(&spec.kernel);
    cmd.args(["--mem-mib", &spec.mem_mib.to_string(), "--mode", "domu"]);
    cmd.args(["--toolstack", toolstack]);
    if let Some(rd) = &spec.ramdisk {
        cmd.arg("--initrd").arg(rd);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let block = text
        .split("DOMAIN BUILDER")
        .nth(1)
        .expect("plan --mode domu prints the builder lines");
    allocation_lines(block.lines().skip(1))
}

/// Compares every build-only domU of `run` whose name starts with `prefix` with the plan.
fn compare_plans(run: &RigRun, specs: &[DomuSpec], prefix: &str, toolstack: &str) {
    let mut compared = 0;
    for spec in specs.iter().filter(|s| s.name.starts_with(prefix)) {
        let r = run.domus.iter().find(|d| d.name == spec.name).unwrap();
        let xl = r.builder_log_lines();
        let theirs = allocation_lines(xl.iter().map(String::as_str));
        assert_eq!(r.verdict, DomuVerdict::Built, "{}: {:#?}", spec.name, r.xl);
        assert!(
            theirs.iter().any(|l| l.contains("phys2mach")),
            "{}: no builder log from xl:\n{:#?}",
            spec.name,
            r.xl
        );
        let ours = planned(spec, toolstack);
        assert_eq!(
            ours, theirs,
            "{}: pvkexec plan vs xl -vvv create",
            spec.name
        );
        eprintln!("{}: {} allocation lines equal", spec.name, ours.len());
        compared += 1;
    }
    assert_eq!(compared, PLAN_MEMS.len() * 2);
}

/// The differential test: for Debian 6.1 at three sizes, with and without a gzip'd initramfs,
/// `pvkexec plan --mode domu` prints libxenguest's own allocation lines, line for line.
#[test]
fn plan_domu_equals_libxenguest_for_debian_61() {
    let shared = shared();
    let run = shared.run.as_ref().expect("the domU rig failed");
    compare_plans(run, &shared.specs, "plan61-", "4.17");
}

const DISK_MARKER_420: &str = "PVKEXEC-DISK-MARKER-kexec-domu-4.20";

/// The old test kernel kexecing into Debian 6.12 (trixie bzImage, busybox initramfs with
/// trixie's blkfront, a disk) in a domU of Xen 4.20's toolstack.
fn kexec_612_spec() -> DomuSpec {
    linux_kexec_spec(
        "kexec-linux612",
        DebianLinux::Trixie,
        &initramfs::ensure_initramfs_blkfront_for(DebianLinux::Trixie).unwrap(),
        "4.20",
        Some(DISK_MARKER_420),
    )
}

/// The old test kernel kexecing into Debian's `linux` (256 MiB, 1 VCPU, `console=hvc0`) with
/// `initrd`, the image built for `toolstack`'s libxenguest; with a disk holding `disk_marker`.
fn linux_kexec_spec(
    name: &str,
    linux: DebianLinux,
    initrd: &Path,
    toolstack: &str,
    disk_marker: Option<&str>,
) -> DomuSpec {
    let mut s = DomuSpec::new(name, guest::binary("kexecold").unwrap());
    s.ramdisk = Some(build_image_for(
        name,
        &provision::ensure_linux(linux).unwrap(),
        "console=hvc0",
        256,
        Some(initrd),
        1,
        toolstack,
    ));
    s.disk = disk_marker.map(|m| harness::domu::marker_disk(m, 4).unwrap());
    s.timeout = Duration::from_secs(120);
    s
}

/// The Xen 4.20 dom0 boot: Debian 6.12 built only, six ways, for the plan comparison, then
/// one kexec into 6.12.
fn shared_420() -> &'static (Vec<DomuSpec>, RigRun) {
    static SHARED: OnceLock<(Vec<DomuSpec>, RigRun)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let mut specs = plan_specs(
            "plan612",
            &provision::ensure_linux(DebianLinux::Trixie).unwrap(),
        );
        specs.push(kexec_612_spec());
        let rig = DomuRig {
            xen: provision::XenVersion::V4_20,
            tag: "kexec-domu-4.20".into(),
            ..DomuRig::default()
        };
        let run = rig.run_for_tests(&specs).expect("the 4.20 domU rig failed");
        (specs, run)
    })
}

/// The same for Debian 6.12 under Xen 4.20's toolstack (whose libxenguest places a gzip'd
/// initrd as it is: `--toolstack 4.20`), in a dom0 boot of its own.
#[test]
fn plan_domu_equals_libxenguest_for_debian_612_on_xen_420() {
    let (specs, run) = shared_420();
    compare_plans(run, specs, "plan612-", "4.20");
}

/// Debian 6.12 kexec'd in a domU of Xen 4.20's toolstack reaches init and reads its disk.
#[test]
fn kexec_domu_into_debian_612_on_xen_420_reads_its_disk() {
    let (_, run) = shared_420();
    let r = run
        .domus
        .iter()
        .find(|d| d.name == "kexec-linux612")
        .unwrap();
    let marker = format!("{}{DISK_MARKER_420}", initramfs::DISK_MARKER_PREFIX);
    assert_linux_reached_init(
        r,
        &[
            "Linux version 6.12.",
            "PVKEXEC-LINUX blkfront=loaded",
            &marker,
        ],
    );
}
