//! A minimal, polled Xen block frontend (xen/include/public/io/blkif.h, io/xenbus.h) for the
//! capture kernel and the test kernels: one vbd, one one-page ring, direct requests of up to
//! 11 granted pages, or indirect requests of up to the whole pool (176 pages) where the
//! backend offers `feature-max-indirect-segments`, persistent grants asked for (the pool's
//! pages stay granted), events masked (the backend's notifications are never needed: the
//! ring's `rsp_prod` is polled with `sched_yield` in between, which also lets dom0's blkback
//! run on a shared CPU).
//!
//! Connecting follows Linux's xenbus frontend, including its reset of a backend that is still
//! connected to a previous kernel's ring (a crashed kernel never closed its blkfront): frontend
//! Closing, backend Closing or Closed; frontend Closed, backend Closed; frontend Initialising,
//! backend InitWait; then the normal handshake (ring-ref, event-channel, protocol, Initialised;
//! backend Connected; frontend Connected).
//!
//! The ring page, the data pages and the grant-table window are pages of this kernel's bss:
//! one [`Blkfront`] at a time. Dropping it does not close the device (as a crash would not);
//! the next [`Blkfront::connect`] resets the backend.

use crate::report::Why;
use crate::shared;
use crate::view::{self, Region};
use crate::xenstore::{Xenstore, XsError};
use core::fmt;
use core::sync::atomic::{fence, AtomicBool, AtomicU16, Ordering};
use xenpv::blkif::{
    self, state, BlkifRequest, BlkifRequestIndirect, BlkifResponse, BlkifSegment, SringHeader,
    MAX_SEGMENTS, RING_SIZE, SECTOR_SIZE, SEGMENTS_PER_INDIRECT_PAGE,
};
use xenpv::{gnttabop, gtf, hypercall, pte, uvmf, GrantEntryV1, StartInfo, XenError, PAGE_SIZE};

/// Data pages granted to the backend: one batch of requests (16 requests of 11 pages).
const POOL_PAGES: usize = BATCH_REQUESTS * MAX_SEGMENTS;
/// Pages one [`Blkfront::write_pages`] call takes at most: the pool.
pub const BATCH_PAGES: usize = POOL_PAGES;
/// Requests in one batch: fits the ring and the answered-request mask.
const BATCH_REQUESTS: usize = 16;
const _: () = assert!(BATCH_REQUESTS <= RING_SIZE as usize && BATCH_REQUESTS <= 32);
/// Pages of segments for indirect requests: one per request of a batch (a request never
/// needs more: it carries at most the pool, fewer segments than one page holds).
const INDIRECT_PAGES: usize = BATCH_REQUESTS;
/// Most segments one indirect request carries here.
const MAX_INDIRECT_SEGMENTS: usize = POOL_PAGES;
const _: () = assert!(MAX_INDIRECT_SEGMENTS <= SEGMENTS_PER_INDIRECT_PAGE);
// With more than MAX_SEGMENTS per indirect request a batch needs at most BATCH_REQUESTS.
const _: () = assert!(POOL_PAGES.div_ceil(MAX_SEGMENTS + 1) <= INDIRECT_PAGES);
/// Entries in one v1 grant-table frame: every reference used here lies in one frame (in frame
/// 0, past the toolstack's reserved ones: the console and xenstore rings).
const ENTRIES_PER_FRAME: u32 = (PAGE_SIZE / 8) as u32;
/// Grant-table frames looked at for one with room: Xen's default limit for a domU is 64
/// (`gnttab_max_frames`).
const MAX_GRANT_FRAMES: usize = 64;
const _: () = assert!(
    gnttabop::NR_RESERVED_ENTRIES + 1 + (POOL_PAGES + INDIRECT_PAGES) as u32 <= ENTRIES_PER_FRAME
);
/// Sectors of a data page.
const PAGE_SECTORS: u64 = PAGE_SIZE / SECTOR_SIZE;
/// Bound of each xenbus state wait and of each batch of requests.
const STATE_TIMEOUT_NS: u64 = 20_000_000_000;
const IO_TIMEOUT_NS: u64 = 30_000_000_000;

#[repr(C, align(4096))]
struct Page([u8; PAGE_SIZE as usize]);

#[repr(C, align(4096))]
struct Pool([Page; POOL_PAGES]);

/// The shared ring page.
static mut RING: Page = Page([0; PAGE_SIZE as usize]);
/// A bss page whose L1 entry is pointed at the grant-table frame in use while connected.
static mut GRANT_WINDOW: Page = Page([0; PAGE_SIZE as usize]);
/// The granted data pages.
static mut POOL: Pool = Pool([const { Page([0; PAGE_SIZE as usize]) }; POOL_PAGES]);
#[repr(C, align(4096))]
struct Indirect([[BlkifSegment; SEGMENTS_PER_INDIRECT_PAGE]; INDIRECT_PAGES]);
/// The granted pages of indirect requests' segments.
static mut INDIRECT: Indirect = Indirect(
    [[BlkifSegment {
        gref: 0,
        first_sect: 0,
        last_sect: 0,
        _pad: 0,
    }; SEGMENTS_PER_INDIRECT_PAGE]; INDIRECT_PAGES],
);
/// Whether a [`Blkfront`] owns the pages above.
static IN_USE: AtomicBool = AtomicBool::new(false);

