//! Grant entries the old kernel offered survive a kexec in the domain's grant table: the
//! granted domains could go on mapping those frames, which now belong to the new kernel. The
//! purgatory revokes every v1 entry past the reserved refs (0..7: console and xenstore pages)
//! that no one maps; an entry still mapped (Xen's reading/writing bits) cannot be revoked and
//! is returned, so that its frame is kept from the new kernel (or, with no hidden frame left
//! for it, the kexec refused). A mapped entry whose frame is a hole in the old P2M is left as
//! it is: the frame is no one's to hand out (a crash view keeps the old kernel's frames as
//! holes, and its backends may still map them).
//!
//! A v2 table (the old kernel switched) is set back to v1, the version a new domain starts
//! with: Xen allows that only when no entry past the reserved refs is in use and the status
//! frames are no longer mapped, and it clears every entry but the reserved ones. In-use v2
//! grants are refused, named, not kept.

use crate::failure::Failure;
use crate::frames::Ctx;
use core::sync::atomic::{AtomicU16, Ordering};
use xenpv::{gnttabop, gtf, hypercall, GnttabSetVersion, GnttabSetupTable, DOMID_SELF};

/// Most grant-table frames the purgatory looks at.
const MAX_FRAMES: usize = 64;

/// Most in-use grants the purgatory records.
pub const MAX_BUSY: usize = 16;

/// A grant entry still mapped by its grantee.
#[derive(Clone, Copy, Default)]
pub struct Busy {
    pub grant_ref: u32,
    pub domid: u16,
    /// The granted frame (an MFN for a PV domain).
    pub frame: u64,
}

/// What the revocation did.
pub struct Revoked {
    pub frames: u32,
    pub entries: u32,
    pub hypercalls: u64,
    pub busy: [Busy; MAX_BUSY],
    pub nr_busy: usize,
    /// Mapped entries on frames outside the old P2M's present frames, left alone.
    pub left: u32,
    /// The table was v2 and was set back to v1.
    pub from_v2: bool,
}

impl Revoked {
    pub fn busy(&self) -> &[Busy] {
        &self.busy[..self.nr_busy]
    }
}

fn op<T>(cmd: u64, arg: &mut T, call: &'static str) -> Result<(), Failure> {
    // SAFETY: `arg` is the one structure `cmd` expects; these ops only read or describe this
    // domain's grant table.
    unsafe { hypercall::grant_table_op(cmd, arg as *mut T as u64, 1) }
        .map(drop)
        .map_err(|err| Failure::Hypercall {
            call,
            frame: 0,
            err,
        })
}

/// Revokes the unused offered entries. `map` maps a grant-table frame (by MFN) writable and
/// returns its address; the caller unmaps afterwards. `present` says whether a granted frame
/// (MFN) is one of the old P2M's present frames.
pub fn revoke(
    map: &mut dyn FnMut(u64) -> Result<*mut u8, Failure>,
    present: &dyn Fn(u64) -> bool,
) -> Result<Revoked, Failure> {
    let mut done = Revoked {
        frames: 0,
        entries: 0,
        hypercalls: 1,
        busy: [Busy::default(); MAX_BUSY],
        nr_busy: 0,
        left: 0,
        from_v2: false,
    };
    let mut frames = [0u64; MAX_FRAMES];
    let nr = table_frames(&mut done, &mut frames)?;
    for (f, &mfn) in frames[..nr].iter().enumerate() {
        let page = map(mfn)?;
        done.hypercalls += 1;
        done.frames += 1;
        let first = if f == 0 {
            gnttabop::NR_RESERVED_ENTRIES as usize
        } else {
            0
        };
        for e in first..512 {
            revoke_entry(&mut done, page, f, e, present)?;
        }
    }
    Ok(done)
}

