//! kdump in toolstack-built domUs (Xen 4.17): Debian's unmodified 6.1 with `pvkexec.ko` loads
//! the capture kernel as its crash kernel (`pvkexec load -p`) and panics
//! (`echo c > /proc/sysrq-trigger`); the crash kernel writes the vmcore to the domU's disk (a
//! host file), which crash and makedumpfile then open on the host. One dom0 boot runs:
//! - `kdump-2vcpus`: 2 VCPUs, CPU 1 spinning with interrupts off at the panic;
//! - `kdump-corrupt`: the crash image corrupted after load: the purgatory names it, nothing
//!   boots, the domain crashes as Xen would have made it.

use harness::domu::{DomuResult, DomuRig, DomuVerdict};
use harness::kdump::{self, Fault, Kdump};
use harness::vmcore_tools;
use std::path::PathBuf;
use std::sync::OnceLock;

struct Shared {
    spin: Result<DomuResult, String>,
    corrupt: Result<DomuResult, String>,
    /// The vmcore cut from the first domU's disk, and its length.
    vmcore: Result<(PathBuf, u64), String>,
}

fn disk(name: &str) -> PathBuf {
    let dir = harness::cache_dir().join("kdump");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}-{}.img", std::process::id()))
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let mut spin = Kdump::new(disk("kdump-2vcpus")).unwrap();
        spin.vcpus = 2;
        spin.fault = Some(Fault::SpinningCpu1);
        let mut corrupt = Kdump::new(disk("kdump-corrupt")).unwrap();
        corrupt.fault = Some(Fault::CorruptImage);
        corrupt.mem_mib = 128;
        let (s1, rd1) = kdump::spec("kdump-2vcpus", &spin).unwrap();
        let (s2, rd2) = kdump::spec("kdump-corrupt", &corrupt).unwrap();
        let rig = DomuRig {
            tag: "kdump".into(),
            ..DomuRig::default()
        };
        let run = rig.run_for_tests(&[s1, s2]);
        let _ = std::fs::remove_file(rd1);
        let _ = std::fs::remove_file(rd2);
        let _ = std::fs::remove_file(&corrupt.disk);
        let (spin_r, corrupt_r) = match run {
            Ok(r) => (Ok(r.domus[0].clone()), Ok(r.domus[1].clone())),
            Err(e) => (Err(e.clone()), Err(e)),
        };
        let out = spin.disk.with_extension("vmcore");
        let vmcore = kdump::vmcore_from_disk(&spin.disk, &out)
            .map(|len| (out, len))
            .map_err(|e| format!("{e:#}"));
        let _ = std::fs::remove_file(&spin.disk);
        Shared {
            spin: spin_r,
            corrupt: corrupt_r,
            vmcore,
        }
    })
}

fn domu(r: &Result<DomuResult, String>) -> &DomuResult {
    r.as_ref().unwrap_or_else(|e| panic!("the rig failed: {e}"))
}

#[test]
fn a_panicking_domu_boots_the_crash_kernel_which_writes_the_vmcore() {
    let d = domu(&shared().spin);
    let log = d.log();
    assert_eq!(d.verdict, DomuVerdict::Pass, "{log}");
    for want in [
        "PVKEXEC-KDUMP load rc=0",
        "sysrq: Trigger a crash",
        "purgatory: entered",
        "PVKEXEC-TEST PASS crash-record",
        "PVKEXEC-TEST PASS old-p2m",
        "PVKEXEC-TEST PASS vmcoreinfo",
        "PVKEXEC-TEST PASS vmcore-written",
        "capture: disk device/vbd/",
    ] {
        assert!(log.contains(want), "{want}: {log}");
    }
    // CPU 1 spun with interrupts off; the module's NMI stopped it with its registers.
    assert!(!log.contains("stopped from outside"), "{log}");
    let (vmcore, len) = shared().vmcore.as_ref().unwrap();
    assert!(
        *len > (256 << 20) / 2,
        "a {len}-byte vmcore for a 256 MiB domain"
    );
    eprintln!("vmcore {} bytes at {}", len, vmcore.display());
}

#[test]
fn crash_opens_the_vmcore_bt_log_ps() {
    let (vmcore, _) = shared().vmcore.as_ref().unwrap();
    let vmlinux = vmcore_tools::ensure_debug_vmlinux().unwrap();
    let r = vmcore_tools::crash_report(&vmlinux, vmcore, &["bt", "log", "ps"]).unwrap();
    let bt = r.output("bt").unwrap();
    let log = r.output("log").unwrap();
    let ps = r.output("ps").unwrap();
    eprintln!(
        "crash bt:\n{bt}\ncrash ps (head):\n{}",
        ps.lines().take(6).collect::<Vec<_>>().join("\n")
    );
    assert!(bt.contains("sysrq_handle_crash"), "bt: {bt}\n{}", r.raw);
    assert!(log.contains("sysrq: Trigger a crash"), "log: {log}");
    assert!(log.contains("Kernel panic"), "log: {log}");
    assert!(
        ps.lines().any(|l| l.contains(" init") || l.ends_with("sh")),
        "ps: {ps}"
    );
}

#[test]
fn makedumpfile_d31_compresses_it_and_crash_opens_that() {
    let (vmcore, len) = shared().vmcore.as_ref().unwrap();
    let out = vmcore.with_extension("d31");
    let text = vmcore_tools::makedumpfile_d31(vmcore, &out).unwrap();
    let small = std::fs::metadata(&out).unwrap().len();
    eprintln!("makedumpfile -d 31: {len} -> {small} bytes\n{text}");
    assert!(small < *len / 2, "{small} of {len}");
    let vmlinux = vmcore_tools::ensure_debug_vmlinux().unwrap();
    let r = vmcore_tools::crash_report(&vmlinux, &out, &["bt", "log"]).unwrap();
    assert!(
        r.output("bt").unwrap().contains("sysrq_handle_crash"),
        "{}",
        r.raw
    );
    let _ = std::fs::remove_file(&out);
}

#[test]
fn a_crash_image_corrupted_after_load_never_runs() {
    let d = domu(&shared().corrupt);
    let log = d.log();
    assert_eq!(d.verdict, DomuVerdict::Crashed, "{log}");
    assert!(
        log.contains("PVKEXEC-KDUMP test fault corrupt-crash injected"),
        "{log}"
    );
    assert!(log.contains("purgatory: entered"), "{log}");
    assert_eq!(d.shutdown_reason, Some(3), "{log}");
    assert!(
        log.contains("purgatory: segment 0 (kernel): SHA-256 mismatch"),
        "{log}"
    );
    assert!(!log.contains(harness::PURGATORY_ENTERING), "{log}");
    assert!(!log.contains("PVKEXEC-TEST PASS"), "{log}");
}
