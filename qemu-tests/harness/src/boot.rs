//! One boot of Xen under QEMU with a PV kernel as the initial domain, and its verdict.
//!
//! QEMU loads Xen as a multiboot kernel; the first multiboot module is the domain's kernel
//! (with its command line), further modules follow (the first of them becomes the kernel's
//! initrd). The serial line is read live; the run ends when Xen reports the domain's shutdown,
//! when Xen panics, when QEMU exits, or at the timeout.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::provision::{self, XenVersion};

/// A multiboot module after the kernel.
#[derive(Clone, Debug)]
pub struct Module {
    pub path: PathBuf,
    pub args: String,
}

/// How much of the serial log to print while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// Nothing (the log is still returned).
    Quiet,
    /// Lines of pvkexec's guests and Xen's verdict lines, prefixed with a tag.
    Markers,
    /// Every line.
    All,
}

/// What to boot.
#[derive(Clone, Debug)]
pub struct BootConfig {
    pub kernel: PathBuf,
    /// The kernel's command line (start_info.cmd_line).
    pub cmdline: String,
    pub modules: Vec<Module>,
    /// `dom0_mem` in MiB.
    pub mem_mib: u64,
    pub vcpus: u32,
    /// Extra words for Xen's command line.
    pub xen_args: String,
    pub timeout: Duration,
    pub xen: XenVersion,
    pub echo: Echo,
    /// Prefix for echoed lines (e.g. the test name).
    pub tag: String,
    /// End the run as soon as a serial line contains this text (verdict [`Verdict::Stopped`]),
    /// e.g. to read Xen's builder report without running the kernel to its end.
    pub stop_after: Option<String>,
    /// QEMU's memory in MiB (default: the domain's memory plus room for Xen).
    pub host_mem_mib: Option<u64>,
    /// Extra QEMU arguments (e.g. `-drive`/`-device` pairs for dom0's disks).
    pub qemu_args: Vec<String>,
    /// Boot Xen built with pvkexec's patch series ([`crate::xen_build`]) instead of Debian's
    /// binary of the same version.
    pub patched_xen: bool,
}

impl BootConfig {
    /// A config with the rig's defaults: 64 MiB, 1 VCPU, 120 s, Xen 4.17, markers echoed.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        BootConfig {
            kernel: kernel.into(),
            cmdline: String::new(),
            modules: Vec::new(),
            mem_mib: 64,
            vcpus: 1,
            xen_args: String::new(),
            timeout: Duration::from_secs(120),
            xen: XenVersion::V4_17,
            echo: Echo::Markers,
            tag: String::new(),
            stop_after: None,
            host_mem_mib: None,
            qemu_args: Vec::new(),
            patched_xen: false,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The domain shut down with reason reboot and printed no FAIL line.
    Pass,
    /// The domain printed FAIL lines (and shut down with any reason).
    GuestFailed,
    /// The domain crashed (shutdown reason crash, or Xen killed it) without a FAIL line.
    Crashed,
    /// The domain powered off.
    PoweredOff,
    /// Xen panicked.
    XenPanic,
    /// No verdict before the timeout.
    Timeout,
    /// QEMU exited before Xen reported the domain's end.
    QemuExited(Option<i32>),
    /// The `stop_after` line was seen.
    Stopped,
}

impl Verdict {
    /// Exit code of `cargo xtask boot` for this verdict.
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Pass => 0,
            Verdict::GuestFailed => 2,
            Verdict::Crashed => 3,
            Verdict::PoweredOff => 4,
            Verdict::Timeout => 5,
            Verdict::XenPanic => 6,
            Verdict::QemuExited(_) => 7,
            Verdict::Stopped => 8,
        }
    }
}

/// The outcome of a boot: verdict, the whole serial log, and wall time.
#[derive(Clone, Debug)]
pub struct BootResult {
    pub verdict: Verdict,
    pub log: String,
    pub wall: Duration,
    /// Host seconds since QEMU started at which each line of `log` arrived.
    pub line_secs: Vec<f64>,
}

