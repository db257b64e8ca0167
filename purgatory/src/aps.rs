//! The boot VCPU's side of the other VCPUs (docs/smp.md): it waits until every AP has reached
//! the purgatory (stage 2), and once the tables are built parks them on private tables in
//! hidden frames (stage 4). Where Xen resets VCPUs (pvkexec's Xen patches) they are instead
//! taken down and reset at the end of stage 2, and VCPU 0's vcpu_info goes back to
//! shared_info ([`reset`]). The APs' own side is `park`.

use crate::failure::Failure;
use crate::frames::Ctx;
use crate::park::{self, ParkBlob};
use crate::wait::{spin_until, WAIT_CYCLES};
use pvhandoff::image::PARK_PAGES;
use xenpv::{hypercall, pte, uvmf};

/// Waits until every AP reported in at the AP entry, and checks its cleanup.
pub fn wait_arrivals(nr_vcpus: u64) -> Result<(), Failure> {
    if nr_vcpus <= 1 {
        return Ok(());
    }
    for vcpu in 1..nr_vcpus {
        spin_until(WAIT_CYCLES, || park::arrival(vcpu as usize).is_some());
        match park::arrival(vcpu as usize) {
            Some(Ok(())) => {}
            Some(Err((step, errno))) => return Err(Failure::ApStep { vcpu, step, errno }),
            None => {
                return Err(Failure::ApMissing {
                    vcpu,
                    cycles: WAIT_CYCLES,
                })
            }
        }
    }
    say!(
        "purgatory: VCPUs 1..{} arrived: timers stopped, GDT, LDT and user L4 dropped",
        nr_vcpus - 1
    );
    Ok(())
}

/// Builds the park area in the hidden frames from free-pool entry `first` on (private L4, L3,
/// L2, L1 and the park page), maps the park page at the same VA in the old tables, releases
/// the APs to it and waits until `VCPUOP_is_up` says each is down on its private tables.
pub fn park(c: &mut Ctx, nr_vcpus: u64, first: u64) -> Result<Parked, Failure> {
    let va = c.h.scratch_va - 4096;
    let (l4, page, blob) = build_area(c, first, va)?;
    map_park_page(c, first, va, page)?;
    park::release(va);
    for vcpu in 1..nr_vcpus {
        wait_down(c, vcpu, va, &blob, l4)?;
    }
    say!(
        "purgatory: VCPUs 1..{} parked: down on private tables (L4 mfn {:#x}) in {} hidden frames",
        nr_vcpus - 1,
        l4,
        PARK_PAGES
    );
    Ok(Parked { page, va })
}

/// Writes the private tree (mapping only the park page at `va`) and the park page; returns
/// the private L4's and the park page's MFNs and the park code.
fn build_area(c: &mut Ctx, first: u64, va: u64) -> Result<(u64, u64, ParkBlob), Failure> {
    let mfn = |i: u64| c.old_p2m[c.pool_pfn(first + i) as usize];
    let (l4, l3, l2, l1, page) = (mfn(0), mfn(1), mfn(2), mfn(3), mfn(4));
    for (_frame, level, next, flags) in [
        (l4, 4u32, l3, pte::UPPER_FLAGS),
        (l3, 3, l2, pte::UPPER_FLAGS),
        (l2, 2, l1, pte::UPPER_FLAGS),
        (l1, 1, page, pte::L1_FLAGS | pte::D),
    ] {
        let dst = c.pool_page(c.pool_pfn(first + 4 - level as u64))?;
        let slot = pte::index(va, level);
        for i in 0..512usize {
            let e = if i == slot { pte::make(next, flags) } else { 0 };
            // SAFETY: `dst` maps this hidden table frame writable; 512 entries fill it.
            unsafe { dst.add(i).write_volatile(e) };
        }
    }
    let blob = park::blob();
    if blob.bytes.len() as u64 > pvhandoff::handoff::PARK_MAILBOX_OFFSET {
        return Err(Failure::Plan("the park code runs into the park mailboxes"));
    }
    let dst = c.pool_page(c.pool_pfn(first + 4))? as *mut u8;
    for i in 0..4096usize {
        let b = blob.bytes.get(i).copied().unwrap_or(0);
        // SAFETY: `dst` maps the park frame writable; 4096 bytes fill it.
        unsafe { dst.add(i).write_volatile(b) };
    }
    // SAFETY: the op's arg1 (8 bytes past its start) inside the park frame just written.
    unsafe { (dst.add(blob.op_offset + 8) as *mut u64).write_unaligned(l4) };
    Ok((l4, page, blob))
}

