//! PV domUs built by Xen's own toolstack (xl, xenstored, xenconsoled) in a Debian dom0 under
//! QEMU: the rig of `harness::domu`. Every test here reads its domU's result from one shared
//! dom0 boot (the rig runs the domUs one after another), which keeps the suite lean.

use harness::domu::{self, DomuResult, DomuRig, DomuSpec, DomuVerdict, RigRun};
use harness::provision::{self, DebianLinux};
use harness::{guest, initramfs};
use std::sync::OnceLock;
use std::time::Duration;

const DISK_MARKER: &str = "PVKEXEC-DISK-MARKER-domu-rig";

/// The domUs of the shared boot, in run order.
fn specs() -> Vec<DomuSpec> {
    let bootcheck = guest::binary("bootcheck").expect("building the guest kernels");
    let mut one = DomuSpec::new("bootcheck-1", &bootcheck);
    one.mem_mib = 64;
    one.cmdline = "mem_mib=64".into();
    one.timeout = Duration::from_secs(30);
    let mut two = DomuSpec::new("bootcheck-2", &bootcheck);
    two.mem_mib = 128;
    two.vcpus = 2;
    two.cmdline = "mem_mib=128".into();
    two.timeout = Duration::from_secs(30);
    // A wrong expectation: the domU's FAIL line must make the verdict.
    let mut wrong = DomuSpec::new("bootcheck-wrong", &bootcheck);
    wrong.mem_mib = 64;
    wrong.cmdline = "mem_mib=65".into();
    wrong.timeout = Duration::from_secs(30);
    let mut silent = DomuSpec::new("silent", domu::silent_kernel().unwrap());
    silent.mem_mib = 32;
    silent.timeout = Duration::from_secs(8);
    let mut crashing = DomuSpec::new("crashing", domu::crashing_kernel().unwrap());
    crashing.mem_mib = 32;
    crashing.timeout = Duration::from_secs(30);
    // A config line xl's parser rejects: xl create fails before any domain exists.
    let mut rejected = DomuSpec::new("rejected", &bootcheck);
    rejected.extra_config.push("oops = [".into());
    rejected.timeout = Duration::from_secs(30);
    let mut linux = DomuSpec::new(
        "linux",
        provision::ensure_linux(DebianLinux::Bookworm).unwrap(),
    );
    linux.ramdisk = Some(initramfs::ensure_initramfs_blkfront().unwrap());
    linux.cmdline = "console=hvc0".into();
    linux.disk = Some(domu::marker_disk(DISK_MARKER, 4).unwrap());
    linux.timeout = Duration::from_secs(90);
    // Built and destroyed unstarted: the builder's log alone.
    let mut built = DomuSpec::new("built", &bootcheck);
    built.build_only = true;
    vec![one, two, wrong, silent, crashing, rejected, built, linux]
}

struct Shared {
    run: Result<RigRun, String>,
}

/// Runs the shared dom0 boot once; every test takes its domU from it.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let specs = specs();
        let rig = DomuRig {
            tag: "domu".into(),
            ..DomuRig::default()
        };
        let run = rig.run_for_tests(&specs);
        Shared { run }
    })
}

fn domu(name: &str) -> &'static DomuResult {
    let run = shared().run.as_ref().expect("the domU rig failed");
    run.domus.iter().find(|d| d.name == name).unwrap()
}

#[test]
fn bootcheck_domu_passes_1vcpu() {
    let r = domu("bootcheck-1");
    assert_eq!(r.verdict, DomuVerdict::Pass, "{}", r.log());
    for check in harness::BOOTCHECK_CHECKS {
        assert!(
            r.passed().iter().any(|p| p == check),
            "no PASS {check}:\n{}",
            r.log()
        );
    }
    // The domain builder's log is there for the plan comparison.
    let builder = r.builder_log_lines();
    assert!(builder
        .iter()
        .any(|l| l.starts_with("xc_dom_alloc_segment:") && l.contains("kernel")));
    assert!(builder.iter().any(|l| l.contains("virt_alloc_end")));
    assert!(builder.iter().any(|l| l.starts_with("count_pgtables")));
}

#[test]
fn bootcheck_domu_passes_2vcpus() {
    let r = domu("bootcheck-2");
    assert_eq!(r.verdict, DomuVerdict::Pass, "{}", r.log());
    for check in harness::BOOTCHECK_CHECKS {
        assert!(
            r.passed().iter().any(|p| p == check),
            "no PASS {check}:\n{}",
            r.log()
        );
    }
}

/// The harness reads the domU's FAIL lines: a deliberately wrong expectation fails by name.
#[test]
fn bootcheck_domu_failure_is_reported() {
    let r = domu("bootcheck-wrong");
    assert_eq!(r.verdict, DomuVerdict::GuestFailed, "{}", r.log());
    assert!(
        r.failed().iter().any(|(name, _)| name == "nr_pages"),
        "{}",
        r.log()
    );
}

/// A domU that never prints ends as a named timeout (dom0's init destroys it), and the next
/// domU still runs.
#[test]
fn silent_domu_times_out_by_name() {
    let r = domu("silent");
    assert_eq!(r.verdict, DomuVerdict::Timeout, "{:#?}", r.xl);
    assert!(r.console.is_empty(), "{:?}", r.console);
}

