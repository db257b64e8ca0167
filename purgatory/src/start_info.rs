//! Purgatory stage 4's last writes to the new start_info (docs/kexec-image.md): what Xen's
//! builder would have put there that only this domain knows (shared_info, the power-management
//! flags, a domU's ring frames), and the `pvkexec.` command-line words for the new kernel.

use crate::aps::Parked;
use crate::failure::Failure;
use crate::frames::Ctx;
use crate::grants;
use crate::plan::{Checked, VcpuInfoPlacement};
use crate::rings::Rings;
use xenpv::{sif, StartInfo};

/// Completes the new start_info (an image page in the old region) and returns it for the
/// stages that write it last.
pub fn complete(
    c: &Ctx,
    k: &Checked,
    rings: Option<&Rings>,
) -> Result<&'static mut StartInfo, Failure> {
    let (h, plan, old_si) = (c.h, &k.plan, k.old_si);
    let si_pfn = (plan.start_info_va - plan.virt_base) / 4096;
    let si_old = c
        .fixed(si_pfn)
        .ok_or(Failure::Plan("no start_info segment"))?;
    let si_va = h.old_virt_base + si_old * 4096;
    // SAFETY: the start_info segment's page is mapped writable in the old region (it is an
    // image page in the module), verified, and not used by anything else.
    let si = unsafe { &mut *(si_va as *mut StartInfo) };
    si.shared_info = old_si.shared_info;
    si.flags |= old_si.flags & sif::PM_MASK;
    if let Some(r) = rings {
        si.store_mfn = r.store_mfn;
        si.console_mfn = r.console_mfn;
    }
    Ok(si)
}

/// Appends the `pvkexec.` words that tell the new kernel where the parked VCPUs, the placed
/// `vcpu_info`s and the grants still mapped are.
pub fn append_words(
    si: &mut StartInfo,
    parked: Option<&Parked>,
    vcpu_info: &VcpuInfoPlacement,
    grant_reserve: u64,
    busy: &[grants::Busy],
) -> Result<(), Failure> {
    if let Some(p) = parked {
        append_word(si, format_args!("pvkexec.park={:#x}@{:#x}", p.page, p.va))?;
    }
    if !vcpu_info.frames().is_empty() {
        append_word(si, format_args!("pvkexec.vcpu_info={}", vcpu_info))?;
    }
    if grant_reserve > 0 {
        append_word(si, format_args!("pvkexec.grants_busy={}", BusyList(busy)))?;
    }
    Ok(())
}

/// Appends ` <word>` to a start_info command line.
fn append_word(si: &mut StartInfo, word: core::fmt::Arguments) -> Result<(), Failure> {
    struct Line<'a> {
        buf: &'a mut [u8],
        len: usize,
    }
    impl core::fmt::Write for Line<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.len + s.len();
            // Keep the last byte for the terminating NUL.
            if end >= self.buf.len() {
                return Err(core::fmt::Error);
            }
            self.buf[self.len..end].copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    let len = si
        .cmd_line
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(si.cmd_line.len());
    let mut line = Line {
        buf: &mut si.cmd_line,
        len,
    };
    let sep = if len == 0 { "" } else { " " };
    core::fmt::write(&mut line, format_args!("{sep}{word}"))
        .map_err(|_| Failure::Plan("no room on the command line for a pvkexec. word"))?;
    Ok(())
}

/// `8:0x1234,9:0x1235` (ref and frame of each grant still mapped); `none` if there is none.
struct BusyList<'a>(&'a [grants::Busy]);

impl core::fmt::Display for BusyList<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{:#x}", b.grant_ref, b.frame)?;
        }
        Ok(())
    }
}
