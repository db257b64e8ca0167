//! The test rig: Xen under QEMU (TCG), booting pvkexec's PV guest kernels.
//!
//! - [`provision`] installs QEMU (Debian's `qemu-system-x86`) and unpacks Debian's Xen
//!   hypervisor package into a cache under `target/`.
//! - [`guest`] builds the guest workspace (`guest/`).
//! - [`boot`] runs Xen with a kernel and modules, captures the serial log with a timeout and
//!   turns it into a [`Verdict`].
//! - [`domu`] runs PV domUs built by Xen's own toolstack in a Debian dom0 ([`dom0`] builds
//!   dom0's initramfs from Debian packages).
//! - [`xen_build`] builds Xen from its release tarball with pvkexec's patch series, for boots
//!   that ask for the patched hypervisor.

pub mod boot;
pub mod deb;
pub mod debian_domu;
pub mod dom0;
pub mod domu;
pub mod guest;
pub mod initramfs;
pub mod kdump;
pub mod kmod;
pub mod provision;
pub mod tools;
pub mod vmcore_file;
pub mod vmcore_tools;
pub mod xc_core;
pub mod xen_build;

pub use boot::{boot, BootConfig, BootResult, Echo, Module, Verdict};

use std::path::{Path, PathBuf};
use std::process::Command;

/// The checks the boot-check kernel reports (qemu-tests/kernels/src/bin/bootcheck.rs), whether
/// Xen's builder or a kexec started it.
pub const BOOTCHECK_CHECKS: [&str; 9] = [
    "magic",
    "nr_pages",
    "p2m-m2p",
    "pagetables",
    "region-end",
    "xen-version",
    "mmu-roundtrip",
    "entry-registers",
    "frames-writable",
];

/// The checks the probe kernel (qemu-tests/kernels/src/bin/probe.rs) reports after every
/// kexec: its own around every boot check. (`ap-wake` comes only with parked VCPUs.)
pub fn probe_checks() -> Vec<&'static str> {
    let mut all = vec!["zeroed"];
    all.extend(BOOTCHECK_CHECKS);
    all.extend([
        "plan",
        "event-channels",
        "no-old-timers",
        "vcpus-parked",
        "hidden-frames",
        "no-late-writes",
        "watchdogs-gone",
        "grants-revoked",
        "fifo-gone",
    ]);
    all
}

/// The purgatory's last line before it leaves for the new kernel.
pub const PURGATORY_ENTERING: &str = "entering the new kernel at";

/// Names of the checks reported as passed (`PVKEXEC-TEST PASS name`) in `lines`.
pub fn passed_checks<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    lines
        .filter_map(|l| l.split("PVKEXEC-TEST PASS ").nth(1))
        .map(|s| s.trim().to_string())
        .collect()
}

/// `(name, reason)` of the checks reported as failed (`PVKEXEC-TEST FAIL name: why`) in
/// `lines`.
pub fn failed_checks<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .filter_map(|l| l.split("PVKEXEC-TEST FAIL ").nth(1))
        .map(|s| match s.split_once(": ") {
            Some((name, why)) => (name.trim().to_string(), why.trim().to_string()),
            None => (s.trim().to_string(), String::new()),
        })
        .collect()
}

/// The repository root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.join("../..")
        .canonicalize()
        .unwrap_or_else(|_| here.join("../.."))
}

/// Where provisioned tools and downloaded packages are cached: `$PVKEXEC_CACHE`, else
/// `~/.cache/pvkexec` (outside the checkout, so a fresh clone on the same machine reuses
/// it), else `target/pvkexec-cache` when there is no home directory.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PVKEXEC_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("pvkexec"),
        None => workspace_root().join("target").join("pvkexec-cache"),
    }
}

/// A `cargo` command in `dir` without the settings an outer cargo invocation exports
/// (target dir, flags), so nested builds use the workspace's own configuration.
pub fn cargo_command(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(dir);
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    cmd
}