/// A xenstore path or value (longer ones are cut and shown with `...`).
#[derive(Clone, Copy)]
pub struct Text {
    buf: [u8; 128],
    len: usize,
    cut: bool,
}

impl Text {
    fn new(parts: &[&[u8]]) -> Self {
        let mut t = Text {
            buf: [0; 128],
            len: 0,
            cut: false,
        };
        for p in parts {
            for &b in *p {
                if t.len < t.buf.len() {
                    t.buf[t.len] = b;
                    t.len += 1;
                } else {
                    t.cut = true;
                }
            }
        }
        t
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<non-utf8>")
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.cut {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// Why connecting or a transfer failed.
#[derive(Clone, Copy)]
pub enum BlkError {
    /// Another [`Blkfront`] owns the ring and data pages.
    Busy,
    /// A xenstore request on `path` failed.
    Xenstore { path: Text, err: XsError },
    /// `device/vbd` lists no device (or not the one asked for).
    NoVbd(Option<u32>),
    /// A xenstore node holds something this frontend cannot use.
    BadValue { path: Text, value: Text },
    /// The backend did not reach `want` in time; `seen` is its last state.
    StateTimeout {
        path: Text,
        want: &'static str,
        seen: u32,
    },
    /// A hypercall failed.
    Hypercall { call: &'static str, err: XenError },
    /// The grant table is not v1.
    GrantVersion(u32),
    /// No grant-table frame has enough entries no backend maps (a previous kernel's grants
    /// still in use are left alone), and the table cannot grow: `free` in the roomiest.
    GrantsBusy { free: u32, need: u32 },
    /// A page of this kernel is outside the initial mapping or its MFN does not fit a v1
    /// grant entry.
    Frame { va: u64 },
    /// A transfer's length is not a whole number of sectors, or it runs past the disk's end.
    Range {
        sector: u64,
        len: usize,
        sectors: u64,
    },
    /// The backend answered a request with an error status.
    Io {
        op: &'static str,
        sector: u64,
        status: i16,
    },
    /// The backend answered a request that is not outstanding (or twice), or the ring's
    /// indices are inconsistent.
    BadResponse { id: u64, rsp_prod: u32 },
    /// Not every request of a batch was answered in time.
    IoTimeout {
        op: &'static str,
        sector: u64,
        answered: u32,
        sent: u32,
    },
}

impl fmt::Display for BlkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlkError::Busy => f.write_str("another blkfront owns the ring and data pages"),
            BlkError::Xenstore { path, err } => write!(f, "xenstore {}: {}", path, err),
            BlkError::NoVbd(None) => f.write_str("device/vbd lists no block device"),
            BlkError::NoVbd(Some(id)) => write!(f, "device/vbd lists no device {}", id),
            BlkError::BadValue { path, value } => write!(f, "{} holds {:?}", path, value.as_str()),
            BlkError::StateTimeout { path, want, seen } => write!(
                f,
                "{} is {} ({}) after {} s, waited for {}",
                path,
                state::name(*seen),
                seen,
                STATE_TIMEOUT_NS / 1_000_000_000,
                want
            ),
            BlkError::Hypercall { call, err } => write!(f, "{}: {}", call, err),
            BlkError::GrantVersion(v) => write!(f, "the grant table is v{}, not v1", v),
            BlkError::GrantsBusy { free, need } => write!(
                f,
                "no grant-table frame has {} entries no backend maps (at most {}), and the table \
                 cannot grow",
                need, free
            ),
            BlkError::Frame { va } => write!(
                f,
                "page {:#x} is outside the initial mapping or above a v1 grant's frame range",
                va
            ),
            BlkError::Range {
                sector,
                len,
                sectors,
            } => write!(
                f,
                "{} bytes at sector {}: not whole 512-byte sectors within the disk's {}",
                len, sector, sectors
            ),
            BlkError::Io { op, sector, status } => write!(
                f,
                "{} at sector {}: backend status {}{}",
                op,
                sector,
                status,
                match *status {
                    blkif::RSP_ERROR => " (BLKIF_RSP_ERROR)",
                    blkif::RSP_EOPNOTSUPP => " (BLKIF_RSP_EOPNOTSUPP)",
                    _ => "",
                }
            ),
            BlkError::BadResponse { id, rsp_prod } => write!(
                f,
                "response id {} is not outstanding (rsp_prod {})",
                id, rsp_prod
            ),
            BlkError::IoTimeout {
                op,
                sector,
                answered,
                sent,
            } => write!(
                f,
                "{} from sector {}: {} of {} requests answered after {} s",
                op,
                sector,
                answered,
                sent,
                IO_TIMEOUT_NS / 1_000_000_000
            ),
        }
    }
}

impl From<BlkError> for Why {
    fn from(e: BlkError) -> Why {
        Why::new(format_args!("{}", e))
    }
}

/// What the backend published when it connected.
#[derive(Clone, Copy, Debug)]
pub struct DiskInfo {
    /// The vbd's id (`device/vbd/<id>`).
    pub id: u32,
    pub backend_id: u16,
    /// Disk size in 512-byte sectors (`sectors`).
    pub sectors: u64,
    /// The disk's logical sector size (`sector-size`).
    pub sector_size: u32,
    /// Whether the backend was found connected to a previous ring and reset.
    pub was_reset: bool,
    /// The backend state found before connecting.
    pub initial_backend_state: u32,
    pub port: u32,
    /// The ring page's grant reference (the first entry of grant frame 0 past the reserved
    /// ones that no backend uses).
    pub ring_ref: u32,
    /// Segments per request: [`MAX_SEGMENTS`] (direct requests), or more with indirect ones
    /// (the backend's `feature-max-indirect-segments`, at most the pool).
    pub segments: u32,
    /// The backend's `feature-max-indirect-segments` (0: not offered).
    pub max_indirect_segments: u32,
    /// The backend offers `feature-persistent` (this frontend asks for it): it keeps the
    /// pool's pages mapped for the whole connection.
    pub persistent: bool,
}

/// A connected block device.
pub struct Blkfront {
    info: DiskInfo,
    sh: &'static xenpv::SharedInfo,
    frontend: Text,
    req_prod: u32,
    rsp_cons: u32,
    grants: Grants,
}

/// The grant references of the ring, of each data page and of each indirect page.
#[derive(Clone, Copy)]
struct Grants {
    ring: u32,
    pool: [u32; POOL_PAGES],
    indirect: [u32; INDIRECT_PAGES],
}

/// Where this kernel's pages are: machine frame of a virtual address in the initial mapping.
fn mfn_of(si: &StartInfo, region: &Region, va: u64) -> Result<u64, BlkError> {
    let pfn = region.va_pfn(va).ok_or(BlkError::Frame { va })?;
    let mfn = *view::p2m(si)
        .get(pfn as usize)
        .ok_or(BlkError::Frame { va })?;
    if mfn > u32::MAX as u64 {
        return Err(BlkError::Frame { va });
    }
    Ok(mfn)
}

fn hc<T>(call: &'static str, r: Result<T, XenError>) -> Result<T, BlkError> {
    r.map_err(|err| BlkError::Hypercall { call, err })
}

impl Blkfront {
    /// Finds the first vbd, resets its backend if a previous ring is still connected, and
    /// connects: the disk is ready for [`read`](Self::read) and [`write`](Self::write).
    pub fn connect(xs: &mut Xenstore, si: &StartInfo, region: &Region) -> Result<Self, BlkError> {
        Self::connect_to(xs, si, region, None)
    }

