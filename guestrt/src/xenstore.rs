//! A minimal xenstore client over a domU's ring (`xen/include/public/io/xs_wire.h`): one
//! request at a time (`XS_READ`, `XS_WRITE`, `XS_DIRECTORY`, `XS_RESET_WATCHES`), polled with
//! `sched_yield` (events stay masked in its users). Enough for a test kernel to show that the
//! ring and channel it was handed reach xenstored, for a blkfront to connect, and for the
//! purgatory to drop the old kernel's watches.

use core::sync::atomic::{fence, Ordering};
use xenpv::hypercall;
use xenpv::xs::{
    DIRECTORY as XS_DIRECTORY, ERROR as XS_ERROR, HEADER, PAYLOAD_MAX, READ as XS_READ, REQ,
    REQ_CONS, REQ_PROD, RESET_WATCHES as XS_RESET_WATCHES, RING_SIZE, RSP, RSP_CONS, RSP_PROD,
    WRITE as XS_WRITE,
};
// A watch firing: xenstored may put these in the ring at any time (an old kernel's watches
// outlive it); skipped.
use xenpv::xs::WATCH_EVENT as XS_WATCH_EVENT;
/// Messages skipped (watch events, answers to someone else's requests) before giving up.
const MAX_SKIPPED: u32 = 64;
/// Yields to wait for xenstored before a request is given up.
const MAX_YIELDS: u32 = 200_000;

/// Why a request failed.
#[derive(Clone, Copy, Debug)]
pub enum XsError {
    /// The request does not fit the ring or the answer does not fit the buffer.
    TooLong,
    /// xenstored did not take the request or answer in time.
    NoAnswer,
    /// The ring's indices are inconsistent.
    CorruptRing,
    /// xenstored answered with an error (e.g. `ENOENT`); its first bytes.
    Error([u8; 8]),
    /// An answer of another type.
    Unexpected(u32),
}

/// The ring page at `va` with its event channel `port`.
pub struct Xenstore {
    va: u64,
    port: u32,
    req_id: u32,
    hypercalls: u64,
}

impl Xenstore {
    /// # Safety
    /// `va` maps this domain's xenstore ring page (start_info's `store_mfn`) writable, and
    /// nothing else uses the ring while this value lives.
    pub unsafe fn new(va: u64, port: u32) -> Self {
        Xenstore {
            va,
            port,
            req_id: 0,
            hypercalls: 0,
        }
    }

    /// Hypercalls made so far (yields and notifications).
    pub fn hypercalls(&self) -> u64 {
        self.hypercalls
    }

    fn notify(&mut self) {
        self.hypercalls += 1;
        let _ = hypercall::evtchn_send(self.port);
    }

    fn idx(&self, off: usize) -> u32 {
        // SAFETY: `off` is one of the index fields inside the ring page (`new`'s contract);
        // xenstored writes them concurrently, so they are read volatile.
        unsafe { ((self.va + off as u64) as *const u32).read_volatile() }
    }

    fn set_idx(&self, off: usize, v: u32) {
        // SAFETY: as in `idx`; only this client moves req_prod and rsp_cons.
        unsafe { ((self.va + off as u64) as *mut u32).write_volatile(v) }
    }

    fn byte(&self, area: usize, i: u32) -> u8 {
        // SAFETY: `area` is REQ or RSP and the index is masked into its 1024 bytes.
        unsafe { ((self.va + (area as u64) + (i % RING_SIZE) as u64) as *const u8).read_volatile() }
    }

    fn set_byte(&self, i: u32, b: u8) {
        // SAFETY: the request area, index masked into its 1024 bytes.
        unsafe { ((self.va + (REQ as u64) + (i % RING_SIZE) as u64) as *mut u8).write_volatile(b) }
    }

    fn wait(&mut self, mut done: impl FnMut(&Self) -> bool) -> Result<(), XsError> {
        for _ in 0..MAX_YIELDS {
            if done(self) {
                return Ok(());
            }
            self.hypercalls += 1;
            let _ = hypercall::sched_yield();
        }
        Err(XsError::NoAnswer)
    }

    fn send(&mut self, kind: u32, payload: &[&[u8]]) -> Result<(), XsError> {
        let len: usize = payload.iter().map(|p| p.len()).sum();
        if HEADER + len > RING_SIZE as usize {
            return Err(XsError::TooLong);
        }
        self.req_id = self.req_id.wrapping_add(1);
        let mut header = [0u8; HEADER];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[4..8].copy_from_slice(&self.req_id.to_le_bytes());
        header[12..16].copy_from_slice(&(len as u32).to_le_bytes());
        let need = (HEADER + len) as u32;
        // Room for the whole message (xenstored consumes whole requests).
        self.wait(|x| {
            let used = x.idx(REQ_PROD).wrapping_sub(x.idx(REQ_CONS));
            used <= RING_SIZE && RING_SIZE - used >= need
        })?;
        fence(Ordering::SeqCst);
        let mut prod = self.idx(REQ_PROD);
        for part in core::iter::once(&header[..]).chain(payload.iter().copied()) {
            for &b in part {
                self.set_byte(prod, b);
                prod = prod.wrapping_add(1);
            }
        }
        // The bytes before the index that publishes them.
        fence(Ordering::SeqCst);
        self.set_idx(REQ_PROD, prod);
        self.notify();
        Ok(())
    }

