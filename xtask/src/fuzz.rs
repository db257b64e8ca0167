//! `cargo xtask fuzz`: every cargo-fuzz target in `fuzz/` for a while each, from the committed
//! seeds (`fuzz/seeds/TARGET`) and a working corpus under `target/fuzz-corpus/` (new inputs go
//! there, not into the tree). Needs the nightly toolchain; installs cargo-fuzz from crates.io
//! when it is missing. Prints executions and exec/s per target; fails on any crash.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// Runs `rustup run nightly cargo ARGS` in `dir` without the outer cargo's target and flag
/// variables (the fuzz build has its own).
fn nightly_cargo(dir: &Path) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"]).current_dir(dir);
    for (key, _) in std::env::vars() {
        let outer = key.starts_with("CARGO_") && key != "CARGO_HOME";
        if outer || key.starts_with("RUSTC") || key == "RUSTFLAGS" || key == "RUSTUP_TOOLCHAIN" {
            cmd.env_remove(&key);
        }
    }
    cmd.env_remove("CARGO");
    cmd
}

fn ensure_cargo_fuzz(root: &Path) -> Result<()> {
    let have = nightly_cargo(root)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    println!("cargo-fuzz is missing: cargo install cargo-fuzz");
    let status = Command::new("cargo")
        .args(["install", "--locked", "cargo-fuzz"])
        .status()
        .context("running cargo install")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed");
    }
    Ok(())
}

/// One target's figures from libFuzzer's final stats.
struct Outcome {
    target: String,
    runs: u64,
    seconds: u64,
    crashed: bool,
}

fn stat(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs every target (or `only`) for `seconds` each.
pub fn run(root: &Path, seconds: u64, only: &[String]) -> Result<bool> {
    ensure_cargo_fuzz(root)?;
    // The purgatory the loader embeds, built as usual (stable, guest flags) and frozen for the
    // fuzz build, which must not rebuild the guest with nightly and sanitizer flags.
    let purgatory = harness::guest::build()?.join("purgatory");
    let frozen = root.join("target/fuzz/purgatory.elf");
    std::fs::create_dir_all(frozen.parent().unwrap())?;
    std::fs::copy(&purgatory, &frozen).context("copying the purgatory for the fuzz build")?;
    let fuzz_dir = root.join("fuzz");
    let list = nightly_cargo(&fuzz_dir)
        .args(["fuzz", "list"])
        .output()
        .context("cargo fuzz list")?;
    let targets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty() && (only.is_empty() || only.iter().any(|o| o == t)))
        .map(String::from)
        .collect();
    if targets.is_empty() {
        bail!(
            "no fuzz targets (cargo fuzz list in {})",
            fuzz_dir.display()
        );
    }
    let mut outcomes = Vec::new();
    for t in &targets {
        let corpus = root.join("target/fuzz-corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        println!("== fuzz {t}: {seconds} s");
        let out = nightly_cargo(&fuzz_dir)
            .env("CARGO_TARGET_DIR", root.join("target/fuzz"))
            .env("PVKEXEC_PURGATORY_PREBUILT", &frozen)
            .args(["fuzz", "run", t])
            .arg(&corpus)
            .arg(fuzz_dir.join("seeds").join(t))
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-print_final_stats=1",
            ])
            .args(["-rss_limit_mb=2048", "-timeout=20"])
            .output()
            .with_context(|| format!("cargo fuzz run {t}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let runs = stat(&log, "stat::number_of_executed_units:").unwrap_or(0);
        let secs = log
            .lines()
            .rev()
            .find_map(|l| {
                let rest = l.strip_prefix("Done ")?;
                rest.split(" in ").nth(1)?.split(' ').next()?.parse().ok()
            })
            .unwrap_or(seconds)
            .max(1);
        let crashed = !out.status.success();
        if crashed {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            for l in tail.iter().rev() {
                eprintln!("  {l}");
            }
        }
        println!(
            "   {t}: {runs} executions in {secs} s ({} exec/s){}",
            runs / secs,
            if crashed { ", CRASHED" } else { ", no crash" }
        );
        outcomes.push(Outcome {
            target: t.clone(),
            runs,
            seconds: secs,
            crashed,
        });
    }
    println!(
        "\n{:<16} {:>14} {:>8} {:>10}  result",
        "target", "executions", "seconds", "exec/s"
    );
    for o in &outcomes {
        println!(
            "{:<16} {:>14} {:>8} {:>10}  {}",
            o.target,
            o.runs,
            o.seconds,
            o.runs / o.seconds,
            if o.crashed {
                "CRASH (fuzz/artifacts/)"
            } else {
                "ok"
            }
        );
    }
    let total: u64 = outcomes.iter().map(|o| o.runs).sum();
    println!("total: {total} executions");
    Ok(outcomes.iter().all(|o| !o.crashed))
}