/// Drops the direct-map aliases of the private tables and maps the park page at `va`.
fn map_park_page(c: &mut Ctx, first: u64, va: u64, page: u64) -> Result<(), Failure> {
    c.scratch_unmap()?;
    for i in 0..4 {
        c.drop_alias(c.pool_pfn(first + i))?;
    }
    c.drop_aliases()?;
    c.hypercalls += 1;
    // SAFETY: the L1 slot below the scratch VA belongs to the purgatory mapping and is free
    // (checked against the purgatory's size by the caller's plan); it maps the park frame.
    unsafe {
        hypercall::update_va_mapping(va, pte::make(page, pte::L1_FLAGS | pte::D), uvmf::INVLPG)
    }
    .map_err(|err| Failure::Hypercall {
        call: "update_va_mapping(park page)",
        frame: page,
        err,
    })?;
    Ok(())
}

/// With a hypervisor that resets VCPUs: sends every AP down where it is (stage 2 is done and
/// they have stopped their timers and dropped their descriptor tables), waits until Xen says
/// each is down, and resets it with `VCPUOP_reset`, which drops its page tables (the old L4
/// loses that user), vcpu_info registration, runstate and time areas, LDT and timers: the
/// VCPU is as the domain builder left it, and a new kernel can `VCPUOP_initialise` it. Then
/// VCPU 0's own vcpu_info goes back to its shared_info slot (contents kept). Done before any
/// frame changes hands, so Xen writes no registered vcpu_info frame from then on and those
/// frames need not be hidden. Each failure names the VCPU and Xen's errno.
pub fn reset(c: &mut Ctx, nr_vcpus: u64) -> Result<(), Failure> {
    park::release_down();
    for vcpu in 1..nr_vcpus {
        poll_down(c, vcpu)?;
        c.hypercalls += 1;
        hypercall::vcpu_reset(vcpu as u32).map_err(|err| Failure::VcpuReset { vcpu, err })?;
    }
    c.hypercalls += 1;
    hypercall::vcpu_info_unregister(0).map_err(|err| Failure::VcpuInfoUnregister { err })?;
    match nr_vcpus > 1 {
        true => say!(
            "purgatory: VCPUs 1..{} down and reset (VCPUOP_reset: no context, vcpu_info, runstate or time area left), VCPU 0's vcpu_info back in shared_info; nothing parked or hidden",
            nr_vcpus - 1
        ),
        false => say!("purgatory: VCPU 0's vcpu_info back in shared_info; nothing hidden"),
    }
    Ok(())
}

/// Waits until `vcpu` has written its NEW_BASEPTR result and Xen says it is down.
fn wait_down(c: &mut Ctx, vcpu: u64, va: u64, blob: &ParkBlob, l4: u64) -> Result<(), Failure> {
    // SAFETY: the park page is mapped at `va`; the AP writes its NEW_BASEPTR result there
    // just before it goes down.
    let status =
        || unsafe { ((va + blob.status_offset as u64 + vcpu * 8) as *const u64).read_volatile() };
    // The result first (a memory read), then Xen's word that the VCPU is down.
    spin_until(WAIT_CYCLES, || status() != u64::MAX);
    poll_down(c, vcpu)?;
    let status = status();
    if status == u64::MAX {
        return Err(Failure::ApStillUp {
            vcpu,
            cycles: WAIT_CYCLES,
        });
    }
    if status != 0 {
        return Err(Failure::Hypercall {
            call: "the AP's mmuext_op(NEW_BASEPTR, private L4)",
            frame: l4,
            err: xenpv::XenError::from_errno((status as i64).wrapping_neg()),
        });
    }
    Ok(())
}

/// Polls `VCPUOP_is_up` until `vcpu` is down (bounded: 1000 polls [`WAIT_CYCLES`] / 1000 apart).
fn poll_down(c: &mut Ctx, vcpu: u64) -> Result<(), Failure> {
    let mut polls = 0u64;
    loop {
        c.hypercalls += 1;
        polls += 1;
        match hypercall::vcpu_is_up(vcpu as u32) {
            Ok(false) => return Ok(()),
            Ok(true) if polls < 1000 => {
                spin_until(WAIT_CYCLES / 1000, || false);
            }
            Ok(true) => {
                return Err(Failure::ApStillUp {
                    vcpu,
                    cycles: WAIT_CYCLES,
                })
            }
            Err(err) => {
                return Err(Failure::Hypercall {
                    call: "vcpu_op(is_up)",
                    frame: vcpu,
                    err,
                })
            }
        }
    }
}

/// The park page of parked VCPUs, for the `pvkexec.park=` command-line word.
pub struct Parked {
    pub page: u64,
    pub va: u64,
}
