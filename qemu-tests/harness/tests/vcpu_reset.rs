//! VCPUs reset instead of parked (docs/smp.md, "With a hypervisor that resets VCPUs"): on Xen
//! 4.17 built with pvkexec's patches (XENFEAT_vcpu_reset, XENFEAT_vcpu_info_reregister), the old
//! test kernel (every VCPU's vcpu_info placed, timers running) kexecs into the probe with an
//! image built with `--xen-vcpu-reset`: the purgatory resets every other VCPU and moves VCPU
//! 0's vcpu_info back to shared_info, hides nothing, and the probe finds no VCPU but 0
//! initialised (VCPU 1 takes a fresh VCPUOP_initialise) and no vcpu_info registration. The
//! same image is refused by name on Debian's stock Xen (also when the kernel side claims the
//! features: the purgatory asks Xen itself), and an image built for parking still parks on
//! the patched Xen (the reset checks reported SKIP).

use harness::tools::{BuildMode, PvkexecBuild};
use harness::{guest, BootConfig, BootResult, Module, Verdict};
use std::path::{Path, PathBuf};

/// The probe for a 64 MiB initial domain whose old kernel ran `vcpus` VCPUs with vcpu_info
/// placed; `reset`: built for a hypervisor that resets VCPUs.
fn image(name: &str, vcpus: u32, reset: bool) -> PathBuf {
    let out = harness::cache_dir().join(format!("kexec-{name}.img"));
    let probe = guest::binary("probe").unwrap();
    let mut b = PvkexecBuild::new(&probe, 64, BuildMode::Dom0, &out);
    b.append = Some("mem_mib=64".into());
    b.old_vcpus = Some(vcpus);
    b.old_vcpu_info = true;
    b.xen_vcpu_reset = reset;
    let o = b.run().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[{name}] pvkexec build:\n{}{}", o.stdout, o.stderr);
    out
}

/// The old test kernel on `vcpus` VCPUs, every vcpu_info placed, under the patched or stock
/// Xen 4.17; `extra`: more command-line words.
fn run(name: &str, image: &Path, vcpus: u32, patched_xen: bool, extra: &str) -> BootResult {
    let mut cfg = BootConfig::new(guest::binary("kexecold").unwrap());
    cfg.vcpus = vcpus;
    cfg.cmdline = format!("kexec_store=loopback kexec_vcpu_info=1 {extra}");
    cfg.mem_mib = 64;
    cfg.tag = name.into();
    cfg.patched_xen = patched_xen;
    cfg.modules.push(Module {
        path: image.to_path_buf(),
        args: String::new(),
    });
    harness::boot(&cfg).unwrap()
}

/// Every probe check passed after the switch, `extra` ones included.
fn assert_probe_passed(r: &BootResult, extra: &[&str]) {
    assert_eq!(r.verdict, Verdict::Pass, "log:\n{}", r.log);
    let after = r
        .log
        .split(harness::PURGATORY_ENTERING)
        .nth(1)
        .expect("the purgatory's switch line");
    for check in harness::probe_checks().iter().chain(extra) {
        let line = format!("PVKEXEC-TEST PASS {check}");
        assert!(
            after.contains(&line),
            "no {line:?} after the switch:\n{}",
            r.log
        );
    }
    assert!(r.failed().is_empty(), "log:\n{}", r.log);
}

/// 2 and 4 VCPUs: every probe check passes, the reset ones included. (With the first form of
/// the reset patch, which armed the default periodic timer of the VCPU it reset, the probe's
/// no-old-timers caught VIRQ_TIMER on VCPU 1; 8598b4e leaves it unarmed.)
#[test]
fn vcpus_are_reset_on_the_patched_hypervisor() {
    for vcpus in [2u32, 4] {
        let img = image(&format!("reset{vcpus}"), vcpus, true);
        let r = run(&format!("kexec-reset-{vcpus}vcpus"), &img, vcpus, true, "");
        let reset = format!(
            "purgatory: VCPUs 1..{} down and reset (VCPUOP_reset",
            vcpus - 1
        );
        r.assert_logged(&[
            &reset,
            "VCPU 0's vcpu_info back in shared_info; nothing parked or hidden",
            // Nothing hidden: no park area, no vcpu_info frame.
            "hidden-frames 0 (domain 16384 frames, nr_pages 16384)",
            "vcpu-info-free shared_info's slot updated",
        ]);
        assert!(!r.log.contains("pvkexec.park="), "log:\n{}", r.log);
        assert!(!r.log.contains("pvkexec.vcpu_info="), "log:\n{}", r.log);
        assert_probe_passed(
            &r,
            &[
                "vcpus-reset",
                "vcpu-info-free",
                "ap-wake",
                "nmi-callback-gone",
            ],
        );
    }
}

/// On stock Xen a reset image is refused: the kernel side reports no feature, and a kernel
/// side that claims both anyway (`kexec_fault=xen-flags-claimed`) is caught by the purgatory's
/// own XENVER_get_features.
#[test]
fn a_reset_image_is_refused_on_stock_xen() {
    let img = image("reset2-stock", 2, true);
    let r = run("kexec-reset-stock", &img, 2, false, "");
    r.assert_refused(
        "and the kernel side did not report XENFEAT_vcpu_reset and XENFEAT_vcpu_info_reregister",
    );
    let r = run(
        "kexec-reset-stock-claimed",
        &img,
        2,
        false,
        "kexec_fault=xen-flags-claimed",
    );
    r.assert_refused(
        "and this Xen does not offer XENFEAT_vcpu_reset and XENFEAT_vcpu_info_reregister",
    );
}

#[test]
fn a_parking_image_parks_on_the_patched_hypervisor() {
    let img = image("park2-patched", 2, false);
    let r = run("kexec-park-patched", &img, 2, true, "");
    r.assert_logged(&[
        "purgatory: VCPUs 1..1 parked: down on private tables",
        "pvkexec.vcpu_info=0:0x",
        "PVKEXEC-TEST SKIP vcpus-reset: the image parks",
        "PVKEXEC-TEST SKIP vcpu-info-free: the image parks",
    ]);
    assert_probe_passed(&r, &["ap-wake", "nmi-callback-gone"]);
}