    /// Waits for `n` bytes of answer and copies them out.
    fn take(&mut self, out: &mut [u8]) -> Result<(), XsError> {
        let n = out.len() as u32;
        self.wait(|x| x.idx(RSP_PROD).wrapping_sub(x.idx(RSP_CONS)) >= n)?;
        let avail = self.idx(RSP_PROD).wrapping_sub(self.idx(RSP_CONS));
        if avail > RING_SIZE {
            return Err(XsError::CorruptRing);
        }
        fence(Ordering::SeqCst);
        let cons = self.idx(RSP_CONS);
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.byte(RSP, cons.wrapping_add(i as u32));
        }
        fence(Ordering::SeqCst);
        self.set_idx(RSP_CONS, cons.wrapping_add(n));
        self.notify();
        Ok(())
    }

    /// Drops `len` bytes of a message this client does not want.
    fn skip(&mut self, len: usize) -> Result<(), XsError> {
        let mut scratch = [0u8; 64];
        let mut left = len;
        while left > 0 {
            let n = left.min(scratch.len());
            self.take(&mut scratch[..n])?;
            left -= n;
        }
        Ok(())
    }

    /// `XS_READ` of `path` (relative paths are under `/local/domain/<domid>`): the value's
    /// length in `out`.
    pub fn read(&mut self, path: &str, out: &mut [u8]) -> Result<usize, XsError> {
        self.request(XS_READ, &[path.as_bytes(), b"\0"], out)
    }

    /// `XS_WRITE` of `value` to `path` (no transaction).
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), XsError> {
        // The answer is "OK".
        let mut ok = [0u8; 8];
        self.request(XS_WRITE, &[path.as_bytes(), b"\0", value], &mut ok)
            .map(drop)
    }

    /// `XS_RESET_WATCHES`: xenstored drops every watch and transaction of this domain's
    /// connection (which outlives the kernel that made them).
    pub fn reset_watches(&mut self) -> Result<(), XsError> {
        // The answer is "OK".
        let mut ok = [0u8; 8];
        self.request(XS_RESET_WATCHES, &[b"\0"], &mut ok).map(drop)
    }

    /// `XS_DIRECTORY` of `path`: the children's names, each followed by a NUL, in `out`.
    pub fn directory(&mut self, path: &str, out: &mut [u8]) -> Result<usize, XsError> {
        self.request(XS_DIRECTORY, &[path.as_bytes(), b"\0"], out)
    }

    /// One request of type `kind` and its answer (length of the body in `out`).
    fn request(&mut self, kind: u32, payload: &[&[u8]], out: &mut [u8]) -> Result<usize, XsError> {
        self.send(kind, payload)?;
        let mut skipped = 0;
        let (answer, len) = loop {
            let mut header = [0u8; HEADER];
            self.take(&mut header)?;
            let word = |i: usize| {
                u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]])
            };
            let (answer, req_id, len) = (word(0), word(4), word(12) as usize);
            // xs_wire.h: no payload is larger than XENSTORE_PAYLOAD_MAX.
            if len > PAYLOAD_MAX {
                return Err(XsError::CorruptRing);
            }
            if answer != XS_WATCH_EVENT && req_id == self.req_id {
                break (answer, len);
            }
            self.skip(len)?;
            skipped += 1;
            if skipped > MAX_SKIPPED {
                return Err(XsError::NoAnswer);
            }
        };
        if answer == XS_ERROR {
            // The error's name (e.g. "ENOENT\0"), cut to 8 bytes.
            let mut e = [0u8; 8];
            let k = len.min(8);
            self.take(&mut e[..k])?;
            self.skip(len - k)?;
            return Err(XsError::Error(e));
        }
        if len > out.len() {
            self.skip(len)?;
            return Err(XsError::TooLong);
        }
        self.take(&mut out[..len])?;
        if answer == kind {
            Ok(len)
        } else {
            Err(XsError::Unexpected(answer))
        }
    }
}

impl core::fmt::Display for XsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            XsError::TooLong => f.write_str("request or answer too long"),
            XsError::NoAnswer => f.write_str("xenstored did not answer"),
            XsError::CorruptRing => f.write_str("inconsistent ring indices"),
            XsError::Error(e) => {
                let n = e.iter().position(|&b| b == 0).unwrap_or(e.len());
                write!(
                    f,
                    "xenstored error {}",
                    core::str::from_utf8(&e[..n]).unwrap_or("?")
                )
            }
            XsError::Unexpected(k) => write!(f, "answer of type {} instead", k),
        }
    }
}
