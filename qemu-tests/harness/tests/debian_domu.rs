//! A real Debian domU on stock Xen 4.17 (Debian's hypervisor): bookworm built from Debian's
//! packages with systemd as PID 1, Debian's 6.1 and the initramfs initramfs-tools built inside,
//! booted by xl as `root=/dev/xvda`, with `pvkexec_*.deb` and `pvkexec-dkms_*.deb` installed by
//! apt (DKMS builds the module there against Debian's headers) and kdump's one config line
//! (`PVKEXEC_KDUMP_DISK=xvdb`). One dom0 boot runs the four scenarios
//! (`qemu-tests/harness/debian/pvkexec-scenario`), each over its own copy of the root disk:
//! - `kdump`: the package's unit arms kdump at boot; a sysrq crash; the capture kernel writes
//!   the dump disk and reboots; the next boot's collection unit saves
//!   `/var/crash/<ts>/vmcore` (0600) and `dmesg.<ts>`, clears the disk's header and kdump is
//!   armed again; crash on the host opens the saved vmcore and `bt` shows the sysrq path;
//! - `kdump-2cpu`: the same with 2 VCPUs, CPU 1 spinning with interrupts off at the panic;
//! - `reboot-hook`: with the probe loaded, `systemctl reboot` ends in the probe through the
//!   system-shutdown hook, after systemd stopped the services and root was left clean;
//! - `dump-disk-guard`: `pvkexec load -p` refuses a missing, too small, file-system-holding
//!   and mounted dump disk, each by name, `--force` only for the file system;
//! - `kdump-tools`: Debian's kdump-tools enabled beside pvkexec's armed kdump; `kdump-config
//!   load` runs `kexec -p` (pvkexec, through `pvkexec-kexec`) with the domU's own kernel,
//!   refused by name, and `kdump-config try-reload` leaves pvkexec's crash kernel armed.
//!
//! A second dom0 boot beside it, on Xen 4.17 built with pvkexec's patches (VCPU reset), runs
//! `upgrade` with 2 VCPUs: `kexec -l` of the running 6.1 (`--reuse-cmdline`) and `systemctl kexec`, then
//! the same into bookworm's 6.12; each new kernel has both CPUs, its disks and its command line
//! in the journal, and the domain is never rebuilt by the toolstack.

use harness::debian_domu::{self, Outcome, Run, Scenario};
use harness::domu::{DomuRig, RigRun};
use std::sync::OnceLock;
use std::time::Instant;

const MEM_MIB: u64 = 512;

type Runs = Result<(RigRun, Vec<Outcome>), String>;

struct Shared {
    run: Runs,
    patched: Runs,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = harness::cache_dir().join("debian-domu/test");
        let started = Instant::now();
        let image = debian_domu::scenario_customize("")
            .and_then(|c| debian_domu::build_image(&dir.join("image"), &c))
            .map_err(|e| format!("{e:#}"));
        if let Ok(image) = &image {
            eprintln!(
                "debian domU image: built in {:.0} s, root disk {}; {}",
                image.build_time.as_secs_f64(),
                image.root_disk.display(),
                image.dkms_status.trim()
            );
        }
        let boot = |patched_xen: bool| -> Runs {
            let image = image.as_ref().map_err(Clone::clone)?;
            let runs: Vec<Run> = Scenario::ALL
                .iter()
                .filter(|s| match patched_xen {
                    // kdump-tools with CPU 1 spinning covers kdump-tools' dump too.
                    true => {
                        s.runs_on_patched_xen()
                            && !matches!(**s, Scenario::Kexec | Scenario::KdumpTools)
                    }
                    false => !s.needs_patched_xen(),
                })
                .map(|s| Run {
                    name: short_name(*s).into(),
                    scenario: *s,
                    vcpus: None,
                    mem_mib: MEM_MIB,
                })
                .collect();
            let rig = DomuRig {
                tag: if patched_xen {
                    "debian-patched"
                } else {
                    "debian-domu"
                }
                .into(),
                patched_xen,
                ..Default::default()
            };
            debian_domu::run_scenarios(&rig, image, &runs, &dir).map_err(|e| format!("{e:#}"))
        };
        // The two dom0 boots at once: each QEMU runs one host thread (-smp 1).
        let (run, patched) = std::thread::scope(|sc| {
            let patched = sc.spawn(|| boot(true));
            let run = boot(false);
            let patched = patched
                .join()
                .unwrap_or_else(|_| Err("the patched-Xen boot panicked".into()));
            (run, patched)
        });
        eprintln!(
            "debian domU: image and scenarios in two dom0 boots side by side in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        Shared { run, patched }
    })
}

/// Domain names short enough for their disks' virtio serials.
fn short_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Kdump => "deb-kdump",
        Scenario::Kdump2Cpu => "deb-kdump2",
        Scenario::RebootHook => "deb-hook",
        Scenario::DumpDiskGuard => "deb-guard",
        Scenario::KdumpTools => "deb-kdtools",
        Scenario::KdumpTools2Cpu => "deb-kdtools2",
        Scenario::Kexec => "deb-kexec",
        Scenario::Upgrade => "deb-upgrade",
    }
}