impl BootResult {
    /// Lines that contain `needle`.
    pub fn lines_with<'a>(&'a self, needle: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.log.lines().filter(move |l| l.contains(needle))
    }

    /// Names of the checks the guest reported as passed.
    pub fn passed(&self) -> Vec<String> {
        crate::passed_checks(self.lines_with("PVKEXEC-TEST PASS "))
    }

    /// `(name, reason)` of the checks the guest reported as failed.
    pub fn failed(&self) -> Vec<(String, String)> {
        crate::failed_checks(self.lines_with("PVKEXEC-TEST FAIL "))
    }

    /// Asserts that every one of `lines` is in the log.
    pub fn assert_logged(&self, lines: &[&str]) {
        for line in lines {
            assert!(self.log.contains(line), "no {line:?} in:\n{}", self.log);
        }
    }

    /// Asserts a purgatory refusal: it printed `line`, never left for the new kernel, and Xen
    /// crashed the domain.
    pub fn assert_refused(&self, line: &str) {
        assert_eq!(self.verdict, Verdict::Crashed, "log:\n{}", self.log);
        self.assert_logged(&[line, "Hardware Dom0 crashed"]);
        assert!(
            !self.log.contains(crate::PURGATORY_ENTERING),
            "log:\n{}",
            self.log
        );
    }
}

/// What a serial line tells about the end of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Reboot,
    Crash,
    Poweroff,
    Panic,
    Stopped,
}

fn classify(line: &str) -> Option<End> {
    if line.contains("Hardware Dom0 shutdown: rebooting machine") {
        Some(End::Reboot)
    } else if line.contains("Hardware Dom0 crashed") || line.contains("Domain 0 crashed") {
        Some(End::Crash)
    } else if line.contains("Hardware Dom0 halted") {
        Some(End::Poweroff)
    } else if line.contains("Panic on CPU") {
        Some(End::Panic)
    } else {
        None
    }
}

fn is_marker(line: &str) -> bool {
    line.contains("PVKEXEC")
        || line.contains("purgatory:")
        // Which hypervisor runs: Debian's build or the patched one (`pvkexec@patched`).
        || line.contains("(XEN) Xen version ")
        || line.starts_with("[domu:")
        || classify(line).is_some()
}

/// QEMU's `-initrd` takes a comma-separated module list; a literal comma is written `,,`.
fn module_arg(path: &Path, args: &str) -> Result<String> {
    let p = path.to_str().context("module path is not UTF-8")?;
    if p.contains(' ') {
        bail!("module path {p:?} contains a space, which QEMU's multiboot loader cannot pass");
    }
    let text = if args.is_empty() {
        p.to_string()
    } else {
        format!("{p} {args}")
    };
    Ok(text.replace(',', ",,"))
}

