//! Runtime shared by pvkexec's freestanding guest binaries (test kernels; the purgatory has its
//! own position-independent entry). Built for the host triple as a freestanding executable
//! (docs/building-guests.md): it supplies what the prebuilt `core` expects from libc (`mem*`),
//! a console over `console_io`, the PV entry point, and a panic handler that crashes the domain.
#![no_std]

pub mod console;
pub mod entry;
pub mod mem;

use core::panic::PanicInfo;
use xenpv::{hypercall, ShutdownReason};

/// Shuts the domain down with `reason`; spins only if Xen refuses (it never should).
pub fn shutdown(reason: ShutdownReason) -> ! {
    loop {
        let err = hypercall::shutdown(reason);
        println!("shutdown({:?}) refused: {}", reason, err);
        let _ = hypercall::sched_yield();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    println!("panic: {}", info);
    shutdown(ShutdownReason::Crash)
}

/// The prebuilt `core` for the host target references the unwinding personality routine even
/// though guests abort on panic; nothing ever calls it.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

/// Referenced by the prebuilt `alloc` (landing pads that never run with `panic = "abort"`).
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    shutdown(ShutdownReason::Crash)
}
