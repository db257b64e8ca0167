//! Xen system time for a kernel entered after an old kernel that placed its `vcpu_info`
//! (every stock Linux does): Xen then updates only the placed copy, never shared_info's slot
//! again, so the purgatory names the placed frames on the command line
//! (`pvkexec.vcpu_info=k:mfn+off,...`) and the clock is read there.

use crate::{cmdline_value, parse_u64, println, shared};
use xenpv::{hypercall, pte, uvmf, SharedInfo, StartInfo, VcpuInfo, XenError, PAGE_SIZE};

#[repr(C, align(4096))]
struct Page([u8; PAGE_SIZE as usize]);

/// A page over which VCPU 0's placed vcpu_info frame is mapped.
static mut VCPU_INFO_PAGE: Page = Page([0; PAGE_SIZE as usize]);

/// `pvkexec.vcpu_info=k:mfn+off,...`: each placed vcpu_info (VCPU, MFN, offset).
pub fn vcpu_info_list(si: &StartInfo) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
    cmdline_value(si.cmdline(), "pvkexec.vcpu_info")
        .unwrap_or(b"")
        .split(|&b| b == b',')
        .filter_map(|e| {
            let mut kv = e.splitn(2, |&b| b == b':');
            let k = parse_u64(kv.next()?)?;
            let mut mo = kv.next()?.splitn(2, |&b| b == b'+');
            Some((k, parse_u64(mo.next()?)?, parse_u64(mo.next()?)?))
        })
}

/// Why VCPU 0's clock cannot be read.
#[derive(Debug)]
pub enum ClockError {
    Offset(u64),
    Map { mfn: u64, err: XenError },
}

impl core::fmt::Display for ClockError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ClockError::Offset(off) => write!(f, "vcpu_info offset {off:#x} runs past its page"),
            ClockError::Map { mfn, err } => {
                write!(f, "mapping VCPU 0's vcpu_info frame {mfn:#x}: {err}")
            }
        }
    }
}

/// VCPU 0's vcpu_info, for time: shared_info's slot, or, when the old kernel placed it, the
/// frame `pvkexec.vcpu_info=` names.
pub fn vcpu0(si: &StartInfo, sh: &'static SharedInfo) -> Result<&'static VcpuInfo, ClockError> {
    let Some((_, mfn, off)) = vcpu_info_list(si).find(|&(k, _, _)| k == 0) else {
        return Ok(&sh.vcpu_info[0]);
    };
    if off as usize + core::mem::size_of::<VcpuInfo>() > PAGE_SIZE as usize {
        return Err(ClockError::Offset(off));
    }
    let va = core::ptr::addr_of_mut!(VCPU_INFO_PAGE) as u64;
    // SAFETY: a bss page of this kernel nothing references now maps the placed vcpu_info
    // frame (the domain's own, not a table) from here on.
    unsafe {
        hypercall::update_va_mapping(va, pte::make(mfn, pte::L1_FLAGS | pte::D), uvmf::INVLPG)
    }
    .map_err(|err| ClockError::Map { mfn, err })?;
    println!(
        "PVKEXEC-INFO clock: VCPU 0's vcpu_info placed at {:#x}+{:#x}",
        mfn, off
    );
    // SAFETY: the mapping above; Xen keeps the vcpu_info there up to date.
    Ok(unsafe { &*((va + off) as *const VcpuInfo) })
}

/// Nanoseconds of Xen system time from `info`.
pub fn now(info: &VcpuInfo) -> u64 {
    shared::time_ns(info)
}
