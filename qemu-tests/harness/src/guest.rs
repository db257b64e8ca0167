//! Builds the guest workspace (`guest/`): freestanding PV binaries for the host triple, with the
//! flags in `guest/.cargo/config.toml` (which cargo reads because it runs in `guest/`).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Builds every guest binary (release profile) once per process and returns the directory
/// holding them.
pub fn build() -> Result<PathBuf> {
    static BUILT: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = built.as_ref() {
        return Ok(dir.clone());
    }
    let dir = build_uncached()?;
    *built = Some(dir.clone());
    Ok(dir)
}

fn build_uncached() -> Result<PathBuf> {
    let root = crate::workspace_root();
    // Settings of an outer cargo invocation must not leak into the guest build.
    let mut cmd = crate::cargo_command(&root.join("guest"));
    cmd.args(["build", "--release", "--quiet"]);
    let status = cmd
        .status()
        .context("running cargo for the guest workspace")?;
    if !status.success() {
        bail!("building the guest workspace (guest/) failed: {status}");
    }
    Ok(root.join("target/guest/release"))
}

/// Path of one built guest binary, building the guest workspace first.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = build()?.join(name);
    if !path.exists() {
        bail!("guest build produced no {}", path.display());
    }
    Ok(path)
}
