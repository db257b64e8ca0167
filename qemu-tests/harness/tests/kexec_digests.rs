//! Kexec, first stage, under real Xen 4.17: `pvkexec build` makes an image, the old test kernel
//! (kexecold) maps its purgatory and enters it, and the purgatory checks every new-kernel
//! segment's SHA-256 before anything else. Intact images verify; one flipped byte in a segment
//! is named and the domain is crashed. (Later stages are not implemented: the purgatory then
//! refuses to continue and crashes the domain, which these tests also assert.)

use harness::{guest, tools, BootConfig, BootResult, Module, Verdict};
use std::path::{Path, PathBuf};
use std::process::Command;

fn build_image(name: &str, mem_mib: u64, initrd: Option<&Path>) -> PathBuf {
    let new_kernel = guest::binary("bootcheck").unwrap();
    let out = harness::cache_dir().join(format!("kexec-{name}.img"));
    let mut cmd = Command::new(tools::pvkexec().unwrap());
    cmd.arg("build").arg("--kernel").arg(&new_kernel);
    cmd.args(["--mem-mib", &mem_mib.to_string(), "--mode", "dom0", "-o"]);
    cmd.arg(&out);
    if let Some(i) = initrd {
        cmd.arg("--initrd").arg(i);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eprintln!(
        "[{name}] pvkexec build:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    out
}

fn run(name: &str, image: &Path, mem_mib: u64) -> BootResult {
    let mut cfg = BootConfig::new(guest::binary("kexecold").unwrap());
    cfg.mem_mib = mem_mib;
    cfg.tag = name.into();
    cfg.modules.push(Module {
        path: image.to_path_buf(),
        args: String::new(),
    });
    harness::boot(&cfg).unwrap()
}

/// Flips one byte in the data of segment `index` and returns the corrupted copy.
fn corrupt(image: &Path, index: usize, name: &str) -> PathBuf {
    let mut bytes = std::fs::read(image).unwrap();
    let nr = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
    assert!(index < nr);
    let mut off = u64::from_le_bytes(bytes[48..56].try_into().unwrap()) as usize;
    for i in 0..index {
        let len = u64::from_le_bytes(
            bytes[64 + 64 * i + 24..64 + 64 * i + 32]
                .try_into()
                .unwrap(),
        );
        off += len.next_multiple_of(4096) as usize;
    }
    let len = u64::from_le_bytes(
        bytes[64 + 64 * index + 24..64 + 64 * index + 32]
            .try_into()
            .unwrap(),
    );
    bytes[off + len as usize / 2] ^= 0x20;
    let out = harness::cache_dir().join(format!("kexec-{name}.img"));
    std::fs::write(&out, bytes).unwrap();
    // The host-side check sees it too.
    let o = Command::new(tools::pvkexec().unwrap())
        .arg("inspect")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "pvkexec inspect must refuse a corrupted image"
    );
    out
}

fn assert_verified(r: &BootResult, segments: usize) {
    assert_eq!(r.verdict, Verdict::Crashed, "log:\n{}", r.log);
    assert!(r.log.contains("purgatory: entered"), "log:\n{}", r.log);
    assert!(
        r.log
            .contains(&format!("purgatory: digests verified: {segments} segments")),
        "log:\n{}",
        r.log
    );
    assert!(!r.log.contains("mismatch"));
    assert!(r.log.contains("Hardware Dom0 crashed"));
}

#[test]
fn intact_image_verifies_64mib() {
    let image = build_image("plain-64M", 64, None);
    assert_verified(&run("kexec-64M", &image, 64), 2);
}

#[test]
fn intact_image_with_initrd_verifies_1gib() {
    let initrd = tools::test_file((3 << 20) + 123).unwrap();
    let image = build_image("initrd-1G", 1024, Some(&initrd));
    assert_verified(&run("kexec-initrd-1G", &image, 1024), 3);
}

#[test]
fn flipped_byte_in_each_new_kernel_segment_is_named() {
    let initrd = tools::test_file((1 << 20) + 5).unwrap();
    let image = build_image("initrd-64M", 64, Some(&initrd));
    for (index, kind) in [(0usize, "kernel"), (1, "initrd")] {
        let name = format!("corrupt-{kind}");
        let bad = corrupt(&image, index, &name);
        let r = run(&name, &bad, 64);
        assert_eq!(r.verdict, Verdict::Crashed, "log:\n{}", r.log);
        let line = format!("purgatory: segment {index} ({kind}): SHA-256 mismatch");
        assert!(r.log.contains(&line), "no {line:?} in:\n{}", r.log);
        assert!(!r.log.contains("digests verified"), "log:\n{}", r.log);
        assert!(r.log.contains("Hardware Dom0 crashed"), "log:\n{}", r.log);
    }
}
