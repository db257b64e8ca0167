//! `cargo xtask`: the one entry point for building, provisioning, testing and demos.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use harness::provision::{self, DebianLinux, XenVersion};
use harness::{guest, BootConfig, Echo, Module};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

mod fuzz;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "pvkexec build, test and demo driver")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every test: fmt check, clippy, host tests, guest builds, QEMU tests under real Xen.
    Test,
    /// The demo: a kexec under Xen from the old test kernel into the probe kernel, which
    /// reports what it was handed.
    Run,
    /// Builds a kexec image with the loader (or takes one), boots Xen with the old test kernel
    /// and the image as its module, and runs the kexec; exit 0 only when the new kernel reports
    /// success (its PASS lines, or the `--expect` text).
    Kexec(KexecArgs),
    /// Boots Xen under QEMU with a PV kernel; exit code 0 only when the guest reported success
    /// (2 guest FAIL lines, 3 crash, 4 poweroff, 5 timeout, 6 Xen panic, 7 QEMU exited).
    Boot(BootArgs),
    /// Boots one PV domU built by Xen's own toolstack (`xl create` in a Debian dom0 under
    /// QEMU) and echoes the log; exit code as for `boot` (2 guest FAIL lines, 3 crash,
    /// 4 poweroff, 5 timeout, 7 dom0/rig failure, 9 toolstack error, 10 destroyed).
    Domu(DomuArgs),
    /// Builds the guest binaries (guest/ workspace).
    Build,
    /// Builds the kernel module (kmod/, pvkexec.ko) with -Werror against Debian's headers for
    /// the rig's bookworm kernel and bookworm's build of 6.12, and compiles it against trixie's
    /// 6.12 headers (headers and gcc fetched with apt, cached).
    Kmod,
    /// Installs QEMU; unpacks Xen 4.17 and 4.20, Debian 6.1 and 6.12 kernels and busybox, and
    /// builds the initramfs images and the domU rig's dom0 initramfs, into the cache
    /// (`~/.cache/pvkexec`, or `$PVKEXEC_CACHE`).
    Provision,
    /// Formats both workspaces.
    Fmt,
    /// Criterion benchmarks: loader parse+plan, digest verification (SHA-NI and software).
    Bench,
    /// Runs every cargo-fuzz target in fuzz/ (nightly; installs cargo-fuzz if missing) from the
    /// committed seeds; prints executions and exec/s per target, fails on a crash.
    Fuzz(FuzzArgs),
}

#[derive(clap::Args)]
struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Only these targets (default: all).
    targets: Vec<String>,
}

#[derive(clap::Args)]
struct BootArgs {
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
}

#[derive(clap::Args)]
struct DomuArgs {
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
}

