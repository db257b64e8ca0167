//! The domU rig: Xen under QEMU boots Debian's Linux as dom0 with Xen's own toolstack
//! ([`crate::dom0`]), and dom0's `/init` builds PV domUs one after another with `xl -vvv create`.
//!
//! One dom0 boot runs several domUs ([`DomuRig::run`]). For each, dom0's init prints:
//! - `[xl:NAME] ...`: everything `xl -vvv create -F` says, including the domain builder's
//!   `xc_dom_*` log and, because `-F` keeps xl watching the domain, its end:
//!   `Domain N has shut down, reason code R 0x..` (R: 0 poweroff, 1 reboot, 3 crash,
//!   4 watchdog) and `Domain N has been destroyed` (every `on_*` action is `destroy`, except
//!   `on_reboot = "restart"` for a spec with [`DomuSpec::reboots`]);
//! - `[domu:NAME] ...`: the domU's console, live from `xl console` (which exits when the
//!   domain is gone, and is attached again after each restart); if `xl console` failed (a
//!   domain that died before it attached), the xenconsoled log file is printed instead;
//! - `PVKEXEC-DOM0 domu NAME start|created|restarted|timeout|end ...` with dom0 uptime stamps.
//!
//! The verdict of a domU comes from xl's shutdown reason and the domU's PASS/FAIL lines, as
//! for the initial domain in [`crate::boot`]; a failed `xl create` is [`DomuVerdict::Toolstack`]
//! with xl's error lines; a domU that outlives its timeout is destroyed by dom0's init
//! ([`DomuVerdict::Timeout`]).

use anyhow::{bail, Context, Result};
use cpio::NewcBuilder;
use std::fs;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::boot::{BootConfig, BootResult, Echo, Module, Verdict};
use crate::dom0::{self, Toolstack, DOM0_MODULES};
use crate::provision::{self, XenVersion};

/// Bound on [`DomuSpec::reboots`]: each restart costs xl's 2 s pause plus a build.
pub const MAX_REBOOTS: u32 = 100;

/// One PV domU for the toolstack to build.
#[derive(Clone, Debug)]
pub struct DomuSpec {
    /// Domain name: lower-case letters, digits and `-` (used in file names and the shell).
    pub name: String,
    pub kernel: PathBuf,
    pub ramdisk: Option<PathBuf>,
    pub cmdline: String,
    pub mem_mib: u64,
    pub vcpus: u32,
    /// A raw disk image, attached as `xvda` through a loop device and blkback. It is a copy
    /// in dom0's initramfs: what the domU writes does not come back.
    pub disk: Option<PathBuf>,
    /// A raw disk file on the host, given to dom0 by QEMU as a virtio-blk disk and to the
    /// domU as `xvda` (`xvdb` beside a [`disk`](Self::disk)): after the run the file holds
    /// what the domU wrote.
    pub host_disk: Option<PathBuf>,
    /// More raw disk files on the host, attached after the [`host_disk`](Self::host_disk) (which
    /// they need) as the domU's next disks (`xvdb`, `xvdc`, ...), kept like it.
    pub extra_host_disks: Vec<PathBuf>,
    /// From the start of `xl create` to the domain's end; dom0's init destroys it after.
    pub timeout: Duration,
    /// Extra lines for the xl config (appended after the rig's own).
    pub extra_config: Vec<String>,
    /// Only build the domain (`xl -vvv create -p`, then `xl destroy`): the builder's log
    /// without running the kernel ([`DomuVerdict::Built`]).
    pub build_only: bool,
    /// When the domU crashes, xl dumps its core (`on_crash = "coredump-destroy"`: the xc_core
    /// ELF of `xl dump-core`) and dom0 writes that file from sector 0 of the
    /// [`host_disk`](Self::host_disk), which must be large enough (about `mem_mib` + 1 MiB).
    pub dump_core: bool,
    /// How many times xl rebuilds the domain when it reboots (`on_reboot = "restart"`; xl
    /// keeps watching it through `create -F`); dom0 attaches `xl console` again to each new
    /// incarnation. A reboot past this count is destroyed. 0 (the default): a reboot ends the
    /// domU (`on_reboot = "destroy"`). Disks stay attached across the restarts (the same loop
    /// device), so what the domU writes to [`disk`](Self::disk) is there after a reboot.
    pub reboots: u32,
    /// After the domain is gone, dom0 writes this many MiB of zeros to the first host disk
    /// with direct I/O (`dd oflag=direct`, 1 MiB blocks) and reports the time
    /// (`PVKEXEC-DOM0 domu NAME disk-speed ...`, [`DomuResult::disk_speed`]): the disk's own
    /// write speed, beside what the domU wrote to it. 0: none.
    pub disk_speed_mib: u64,
}

impl DomuSpec {
    /// Defaults: 256 MiB, 1 VCPU, no ramdisk, no disk, 60 s.
    pub fn new(name: &str, kernel: impl Into<PathBuf>) -> Self {
        DomuSpec {
            name: name.to_string(),
            kernel: kernel.into(),
            ramdisk: None,
            cmdline: String::new(),
            mem_mib: 256,
            vcpus: 1,
            disk: None,
            host_disk: None,
            extra_host_disks: Vec::new(),
            timeout: Duration::from_secs(60),
            extra_config: Vec::new(),
            build_only: false,
            dump_core: false,
            reboots: 0,
            disk_speed_mib: 0,
        }
    }

