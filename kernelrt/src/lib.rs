//! Runtime of pvkexec's fixed-address PV kernels, the capture kernel (`capture/`) and the test
//! kernels (`qemu-tests/kernels`): `_start` and the boot stack, the Xen ELF notes, the panic
//! handler, the PASS/FAIL report protocol the harness reads, command-line words, read-only
//! views of the P2M, M2P and page tables, shared_info and Xen system time, and a polled
//! blkfront over the polled xenstore client of `guestrt`.
//!
//! Not part of `guestrt`: the purgatory links `guestrt` too, and it is a PIE with its own entry
//! and panic handler, which this crate's `_start`, notes and `#[panic_handler]` would collide
//! with (the guest workspace builds every member in one invocation, so a feature could not
//! keep them apart).
#![no_std]
// Check results carry their reason in a fixed buffer: these kernels have no heap to box it in.
#![allow(clippy::result_large_err)]

pub mod blkfront;
pub mod clock;
pub mod entry;
pub mod notes;
pub mod report;
pub mod shared;
pub mod view;
pub use guestrt::xenstore;

pub use guestrt::println;

/// Picks the console before the first line: `console_io` in the initial domain; in a domU
/// (Xen's release build refuses its `console_io`) the console ring `console_mfn` names, at its
/// place in the initial mapping (PFN from the M2P).
pub fn console_init(si: &xenpv::StartInfo, region: &view::Region) {
    if si.flags & xenpv::sif::INITDOMAIN != 0 {
        return;
    }
    let pfn = view::m2p(si.console_mfn);
    match region.pfn_va(pfn) {
        Some(va) => guestrt::console::init(si, va),
        // Nothing can be printed; the harness sees a domU that never prints.
        None => guestrt::shutdown(xenpv::ShutdownReason::Crash),
    }
}

/// Value of `key=` in a space-separated command line.
pub fn cmdline_value<'a>(cmdline: &'a [u8], key: &str) -> Option<&'a [u8]> {
    cmdline.split(|&b| b == b' ').find_map(|word| {
        let rest = word.strip_prefix(key.as_bytes())?;
        rest.strip_prefix(b"=")
    })
}

/// Parses a decimal or `0x` hexadecimal number.
pub fn parse_u64(text: &[u8]) -> Option<u64> {
    let s = core::str::from_utf8(text).ok()?;
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("panic: {}", info);
    guestrt::shutdown(xenpv::ShutdownReason::Crash)
}

/// The prebuilt `core` for the host target references the unwinding personality routine even
/// though guests abort on panic; nothing ever calls it.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
