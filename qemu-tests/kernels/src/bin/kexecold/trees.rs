//! Process page-table trees: L4s sharing the kernel half, pinned as a running kernel's are.
//! Pinned trees other than the current one outlive a kexec unless the kernel side unpins them
//! (handoff contract).

use crate::fill::Filler;
use crate::frames::Layout;
use crate::tables::KernelL4;
use kernelrt::report::Why;
use kernelrt::why;
use xenpv::{hypercall, mmuext, MmuextOp};

/// Process trees: an L4 each with the kernel's entries (Xen fills its own slots), pinned.
pub fn pin(f: &mut Filler, l: &Layout, l4: &KernelL4, p2m: &[u64]) -> Result<(), Why> {
    for &t in &l.trees {
        f.fill(t, |i| {
            if (256..272).contains(&i) {
                0
            } else {
                l4.entry(i)
            }
        })?;
    }
    f.done()?;
    each(l, p2m, mmuext::PIN_L4_TABLE, "PIN_L4_TABLE")
}

/// Unpins the process trees.
pub fn unpin(l: &Layout, p2m: &[u64]) -> Result<(), Why> {
    each(l, p2m, mmuext::UNPIN_TABLE, "UNPIN_TABLE")
}

/// One `mmuext_op` (`cmd` on the L4's MFN) per process tree.
fn each(l: &Layout, p2m: &[u64], cmd: u32, name: &str) -> Result<(), Why> {
    for &t in &l.trees {
        let mfn = p2m[t as usize];
        // SAFETY: pins or unpins a fully built L4 of our own frames that is loaded nowhere;
        // no mapping in use changes.
        let r = unsafe {
            hypercall::mmuext_op(&[MmuextOp {
                cmd,
                arg1: mfn,
                ..Default::default()
            }])
        };
        if let Err(e) = r {
            return why!("{}(mfn {:#x}): {}", name, mfn, e);
        }
    }
    Ok(())
}