    fn validate(&self) -> Result<()> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > 32
            || !n
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bail!("domU name {n:?}: use 1-32 characters of a-z, 0-9 and '-'");
        }
        if self.cmdline.contains(['"', '\\', '\n']) {
            bail!(
                "domU {n}: command line {:?} contains a quote, backslash or newline, \
                 which an xl config string cannot carry",
                self.cmdline
            );
        }
        if self.dump_core && self.host_disk.is_none() {
            bail!("domU {n}: dump_core needs a host_disk to receive the core");
        }
        if self.build_only && (self.disk.is_some() || self.host_disk.is_some()) {
            bail!("domU {n}: a build-only domU takes no disk");
        }
        if self.build_only && self.reboots > 0 {
            bail!("domU {n}: a build-only domU never runs, so it cannot reboot");
        }
        if self.reboots > MAX_REBOOTS {
            bail!("domU {n}: {} reboots, at most {MAX_REBOOTS}", self.reboots);
        }
        if !self.extra_host_disks.is_empty() && self.host_disk.is_none() {
            bail!("domU {n}: extra host disks come after a host_disk, and there is none");
        }
        if self.extra_host_disks.len() > MAX_EXTRA_HOST_DISKS {
            bail!("domU {n}: at most {MAX_EXTRA_HOST_DISKS} extra host disks");
        }
        for (h, serial) in self.host_disks().zip(host_disk_serials(self)) {
            if h.to_str().is_none() {
                bail!("domU {n}: host disk {}: the path is not UTF-8", h.display());
            }
            // Linux keeps 20 bytes of a virtio-blk serial: dom0 finds the disk by it.
            if serial.len() > VIRTIO_SERIAL_MAX {
                bail!(
                    "domU {n}: with host disks, a name of at most {} characters (its disk's \
                     virtio serial {serial:?} is cut at {VIRTIO_SERIAL_MAX})",
                    VIRTIO_SERIAL_MAX + n.len() - serial.len()
                );
            }
        }
        if self.disk_speed_mib > 0 && self.host_disk.is_none() {
            bail!("domU {n}: disk_speed_mib needs a host_disk to write");
        }
        if self.mem_mib == 0 || self.vcpus == 0 {
            bail!("domU {n}: memory and VCPUs must be at least 1");
        }
        for p in std::iter::once(&self.kernel)
            .chain(&self.ramdisk)
            .chain(&self.disk)
            .chain(self.host_disks())
        {
            if !p.is_file() {
                bail!("domU {n}: {}: no such file", p.display());
            }
        }
        Ok(())
    }

    /// The host disk, then the extra ones.
    fn host_disks(&self) -> impl Iterator<Item = &PathBuf> {
        self.host_disk.iter().chain(&self.extra_host_disks)
    }

    /// The xl config; the disk line is added by dom0's init once it knows the loop device.
    fn config(&self) -> String {
        let mut c = format!(
            "name = \"{n}\"\ntype = \"pv\"\nkernel = \"/domu/{n}.kernel\"\n\
             cmdline = \"{cmd}\"\nmemory = {m}\nmaxmem = {m}\nvcpus = {v}\n\
             on_poweroff = \"destroy\"\non_reboot = \"{r}\"\non_crash = \"{c}\"\n\
             on_watchdog = \"destroy\"\n",
            n = self.name,
            cmd = self.cmdline,
            m = self.mem_mib,
            v = self.vcpus,
            r = if self.reboots > 0 {
                "restart"
            } else {
                "destroy"
            },
            c = if self.dump_core {
                "coredump-destroy"
            } else {
                "destroy"
            }
        );
        if self.ramdisk.is_some() {
            c.push_str(&format!("ramdisk = \"/domu/{}.ramdisk\"\n", self.name));
        }
        for line in &self.extra_config {
            c.push_str(line);
            c.push('\n');
        }
        c
    }
}

/// How a domU's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomuVerdict {
    /// Shut down with reason reboot, no FAIL line.
    Pass,
    /// The domU printed FAIL lines.
    GuestFailed,
    /// Shut down with reason crash (or watchdog), no FAIL line.
    Crashed,
    /// Shut down with reason poweroff.
    PoweredOff,
    /// Still running at its timeout: dom0's init destroyed it.
    Timeout,
    /// `xl create` failed (rejected config, builder or hotplug error): xl's error lines.
    Toolstack(String),
    /// The domain vanished without a shutdown reason (destroyed from outside).
    Destroyed,
    /// The rig itself failed before this domU finished: dom0's verdict and what it said.
    Dom0(String),
    /// A build-only domU was built (and destroyed unstarted).
    Built,
}

impl DomuVerdict {
    /// Exit code of `cargo xtask domu` (the same numbers as `cargo xtask boot` where they
    /// mean the same).
    pub fn exit_code(&self) -> i32 {
        match self {
            DomuVerdict::Pass | DomuVerdict::Built => 0,
            DomuVerdict::GuestFailed => 2,
            DomuVerdict::Crashed => 3,
            DomuVerdict::PoweredOff => 4,
            DomuVerdict::Timeout => 5,
            DomuVerdict::Dom0(_) => 7,
            DomuVerdict::Toolstack(_) => 9,
            DomuVerdict::Destroyed => 10,
        }
    }
}

/// One domU's outcome.
#[derive(Clone, Debug)]
pub struct DomuResult {
    pub name: String,
    pub verdict: DomuVerdict,
    /// The domU's console lines (prefix and `\r` removed).
    pub console: Vec<String>,
    /// Everything `xl -vvv create -F` printed (prefix removed).
    pub xl: Vec<String>,
    /// `SHUTDOWN_*` reason code xl reported (0 poweroff, 1 reboot, 3 crash, 4 watchdog); after
    /// restarts ([`DomuSpec::reboots`]), the last incarnation's.
    pub shutdown_reason: Option<u32>,
    /// How many incarnations xl started: 1, plus one per restart.
    pub boots: u32,
    /// dom0 seconds from the start of `xl create` to the domain's end.
    pub wall_secs: Option<f64>,
    /// dom0 seconds from the start of `xl create` until xl reported the domain built.
    pub create_secs: Option<f64>,
    /// dom0's direct write to the host disk after the domain ended
    /// ([`DomuSpec::disk_speed_mib`]): MiB and seconds.
    pub disk_speed: Option<(u64, f64)>,
}

impl DomuResult {
    /// Console lines that contain `needle`.
    pub fn lines_with<'a>(&'a self, needle: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.console
            .iter()
            .map(String::as_str)
            .filter(move |l| l.contains(needle))
    }

    /// The console as one string.
    pub fn log(&self) -> String {
        let mut s = self.console.join("\n");
        s.push('\n');
        s
    }

    /// The console log after the purgatory's switch line: what the new kernel printed. None
    /// when the purgatory never entered a kernel.
    pub fn after_switch(&self) -> Option<String> {
        let log = self.log();
        let (_, after) = log.split_once(crate::PURGATORY_ENTERING)?;
        Some(after.to_string())
    }

    /// Asserts that the new kernel printed each of `lines` after the switch.
    pub fn assert_after_switch(&self, lines: &[&str]) {
        let log = self.log();
        let after = self
            .after_switch()
            .unwrap_or_else(|| panic!("{}: no purgatory switch line in:\n{log}", self.name));
        for line in lines {
            assert!(after.contains(line), "no {line:?} after the switch:\n{log}");
        }
    }

    /// Names of the checks the domU reported as passed.
    pub fn passed(&self) -> Vec<String> {
        crate::passed_checks(self.lines_with("PVKEXEC-TEST PASS "))
    }

    /// `(name, reason)` of the checks the domU reported as failed.
    pub fn failed(&self) -> Vec<(String, String)> {
        crate::failed_checks(self.lines_with("PVKEXEC-TEST FAIL "))
    }

    /// The domain builder's decisions from `xl -vvv create`, starting at the function name
    /// (`xc_dom_alloc_segment: ...`, `count_pgtables: ...`, `xc_dom_build_image  :
    /// virt_alloc_end : ...`, `vcpu_x86_64: ...`), in order: the libxenguest side of a
    /// `pvkexec plan --mode domu` comparison.
    pub fn builder_log_lines(&self) -> Vec<String> {
        self.xl
            .iter()
            .filter_map(|l| {
                ["xc_dom_", "count_pgtables", "vcpu_x86_64", "nr_page_tables"]
                    .iter()
                    .filter_map(|k| l.find(k))
                    .min()
                    .map(|i| l[i..].trim_end().to_string())
            })
            .collect()
    }
}

