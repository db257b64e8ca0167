//! The boot-check kernel under real Xen 4.17 in QEMU: every check passes, and a deliberately
//! wrong expectation is reported by the harness as a guest failure.

use harness::provision::XenVersion;
use harness::{guest, BootConfig, Verdict};

fn bootcheck(tag: &str, mem_mib: u64, vcpus: u32, cmdline: String) -> harness::BootResult {
    bootcheck_on(XenVersion::V4_17, tag, mem_mib, vcpus, cmdline)
}

fn bootcheck_on(
    xen: XenVersion,
    tag: &str,
    mem_mib: u64,
    vcpus: u32,
    cmdline: String,
) -> harness::BootResult {
    let kernel = guest::binary("bootcheck").expect("building the guest kernels");
    let mut cfg = BootConfig::new(kernel);
    cfg.xen = xen;
    cfg.mem_mib = mem_mib;
    cfg.vcpus = vcpus;
    cfg.cmdline = cmdline;
    cfg.tag = tag.into();
    harness::boot(&cfg).expect("booting Xen under QEMU")
}

fn assert_all_pass(result: &harness::BootResult) {
    assert_eq!(result.verdict, Verdict::Pass, "log:\n{}", result.log);
    let passed = result.passed();
    for check in harness::BOOTCHECK_CHECKS {
        assert!(
            passed.iter().any(|p| p == check),
            "no PASS {check}:\n{}",
            result.log
        );
    }
    assert!(result.failed().is_empty());
}

#[test]
fn bootcheck_passes_64mib_2vcpus() {
    let result = bootcheck("bootcheck-64M", 64, 2, "mem_mib=64".into());
    assert_all_pass(&result);
    // Xen's own report of the layout it built is in the log.
    assert!(result.log.contains("VIRTUAL MEMORY ARRANGEMENT"));
}

#[test]
fn bootcheck_passes_1gib() {
    let result = bootcheck("bootcheck-1G", 1024, 1, "mem_mib=1024".into());
    assert_all_pass(&result);
    assert!(result.log.contains("p2m-m2p frames=262144"));
}

#[test]
fn bootcheck_passes_on_xen_4_20() {
    let result = bootcheck_on(
        XenVersion::V4_20,
        "bootcheck-xen4.20",
        64,
        2,
        "mem_mib=64".into(),
    );
    assert_all_pass(&result);
    assert!(
        result.log.contains("xen-version 4.20"),
        "log:\n{}",
        result.log
    );
}

#[test]
fn deliberate_failure_is_reported() {
    // The domain gets 64 MiB but the kernel is told to expect 63: its nr_pages check must fail,
    // the kernel must crash the domain, and the harness must call that a guest failure.
    let result = bootcheck("bootcheck-wrong-mem", 64, 1, "mem_mib=63".into());
    assert_eq!(result.verdict, Verdict::GuestFailed, "log:\n{}", result.log);
    assert_ne!(result.verdict.exit_code(), 0);
    let failed = result.failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "nr_pages");
    assert!(failed[0].1.contains("16384"), "{failed:?}");
    assert!(
        result.log.contains("Hardware Dom0 crashed"),
        "log:\n{}",
        result.log
    );
}
