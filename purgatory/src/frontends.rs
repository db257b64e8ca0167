//! The crashed kernel's frontends, handed back for a Linux crash kernel. At a panic nothing
//! closed them: each is still Connected, its backend still maps the old ring and persistent
//! grants, and a PV Linux's xenbus only resets frontends it finds Connected or Closed as an
//! HVM guest (`xenbus_reset_state()`), so the crash kernel would find no disk. The purgatory
//! does what that function does for every `device/<type>/<id>` in Connected or Closed:
//! frontend Closing, backend Closing; frontend Closed, backend Closed; frontend Initialising,
//! backend InitWait. The backend has then unmapped the old grants before any frame changes
//! hands. A backend that does not answer is named and left (the crash kernel may then miss
//! that device); a failed mapping hypercall ends the handover.

use crate::failure::Failure;
use crate::frames::Ctx;
use crate::rings::Rings;
use core::fmt::Write;
use guestrt::xenstore::{Xenstore, XsError};
use xenpv::blkif::state::{CLOSED, CLOSING, CONNECTED, INITIALISING, INIT_WAIT};

/// Reads of a backend's state before it counts as not answering (each read is a round trip
/// to xenstored with yields in between).
const MAX_POLLS: u32 = 20_000;

/// A xenstore path, formatted without an allocator.
struct Path {
    buf: [u8; 128],
    len: usize,
}

impl Path {
    fn new(args: core::fmt::Arguments<'_>) -> Option<Path> {
        let mut p = Path {
            buf: [0; 128],
            len: 0,
        };
        p.write_fmt(args).ok()?;
        Some(p)
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Write for Path {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// How many frontends were reset, and how many were left as they were.
#[derive(Default)]
pub struct Reset {
    pub reset: u32,
    pub failed: u32,
}

/// Resets every frontend of the domain (see the module comment).
pub fn reset_all(c: &mut Ctx, rings: &Rings) -> Result<Reset, Failure> {
    let va = c.scratch_map(rings.store_mfn)? as u64;
    // SAFETY: `va` maps the domain's xenstore ring page (the old start_info's store_mfn,
    // checked by `rings::find`) writable in the scratch slot, which nothing else uses until
    // this exchange ends; no kernel uses the ring now.
    let mut xs = unsafe { Xenstore::new(va, rings.store_port) };
    let mut done = Reset::default();
    let mut types = [0u8; 256];
    let n = match xs.directory("device", &mut types) {
        Ok(n) => n,
        Err(e) => {
            say!("purgatory: no frontends reset: the domain's device directory: {e}");
            0
        }
    };
    for kind in names(&types[..n]) {
        let Some(dir) = Path::new(format_args!("device/{kind}")) else {
            continue;
        };
        let mut ids = [0u8; 512];
        let Ok(m) = xs.directory(dir.as_str(), &mut ids) else {
            continue;
        };
        for id in names(&ids[..m]) {
            let Some(fe) = Path::new(format_args!("device/{kind}/{id}")) else {
                continue;
            };
            match reset_one(&mut xs, &fe) {
                Ok(true) => done.reset += 1,
                Ok(false) => {}
                Err(why) => {
                    done.failed += 1;
                    say!("purgatory: frontend {} left as it was: {why}", fe.as_str());
                }
            }
        }
    }
    c.hypercalls += xs.hypercalls();
    c.scratch_unmap()?;
    say!(
        "purgatory: {} frontends of the crashed kernel reset (backend InitWait, old grants unmapped), {} left",
        done.reset,
        done.failed
    );
    Ok(done)
}

/// The NUL-separated names of an `XS_DIRECTORY` answer.
fn names(list: &[u8]) -> impl Iterator<Item = &str> {
    list.split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .filter_map(|n| core::str::from_utf8(n).ok())
}

/// Why one frontend could not be reset.
enum Why {
    Store(&'static str, XsError),
    Path,
    NoAnswer { backend_state: u32, want: u32 },
}

impl core::fmt::Display for Why {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Why::Store(what, e) => write!(f, "{what}: {e}"),
            Why::Path => f.write_str("a xenstore path longer than 128 bytes"),
            Why::NoAnswer {
                backend_state,
                want,
            } => write!(
                f,
                "its backend stayed in state {backend_state} ({MAX_POLLS} reads), state {want} wanted"
            ),
        }
    }
}

/// Resets frontend `fe` if it is Connected or Closed (Linux's rule); `Ok(false)` if it needs
/// nothing.
fn reset_one(xs: &mut Xenstore, fe: &Path) -> Result<bool, Why> {
    let fe_state = match read_state(xs, fe, "state") {
        Ok(s) => s,
        // Not a device (e.g. device/suspend/event-channel has no state).
        Err(XsError::Error(e)) if e.starts_with(b"ENOENT") => return Ok(false),
        Err(e) => return Err(Why::Store("frontend state", e)),
    };
    if fe_state != CONNECTED && fe_state != CLOSED {
        return Ok(false);
    }
    let mut be = [0u8; 128];
    let path = Path::new(format_args!("{}/backend", fe.as_str())).ok_or(Why::Path)?;
    let len = xs
        .read(path.as_str(), &mut be)
        .map_err(|e| Why::Store("backend path", e))?;
    let be = core::str::from_utf8(&be[..len]).map_err(|_| Why::Path)?;
    let be = Path::new(format_args!("{be}")).ok_or(Why::Path)?;
    let mut now = read_state(xs, &be, "state").map_err(|e| Why::Store("backend state", e))?;
    // Linux's xenbus_reset_frontend(): each step answered before the next.
    if now == CONNECTED {
        set_state(xs, fe, CLOSING)?;
        now = wait(xs, &be, &[CLOSING, CLOSED], CLOSING)?;
    }
    if now == CLOSING {
        set_state(xs, fe, CLOSED)?;
        now = wait(xs, &be, &[CLOSED], CLOSED)?;
    }
    if now == CLOSED {
        set_state(xs, fe, INITIALISING)?;
        wait(xs, &be, &[INIT_WAIT], INIT_WAIT)?;
    }
    Ok(true)
}

fn set_state(xs: &mut Xenstore, fe: &Path, s: u32) -> Result<(), Why> {
    let path = Path::new(format_args!("{}/state", fe.as_str())).ok_or(Why::Path)?;
    let mut v = [0u8; 2];
    v[0] = b'0' + s as u8;
    xs.write(path.as_str(), &v[..1])
        .map_err(|e| Why::Store("writing the frontend state", e))
}

fn wait(xs: &mut Xenstore, be: &Path, want: &[u32], named: u32) -> Result<u32, Why> {
    let mut last = 0;
    for _ in 0..MAX_POLLS {
        last = read_state(xs, be, "state").map_err(|e| Why::Store("backend state", e))?;
        if want.contains(&last) {
            return Ok(last);
        }
        let _ = xenpv::hypercall::sched_yield();
    }
    Err(Why::NoAnswer {
        backend_state: last,
        want: named,
    })
}

/// A node holding a xenbus state number (absent or unreadable reads as an error).
fn read_state(xs: &mut Xenstore, dir: &Path, node: &str) -> Result<u32, XsError> {
    let mut path = Path {
        buf: [0; 128],
        len: 0,
    };
    if write!(path, "{}/{node}", dir.as_str()).is_err() {
        return Err(XsError::TooLong);
    }
    let mut v = [0u8; 16];
    let n = xs.read(path.as_str(), &mut v)?;
    Ok(v[..n]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u32, |a, &b| {
            a.saturating_mul(10).saturating_add((b - b'0') as u32)
        }))
}