/// Where a line of a domU's run came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineSource {
    /// The domU's console (`[domu:NAME] `).
    Console,
    /// `xl -vvv create -F` (`[xl:NAME] `).
    Xl,
    /// dom0's init about this domU (`PVKEXEC-DOM0 domu NAME `).
    Dom0,
}

/// One line of a domU's run and when it reached the host.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedLine {
    /// Host seconds since QEMU started ([`BootResult::line_secs`]).
    pub secs: f64,
    pub source: LineSource,
    /// The text after the prefix, trailing white space removed.
    pub text: String,
}

/// The prefixes dom0's init gives domU `name`'s lines.
struct Prefixes {
    console: String,
    xl: String,
    marker: String,
}

impl Prefixes {
    fn new(name: &str) -> Self {
        Prefixes {
            console: format!("[domu:{name}] "),
            xl: format!("[xl:{name}] "),
            marker: format!("{DOM0_MARKER} domu {name} "),
        }
    }

    /// Which of this domU's streams `line` belongs to, and its text.
    fn split<'a>(&self, line: &'a str) -> Option<(LineSource, &'a str)> {
        [
            (&self.console, LineSource::Console),
            (&self.xl, LineSource::Xl),
            (&self.marker, LineSource::Dom0),
        ]
        .into_iter()
        .find_map(|(p, src)| {
            line.split_once(p.as_str())
                .map(|(_, r)| (src, r.trim_end()))
        })
    }
}

/// One dom0 boot and the domUs it ran.
#[derive(Clone, Debug)]
pub struct RigRun {
    pub domus: Vec<DomuResult>,
    /// The whole serial log and dom0's own verdict (powered off when all went well).
    pub dom0: BootResult,
    /// Host seconds from QEMU's start to the toolstack being ready in dom0.
    pub toolstack_ready_secs: Option<f64>,
}

impl RigRun {
    /// domU `name`'s lines (console, xl, dom0's markers) in the order they reached the host,
    /// each with its host time: for timing what happens inside a domU from outside it.
    pub fn timed_lines(&self, name: &str) -> Vec<TimedLine> {
        let prefixes = Prefixes::new(name);
        self.dom0
            .log
            .lines()
            .zip(&self.dom0.line_secs)
            .filter_map(|(line, &secs)| {
                let (source, text) = prefixes.split(line)?;
                Some(TimedLine {
                    secs,
                    source,
                    text: text.to_string(),
                })
            })
            .collect()
    }
}

/// The rig's settings.
#[derive(Clone, Debug)]
pub struct DomuRig {
    pub xen: XenVersion,
    pub echo: Echo,
    pub tag: String,
    pub dom0_mem_mib: u64,
    /// QEMU's memory: dom0, Xen and every domU's memory must fit.
    pub host_mem_mib: u64,
    /// Time for dom0 to boot and start the toolstack (added to the domUs' timeouts).
    pub dom0_timeout: Duration,
    /// Boot Xen built with pvkexec's patch series instead of Debian's binary; dom0 keeps
    /// Debian's toolstack either way.
    pub patched_xen: bool,
}

impl Default for DomuRig {
    fn default() -> Self {
        DomuRig {
            xen: XenVersion::V4_17,
            echo: Echo::Markers,
            tag: String::new(),
            dom0_mem_mib: 768,
            host_mem_mib: 2048,
            dom0_timeout: Duration::from_secs(90),
            patched_xen: false,
        }
    }
}

/// A raw disk image of `mib` MiB whose first line is `marker` (the rest zero), in the cache.
pub fn marker_disk(marker: &str, mib: u64) -> Result<PathBuf> {
    if marker.contains('\n') || marker.len() > 4000 {
        bail!("disk marker {marker:?}: one line under 4000 bytes");
    }
    let dir = crate::cache_dir().join("domu-disks");
    fs::create_dir_all(&dir)?;
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("marker-{}-{n}-{mib}m.img", std::process::id()));
    let mut bytes = vec![0u8; (mib << 20) as usize];
    bytes[..marker.len()].copy_from_slice(marker.as_bytes());
    bytes[marker.len()] = b'\n';
    fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A PV kernel that never prints: an ELF with Xen's notes whose entry yields in a loop
/// (`sched_op(SCHEDOP_yield)`, so dom0 keeps running). For the rig's own timeout test.
pub fn silent_kernel() -> Result<PathBuf> {
    // 1: mov eax, 29 (sched_op); xor edi, edi (SCHEDOP_yield); syscall; jmp 1b
    tiny_kernel(
        "silent",
        &[0xb8, 29, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05, 0xeb, 0xf5],
    )
}

/// A PV kernel whose first instruction is `ud2`: with no trap table Xen crashes the domain,
/// and xl reports shutdown reason crash. For the rig's own crash test.
pub fn crashing_kernel() -> Result<PathBuf> {
    tiny_kernel("crashing", &[0x0f, 0x0b])
}

