//! `cargo xtask domu`: one PV domU built by Xen's own toolstack in a Debian dom0 under QEMU.

use anyhow::Result;
use harness::provision::XenVersion;
use harness::Echo;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct DomuArgs {
    /// The domU's kernel (PV ELF or bzImage, as xl takes it).
    #[arg(long)]
    kernel: PathBuf,
    /// The domU's ramdisk.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// The domU's command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    #[arg(long, default_value_t = 256)]
    mem_mib: u64,
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// A raw disk image, attached as xvda (loop device and blkback in dom0).
    #[arg(long)]
    disk: Option<PathBuf>,
    /// Seconds the domU may run (dom0's init destroys it after).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Xen version (and its toolstack) to boot.
    #[arg(long, default_value = "4.17")]
    xen: XenVersion,
    /// Only build the domain (`xl create -p`, then destroy) and print the domain builder's
    /// log lines (libxenguest's layout decisions).
    #[arg(long, conflicts_with = "disk")]
    build_only: bool,
    /// Boot Xen built from its release tarball with pvkexec's patch series (xen-patches/)
    /// instead of Debian's binary (docs/patched-xen.md).
    #[arg(long)]
    patched_xen: bool,
}

pub(crate) fn domu_rig(xen: XenVersion, patched_xen: bool) -> harness::domu::DomuRig {
    harness::domu::DomuRig {
        xen,
        patched_xen,
        echo: Echo::All,
        ..Default::default()
    }
}

/// Prints the rig's timings and the domU's verdict.
pub(crate) fn report_domu(run: &harness::domu::RigRun) -> &harness::domu::DomuResult {
    let d = &run.domus[0];
    let secs = |t: Option<f64>| t.map_or("-".to_string(), |t| format!("{t:.1} s"));
    println!(
        "\ndomu {}: verdict {:?}, shutdown reason {:?}; toolstack ready {} after QEMU start, \
         xl create {}, domU {} (dom0 clock), whole run {:.1} s",
        d.name,
        d.verdict,
        d.shutdown_reason,
        secs(run.toolstack_ready_secs),
        secs(d.create_secs),
        secs(d.wall_secs),
        run.dom0.wall.as_secs_f64()
    );
    d
}

pub(crate) fn run(args: DomuArgs) -> Result<ExitCode> {
    let mut spec = harness::domu::DomuSpec::new("domu", &args.kernel);
    spec.ramdisk = args.initrd;
    spec.cmdline = args.cmdline;
    spec.mem_mib = args.mem_mib;
    spec.vcpus = args.vcpus;
    spec.disk = args.disk;
    spec.timeout = Duration::from_secs(args.timeout);
    spec.build_only = args.build_only;
    let run = domu_rig(args.xen, args.patched_xen).run(&[spec])?;
    let d = report_domu(&run);
    if args.build_only {
        println!("domain builder:");
        for line in d.builder_log_lines() {
            println!("  {line}");
        }
    }
    Ok(ExitCode::from(d.verdict.exit_code() as u8))
}