    /// [`connect`](Self::connect) to vbd `vbd` (`device/vbd/<vbd>`, e.g. 51728 for `xvdb`),
    /// or the first one listed when None.
    pub fn connect_to(
        xs: &mut Xenstore,
        si: &StartInfo,
        region: &Region,
        vbd: Option<u32>,
    ) -> Result<Self, BlkError> {
        if IN_USE.swap(true, Ordering::AcqRel) {
            return Err(BlkError::Busy);
        }
        let r = Self::connect_owned(xs, si, region, vbd);
        if r.is_err() {
            IN_USE.store(false, Ordering::Release);
        }
        r
    }

    fn connect_owned(
        xs: &mut Xenstore,
        si: &StartInfo,
        region: &Region,
        vbd: Option<u32>,
    ) -> Result<Self, BlkError> {
        let sh = hc("map shared_info", shared::map_shared_info(si))?;
        let (id, frontend) = find_vbd(xs, vbd)?;
        let backend = read_text(xs, &Text::new(&[frontend.as_str().as_bytes(), b"/backend"]))?;
        let backend_id = read_num(
            xs,
            &Text::new(&[frontend.as_str().as_bytes(), b"/backend-id"]),
        )?;
        let backend_id = u16::try_from(backend_id).map_err(|_| BlkError::BadValue {
            path: Text::new(&[frontend.as_str().as_bytes(), b"/backend-id"]),
            value: Text::new(&[b"out of range"]),
        })?;
        let be_state = Text::new(&[backend.as_str().as_bytes(), b"/state"]);
        let fe_state = Text::new(&[frontend.as_str().as_bytes(), b"/state"]);
        let bus = Bus {
            sh,
            be_state,
            fe_state,
        };
        let initial = bus.backend(xs)?;
        let was_reset = !matches!(initial, state::INITIALISING | state::INIT_WAIT);
        if was_reset {
            bus.reset(xs, initial)?;
        }
        bus.wait(xs, &[state::INIT_WAIT], "InitWait")?;
        let (grants, port) = setup_ring(si, region, backend_id)?;
        let node = |leaf: &[u8]| Text::new(&[frontend.as_str().as_bytes(), leaf]);
        let mut num = [0u8; 20];
        write_node(
            xs,
            &node(b"/ring-ref"),
            fmt_u64(grants.ring as u64, &mut num),
        )?;
        write_node(xs, &node(b"/event-channel"), fmt_u64(port as u64, &mut num))?;
        write_node(xs, &node(b"/protocol"), blkif::PROTOCOL_X86_64.as_bytes())?;
        // The pool's pages stay granted for the whole connection: blkback may keep them
        // mapped (persistent grants) instead of mapping and unmapping each segment.
        write_node(xs, &node(b"/feature-persistent"), b"1")?;
        bus.set(xs, state::INITIALISED)?;
        bus.wait(xs, &[state::CONNECTED], "Connected")?;
        let be_node = |leaf: &[u8]| Text::new(&[backend.as_str().as_bytes(), leaf]);
        let sectors = read_num(xs, &be_node(b"/sectors"))?;
        let sector_size = read_num(xs, &be_node(b"/sector-size"))?;
        if sector_size == 0 || !sector_size.is_multiple_of(SECTOR_SIZE) || sector_size > PAGE_SIZE {
            return Err(BlkError::BadValue {
                path: be_node(b"/sector-size"),
                value: Text::new(&[fmt_u64(sector_size, &mut num)]),
            });
        }
        // Optional: absent (or unreadable) means direct requests only.
        let max_indirect = read_num(xs, &be_node(b"/feature-max-indirect-segments"))
            .ok()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0);
        let segments = if max_indirect as usize > MAX_SEGMENTS {
            max_indirect.min(MAX_INDIRECT_SEGMENTS as u32)
        } else {
            MAX_SEGMENTS as u32
        };
        let persistent = read_num(xs, &be_node(b"/feature-persistent")).is_ok_and(|v| v == 1);
        bus.set(xs, state::CONNECTED)?;
        Ok(Blkfront {
            info: DiskInfo {
                id,
                backend_id,
                sectors,
                sector_size: sector_size as u32,
                was_reset,
                initial_backend_state: initial,
                port,
                ring_ref: grants.ring,
                segments,
                max_indirect_segments: max_indirect,
                persistent,
            },
            sh,
            frontend,
            req_prod: 0,
            rsp_cons: 0,
            grants,
        })
    }

