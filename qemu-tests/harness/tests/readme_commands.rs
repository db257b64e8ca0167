//! The README's commands as a new user types them, run through `cargo xtask` itself rather than
//! the harness functions behind it (an xtask default that differs from the harness's is only
//! seen this way): `cargo xtask kdump --vmcore-out F` writes a vmcore that is an ELF core file.

use std::io::Read;

#[test]
fn readme_kdump_command_writes_a_vmcore() {
    let dir = harness::cache_dir().join("kdump");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("readme-{}.vmcore", std::process::id()));
    let _ = std::fs::remove_file(&out);
    // Spelled as in README.md's Commands section.
    let st = harness::cargo_command(&harness::workspace_root())
        .args(["xtask", "kdump", "--vmcore-out"])
        .arg(&out)
        .status()
        .expect("running cargo xtask kdump");
    assert!(st.success(), "cargo xtask kdump --vmcore-out exited {st}");
    let mut magic = [0u8; 18];
    std::fs::File::open(&out)
        .and_then(|mut f| f.read_exact(&mut magic))
        .unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    assert_eq!(&magic[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(
        u16::from_le_bytes([magic[16], magic[17]]),
        4,
        "not a core file"
    );
    let len = std::fs::metadata(&out).unwrap().len();
    assert!(len > 200 << 20, "a 256 MiB domain's vmcore of {len} bytes");
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(out.with_extension("disk"));
}
