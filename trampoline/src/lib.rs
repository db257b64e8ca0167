//! The trampoline: one page mapped at the same lower-half address in the old and the new page
//! tables; switches to the new L4 (`MMUEXT_NEW_BASEPTR`), unpins the old one and jumps to the
//! new kernel's entry with `rsi` = start_info (design.md section 2).
//!
//! Not implemented yet: this crate only reserves its place in the guest workspace.
#![no_std]
