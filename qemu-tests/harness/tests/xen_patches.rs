//! pvkexec's Xen patches (xen-patches/) tested from a guest: the `xenpatch` kernel as Xen's
//! initial domain. On the patched hypervisor (4.17 and 4.20) every check of both changes
//! passes: vcpu_info moved a hundred times under timer ticks, pings from VCPU 1 and loopback
//! notifications with none lost, unregistered, and VCPU 1 reset and run again twice, with
//! each refusal's errno. On stock Xen the same calls get stock answers, and the patched
//! expectations fail there (so they can fail).
//!
//! Checks the kernel reports as skipped, and why: `vcpu-info-unregister-id32` needs a domain
//! with more than 32 VCPUs and `vcpu-reset-never-initialised` a VCPU 2 (both run on 4.20
//! only, with 33 VCPUs on QEMU's 4 CPUs).

use harness::provision::XenVersion;
use harness::{guest, BootConfig, BootResult, Verdict};

/// What every boot checks before the side-specific checks.
const COMMON_CHECKS: &[&str] = &["vcpu-info-register"];

const STOCK_CHECKS: &[&str] = &[
    "stock-xenfeat-bits",
    "stock-vcpu-info-reregister",
    "stock-vcpu-info-stays",
    "stock-vcpu-info-unregister",
    "stock-vcpu-reset-self",
    "stock-vcpu-reset-up",
    "stock-vcpu-reset-out-of-range",
    "stock-vcpu-reset-down",
    "stock-vcpu-reinitialise",
    "stock-down-vcpu-events-reach-registered-page",
    "stock-down-vcpu-singleshot-fires",
];

const PATCHED_CHECKS: &[&str] = &[
    "xenfeat-bits",
    "vcpu-info-move-events",
    "vcpu-info-move-flags",
    "vcpu-info-move-time",
    "vcpu-info-move-old-page-quiet",
    "vcpu-info-move-remote-up",
    "vcpu-info-unregister",
    "vcpu-info-unregister-unregistered",
    "vcpu-info-register-after-unregister",
    "vcpu-info-pings-all-seen",
    "vcpu-reset-self",
    "vcpu-reset-up",
    "vcpu-reset-out-of-range",
    "vcpu-reset-nonnull-arg",
    "vcpu-reset-ldt-held-while-down",
    "vcpu-reset-1",
    "vcpu-reset-ldt-dropped",
    "vcpu-reset-1-up-before-initialise",
    "vcpu-reset-1-vcpu-info-slot",
    "vcpu-reset-1-no-timer-while-down",
    "vcpu-reset-1-runs",
    "vcpu-reset-1-periodic-default",
    "vcpu-reset-1-areas-dropped",
    "vcpu-reset-1-register-again",
    "vcpu-reset-2",
    "vcpu-reset-2-up-before-initialise",
    "vcpu-reset-2-vcpu-info-slot",
    "vcpu-reset-2-no-timer-while-down",
    "vcpu-reset-2-runs",
    "vcpu-reset-2-periodic-default",
    "vcpu-reset-2-areas-dropped",
    "vcpu-reset-2-register-again",
];

fn xenpatch(xen: XenVersion, patched: bool, vcpus: u32, expect: &str, tag: &str) -> BootResult {
    xenpatch_with(xen, patched, vcpus, expect, tag, "")
}

/// [`xenpatch`] with `xen_args` on Xen's command line.
fn xenpatch_with(
    xen: XenVersion,
    patched: bool,
    vcpus: u32,
    expect: &str,
    tag: &str,
    xen_args: &str,
) -> BootResult {
    let kernel = guest::binary("xenpatch").expect("building the guest kernels");
    let mut cfg = BootConfig::new(kernel);
    cfg.xen_args = xen_args.into();
    cfg.xen = xen;
    cfg.patched_xen = patched;
    cfg.mem_mib = 64;
    cfg.vcpus = vcpus;
    cfg.cmdline = format!("mem_mib=64 xenpatch.expect={expect}");
    cfg.tag = tag.into();
    harness::boot(&cfg).expect("booting Xen under QEMU")
}

/// `(name, why)` of the `PVKEXEC-TEST SKIP name: why` lines.
fn skipped(result: &BootResult) -> Vec<(String, String)> {
    result
        .lines_with("PVKEXEC-TEST SKIP ")
        .filter_map(|l| l.split("PVKEXEC-TEST SKIP ").nth(1))
        .map(|s| match s.split_once(": ") {
            Some((name, why)) => (name.trim().to_string(), why.trim().to_string()),
            None => (s.trim().to_string(), String::new()),
        })
        .collect()
}