    pub fn info(&self) -> DiskInfo {
        self.info
    }

    /// The frontend's xenstore directory (`device/vbd/<id>`).
    pub fn frontend_path(&self) -> &str {
        self.frontend.as_str()
    }

    /// Writes `data` (whole 512-byte sectors) from 512-byte sector `sector` on.
    pub fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BlkError> {
        self.check_range(sector, data.len())?;
        for (i, chunk) in data.chunks(POOL_PAGES * PAGE_SIZE as usize).enumerate() {
            let at = sector + (i * POOL_PAGES) as u64 * PAGE_SECTORS;
            for (p, bytes) in chunk.chunks(PAGE_SIZE as usize).enumerate() {
                pool_page(p)[..bytes.len()].copy_from_slice(bytes);
            }
            self.batch(blkif::OP_WRITE, at, chunk.len())?;
        }
        Ok(())
    }

    /// Writes `pages` whole pages (at most [`BATCH_PAGES`]) from sector
    /// `sector` on, `fill` putting page `i`'s bytes into the buffer it is given (a data page:
    /// no copy in between). Stops at `fill`'s first error, writing nothing.
    pub fn write_pages<E: From<BlkError>>(
        &mut self,
        sector: u64,
        pages: usize,
        mut fill: impl FnMut(usize, &mut [u8; PAGE_SIZE as usize]) -> Result<(), E>,
    ) -> Result<(), E> {
        let len = pages * PAGE_SIZE as usize;
        if pages > POOL_PAGES {
            return Err(BlkError::Range {
                sector,
                len,
                sectors: self.info.sectors,
            }
            .into());
        }
        self.check_range(sector, len)?;
        for p in 0..pages {
            fill(p, pool_page(p))?;
        }
        Ok(self.batch(blkif::OP_WRITE, sector, len)?)
    }

