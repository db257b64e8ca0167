//! Line-buffered console. Two backends:
//! - `console_io(CONSOLEIO_write)`: the initial domain may use it on Debian's release Xen
//!   (lines appear on the serial line with Xen's `(XEN)` prefix). The default.
//! - the domU console ring (`xencons_interface`, read by xenconsoled in dom0): Xen's release
//!   build refuses `console_io` writes from a domU. Selected by [`init`] when start_info lacks
//!   `SIF_INITDOMAIN`, or by [`use_ring`]; each write copies bytes into `out[]`, publishes
//!   `out_prod` and notifies the console event channel, waiting for xenconsoled when full.

use core::fmt::{self, Write};
use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use xenpv::{hypercall, sif, StartInfo, XenconsInterface};

/// Virtual address of the console ring, 0 while `console_io` is in use.
static RING_VA: AtomicU64 = AtomicU64::new(0);
static RING_PORT: AtomicU32 = AtomicU32::new(0);
/// Serialises writers of the ring (several VCPUs print).
static RING_LOCK: AtomicBool = AtomicBool::new(false);

/// Yields to other domains this many times without progress before a write gives up (a
/// console nobody reads must not hang the guest forever).
const MAX_STALLED_YIELDS: u32 = 100_000;

/// Chooses the console for this domain: `console_io` for the initial domain, else the ring
/// page Xen's builder mapped at `ring_va` (the caller maps `si.console_mfn`; a domU builder
/// puts it inside the initial mapping) with the event channel `si.console_evtchn`.
pub fn init(si: &StartInfo, ring_va: u64) {
    if si.flags & sif::INITDOMAIN != 0 || ring_va == 0 {
        RING_VA.store(0, Ordering::SeqCst);
    } else {
        use_ring(ring_va, si.console_evtchn);
    }
}

/// Writes to the console ring at `ring_va`, notifying `port`.
pub fn use_ring(ring_va: u64, port: u32) {
    RING_PORT.store(port, Ordering::SeqCst);
    RING_VA.store(ring_va, Ordering::SeqCst);
}

/// Whether the console is the domU ring.
pub fn uses_ring() -> bool {
    RING_VA.load(Ordering::SeqCst) != 0
}

fn ring() -> Option<(*mut XenconsInterface, u32)> {
    let va = RING_VA.load(Ordering::SeqCst);
    (va != 0).then(|| {
        (
            va as *mut XenconsInterface,
            RING_PORT.load(Ordering::SeqCst),
        )
    })
}

/// Writes all of `bytes`, or fails.
fn write_bytes(bytes: &[u8]) -> fmt::Result {
    match ring() {
        Some((intf, port)) => {
            let locked = lock();
            let r = ring_write(intf, port, bytes);
            if locked {
                RING_LOCK.store(false, Ordering::Release);
            }
            r
        }
        None => {
            let mut rest = bytes;
            while !rest.is_empty() {
                match hypercall::console_write(rest) {
                    Ok(0) | Err(_) => return Err(fmt::Error),
                    Ok(n) => rest = &rest[(n as usize).min(rest.len())..],
                }
            }
            Ok(())
        }
    }
}

/// Takes the ring lock; after a long spin (a writer interrupted on this VCPU) writes anyway.
fn lock() -> bool {
    for _ in 0..10_000_000u32 {
        if RING_LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

fn out_indices(intf: *mut XenconsInterface) -> (u32, u32) {
    // SAFETY: `intf` is the mapped console page (use_ring's contract); xenconsoled moves
    // out_cons concurrently, so both indices are read volatile.
    unsafe {
        (
            core::ptr::addr_of!((*intf).out_cons).read_volatile(),
            core::ptr::addr_of!((*intf).out_prod).read_volatile(),
        )
    }
}

fn ring_write(intf: *mut XenconsInterface, port: u32, bytes: &[u8]) -> fmt::Result {
    const SIZE: u32 = 2048;
    let mut sent = 0;
    let mut stalled = 0;
    while sent < bytes.len() {
        let (cons, mut prod) = out_indices(intf);
        // Read the consumer index before reusing the space it frees.
        fence(Ordering::SeqCst);
        let used = prod.wrapping_sub(cons);
        if used > SIZE {
            return Err(fmt::Error); // A corrupt ring: never write outside it.
        }
        let free = (SIZE - used) as usize;
        if free == 0 {
            // Full: make sure xenconsoled knows, and let dom0 run.
            let _ = hypercall::evtchn_send(port);
            let _ = hypercall::sched_yield();
            stalled += 1;
            if stalled > MAX_STALLED_YIELDS {
                return Err(fmt::Error);
            }
            continue;
        }
        stalled = 0;
        let n = free.min(bytes.len() - sent);
        for &b in &bytes[sent..sent + n] {
            // SAFETY: the index is masked into out[2048] of the mapped page.
            unsafe {
                core::ptr::addr_of_mut!((*intf).output[(prod % SIZE) as usize]).write_volatile(b)
            };
            prod = prod.wrapping_add(1);
        }
        // The bytes must be visible before the producer index that publishes them.
        fence(Ordering::SeqCst);
        // SAFETY: as above; only this writer (under the lock) moves out_prod.
        unsafe { core::ptr::addr_of_mut!((*intf).out_prod).write_volatile(prod) };
        sent += n;
        let _ = hypercall::evtchn_send(port);
    }
    Ok(())
}

/// Waits (bounded) until xenconsoled has read everything written to the ring, so the last
/// lines are not lost when the domain shuts down right after. No-op with `console_io`.
pub fn flush() {
    let Some((intf, port)) = ring() else {
        return;
    };
    let _ = hypercall::evtchn_send(port);
    for _ in 0..MAX_STALLED_YIELDS {
        let (cons, prod) = out_indices(intf);
        if cons == prod {
            return;
        }
        let _ = hypercall::sched_yield();
    }
}

/// A formatter that sends each chunk to the console.
pub struct XenConsole;

impl Write for XenConsole {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_bytes(s.as_bytes())
    }
}

/// Formats into a stack buffer and writes the whole line at once, so lines from different
/// VCPUs do not interleave mid-line.
pub fn print_line(args: fmt::Arguments) {
    let mut line = LineBuf {
        buf: [0; 256],
        len: 0,
    };
    let _ = line.write_fmt(args);
    let _ = line.write_str("\n");
    let _ = XenConsole.write_str(line.as_str());
}

struct LineBuf {
    buf: [u8; 256],
    len: usize,
}

impl LineBuf {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<non-utf8 line>")
    }
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                // Full line: flush and continue so nothing is silently truncated.
                let _ = XenConsole.write_str(self.as_str());
                self.len = 0;
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// `println!` for guests: one console write per line.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::console::print_line(format_args!($($arg)*)) };
}
