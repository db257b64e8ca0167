//! Xen PV ABI for 64-bit x86 guests, as Xen 4.17 defines it.
//!
//! One definition shared by the host loader and the guest binaries (purgatory, test kernels):
//! hypercall and sub-op numbers, the `#[repr(C)]` structures Xen reads and writes (each with
//! compile-time size and offset asserts from Xen's public headers), page-table entry
//! flags, flat selectors and ELF note types. The `hypercall` feature adds inline `syscall`
//! wrappers for guest builds; every wrapper returns `Result<_, XenError>`.
#![no_std]

pub mod abi;
pub mod blkif;
pub mod consts;
pub mod errno;
pub mod hypercall_page;
pub mod pod;
pub mod pte;

#[cfg(all(feature = "hypercall", target_arch = "x86_64"))]
pub mod hypercall;

pub use abi::*;
pub use consts::*;
pub use errno::XenError;
pub use pod::Pod;

/// Page size of a PV guest (and of everything Xen maps for it).
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// Asserts a structure's size and the offsets of its fields at compile time.
///
/// `assert_layout!(Type, size; field @ offset, ...)`.
#[macro_export]
macro_rules! assert_layout {
    ($ty:ty, $size:expr $(; $($field:ident @ $off:expr),* $(,)?)?) => {
        const _: () = {
            assert!(core::mem::size_of::<$ty>() == $size, concat!("size of ", stringify!($ty)));
            $($(assert!(
                core::mem::offset_of!($ty, $field) == $off,
                concat!("offset of ", stringify!($ty), ".", stringify!($field))
            );)*)?
        };
    };
}