/// An ELF PV kernel with Xen's notes whose entry runs `code` (at most a page).
fn tiny_kernel(name: &str, code: &[u8]) -> Result<PathBuf> {
    const BASE: u64 = 0xffff_ffff_8000_0000;
    const CODE_OFF: u64 = 0x1000;
    let entry = BASE + CODE_OFF;
    let mut notes = Vec::new();
    let mut note = |kind: u32, desc: &[u8]| {
        notes.extend_from_slice(&4u32.to_le_bytes());
        notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        notes.extend_from_slice(&kind.to_le_bytes());
        notes.extend_from_slice(b"Xen\0");
        notes.extend_from_slice(desc);
        while notes.len() % 4 != 0 {
            notes.push(0);
        }
    };
    note(6, b"pvkexec-silent\0"); // GUEST_OS
    note(5, b"xen-3.0\0"); // XEN_VERSION
    note(8, b"generic\0"); // LOADER
    note(3, &BASE.to_le_bytes()); // VIRT_BASE
    note(4, &0u64.to_le_bytes()); // PADDR_OFFSET
    note(1, &entry.to_le_bytes()); // ENTRY
    const NOTE_OFF: u64 = 0x100;
    let mut f = vec![0u8; 0x2000];
    let put = |f: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        f[off..off + bytes.len()].copy_from_slice(bytes)
    };
    // ELF header: 64-bit, little-endian, ET_EXEC, EM_X86_64, two program headers at 64.
    put(&mut f, 0, b"\x7fELF\x02\x01\x01");
    put(&mut f, 16, &2u16.to_le_bytes());
    put(&mut f, 18, &62u16.to_le_bytes());
    put(&mut f, 20, &1u32.to_le_bytes());
    put(&mut f, 24, &entry.to_le_bytes());
    put(&mut f, 32, &64u64.to_le_bytes());
    put(&mut f, 52, &64u16.to_le_bytes());
    put(&mut f, 54, &56u16.to_le_bytes());
    put(&mut f, 56, &2u16.to_le_bytes());
    put(&mut f, 58, &64u16.to_le_bytes());
    let phdr = |kind: u32, flags: u32, off: u64, va: u64, size: u64, align: u64| {
        let mut p = Vec::new();
        for v in [kind, flags] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        for v in [off, va, va - BASE, size, size, align] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p
    };
    put(&mut f, 64, &phdr(1, 7, CODE_OFF, entry, 0x1000, 0x1000)); // PT_LOAD
    put(
        &mut f,
        120,
        &phdr(4, 4, NOTE_OFF, BASE + NOTE_OFF, notes.len() as u64, 4),
    ); // PT_NOTE
    put(&mut f, NOTE_OFF as usize, &notes);
    if code.len() > 0x1000 {
        bail!(
            "tiny kernel {name}: {} bytes of code, more than a page",
            code.len()
        );
    }
    put(&mut f, CODE_OFF as usize, code);
    let dir = crate::cache_dir().join("domu-disks");
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}-kernel.elf"));
    fs::write(&path, f).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// What dom0's init prints about itself.
pub const DOM0_MARKER: &str = "PVKEXEC-DOM0";

impl DomuRig {
    /// [`DomuRig::run`] for a test file's shared boot: removes the specs' disk images
    /// afterwards and prints the rig's timings on stderr.
    pub fn run_for_tests(&self, specs: &[DomuSpec]) -> Result<RigRun, String> {
        let start = std::time::Instant::now();
        let run = self.run(specs).map_err(|e| format!("{e:#}"));
        for s in specs {
            if let Some(d) = &s.disk {
                let _ = std::fs::remove_file(d);
            }
        }
        if let Ok(run) = &run {
            eprintln!(
                "{} rig: toolstack ready {:.1} s after QEMU start, whole boot {:.1} s",
                self.tag,
                run.toolstack_ready_secs.unwrap_or(f64::NAN),
                start.elapsed().as_secs_f64()
            );
            for d in &run.domus {
                eprintln!(
                    "{} rig: {:16} {:?}: xl create {:.1} s, domU {:.1} s (dom0 clock)",
                    self.tag,
                    d.name,
                    d.verdict,
                    d.create_secs.unwrap_or(f64::NAN),
                    d.wall_secs.unwrap_or(f64::NAN)
                );
            }
        }
        run
    }

    /// Boots dom0 once and runs `specs` one after another.
    pub fn run(&self, specs: &[DomuSpec]) -> Result<RigRun> {
        if specs.is_empty() {
            bail!("DomuRig::run: no domU to run");
        }
        for (i, s) in specs.iter().enumerate() {
            s.validate()?;
            if specs[..i].iter().any(|o| o.name == s.name) {
                bail!("two domUs named {}", s.name);
            }
        }
        let ts = Toolstack::for_xen(self.xen);
        let base = dom0::ensure_base(self.xen)?;
        let kernel = provision::ensure_linux(ts.linux)?;
        let initrd = run_initrd_path()?;
        let _cleanup = RemoveOnDrop(initrd.clone());
        write_run_initrd(&ts, &base, specs, &initrd)?;

        let mut cfg = BootConfig::new(kernel);
        cfg.qemu_args = host_disk_args(specs);
        cfg.cmdline = "console=hvc0 earlyprintk=xen loglevel=4 rdinit=/init".into();
        cfg.modules.push(Module {
            path: initrd.clone(),
            args: String::new(),
        });
        cfg.mem_mib = self.dom0_mem_mib;
        cfg.host_mem_mib = Some(self.host_mem_mib);
        cfg.xen = self.xen;
        cfg.patched_xen = self.patched_xen;
        cfg.echo = self.echo;
        cfg.tag = self.tag.clone();
        // Per domU: its own timeout plus xl create, the hotplug scripts and `xl console`.
        cfg.timeout = self.dom0_timeout
            + specs
                .iter()
                .map(|s| s.timeout + Duration::from_secs(30))
                .sum::<Duration>();
        let dom0 = crate::boot::boot(&cfg)?;
        let domus = specs.iter().map(|s| judge(s, &dom0)).collect();
        let toolstack_ready_secs = dom0
            .log
            .lines()
            .zip(&dom0.line_secs)
            .find(|(l, _)| l.contains("PVKEXEC-DOM0 ready"))
            .map(|(_, t)| *t);
        if self.echo != Echo::Quiet {
            eprintln!(
                "{}dom0: toolstack ready at {}, run ended {:?} after {:.1} s",
                tag(&self.tag),
                toolstack_ready_secs.map_or("never".into(), |t| format!("{t:.1} s")),
                dom0.verdict,
                dom0.wall.as_secs_f64()
            );
        }
        Ok(RigRun {
            domus,
            dom0,
            toolstack_ready_secs,
        })
    }
}

/// Bytes of a virtio-blk serial Linux reports (`VIRTIO_BLK_ID_BYTES`).
const VIRTIO_SERIAL_MAX: usize = 20;
const HOST_DISK_SERIAL_PREFIX: &str = "pvk-";

/// Extra host disks a domU may have (`xvdb` to `xvde` after its host disk).
const MAX_EXTRA_HOST_DISKS: usize = 4;

/// The virtio-blk serial that names a domU's host disk inside dom0 (`/sys/block/vdX/serial`).
fn host_disk_serial(spec: &DomuSpec) -> String {
    format!("{HOST_DISK_SERIAL_PREFIX}{}", spec.name)
}

