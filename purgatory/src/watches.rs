//! The old kernel's xenstore watches. xenstored keeps watches and transactions per connection,
//! and a domU's connection (its ring and channel, which the new kernel keeps: `rings`) outlives
//! the kernel that made them. Linux names a watch by its address, so the same kernel booted
//! again registers the same tokens and xenstored refuses them with EEXIST (seen: "xen:manage:
//! Failed to set shutdown watcher"), and the old watches' events keep coming. Linux sends
//! `XS_RESET_WATCHES` itself only as an HVM guest; the purgatory sends it for a PV one.

use crate::failure::Failure;
use crate::frames::Ctx;
use crate::rings::Rings;
use guestrt::xenstore::Xenstore;

/// Drops every watch and transaction of the domain's xenstore connection. The old kernel is
/// gone and the new one has not started, so the ring is the purgatory's. xenstored's refusal
/// or silence is not fatal (the new kernel then meets the old watches, as without this step)
/// and the line says so; a failed mapping hypercall is.
pub fn reset(c: &mut Ctx, rings: &Rings) -> Result<(), Failure> {
    let va = c.scratch_map(rings.store_mfn)? as u64;
    // SAFETY: `va` maps the domain's xenstore ring page (the old start_info's store_mfn,
    // checked by `rings::find`) writable in the scratch slot, which nothing else uses until
    // this exchange ends; no kernel uses the ring now.
    let mut xs = unsafe { Xenstore::new(va, rings.store_port) };
    let result = xs.reset_watches();
    c.hypercalls += xs.hypercalls();
    match result {
        Ok(()) => say!("purgatory: xenstore watches and transactions of the old kernel dropped (XS_RESET_WATCHES)"),
        Err(e) => say!("purgatory: xenstore watches of the old kernel kept: XS_RESET_WATCHES: {e}"),
    }
    c.scratch_unmap()
}
