//! The kernel's own pages Xen is asked to write: two homes for VCPU 0's `vcpu_info` (A and B),
//! two for VCPU 1's (C and D), and one for VCPU 1's runstate and time areas (R). A page Xen
//! must no longer write is filled with [`POISON`] and checked later. Page L holds VCPU 1's
//! LDT (one descriptor), which Xen types as a descriptor page while it maps it.

use kernelrt::report::Why;
use kernelrt::shared::InfoPtr;
use kernelrt::view::Region;
use kernelrt::why;
use xenpv::{hypercall, pte, uvmf, vcpuop, VcpuInfo, VcpuRegisterVcpuInfo, XenError, PAGE_SIZE};

pub const A: usize = 0;
pub const B: usize = 1;
pub const C: usize = 2;
pub const D: usize = 3;
pub const R: usize = 4;
pub const L: usize = 5;
const COUNT: usize = 6;
pub const NAMES: [&str; COUNT] = ["A", "B", "C", "D", "R", "L"];
/// Where in each page the vcpu_info goes: different offsets, so a move changes page and offset.
const OFFSET: [u64; 4] = [0, 0x140, 0x40, 0x80];
/// VCPU 1's runstate area and secondary time area in page R.
pub const RUNSTATE_OFFSET: u64 = 0;
pub const TIME_AREA_OFFSET: u64 = 0x800;
/// What a page Xen must leave alone is filled with. Bit 0 of each byte is clear: Xen flags an
/// event with test-and-set of bit 0 of `evtchn_upcall_pending` and of a selector bit (ports
/// 0-63 are word 0), so such a write changes the page.
pub const POISON: u8 = 0x5a;

#[repr(C, align(4096))]
struct Page([u8; PAGE_SIZE as usize]);
static mut PAGES: [Page; COUNT] = [const { Page([0; PAGE_SIZE as usize]) }; COUNT];

pub struct Pages {
    va: [u64; COUNT],
    pub mfn: [u64; COUNT],
}

impl Pages {
    /// The pages' addresses and frames (bss of this kernel, inside the initial region).
    pub fn new(region: &Region, p2m: &[u64]) -> Result<Self, Why> {
        let mut va = [0; COUNT];
        let mut mfn = [0; COUNT];
        for i in 0..COUNT {
            // SAFETY: only the address of page i is taken.
            va[i] = unsafe { core::ptr::addr_of!(PAGES[i]) } as u64;
            match region.va_pfn(va[i]).and_then(|pfn| p2m.get(pfn as usize)) {
                Some(&m) => mfn[i] = m,
                None => {
                    return why!(
                        "page {} at {:#x} outside the initial region",
                        NAMES[i],
                        va[i]
                    )
                }
            }
        }
        Ok(Pages { va, mfn })
    }

    pub fn va(&self, i: usize) -> u64 {
        self.va[i]
    }

    /// The vcpu_info slot of page `i` (A..D).
    pub fn info(&self, i: usize) -> InfoPtr {
        // SAFETY: an aligned offset in a page of this kernel's bss, mapped for its whole life
        // and used only as a vcpu_info home.
        unsafe { InfoPtr::new((self.va[i] + OFFSET[i]) as *mut VcpuInfo) }
    }

    /// `VCPUOP_register_vcpu_info(vcpu)` at page `i`'s slot.
    pub fn register(&self, vcpu: u32, i: usize) -> Result<(), XenError> {
        let rec = VcpuRegisterVcpuInfo {
            mfn: self.mfn[i],
            offset: OFFSET[i] as u32,
            rsvd: 0,
        };
        // SAFETY: `rec` names a page of this kernel's bss that nothing else uses; Xen may map it
        // and write `vcpu`'s vcpu_info there, which is read only through raw pointers.
        unsafe { hypercall::vcpu_op(vcpuop::REGISTER_VCPU_INFO, vcpu, &rec as *const _ as u64) }
            .map(drop)
    }

    /// Maps page `i` writable (`rw`) or read-only at its VA, on every VCPU. Xen refuses a
    /// writable mapping of a page it has typed as a descriptor page (an LDT it maps).
    pub fn remap(&self, i: usize, rw: bool) -> Result<(), XenError> {
        let flags = if rw {
            pte::L1_FLAGS | pte::D
        } else {
            pte::L1_FLAGS_RO
        };
        // SAFETY: page i is this kernel's bss page; only its own entry changes, to the same
        // frame, and nothing holds a Rust reference into it.
        unsafe {
            hypercall::update_va_mapping(
                self.va[i],
                pte::make(self.mfn[i], flags),
                uvmf::INVLPG | uvmf::ALL,
            )
        }
    }

    /// Writes `desc` as entry 0 of page `i` (while it is still mapped writable).
    pub fn write_descriptor(&self, i: usize, desc: u64) {
        // SAFETY: page i is this kernel's and mapped writable; nothing else uses it yet.
        unsafe { (self.va[i] as *mut u64).write_volatile(desc) };
    }

    /// Fills page `i` with [`POISON`].
    pub fn poison(&self, i: usize) {
        // SAFETY: page i is this kernel's; Xen may write it concurrently (a bug this poison is
        // there to show), so it is written through a raw pointer only.
        unsafe { core::ptr::write_bytes(self.va[i] as *mut u8, POISON, PAGE_SIZE as usize) };
    }

    /// `Err(offset)` of the first byte of page `i` that is no longer [`POISON`].
    pub fn poisoned(&self, i: usize) -> Result<(), usize> {
        self.range_poisoned(i, 0, PAGE_SIZE as usize)
    }

    /// [`Pages::poisoned`] for bytes `off..off + len` of page `i`.
    pub fn range_poisoned(&self, i: usize, start: usize, len: usize) -> Result<(), usize> {
        for off in start..(start + len).min(PAGE_SIZE as usize) {
            // SAFETY: a byte of page i, read volatile because Xen could write it.
            let b = unsafe { ((self.va[i] + off as u64) as *const u8).read_volatile() };
            if b != POISON {
                return Err(off);
            }
        }
        Ok(())
    }
}