#[derive(clap::Args)]
struct KexecArgs {
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
    /// (`pvkexec load` + `pvkexec exec`; docs/kernel-module.md) instead of the old test kernel.
    #[arg(long, requires = "domu", value_parser = ["debian-6.1", "debian-6.12"])]
    old_kernel: Option<String>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Test => test().map(|()| ExitCode::SUCCESS),
        Cmd::Run => kexec(KexecArgs {
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
        }),
        Cmd::Kexec(args) => kexec(args),
        Cmd::Boot(args) => boot(args),
        Cmd::Domu(args) => domu(args),
        Cmd::Kmod => kmod().map(|()| ExitCode::SUCCESS),
        Cmd::Build => guest::build().map(|dir| {
            println!("guest binaries in {}", dir.display());
            ExitCode::SUCCESS
        }),
        Cmd::Provision => {
            println!("qemu: {}", provision::ensure_qemu()?.display());
            for v in [XenVersion::V4_17, XenVersion::V4_20] {
                println!("xen {}: {}", v.name(), provision::ensure_xen(v)?.display());
            }
            for l in [
                DebianLinux::Bookworm,
                DebianLinux::Trixie,
                DebianLinux::Bullseye,
            ] {
                println!(
                    "linux {}: {}",
                    l.name(),
                    provision::ensure_linux(l)?.display()
                );
            }
            println!(
                "initramfs: {}",
                harness::initramfs::ensure_initramfs()?.display()
            );
            for l in [DebianLinux::Bookworm, DebianLinux::Trixie] {
                println!(
                    "initramfs with {}'s xen-blkfront: {}",
                    l.name(),
                    harness::initramfs::ensure_initramfs_blkfront_for(l)?.display()
                );
            }
            for v in [XenVersion::V4_17, XenVersion::V4_20] {
                println!(
                    "domU rig dom0 initramfs (Xen {} toolstack): {}",
                    v.name(),
                    harness::dom0::ensure_base(v)?.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench => bench().map(|()| ExitCode::SUCCESS),
        Cmd::Fuzz(a) => fuzz::run(&harness::workspace_root(), a.seconds, &a.targets).map(|ok| {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Cmd::Fmt => {
            let root = harness::workspace_root();
            cargo(&root, &["fmt", "--all"])?;
            cargo(&root.join("guest"), &["fmt", "--all"])?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn boot(args: BootArgs) -> Result<ExitCode> {
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
    cfg.echo = Echo::All;
    let result = harness::boot(&cfg)?;
    Ok(ExitCode::from(result.verdict.exit_code() as u8))
}

fn kexec(args: KexecArgs) -> Result<ExitCode> {
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
            cargo(
                &root,
                &["build", "--quiet", "-p", "loader", "--bin", "pvkexec"],
            )?;
            let mut cmd = Command::new(root.join("target/debug/pvkexec"));
            cmd.arg("build").arg("--kernel").arg(&kernel);
            let mode = if args.domu { "domu" } else { "dom0" };
            cmd.args(["--mem-mib", &args.mem_mib.to_string(), "--mode", mode]);
            cmd.args(["--append", &append]).arg("-o").arg(&out);
            // The old test kernel initialises every VCPU of the domain.
            cmd.args(["--old-vcpus", &args.vcpus.to_string()]);
            if args.old_vcpu_info {
                cmd.arg("--old-vcpu-info");
            }
            if let Some(i) = &args.initrd {
                cmd.arg("--initrd").arg(i);
            }
            println!("$ pvkexec build ...");
            if !cmd.status().context("running pvkexec build")?.success() {
                bail!("pvkexec build failed");
            }
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

fn domu_rig(xen: XenVersion) -> harness::domu::DomuRig {
    harness::domu::DomuRig {
        xen,
        echo: Echo::All,
        ..Default::default()
    }
}

/// Prints the rig's timings and the domU's verdict.
fn report_domu(run: &harness::domu::RigRun) -> &harness::domu::DomuResult {
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

fn domu(args: DomuArgs) -> Result<ExitCode> {
    let mut spec = harness::domu::DomuSpec::new("domu", &args.kernel);
    spec.ramdisk = args.initrd;
    spec.cmdline = args.cmdline;
    spec.mem_mib = args.mem_mib;
    spec.vcpus = args.vcpus;
    spec.disk = args.disk;
    spec.timeout = Duration::from_secs(args.timeout);
    spec.build_only = args.build_only;
    let run = domu_rig(args.xen).run(&[spec])?;
    let d = report_domu(&run);
    if args.build_only {
        println!("domain builder:");
        for line in d.builder_log_lines() {
            println!("  {line}");
        }
    }
    Ok(ExitCode::from(d.verdict.exit_code() as u8))
}

/// `kexec --domu`: the old test kernel as a toolstack-built domU, the image as its ramdisk.
/// `cargo xtask kexec --domu --old-kernel debian-6.1`: Debian's 6.1 domU kexecs through
/// pvkexec.ko (the image is built inside the domU by `pvkexec load`).
fn kexec_old_linux(args: &KexecArgs) -> Result<ExitCode> {
    if args.old_kernel.as_deref() == Some("debian-6.12") {
        bail!(
            "--old-kernel debian-6.12: pvkexec.ko cannot be built for trixie's kernel on this \
             host (its headers need gcc-14 and glibc 2.38; docs/kernel-module.md)"
        );
    }
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
        kernel,
        initrd: args.initrd.clone(),
        append,
        mem_mib: args.mem_mib,
        vcpus: args.vcpus,
        disk: args.disk.clone(),
        timeout: Duration::from_secs(args.timeout),
    };
    let (spec, rd) = harness::kmod::old_linux_spec("kexec-linux", &req)?;
    let run = domu_rig(args.xen).run(&[spec]);
    let _ = std::fs::remove_file(&rd);
    let run = run?;
    let d = report_domu(&run);
    let log = d.log();
    let entered = log.contains(harness::PURGATORY_ENTERING);
    let ok = match &args.expect {
        Some(text) => log.contains(text.as_str()),
        None => entered && d.verdict == harness::domu::DomuVerdict::Pass,
    };
    println!(
        "kexec from Debian 6.1 through pvkexec.ko: purgatory {}, new kernel: {} checks passed, \
         {} failed",
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

fn kexec_domu(args: &KexecArgs, image: PathBuf, old_cmdline: String) -> Result<ExitCode> {
    let mut spec = harness::domu::DomuSpec::new("kexec", guest::binary("kexecold")?);
    spec.ramdisk = Some(image);
    spec.cmdline = old_cmdline;
    spec.mem_mib = args.mem_mib;
    spec.vcpus = args.vcpus;
    spec.disk = args.disk.clone();
    spec.timeout = Duration::from_secs(args.timeout);
    let run = domu_rig(args.xen).run(&[spec])?;
    let d = report_domu(&run);
    let log = d.log();
    let entered = log.contains(harness::PURGATORY_ENTERING);
    let ok = match &args.expect {
        Some(text) => log.contains(text.as_str()),
        None => entered && d.verdict == harness::domu::DomuVerdict::Pass,
    };
    println!(
        "kexec in a domU: purgatory {}, new kernel: {} checks passed, {} failed",
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

fn bench() -> Result<()> {
    let root = harness::workspace_root();
    let kernel = provision::ensure_debian_linux()?;
    let kernel_var = kernel.to_str().context("kernel path")?;
    step("loader: parse Debian's bzImage and plan", || {
        cargo_env(
            &root,
            &["bench", "-p", "loader"],
            &[("PVKEXEC_DEBIAN_KERNEL", kernel_var)],
        )
    })?;
    step(
        "loader: peak RSS of `pvkexec plan` on Debian's bzImage",
        || {
            cargo(
                &root,
                &["build", "--release", "-p", "loader", "--bin", "pvkexec"],
            )?;
            let exe = root.join("target/release/pvkexec");
            let (ok, max_rss_kib) = rusage_of(
                Command::new(&exe)
                    .args(["plan", "--mode", "dom0", "--mem-mib", "256", "--kernel"])
                    .arg(&kernel)
                    .stdout(std::process::Stdio::null()),
            )?;
            if !ok {
                bail!("pvkexec plan failed");
            }
            println!(
                "pvkexec plan on {}: peak RSS {:.1} MiB",
                kernel.display(),
                max_rss_kib as f64 / 1024.0
            );
            Ok(())
        },
    )?;
    step("digest verification, SHA-NI when the CPU has it", || {
        cargo(&root, &["bench", "-p", "pvhandoff"])
    })?;
    step("digest verification, software SHA-256", || {
        // A separate target dir: the cfg changes every crate's flags.
        let dir = root.join("target/bench-soft-sha");
        cargo_env(
            &root,
            &["bench", "-p", "pvhandoff"],
            &[
                ("RUSTFLAGS", "--cfg sha2_backend=\"soft\""),
                ("CARGO_TARGET_DIR", dir.to_str().context("target path")?),
            ],
        )
    })?;
    step(
        "Debian Linux 6.1 to init: direct boot by Xen's builder vs kexec (256 MiB, TCG)",
        || {
            guest::build()?;
            let kernel = provision::ensure_debian_linux()?;
            let initrd = harness::initramfs::ensure_initramfs()?;
            let append = "console=hvc0 earlyprintk=xen";
            cargo(
                &root,
                &["build", "--quiet", "-p", "loader", "--bin", "pvkexec"],
            )?;
            let image = root.join("target/bench-linux.img");
            let status = Command::new(root.join("target/debug/pvkexec"))
                .arg("build")
                .arg("--kernel")
                .arg(&kernel)
                .arg("--initrd")
                .arg(&initrd)
                .args([
                    "--mem-mib",
                    "256",
                    "--mode",
                    "dom0",
                    "--append",
                    append,
                    "-o",
                ])
                .arg(&image)
                .stdout(std::process::Stdio::null())
                .status()?;
            if !status.success() {
                bail!("pvkexec build failed");
            }
            let run = |kernel: PathBuf, module: PathBuf, cmdline: &str| -> Result<f64> {
                let mut cfg = BootConfig::new(kernel);
                cfg.mem_mib = 256;
                cfg.cmdline = cmdline.into();
                cfg.timeout = Duration::from_secs(240);
                cfg.modules.push(Module {
                    path: module,
                    args: String::new(),
                });
                cfg.stop_after = Some(harness::initramfs::DONE_MARKER.into());
                let r = harness::boot(&cfg)?;
                if r.verdict != harness::Verdict::Stopped {
                    bail!("the run ended {:?}", r.verdict);
                }
                Ok(r.wall.as_secs_f64())
            };
            let direct = run(kernel.clone(), initrd.clone(), append)?;
            let kexec = run(guest::binary("kexecold")?, image, "")?;
            println!(
                "to init: direct boot {direct:.2} s, old kernel + kexec {kexec:.2} s ({:.2}x)",
                kexec / direct
            );
            Ok(())
        },
    )?;
    step(
        "guest: the purgatory's digest verification on 1, 2 and 4 VCPUs (32 MiB initrd, TCG)",
        || {
            guest::build()?;
            let initrd = harness::tools::test_file(32 << 20)?;
            cargo(
                &root,
                &["build", "--quiet", "-p", "loader", "--bin", "pvkexec"],
            )?;
            for vcpus in [1u32, 2, 4] {
                let image = root.join(format!("target/bench-kexec-{vcpus}.img"));
                let status = Command::new(root.join("target/debug/pvkexec"))
                    .arg("build")
                    .arg("--kernel")
                    .arg(guest::binary("probe")?)
                    .arg("--initrd")
                    .arg(&initrd)
                    .args([
                        "--mem-mib",
                        "512",
                        "--mode",
                        "dom0",
                        "--append",
                        "mem_mib=512",
                    ])
                    .args(["--old-vcpus", &vcpus.to_string()])
                    .arg("-o")
                    .arg(&image)
                    .stdout(std::process::Stdio::null())
                    .status()?;
                if !status.success() {
                    bail!("pvkexec build failed");
                }
                let mut cfg = BootConfig::new(guest::binary("kexecold")?);
                cfg.mem_mib = 512;
                cfg.vcpus = vcpus;
                cfg.modules.push(Module {
                    path: image,
                    args: String::new(),
                });
                cfg.stop_after = Some("purgatory: digests verified".into());
                let r = harness::boot(&cfg)?;
                let line = r
                    .lines_with("purgatory: digests verified")
                    .next()
                    .context("no verification line")?
                    .to_string();
                println!("{vcpus} VCPU(s): {}", line.trim());
            }
            Ok(())
        },
    )?;
    Ok(())
}

/// Runs cargo in `dir` with the outer invocation's target settings removed.
fn cargo(dir: &Path, args: &[&str]) -> Result<()> {
    cargo_env(dir, args, &[])
}

/// [`cargo`] with extra environment variables.
fn cargo_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let mut cmd = harness::cargo_command(dir);
    cmd.args(args).envs(env.iter().copied());
    let status = cmd
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!(
            "`cargo {}` in {} failed ({status})",
            args.join(" "),
            dir.display()
        );
    }
    Ok(())
}

/// `cargo xtask kmod`: pvkexec.ko for the rig's 6.1 and bookworm's 6.12 build (linked, -Werror),
/// and a compile of the module against trixie's own 6.12 headers.
fn kmod() -> Result<()> {
    use harness::kmod::{self, Headers};
    println!("kmod/: {} lines of C", kmod::source_lines()?);
    for which in [Headers::Bookworm, Headers::Bookworm612] {
        let ko = kmod::build(which)?;
        println!(
            "{}: {} ({} bytes)",
            which.name(),
            ko.display(),
            std::fs::metadata(&ko)?.len()
        );
    }
    let obj = kmod::compile_check_trixie()?;
    println!(
        "trixie: {} compiled (gcc-12; no .ko: trixie's kbuild tools need gcc-14 and glibc 2.38)",
        obj.display()
    );
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let start = Instant::now();
    eprintln!("==> {name}");
    f().with_context(|| format!("step `{name}` failed"))?;
    eprintln!("<== {name}: ok ({:.1} s)", start.elapsed().as_secs_f64());
    Ok(())
}

fn test() -> Result<()> {
    let root = harness::workspace_root();
    let guest_dir = root.join("guest");
    step("fmt check (host workspace)", || {
        cargo(&root, &["fmt", "--all", "--check"])
    })?;
    step("fmt check (guest workspace)", || {
        cargo(&guest_dir, &["fmt", "--all", "--check"])
    })?;
    step("clippy (host workspace)", || {
        cargo(
            &root,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        )
    })?;
    step("clippy (guest workspace)", || {
        cargo(
            &guest_dir,
            &[
                "clippy",
                "--release",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        )
    })?;
    step(
        "provision QEMU, Xen 4.17 and 4.20, Debian's Linux 6.1 and 6.12, busybox initramfs, \
         the domU rig's dom0 initramfs",
        || {
            provision::ensure_qemu()?;
            provision::ensure_xen(XenVersion::V4_17)?;
            provision::ensure_xen(XenVersion::V4_20)?;
            provision::ensure_linux(DebianLinux::Bookworm)?;
            provision::ensure_linux(DebianLinux::Trixie)?;
            harness::initramfs::ensure_initramfs()?;
            for l in [DebianLinux::Bookworm, DebianLinux::Trixie] {
                harness::initramfs::ensure_initramfs_blkfront_for(l)?;
            }
            harness::dom0::ensure_base(XenVersion::V4_17)?;
            harness::dom0::ensure_base(XenVersion::V4_20)?;
            Ok(())
        },
    )?;
    step("guest builds", || guest::build().map(drop))?;
    step("kernel module (kmod/) for Debian's 6.1 and 6.12", kmod)?;
    let kernel = provision::ensure_debian_linux()?;
    step("host tests and QEMU tests", || {
        cargo_env(
            &root,
            &[
                "test",
                "--workspace",
                "--",
                "--nocapture",
                "--test-threads=2",
            ],
            &[(
                "PVKEXEC_DEBIAN_KERNEL",
                kernel.to_str().context("kernel path")?,
            )],
        )
    })?;
    eprintln!("all tests passed");
    Ok(())
}

/// Runs `cmd` and returns whether it succeeded and its own peak resident set size in KiB
/// (`wait4` on its pid, so earlier children such as cargo do not count).
fn rusage_of(cmd: &mut Command) -> Result<(bool, i64)> {
    let child = cmd.spawn().context("starting the measured command")?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 on our own child's pid writes the status and one rusage into the zeroed
    // locals; the Child handle is not waited on again.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::wait4(pid, &mut status, 0, &mut usage) != pid {
            bail!("wait4 failed");
        }
        usage
    };
    Ok((
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        usage.ru_maxrss,
    ))
}
