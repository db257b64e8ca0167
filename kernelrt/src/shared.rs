//! The shared_info page and Xen system time, for the kernels that watch event channels and
//! timers.

use xenpv::{hypercall, pte, uvmf, SharedInfo, StartInfo, VcpuTimeInfo, PAGE_SHIFT, PAGE_SIZE};

#[repr(C, align(4096))]
struct Page([u8; PAGE_SIZE as usize]);
/// The page whose L1 entry is pointed at the shared_info frame.
static mut SHARED_PAGE: Page = Page([0; PAGE_SIZE as usize]);

/// Maps the shared_info frame (`start_info.shared_info` is its machine address) over a page of
/// the kernel's bss and returns it.
pub fn map_shared_info(si: &StartInfo) -> Result<&'static SharedInfo, xenpv::XenError> {
    let va = core::ptr::addr_of_mut!(SHARED_PAGE) as u64;
    // SAFETY: SHARED_PAGE is a page-aligned bss page nothing else references; it maps the
    // domain's shared_info frame from now on (mapping it again is idempotent).
    unsafe {
        hypercall::update_va_mapping(
            va,
            pte::make(si.shared_info >> PAGE_SHIFT, pte::L1_FLAGS | pte::D),
            uvmf::INVLPG,
        )?;
        Ok(&*(va as *const SharedInfo))
    }
}

/// Xen system time of VCPU `vcpu` in nanoseconds: the record's `system_time` plus the TSC
/// ticks since `tsc_timestamp`, scaled as the record says (read under its version counter).
pub fn system_time_ns(sh: &SharedInfo, vcpu: usize) -> u64 {
    time_ns(&sh.vcpu_info[vcpu])
}

/// Xen system time from one `vcpu_info` (in shared_info, or wherever it was placed).
pub fn time_ns(info: &xenpv::VcpuInfo) -> u64 {
    let rec: *const VcpuTimeInfo = &info.time;
    loop {
        // SAFETY: `rec` points into a mapped vcpu_info; Xen updates it concurrently, which the
        // version protocol below detects.
        let (v0, t) = unsafe { ((*rec).version, core::ptr::read_volatile(rec)) };
        core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
        // SAFETY: as above.
        let v1 = unsafe { core::ptr::read_volatile(&(*rec).version) };
        if v0 != v1 || v0 & 1 != 0 {
            continue;
        }
        let mut delta = rdtsc().wrapping_sub(t.tsc_timestamp);
        if t.tsc_shift < 0 {
            delta >>= -t.tsc_shift as u32;
        } else {
            delta <<= t.tsc_shift as u32;
        }
        let ns = ((delta as u128 * t.tsc_to_system_mul as u128) >> 32) as u64;
        return t.system_time + ns;
    }
}

/// Whether event channel `port` is pending (2-level ABI).
pub fn pending(sh: &SharedInfo, port: u32) -> bool {
    let word: *const u64 = &sh.evtchn_pending[(port / 64) as usize];
    // SAFETY: reads one word of the mapped shared_info page that Xen updates concurrently.
    unsafe { core::ptr::read_volatile(word) & (1 << (port % 64)) != 0 }
}

/// Clears the pending bit of `port` (2-level ABI).
pub fn clear_pending(sh: &SharedInfo, port: u32) {
    let word = &sh.evtchn_pending[(port / 64) as usize] as *const u64
        as *const core::sync::atomic::AtomicU64;
    // SAFETY: the pending words are shared with Xen, which sets bits atomically; an atomic
    // and-not clears ours without losing others.
    unsafe { (*word).fetch_and(!(1 << (port % 64)), core::sync::atomic::Ordering::SeqCst) };
}

pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the time-stamp counter (PV guests may execute it).
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (hi as u64) << 32 | lo as u64
}

/// `EVTCHNOP_status` of one of this domain's ports.
pub fn port_status(port: u32) -> Result<xenpv::EvtchnStatus, xenpv::XenError> {
    hypercall::evtchn_status(port)
}

/// `EVTCHNOP_send` on a local port.
pub fn send(port: u32) -> Result<(), xenpv::XenError> {
    hypercall::evtchn_send(port)
}

/// The grant table's version (`GNTTABOP_get_version`).
pub fn grant_version() -> Result<u32, xenpv::XenError> {
    hypercall::gnttab_get_version()
}

/// A loopback interdomain pair (both ends in this domain), standing in for the xenstore or
/// console channel a domU has with dom0: returns (unbound end, bound end).
pub fn loopback_pair() -> Result<(u32, u32), xenpv::XenError> {
    let unbound = hypercall::evtchn_alloc_unbound(xenpv::DOMID_SELF)?;
    let bound = hypercall::evtchn_bind_interdomain(xenpv::DOMID_SELF, unbound)?;
    Ok((unbound, bound))
}

/// The MFNs of this domain's grant-table frames (v1), setting up the first one if the domain
/// has none yet; returns how many were written into `frames`.
pub fn grant_frames(frames: &mut [u64]) -> Result<usize, xenpv::XenError> {
    let size = hypercall::gnttab_query_size()?;
    let nr = (size.nr_frames.max(1) as usize).min(frames.len());
    setup_grant_frames(&mut frames[..nr])
}

