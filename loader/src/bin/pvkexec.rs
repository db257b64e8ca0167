//! `pvkexec`: kexec and kdump for Xen PV guests (the command line: `loader/src/cli.rs`; started
//! as `kexec`, kexec-tools' spelling: `loader/src/cli_kexec_tools.rs`).
//!
//! Exit codes: 0 success; 1 refused or failed, with nothing changed; 2 usage error; 3 bad input
//! (an unreadable or invalid kernel, initrd, image or dump disk, or no layout fits). `status`:
//! 0 when the image asked about is loaded (the kexec image; with `-p` the crash kernel), 3 when
//! none is. `vmcore`: 4 when the disk holds no dump (no ELF core file at sector 0).

fn main() -> std::process::ExitCode {
    loader::cli::main()
}
