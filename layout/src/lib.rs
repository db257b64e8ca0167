//! Plans the PV start-of-day region of a new kernel exactly as Xen's builders do.
#![no_std]
extern crate alloc;

/// What the planner needs to know of a kernel: the numbers libelf derives from its ELF
/// headers and Xen notes (the loader fills this from a parsed kernel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    /// XEN_ELFNOTE_VIRT_BASE (0 when absent).
    pub virt_base: u64,
    /// `pstart + virt_offset`: first byte of the loaded kernel.
    pub virt_kstart: u64,
    /// `pend + virt_offset`: end of the loaded kernel (bss included).
    pub virt_kend: u64,
    /// XEN_ELFNOTE_ENTRY, else e_entry.
    pub entry: u64,
    /// XEN_ELFNOTE_HYPERCALL_PAGE.
    pub hypercall_page: Option<u64>,
    /// XEN_ELFNOTE_INIT_P2M: where the kernel wants its P2M list mapped.
    pub init_p2m: Option<u64>,
    /// XEN_ELFNOTE_MOD_START_PFN non-zero: initrd passed as a PFN, not mapped.
    pub mod_start_pfn: bool,
    /// XEN_ELFNOTE_PAE_MODE is "yes" (4.17 dom0 magic becomes `xen-3.0-x86_64p`).
    pub pae_mode_yes: bool,
}