/// The serials of all of a domU's host disks: the first as [`host_disk_serial`], extra disk
/// `i` (from 1) as `pvkI-NAME`.
fn host_disk_serials(spec: &DomuSpec) -> impl Iterator<Item = String> + '_ {
    spec.host_disk
        .iter()
        .map(|_| host_disk_serial(spec))
        .chain((1..=spec.extra_host_disks.len()).map(|i| format!("pvk{i}-{}", spec.name)))
}

/// QEMU's `-drive`/`-device` pairs for the specs' host disks: raw files on virtio-blk PCI
/// disks of dom0, each named by its serial.
fn host_disk_args(specs: &[DomuSpec]) -> Vec<String> {
    let mut args = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        for (j, (path, serial)) in s.host_disks().zip(host_disk_serials(s)).enumerate() {
            let Some(path) = path.to_str() else {
                continue;
            };
            // A comma in a QEMU option value is written twice.
            let file = path.replace(',', ",,");
            args.push("-drive".into());
            args.push(format!("file={file},format=raw,if=none,id=hostdisk{i}-{j}"));
            args.push("-device".into());
            args.push(format!(
                "virtio-blk-pci,drive=hostdisk{i}-{j},serial={serial}"
            ));
        }
    }
    args
}

fn tag(t: &str) -> String {
    if t.is_empty() {
        String::new()
    } else {
        format!("[{t}] ")
    }
}

trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn run_initrd_path() -> Result<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = crate::cache_dir().join("domu-runs");
    fs::create_dir_all(&dir)?;
    Ok(dir.join(format!(
        "dom0-initrd-{}-{}.img",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )))
}

/// The cached base (gzip'd cpio), zero padding, then this run's uncompressed cpio: `/init`,
/// the xl configs and the domUs' files. Linux unpacks concatenated archives in order.
fn write_run_initrd(ts: &Toolstack, base: &Path, specs: &[DomuSpec], out: &Path) -> Result<()> {
    let mut file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let base_bytes = fs::read(base).with_context(|| format!("reading {}", base.display()))?;
    file.write_all(&base_bytes)?;
    // The next archive must start 4-byte aligned; the unpacker skips zero bytes.
    let pad = (512 - base_bytes.len() % 512) % 512;
    file.write_all(&vec![0u8; pad])?;

    type Entry = (NewcBuilder, Box<dyn ReadSeek>);
    let mut entries: Vec<Entry> = Vec::new();
    let text = |name: &str, mode: u32, s: String| -> Entry {
        (
            NewcBuilder::new(name).mode(0o100000 | mode),
            Box::new(std::io::Cursor::new(s.into_bytes())) as Box<dyn ReadSeek>,
        )
    };
    // A symbolic link: newc stores the target as the entry's data.
    let text_link = |name: &str, target: String| -> Entry {
        (
            NewcBuilder::new(name).mode(0o120777),
            Box::new(std::io::Cursor::new(target.into_bytes())) as Box<dyn ReadSeek>,
        )
    };
    let host_file = |name: String, path: &Path| -> Result<Entry> {
        let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        if f.metadata()?.len() >= 1 << 32 {
            bail!(
                "{}: 4 GiB or more, too big for a cpio archive",
                path.display()
            );
        }
        Ok((
            NewcBuilder::new(&name).mode(0o100644),
            Box::new(f) as Box<dyn ReadSeek>,
        ))
    };
    // A host file several domUs boot (one image's kernel and initramfs for every scenario) is
    // in the archive once, the others link to it: dom0 holds the archive in its RAM.
    let mut placed: std::collections::HashMap<PathBuf, String> = Default::default();
    let mut once = |name: String, path: &Path| -> Result<Entry> {
        if let Some(first) = placed.get(path) {
            let target = first.rsplit('/').next().unwrap_or(first).to_string();
            return Ok(text_link(&name, target));
        }
        placed.insert(path.to_path_buf(), name.clone());
        host_file(name, path)
    };
    entries.push(text("init", 0o755, init_script(ts, specs)));
    for s in specs {
        let n = &s.name;
        entries.push(text(&format!("domu/{n}.cfg"), 0o644, s.config()));
        entries.push(once(format!("domu/{n}.kernel"), &s.kernel)?);
        if let Some(r) = &s.ramdisk {
            entries.push(once(format!("domu/{n}.ramdisk"), r)?);
        }
        if let Some(d) = &s.disk {
            entries.push(once(format!("domu/{n}.disk"), d)?);
        }
    }
    let file = cpio::write_cpio(entries.into_iter(), file).context("writing the run's cpio")?;
    file.sync_all().ok();
    Ok(())
}

/// Dom0's `/init`: start the toolstack as xencommons does, run each domU, power off.
fn init_script(ts: &Toolstack, specs: &[DomuSpec]) -> String {
    let modules: Vec<&str> = DOM0_MODULES.iter().map(|(n, _)| *n).collect();
    let mut s = INIT_HEAD
        .replace("@BIN@", &ts.bin_dir())
        .replace("@MODULES@", &modules.join(" "));
    for spec in specs {
        if spec.build_only {
            let secs = spec.timeout.as_secs().max(1);
            s.push_str(&format!("build_domu {} {secs}\n", spec.name));
            continue;
        }
        s.push_str(&format!(
            "run_domu {} {} '{}' '{}' '{}' {} {}\n",
            spec.name,
            spec.timeout.as_secs().max(1),
            if spec.disk.is_some() { "disk" } else { "" },
            host_disk_serials(spec).collect::<Vec<_>>().join(" "),
            if spec.dump_core { "core" } else { "" },
            spec.reboots,
            spec.disk_speed_mib
        ));
    }
    // Host disks: every write reaches QEMU before dom0 powers off.
    s.push_str("sync\nsay \"done uptime=$(up)\"\npoweroff -f\n");
    s
}

