//! `cargo xtask kexec` and `cargo xtask run`: a kexec under Xen in QEMU, from the old test kernel
//! (or Debian's Linux with pvkexec.ko) in the initial domain or a toolstack-built domU.

use crate::domu::{domu_rig, report_domu};
use anyhow::{bail, Result};
use harness::provision::{DebianLinux, XenVersion};
use harness::tools::{BuildMode, PvkexecBuild};
use harness::{guest, BootConfig, Echo, Module};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct KexecArgs {
    /// The new kernel (default: the probe test kernel).
    #[arg(long, conflicts_with = "image")]
    kernel: Option<PathBuf>,
    /// The new kernel's initrd (with the probe too).
    #[arg(long, conflicts_with = "image")]
    initrd: Option<PathBuf>,
    /// The new kernel's command line (default for the probe: `mem_mib=N`).
    #[arg(long)]
    append: Option<String>,
    /// A prebuilt image (`pvkexec build`).
    #[arg(long)]
    image: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    mem_mib: u64,
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Success marker for a new kernel other than the probe.
    #[arg(long)]
    expect: Option<String>,
    /// Xen version to boot.
    #[arg(long, default_value = "4.17")]
    xen: XenVersion,
    /// The old kernel places every VCPU's vcpu_info in a frame of its own (the purgatory
    /// hides those frames; Linux 5.16+ new kernels get the loader's warning).
    #[arg(long)]
    old_vcpu_info: bool,
    /// Run the old test kernel as a domU built by Xen's toolstack (the domU rig) with the
    /// image as its ramdisk; the image is built with `pvkexec build --mode domu`.
    #[arg(long)]
    domu: bool,
    /// With --domu: a raw disk image attached to the domU as xvda.
    #[arg(long, requires = "domu")]
    disk: Option<PathBuf>,
    /// With --domu: the old kernel is Debian's unmodified Linux with pvkexec.ko and the CLI
    /// (`pvkexec load` + `pvkexec exec`; docs/kernel-module.md) instead of the old test kernel;
    /// debian-6.12 is bookworm's 6.12.N+deb12 build (the module is built for its headers).
    #[arg(long, requires = "domu", value_parser = ["debian-6.1", "debian-6.12"])]
    old_kernel: Option<String>,
    /// Boot Xen built from its release tarball with pvkexec's patch series (xen-patches/)
    /// instead of Debian's binary (docs/patched-xen.md).
    #[arg(long)]
    patched_xen: bool,
}

/// `cargo xtask run`: the demo, a kexec from the old test kernel into the probe (64 MiB, one
/// VCPU, Xen 4.17).
pub(crate) fn demo() -> Result<ExitCode> {
    run(KexecArgs {
        kernel: None,
        initrd: None,
        append: None,
        image: None,
        mem_mib: 64,
        vcpus: 1,
        timeout: 120,
        expect: None,
        xen: XenVersion::V4_17,
        old_vcpu_info: false,
        domu: false,
        disk: None,
        old_kernel: None,
        patched_xen: false,
    })
}

pub(crate) fn run(args: KexecArgs) -> Result<ExitCode> {
    if args.old_kernel.is_some() {
        return kexec_old_linux(&args);
    }
    let root = harness::workspace_root();
    let into_probe = args.kernel.is_none() && args.image.is_none();
    let image = match args.image.clone() {
        Some(image) => image,
        None => {
            let default_kernel = args.kernel.is_none();
            let kernel = match args.kernel.clone() {
                Some(k) => k,
                None => guest::binary("probe")?,
            };
            let append = args.append.clone().unwrap_or_else(|| {
                if default_kernel {
                    format!("mem_mib={}", args.mem_mib)
                } else {
                    String::new()
                }
            });
            let out = root.join("target/kexec-demo.img");
            let mode = if args.domu {
                BuildMode::Domu
            } else {
                BuildMode::Dom0
            };
            let mut b = PvkexecBuild::new(&kernel, args.mem_mib, mode, &out);
            b.append = Some(append);
            // The old test kernel initialises every VCPU of the domain.
            b.old_vcpus = Some(args.vcpus);
            b.old_vcpu_info = args.old_vcpu_info;
            b.initrd = args.initrd.clone();
            println!("$ pvkexec build ...");
            let o = b.run()?;
            print!("{}", o.stdout);
            eprint!("{}", o.stderr);
            out
        }
    };
    let mut old_words = Vec::new();
    if into_probe {
        // For the probe, the old kernel keeps a loopback channel standing in for a domU's
        // xenstore channel (an initial-domain Linux would take it for one).
        old_words.push("kexec_store=loopback");
    }
    if args.old_vcpu_info {
        old_words.push("kexec_vcpu_info=1");
    }
    if args.domu {
        return kexec_domu(&args, image, old_words.join(" "));
    }
    let mut cfg = BootConfig::new(guest::binary("kexecold")?);
    cfg.cmdline = old_words.join(" ");
    cfg.modules.push(Module {
        path: image,
        args: String::new(),
    });
    cfg.mem_mib = args.mem_mib;
    cfg.vcpus = args.vcpus;
    cfg.xen = args.xen;
    cfg.patched_xen = args.patched_xen;
    cfg.timeout = Duration::from_secs(args.timeout);
    cfg.echo = Echo::All;
    if let Some(text) = &args.expect {
        cfg.stop_after = Some(text.clone());
    }
    let result = harness::boot(&cfg)?;
    let entered = result.log.contains(harness::PURGATORY_ENTERING);
    let ok = entered
        && match &args.expect {
            Some(_) => result.verdict == harness::Verdict::Stopped,
            None => result.verdict == harness::Verdict::Pass,
        };
    println!(
        "\nkexec: purgatory {}, new kernel: {} checks passed, {} failed, verdict {:?}, {:.2} s wall",
        if entered { "entered the new kernel" } else { "did not enter the new kernel" },
        result.passed().len(),
        result.failed().len(),
        result.verdict,
        result.wall.as_secs_f64()
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(result.verdict.exit_code().max(2) as u8)
    })
}

