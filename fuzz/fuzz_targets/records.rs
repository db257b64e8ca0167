//! The records the purgatory reads from the kernel side and the image: any bytes as a handoff
//! block, a plan record, a parameter block or a chunk table give a value or an error; a
//! record that passes its check has sums and ranges that do not overflow.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvhandoff::handoff::Handoff;
use pvhandoff::image::{ImageParams, PlanRecord, PLAN_MAGIC};

fuzz_target!(|data: &[u8]| {
    // The same bytes with each record's magic in place, so the checks behind it are reached.
    let mut plan = data.to_vec();
    plan.resize(plan.len().max(192), 0);
    plan[..8].copy_from_slice(&PLAN_MAGIC.to_le_bytes());
    if let Some(r) = PlanRecord::read(&plan) {
        if r.check().is_ok() {
            // What the purgatory computes from a checked record must not overflow.
            let _ = r.nr_pages + r.hidden_pages;
            let _ = r.pt_pfn + r.nr_pt_frames;
            let _ = r.virt_base + r.region_pages * 4096;
            assert!(r.trampoline_pfn < r.nr_pages && r.fill_pages <= r.trampoline_pfn);
        }
    }
    let mut h = data.to_vec();
    h.resize(h.len().max(104), 0);
    h[..8].copy_from_slice(b"PVKXHOFF");
    h[8..12].copy_from_slice(&pvhandoff::handoff::HANDOFF_VERSION.to_le_bytes());
    if let Some(b) = Handoff::read(&h) {
        if b.check().is_ok() {
            let _ = b.image_va + b.image_len;
            let _ = b.free_first_pfn + b.free_pages;
            let _ = (b.image_va - b.old_virt_base) / 4096;
            let _ = (b.old_start_info_va - b.old_virt_base) / 4096;
        }
    }
    let _ = Handoff::read(data).map(|b| b.check());
    let _ = PlanRecord::read(data).map(|r| r.check());
    let _ = ImageParams::read(data).map(|p| check_against_self(data, &p));
    let _ = pvhandoff::chunks::ChunkTable::parse(data);
});

fn check_against_self(data: &[u8], p: &ImageParams) -> bool {
    pvhandoff::image::check_header_digest(data, p).is_ok()
}
