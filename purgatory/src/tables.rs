//! Purgatory stage 4 (docs/kexec-image.md): the new page tables. Each table frame gets its
//! template (entries in PFN terms, from the image) translated to MFNs and loses its direct-map
//! alias; the other holes are zeroed by Xen; then the new L4 is pinned.

use crate::failure::Failure;
use crate::frames::Ctx;
use pvhandoff::image::{ImageView, SEG_FLAG_TEMPLATE};
use pvhandoff::SegmentKind;
use xenpv::{hypercall, mmuext, pte, MmuextOp};

/// A page-table template: its first PFN, its pages and its bytes.
type Template<'i> = (u64, u64, &'i [u8]);

/// The image's page-table templates, checked to lie in the built PFNs `[0, fill)`.
fn templates<'i>(
    image: &ImageView<'i>,
    pt_pfn: u64,
    fill: u64,
) -> Result<([Template<'i>; 4], usize), Failure> {
    let mut templates: [(u64, u64, &[u8]); 4] = [(0, 0, &[]); 4];
    let mut nr_templates = 0;
    for (i, s) in image.segments().enumerate() {
        if s.flags & SEG_FLAG_TEMPLATE == 0 || s.kind != SegmentKind::PageTables as u32 {
            continue;
        }
        let data = image
            .data(i)
            .map_err(|_| Failure::Plan("page-table template outside the image"))?;
        if nr_templates == templates.len()
            || (data.len() as u64) < s.nr_pages * 4096
            || s.dest_pfn + s.nr_pages > fill
        {
            return Err(Failure::Plan(
                "a page-table template is short, outside the built PFNs or one too many",
            ));
        }
        templates[nr_templates] = (s.dest_pfn, s.nr_pages, data);
        nr_templates += 1;
    }
    if !templates[..nr_templates].iter().any(|t| t.0 == pt_pfn) {
        return Err(Failure::Plan(
            "the image has no template for the tables at pt_base",
        ));
    }
    Ok((templates, nr_templates))
}

/// Writes the new tables and zeroes the other holes of `[0, fill)` (`clears` is the batch of
/// `MMUEXT_CLEAR_PAGE`s). Returns the number of table frames.
pub fn build(
    c: &mut Ctx,
    image: &ImageView,
    clears: &mut [MmuextOp],
    fill: u64,
) -> Result<u64, Failure> {
    let plan = c.plan;
    let (templates, nr_templates) = templates(image, plan.pt_pfn, fill)?;
    let templates = &templates[..nr_templates];
    let p2m_range = plan.p2m_pfn..plan.p2m_pfn + plan.p2m_pages;
    let mut nr_clears = 0;
    let mut table_frames = 0u64;
    for pfn in 0..fill {
        if c.fixed(pfn).is_some() || p2m_range.contains(&pfn) {
            continue;
        }
        let Some(&(first, _, template)) = templates.iter().find(|t| pfn >= t.0 && pfn < t.0 + t.1)
        else {
            // A hole that is no table: zeroed by Xen, in batches.
            clears[nr_clears] = MmuextOp {
                cmd: mmuext::CLEAR_PAGE,
                arg1: c.region_mfn(pfn),
                ..Default::default()
            };
            nr_clears += 1;
            if nr_clears == clears.len() {
                c.clear_pages(clears)?;
                nr_clears = 0;
            }
            continue;
        };
        table_frames += 1;
        let old = c.hole_old_pfn(pfn);
        let dst = c.region_page(pfn)?;
        c.drop_alias(old)?;
        let page = template
            .get(((pfn - first) * 4096) as usize..)
            .unwrap_or(&[]);
        translate(c, dst, page, fill)?;
    }
    c.clear_pages(&clears[..nr_clears])?;
    c.drop_aliases()?;
    Ok(table_frames)
}

/// Fills table frame `dst` from its template page: every present entry's PFN becomes the MFN
/// the renumbering gave it.
fn translate(c: &Ctx, dst: *mut u64, template: &[u8], fill: u64) -> Result<(), Failure> {
    let trampoline_pfn = c.plan.trampoline_pfn;
    for i in 0..512usize {
        let at = i * 8;
        let e = u64::from_le_bytes(template[at..at + 8].try_into().unwrap_or([0; 8]));
        let value = if pte::present(e) {
            let target = pte::mfn(e);
            let mfn = if target == trampoline_pfn {
                c.old_p2m[c.fixed(target).ok_or(Failure::Plan("no trampoline"))? as usize]
            } else if target < fill {
                c.region_mfn(target)
            } else {
                return Err(Failure::Plan(
                    "a table template maps a PFN the purgatory does not build",
                ));
            };
            (e & !pte::ADDR_MASK) | (mfn << 12)
        } else {
            0
        };
        // SAFETY: `dst` maps this table frame (a hole) writable; 512 entries fill it.
        unsafe { dst.add(i).write_volatile(value) };
    }
    Ok(())
}

/// Pins the new L4: Xen validates the whole new tree now. Returns its MFN.
pub fn pin(c: &mut Ctx, table_frames: u64) -> Result<u64, Failure> {
    let (h, plan) = (c.h, c.plan);
    let new_l4_mfn = c.region_mfn(plan.pt_pfn);
    c.hypercalls += 1;
    // SAFETY: pinning validates the new tables; no mapping in use changes.
    unsafe {
        hypercall::mmuext_op(&[MmuextOp {
            cmd: mmuext::PIN_L4_TABLE,
            arg1: new_l4_mfn,
            ..Default::default()
        }])
    }
    .map_err(|err| Failure::Hypercall {
        call: "mmuext_op(PIN_L4_TABLE)",
        frame: new_l4_mfn,
        err,
    })?;
    say!(
        "purgatory: tables pinned: {} frames (pt_base at pfn {:#x}), L4 mfn {:#x}{}",
        table_frames,
        plan.pt_pfn,
        new_l4_mfn,
        if h.direct_map_va != 0 {
            " (their direct-map aliases dropped)"
        } else {
            ""
        }
    );
    Ok(new_l4_mfn)
}