const INIT_HEAD: &str = r#"#!/bin/sh
export PATH=/bin:/usr/bin:/@BIN@
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
say() { echo "PVKEXEC-DOM0 $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
fail() { say "error $*"; say "done uptime=$(up)"; poweroff -f; sleep 60; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# devtmpfs has no /dev/fd or /dev/std*: the hotplug lock code loops until `stat /dev/stdin`
# works, and without them the block script hangs until libxl's timeout.
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
mkdir -p /run/xen /run/xenstored /run/lock /var/lib/xen/dump /var/log/xen/console
echo 4 > /proc/sys/kernel/printk
say "init uptime=$(up)"
# A module without a .ko is built into this kernel (the archive builder checked).
for m in @MODULES@; do [ -e /lib/modules/$m.ko ] || continue; insmod /lib/modules/$m.ko || fail "insmod $m failed"; done
mount -t xenfs xenfs /proc/xen || fail "mount xenfs failed"
xenstored --pid-file /run/xenstored.pid || fail "xenstored failed to start"
n=0
until xenstore-read -s / >/dev/null 2>&1; do
  n=$((n+1)); [ $n -gt 200 ] && fail "xenstored does not answer after 10 s"; usleep 50000
done
xen-init-dom0 || fail "xen-init-dom0 failed"
xenconsoled --log=guest --log-dir=/var/log/xen/console || fail "xenconsoled failed to start"
say "ready uptime=$(up)"

build_domu() {
  name=$1; secs=$2
  say "domu $name start uptime=$(up)"
  timeout "$secs" xl -vvv create -p "/domu/$name.cfg" > "/tmp/$name.xl" 2>&1
  rc=$?
  sed "s/^/[xl:$name] /" "/tmp/$name.xl"
  if [ $rc -eq 0 ]; then say "domu $name built uptime=$(up)"; xl destroy "$name"; fi
  [ $rc -eq 143 ] && say "domu $name timeout after ${secs} s uptime=$(up)"
  say "domu $name end xl_rc=$rc uptime=$(up)"
}

# The virtio-blk disk QEMU gave dom0 with serial $1, waiting for its probe (bounded).
host_disk() {
  n=0
  while [ $n -lt 100 ]; do
    for b in /sys/block/vd*; do
      [ -e "$b/serial" ] && [ "$(cat "$b/serial")" = "$1" ] && { echo "/dev/${b##*/}"; return 0; }
    done
    n=$((n+1)); usleep 100000
  done
  return 1
}

# xl's core of domU $1 (on_crash = coredump-destroy) from sector 0 of host disk $2.
save_core() {
  f=/var/lib/xen/dump/$1
  if [ ! -e "$f" ]; then say "domu $1 core none"; return; fi
  size=$(stat -c %s "$f")
  if dd if="$f" of="$2" bs=1M conv=fsync 2>/dev/null; then say "domu $1 core $size bytes on $2"; else say "domu $1 core copy to $2 failed"; fi
  rm -f "$f"
}

# dom0's own direct write of $3 MiB to host disk $2 (the disk's speed beside domU $1's).
disk_speed() {
  t0=$(up)
  dd if=/dev/zero of="$2" bs=1M count="$3" oflag=direct 2>/dev/null
  rc=$?
  t1=$(up)
  say "domu $1 disk-speed mib=$3 rc=$rc from=$t0 to=$t1"
}

run_domu() {
  name=$1; secs=$2; disk=$3; serials=$4; core=$5; reboots=$6; speed=$7; dev=; disks=; boot=0; coredev=
  cfg=/domu/$name.cfg
  say "domu $name start uptime=$(up)"
  if [ -n "$disk" ]; then
    dev=$(losetup -f) && losetup "$dev" "/domu/$name.disk" || { say "domu $name error losetup failed"; say "domu $name end xl_rc=none uptime=$(up)"; return; }
    disks="\"format=raw,vdev=xvda,access=rw,target=$dev\""
  fi
  # The domU's disks in order: xvda, xvdb, ...
  letters=abcdef; [ -n "$disks" ] && letters=bcdef
  for serial in $serials; do
    hdev=$(host_disk "$serial") || { say "domu $name error no virtio disk with serial $serial after 10 s"; say "domu $name end xl_rc=none uptime=$(up)"; return; }
    vdev=xvd${letters%"${letters#?}"}; letters=${letters#?}
    [ -n "$disks" ] && disks="$disks, "
    disks="$disks\"format=raw,vdev=$vdev,access=rw,target=$hdev\""
    [ -z "$coredev" ] && coredev=$hdev
    say "domu $name host disk $serial is $hdev, the domU's $vdev"
  done
  [ -n "$disks" ] && echo "disk = [ $disks ]" >> "$cfg"

  ( sleep "$secs"; if [ ! -e "/tmp/$name.rc" ]; then say "domu $name timeout after ${secs} s uptime=$(up)"; xl destroy "$name"; fi ) &
  wd=$!
  # xl says `Waiting for domain` for every incarnation it starts (after each restart too):
  # /tmp/NAME.up.K marks the K-th.
  ( xl -vvv create -F "$cfg" 2>&1; echo "XLRC=$?" ) | while IFS= read -r l; do
      case "$l" in
        XLRC=*) echo "${l#XLRC=}" > "/tmp/$name.rc" ;;
        *) echo "[xl:$name] $l"
           case "$l" in *"Waiting for domain"*)
             boot=$((boot+1))
             if [ $boot -eq 1 ]; then say "domu $name created uptime=$(up)"; else say "domu $name restarted boot=$boot uptime=$(up)"; fi
             : > "/tmp/$name.up.$boot" ;; esac ;;
      esac
    done &
  xlpid=$!
  # One `xl console` per incarnation: it exits when that domain is gone.
  boot=1
  while :; do
    until [ -e "/tmp/$name.up.$boot" ] || [ -e "/tmp/$name.rc" ]; do usleep 100000; done
    [ -e "/tmp/$name.up.$boot" ] || break
    if [ $boot -gt $((reboots+1)) ]; then
      say "domu $name rebooted more than $reboots times: destroying it uptime=$(up)"
      xl destroy "$name"
      break
    fi
    set -o pipefail
    xl console "$name" </dev/null 2>&1 | sed "s/^/[domu:$name] /"
    crc=$?
    set +o pipefail
    if [ $crc -ne 0 ]; then
      if [ "$reboots" -eq 0 ]; then
        say "domu $name console exited with $crc: the xenconsoled log follows"
        wait $xlpid
        sed "s/^/[domu:$name] /" "/var/log/xen/console/guest-$name.log"
      else
        # The log file holds every incarnation: printing it would repeat earlier boots.
        say "domu $name console of boot $boot exited with $crc uptime=$(up)"
      fi
    fi
    boot=$((boot+1))
  done
  wait $xlpid
  kill $wd 2>/dev/null
  [ -n "$core" ] && save_core "$name" "$coredev"
  [ "$speed" -gt 0 ] && disk_speed "$name" "$coredev" "$speed"
  say "domu $name end xl_rc=$(cat /tmp/$name.rc) uptime=$(up)"
  [ -n "$dev" ] && losetup -d "$dev"
}
"#;