    /// Reads whole 512-byte sectors from sector `sector` on into `buf`.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlkError> {
        self.check_range(sector, buf.len())?;
        for (i, chunk) in buf.chunks_mut(POOL_PAGES * PAGE_SIZE as usize).enumerate() {
            let at = sector + (i * POOL_PAGES) as u64 * PAGE_SECTORS;
            self.batch(blkif::OP_READ, at, chunk.len())?;
            for (p, bytes) in chunk.chunks_mut(PAGE_SIZE as usize).enumerate() {
                let n = bytes.len();
                bytes.copy_from_slice(&pool_page(p)[..n]);
            }
        }
        Ok(())
    }

    fn check_range(&self, sector: u64, len: usize) -> Result<(), BlkError> {
        let n = len as u64 / SECTOR_SIZE;
        let fits = sector
            .checked_add(n)
            .is_some_and(|end| end <= self.info.sectors);
        if !(len as u64).is_multiple_of(SECTOR_SIZE) || !fits {
            return Err(BlkError::Range {
                sector,
                len,
                sectors: self.info.sectors,
            });
        }
        Ok(())
    }

    /// One batch: `len` bytes (at most the pool) in the pool pages, to or from `sector`:
    /// requests of [`DiskInfo::segments`] pages each, indirect when that is more than
    /// [`MAX_SEGMENTS`].
    fn batch(&mut self, op: u8, sector: u64, len: usize) -> Result<(), BlkError> {
        let pages = len.div_ceil(PAGE_SIZE as usize);
        let per = self.info.segments as usize;
        let mut sent = 0u32;
        for (r, first) in (0..pages).step_by(per).enumerate() {
            let count = per.min(pages - first);
            let segment = |s: usize| {
                let page = first + s;
                let bytes = (len - page * PAGE_SIZE as usize).min(PAGE_SIZE as usize) as u64;
                BlkifSegment {
                    gref: self.grants.pool[page],
                    first_sect: 0,
                    last_sect: (bytes / SECTOR_SIZE - 1) as u8,
                    _pad: 0,
                }
            };
            // blkif_vdev_t is 16 bits; Linux's blkfront puts the vbd id in it the same way.
            let handle = self.info.id as u16;
            let sector_number = sector + first as u64 * PAGE_SECTORS;
            if per > MAX_SEGMENTS {
                let segments = indirect_page(r);
                for (s, seg) in segments[..count].iter_mut().enumerate() {
                    *seg = segment(s);
                }
                let mut indirect_grefs = [0; blkif::MAX_INDIRECT_PAGES];
                indirect_grefs[0] = self.grants.indirect[r];
                self.push_indirect(&BlkifRequestIndirect {
                    operation: blkif::OP_INDIRECT,
                    indirect_op: op,
                    nr_segments: count as u16,
                    id: r as u64,
                    sector_number,
                    handle,
                    indirect_grefs,
                    ..Default::default()
                });
            } else {
                let mut req = BlkifRequest {
                    operation: op,
                    nr_segments: count as u8,
                    handle,
                    id: r as u64,
                    sector_number,
                    ..Default::default()
                };
                for s in 0..count {
                    req.seg[s] = segment(s);
                }
                self.push(&req);
            }
            sent += 1;
        }
        // The requests before the index that publishes them.
        fence(Ordering::SeqCst);
        ring_header().req_prod.write(self.req_prod);
        fence(Ordering::SeqCst);
        hc("EVTCHNOP_send", hypercall::evtchn_send(self.info.port))?;
        self.collect(op, sector, sent)
    }

    fn push(&mut self, req: &BlkifRequest) {
        let slot = entry_ptr(self.req_prod) as *mut BlkifRequest;
        // SAFETY: the slot lies in the ring page this value owns; the backend reads it only
        // after req_prod moves past it.
        unsafe { slot.write_volatile(*req) };
        self.req_prod = self.req_prod.wrapping_add(1);
    }

    fn push_indirect(&mut self, req: &BlkifRequestIndirect) {
        let slot = entry_ptr(self.req_prod) as *mut BlkifRequestIndirect;
        // SAFETY: as in `push`; the indirect form is the first 64 bytes of the 112-byte entry
        // (and 8-byte aligned, as every entry is).
        unsafe { slot.write_volatile(*req) };
        self.req_prod = self.req_prod.wrapping_add(1);
    }

    /// Waits for `sent` responses, each checked.
    fn collect(&mut self, op: u8, sector: u64, sent: u32) -> Result<(), BlkError> {
        let name = if op == blkif::OP_WRITE {
            "write"
        } else {
            "read"
        };
        let deadline = shared::system_time_ns(self.sh, 0) + IO_TIMEOUT_NS;
        let mut answered = 0u32;
        // Which requests were answered (a batch has at most 16).
        let mut seen = 0u32;
        let mut first_error = None;
        while answered < sent {
            let rsp_prod = ring_header().rsp_prod.read();
            fence(Ordering::SeqCst);
            if rsp_prod.wrapping_sub(self.rsp_cons) > RING_SIZE {
                return Err(BlkError::BadResponse {
                    id: u64::MAX,
                    rsp_prod,
                });
            }
            while self.rsp_cons != rsp_prod {
                let slot = entry_ptr(self.rsp_cons) as *const BlkifResponse;
                // SAFETY: the slot lies in the ring page; the backend wrote it before moving
                // rsp_prod past it.
                let rsp = unsafe { slot.read_volatile() };
                self.rsp_cons = self.rsp_cons.wrapping_add(1);
                if rsp.id >= sent as u64 || seen & (1 << rsp.id) != 0 {
                    return Err(BlkError::BadResponse {
                        id: rsp.id,
                        rsp_prod,
                    });
                }
                seen |= 1 << rsp.id;
                answered += 1;
                if rsp.status != blkif::RSP_OKAY && first_error.is_none() {
                    first_error = Some(BlkError::Io {
                        op: name,
                        sector: sector + rsp.id * u64::from(self.info.segments) * PAGE_SECTORS,
                        status: rsp.status,
                    });
                }
            }
            // Ask for a notification at the next response (harmless: events stay masked).
            ring_header().rsp_event.write(self.rsp_cons.wrapping_add(1));
            if answered == sent {
                break;
            }
            if shared::system_time_ns(self.sh, 0) > deadline {
                return Err(BlkError::IoTimeout {
                    op: name,
                    sector,
                    answered,
                    sent,
                });
            }
            let _ = hypercall::sched_yield();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Blkfront {
    /// Gives the pages back to the next [`Blkfront::connect`]; the device stays connected.
    fn drop(&mut self) {
        IN_USE.store(false, Ordering::Release);
    }
}

/// A volatile view of one ring-header index.
struct Index(*mut u32);

impl Index {
    fn read(&self) -> u32 {
        // SAFETY: points at an index of the ring page's header, shared with the backend.
        unsafe { self.0.read_volatile() }
    }
    fn write(&self, v: u32) {
        // SAFETY: as in `read`; the frontend owns req_prod and rsp_event.
        unsafe { self.0.write_volatile(v) }
    }
}

struct RingHeader {
    req_prod: Index,
    rsp_prod: Index,
    rsp_event: Index,
}

fn ring_va() -> u64 {
    core::ptr::addr_of_mut!(RING) as u64
}

fn ring_header() -> RingHeader {
    let base = ring_va();
    let at = |off: usize| Index((base + off as u64) as *mut u32);
    RingHeader {
        req_prod: at(core::mem::offset_of!(SringHeader, req_prod)),
        rsp_prod: at(core::mem::offset_of!(SringHeader, rsp_prod)),
        rsp_event: at(core::mem::offset_of!(SringHeader, rsp_event)),
    }
}

/// Address of ring entry `idx` (masked into the ring).
fn entry_ptr(idx: u32) -> u64 {
    ring_va()
        + core::mem::size_of::<SringHeader>() as u64
        + (idx % RING_SIZE) as u64 * blkif::ENTRY_SIZE as u64
}

/// Indirect page `i`'s segments.
fn indirect_page(i: usize) -> &'static mut [BlkifSegment; SEGMENTS_PER_INDIRECT_PAGE] {
    // SAFETY: only the one Blkfront (IN_USE) touches these pages, one reference at a time; the
    // backend reads a page only while a request naming it is outstanding, and they are
    // filled only between batches.
    unsafe { &mut (*core::ptr::addr_of_mut!(INDIRECT)).0[i] }
}

fn pool_page(p: usize) -> &'static mut [u8; PAGE_SIZE as usize] {
    // SAFETY: only the one Blkfront (IN_USE) touches the pool, one page reference at a time;
    // the backend accesses a page only while a request naming it is outstanding, and the
    // pages are filled or read only between batches.
    unsafe { &mut (*core::ptr::addr_of_mut!(POOL)).0[p].0 }
}

