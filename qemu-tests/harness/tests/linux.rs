//! Debian's stock PV Linux kernels as the new kernel of a kexec: old test kernel -> pvkexec ->
//! Linux, which must reach the busybox initramfs's `/init` and print its report. One run is
//! compared with a direct boot of the same kernel, initrd and memory by Xen's builder.

use harness::initramfs::{self, DONE_MARKER, INIT_MARKER};
use harness::provision::{self, DebianLinux, XenVersion};
use harness::tools::{self, BuildMode, PvkexecBuild};
use harness::{guest, BootConfig, BootResult, Module, Verdict};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MEM_MIB: u64 = 256;
const APPEND: &str = "console=hvc0 earlyprintk=xen";

/// `pvkexec build` output: (image, stdout, stderr); `with` sets the options beyond the kernel,
/// initramfs, memory and command line every build here shares.
fn build(
    tag: &str,
    kernel: &Path,
    with: impl FnOnce(&mut PvkexecBuild),
) -> (PathBuf, String, String) {
    let out = harness::cache_dir().join(format!("linux-{tag}.img"));
    let mut b = PvkexecBuild::new(kernel, MEM_MIB, BuildMode::Dom0, &out);
    b.initrd = Some(initramfs::ensure_initramfs().unwrap());
    b.append = Some(APPEND.into());
    with(&mut b);
    let o = b.run().unwrap_or_else(|e| panic!("{e}"));
    (out, o.stdout, o.stderr)
}

fn config(tag: &str, kernel: PathBuf, xen: XenVersion, vcpus: u32) -> BootConfig {
    let mut cfg = BootConfig::new(kernel);
    cfg.tag = tag.into();
    cfg.mem_mib = MEM_MIB;
    cfg.vcpus = vcpus;
    cfg.xen = xen;
    cfg.timeout = Duration::from_secs(240);
    cfg.stop_after = Some(DONE_MARKER.into());
    cfg
}

fn kexec(tag: &str, image: &Path, xen: XenVersion, vcpus: u32) -> BootResult {
    let mut cfg = config(tag, guest::binary("kexecold").unwrap(), xen, vcpus);
    cfg.modules.push(Module {
        path: image.to_path_buf(),
        args: String::new(),
    });
    harness::boot(&cfg).unwrap()
}

fn direct(tag: &str, kernel: &Path, xen: XenVersion) -> BootResult {
    let mut cfg = config(tag, kernel.to_path_buf(), xen, 1);
    cfg.cmdline = APPEND.into();
    cfg.modules.push(Module {
        path: initramfs::ensure_initramfs().unwrap(),
        args: String::new(),
    });
    harness::boot(&cfg).unwrap()
}

/// The `/init` report's value for `key` (`key=value` or `Key: value`).
fn value(r: &BootResult, key: &str) -> String {
    initramfs::report(&r.log)
        .iter()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim_start_matches([':', '=']).trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in the report:\n{}", r.log))
}

/// Linux reached init through the kexec and printed its whole report.
fn assert_reached_init(r: &BootResult, release_prefix: &str) {
    assert_eq!(r.verdict, Verdict::Stopped, "log:\n{}", r.log);
    assert!(
        r.log.contains(harness::PURGATORY_ENTERING),
        "log:\n{}",
        r.log
    );
    assert!(r.log.contains(INIT_MARKER), "log:\n{}", r.log);
    let release = value(r, "uname-r");
    assert!(release.starts_with(release_prefix), "uname -r {release}");
    assert_eq!(value(r, "cmdline"), APPEND);
}

fn mem_total_kb(r: &BootResult) -> u64 {
    value(r, "MemTotal")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

/// Frames of `Page tables: A->B` in an arrangement block.
fn page_table_frames(text: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.contains("Page tables:"))
        .unwrap_or_else(|| panic!("no Page tables line in:\n{text}"));
    let range = line.split("Page tables:").nth(1).unwrap().trim();
    let (a, b) = range.split_once("->").unwrap();
    let hex = |s: &str| u64::from_str_radix(s.trim(), 16).unwrap();
    (hex(b) - hex(a)) / 4096
}

#[test]
fn linux_61_bzimage_through_kexec_matches_a_direct_boot() {
    let kernel = provision::ensure_linux(DebianLinux::Bookworm).unwrap();
    let (image, plan, _) = build("6.1-bz", &kernel, |_| {});
    let k = kexec("linux-6.1-kexec", &image, XenVersion::V4_17, 1);
    assert_reached_init(&k, "6.1.");
    let d = direct("linux-6.1-direct", &kernel, XenVersion::V4_17);
    assert!(d.log.contains(INIT_MARKER), "direct boot:\n{}", d.log);

    // The memory map Linux reads from Xen is the same.
    let xen_lines = |r: &BootResult| -> Vec<String> {
        r.lines_with("] Xen: [mem ")
            .map(|l| l.split("] ").nth(1).unwrap().to_string())
            .collect()
    };
    assert!(!xen_lines(&d).is_empty());
    assert_eq!(xen_lines(&k), xen_lines(&d));
    assert_eq!(value(&k, "cmdline"), value(&d, "cmdline"));
    // MemTotal differs by exactly the trampoline's extra bootstrap table frames, which Linux
    // reserves with the rest of the boot tables (nr_pt_frames).
    let extra = page_table_frames(&plan) - page_table_frames(&d.log);
    let (mk, md) = (mem_total_kb(&k), mem_total_kb(&d));
    eprintln!(
        "MemTotal: kexec {mk} kB, direct {md} kB, extra table frames {extra}; wall: kexec {:.2} s, direct {:.2} s",
        k.wall.as_secs_f64(),
        d.wall.as_secs_f64()
    );
    assert_eq!(md - mk, 4 * extra, "MemTotal difference not explained");
    // Wall times are reported here and measured by `cargo xtask bench`, not asserted: a
    // loaded machine stretches either run.
}