/// A domU that Xen crashes (its first instruction faults, no trap table) is named Crashed,
/// from the reason code xl reports.
#[test]
fn crashing_domu_is_named() {
    let r = domu("crashing");
    assert_eq!(r.verdict, DomuVerdict::Crashed, "{:#?}", r.xl);
    assert_eq!(r.shutdown_reason, Some(3));
}

/// A config the toolstack rejects is a named toolstack failure, quickly.
#[test]
fn rejected_config_is_a_toolstack_failure() {
    let r = domu("rejected");
    match &r.verdict {
        DomuVerdict::Toolstack(why) => assert!(why.contains("/domu/rejected.cfg"), "{why}"),
        v => panic!("expected a toolstack failure, got {v:?}: {:#?}", r.xl),
    }
    assert!(r.wall_secs.unwrap() < 10.0, "{:?}", r.wall_secs);
}

/// A build-only domU yields the builder's log without running.
#[test]
fn build_only_domu_gives_the_builder_log() {
    let r = domu("built");
    assert_eq!(r.verdict, DomuVerdict::Built, "{:#?}", r.xl);
    assert!(r.console.is_empty(), "{:?}", r.console);
    let b = r.builder_log_lines();
    for what in [
        "kernel",
        "start info",
        "xenstore",
        "console",
        "page tables",
        "boot stack",
    ] {
        assert!(
            b.iter()
                .any(|l| l.starts_with("xc_dom_alloc_") && l.contains(what)),
            "no {what}: {b:#?}"
        );
    }
}

/// Debian 6.1 as a domU with a disk: reaches init, loads xen-blkfront, reads the marker the
/// harness wrote into the disk image.
#[test]
fn linux_domu_reads_its_disk() {
    let r = domu("linux");
    assert_eq!(r.verdict, DomuVerdict::PoweredOff, "{:#?}", r.xl);
    assert!(r.log().contains(initramfs::INIT_MARKER));
    assert!(r.log().contains("PVKEXEC-LINUX blkfront=loaded"));
    let want = format!("{}{DISK_MARKER}", initramfs::DISK_MARKER_PREFIX);
    assert!(r.lines_with(&want).next().is_some(), "no {want:?} line");
    assert!(r.log().contains(initramfs::DONE_MARKER));
    // libxenguest's lines for an INIT_P2M kernel with a gzip'd module, as the plan compares.
    let b = r.builder_log_lines();
    for what in ["module0", "phys2mach"] {
        assert!(
            b.iter()
                .any(|l| l.starts_with("xc_dom_alloc_segment") && l.contains(what)),
            "no {what}: {b:#?}"
        );
    }
}

/// Xen 4.20's toolstack (trixie) with trixie's 6.12 as dom0 and domU, in its own dom0 boot:
/// the bootcheck kernel passes, and 6.12 with a disk reads the marker.
///
/// Known flake: in about 1 of 8 runs here, 6.12 as a domU panicked early in its boot (a
/// WARNING in `__kmem_cache_create_args`, then a fault in the unwinder, before init), with
/// nothing else changed. That signature alone gets one more dom0 boot, said loudly; a second
/// failure, or any other failure, fails the test.
#[test]
fn xen_4_20_toolstack_runs_bootcheck_and_linux_6_12() {
    let marker = "PVKEXEC-DISK-MARKER-xen-4.20";
    let mut run = run_4_20(marker);
    let linux = &run.domus[1];
    if linux.verdict != DomuVerdict::PoweredOff
        && linux.log().contains("Kernel panic")
        && !linux.log().contains(initramfs::INIT_MARKER)
    {
        eprintln!(
            "domu rig 4.20: Linux 6.12 domU panicked before init (the known intermittent \
             early panic): one more dom0 boot"
        );
        run = run_4_20(marker);
    }
    let check = &run.domus[0];
    assert_eq!(check.verdict, DomuVerdict::Pass, "{}", check.log());
    assert!(check.log().contains("xen-version 4.20"), "{}", check.log());
    let linux = &run.domus[1];
    assert_eq!(linux.verdict, DomuVerdict::PoweredOff, "{}", linux.log());
    let want = format!("{}{marker}", initramfs::DISK_MARKER_PREFIX);
    assert!(linux.lines_with(&want).next().is_some(), "no {want:?} line");
}

fn run_4_20(marker: &str) -> RigRun {
    let bootcheck = guest::binary("bootcheck").expect("building the guest kernels");
    let mut check = DomuSpec::new("bootcheck", &bootcheck);
    check.mem_mib = 64;
    check.cmdline = "mem_mib=64".into();
    check.timeout = Duration::from_secs(30);
    let mut linux = DomuSpec::new(
        "linux",
        provision::ensure_linux(DebianLinux::Trixie).unwrap(),
    );
    linux.ramdisk = Some(initramfs::ensure_initramfs_blkfront_for(DebianLinux::Trixie).unwrap());
    linux.cmdline = "console=hvc0".into();
    linux.disk = Some(domu::marker_disk(marker, 4).unwrap());
    linux.timeout = Duration::from_secs(90);
    let rig = DomuRig {
        xen: provision::XenVersion::V4_20,
        tag: "domu-4.20".into(),
        ..DomuRig::default()
    };
    let run = rig.run(&[check, linux.clone()]);
    let _ = std::fs::remove_file(linux.disk.as_ref().unwrap());
    let run = run.unwrap();
    eprintln!(
        "domu rig 4.20: toolstack ready {:.1} s, whole boot {:.1} s",
        run.toolstack_ready_secs.unwrap_or(f64::NAN),
        run.dom0.wall.as_secs_f64()
    );
    run
}
