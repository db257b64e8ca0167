//! `cargo xtask`: the one entry point for building, provisioning, testing and demos. This file
//! only defines the command line and dispatches; each command is a module.

use anyhow::Result;
use clap::{Parser, Subcommand};
use harness::guest;
use std::process::ExitCode;

mod bench;
mod boot;
mod debian;
mod domu;
mod fuzz;
mod kdump;
mod kexec;
mod kmod;
mod man;
mod provision;
mod steps;
mod test;

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
    Kexec(kexec::KexecArgs),
    /// Boots Xen under QEMU with a PV kernel; exit code 0 only when the guest reported success
    /// (2 guest FAIL lines, 3 crash, 4 poweroff, 5 timeout, 6 Xen panic, 7 QEMU exited).
    Boot(boot::BootArgs),
    /// Boots one PV domU built by Xen's own toolstack (`xl create` in a Debian dom0 under
    /// QEMU) and echoes the log; exit code as for `boot` (2 guest FAIL lines, 3 crash,
    /// 4 poweroff, 5 timeout, 7 dom0/rig failure, 9 toolstack error, 10 destroyed).
    Domu(domu::DomuArgs),
    /// kdump in a toolstack-built Debian 6.1 domU: the pvkexec module loads a crash kernel
    /// (default: the capture kernel), the domU panics, the crash kernel writes the vmcore to
    /// the domU's disk, which is cut into --vmcore-out; exit code as for `domu`.
    Kdump(kdump::KdumpArgs),
    /// Builds the guest binaries (guest/ workspace).
    Build,
    /// Builds the Debian packages into target/debian/: pvkexec_<v>_amd64.deb (CLI, capture
    /// kernel, units, hook, man pages, completions) and pvkexec-dkms_<v>_all.deb (module
    /// source for DKMS).
    Deb,
    /// Boots a real Debian bookworm domU (systemd, Debian's 6.1 and its initramfs, pvkexec's
    /// packages installed by apt, the module built by DKMS, a dump disk) under Xen 4.17 and
    /// runs a scenario from a systemd unit, following the domain across its reboots.
    DebianDomu(debian::DebianDomuArgs),
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
    /// Writes pvkexec's man pages (pvkexec.8, one page per subcommand: pvkexec-load.8, ...)
    /// and its bash, zsh and fish completions into --out, from the CLI's clap definition.
    Man {
        /// The directory to write into (created if missing).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Criterion benchmarks: loader parse+plan, digest verification (SHA-NI and software);
    /// with --reboot only the kexec vs xl reboot benchmark of a Debian 6.1 domU.
    Bench(BenchArgs),
    /// Runs every cargo-fuzz target in fuzz/ (nightly; installs cargo-fuzz if missing) from the
    /// committed seeds; prints executions and exec/s per target, fails on a crash.
    Fuzz(FuzzArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Only this benchmark: a Debian 6.1 domU (2 VCPUs, 512 MiB, a disk) on the patched Xen
    /// 4.17 kexecs into itself 5 times through pvkexec.ko, then reboots 5 times through xl
    /// (`on_reboot = "restart"`); prints each run's seconds to the new init, the medians,
    /// their ratio and where the time goes.
    #[arg(long, conflicts_with = "dump")]
    reboot: bool,
    /// Only this benchmark: a Debian 6.1 domU of 1 GiB panics and the capture kernel dumps it
    /// to a host file; dom0 then writes as much to the same disk with direct I/O; prints both
    /// speeds.
    #[arg(long)]
    dump: bool,
}

#[derive(clap::Args)]
struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Only these targets (default: all).
    targets: Vec<String>,
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
        Cmd::Test => test::run().map(|()| ExitCode::SUCCESS),
        Cmd::Run => kexec::demo(),
        Cmd::Kexec(args) => kexec::run(args),
        Cmd::Boot(args) => boot::run(args),
        Cmd::Domu(args) => domu::run(args),
        Cmd::Kdump(args) => kdump::run(args),
        Cmd::Kmod => kmod::run().map(|()| ExitCode::SUCCESS),
        Cmd::Build => guest::build().map(|dir| {
            println!("guest binaries in {}", dir.display());
            ExitCode::SUCCESS
        }),
        Cmd::Deb => debian::deb().map(|()| ExitCode::SUCCESS),
        Cmd::DebianDomu(a) => debian::debian_domu(a),
        Cmd::Provision => provision::run().map(|()| ExitCode::SUCCESS),
        Cmd::Bench(a) if a.reboot => bench::run_reboot().map(|()| ExitCode::SUCCESS),
        Cmd::Bench(a) if a.dump => bench::run_dump().map(|()| ExitCode::SUCCESS),
        Cmd::Bench(_) => bench::run().map(|()| ExitCode::SUCCESS),
        Cmd::Fuzz(a) => fuzz::run(&harness::workspace_root(), a.seconds, &a.targets).map(|ok| {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Cmd::Man { out } => man::run(&out).map(|files| {
            for f in files {
                println!("wrote {}", f.display());
            }
            ExitCode::SUCCESS
        }),
        Cmd::Fmt => {
            let root = harness::workspace_root();
            steps::cargo(&root, &["fmt", "--all"])?;
            steps::cargo(&root.join("guest"), &["fmt", "--all"])?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