#[test]
fn linux_61_extracted_elf_through_kexec() {
    let kernel = provision::ensure_linux(DebianLinux::Bookworm).unwrap();
    let elf = harness::cache_dir().join("linux-bookworm-vmlinux");
    let o = Command::new(tools::pvkexec().unwrap())
        .arg("extract")
        .arg("--kernel")
        .arg(&kernel)
        .arg("-o")
        .arg(&elf)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(&std::fs::read(&elf).unwrap()[..4], b"\x7fELF");
    let (image, _, _) = build("6.1-elf", &elf, |_| {});
    assert_reached_init(
        &kexec("linux-6.1-elf", &image, XenVersion::V4_17, 1),
        "6.1.",
    );
}

#[test]
fn linux_612_bzimage_through_kexec_on_xen_417_and_420() {
    let kernel = provision::ensure_linux(DebianLinux::Trixie).unwrap();
    let (image, _, _) = build("6.12-bz", &kernel, |_| {});
    for (tag, xen) in [
        ("linux-6.12-xen-4.17", XenVersion::V4_17),
        ("linux-6.12-xen-4.20", XenVersion::V4_20),
    ] {
        let r = kexec(tag, &image, xen, 1);
        assert_reached_init(&r, "6.12.");
        assert!(
            r.log.contains(&format!("Xen version: {}.", xen.name())),
            "log:\n{}",
            r.log
        );
    }
}

/// In a 2-VCPU domain the old kernel initialised VCPU 1 and the purgatory parks it; the loader
/// gives Linux `nr_cpus=1` and says why (Linux BUG()s re-initialising a VCPU), and Linux runs
/// on one CPU.
#[test]
fn two_vcpus_linux_runs_on_one_cpu_with_the_loaders_reason() {
    let kernel = provision::ensure_linux(DebianLinux::Bookworm).unwrap();
    let (image, _, stderr) = build("6.1-2vcpu", &kernel, |b| b.old_vcpus = Some(2));
    assert!(
        stderr.contains("appended nr_cpus=1: the old kernel initialised 2 VCPUs"),
        "{stderr}"
    );
    let r = kexec("linux-6.1-2vcpu", &image, XenVersion::V4_17, 2);
    assert_eq!(r.verdict, Verdict::Stopped, "log:\n{}", r.log);
    assert!(
        r.log.contains("purgatory: VCPUs 1..1 parked"),
        "log:\n{}",
        r.log
    );
    assert_eq!(value(&r, "nproc"), "1");
    // The purgatory adds where the parked VCPU's mailbox is (docs/smp.md).
    let cmdline = value(&r, "cmdline");
    assert!(
        cmdline.starts_with(&format!("{APPEND} nr_cpus=1 pvkexec.park=0x")),
        "{cmdline}"
    );
}

/// The loader warns, with the reason, when the old kernel registered vcpu_info and the new
/// kernel is Linux 5.16 or later; not otherwise.
#[test]
fn loader_warns_for_linux_516_after_vcpu_info_registration() {
    let kernel = provision::ensure_linux(DebianLinux::Trixie).unwrap();
    let (_, _, stderr) = build("6.12-vcpu-info", &kernel, |b| b.old_vcpu_info = true);
    assert!(
        stderr.contains("warning")
            && stderr.contains("Linux 6.12.")
            && stderr.contains("panics when VCPUOP_register_vcpu_info fails"),
        "{stderr}"
    );
    let (_, _, stderr) = build("6.12-no-vcpu-info", &kernel, |_| {});
    assert!(!stderr.contains("warning"), "{stderr}");
}

/// Debian bullseye's Linux 5.10 asks for a hypercall page (XEN_ELFNOTE_HYPERCALL_PAGE) and
/// makes its first hypercall through it: without the page the loader writes, it dies at once
/// (`d0v0 Unhandled: vec 6, #UD`).
#[test]
fn linux_510_with_a_hypercall_page_through_kexec() {
    let kernel = provision::ensure_linux(DebianLinux::Bullseye).unwrap();
    let (image, _, stderr) = build("5.10-bz", &kernel, |_| {});
    assert!(!stderr.contains("warning"), "{stderr}");
    assert_reached_init(
        &kexec("linux-5.10-kexec", &image, XenVersion::V4_17, 1),
        "5.10.",
    );
}
