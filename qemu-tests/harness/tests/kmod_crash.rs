//! pvkexec.ko's crash (kdump) path on Debian's unmodified kernels (docs/kernel-module.md,
//! "Crash (kdump) load and panic path"): in one dom0 boot (Xen 4.17), 256 MiB domUs with 2
//! VCPUs load the probe as their crash kernel with `pvkexec load -p` and panic
//! (`echo c > /proc/sysrq-trigger`); the probe then runs on the crash view's frames:
//! - `kcrash-idle` (Debian 6.1): CPU 1 idles with interrupts on, where Linux's own
//!   smp_send_stop() would put it down (Xen's stop_self) before the panic notifiers run and the
//!   module's NMI could no longer reach it;
//! - `kcrash-cpu1` (Debian 6.1): the panic on CPU 1, so VCPU 0 enters the purgatory's boot
//!   entry from its NMI handler and the panicking CPU the AP entry;
//! - `kcrash-612`: as `kcrash-idle` on Debian 6.12 (bookworm's +deb12 build, the module built
//!   against its headers).
//!
//! A CPU spinning with interrupts off and a corrupted crash image are tests/kdump.rs's, where
//! the capture kernel writes the vmcore.

use harness::domu::{DomuResult, DomuRig, DomuSpec, RigRun};
use harness::kmod::{self, DomuFiles, Headers};
use harness::provision::{self, DebianLinux};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MEM_MIB: u64 = 256;

/// Loads the probe as the crash kernel, moves the shell with `@CPU@` (a taskset mask) and
/// panics there.
const INIT: &str = r#"insmod /lib/modules/pvkexec.ko || echo "PVKEXEC-CRASH insmod failed"
pvkexec load -p --kernel /boot/probe --append mem_mib=20 2>&1
echo "PVKEXEC-CRASH load rc=$?"
pvkexec status 2>&1
taskset -p @CPU@ $$ > /dev/null
echo 7 > /proc/sys/kernel/printk
echo "PVKEXEC-CRASH panic up=$(cut -d' ' -f1 /proc/uptime)"
echo c > /proc/sysrq-trigger
echo "PVKEXEC-CRASH still running"
poweroff -f
"#;

/// The domUs: name, old kernel, the panicking CPU's taskset mask.
const DOMUS: [(&str, DebianLinux, &str); 3] = [
    ("kcrash-idle", DebianLinux::Bookworm, "1"),
    ("kcrash-cpu1", DebianLinux::Bookworm, "2"),
    ("kcrash-612", DebianLinux::Bookworm612, "1"),
];

struct Shared {
    run: Result<RigRun, String>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let start = Instant::now();
        let probe = harness::guest::binary("probe").unwrap();
        let cli = kmod::pvkexec_release().unwrap();
        let pid = std::process::id();
        let mut images = Vec::new();
        let specs: Vec<DomuSpec> = DOMUS
            .iter()
            .map(|(name, old, cpu)| {
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
                ];
                let rd = harness::cache_dir().join(format!("{name}-{pid}.cpio.gz"));
                let init = INIT.replace("@CPU@", cpu);
                kmod::domu_initramfs(&init, &cli, &DomuFiles { files }, &rd).unwrap();
                images.push(rd.clone());
                let mut s = DomuSpec::new(name, &linux);
                s.ramdisk = Some(rd);
                s.cmdline = "console=hvc0 loglevel=4".into();
                s.mem_mib = MEM_MIB;
                s.vcpus = 2;
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

/// Every line of the serial log tagged with the domU (its console, the purgatory's and the
/// probe's lines), after its own console.
fn domu(name: &str) -> (&'static DomuResult, String) {
    let run = shared().run.as_ref().expect("the domU rig failed");
    let i = DOMUS.iter().position(|d| d.0 == name).unwrap();
    let tag = format!("[domu:{name}] ");
    let serial: Vec<&str> = run.dom0.log.lines().filter(|l| l.contains(&tag)).collect();
    let all = format!("{}\n{}", run.domus[i].log(), serial.join("\n"));
    (&run.domus[i], all)
}

/// The lines every crash handover shows: both CPUs saved (`saved` names CPU 1's line), the
/// purgatory took both VCPUs, and the probe runs on the view (its nr_pages and hidden-frames
/// checks expect a whole domain: they fail here).
fn assert_crash_handover(name: &str, saved: &str) {
    let (d, log) = domu(name);
    eprintln!("{log}");
    for want in [
        "PVKEXEC-CRASH load rc=0",
        "crash kernel: loaded",
        "pvkexec: crash: 2 CPUs saved",
        saved,
        "purgatory: VCPUs 1..1 arrived",
        "PVKEXEC-TEST PASS p2m-m2p",
        "PVKEXEC-TEST PASS frames-writable",
        "PVKEXEC-TEST PASS ap-wake",
        "PVKEXEC-TEST PASS nmi-callback-gone",
    ] {
        assert!(log.contains(want), "no {want:?} ({:?})", d.verdict);
    }
    assert!(!log.contains("PVKEXEC-CRASH still running"));
}

#[test]
fn panic_with_an_idle_cpu_saves_it_before_linux_stops_it() {
    // Without the module's smp_ops hook, Linux's stop IPI reached CPU 1 first in one of two
    // runs: the NMI found it offline, 'did not answer the NMI', Xen's crash shutdown.
    assert_crash_handover(
        "kcrash-idle",
        "pvkexec: crash: CPU 1 (VCPU 1, pid 0) saved at",
    );
}

#[test]
fn panic_on_cpu_1_enters_the_crash_kernel() {
    assert_crash_handover(
        "kcrash-cpu1",
        "pvkexec: crash: CPU 1 (VCPU 1, pid 1) saved at crash_panic",
    );
    let (_, log) = domu("kcrash-cpu1");
    assert!(log.contains("CPU: 1 PID: 1 Comm: init"));
    assert!(log.contains("pvkexec: crash: CPU 0 (VCPU 0, pid 0) saved at"));
}

#[test]
fn debian_612_panic_enters_the_crash_kernel() {
    assert_crash_handover(
        "kcrash-612",
        "pvkexec: crash: CPU 1 (VCPU 1, pid 0) saved at",
    );
}
