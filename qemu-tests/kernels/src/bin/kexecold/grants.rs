//! Grants offered as a frontend offers them to its backends: a few of this kernel's frames in
//! the grant table, for domain 0 (itself: the test kernel is the initial domain).

use core::sync::atomic::Ordering;
use guestrt::println;
use kernelrt::notes::VIRT_BASE;
use kernelrt::report::Why;
use kernelrt::view::{walk, Region};
use kernelrt::{shared, why};
use xenpv::{hypercall, pte, uvmf, StartInfo, PAGE_SIZE};

/// A page of this kernel's whose L1 entry is borrowed to write the grant table.
#[repr(C, align(4096))]
struct Page([u8; PAGE_SIZE as usize]);
static mut GRANT_WINDOW: Page = Page([0; PAGE_SIZE as usize]);
/// Grant refs offered (past the reserved 0..7).
const OFFERED_REFS: core::ops::Range<usize> = 8..12;

/// Offers the entries (v1, or v2 with `v2`); with `in_use`, maps one of them as a backend
/// would (`GNTMAP_device_map`), so it cannot be revoked. Returns how many were offered.
pub fn offer(
    si: &StartInfo,
    region: &Region,
    p2m: &[u64],
    in_use: bool,
    v2: bool,
) -> Result<u32, Why> {
    let mut frames = [0u64; 1];
    if let Err(e) = shared::grant_frames(&mut frames) {
        return why!("grant table setup: {}", e);
    }
    if v2 {
        switch_to_v2()?;
    }
    write_entries(si, region, p2m, frames[0], v2)?;
    if in_use {
        map_one()?;
    }
    Ok(OFFERED_REFS.len() as u32)
}

fn switch_to_v2() -> Result<(), Why> {
    let mut set = xenpv::GnttabSetVersion { version: 2 };
    // SAFETY: valid gnttab_set_version; no grant is in use yet, so Xen switches.
    let r = unsafe {
        hypercall::grant_table_op(xenpv::gnttabop::SET_VERSION, &mut set as *mut _ as u64, 1)
    };
    if let Err(e) = r {
        return why!("GNTTABOP_set_version(2): {}", e);
    }
    println!("PVKEXEC-INFO kexec: grant table switched to v2");
    Ok(())
}

/// Writes the offered entries into grant frame `frame` (by MFN) through the window page,
/// granting the window page's own frame.
fn write_entries(
    si: &StartInfo,
    region: &Region,
    p2m: &[u64],
    frame: u64,
    v2: bool,
) -> Result<(), Why> {
    // v1 entry: flags u16, domid u16, frame u32; v2: the same header, 4 bytes pad, frame u64.
    let (stride, frame_at) = if v2 { (16, 8) } else { (8, 4) };
    let va = core::ptr::addr_of_mut!(GRANT_WINDOW) as u64;
    let original = match walk(si, region, va) {
        Ok(w) => w.l1e,
        Err(e) => return why!("grant window: {}", e),
    };
    let granted = p2m[((va - VIRT_BASE) / PAGE_SIZE) as usize];
    // SAFETY: the window page is ours and unreferenced; it maps the grant frame (shared with
    // us by Xen) until its own frame is put back below.
    if let Err(e) = unsafe {
        hypercall::update_va_mapping(va, pte::make(frame, pte::L1_FLAGS | pte::D), uvmf::INVLPG)
    } {
        return why!("mapping the grant frame {:#x}: {}", frame, e);
    }
    for r in OFFERED_REFS {
        let entry = (va + r as u64 * stride) as *mut u16;
        // SAFETY: entry r of the mapped grant frame: domid and frame first, then the flags
        // that make it valid.
        unsafe {
            entry.add(1).write_volatile(0);
            if v2 {
                (entry.byte_add(frame_at) as *mut u64).write_volatile(granted);
            } else {
                (entry.byte_add(frame_at) as *mut u32).write_volatile(granted as u32);
            }
            core::sync::atomic::fence(Ordering::Release);
            entry.write_volatile(xenpv::gtf::PERMIT_ACCESS);
        }
    }
    // SAFETY: puts the window page's own frame back.
    if let Err(e) = unsafe { hypercall::update_va_mapping(va, original, uvmf::INVLPG) } {
        return why!("restoring the grant window: {}", e);
    }
    Ok(())
}

/// Maps the first offered ref as a backend would (fault injection `grant-in-use`).
fn map_one() -> Result<(), Why> {
    let mut map = xenpv::GnttabMapGrantRef {
        flags: xenpv::gntmap::DEVICE_MAP,
        grant_ref: OFFERED_REFS.start as u32,
        dom: 0,
        ..Default::default()
    };
    // SAFETY: a device mapping of our own grant: no page-table entry changes.
    let r = unsafe {
        hypercall::grant_table_op(xenpv::gnttabop::MAP_GRANT_REF, &mut map as *mut _ as u64, 1)
    };
    if r.is_err() || map.status != 0 {
        return why!(
            "mapping grant ref {}: {:?} status {}",
            map.grant_ref,
            r,
            map.status
        );
    }
    println!(
        "PVKEXEC-INFO kexec: fault injected: grant ref {} left mapped (handle {})",
        map.grant_ref, map.handle
    );
    Ok(())
}
