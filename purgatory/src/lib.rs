//! The purgatory: position-independent no_std code that runs after the old kernel's teardown,
//! verifies every segment's SHA-256, installs the new kernel's PV page tables and enters it
//! through the trampoline (design.md sections 2 and 5).
//!
//! Not implemented yet: this crate only reserves its place in the guest workspace. Nothing
//! here is built into an image or run.
#![no_std]