/// Boots Xen with the config's kernel under QEMU and waits for a verdict.
pub fn boot(cfg: &BootConfig) -> Result<BootResult> {
    let qemu = provision::ensure_qemu()?;
    let (xen, which) = if cfg.patched_xen {
        (crate::xen_build::ensure_patched_xen(cfg.xen)?, "patched")
    } else {
        (provision::ensure_xen(cfg.xen)?, "Debian's")
    };
    if cfg.echo != Echo::Quiet {
        eprintln!(
            "{}hypervisor: {which} Xen {} ({})",
            tag(&cfg.tag),
            cfg.xen.name(),
            xen.display()
        );
    }
    for path in std::iter::once(&cfg.kernel).chain(cfg.modules.iter().map(|m| &m.path)) {
        if !path.is_file() {
            bail!("{}: no such file", path.display());
        }
    }
    let mut initrd = vec![module_arg(&cfg.kernel, &cfg.cmdline)?];
    for m in &cfg.modules {
        initrd.push(module_arg(&m.path, &m.args)?);
    }
    // Xen itself and its heap need room beside the domain's memory.
    let host_mib = cfg
        .host_mem_mib
        .unwrap_or(cfg.mem_mib + 256 + cfg.mem_mib / 8);
    // spec-ctrl=eager-fpu: QEMU's TCG CPU says AMD, where Xen switches FPU state lazily, and
    // under TCG that loses XMM state between two VCPUs of one domain (systemd segfaulting in
    // libc's malloc with 2 VCPUs). Eager switching avoids it.
    let xen_cmdline = format!(
        "console=com1 com1=115200,8n1 dom0_mem={m}M,max:{m}M dom0_max_vcpus={v} loglvl=all \
         guest_loglvl=all spec-ctrl=eager-fpu {extra}",
        m = cfg.mem_mib,
        v = cfg.vcpus,
        extra = cfg.xen_args
    );
    let mut cmd = Command::new(&qemu);
    cmd.args([
        "-accel",
        "tcg",
        "-cpu",
        "max,-smap",
        "-nographic",
        "-no-reboot",
    ])
    .args(["-m", &format!("{host_mib}M")])
    .args(["-smp", &cfg.vcpus.max(1).to_string()])
    .arg("-kernel")
    .arg(&xen)
    .args(["-append", xen_cmdline.trim()])
    .args(["-initrd", &initrd.join(",")])
    .args(&cfg.qemu_args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if cfg.echo == Echo::All {
        eprintln!("{}$ {:?}", tag(&cfg.tag), cmd);
    }
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", qemu.display()))?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("QEMU stdout")?;
    let stderr = child.stderr.take().context("QEMU stderr")?;
    for stream in [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                if tx.send(line).is_err() {
                    break;
                }
                buf.clear();
            }
        });
    }
    drop(tx);

    let mut log = String::new();
    let mut line_secs = Vec::new();
    let mut end: Option<End> = None;
    let mut timed_out = false;
    loop {
        let left = cfg.timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => {
                let line = line.replace('\r', "");
                if cfg.echo == Echo::All || (cfg.echo == Echo::Markers && is_marker(&line)) {
                    eprintln!("{}{}", tag(&cfg.tag), line);
                }
                log.push_str(&line);
                log.push('\n');
                line_secs.push(start.elapsed().as_secs_f64());
                let stop = cfg.stop_after.as_deref().is_some_and(|s| line.contains(s));
                if end == Some(End::Panic) {
                    // Xen prints the panic's reason after "Panic on CPU": keep reading until
                    // it announces the reboot.
                    if line.contains("Reboot in five seconds") || line.contains("Manual reset") {
                        break;
                    }
                    continue;
                }
                if let Some(e) = classify(&line).or(stop.then_some(End::Stopped)) {
                    end = Some(e);
                    // A reboot ends QEMU by itself (-no-reboot); the others would idle or
                    // count down, so stop reading after the verdict line.
                    if e != End::Reboot && e != End::Panic {
                        break;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let exit = finish(&mut child, end == Some(End::Reboot));
    let wall = start.elapsed();
    let has_fail = log.contains("PVKEXEC-TEST FAIL ");
    let verdict = match (end, has_fail) {
        (_, true) => Verdict::GuestFailed,
        (Some(End::Reboot), false) => Verdict::Pass,
        (Some(End::Crash), false) => Verdict::Crashed,
        (Some(End::Poweroff), false) => Verdict::PoweredOff,
        (Some(End::Panic), false) => Verdict::XenPanic,
        (Some(End::Stopped), false) => Verdict::Stopped,
        (None, false) if timed_out => Verdict::Timeout,
        (None, false) => Verdict::QemuExited(exit),
    };
    if cfg.echo != Echo::Quiet {
        eprintln!(
            "{}verdict: {:?} after {:.2} s",
            tag(&cfg.tag),
            verdict,
            wall.as_secs_f64()
        );
    }
    Ok(BootResult {
        verdict,
        log,
        wall,
        line_secs,
    })
}

fn tag(t: &str) -> String {
    if t.is_empty() {
        String::new()
    } else {
        format!("[{t}] ")
    }
}

/// Waits briefly for QEMU to exit by itself (after a reboot), else kills it.
fn finish(child: &mut Child, expect_exit: bool) -> Option<i32> {
    let grace = if expect_exit {
        Duration::from_secs(10)
    } else {
        Duration::from_millis(0)
    };
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if start.elapsed() >= grace {
            let _ = child.kill();
            return child.wait().ok().and_then(|s| s.code());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
