//! The Debian packages as `cargo xtask deb` builds them (the `packaging` crate): the release
//! CLI, the capture kernel and the generated man pages and completions, packed into
//! `target/debian/`.

use anyhow::{bail, Context, Result};

pub use packaging::Built;

/// Builds the packages once per process and returns their paths.
pub fn build() -> Result<Built> {
    static BUILT: std::sync::Mutex<Option<Built>> = std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = built.as_ref() {
        return Ok(b.clone());
    }
    let root = crate::workspace_root();
    let out_dir = root.join("target/debian");
    let generated = out_dir.join("generated");
    // Afresh: a page of a subcommand since removed must not stay in the package.
    let _ = std::fs::remove_dir_all(&generated);
    packaging::generate_docs(
        loader::cli::command(),
        &loader::cli::man_extra_roff(),
        &generated,
    )
    .context("generating man pages and completions")?;
    let b = packaging::build(&packaging::Inputs {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pvkexec: crate::kmod::pvkexec_release()?,
        capture: crate::guest::binary("capture")?,
        generated,
        root,
        out_dir,
    })?;
    *built = Some(b.clone());
    Ok(b)
}

/// Runs lintian on the packages; its errors (`E:` lines) fail, warnings are printed.
pub fn lint(b: &Built) -> Result<String> {
    crate::provision::apt_install(&["lintian"])?;
    let o = std::process::Command::new("lintian")
        .args(["--allow-root", "--tag-display-limit", "0"])
        .args(b.all())
        .output()
        .context("running lintian")?;
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("E: ")).collect();
    if !errors.is_empty() {
        bail!("lintian reports errors:\n{}", errors.join("\n"));
    }
    if !o.status.success() && said.trim().is_empty() {
        bail!(
            "lintian failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(said)
}
