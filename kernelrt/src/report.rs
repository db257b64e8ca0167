//! The verdict protocol the host harness reads from the serial log:
//! `PVKEXEC-TEST PASS <name>`, `PVKEXEC-TEST FAIL <name>: <why>` (and `PVKEXEC-TEST SKIP
//! <name>: <why>` for a check that cannot run in this domain), then a summary line and a
//! shutdown: reason reboot when every check passed, crash otherwise.

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};
use guestrt::println;
use xenpv::ShutdownReason;

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);

/// Records and prints a passed check.
pub fn pass(name: &str) {
    PASSED.fetch_add(1, Ordering::Relaxed);
    println!("PVKEXEC-TEST PASS {}", name);
}

/// Records and prints a failed check with its reason.
pub fn fail(name: &str, why: fmt::Arguments) {
    FAILED.fetch_add(1, Ordering::Relaxed);
    println!("PVKEXEC-TEST FAIL {}: {}", name, why);
}

/// Prints a check that did not run here and why (e.g. the domain lacks what it needs); it
/// counts neither as passed nor as failed.
pub fn skip(name: &str, why: fmt::Arguments) {
    println!("PVKEXEC-TEST SKIP {}: {}", name, why);
}

/// Reports `result` of check `name`: `Ok` passes, `Err(reason)` fails with the reason.
pub fn check<E: fmt::Display>(name: &str, result: Result<(), E>) {
    match result {
        Ok(()) => pass(name),
        Err(why) => fail(name, format_args!("{}", why)),
    }
}

/// Prints the summary and shuts the domain down: reboot when all passed, crash otherwise.
pub fn finish() -> ! {
    let (passed, failed) = (
        PASSED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
    );
    println!("PVKEXEC-TEST DONE passed={} failed={}", passed, failed);
    if failed == 0 && passed > 0 {
        guestrt::shutdown(ShutdownReason::Reboot)
    } else {
        guestrt::shutdown(ShutdownReason::Crash)
    }
}

/// A failure reason built with `format_args!`-style text into a fixed buffer.
pub struct Why {
    buf: [u8; 160],
    len: usize,
}

impl Why {
    pub fn new(args: fmt::Arguments) -> Self {
        let mut why = Why {
            buf: [0; 160],
            len: 0,
        };
        let _ = fmt::write(&mut why, args);
        why
    }
}

impl fmt::Write for Why {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<non-utf8>");
        f.write_str(text)?;
        if self.len == self.buf.len() {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// `Err(Why)` from format arguments.
#[macro_export]
macro_rules! why {
    ($($arg:tt)*) => { Err($crate::report::Why::new(format_args!($($arg)*))) };
}
