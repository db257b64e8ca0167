//! The kexec image, passed as the kernel's boot module, and its purgatory segment.

use kernelrt::notes::VIRT_BASE;
use kernelrt::report::Why;
use kernelrt::why;
use pvhandoff::image::{find_purgatory, ImageError, ImageHeader};
use xenpv::Pod;
use xenpv::{StartInfo, PAGE_SIZE};

/// Where the purgatory runs and where its pages are now.
pub struct Purgatory {
    /// The image's lower-half base the purgatory was relocated for.
    pub base: u64,
    /// Its boot VCPU entry (the APs' is `AP_ENTRY_OFFSET` further).
    pub entry: u64,
    pub nr_pages: u64,
    /// PFN of its first page inside the module.
    pub first_pfn: u64,
}

/// Finds the purgatory segment of the module's image; it must be page aligned in the module
/// and under 2 MiB (one L1 table maps it, and its last entry is the scratch VA).
pub fn purgatory(si: &StartInfo) -> Result<Purgatory, Why> {
    if si.mod_start == 0 || si.mod_len == 0 {
        return why!("no boot module: pass the kexec image as the kernel's module");
    }
    // SAFETY: without MOD_START_PFN, Xen maps the module at mod_start for mod_len bytes in the
    // initial region; it stays mapped and is only read here.
    let bytes =
        unsafe { core::slice::from_raw_parts(si.mod_start as *const u8, si.mod_len as usize) };
    // As a kernel side finds it: no segment before it has zero runs, and nothing else of the
    // image is read here (the purgatory checks the rest, the zero-run table included).
    let (seg, offset) = match find_purgatory(bytes) {
        Ok((_, seg, offset)) => (seg, offset),
        Err(ImageError::NoPurgatory) => return why!("the image has no purgatory segment"),
        Err(e) => return why!("module is not a kexec image: {:?}", e),
    };
    let header = match ImageHeader::read_from(bytes) {
        Some(h) => h,
        None => return why!("module is not a kexec image: TooShort"),
    };
    if !si.mod_start.is_multiple_of(PAGE_SIZE)
        || !offset.is_multiple_of(PAGE_SIZE)
        || seg.nr_pages > 511
    {
        return why!("purgatory segment not page aligned in the module or 2 MiB or more");
    }
    Ok(Purgatory {
        base: header.purgatory_base,
        entry: header.purgatory_entry,
        nr_pages: seg.nr_pages,
        first_pfn: (si.mod_start + offset - VIRT_BASE) / PAGE_SIZE,
    })
}