/// The boot passed, every check in `checks` passed, and exactly `skips` were skipped.
fn assert_passes(result: &BootResult, checks: &[&str], skips: &[&str]) {
    assert_eq!(result.verdict, Verdict::Pass, "log:\n{}", result.log);
    assert!(result.failed().is_empty(), "{:?}", result.failed());
    let passed = result.passed();
    for check in COMMON_CHECKS.iter().chain(checks) {
        assert!(
            passed.iter().any(|p| p == check),
            "no PASS {check}:\n{}",
            result.log
        );
    }
    let mut names: Vec<String> = skipped(result).into_iter().map(|(n, _)| n).collect();
    names.sort();
    let mut want: Vec<String> = skips.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want, "skipped checks:\n{}", result.log);
}

/// The patched hypervisor ran (its banner), and the move loop and pings were counted.
fn assert_patched_ran(result: &BootResult, release: &str) {
    assert!(
        result
            .log
            .contains(&format!("Xen version {release} (pvkexec@patched)")),
        "not the patched Xen {release}:\n{}",
        result.log
    );
    assert!(
        result.log.contains("100 moves of VCPU 0's vcpu_info")
            && result
                .log
                .contains("100 of 100 loopback notifications seen"),
        "log:\n{}",
        result.log
    );
    assert!(
        result.lines_with("pings sent by VCPU 1, all seen").count() == 1,
        "log:\n{}",
        result.log
    );
}

#[test]
fn stock_xen_4_17_gives_stock_answers() {
    let result = xenpatch(XenVersion::V4_17, false, 2, "stock", "xenpatch-stock-4.17");
    assert_passes(&result, STOCK_CHECKS, &[]);
    assert!(result
        .log
        .contains("vcpu_info_reregister false, vcpu_reset false"));
}

#[test]
fn stock_xen_4_20_gives_stock_answers() {
    // 4.20 answers a second registration with -EBUSY (4.17: -EINVAL); the kernel picks by
    // the version Xen reports.
    let result = xenpatch(XenVersion::V4_20, false, 2, "stock", "xenpatch-stock-4.20");
    assert_passes(&result, STOCK_CHECKS, &[]);
    assert!(
        result.log.contains("Xen 4.20, 2 VCPUs"),
        "log:\n{}",
        result.log
    );
}

#[test]
fn patched_expectations_fail_on_stock_xen() {
    // The patched checks against stock Xen 4.17: each change's checks must fail, with the
    // stock errno named.
    let result = xenpatch(XenVersion::V4_17, false, 2, "patched", "xenpatch-on-stock");
    assert_eq!(result.verdict, Verdict::GuestFailed, "log:\n{}", result.log);
    let failed = result.failed();
    let reason = |name: &str| {
        failed
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, why)| why.clone())
            .unwrap_or_else(|| panic!("no FAIL {name}: {failed:?}\n{}", result.log))
    };
    assert!(reason("xenfeat-bits").contains("bit 21 is false"));
    assert!(reason("vcpu-info-move-events").contains("-EINVAL"));
    for name in [
        "vcpu-info-move-flags",
        "vcpu-info-move-time",
        "vcpu-info-move-old-page-quiet",
    ] {
        assert!(reason(name).contains("only 0 of 100 moves ran"), "{name}");
    }
    assert!(reason("vcpu-info-unregister").contains("-EINVAL"));
    assert!(reason("vcpu-info-register-after-unregister").contains("-EINVAL"));
    assert!(reason("vcpu-reset-self").contains("-ENOSYS"));
    assert!(reason("vcpu-reset-up").contains("-ENOSYS"));
    assert!(reason("vcpu-reset-nonnull-arg").contains("-ENOSYS"));
    assert!(reason("vcpu-reset-1").contains("-ENOSYS"));
    assert!(
        result.log.contains("Hardware Dom0 crashed"),
        "log:\n{}",
        result.log
    );
}

#[test]
fn patched_xen_4_17_passes() {
    let result = xenpatch(
        XenVersion::V4_17,
        true,
        2,
        "patched",
        "xenpatch-patched-4.17",
    );
    assert_passes(
        &result,
        PATCHED_CHECKS,
        &["vcpu-info-unregister-id32", "vcpu-reset-never-initialised"],
    );
    assert_patched_ran(&result, "4.17.7");
}

#[test]
fn patched_xen_4_20_passes_with_4_vcpus() {
    // 33 VCPUs for the domain on QEMU's 4 CPUs (Xen's dom0_max_vcpus sets the minimum too):
    // VCPU 32 has no shared_info slot, so unregistering its vcpu_info is refused.
    let result = xenpatch_with(
        XenVersion::V4_20,
        true,
        4,
        "patched",
        "xenpatch-patched-4.20",
        "dom0_max_vcpus=33",
    );
    let mut checks = PATCHED_CHECKS.to_vec();
    checks.push("vcpu-reset-never-initialised");
    checks.push("vcpu-info-unregister-id32");
    assert_passes(&result, &checks, &[]);
    assert_patched_ran(&result, "4.20.4");
}
