//! Host analysis of vmcores with Debian bookworm's `crash` and `makedumpfile`, against the
//! debug `vmlinux` of the exact Debian 6.1 kernel the rig boots.
//!
//! Everything is provisioned lazily into [`crate::cache_dir`] (the tests that read a dump
//! call these; `cargo xtask test` does not fetch them up front: the debug package is 860 MB):
//! - `vmcore-tools/root`: `crash`, `makedumpfile` and the libraries a bookworm host usually
//!   lacks (`liblzo2-2`, `libsnappy1v5`), unpacked with `dpkg -x` and run with
//!   `LD_LIBRARY_PATH` (nothing is installed);
//! - `linux-bookworm-dbg/vmlinux-VERSION`: only the `vmlinux` of
//!   `linux-image-VERSION-dbg`, the package deleted after extraction.

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::provision::{self, DebianLinux};

/// The Debian packages unpacked for the tools (the last two: libraries crash and makedumpfile
/// need that a bookworm host need not have).
const TOOL_PACKAGES: [&str; 5] = [
    "crash",
    "makedumpfile",
    "liblzo2-2",
    "libsnappy1v5",
    "libdw1",
];

/// `crash` and `makedumpfile` ready to run.
#[derive(Clone, Debug)]
pub struct Tools {
    pub crash: PathBuf,
    pub makedumpfile: PathBuf,
    /// `LD_LIBRARY_PATH` for both: the unpacked libraries' directories.
    pub lib_path: String,
}

impl Tools {
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("LD_LIBRARY_PATH", &self.lib_path);
        cmd
    }
}

/// Unpacks bookworm's `crash` and `makedumpfile` (and libraries) into the cache once and
/// checks that every library they need resolves.
pub fn ensure_tools() -> Result<Tools> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = crate::cache_dir().join("vmcore-tools");
    let root = dir.join("root");
    let stamp = root.join(".unpacked-all");
    if !stamp.exists() {
        let _ = fs::remove_dir_all(&root);
        for p in TOOL_PACKAGES {
            let deb = provision::download_deb(p, &dir.join("deb"))?;
            crate::provision::dpkg_extract(&deb, &root)?;
        }
        fs::write(&stamp, TOOL_PACKAGES.join("\n"))?;
    }
    let lib_path = ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"]
        .map(|d| root.join(d).display().to_string())
        .join(":");
    let tools = Tools {
        crash: root.join("usr/bin/crash"),
        makedumpfile: root.join("usr/bin/makedumpfile"),
        lib_path,
    };
    for bin in [&tools.crash, &tools.makedumpfile] {
        check_libraries(&tools, bin)?;
    }
    Ok(tools)
}

/// Names every library `ldd` cannot find for `bin` with the unpacked ones on the path.
fn check_libraries(tools: &Tools, bin: &Path) -> Result<()> {
    if !bin.is_file() {
        bail!(
            "{} is missing after unpacking {TOOL_PACKAGES:?}",
            bin.display()
        );
    }
    let out = Command::new("ldd")
        .arg(bin)
        .env("LD_LIBRARY_PATH", &tools.lib_path)
        .output()
        .context("running ldd")?;
    let missing: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("not found"))
        .map(|l| l.split_whitespace().next().unwrap_or(l).to_string())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} needs libraries this host lacks: {} (install their Debian packages)",
            bin.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// The debug `vmlinux` of the Debian 6.1 kernel the rig boots (same package version as its
