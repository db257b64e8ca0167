//! What only the PV test kernels share: the boot-contract checks and the old kernel's poison.
//! Their runtime (entry, notes, report protocol, views, clock, blkfront) is `kernelrt`, the
//! capture kernel's too.
#![no_std]
// Check results carry their reason in a fixed buffer: these kernels have no heap to box it in.
#![allow(clippy::result_large_err)]

pub mod checks;

/// What the old test kernel writes over the frames of its free pool before a kexec, so that a
/// new kernel can tell the old kernel's bytes from the zeroes it was promised.
pub const OLD_DATA_POISON: u64 = u64::from_le_bytes(*b"OLDKDATA");
