//! Host tools and inputs the QEMU tests share: the `pvkexec` CLI and deterministic test files.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Builds (once per process) and returns the `pvkexec` binary of this workspace.
pub fn pvkexec() -> Result<PathBuf> {
    static BUILT: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.as_ref() {
        return Ok(p.clone());
    }
    let root = crate::workspace_root();
    let status = crate::cargo_command(&root)
        .args(["build", "--quiet", "-p", "loader", "--bin", "pvkexec"])
        .status()
        .context("running cargo build for pvkexec")?;
    if !status.success() {
        bail!("building pvkexec failed");
    }
    // cargo_command drops CARGO_TARGET_DIR, so the binary is in the workspace's target/.
    let path = root.join("target/debug/pvkexec");
    *built = Some(path.clone());
    Ok(path)
}

/// A deterministic file of `len` bytes under the cache (an initrd stand-in).
pub fn test_file(len: usize) -> Result<PathBuf> {
    let path = crate::cache_dir().join(format!("test-initrd-{len}.bin"));
    if std::fs::metadata(&path).map(|m| m.len() as usize).ok() != Some(len) {
        std::fs::create_dir_all(crate::cache_dir())?;
        let bytes: Vec<u8> = (0..len).map(|i| (i * 131 + i / 4096) as u8).collect();
        std::fs::write(&path, bytes)?;
    }
    Ok(path)
}