/// `vmlinuz`), extracted once; the 860 MB package is deleted afterwards.
pub fn ensure_debug_vmlinux() -> Result<PathBuf> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    provision::ensure_linux(DebianLinux::Bookworm)?;
    let (abi, version) = rig_kernel_version()?;
    let dir = crate::cache_dir().join("linux-bookworm-dbg");
    let vmlinux = dir.join(format!("vmlinux-{abi}"));
    if vmlinux.is_file() {
        return Ok(vmlinux);
    }
    let package = format!("linux-image-{abi}-dbg");
    let deb_dir = dir.join("deb");
    let deb = provision::download_deb(&package, &deb_dir)?;
    let deb_name = deb.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !deb_name.contains(&format!("_{version}_")) {
        bail!(
            "{} is not version {version} of the rig's kernel package; remove it to fetch again",
            deb.display()
        );
    }
    let start = Instant::now();
    extract_vmlinux(&deb, &dir, &abi)?;
    let extracted = dir.join(format!("usr/lib/debug/boot/vmlinux-{abi}"));
    fs::rename(&extracted, &vmlinux)
        .with_context(|| format!("moving {} into place", extracted.display()))?;
    let _ = fs::remove_dir_all(dir.join("usr"));
    fs::remove_dir_all(&deb_dir).with_context(|| format!("removing {}", deb_dir.display()))?;
    eprintln!(
        "provision: {} extracted in {:.1} s, {} deleted",
        vmlinux.display(),
        start.elapsed().as_secs_f64(),
        deb_name
    );
    Ok(vmlinux)
}

/// Only `usr/lib/debug/boot/vmlinux-ABI`; tar stops at its first occurrence (near the
/// archive's start) instead of decompressing every module's debug file.
fn extract_vmlinux(deb: &Path, dir: &Path, abi: &str) -> Result<()> {
    let member = format!("./usr/lib/debug/boot/vmlinux-{abi}");
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' 2>/dev/null | tar -x -C '{}' --occurrence=1 '{member}'",
        deb.display(),
        dir.display()
    );
    let status = Command::new("sh")
        .args(["-c", &script])
        .status()
        .context("running dpkg-deb | tar")?;
    if !status.success() || !dir.join(&member).is_file() {
        bail!("{} holds no {member} (tar: {status})", deb.display());
    }
    Ok(())
}

