//! Command-line words of the old kernel.
//!
//! - `kexec_ap_stop=ipi`: a kernel without NMI callbacks; the APs are stopped by an IPI each.
//! - `kexec_vcpu_info=1`: every VCPU's `vcpu_info` in a frame of its own, listed in the handoff.
//! - `kexec_store=loopback`: a loopback interdomain pair standing in for a domU's xenstore
//!   channel, kept for the new kernel through the handoff (`keep_store_port`).
//! - `kexec_grant=v2`: the grant table switched to v2 before grants are offered (the purgatory
//!   must set it back to v1).
//! - `kexec_lists=1`: the image and the free pool given as handoff v6 frame lists (the pool:
//!   every other frame of its range, so not PFN-contiguous) instead of the v5 run rules.
//! - `kexec_fault=`: a [`Fault`], breaking the kernel side's contract on purpose.

use kernelrt::cmdline_value;

/// A broken contract, for the tests that show who catches it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `keep-trees`: the process trees stay pinned (the new kernel finds frames it cannot map
    /// writable).
    KeepTrees,
    /// `pool-overlap`: the free pool starts at the old P2M list (the purgatory refuses).
    PoolOverlap,
    /// `grant-in-use`: one offered grant stays mapped (the purgatory cannot revoke it and
    /// refuses).
    GrantInUse,
    /// `ap-stuck`: VCPU 1 registers no NMI callback, so the kexec's NMI is dropped and it
    /// stays in the old kernel (the purgatory names it and crashes the domain).
    ApStuck,
    /// `work-in-pool`: the purgatory's working memory lies inside the free pool (it refuses
    /// before any frame changes hands).
    WorkInPool,
    /// `handoff-v4`: a version-4 block, which has no working memory (the purgatory's entry
    /// code names it and crashes the domain).
    HandoffV4,
    /// `pool-list-repeat` (with `kexec_lists=1`): the pool list names its first frame twice
    /// (the purgatory refuses a list that is not strictly ascending).
    PoolListRepeat,
    /// `image-list-repeat` (with `kexec_lists=1`): the image list names its first frame
    /// twice (the purgatory refuses an image frame listed twice).
    ImageListRepeat,
    /// `xen-flags-claimed`: the handoff claims Xen's VCPU reset and vcpu_info unregistering
    /// whatever Xen says (the purgatory asks Xen itself and refuses a reset image on stock Xen).
    XenFlagsClaimed,
}

impl Fault {
    fn parse(word: &[u8]) -> Option<Fault> {
        Some(match word {
            b"keep-trees" => Fault::KeepTrees,
            b"pool-overlap" => Fault::PoolOverlap,
            b"grant-in-use" => Fault::GrantInUse,
            b"ap-stuck" => Fault::ApStuck,
            b"work-in-pool" => Fault::WorkInPool,
            b"handoff-v4" => Fault::HandoffV4,
            b"pool-list-repeat" => Fault::PoolListRepeat,
            b"image-list-repeat" => Fault::ImageListRepeat,
            b"xen-flags-claimed" => Fault::XenFlagsClaimed,
            _ => return None,
        })
    }
}

pub struct Options {
    pub ap_stop_by_ipi: bool,
    pub vcpu_info: bool,
    pub keep_store: bool,
    pub grant_v2: bool,
    pub lists: bool,
    pub fault: Option<Fault>,
}

impl Options {
    pub fn read(cmdline: &[u8]) -> Options {
        let word = |key| cmdline_value(cmdline, key);
        Options {
            ap_stop_by_ipi: word("kexec_ap_stop") == Some(b"ipi"),
            vcpu_info: word("kexec_vcpu_info") == Some(b"1"),
            keep_store: word("kexec_store") == Some(b"loopback"),
            grant_v2: word("kexec_grant") == Some(b"v2"),
            lists: word("kexec_lists") == Some(b"1"),
            fault: word("kexec_fault").and_then(Fault::parse),
        }
    }
}
