//! `cargo xtask test`: every check of the project, in order.

use crate::steps::{cargo, cargo_env, step};
use anyhow::{Context, Result};
use harness::guest;
use harness::provision::{self, DebianLinux, XenVersion};

pub(crate) fn run() -> Result<()> {
    let root = harness::workspace_root();
    let guest_dir = root.join("guest");
    step("fmt check (host workspace)", || {
        cargo(&root, &["fmt", "--all", "--check"])
    })?;
    step("fmt check (guest workspace)", || {
        cargo(&guest_dir, &["fmt", "--all", "--check"])
    })?;
    step("clippy (host workspace)", || {
        clippy(&root, &["--workspace", "--all-targets"])
    })?;
    step(
        "clippy (xenpv's hypercall wrappers, a guest-only feature)",
        || clippy(&root, &["-p", "xenpv", "--features", "hypercall"]),
    )?;
    step("clippy (guest workspace)", || {
        clippy(&guest_dir, &["--release", "--workspace", "--all-targets"])
    })?;
    step(
        "provision QEMU, Xen 4.17 and 4.20 (Debian's and patched), Debian's Linux 6.1, 6.12 \
         (trixie's and bookworm's) and 5.10, busybox initramfs, the domU rig's dom0 initramfs",
        || {
            provision::ensure_qemu()?;
            provision::ensure_xen(XenVersion::V4_17)?;
            provision::ensure_xen(XenVersion::V4_20)?;
            provision::ensure_linux(DebianLinux::Bookworm)?;
            provision::ensure_linux(DebianLinux::Trixie)?;
            provision::ensure_linux(DebianLinux::Bullseye)?;
            provision::ensure_linux(DebianLinux::Bookworm612)?;
            harness::initramfs::ensure_initramfs()?;
            for l in [
                DebianLinux::Bookworm,
                DebianLinux::Trixie,
                DebianLinux::Bookworm612,
            ] {
                harness::initramfs::ensure_initramfs_blkfront_for(l)?;
            }
            harness::dom0::ensure_base(XenVersion::V4_17)?;
            harness::dom0::ensure_base(XenVersion::V4_20)?;
            // Xen 4.17 and 4.20 with xen-patches/ (docs/patched-xen.md), cached by inputs.
            harness::xen_build::ensure_patched_xen(XenVersion::V4_17)?;
            harness::xen_build::ensure_patched_xen(XenVersion::V4_20)?;
            // The Debian domU's bookworm base (mmdebstrap, cached).
            harness::debian_domu::ensure_base()?;
            Ok(())
        },
    )?;
    step("guest builds", || guest::build().map(drop))?;
    step(
        "kernel module (kmod/) for Debian's 6.1 and 6.12",
        crate::kmod::run,
    )?;
    step("Debian packages (cargo xtask deb) and lintian", || {
        let b = harness::deb::build()?;
        let said = harness::deb::lint(&b)?;
        eprint!("{said}");
        Ok(())
    })?;
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

/// `cargo clippy ARGS -- -D warnings` in `dir`.
fn clippy(dir: &std::path::Path, args: &[&str]) -> Result<()> {
    let mut all = vec!["clippy"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", "-D", "warnings"]);
    cargo(dir, &all)
}