/// `kexec --domu`: the old test kernel as a toolstack-built domU, the image as its ramdisk.
/// `cargo xtask kexec --domu --old-kernel debian-6.1|debian-6.12`: Debian's 6.1 (or
/// bookworm's 6.12) domU kexecs through pvkexec.ko (the image is built inside the domU by
/// `pvkexec load`).
fn kexec_old_linux(args: &KexecArgs) -> Result<ExitCode> {
    // debian-6.12 is bookworm's 6.12 build (6.12.N+deb12): trixie's own (+deb13) headers
    // need gcc-14 and glibc 2.38, so no module links for it here (docs/kernel-module.md).
    let (old, old_name) = match args.old_kernel.as_deref() {
        Some("debian-6.12") => (DebianLinux::Bookworm612, "Debian 6.12"),
        Some("debian-6.1") => (DebianLinux::Bookworm, "Debian 6.1"),
        o => bail!("--old-kernel {o:?}: debian-6.1 or debian-6.12"),
    };
    let into_probe = args.kernel.is_none();
    let kernel = match &args.kernel {
        Some(k) => k.clone(),
        None => guest::binary("probe")?,
    };
    let append = args.append.clone().unwrap_or_else(|| {
        if into_probe {
            format!("mem_mib={}", args.mem_mib)
        } else {
            String::new()
        }
    });
    let req = harness::kmod::OldLinuxKexec {
        old,
        kernel,
        initrd: args.initrd.clone(),
        append,
        mem_mib: args.mem_mib,
        vcpus: args.vcpus,
        disk: args.disk.clone(),
        timeout: Duration::from_secs(args.timeout),
    };
    let (spec, rd) = harness::kmod::old_linux_spec("kexec-linux", &req)?;
    let run = domu_rig(args.xen, args.patched_xen).run(&[spec]);
    let _ = std::fs::remove_file(&rd);
    let run = run?;
    domu_kexec_outcome(
        args,
        report_domu(&run),
        &format!("kexec from {old_name} through pvkexec.ko"),
    )
}

fn kexec_domu(args: &KexecArgs, image: PathBuf, old_cmdline: String) -> Result<ExitCode> {
    let mut spec = harness::domu::DomuSpec::new("kexec", guest::binary("kexecold")?);
    spec.ramdisk = Some(image);
    spec.cmdline = old_cmdline;
    spec.mem_mib = args.mem_mib;
    spec.vcpus = args.vcpus;
    spec.disk = args.disk.clone();
    spec.timeout = Duration::from_secs(args.timeout);
    let run = domu_rig(args.xen, args.patched_xen).run(&[spec])?;
    domu_kexec_outcome(args, report_domu(&run), "kexec in a domU")
}

/// Prints what the domU's kexec came to (`what`: which kind of kexec) and its exit code:
/// success when the new kernel printed `--expect`'s text, or, for the probe, when the
/// purgatory entered it and it passed.
fn domu_kexec_outcome(
    args: &KexecArgs,
    d: &harness::domu::DomuResult,
    what: &str,
) -> Result<ExitCode> {
    let log = d.log();
    let entered = log.contains(harness::PURGATORY_ENTERING);
    let ok = match &args.expect {
        // The new kernel's text: what the old kernel printed does not count.
        Some(text) => d.after_switch().is_some_and(|a| a.contains(text.as_str())),
        None => entered && d.verdict == harness::domu::DomuVerdict::Pass,
    };
    println!(
        "{what}: purgatory {}, new kernel: {} checks passed, {} failed",
        if entered {
            "entered the new kernel"
        } else {
            "not seen entering the new kernel"
        },
        d.passed().len(),
        d.failed().len()
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(d.verdict.exit_code().max(2) as u8)
    })
}