/// Resets the ring page (`SHARED_RING_INIT`), grants it and the data pages to the backend
/// and allocates the event channel; returns the references and the port.
fn setup_ring(si: &StartInfo, region: &Region, backend_id: u16) -> Result<(Grants, u32), BlkError> {
    match shared::grant_version() {
        Ok(1) => {}
        Ok(v) => return Err(BlkError::GrantVersion(v)),
        Err(err) => {
            return Err(BlkError::Hypercall {
                call: "GNTTABOP_get_version",
                err,
            })
        }
    }
    let window = core::ptr::addr_of_mut!(GRANT_WINDOW) as u64;
    let need = (1 + POOL_PAGES + INDIRECT_PAGES) as u32;
    let first_gref = grant_frame_with_room(window, need)?;
    let ring = ring_va();
    // SAFETY: the ring page belongs to this Blkfront; a backend still mapping it from a
    // previous connection has been reset to Closed (it unmapped the ring) before this runs.
    unsafe { core::ptr::write_bytes(ring as *mut u8, 0, PAGE_SIZE as usize) };
    let header = ring_header();
    // SHARED_RING_INIT: both events at 1.
    Index((ring + core::mem::offset_of!(SringHeader, req_event) as u64) as *mut u32).write(1);
    header.rsp_event.write(1);
    let mut frames = [mfn_of(si, region, ring)?; 1 + POOL_PAGES + INDIRECT_PAGES];
    for (p, mfn) in frames[1..1 + POOL_PAGES].iter_mut().enumerate() {
        *mfn = mfn_of(si, region, pool_page(p).as_ptr() as u64)?;
    }
    for (i, mfn) in frames[1 + POOL_PAGES..].iter_mut().enumerate() {
        *mfn = mfn_of(si, region, indirect_page(i).as_ptr() as u64)?;
    }
    let mut refs = [0u32; 1 + POOL_PAGES + INDIRECT_PAGES];
    let mut taken = 0usize;
    for gref in first_gref..first_gref - first_gref % ENTRIES_PER_FRAME + ENTRIES_PER_FRAME {
        if taken == refs.len() {
            break;
        }
        if grant(window, gref % ENTRIES_PER_FRAME, backend_id, frames[taken]) {
            refs[taken] = gref;
            taken += 1;
        }
    }
    if taken < refs.len() {
        return Err(BlkError::GrantsBusy {
            free: taken as u32,
            need: refs.len() as u32,
        });
    }
    let mut grants = Grants {
        ring: refs[0],
        pool: [0; POOL_PAGES],
        indirect: [0; INDIRECT_PAGES],
    };
    grants.pool.copy_from_slice(&refs[1..1 + POOL_PAGES]);
    grants.indirect.copy_from_slice(&refs[1 + POOL_PAGES..]);
    let port = hc(
        "EVTCHNOP_alloc_unbound",
        hypercall::evtchn_alloc_unbound(backend_id),
    )?;
    Ok((grants, port))
}

