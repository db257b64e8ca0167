//! Xen ELF notes of the fixed-address kernels (capture and test kernels), emitted into
//! `.note.Xen` (a PT_NOTE segment).
//! They hold absolute values: these kernels are fixed-address, non-PIE executables.

use core::arch::global_asm;

/// Virtual base shared with Linux (`__START_KERNEL_map`); matches ldscripts/pv-kernel.ld.
pub const VIRT_BASE: u64 = 0xffff_ffff_8000_0000;

global_asm!(
    r#"
    .macro xen_note_begin type
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 3f - 2f
    .long \type
    .asciz "Xen"
    .balign 4
2:
    .endm
    .macro xen_note_end
3:  .balign 4
    .endm

    xen_note_begin 6
    .asciz "pvkexec"
    xen_note_end
    xen_note_begin 7
    .asciz "0.1"
    xen_note_end
    xen_note_begin 5
    .asciz "xen-3.0"
    xen_note_end
    xen_note_begin 8
    .asciz "generic"
    xen_note_end
    xen_note_begin 3
    .quad 0xffffffff80000000
    xen_note_end
    xen_note_begin 4
    .quad 0
    xen_note_end
    xen_note_begin 1
    .quad _start
    xen_note_end
    .text
    "#
);