/// The domU's lines from dom0's log (`[domu:NAME] text`, `[xl:NAME] text`, markers).
fn judge(spec: &DomuSpec, dom0: &BootResult) -> DomuResult {
    let n = &spec.name;
    let prefixes = Prefixes::new(n);
    let mut console = Vec::new();
    let mut xl = Vec::new();
    let mut markers = Vec::new();
    for line in dom0.log.lines() {
        match prefixes.split(line) {
            Some((LineSource::Console, text)) => console.push(text.to_string()),
            Some((LineSource::Xl, text)) => xl.push(text.to_string()),
            Some((LineSource::Dom0, text)) => markers.push(text.to_string()),
            None => {}
        }
    }
    let stamp = |what: &str| {
        markers
            .iter()
            .find(|m| m.starts_with(what))
            .and_then(|m| m.split("uptime=").nth(1))
            .and_then(|t| t.trim().parse::<f64>().ok())
    };
    let start = stamp("start");
    let wall_secs = start.zip(stamp("end")).map(|(a, b)| b - a);
    let create_secs = start
        .zip(stamp("created").or(stamp("built")))
        .map(|(a, b)| b - a);
    // The last: with restarts, the earlier ones are the reboots xl acted on.
    let shutdown_reason = xl.iter().rev().find_map(|l| {
        let rest = l.split("has shut down, reason code ").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    });
    let disk_speed = markers.iter().find_map(|m| {
        let rest = m.strip_prefix("disk-speed ")?;
        let field = |k: &str| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .map(str::to_string)
        };
        if field("rc=")? != "0" {
            return None;
        }
        let mib = field("mib=")?.parse().ok()?;
        let secs = field("to=")?.parse::<f64>().ok()? - field("from=")?.parse::<f64>().ok()?;
        Some((mib, secs))
    });
    let boots = markers
        .iter()
        .filter(|m| m.starts_with("created") || m.starts_with("restarted"))
        .count() as u32;
    let ended = markers.iter().any(|m| m.starts_with("end "));
    let timed_out = markers.iter().any(|m| m.starts_with("timeout"));
    let created = markers.iter().any(|m| m.starts_with("created"));
    let built = markers.iter().any(|m| m.starts_with("built"));
    let has_fail = console.iter().any(|l| l.contains("PVKEXEC-TEST FAIL "));
    let verdict = if !ended {
        DomuVerdict::Dom0(dom0_failure(dom0))
    } else if has_fail {
        DomuVerdict::GuestFailed
    } else if timed_out {
        DomuVerdict::Timeout
    } else if built {
        DomuVerdict::Built
    } else if !created {
        DomuVerdict::Toolstack(xl_errors(&xl, &markers))
    } else {
        match shutdown_reason {
            Some(1) => DomuVerdict::Pass,
            Some(0) => DomuVerdict::PoweredOff,
            Some(3) | Some(4) => DomuVerdict::Crashed,
            Some(_) | None => DomuVerdict::Destroyed,
        }
    };
    DomuResult {
        name: n.clone(),
        verdict,
        console,
        xl,
        shutdown_reason,
        boots,
        wall_secs,
        create_secs,
        disk_speed,
    }
}

/// xl's error lines (libxl marks them `: error: ` / `libxl: error:`, the parser `error`),
/// else its last lines.
fn xl_errors(xl: &[String], markers: &[String]) -> String {
    let mut picked: Vec<&str> = markers
        .iter()
        .filter(|m| m.starts_with("error"))
        .map(String::as_str)
        .collect();
    picked.extend(
        xl.iter()
            .filter(|l| {
                let low = l.to_ascii_lowercase();
                low.contains("error") || low.contains("failed") || low.contains("parsing config")
            })
            .map(String::as_str),
    );
    if picked.is_empty() {
        picked = xl.iter().rev().take(3).rev().map(String::as_str).collect();
    }
    if picked.is_empty() {
        return "xl create printed nothing".into();
    }
    picked.join(" | ")
}