fn runs_on(patched_xen: bool) -> &'static (RigRun, Vec<Outcome>) {
    let r = match patched_xen {
        true => &shared().patched,
        false => &shared().run,
    };
    r.as_ref()
        .unwrap_or_else(|e| panic!("the Debian domU rig failed: {e}"))
}

fn runs(s: Scenario) -> &'static (RigRun, Vec<Outcome>) {
    runs_on(s.needs_patched_xen())
}

fn outcome_on(patched_xen: bool, s: Scenario) -> &'static Outcome {
    let (_, outcomes) = runs_on(patched_xen);
    outcomes
        .iter()
        .find(|o| o.scenario == s)
        .expect("every scenario ran")
}

fn outcome(s: Scenario) -> &'static Outcome {
    outcome_on(s.needs_patched_xen(), s)
}

fn assert_passed(o: &Outcome) {
    assert!(
        o.failures.is_empty(),
        "scenario {}: {}\nconsole:\n{}",
        o.scenario.name(),
        o.failures.join("\n"),
        o.domu.log()
    );
}

fn report_times(o: &Outcome) {
    let (run, _) = runs(o.scenario);
    let panic = o.line_secs(run, "sysrq: Trigger a crash");
    let written = o.line_secs(run, "PVKEXEC-INFO capture: vmcore written");
    let saved = o.line_secs(run, "pvkexec-kdump: saved");
    eprintln!(
        "{}: armed {} ms after boot; panic -> dump on disk {:?} s; panic -> dump saved {:?} s; \
         saved vmcore {} bytes",
        o.scenario.name(),
        o.value("armed-ms").unwrap_or_default(),
        panic.zip(written).map(|(a, b)| b - a),
        panic.zip(saved).map(|(a, b)| b - a),
        o.vmcore
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    );
}

#[test]
fn kdump_armed_at_boot_dump_saved_at_next_boot() {
    let o = outcome(Scenario::Kdump);
    assert_passed(o);
    report_times(o);
    assert!(
        o.domu.boots >= 2,
        "the domain was not rebuilt after the dump"
    );
}

#[test]
fn kdump_with_cpu1_spinning_interrupts_off() {
    let o = outcome(Scenario::Kdump2Cpu);
    assert_passed(o);
    report_times(o);
    let bt = o.crash.as_ref().and_then(|c| c.output("bt")).unwrap_or("");
    assert!(bt.contains("sysrq_handle_crash"), "{bt}");
}

#[test]
fn systemctl_reboot_ends_in_the_loaded_kernel() {
    let o = outcome(Scenario::RebootHook);
    assert_passed(o);
}

#[test]
fn load_p_refuses_unfit_dump_disks() {
    let o = outcome(Scenario::DumpDiskGuard);
    assert_passed(o);
}

#[test]
fn kdump_tools_with_a_linux_crash_kernel_is_refused_by_name_on_stock_xen() {
    let o = outcome(Scenario::KdumpTools);
    assert_passed(o);
    let said = o.domu.log();
    assert!(
        said.contains("refused to load") && said.contains("is the crash kernel here"),
        "{said}"
    );
}

/// kdump-tools on a patched Xen: the crash kernel is the domU's own, and kdump-tools' own
/// scripts save the dump.
fn kdump_tools_saved_a_dump(s: Scenario) {
    let o = outcome_on(true, s);
    assert_passed(o);
    assert!(
        o.domu.boots >= 2,
        "the domain was not rebuilt after the dump"
    );
    let (run, _) = runs_on(true);
    let panic = o.line_secs(run, "sysrq: Trigger a crash");
    let saved = o.line_secs(run, "kdump-tools: saved vmcore");
    let login = o.secs_to_login(run, "sysrq: Trigger a crash");
    eprintln!(
        "{} (patched Xen): panic -> dump saved {:?} s; panic -> login prompt {:?} s; {} ({} \
         bytes)",
        s.name(),
        panic.zip(saved).map(|(a, b)| b - a),
        login,
        o.value("vmcore-path").unwrap_or_default(),
        o.vmcore
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    );
}

/// Also kdump-tools' plain dump: the same path with CPU 1 spinning at the panic (the
/// `kdump-tools` scenario without it: `cargo xtask debian-domu --patched-xen`).
#[test]
fn kdump_tools_saves_a_dump_with_both_cpus_on_patched_xen() {
    kdump_tools_saved_a_dump(Scenario::KdumpTools2Cpu);
}

#[test]
fn systemctl_kexec_into_the_same_kernel_then_into_6_12_on_patched_xen() {
    let o = outcome(Scenario::Upgrade);
    assert_passed(o);
    assert_eq!(o.domu.boots, 1, "the toolstack rebuilt the domain");
    let (run, _) = runs(Scenario::Upgrade);
    for n in [1, 2] {
        eprintln!(
            "systemctl kexec {n}: {:?} s to the next kernel's login prompt; {}",
            o.secs_to_login(run, &format!("systemctl kexec {n} into")),
            o.value(&format!("after kexec {n}:")).unwrap_or_default()
        );
    }
}
