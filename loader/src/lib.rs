//! pvkexec's loader: reads a new kernel (ELF64 vmlinux, gzip'd ELF, bzImage with any payload
//! compression Linux uses), reads its Xen notes, and plans its PV start-of-day layout with
//! [`pvlayout`]. The CLI `pvkexec` is [`cli`] (its binary, `src/bin/pvkexec.rs`, only calls it).

pub mod cli;
pub mod cli_build;
pub mod cli_common;
pub mod cli_kdump;
pub mod cli_kexec;
pub mod cli_kexec_tools;
pub mod cli_state;
pub mod cli_status;
pub mod cli_system;
pub mod cli_vmcore;
pub mod decompress;
pub mod device;
pub mod dump_disk;
pub mod error;
pub mod hypercall_page;
pub mod image;
pub mod input;
pub mod inspect;
pub mod kernel;
pub mod linux;
pub mod notes;
pub mod plan;
pub mod purgatory;

pub use error::{LoadError, Reason};
pub use kernel::{parse_kernel, Container, ParsedKernel};