/// `(ABI name, package version)` of the rig's bookworm kernel, from the cached package's file
/// name `linux-image-ABI-unsigned_VERSION_amd64.deb`.
fn rig_kernel_version() -> Result<(String, String)> {
    let deb_dir = crate::cache_dir().join("linux-bookworm/deb");
    for e in fs::read_dir(&deb_dir).with_context(|| format!("reading {}", deb_dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(v) = parse_kernel_deb_name(&name) {
            return Ok(v);
        }
    }
    bail!(
        "{} holds no linux-image-*-unsigned_*.deb (provision::ensure_linux)",
        deb_dir.display()
    )
}

fn parse_kernel_deb_name(name: &str) -> Option<(String, String)> {
    let rest = name
        .strip_prefix("linux-image-")?
        .strip_suffix("_amd64.deb")?;
    let (pkg, version) = rest.split_once('_')?;
    let abi = pkg.strip_suffix("-unsigned")?;
    Some((abi.to_string(), version.replace("%3a", ":")))
}

/// What `crash` printed for each command.
#[derive(Clone, Debug)]
pub struct CrashReport {
    /// `(command, output)` in the order given.
    pub outputs: Vec<(String, String)>,
    /// Everything crash printed (stdout, then stderr).
    pub raw: String,
    pub secs: f64,
}

impl CrashReport {
    /// The output of `command` (the first one given with that text).
    pub fn output(&self, command: &str) -> Option<&str> {
        self.outputs
            .iter()
            .find(|(c, _)| c == command)
            .map(|(_, o)| o.as_str())
    }
}

/// A line crash's shell escape prints before each command's output.
const COMMAND_MARK: &str = "PVKEXEC-CRASH-COMMAND";

/// Runs `crash -s VMLINUX VMCORE` non-interactively with `commands` (e.g. `bt`, `log`, `ps`)
/// and returns each one's output; an error quotes crash when it could not open the dump.
pub fn crash_report(vmlinux: &Path, vmcore: &Path, commands: &[&str]) -> Result<CrashReport> {
    crash_report_with(vmlinux, vmcore, &[], commands)
}

/// CPU `cpu`'s `rip` as crash's `help -D` prints its `NT_PRSTATUS` note (`notes[N]: ...
/// (NT_PRSTATUS)`, then `RIP: <hex>`).
pub fn prstatus_rip(help_d: &str, cpu: usize) -> Option<u64> {
    let from = help_d.find(&format!("notes[{cpu}]:"))?;
    let rest = &help_d[from..];
    let rip = rest.split("RIP: ").nth(1)?.split_whitespace().next()?;
    u64::from_str_radix(rip, 16).ok()
}

/// As [`crash_report`], with crash `options` before the files (e.g. `--zero_excluded`).
pub fn crash_report_with(
    vmlinux: &Path,
    vmcore: &Path,
    options: &[&str],
    commands: &[&str],
) -> Result<CrashReport> {
    let tools = ensure_tools()?;
    for c in commands {
        if c.contains('\n') || c.contains('\'') {
            bail!("crash command {c:?}: one line without single quotes");
        }
    }
    let start = Instant::now();
    let (status, stdout, stderr) = run_crash(&tools, vmlinux, vmcore, options, commands, false)?;
    let secs = start.elapsed().as_secs_f64();
    let raw = format!("{stdout}{stderr}");
    let outputs = split_outputs(&stdout);
    if outputs.len() != commands.len() {
        // crash -s often exits without a word; its debug output names the failed read.
        let why = run_crash(&tools, vmlinux, vmcore, options, commands, true)
            .map(|(_, o, e)| tail(&format!("{o}{e}"), 12))
            .unwrap_or_else(|e| format!("(crash -d 1 failed too: {e:#})"));
        bail!(
            "crash could not open {} with {} ({status}; {} of {} commands ran): {}\n\
             crash -d 1 ends with:\n{why}",
            vmcore.display(),
            vmlinux.display(),
            outputs.len(),
            commands.len(),
            tail(&raw, 30)
        );
    }
    Ok(CrashReport { outputs, raw, secs })
}

/// One crash run over `commands`: `(status, stdout, stderr)`.
fn run_crash(
    tools: &Tools,
    vmlinux: &Path,
    vmcore: &Path,
    options: &[&str],
    commands: &[&str],
    debug: bool,
) -> Result<(std::process::ExitStatus, String, String)> {
    // Named after the whole file name: two dumps that differ only in their extension (a vmcore
    // and its makedumpfile output) may be opened at the same time.
    let mut name = vmcore.file_name().unwrap_or_default().to_os_string();
    name.push(".crash-input");
    let input = vmcore.with_file_name(name);
    fs::write(&input, crash_script(commands))
        .with_context(|| format!("writing {}", input.display()))?;
    let mut cmd = tools.command(&tools.crash);
    cmd.arg("-s").args(options);
    if debug {
        cmd.args(["-d", "1"]);
    }
    cmd.arg("-i")
        .arg(&input)
        .arg(vmlinux)
        .arg(vmcore)
        .stdin(Stdio::null());
    let out = run_bounded(cmd, Duration::from_secs(600), "crash");
    let _ = fs::remove_file(&input);
    out
}

/// crash's input file: a marker line (crash's `!` shell escape) before each command, then
/// `exit`.
fn crash_script(commands: &[&str]) -> String {
    let mut s = String::from("set scroll off\n");
    for c in commands {
        s.push_str(&format!("!echo '{COMMAND_MARK} {c}'\n{c}\n"));
    }
    s.push_str("exit\n");
    s
}

fn split_outputs(stdout: &str) -> Vec<(String, String)> {
    let mut outputs: Vec<(String, String)> = Vec::new();
    for line in stdout.lines() {
        if let Some(c) = line.strip_prefix(COMMAND_MARK).map(str::trim) {
            outputs.push((c.to_string(), String::new()));
        } else if let Some((_, o)) = outputs.last_mut() {
            o.push_str(line);
            o.push('\n');
        }
    }
    outputs
}

/// `makedumpfile -d 31` (no compression flag: ELF in, kdump-compressed out), its output.
pub fn makedumpfile_d31(vmcore: &Path, out: &Path) -> Result<String> {
    let tools = ensure_tools()?;
    let _ = fs::remove_file(out);
    let mut cmd = tools.command(&tools.makedumpfile);
    cmd.args(["-d", "31"])
        .arg(vmcore)
        .arg(out)
        .stdin(Stdio::null());
    let (status, stdout, stderr) = run_bounded(cmd, Duration::from_secs(600), "makedumpfile")?;
    let text = format!("{stdout}{stderr}");
    if !status.success() || !out.is_file() {
        bail!(
            "makedumpfile -d 31 {} failed ({status}): {}",
            vmcore.display(),
            tail(&text, 30)
        );
    }
    Ok(text)
}

/// Runs `cmd` with stdout/stderr captured, killing it after `limit`.
fn run_bounded(
    mut cmd: Command,
    limit: Duration,
    what: &str,
) -> Result<(std::process::ExitStatus, String, String)> {
    let dir = std::env::temp_dir();
    let n = std::process::id();
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let k = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let paths = [
        dir.join(format!("pvkexec-{what}-{n}-{k}.out")),
        dir.join(format!("pvkexec-{what}-{n}-{k}.err")),
    ];
    cmd.stdout(fs::File::create(&paths[0])?)
        .stderr(fs::File::create(&paths[1])?);
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |p: &Path| {
        let t = String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
        let _ = fs::remove_file(p);
        t
    };
    Ok((status, read(&paths[0]), read(&paths[1])))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What the crashing `/init` prints just before it panics the kernel.
pub const PANIC_MARKER: &str = "PVKEXEC-VMCORE panicking now";

const CRASHING_INIT: &str = r#"#!/bin/sh
/bin/busybox mount -t proc proc /proc
echo "PVKEXEC-LINUX-INIT reached"
echo "PVKEXEC-VMCORE panicking now"
echo c > /proc/sysrq-trigger
echo "PVKEXEC-VMCORE still alive after sysrq c"
/bin/busybox poweroff -f
"#;

/// A busybox initramfs whose `/init` panics the kernel with `echo c > /proc/sysrq-trigger`
/// (so the dump's panicking task is init, in `sysrq_handle_crash`).
pub fn ensure_crashing_initramfs() -> Result<PathBuf> {
    let out = crate::cache_dir().join("initramfs-busybox-crashing-r1.cpio.gz");
    if !out.is_file() {
        let busybox = provision::ensure_busybox()?;
        let tmp = out.with_extension("tmp");
        crate::initramfs::build_with(&busybox, CRASHING_INIT, &[], &tmp)?;
        fs::rename(&tmp, &out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_deb_names_give_abi_and_version() {
        assert_eq!(
            parse_kernel_deb_name("linux-image-6.1.0-57-amd64-unsigned_6.1.192-3_amd64.deb"),
            Some(("6.1.0-57-amd64".into(), "6.1.192-3".into()))
        );
        assert_eq!(
            parse_kernel_deb_name("linux-image-6.1.0-57-amd64-dbg_6.1.192-3_amd64.deb"),
            None
        );
        assert_eq!(parse_kernel_deb_name("crash_8.0.2-1_amd64.deb"), None);
    }

    #[test]
    fn crash_output_splits_at_the_markers() {
        let script = crash_script(&["bt", "log"]);
        assert_eq!(
            script,
            "set scroll off\n!echo 'PVKEXEC-CRASH-COMMAND bt'\nbt\n\
             !echo 'PVKEXEC-CRASH-COMMAND log'\nlog\nexit\n"
        );
        let stdout = "noise\nPVKEXEC-CRASH-COMMAND bt\nPID: 1\n #0 panic\n\
                      PVKEXEC-CRASH-COMMAND log\n[ 1.0] Kernel panic\n";
        let o = split_outputs(stdout);
        assert_eq!(
            o,
            [
                ("bt".to_string(), "PID: 1\n #0 panic\n".to_string()),
                ("log".to_string(), "[ 1.0] Kernel panic\n".to_string()),
            ]
        );
    }
}
