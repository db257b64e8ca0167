//! `cargo xtask deb` (the Debian packages) and `cargo xtask debian-domu` (a scenario in
//! a real Debian domU with them installed).

use anyhow::{bail, Result};
use harness::debian_domu::{self, Run, Scenario};
use harness::Echo;
use std::path::PathBuf;
use std::process::ExitCode;

/// Builds `target/debian/pvkexec_<v>_amd64.deb`, `pvkexec-dkms_<v>_all.deb` and
/// `pvkexec-kexec_<v>_all.deb`.
pub(crate) fn deb() -> Result<()> {
    let b = harness::deb::build()?;
    for p in b.all() {
        println!(
            "{} ({} KiB)",
            p.display(),
            std::fs::metadata(p)?.len() >> 10
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub(crate) struct DebianDomuArgs {
    /// kdump, kdump-2cpu, reboot-hook, dump-disk-guard, kdump-tools (on a patched Xen with
    /// the domU's own kernel as the crash kernel); with --patched-xen also kdump-tools-2cpu,
    /// kexec and upgrade.
    #[arg(long)]
    scenario: String,
    /// Boot Xen 4.17 built with xen-patches/ (VCPU reset: Linux after Linux) instead of
    /// Debian's binary (docs/patched-xen.md).
    #[arg(long)]
    patched_xen: bool,
    /// Words added to the next kernel's command line (kexec and upgrade), or to the crash
    /// kernel's (kdump-tools on a patched Xen: KDUMP_CMDLINE_APPEND).
    #[arg(long, default_value = "")]
    append: String,
    /// VCPUs (default: the scenario's, 2 for kdump-2cpu, kdump-tools*, kexec and upgrade, else
    /// 1).
    #[arg(long)]
    vcpus: Option<u32>,
    #[arg(long, default_value_t = 512)]
    mem_mib: u64,
    /// Keep the root disk image after the run at FILE (for inspection: debugfs, or mount -o
    /// loop).
    #[arg(long)]
    keep_disk: Option<PathBuf>,
}

pub(crate) fn debian_domu(a: DebianDomuArgs) -> Result<ExitCode> {
    let scenario = Scenario::from_name(&a.scenario)?;
    if scenario.needs_patched_xen() && !a.patched_xen {
        bail!(
            "scenario {} needs --patched-xen: on stock Xen no Linux boots after a Linux \
             (vcpu_info is registered once per VCPU)",
            scenario.name()
        );
    }
    let dir = harness::cache_dir().join("debian-domu/xtask");
    let image = debian_domu::build_image(
        &dir.join("image"),
        &debian_domu::scenario_customize(&a.append)?,
    )?;
    println!(
        "image: {} built in {:.0} s; {}",
        image.root_disk.display(),
        image.build_time.as_secs_f64(),
        image.dkms_status.trim()
    );
    let rig = harness::domu::DomuRig {
        echo: Echo::All,
        host_mem_mib: 2048 + a.mem_mib,
        patched_xen: a.patched_xen,
        ..Default::default()
    };
    let run = Run {
        name: "debian".into(),
        scenario,
        vcpus: a.vcpus,
        mem_mib: a.mem_mib,
    };
    let (rig_run, outcomes) = debian_domu::run_scenarios(&rig, &image, &[run], &dir)?;
    let o = &outcomes[0];
    for (what, from) in [
        ("systemctl kexec 1", "systemctl kexec 1 into"),
        ("systemctl kexec 2", "systemctl kexec 2 into"),
        ("toolstack reboot", "toolstack reboot uptime"),
        ("sysrq crash", "sysrq: Trigger a crash"),
    ] {
        if let Some(secs) = o.secs_to_login(&rig_run, from) {
            println!("{what} -> login prompt: {secs:.1} s (host time under QEMU TCG)");
        }
    }
    let panic = o.line_secs(&rig_run, "sysrq: Trigger a crash");
    if let Some((p, s)) = panic.zip(o.line_secs(&rig_run, "kdump-tools: saved vmcore")) {
        println!("sysrq crash -> kdump-tools saved the dump: {:.1} s", s - p);
    }
    if let Some(keep) = &a.keep_disk {
        std::fs::rename(&o.root_disk, keep)
            .or_else(|_| std::fs::copy(&o.root_disk, keep).map(|_| ()))?;
        println!("root disk kept at {}", keep.display());
    }
    if let Some(r) = &o.crash {
        println!("crash bt:\n{}", r.output("bt").unwrap_or_default());
    }
    if o.failures.is_empty() {
        println!(
            "scenario {}: passed ({} boots)",
            scenario.name(),
            o.domu.boots
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &o.failures {
            eprintln!("scenario {}: {f}", scenario.name());
        }
        bail!("scenario {} failed", scenario.name())
    }
}
