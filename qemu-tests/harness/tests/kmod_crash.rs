//! pvkexec.ko's crash (kdump) path on Debian's unmodified 6.1 (docs/kernel-module.md, "Crash
//! (kdump) load and panic path"): in one dom0 boot (Xen 4.17), domUs load the probe as their
//! crash kernel with `pvkexec load -p` and panic (`echo c > /proc/sysrq-trigger`):
//! - `kcrash-nmi` (2 VCPUs): CPU 1 is parked with interrupts off first (module test ioctl), so
//!   only the NMI reaches it; the module saves both CPUs and enters the purgatory, which hands
//!   the crash view's frames to the probe;
//! - `kcrash-idle` (2 VCPUs): nothing parked; CPU 1 idles with interrupts on, where Linux's
//!   own smp_send_stop() would put it down (Xen's stop_self) before the panic notifiers, so the
//!   module's NMI could no longer reach it;
//! - `kcrash-cpu1` (2 VCPUs): the panic on CPU 1, so VCPU 0 enters the purgatory's boot entry
//!   from its NMI handler and the panicking CPU the AP entry;
//! - `kcrash-612` (2 VCPUs, idle): the same on Debian 6.12 (bookworm's +deb12 build, the module
//!   built against its headers);
//! - `kcrash-corrupt` (1 VCPU): a byte of the loaded crash image's kernel is flipped (module
//!   test ioctl); the purgatory's digest check refuses it and the domain crashes.

use harness::domu::{DomuResult, DomuRig, DomuSpec, DomuVerdict, RigRun};
use harness::kmod::{self, DomuFiles, Headers};
use harness::provision::{self, DebianLinux};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MEM_MIB: u64 = 256;

/// Loads the probe as the crash kernel, runs `@TEST@` and panics.
const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /lib/modules/pvkexec.ko fault_injection=1 || echo "PVKEXEC-CRASH insmod failed"
pvkexec load -p --kernel /boot/probe --append mem_mib=20 2>&1
echo "PVKEXEC-CRASH load rc=$?"
pvkexec status 2>&1
chmod 755 /bin/pvkexec_test
# Everything from here on runs on CPU 0: a task placed on a parked CPU 1 would never run.
taskset -p 1 $$ > /dev/null
@TEST@ 2>&1
echo "PVKEXEC-CRASH test rc=$?"
echo 7 > /proc/sys/kernel/printk
echo "PVKEXEC-CRASH panic up=$(cut -d' ' -f1 /proc/uptime)"
echo c > /proc/sysrq-trigger
echo "PVKEXEC-CRASH still running"
poweroff -f
"#;

/// The test driver for the module's test ioctls, static (the initramfs has no C library).
fn test_driver() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = root.join("target/kmod/pvkexec_test");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let o = Command::new("gcc")
        .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(root.join("kmod/test/pvkexec_test.c"))
        .output()
        .expect("running gcc");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// The domUs: name, old kernel, VCPUs, what runs before the panic (the test ioctls through
/// the driver).
const DOMUS: [(&str, DebianLinux, u32, &str); 5] = [
    ("kcrash-nmi", DebianLinux::Bookworm, 2, "pvkexec_test park"),
    ("kcrash-idle", DebianLinux::Bookworm, 2, "true"),
    ("kcrash-cpu1", DebianLinux::Bookworm, 2, "taskset -p 2 $$"),
    ("kcrash-612", DebianLinux::Bookworm612, 2, "true"),
    (
        "kcrash-corrupt",
        DebianLinux::Bookworm,
        1,
        "pvkexec_test corrupt",
    ),
];

struct Shared {
    run: Result<RigRun, String>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let start = Instant::now();
        let driver = test_driver();
        let probe = harness::guest::binary("probe").unwrap();
        let cli = kmod::pvkexec_release().unwrap();
        let pid = std::process::id();
        let mut images = Vec::new();
        let specs: Vec<DomuSpec> = DOMUS
            .iter()
            .map(|(name, old, vcpus, test)| {
                let headers = match old {
                    DebianLinux::Bookworm612 => Headers::Bookworm612,
                    _ => Headers::Bookworm,
                };
                let ko = kmod::build(headers).expect("building pvkexec.ko");
                let linux = provision::ensure_linux(*old).unwrap();
                kmod::check_module_matches(&ko, &linux).unwrap();
                let files = vec![
                    ("lib/modules/pvkexec.ko".to_string(), ko),
                    ("boot/probe".to_string(), probe.clone()),
                    ("bin/pvkexec_test".to_string(), driver.clone()),
                ];
                let rd = harness::cache_dir().join(format!("{name}-{pid}.cpio.gz"));
                let init = INIT.replace("@TEST@", test);
                kmod::domu_initramfs(&init, &cli, &DomuFiles { files }, &rd).unwrap();
                images.push(rd.clone());
                let mut s = DomuSpec::new(name, &linux);
                s.ramdisk = Some(rd);
                s.cmdline = "console=hvc0 loglevel=4".into();
                s.mem_mib = MEM_MIB;
                s.vcpus = *vcpus;
                s.timeout = Duration::from_secs(150);
                s
            })
            .collect();
        let rig = DomuRig {
            tag: "kcrash".into(),
            ..DomuRig::default()
        };
        let run = rig.run(&specs).map_err(|e| format!("{e:#}"));
        for i in &images {
            let _ = std::fs::remove_file(i);
        }
        eprintln!(
            "kmod_crash: whole run {:.1} s",
            start.elapsed().as_secs_f64()
        );
        Shared { run }
    })
}

