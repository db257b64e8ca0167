//! Filling frames before they become tables or descriptor tables: through a scratch page,
//! while they are still ordinary writable frames.

use kernelrt::report::Why;
use kernelrt::view::{walk, Region};
use kernelrt::why;
use xenpv::{hypercall, pte, uvmf, StartInfo, PAGE_SIZE};

/// A page whose L1 entry is borrowed to fill frames before they become tables.
#[repr(C, align(4096))]
struct Page([u8; PAGE_SIZE as usize]);
static mut SCRATCH: Page = Page([0; PAGE_SIZE as usize]);

/// Fills frames through the scratch page while they are still ordinary writable frames.
pub struct Filler<'a> {
    p2m: &'a [u64],
    va: u64,
    original: u64,
}

impl<'a> Filler<'a> {
    pub fn new(si: &StartInfo, region: &Region, p2m: &'a [u64]) -> Result<Self, Why> {
        let va = core::ptr::addr_of_mut!(SCRATCH) as u64;
        match walk(si, region, va) {
            Ok(w) => Ok(Filler {
                p2m,
                va,
                original: w.l1e,
            }),
            Err(e) => why!("scratch page: {}", e),
        }
    }

    /// Writes `entry(i)` into the 512 words of frame `pfn`.
    pub fn fill(&mut self, pfn: u64, entry: impl Fn(usize) -> u64) -> Result<(), Why> {
        let mfn = self.p2m[pfn as usize];
        // SAFETY: the scratch page is ours and unreferenced; it points at `mfn`, a frame the
        // kernel side took for itself, until `done` restores it.
        let mapped = unsafe {
            hypercall::update_va_mapping(
                self.va,
                pte::make(mfn, pte::L1_FLAGS | pte::D),
                uvmf::INVLPG,
            )
        };
        if let Err(e) = mapped {
            return why!("update_va_mapping(scratch -> mfn {:#x}): {}", mfn, e);
        }
        for i in 0..512usize {
            // SAFETY: the scratch page maps the frame writable; 512 u64 fill it.
            unsafe { (self.va as *mut u64).add(i).write_volatile(entry(i)) };
        }
        Ok(())
    }

    /// Gives the scratch page its own frame back: the filled frames lose their only writable
    /// mapping outside the direct map, as Xen requires before they become tables.
    pub fn done(&mut self) -> Result<(), Why> {
        // SAFETY: restores the scratch page's original L1 entry (its own frame, writable).
        match unsafe { hypercall::update_va_mapping(self.va, self.original, uvmf::INVLPG) } {
            Ok(()) => Ok(()),
            Err(e) => why!("restoring the scratch mapping: {}", e),
        }
    }
}