/// Maps a grant-table frame with at least `need` entries no backend maps at `window` and
/// returns its first usable reference. A previous kernel (the crashed one, whose backends are
/// still connected) may hold most of frame 0 and more with persistent grants, so the table
/// is grown by one frame where Xen allows (a new frame is all free), and otherwise the frames
/// it has are searched from the last.
fn grant_frame_with_room(window: u64, need: u32) -> Result<u32, BlkError> {
    let size = hc("GNTTABOP_query_size", hypercall::gnttab_query_size())?;
    let current = (size.nr_frames.max(1) as usize).min(MAX_GRANT_FRAMES);
    let limit = (size.max_nr_frames as usize).min(MAX_GRANT_FRAMES);
    let want = if current < limit {
        current + 1
    } else {
        current
    };
    let mut frames = [0u64; MAX_GRANT_FRAMES];
    let nr = hc(
        "GNTTABOP_setup_table",
        shared::setup_grant_frames(&mut frames[..want]),
    )?;
    let mut roomiest = 0;
    for f in (0..nr).rev() {
        // SAFETY: GRANT_WINDOW is a bss page nothing else references; while connected it maps
        // the grant frame chosen here (mapping another first is harmless: nothing holds a
        // pointer into it across this loop).
        hc("update_va_mapping(grant frame)", unsafe {
            hypercall::update_va_mapping(
                window,
                pte::make(frames[f], pte::L1_FLAGS | pte::D),
                uvmf::INVLPG,
            )
        })?;
        let first = if f == 0 {
            gnttabop::NR_RESERVED_ENTRIES
        } else {
            0
        };
        let free = (first..ENTRIES_PER_FRAME)
            .filter(|&e| !in_use(window, e))
            .count() as u32;
        if free >= need {
            return Ok(f as u32 * ENTRIES_PER_FRAME + first);
        }
        roomiest = roomiest.max(free);
    }
    Err(BlkError::GrantsBusy {
        free: roomiest,
        need,
    })
}

/// Whether a backend maps or copies through entry `e` of the frame mapped at `window`.
fn in_use(window: u64, e: u32) -> bool {
    let entry = (window + e as u64 * 8) as *mut GrantEntryV1;
    // SAFETY: `e` < 512 lies in the grant frame mapped at `window`; the flags word is 2-byte
    // aligned and only read atomically (Xen updates it atomically).
    let flags = unsafe { &*(core::ptr::addr_of_mut!((*entry).flags) as *const AtomicU16) };
    flags.load(Ordering::SeqCst) & (gtf::READING | gtf::WRITING) != 0
}

