//! The kernel side on Debian's 6.12: bookworm's unmodified `linux-image-6.12.N+deb12-amd64`
//! (trixie's 6.12 sources built with gcc-12; trixie's own +deb13 build needs gcc-14 and glibc
//! 2.38 for its module tools, which a bookworm host lacks) as a toolstack-built domU (Xen
//! 4.17) with `pvkexec.ko`, built against that image's own headers, and the CLI in its
//! initramfs: 2 VCPUs, a disk read through blkfront, `pvkexec load` + `pvkexec exec` -> probe.
//! One dom0 boot, one domU (the initramfs is `kmod::old_linux_spec`'s, as `cargo xtask kexec
//! --domu --old-kernel debian-6.12` runs it).

use harness::domu::{self, DomuRig, DomuVerdict};
use harness::kmod::{self, Headers, OldLinuxKexec};
use harness::provision::{self, DebianLinux};
use std::time::{Duration, Instant};

const MEM_MIB: u64 = 256;
const DISK_MARKER: &str = "PVKEXEC-DISK-MARKER-kmod612";

/// Host seconds from the module's first exec line to the new kernel's first line (the serial
/// log's own times).
fn exec_to_first_line(run: &domu::RigRun, name: &str) -> Option<f64> {
    let tag = format!("[domu:{name}] ");
    let at = |needle: &str| {
        run.dom0
            .log
            .lines()
            .zip(&run.dom0.line_secs)
            .find(|(l, _)| l.contains(&tag) && l.contains(needle))
            .map(|(_, t)| *t)
    };
    Some(at("PVKEXEC-INFO zeroed")? - at("pvkexec: exec: image ")?)
}

/// A module built for 6.1 is refused for the 6.12 image by name, before any boot.
#[test]
fn a_61_module_is_refused_for_the_612_image() {
    let ko = kmod::build(Headers::Bookworm).unwrap();
    let linux = provision::ensure_linux(DebianLinux::Bookworm612).unwrap();
    let e = kmod::check_module_matches(&ko, &linux).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("built for Linux 6.1.") && msg.contains("+deb12-amd64: insmod would fail"),
        "{msg}"
    );
}

/// Debian 6.12 (2 VCPUs, a disk read through blkfront) -> `pvkexec load` + `pvkexec exec` ->
/// probe: every probe check passes (grants-revoked: the module closed blkfront and waited for
/// blkback).
#[test]
fn debian_612_execs_into_the_probe_2vcpus_after_blkfront() {
    let start = Instant::now();
    let linux = provision::ensure_linux(DebianLinux::Bookworm612).unwrap();
    let release = kmod::bzimage_release(&linux).unwrap();
    let disk = domu::marker_disk(DISK_MARKER, 4).unwrap();
    let req = OldLinuxKexec {
        old: DebianLinux::Bookworm612,
        kernel: harness::guest::binary("probe").unwrap(),
        initrd: None,
        append: format!("mem_mib={MEM_MIB}"),
        mem_mib: MEM_MIB,
        vcpus: 2,
        disk: Some(disk.clone()),
        timeout: Duration::from_secs(150),
    };
    let (spec, rd) = kmod::old_linux_spec("kmod612", &req).unwrap();
    let rig = DomuRig {
        tag: "kmod612".into(),
        ..DomuRig::default()
    };
    let run = rig.run(&[spec]);
    let _ = std::fs::remove_file(&rd);
    let _ = std::fs::remove_file(&disk);
    let run = run.unwrap();
    let d = &run.domus[0];
    let log = d.log();
    eprintln!(
        "kmod612: old kernel {release}; exec -> probe's first line {:.2} s; whole test {:.1} s",
        exec_to_first_line(&run, "kmod612").unwrap_or(f64::NAN),
        start.elapsed().as_secs_f64()
    );
    assert!(!log.contains("insmod failed"), "{log}");
    for want in [
        format!(
            "for Linux {}, running {release}",
            release.split('+').next().unwrap()
        ),
        format!("PVKEXEC-KMOD xvda={DISK_MARKER}"),
        "backend /local/domain/0/backend/vbd/".into(),
        harness::PURGATORY_ENTERING.into(),
    ] {
        assert!(log.contains(&want), "no {want:?}:\n{log}");
    }
    assert_eq!(d.verdict, DomuVerdict::Pass, "{log}");
    let passed = d.passed();
    for check in harness::probe_checks().into_iter().chain(["ap-wake"]) {
        assert!(passed.iter().any(|p| p == check), "no PASS {check}:\n{log}");
    }
    for p in &passed {
        eprintln!("kmod612: PASS {p}");
    }
}