/// The grant table's frames into `frames` (a v2 table is set back to v1 first); returns
/// their number, 0 without a table.
fn table_frames(done: &mut Revoked, frames: &mut [u64; MAX_FRAMES]) -> Result<usize, Failure> {
    let size = hypercall::gnttab_query_size().map_err(|err| Failure::Hypercall {
        call: "grant_table_op(QUERY_SIZE)",
        frame: 0,
        err,
    })?;
    if size.nr_frames == 0 {
        return Ok(0);
    }
    let nr = size.nr_frames as usize;
    if nr > MAX_FRAMES {
        return Err(Failure::Plan(
            "the grant table has more frames than the purgatory scans",
        ));
    }
    done.hypercalls += 1;
    let version = hypercall::gnttab_get_version().map_err(|err| Failure::Hypercall {
        call: "grant_table_op(GET_VERSION)",
        frame: 0,
        err,
    })?;
    if version == 2 {
        let mut set = GnttabSetVersion { version: 1 };
        done.hypercalls += 1;
        op(
            gnttabop::SET_VERSION,
            &mut set,
            "grant_table_op(SET_VERSION)",
        )
        .map_err(|f| match f {
            Failure::Hypercall { err, .. } => Failure::GrantV2 { err },
            other => other,
        })?;
        done.from_v2 = true;
    } else if version != 1 {
        return Err(Failure::Plan("the grant table has an unknown version"));
    }
    let mut setup = GnttabSetupTable {
        dom: DOMID_SELF,
        nr_frames: size.nr_frames,
        frame_list: frames.as_mut_ptr() as u64,
        ..Default::default()
    };
    done.hypercalls += 1;
    op(
        gnttabop::SETUP_TABLE,
        &mut setup,
        "grant_table_op(SETUP_TABLE)",
    )?;
    if setup.status != 0 {
        return Err(Failure::Plan(
            "GNTTABOP_setup_table for the existing frames failed",
        ));
    }
    Ok(nr)
}

/// Revokes entry `e` of grant frame `f` (mapped at `page`) unless someone maps it: then it is
/// listed as busy.
fn revoke_entry(
    done: &mut Revoked,
    page: *mut u8,
    f: usize,
    e: usize,
    present: &dyn Fn(u64) -> bool,
) -> Result<(), Failure> {
    // SAFETY: `page` maps the grant frame; entry e's flags are its first u16, shared
    // with Xen, which changes them atomically.
    let flags = unsafe { &*(page.add(e * 8) as *const AtomicU16) };
    let mut cur = flags.load(Ordering::Acquire);
    loop {
        if cur & gtf::TYPE_MASK == 0 {
            break;
        }
        if cur & (gtf::READING | gtf::WRITING) != 0 {
            let busy = Busy {
                grant_ref: (f * 512 + e) as u32,
                // SAFETY: as above; the entry's domid and frame follow its flags.
                domid: unsafe { (page.add(e * 8 + 2) as *const u16).read_volatile() },
                // SAFETY: as above.
                frame: unsafe { (page.add(e * 8 + 4) as *const u32).read_volatile() } as u64,
            };
            if !present(busy.frame) {
                done.left += 1;
                break;
            }
            if done.nr_busy == MAX_BUSY {
                return Err(Failure::GrantInUse {
                    grant_ref: busy.grant_ref,
                    domid: busy.domid,
                    frame: busy.frame as u32,
                });
            }
            done.busy[done.nr_busy] = busy;
            done.nr_busy += 1;
            break;
        }
        match flags.compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                done.entries += 1;
                break;
            }
            // Xen changed the flags (a map began): look again.
            Err(now) => cur = now,
        }
    }
    Ok(())
}

/// Revokes the grant entries the old kernel offered (stage 2); those still mapped must fit
/// the image's grant reserve, or the kexec stops before any frame changes hands.
pub fn revoke_offered(c: &mut Ctx, grant_reserve: u64) -> Result<Revoked, Failure> {
    let old_p2m = c.old_p2m;
    let present = |mfn: u64| {
        // SAFETY: Xen maps the M2P read-only for every PV guest; a granted frame is a machine
        // frame, so its entry is mapped (as where renumber reads it for busy frames).
        let pfn =
            unsafe { ((xenpv::layout::M2P_VIRT_START + mfn * 8) as *const u64).read_volatile() };
        old_p2m.get(pfn as usize).is_some_and(|&m| m == mfn)
    };
    let revoked = revoke(
        &mut |mfn| c.scratch_map(mfn).map(|p| p as *mut u8),
        &present,
    )?;
    c.scratch_unmap()?;
    c.hypercalls += revoked.hypercalls;
    if let Some(b) = revoked.busy().get(grant_reserve as usize) {
        return Err(Failure::GrantInUse {
            grant_ref: b.grant_ref,
            domid: b.domid,
            frame: b.frame as u32,
        });
    }
    Ok(revoked)
}
