//! The `pvkexec` binary's exit codes, run as a user runs it (no module on the build host:
//! `$PVKEXEC_DEVICE` names a device that does not exist): 0, 1 refused, 2 usage, 3 bad input,
//! 4 no dump; and the `kexec` spelling through a symlink.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pvkexec-exit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(program: &Path, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .env("PVKEXEC_DEVICE", dir.join("no-such-device"))
        .env("PVKEXEC_RUN_DIR", dir.join("run"))
        .output()
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const PVKEXEC: &str = env!("CARGO_BIN_EXE_pvkexec");

#[test]
fn pvkexec_exit_codes() {
    let dir = scratch("pvkexec");
    let bin = Path::new(PVKEXEC);
    // No module: refused (1), the device named.
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["status", "-p"],
        &["exec"],
        &["unload"],
    ] {
        let o = run(bin, args, &dir);
        assert_eq!(code(&o), 1, "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("no-such-device: no such device"),
            "{}",
            stderr(&o)
        );
    }
    // Usage (2).
    for args in [
        &["load"][..],
        &["load", "--image", "i", "--reuse-cmdline"],
        &["load", "--kernel", "k", "--crash-mib", "8"],
        &["status", "--bogus"],
    ] {
        assert_eq!(code(&run(bin, args, &dir)), 2, "{args:?}");
    }
    // Bad input (3): a kernel that is not one.
    let junk = dir.join("junk");
    std::fs::write(&junk, b"not a kernel").unwrap();
    let o = run(
        bin,
        &[
            "extract",
            "--kernel",
            junk.to_str().unwrap(),
            "-o",
            "/dev/null",
        ],
        &dir,
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    // vmcore: no dump (4), an unreadable disk (3), a dump (0).
    let disk = dir.join("disk");
    let out = dir.join("vmcore");
    std::fs::write(&disk, vec![0u8; 8192]).unwrap();
    let vmcore = |disk: &std::path::Path| {
        run(
            bin,
            &[
                "vmcore",
                "--disk",
                disk.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
            &dir,
        )
    };
    let o = vmcore(&disk);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no dump on this disk"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    let o = vmcore(&dir.join("none"));
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let mut core = vec![0u8; 4096];
    core[..4].copy_from_slice(b"\x7fELF");
    core[4] = 2;
    core[16] = 4;
    core[32..40].copy_from_slice(&64u64.to_le_bytes());
    core[54] = 56;
    core[56] = 1;
    core[64 + 8..64 + 16].copy_from_slice(&1024u64.to_le_bytes());
    core[64 + 32..64 + 40].copy_from_slice(&100u64.to_le_bytes());
    std::fs::write(&disk, &core).unwrap();
    let o = vmcore(&disk);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 1124);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kexec_spelling_exit_codes() {
    let dir = scratch("kexec");
    let kexec = dir.join("kexec");
    std::os::unix::fs::symlink(PVKEXEC, &kexec).unwrap();
    let o = run(&kexec, &["--help"], &dir);
    assert_eq!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("usage: kexec"));
    for args in [&["-l"][..], &["--bogus"], &["-p", "-e"], &[], &["-S"]] {
        let o = run(&kexec, args, &dir);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
    }
    // kdump-tools' forms reach the module (here: refused, none loaded).
    for args in [
        &[
            "-p",
            "-s",
            "--args-linux",
            "--command-line= console=hvc0",
            "--initrd=/i",
            "/k",
        ][..],
        &["-s", "-p", "-u"],
        &["-l", "/k", "--reuse-cmdline", "--append=quiet", "-d"],
        &["-e", "-x", "-y"],
    ] {
        let o = run(&kexec, args, &dir);
        assert_eq!(code(&o), 1, "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("no such device"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
