//! `cargo xtask kmod`: build the kernel module against Debian's headers.

use anyhow::Result;

/// `cargo xtask kmod`: pvkexec.ko for the rig's 6.1 and bookworm's 6.12 build (linked, -Werror),
/// and a compile of the module against trixie's own 6.12 headers.
pub(crate) fn run() -> Result<()> {
    use harness::kmod::{self, Headers};
    println!("kmod/: {} lines of C", kmod::source_lines()?);
    for which in [Headers::Bookworm, Headers::Bookworm612] {
        let ko = kmod::build(which)?;
        println!(
            "{}: {} ({} bytes)",
            which.name(),
            ko.display(),
            std::fs::metadata(&ko)?.len()
        );
    }
    let obj = kmod::compile_check_trixie()?;
    println!(
        "trixie: {} compiled (gcc-12; no .ko: trixie's kbuild tools need gcc-14 and glibc 2.38)",
        obj.display()
    );
    Ok(())
}
