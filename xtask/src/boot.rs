//! `cargo xtask boot`: one PV kernel under Xen in QEMU, its verdict as the exit code.

use anyhow::Result;
use harness::provision::XenVersion;
use harness::{BootConfig, Echo, Module};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct BootArgs {
    /// The PV kernel (ELF) Xen boots as its initial domain.
    #[arg(long)]
    kernel: PathBuf,
    /// Further multiboot modules (the first becomes the kernel's initrd).
    #[arg(long = "module")]
    modules: Vec<PathBuf>,
    /// Domain memory (dom0_mem) in MiB.
    #[arg(long, default_value_t = 64)]
    mem_mib: u64,
    /// Domain VCPUs (and QEMU CPUs).
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Extra words for Xen's command line.
    #[arg(long, default_value = "")]
    xen_args: String,
    /// The kernel's command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Seconds before the run is declared hung.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Xen version to boot.
    #[arg(long, default_value = "4.17")]
    xen: XenVersion,
    /// Boot Xen built from its release tarball with pvkexec's patch series (xen-patches/)
    /// instead of Debian's binary (docs/patched-xen.md).
    #[arg(long)]
    patched_xen: bool,
}

pub(crate) fn run(args: BootArgs) -> Result<ExitCode> {
    let mut cfg = BootConfig::new(&args.kernel);
    cfg.modules = args
        .modules
        .into_iter()
        .map(|path| Module {
            path,
            args: String::new(),
        })
        .collect();
    cfg.mem_mib = args.mem_mib;
    cfg.vcpus = args.vcpus;
    cfg.xen_args = args.xen_args;
    cfg.cmdline = args.cmdline;
    cfg.timeout = Duration::from_secs(args.timeout);
    cfg.xen = args.xen;
    cfg.patched_xen = args.patched_xen;
    cfg.echo = Echo::All;
    let result = harness::boot(&cfg)?;
    Ok(ExitCode::from(result.verdict.exit_code() as u8))
}
