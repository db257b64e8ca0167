//! `cargo xtask bench`: the criterion benchmarks and `pvkexec plan`'s peak RSS.

use crate::steps::{cargo, cargo_env, step};
use anyhow::{bail, Context, Result};
use harness::provision::{self};
use harness::tools::{BuildMode, PvkexecBuild};
use harness::{guest, BootConfig, Module};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub(crate) fn run() -> Result<()> {
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
            let image = root.join("target/bench-linux.img");
            let mut b = PvkexecBuild::new(&kernel, 256, BuildMode::Dom0, &image);
            b.initrd = Some(initrd.clone());
            b.append = Some(append.into());
            eprint!("{}", b.run()?.stderr);
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
            for vcpus in [1u32, 2, 4] {
                let image = root.join(format!("target/bench-kexec-{vcpus}.img"));
                let probe = guest::binary("probe")?;
                let mut b = PvkexecBuild::new(&probe, 512, BuildMode::Dom0, &image);
                b.initrd = Some(initrd.clone());
                b.append = Some("mem_mib=512".into());
                b.old_vcpus = Some(vcpus);
                eprint!("{}", b.run()?.stderr);
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
