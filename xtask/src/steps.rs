//! Helpers the commands share: cargo without the outer invocation's settings, named steps.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Instant;

/// Runs cargo in `dir` with the outer invocation's target settings removed.
pub(crate) fn cargo(dir: &Path, args: &[&str]) -> Result<()> {
    cargo_env(dir, args, &[])
}

/// [`cargo`] with extra environment variables.
pub(crate) fn cargo_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let mut cmd = harness::cargo_command(dir);
    cmd.args(args).envs(env.iter().copied());
    let status = cmd
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!(
            "`cargo {}` in {} failed ({status})",
            args.join(" "),
            dir.display()
        );
    }
    Ok(())
}

pub(crate) fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let start = Instant::now();
    eprintln!("==> {name}");
    f().with_context(|| format!("step `{name}` failed"))?;
    eprintln!("<== {name}: ok ({:.1} s)", start.elapsed().as_secs_f64());
    Ok(())
}