/// Offers frame `mfn` to `domid` read-write in entry `gref` of the grant frame mapped at
/// `window`, unless a backend maps or copies through that entry now (a previous kernel's
/// grant still in use, left alone): then false.
fn grant(window: u64, gref: u32, domid: u16, mfn: u64) -> bool {
    let entry = (window + gref as u64 * 8) as *mut GrantEntryV1;
    // SAFETY: `gref` < 512 lies in the grant frame mapped writable at `window`, and the flags
    // word is 2-byte aligned; Xen updates it atomically, so it is only changed atomically.
    let flags = unsafe { &*(core::ptr::addr_of_mut!((*entry).flags) as *const AtomicU16) };
    let old = flags.load(Ordering::SeqCst);
    // Revoke first: Xen takes no new mapping of an entry whose type is invalid, and a
    // backend that began using the entry meanwhile makes the exchange fail.
    if old & (gtf::READING | gtf::WRITING) != 0
        || flags
            .compare_exchange(old, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
    {
        return false;
    }
    // SAFETY: as above; Xen reads domid and frame only once the flags offer the entry,
    // and they are written last.
    unsafe {
        core::ptr::addr_of_mut!((*entry).domid).write_volatile(domid);
        core::ptr::addr_of_mut!((*entry).frame).write_volatile(mfn as u32);
    }
    fence(Ordering::SeqCst);
    flags.store(gtf::PERMIT_ACCESS, Ordering::SeqCst);
    true
}

/// The frontend's and backend's `state` nodes.
struct Bus {
    sh: &'static xenpv::SharedInfo,
    be_state: Text,
    fe_state: Text,
}

impl Bus {
    fn backend(&self, xs: &mut Xenstore) -> Result<u32, BlkError> {
        let v = read_num(xs, &self.be_state)?;
        u32::try_from(v).map_err(|_| BlkError::BadValue {
            path: self.be_state,
            value: Text::new(&[b"out of range"]),
        })
    }

    fn set(&self, xs: &mut Xenstore, s: u32) -> Result<(), BlkError> {
        let mut num = [0u8; 20];
        write_node(xs, &self.fe_state, fmt_u64(s as u64, &mut num))
    }

    /// Polls the backend's state until it is one of `want` (bounded); returns it.
    fn wait(&self, xs: &mut Xenstore, want: &[u32], name: &'static str) -> Result<u32, BlkError> {
        let deadline = shared::system_time_ns(self.sh, 0) + STATE_TIMEOUT_NS;
        loop {
            let seen = self.backend(xs)?;
            if want.contains(&seen) {
                return Ok(seen);
            }
            if shared::system_time_ns(self.sh, 0) > deadline {
                return Err(BlkError::StateTimeout {
                    path: self.be_state,
                    want: name,
                    seen,
                });
            }
            for _ in 0..16 {
                let _ = hypercall::sched_yield();
            }
        }
    }

    /// Linux's xenbus frontend reset of a backend found in `seen` (not Initialising or
    /// InitWait): Closing, Closed, Initialising, each answered by the backend.
    fn reset(&self, xs: &mut Xenstore, seen: u32) -> Result<(), BlkError> {
        let mut now = seen;
        if !matches!(now, state::CLOSING | state::CLOSED) {
            self.set(xs, state::CLOSING)?;
            now = self.wait(xs, &[state::CLOSING, state::CLOSED], "Closing or Closed")?;
        }
        if now != state::CLOSED {
            self.set(xs, state::CLOSED)?;
            self.wait(xs, &[state::CLOSED], "Closed")?;
        }
        self.set(xs, state::INITIALISING)?;
        self.wait(xs, &[state::INIT_WAIT], "InitWait")?;
        Ok(())
    }
}

/// Device `want` (or the first) under `device/vbd`: its id and directory.
fn find_vbd(xs: &mut Xenstore, want: Option<u32>) -> Result<(u32, Text), BlkError> {
    let mut list = [0u8; 256];
    let n = xs
        .directory("device/vbd", &mut list)
        .map_err(|err| BlkError::Xenstore {
            path: Text::new(&[b"device/vbd"]),
            err,
        })?;
    for name in list[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let id = crate::parse_u64(name)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or(BlkError::BadValue {
                path: Text::new(&[b"device/vbd"]),
                value: Text::new(&[name]),
            })?;
        if want.is_none_or(|w| w == id) {
            return Ok((id, Text::new(&[b"device/vbd/", name])));
        }
    }
    Err(BlkError::NoVbd(want))
}

/// A path that did not fit [`Text`] would name another node: refused.
fn whole(path: &Text) -> Result<(), BlkError> {
    if path.cut {
        return Err(BlkError::BadValue {
            path: *path,
            value: Text::new(&[b"(the path is longer than 128 bytes)"]),
        });
    }
    Ok(())
}

fn read_text(xs: &mut Xenstore, path: &Text) -> Result<Text, BlkError> {
    whole(path)?;
    let mut buf = [0u8; 128];
    let n = xs
        .read(path.as_str(), &mut buf)
        .map_err(|err| BlkError::Xenstore { path: *path, err })?;
    Ok(Text::new(&[&buf[..n]]))
}

fn read_num(xs: &mut Xenstore, path: &Text) -> Result<u64, BlkError> {
    let value = read_text(xs, path)?;
    crate::parse_u64(value.as_str().trim().as_bytes())
        .ok_or(BlkError::BadValue { path: *path, value })
}

fn write_node(xs: &mut Xenstore, path: &Text, value: &[u8]) -> Result<(), BlkError> {
    whole(path)?;
    xs.write(path.as_str(), value)
        .map_err(|err| BlkError::Xenstore { path: *path, err })
}

/// `v` in decimal, in `buf`.
fn fmt_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}