/// `GNTTABOP_setup_table` for `frames.len()` frames, which grows the table to that many when it
/// has fewer (up to Xen's limit for the domain); their MFNs go into `frames`.
pub fn setup_grant_frames(frames: &mut [u64]) -> Result<usize, xenpv::XenError> {
    let nr = frames.len();
    let mut setup = xenpv::GnttabSetupTable {
        dom: xenpv::DOMID_SELF,
        nr_frames: nr as u32,
        frame_list: frames.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: valid gnttab_setup_table; Xen writes `nr` MFNs into `frames`.
    unsafe {
        hypercall::grant_table_op(xenpv::gnttabop::SETUP_TABLE, &mut setup as *mut _ as u64, 1)
    }?;
    if setup.status != 0 {
        return Err(xenpv::XenError::from_errno(-(setup.status as i64)));
    }
    Ok(nr)
}

/// A vcpu_info Xen may be writing: shared_info's slot of a VCPU, or one the kernel registered
/// in a page of its own. It is only read and written through volatile and atomic accesses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InfoPtr(*mut xenpv::VcpuInfo);

impl InfoPtr {
    /// # Safety
    /// `p` must point at an aligned vcpu_info in a page that stays mapped, and is used for
    /// nothing else, for the life of the kernel.
    pub unsafe fn new(p: *mut xenpv::VcpuInfo) -> Self {
        InfoPtr(p)
    }

    /// shared_info's slot of VCPU `k` (below 32).
    pub fn slot(sh: &'static SharedInfo, k: usize) -> Self {
        InfoPtr(&sh.vcpu_info[k] as *const xenpv::VcpuInfo as *mut xenpv::VcpuInfo)
    }

    pub fn addr(self) -> u64 {
        self.0 as u64
    }

    /// One consistent copy of the time record (version even and unchanged across the read),
    /// or `None` when it stays mid-update or odd over many tries (a record Xen no longer
    /// writes, or a page that never held one).
    pub fn time_record(self) -> Option<VcpuTimeInfo> {
        for _ in 0..10_000 {
            // SAFETY: the vcpu_info is mapped (`new`'s contract); Xen may update it
            // concurrently, which the version protocol detects.
            let (v0, t, v1) = unsafe {
                let rec = core::ptr::addr_of!((*self.0).time);
                let v0 = core::ptr::read_volatile(core::ptr::addr_of!((*rec).version));
                core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
                let t = core::ptr::read_volatile(rec);
                core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
                (
                    v0,
                    t,
                    core::ptr::read_volatile(core::ptr::addr_of!((*rec).version)),
                )
            };
            if v0 == v1 && v0 & 1 == 0 {
                return Some(t);
            }
            core::hint::spin_loop();
        }
        None
    }

    fn upcall(self) -> &'static core::sync::atomic::AtomicU8 {
        // SAFETY: the flag byte of a mapped vcpu_info (`new`'s contract) that Xen updates
        // atomically; it is only ever accessed atomically here.
        unsafe {
            &*(core::ptr::addr_of_mut!((*self.0).evtchn_upcall_pending)
                as *const core::sync::atomic::AtomicU8)
        }
    }

    fn sel(self) -> &'static core::sync::atomic::AtomicU64 {
        // SAFETY: as for `upcall`: the selector word, aligned, updated atomically by Xen.
        unsafe {
            &*(core::ptr::addr_of_mut!((*self.0).evtchn_pending_sel)
                as *const core::sync::atomic::AtomicU64)
        }
    }

    /// `evtchn_upcall_pending` and `evtchn_pending_sel` as they are now.
    pub fn flags(self) -> (u8, u64) {
        use core::sync::atomic::Ordering::SeqCst;
        (self.upcall().load(SeqCst), self.sel().load(SeqCst))
    }

    /// Clears both flags (as a kernel does once it has looked at every word).
    pub fn clear_flags(self) {
        use core::sync::atomic::Ordering::SeqCst;
        self.upcall().store(0, SeqCst);
        self.sel().store(0, SeqCst);
    }

    /// Masks event upcalls (for a VCPU without an event callback).
    pub fn mask_upcalls(self) {
        // SAFETY: the mask byte of a mapped vcpu_info (`new`'s contract) is the guest's.
        unsafe { core::ptr::addr_of_mut!((*self.0).evtchn_upcall_mask).write_volatile(1) };
    }

    /// Takes the events Xen flagged here the way Linux's upcall handler does (2-level ABI):
    /// only when `evtchn_upcall_pending` is set, then the words `evtchn_pending_sel` names;
    /// of those, the pending and unmasked ports among `ports` (the ones bound to this VCPU;
    /// others stay pending for their VCPU) have their bit cleared and `seen(port)` called.
    /// An event whose pending bit Xen set but whose selector bit or upcall flag it did not
    /// set here stays unseen. Returns whether the upcall flag was set.
    pub fn take_events(self, sh: &SharedInfo, ports: &[u32], mut seen: impl FnMut(u32)) -> bool {
        use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
        if self.upcall().swap(0, SeqCst) == 0 {
            return false;
        }
        let mut words = self.sel().swap(0, SeqCst);
        while words != 0 {
            let w = words.trailing_zeros() as usize;
            words &= words - 1;
            let pending = &sh.evtchn_pending[w] as *const u64 as *const AtomicU64;
            // SAFETY: one word of the mapped shared_info page; Xen sets bits in it atomically.
            let (pending, mask) = unsafe {
                (
                    &*pending,
                    core::ptr::read_volatile(&sh.evtchn_mask[w] as *const u64),
                )
            };
            let bits = pending.load(SeqCst) & !mask;
            for &port in ports {
                let b = port % 64;
                if port / 64 != w as u32 || bits & 1 << b == 0 {
                    continue;
                }
                if pending.fetch_and(!(1 << b), SeqCst) & (1 << b) != 0 {
                    seen(port);
                }
            }
        }
        true
    }
}
