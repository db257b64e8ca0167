//! `cargo xtask provision`: everything the rig downloads or builds, into the cache.

use anyhow::Result;
use harness::provision::{self, DebianLinux, XenVersion};

/// Provisions QEMU, both Xen versions, the Debian kernels, the initramfs images and the
/// domU rig's dom0 bases, printing where each is.
pub(crate) fn run() -> Result<()> {
    println!("qemu: {}", provision::ensure_qemu()?.display());
    for v in [XenVersion::V4_17, XenVersion::V4_20] {
        println!("xen {}: {}", v.name(), provision::ensure_xen(v)?.display());
    }
    for l in [
        DebianLinux::Bookworm,
        DebianLinux::Trixie,
        DebianLinux::Bullseye,
        DebianLinux::Bookworm612,
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
    for l in [
        DebianLinux::Bookworm,
        DebianLinux::Trixie,
        DebianLinux::Bookworm612,
    ] {
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
    Ok(())
}
