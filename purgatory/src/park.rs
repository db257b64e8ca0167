//! The VCPUs other than the boot VCPU: their entry, their cleanup, and the park page they end
//! on.
//!
//! The kernel side sends each AP to the AP entry (`_start_ap`, `AP_ENTRY_OFFSET` past `_start`,
//! in entry.S) with its VCPU id; the entry drops the NMI callback and ends any NMI the AP came
//! from. An AP stops its own timers, drops its GDT, LDT and user L4, reports the entry's NMI
//! step, helps verify digests, reports in, and waits for the boot VCPU to set up the
//! park area (frames hidden from the new kernel): a private
//! L4 -> L3 -> L2 -> L1 tree mapping only the park page, at the same VA as in the old tables.
//! There the AP switches to the private tree (`NEW_BASEPTR`, so the old tables lose their last
//! user once the boot VCPU leaves them) and takes itself down with `VCPUOP_down`, for good:
//! woken, it goes down again unless the new kernel left it a wake-up record
//! (`pvhandoff::handoff::ParkMailbox`). The boot VCPU checks with `VCPUOP_is_up` that each is
//! down.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use pvhandoff::handoff::{ParkMailbox, MAX_VCPUS, PARK_MAILBOX_OFFSET, PARK_WAKE_MAGIC};
use xenpv::hypercall;

const N: usize = MAX_VCPUS as usize;

global_asm!(
    include_str!("park.S"),
    max = const MAX_VCPUS,
    mailbox = const PARK_MAILBOX_OFFSET,
    wake = const PARK_WAKE_MAGIC,
    domid_self = const xenpv::DOMID_SELF,
    hc_mmuext_op = const xenpv::hc::MMUEXT_OP,
    hc_vcpu_op = const xenpv::hc::VCPU_OP,
    vcpuop_down = const xenpv::vcpuop::DOWN,
    mmuext_new_baseptr = const xenpv::mmuext::NEW_BASEPTR,
    mb_magic = const core::mem::offset_of!(ParkMailbox, magic),
    mb_l4_mfn = const core::mem::offset_of!(ParkMailbox, l4_mfn),
    mb_entry = const core::mem::offset_of!(ParkMailbox, entry),
    mb_rsp = const core::mem::offset_of!(ParkMailbox, rsp),
    mb_op = const core::mem::offset_of!(ParkMailbox, op),
    op_cmd = const core::mem::offset_of!(xenpv::MmuextOp, cmd),
    op_arg1 = const core::mem::offset_of!(xenpv::MmuextOp, arg1),
    op_arg2 = const core::mem::offset_of!(xenpv::MmuextOp, arg2),
);

extern "C" {
    static pvkexec_park_code: u8;
    static pvkexec_park_op: u8;
    static pvkexec_park_status: u8;
    static pvkexec_park_end: u8;
}

/// The park page's code and data (copied into the park frame by the boot VCPU), and the
/// offsets of the `NEW_BASEPTR` op and of the per-VCPU status words in it.
pub struct ParkBlob {
    pub bytes: &'static [u8],
    pub op_offset: usize,
    pub status_offset: usize,
}

pub fn blob() -> ParkBlob {
    const _: () = assert!(PARK_MAILBOX_OFFSET + 64 * MAX_VCPUS <= 4096);
    // SAFETY: linker symbols of the `.rodata.park` blob above; only their addresses are used
    // and the bytes between them are read.
    unsafe {
        let start = core::ptr::addr_of!(pvkexec_park_code) as usize;
        let end = core::ptr::addr_of!(pvkexec_park_end) as usize;
        ParkBlob {
            bytes: core::slice::from_raw_parts(start as *const u8, end - start),
            op_offset: core::ptr::addr_of!(pvkexec_park_op) as usize - start,
            status_offset: core::ptr::addr_of!(pvkexec_park_status) as usize - start,
        }
    }
}

/// Per VCPU: 0 not yet arrived, 1 arrived clean, else `step << 32 | errno` of a failed step.
static ARRIVED: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
/// The park page's VA once the park area is ready, or [`GO_DOWN`] (0 before).
static PARK_GO: AtomicU64 = AtomicU64::new(0);
/// [`PARK_GO`] when the APs are reset instead of parked: each goes down where it is, on the
/// old tables, which `VCPUOP_reset` then drops (no page is mapped at VA 1).
const GO_DOWN: u64 = 1;

