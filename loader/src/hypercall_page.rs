//! The hypercall page of a kernel that asks for one (`XEN_ELFNOTE_HYPERCALL_PAGE`: Linux
//! before 6.12's rework, the BSDs, Mini-OS). Xen's builder writes that page into the kernel
//! at boot; after a kexec nobody would, and the kernel's first hypercall would execute
//! whatever the file held there (`#UD` in Linux 5.10). So the loader writes the page Xen
//! would have written into the kernel segment's bytes, where the segment digest covers it.

use crate::{LoadError, ParsedKernel, Reason};
use xenpv::{hypercall_page, PAGE_SIZE};

/// The hypercall page Xen would write for `kernel`, and where it lies in the kernel
/// segment (bytes from `virt_kstart`; it may lie past the file bytes, in the kernel's bss,
/// which the segment then reaches). `None` for a kernel without the note.
pub fn page_for(
    input: &str,
    kernel: &ParsedKernel,
) -> Result<Option<(u64, [u8; PAGE_SIZE as usize])>, LoadError> {
    let Some(va) = kernel.notes.hypercall_page else {
        return Ok(None);
    };
    let refuse = |why: String| Err(LoadError::new(input, None, Reason::Note(why)));
    if va % PAGE_SIZE != 0 {
        return refuse(format!(
            "HYPERCALL_PAGE {va:#x} is not page-aligned (Xen fills one whole page)"
        ));
    }
    let inside = va >= kernel.virt_kstart
        && va
            .checked_add(PAGE_SIZE)
            .is_some_and(|end| end <= kernel.virt_kend);
    if !inside {
        return refuse(format!(
            "HYPERCALL_PAGE {va:#x} is not a page of the kernel image ({:#x}..{:#x})",
            kernel.virt_kstart, kernel.virt_kend
        ));
    }
    let mut page = [0u8; PAGE_SIZE as usize];
    hypercall_page::fill(&mut page);
    Ok(Some((va - kernel.virt_kstart, page)))
}
