//! Builds the purgatory (guest workspace, static PIE) so the loader can embed it with
//! `include_bytes!`: building the loader builds the purgatory.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    // A purgatory built beforehand (the fuzz builds: their nightly toolchain and sanitizer
    // flags must not rebuild the guest workspace).
    println!("cargo:rerun-if-env-changed=PVKEXEC_PURGATORY_PREBUILT");
    if let Ok(prebuilt) = std::env::var("PVKEXEC_PURGATORY_PREBUILT") {
        println!("cargo:rerun-if-changed={prebuilt}");
        println!("cargo:rustc-env=PVKEXEC_PURGATORY_ELF={prebuilt}");
        return;
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.join("..");
    for dir in [
        "purgatory",
        "trampoline",
        "xenpv",
        "handoff",
        "ldscripts",
        "guest",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--quiet", "-p", "purgatory"])
        .current_dir(root.join("guest"));
    // The guest build has its own flags and target dir (guest/.cargo/config.toml): drop what
    // the outer cargo exports to build scripts.
    for (key, _) in std::env::vars() {
        if (key.starts_with("CARGO_") && key != "CARGO_HOME") || key.starts_with("RUSTC") {
            cmd.env_remove(&key);
        }
    }
    for key in [
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "TARGET",
        "HOST",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
    ] {
        cmd.env_remove(key);
    }
    let status = cmd.status().expect("running cargo for the purgatory");
    assert!(
        status.success(),
        "building the purgatory (guest/ workspace) failed"
    );
    let bin = root.join("target/guest/release/purgatory");
    let bin = bin.canonicalize().unwrap_or(bin);
    println!("cargo:rustc-env=PVKEXEC_PURGATORY_ELF={}", bin.display());
}