fn dom0_failure(dom0: &BootResult) -> String {
    let errors: Vec<&str> = dom0
        .log
        .lines()
        .filter(|l| l.contains("PVKEXEC-DOM0 error"))
        .collect();
    let ready = dom0.log.contains("PVKEXEC-DOM0 ready");
    let what = match dom0.verdict {
        Verdict::Timeout => "the rig timed out",
        Verdict::PoweredOff => "dom0 powered off",
        Verdict::Crashed => "dom0 crashed",
        Verdict::XenPanic => "Xen panicked",
        _ => "dom0 ended",
    };
    format!(
        "{what} ({:?}) {} this domU finished{}{}",
        dom0.verdict,
        if ready {
            "before"
        } else {
            "before the toolstack was ready and"
        },
        if errors.is_empty() { "" } else { ": " },
        errors.join(" | ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dom0(log: &str, verdict: Verdict) -> BootResult {
        BootResult {
            verdict,
            log: log.to_string(),
            wall: Duration::from_secs(1),
            line_secs: log.lines().map(|_| 0.0).collect(),
        }
    }

    const BUILT: &str = "PVKEXEC-DOM0 domu a start uptime=10.00\n\
        [xl:a] domainbuilder: detail: xc_dom_alloc_segment:   kernel       : 0xffffffff80000000 -> 0xffffffff80100000  (pfn 0x0 + 0x100 pages)\n\
        [xl:a] Waiting for domain a (domid 1) to die [pid 99]\n\
        PVKEXEC-DOM0 domu a created uptime=12.50\n\
        [domu:a] PVKEXEC-TEST PASS magic\n";

    #[test]
    fn reboot_is_pass_and_times_are_read() {
        let log = format!(
            "{BUILT}[xl:a] Domain 1 has shut down, reason code 1 0x1\n\
             PVKEXEC-DOM0 domu a end xl_rc=0 uptime=15.00\n"
        );
        let r = judge(&DomuSpec::new("a", "/k"), &dom0(&log, Verdict::PoweredOff));
        assert_eq!(r.verdict, DomuVerdict::Pass);
        assert_eq!(r.passed(), vec!["magic"]);
        assert_eq!(r.shutdown_reason, Some(1));
        assert_eq!(r.wall_secs, Some(5.0));
        assert_eq!(r.create_secs, Some(2.5));
        assert_eq!(
            r.builder_log_lines(),
            vec!["xc_dom_alloc_segment:   kernel       : 0xffffffff80000000 -> 0xffffffff80100000  (pfn 0x0 + 0x100 pages)"]
        );
    }

    #[test]
    fn disk_speed_is_read_and_a_failed_dd_is_none() {
        let end = "PVKEXEC-DOM0 domu a end xl_rc=0 uptime=15.00\n";
        let ok =
            format!("{BUILT}PVKEXEC-DOM0 domu a disk-speed mib=64 rc=0 from=20.50 to=21.00\n{end}");
        let r = judge(&DomuSpec::new("a", "/k"), &dom0(&ok, Verdict::PoweredOff));
        assert_eq!(r.disk_speed, Some((64, 0.5)));
        let failed =
            format!("{BUILT}PVKEXEC-DOM0 domu a disk-speed mib=64 rc=1 from=20.50 to=21.00\n{end}");
        let r = judge(
            &DomuSpec::new("a", "/k"),
            &dom0(&failed, Verdict::PoweredOff),
        );
        assert_eq!(r.disk_speed, None);
    }

    #[test]
    fn crash_fail_timeout_and_toolstack_are_named() {
        let end = "PVKEXEC-DOM0 domu a end xl_rc=0 uptime=15.00\n";
        let crash = format!("{BUILT}[xl:a] Domain 1 has shut down, reason code 3 0x3\n{end}");
        let r = judge(
            &DomuSpec::new("a", "/k"),
            &dom0(&crash, Verdict::PoweredOff),
        );
        assert_eq!(r.verdict, DomuVerdict::Crashed);
        let fail = format!("{BUILT}[domu:a] PVKEXEC-TEST FAIL p2m: bad\n{end}");
        let r = judge(&DomuSpec::new("a", "/k"), &dom0(&fail, Verdict::PoweredOff));
        assert_eq!(r.verdict, DomuVerdict::GuestFailed);
        assert_eq!(r.failed(), vec![("p2m".to_string(), "bad".to_string())]);
        let hung = format!("{BUILT}PVKEXEC-DOM0 domu a timeout after 5 s uptime=20\n[xl:a] Domain 1 has been destroyed.\n{end}");
        let r = judge(&DomuSpec::new("a", "/k"), &dom0(&hung, Verdict::PoweredOff));
        assert_eq!(r.verdict, DomuVerdict::Timeout);
        let rejected = "PVKEXEC-DOM0 domu a start uptime=1\n\
            [xl:a] Parsing config from /domu/a.cfg\n\
            [xl:a] /domu/a.cfg:12: config parsing error near `[': syntax error\n\
            PVKEXEC-DOM0 domu a end xl_rc=1 uptime=2\n";
        let r = judge(
            &DomuSpec::new("a", "/k"),
            &dom0(rejected, Verdict::PoweredOff),
        );
        match r.verdict {
            DomuVerdict::Toolstack(why) => assert!(why.contains("syntax error"), "{why}"),
            v => panic!("{v:?}"),
        }
        let r = judge(&DomuSpec::new("b", "/k"), &dom0(BUILT, Verdict::Timeout));
        assert!(matches!(r.verdict, DomuVerdict::Dom0(_)), "{:?}", r.verdict);
    }

    #[test]
    fn build_only_is_built() {
        let log = "PVKEXEC-DOM0 domu a start uptime=1.00\n\
            [xl:a] domainbuilder: detail: xc_dom_build_image  : virt_alloc_end : 0xffffffff84a2d000\n\
            PVKEXEC-DOM0 domu a built uptime=3.50\n\
            PVKEXEC-DOM0 domu a end xl_rc=0 uptime=4.00\n";
        let r = judge(&DomuSpec::new("a", "/k"), &dom0(log, Verdict::PoweredOff));
        assert_eq!(r.verdict, DomuVerdict::Built);
        assert_eq!(r.create_secs, Some(2.5));
        assert_eq!(
            r.builder_log_lines(),
            vec!["xc_dom_build_image  : virt_alloc_end : 0xffffffff84a2d000"]
        );
    }

    #[test]
    fn restarts_are_counted_and_the_last_reason_is_the_verdict() {
        let log = format!(
            "{BUILT}[xl:a] Domain 1 has shut down, reason code 1 0x1\n\
             [xl:a] Action for shutdown reason code 1 is restart\n\
             [xl:a] Done. Rebooting now\n\
             [xl:a] Waiting for domain a (domid 2) to die [pid 99]\n\
             PVKEXEC-DOM0 domu a restarted boot=2 uptime=20.00\n\
             [domu:a] second boot\n\
             [xl:a] Domain 2 has shut down, reason code 0 0x0\n\
             PVKEXEC-DOM0 domu a end xl_rc=0 uptime=25.00\n"
        );
        let mut spec = DomuSpec::new("a", "/k");
        spec.reboots = 1;
        let d = dom0(&log, Verdict::PoweredOff);
        let r = judge(&spec, &d);
        assert_eq!(r.verdict, DomuVerdict::PoweredOff);
        assert_eq!(r.shutdown_reason, Some(0));
        assert_eq!(r.boots, 2);
        assert_eq!(r.create_secs, Some(2.5));
        assert_eq!(r.console, vec!["PVKEXEC-TEST PASS magic", "second boot"]);
        let run = RigRun {
            domus: vec![r],
            dom0: d,
            toolstack_ready_secs: None,
        };
        let lines = run.timed_lines("a");
        assert_eq!(lines.len(), log.lines().count());
        assert_eq!(lines[0].source, LineSource::Dom0);
        assert_eq!(lines[0].text, "start uptime=10.00");
        let second = lines.iter().find(|l| l.text == "second boot").unwrap();
        assert_eq!(second.source, LineSource::Console);
        assert!(run.timed_lines("b").is_empty());
    }

    #[test]
    fn reboots_restart_in_the_config_and_are_bounded() {
        let mut s = DomuSpec::new("a", "/k");
        assert!(s.config().contains("on_reboot = \"destroy\"\n"));
        s.reboots = 3;
        assert!(s.config().contains("on_reboot = \"restart\"\n"));
        assert!(
            init_script(&Toolstack::for_xen(XenVersion::V4_17), &[s.clone()])
                .contains("run_domu a 60 '' '' '' 3 0\n")
        );
        s.reboots = MAX_REBOOTS + 1;
        s.kernel = std::env::current_exe().unwrap();
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("reboots, at most"), "{e}");
        s.reboots = 1;
        s.build_only = true;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("cannot reboot"), "{e}");
    }

    #[test]
    fn bad_specs_are_refused_by_name() {
        let mut s = DomuSpec::new("Bad Name", "/nonexistent");
        assert!(s.validate().unwrap_err().to_string().contains("Bad Name"));
        s.name = "ok".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("no such file"));
        s.cmdline = "a\"b".into();
        assert!(s.validate().is_err());
    }

    #[test]
    fn a_host_disk_name_fits_the_virtio_serial() {
        let exe = std::env::current_exe().unwrap();
        let mut s = DomuSpec::new("kdump-448m-2vcpus", &exe);
        s.host_disk = Some(exe.clone());
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("at most 16 characters"), "{e}");
        s.name = "kdump-448m".into();
        s.validate().unwrap();
    }
}
