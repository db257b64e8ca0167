//! Frame planning: every frame the kernel side takes for itself, from the top of RAM down.

use kernelrt::notes::VIRT_BASE;
use kernelrt::report::Why;
use kernelrt::view::Region;
use kernelrt::why;
use pvhandoff::handoff::MAX_VCPUS;
use xenpv::{StartInfo, PAGE_SIZE};

/// Pinned process trees besides the kernel's own.
pub const EXTRA_TREES: usize = 2;

/// Where every frame the kernel side took lives.
pub struct Layout {
    /// VCPUs of the domain (the per-VCPU arrays hold this many).
    pub nr_vcpus: u32,
    /// The purgatory's L3, L2 and L1.
    pub purgatory_tables: [u64; 3],
    pub gdt: u64,
    /// GDT frames of the APs (index = VCPU id; 0 unused).
    pub ap_gdt: [u64; MAX_VCPUS as usize],
    /// FIFO event control blocks, one per VCPU.
    pub fifo: [u64; MAX_VCPUS as usize],
    /// The FIFO event array's first page (ports 0..1023).
    pub event_array: u64,
    /// Frames of the VCPUs' placed `vcpu_info`, one per VCPU.
    pub vcpu_info: [u64; MAX_VCPUS as usize],
    pub trees: [u64; EXTRA_TREES],
    pub dm_l3: u64,
    /// First PFN of the direct map's L2 frames (descending run: `dm_l2 - i`).
    pub dm_l2: u64,
    pub nr_l2: u64,
    /// First PFN of the direct map's L1 frames (descending run: `dm_l1 - i`).
    pub dm_l1: u64,
    pub nr_l1: u64,
    /// Lowest frame taken: `[floor, nr_pages)` are tables or descriptor tables.
    pub floor: u64,
}

/// Frames taken from the top of RAM, never reaching into the initial region.
struct TopFrames {
    next: u64,
    limit: u64,
}

impl TopFrames {
    fn take(&mut self) -> Result<u64, Why> {
        if self.next <= self.limit {
            return why!("domain too small for the kernel side's tables");
        }
        self.next -= 1;
        Ok(self.next)
    }

    /// Takes one frame for each of the first `n` slots of `slots`.
    fn take_each(&mut self, slots: &mut [u64], n: usize) -> Result<(), Why> {
        for s in slots.iter_mut().take(n) {
            *s = self.take()?;
        }
        Ok(())
    }
}

/// Plans the tables, descriptor tables, event frames and process trees of a domain with
/// `nr_vcpus` VCPUs.
pub fn plan(si: &StartInfo, region: &Region, nr_vcpus: u32) -> Result<Layout, Why> {
    let n = nr_vcpus as usize;
    let mut top = TopFrames {
        next: si.nr_pages,
        limit: (region.end - VIRT_BASE) / PAGE_SIZE,
    };
    let purgatory_tables = [top.take()?, top.take()?, top.take()?];
    let gdt = top.take()?;
    let mut ap_gdt = [0; MAX_VCPUS as usize];
    top.take_each(&mut ap_gdt[1..], n.saturating_sub(1))?;
    let mut fifo = [0; MAX_VCPUS as usize];
    top.take_each(&mut fifo, n)?;
    let event_array = top.take()?;
    let mut vcpu_info = [0; MAX_VCPUS as usize];
    top.take_each(&mut vcpu_info, n)?;
    let mut trees = [0; EXTRA_TREES];
    top.take_each(&mut trees, EXTRA_TREES)?;
    let nr_l1 = si.nr_pages.div_ceil(512);
    let nr_l2 = nr_l1.div_ceil(512);
    if nr_l2 > 512 {
        return why!("more RAM than one direct-map L3 covers");
    }
    let dm_l3 = top.take()?;
    let dm_l2 = top.take()?;
    for _ in 1..nr_l2 {
        top.take()?;
    }
    let dm_l1 = top.take()?;
    for _ in 1..nr_l1 {
        top.take()?;
    }
    Ok(Layout {
        nr_vcpus,
        purgatory_tables,
        gdt,
        ap_gdt,
        fifo,
        event_array,
        vcpu_info,
        trees,
        dm_l3,
        dm_l2,
        nr_l2,
        dm_l1,
        nr_l1,
        floor: top.next,
    })
}