/// The domU's result and every line of the serial log tagged with it (its console and what
/// the purgatory and the probe wrote through Xen's console).
fn domu(name: &str) -> (&'static DomuResult, String) {
    let run = shared().run.as_ref().expect("the domU rig failed");
    let i = DOMUS.iter().position(|d| d.0 == name).unwrap();
    let tag = format!("[domu:{name}] ");
    let serial: Vec<&str> = run.dom0.log.lines().filter(|l| l.contains(&tag)).collect();
    let all = format!("{}\n{}", run.domus[i].log(), serial.join("\n"));
    (&run.domus[i], all)
}

#[test]
fn panic_with_a_cpu_parked_irqs_off_enters_the_crash_kernel() {
    let (d, log) = domu("kcrash-nmi");
    eprintln!("{log}");
    for want in [
        "PVKEXEC-CRASH load rc=0",
        "crash kernel: loaded",
        "park: done",
        "pvkexec: crash: 2 CPUs saved",
        // Parked in the test ioctl's mdelay loop, reached by the NMI alone.
        "pvkexec: crash: CPU 1 (VCPU 1, pid 0) saved at delay_tsc",
        "purgatory: entered",
        "purgatory: VCPUs 1..1 arrived",
        // The probe as the crash kernel, on the view's frames (its nr_pages checks expect a
        // whole domain and fail here).
        "PVKEXEC-TEST PASS p2m-m2p",
        "PVKEXEC-TEST PASS frames-writable",
        "PVKEXEC-TEST PASS ap-wake",
    ] {
        assert!(log.contains(want), "no {want:?} ({:?})", d.verdict);
    }
    assert!(!log.contains("PVKEXEC-CRASH still running"));
}

#[test]
fn panic_with_an_idle_cpu_saves_it_before_linux_stops_it() {
    let (d, log) = domu("kcrash-idle");
    eprintln!("{log}");
    for want in [
        "PVKEXEC-CRASH load rc=0",
        "pvkexec: crash: 2 CPUs saved",
        "pvkexec: crash: CPU 1 (VCPU 1, pid 0) saved at",
        "purgatory: VCPUs 1..1 arrived",
        "PVKEXEC-TEST PASS p2m-m2p",
    ] {
        assert!(log.contains(want), "no {want:?} ({:?})", d.verdict);
    }
    // Measured without the module's smp_ops hook: Linux's stop IPI reached CPU 1 first in one
    // of two runs, the NMI found it offline and the crash path gave up.
    assert!(!log.contains("did not answer the NMI"));
}

#[test]
fn panic_on_cpu_1_enters_the_crash_kernel() {
    let (d, log) = domu("kcrash-cpu1");
    eprintln!("{log}");
    for want in [
        "PVKEXEC-CRASH load rc=0",
        "Kernel panic - not syncing: sysrq triggered crash",
        "CPU: 1 PID: 1 Comm: init",
        "pvkexec: crash: CPU 0 (VCPU 0, pid 0) saved at",
        "pvkexec: crash: CPU 1 (VCPU 1, pid 1) saved at crash_panic",
        "purgatory: VCPUs 1..1 arrived",
        "PVKEXEC-TEST PASS p2m-m2p",
        "PVKEXEC-TEST PASS ap-wake",
    ] {
        assert!(log.contains(want), "no {want:?} ({:?})", d.verdict);
    }
}

#[test]
fn debian_612_panic_enters_the_crash_kernel() {
    let (d, log) = domu("kcrash-612");
    eprintln!("{log}");
    for want in [
        "PVKEXEC-CRASH load rc=0",
        "pvkexec: crash: 2 CPUs saved",
        "pvkexec: crash: CPU 1 (VCPU 1, pid 0) saved at",
        "purgatory: VCPUs 1..1 arrived",
        "PVKEXEC-TEST PASS p2m-m2p",
        "PVKEXEC-TEST PASS ap-wake",
    ] {
        assert!(log.contains(want), "no {want:?} ({:?})", d.verdict);
    }
}

#[test]
fn a_corrupted_crash_image_is_refused_by_the_purgatory() {
    let (d, log) = domu("kcrash-corrupt");
    eprintln!("{log}");
    for want in [
        "PVKEXEC-CRASH load rc=0",
        "corrupt: done",
        "pvkexec: crash: 1 CPUs saved",
        "purgatory: entered",
    ] {
        assert!(log.contains(want), "no {want:?} ({:?})", d.verdict);
    }
    assert!(!log.contains("PVKEXEC-INFO zeroed"), "the probe ran");
    assert_eq!(d.verdict, DomuVerdict::Crashed);
}
