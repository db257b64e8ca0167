//! The hypercall page Xen writes for a 64-bit PV kernel that asks for one
//! (`XEN_ELFNOTE_HYPERCALL_PAGE`). Its layout is ABI: Xen 4.17 and 4.20 both fill the page
//! with `int3` and then write one 32-byte stub per hypercall number
//! (`xen/arch/x86/domain.c` `init_hypercall_page`, `xen/arch/x86/pv/hypercall.c`
//! `pv_ring3_init_hypercall_page`). A kexec'd kernel never meets Xen's builder, so the loader
//! writes this page into the kernel's bytes itself.

use crate::{hc, PAGE_SIZE};

/// Bytes per stub: the kernel calls `hypercall_page + 32 * nr`.
pub const STUB_SIZE: usize = 32;
/// What Xen fills the page with before writing the stubs (`int3`).
pub const FILL: u8 = 0xcc;

/// The stub for hypercall `nr`: `push %rcx; push %r11; mov $nr,%eax; syscall; pop %r11;
/// pop %rcx; ret`. `iret` does not return: its stub also pushes `%rax` and ends at the
/// `syscall`, since the kernel jumps to it with the iret frame on its stack.
fn stub(nr: u32) -> ([u8; 14], usize) {
    let n = nr.to_le_bytes();
    if u64::from(nr) == hc::IRET {
        let s = [
            0x51, 0x41, 0x53, 0x50, 0xb8, n[0], n[1], n[2], n[3], 0x0f, 0x05, 0, 0, 0,
        ];
        (s, 11)
    } else {
        let s = [
            0x51, 0x41, 0x53, 0xb8, n[0], n[1], n[2], n[3], 0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3,
        ];
        (s, 14)
    }
}

/// Writes the page Xen would write into `page`.
pub fn fill(page: &mut [u8; PAGE_SIZE as usize]) {
    page.fill(FILL);
    for (nr, slot) in page.chunks_exact_mut(STUB_SIZE).enumerate() {
        // 128 slots: the number always fits in u32.
        let (code, len) = stub(nr as u32);
        slot[..len].copy_from_slice(&code[..len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_match_xens_encoding() {
        let mut page = [0u8; 4096];
        fill(&mut page);
        // mmu_update (1): push rcx; push r11; mov $1,%eax; syscall; pop r11; pop rcx; ret.
        assert_eq!(
            &page[32..32 + 16],
            &[0x51, 0x41, 0x53, 0xb8, 1, 0, 0, 0, 0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3, 0xcc, 0xcc]
        );
        // iret (23): push rcx; push r11; push rax; mov $23,%eax; syscall; then int3.
        let iret = 23 * 32;
        assert_eq!(
            &page[iret..iret + 12],
            &[0x51, 0x41, 0x53, 0x50, 0xb8, 23, 0, 0, 0, 0x0f, 0x05, 0xcc]
        );
        // The last slot is hypercall 127, and the page ends in int3 padding.
        assert_eq!(&page[4064..4068], &[0x51, 0x41, 0x53, 0xb8]);
        assert_eq!(page[4064 + 4], 127);
        assert!(page[4064 + 14..].iter().all(|&b| b == FILL));
    }
}
