//! The hypercall page of a kernel that asks for one (`XEN_ELFNOTE_HYPERCALL_PAGE`: Linux
//! before 6.12's rework, the BSDs, Mini-OS). Xen's builder writes that page into the kernel
//! at boot; after a kexec nobody would, and the kernel's first hypercall would execute
//! whatever the file held there (`#UD` in Linux 5.10). So the loader writes the page Xen
//! would have written into the kernel segment's bytes, where the segment digest covers it.

use crate::{LoadError, ParsedKernel, Reason};
use xenpv::{hypercall_page, PAGE_SIZE};

/// Writes the hypercall page into `kbytes` (the kernel's loaded bytes from `virt_kstart`),
/// growing them with zeros when the page lies in the kernel's bss. Nothing happens for a
/// kernel without the note.
pub fn write_into(
    input: &str,
    kernel: &ParsedKernel,
    kbytes: &mut Vec<u8>,
) -> Result<(), LoadError> {
    let Some(va) = kernel.notes.hypercall_page else {
        return Ok(());
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
    // Inside the kernel image, whose size the parser bounded: these fit in usize.
    let at = (va - kernel.virt_kstart) as usize;
    let end = at + PAGE_SIZE as usize;
    if kbytes.len() < end {
        kbytes.resize(end, 0);
    }
    let page: &mut [u8; PAGE_SIZE as usize] = (&mut kbytes[at..end])
        .try_into()
        .expect("the slice is one page long");
    hypercall_page::fill(page);
    Ok(())
}
