//! Runtime shared by pvkexec's freestanding guest binaries (test kernels and purgatory), built
//! for the host triple (docs/building-guests.md): what the prebuilt `core` expects from libc
//! (`mem*`), a console (`console_io` in the initial domain, the console ring in a domU), and
//! shutdown. Entry points and panic handlers belong
//! to each binary (a fixed-address kernel and the PIE purgatory enter differently).
#![no_std]

pub mod console;
pub mod mem;
pub mod xenstore;

use xenpv::{hypercall, ShutdownReason};

/// Shuts the domain down with `reason`; spins only if Xen refuses (it never should).
pub fn shutdown(reason: ShutdownReason) -> ! {
    // A domU's last lines must reach xenconsoled before the domain goes away.
    console::flush();
    loop {
        let err = hypercall::shutdown(reason);
        println!("shutdown({:?}) refused: {}", reason, err);
        let _ = hypercall::sched_yield();
    }
}
