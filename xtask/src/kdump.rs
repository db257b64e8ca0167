//! `cargo xtask kdump`: a toolstack-built Debian 6.1 domU with the pvkexec module loads a
//! crash kernel, panics, and the crash kernel writes the vmcore to the domU's disk; the vmcore
//! is cut from that disk into `--vmcore-out` (qemu-tests/harness/src/kdump.rs).

use anyhow::{bail, Result};
use harness::kdump::{self, Fault, Kdump};
use harness::provision::XenVersion;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct KdumpArgs {
    /// The old kernel: Debian's unmodified 6.1 (the one the module is built and tested for).
    #[arg(long, default_value = "debian-6.1")]
    old_kernel: String,
    /// The crash kernel (default: pvkexec's capture kernel).
    #[arg(long)]
    crash_kernel: Option<PathBuf>,
    #[arg(long)]
    crash_initrd: Option<PathBuf>,
    /// The crash kernel's command line (default: `pvkexec.dump=xvda`, the domU's disk, which
    /// the capture kernel needs named; a value given replaces it, so name the disk in it).
    #[arg(long)]
    crash_append: Option<String>,
    /// MiB set aside for the crash kernel (default: the CLI's).
    #[arg(long)]
    crash_mib: Option<u64>,
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    #[arg(long, default_value_t = 256)]
    mem_mib: u64,
    /// Balloon the domain down to this many MiB before the load (P2M holes).
    #[arg(long)]
    balloon_to_mib: Option<u64>,
    /// Park CPU 1 with interrupts off before the panic (needs 2 VCPUs).
    #[arg(long)]
    spin_cpu1: bool,
    /// The crash kernel (--crash-kernel) is Linux, e.g. the domU's own, on a Xen that resets
    /// VCPUs (needs --patched-xen). Without --crash-initrd it boots a busybox initramfs that
    /// copies its /proc/vmcore to the dump disk, which becomes --vmcore-out.
    #[arg(long, requires = "patched_xen", requires = "crash_kernel")]
    linux_crash_kernel: bool,
    /// Where the vmcore goes.
    #[arg(long)]
    vmcore_out: PathBuf,
    /// Boot Xen built from its release tarball with pvkexec's patch series (xen-patches/)
    /// instead of Debian's binary (docs/patched-xen.md).
    #[arg(long)]
    patched_xen: bool,
}

pub(crate) fn run(args: KdumpArgs) -> Result<ExitCode> {
    if args.old_kernel != "debian-6.1" {
        bail!(
            "--old-kernel {}: kdump runs with debian-6.1 as the old kernel",
            args.old_kernel
        );
    }
    if args.spin_cpu1 && args.vcpus < 2 {
        bail!("--spin-cpu1 needs --vcpus 2 or more");
    }
    if let Some(b) = args.balloon_to_mib.filter(|&b| b == 0 || b >= args.mem_mib) {
        bail!(
            "--balloon-to-mib {b}: give less than --mem-mib {} and more than 0",
            args.mem_mib
        );
    }
    let disk = args.vmcore_out.with_extension("disk");
    let mut k = Kdump::new(&disk)?;
    if let Some(c) = args.crash_kernel {
        k.crash_kernel = c;
    }
    k.crash_initrd = args.crash_initrd;
    if let Some(a) = args.crash_append {
        k.crash_append = a;
    }
    k.crash_mib = args.crash_mib;
    k.vcpus = args.vcpus;
    k.mem_mib = args.mem_mib;
    k.balloon_to_mib = args.balloon_to_mib;
    k.fault = args.spin_cpu1.then_some(Fault::SpinningCpu1);
    k.linux_crash_kernel = args.linux_crash_kernel;
    k.timeout = Duration::from_secs(300);
    let (spec, rd) = kdump::spec("kdump", &k)?;
    let mut rig = crate::domu::domu_rig(XenVersion::V4_17, args.patched_xen);
    // QEMU's memory holds the domU beside dom0's and Xen's (a 6 GiB domU needs 8 GiB).
    rig.host_mem_mib = rig.host_mem_mib.max(args.mem_mib + 2048);
    let run = rig.run(&[spec]);
    let _ = std::fs::remove_file(rd);
    let run = run?;
    let d = crate::domu::report_domu(&run);
    let code = match &d.verdict {
        // The Linux crash kernel's /init powers the domain off once the copy is on the disk.
        harness::domu::DomuVerdict::PoweredOff if args.linux_crash_kernel => 0,
        v => v.exit_code() as u8,
    };
    match kdump::vmcore_from_disk(&disk, &args.vmcore_out) {
        Ok(len) => println!("vmcore: {} ({len} bytes)", args.vmcore_out.display()),
        Err(e) => {
            eprintln!("xtask: no vmcore: {e:#}");
            let _ = std::fs::remove_file(&disk);
            return Ok(ExitCode::from(code.max(1)));
        }
    }
    let _ = std::fs::remove_file(&disk);
    Ok(ExitCode::from(code))
}