/// Steps of an AP's cleanup, for the boot VCPU's failure line.
pub const AP_STEPS: [&str; 5] = [
    "set_timer_op(0)",
    "vcpu_op(stop_periodic_timer)",
    "vcpu_op(stop_singleshot_timer)",
    "set_gdt(0) / mmuext_op(SET_LDT 0, NEW_USER_BASEPTR 0)",
    "callback_op(unregister NMI) at entry",
];

/// An AP's sequence; `nmi_unregistered` is the entry's `CALLBACKOP_unregister` of the NMI
/// callback (0, or -errno; entry.S).
#[no_mangle]
extern "C" fn purgatory_ap_main(handoff: u64, vcpu: u64, nmi_unregistered: i64) -> ! {
    let me = vcpu as u32;
    let mut result = 1u64;
    let mut fail = |step: u64, e: xenpv::XenError| {
        if result == 1 {
            result = (step + 1) << 32 | e.errno() as u64;
        }
    };
    if let Err(e) = hypercall::set_timer_op(0) {
        fail(0, e);
    }
    if let Err(e) = hypercall::vcpu_stop_periodic_timer(me) {
        fail(1, e);
    }
    if let Err(e) = hypercall::vcpu_stop_singleshot_timer(me) {
        fail(2, e);
    }
    if let Err(crate::vcpu::Dropped::Gdt(e) | crate::vcpu::Dropped::LdtOrUserL4(e)) =
        crate::vcpu::drop_descriptor_tables()
    {
        fail(3, e);
    }
    // An NMI callback into the old kernel would outlive it; the entry dropped it before
    // ending the NMI this AP may have been sent here from.
    if let Err(e) = xenpv::XenError::check(nmi_unregistered) {
        fail(4, e);
    }
    // Help verify the digests (the boot VCPU checks the handoff and the image too, and
    // crashes the domain if either is bad).
    if let Some(h) = crate::entry::handoff(handoff) {
        // SAFETY: as for the boot VCPU: the image is mapped readable at image_va.
        let bytes =
            unsafe { core::slice::from_raw_parts(h.image_va as *const u8, h.image_len as usize) };
        if let Ok(image) = pvhandoff::image::ImageView::parse(bytes) {
            let _ = crate::verify::share(&image, me);
        }
    }
    ARRIVED[vcpu as usize].store(result, Ordering::Release);
    loop {
        // Reads memory while it waits; a yield (one hypercall) only every 2^22 TSC cycles.
        let mut park = 0;
        crate::wait::spin_until(1 << 22, || {
            park = PARK_GO.load(Ordering::Acquire);
            park != 0
        });
        if park == GO_DOWN {
            // Down for good: the boot VCPU resets it (VCPUOP_reset), after which only a new
            // VCPUOP_initialise runs it again, at a new context.
            loop {
                let _ = hypercall::vcpu_down(me);
            }
        }
        if park != 0 {
            // SAFETY: the park page is mapped at `park` in the current (old) tables and in the
            // private tree; its code takes the VCPU id in rdi and never returns.
            unsafe {
                core::arch::asm!("jmp {p}", p = in(reg) park, in("rdi") vcpu, options(noreturn))
            }
        }
        let _ = hypercall::sched_yield();
    }
}

/// What an AP reported: `None` while it has not arrived.
pub fn arrival(vcpu: usize) -> Option<Result<(), (&'static str, u32)>> {
    match ARRIVED[vcpu].load(Ordering::Acquire) {
        0 => None,
        1 => Some(Ok(())),
        v => Some(Err((
            AP_STEPS[((v >> 32) as usize - 1).min(AP_STEPS.len() - 1)],
            v as u32,
        ))),
    }
}

/// Releases the APs to the park page at `va`.
pub fn release(va: u64) {
    PARK_GO.store(va, Ordering::Release);
}

/// Tells the APs to go down where they are (they are reset, not parked).
pub fn release_down() {
    PARK_GO.store(GO_DOWN, Ordering::Release);
}
