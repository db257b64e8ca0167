//! `cargo xtask bench`: the criterion benchmarks and `pvkexec plan`'s peak RSS; with
//! `--reboot`, only the kexec vs xl reboot benchmark of a Debian domU ([`run_reboot`]).

use crate::steps::{cargo, cargo_env, step};
use anyhow::{bail, Context, Result};
use harness::domu::{self, DomuResult, DomuRig, DomuSpec, DomuVerdict, LineSource, TimedLine};
use harness::kmod::{self, DomuFiles};
use harness::provision::{self, DebianLinux};
use harness::tools::{BuildMode, PvkexecBuild};
use harness::{guest, BootConfig, Module};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub(crate) fn run() -> Result<()> {
    let root = harness::workspace_root();
    let kernel = provision::ensure_debian_linux()?;
    let kernel_var = kernel.to_str().context("kernel path")?;
    step("loader: parse Debian's bzImage and plan", || {
        cargo_env(
            &root,
            &["bench", "-p", "loader"],
            &[("PVKEXEC_DEBIAN_KERNEL", kernel_var)],
        )
    })?;
    step(
        "loader: peak RSS of `pvkexec plan` on Debian's bzImage",
        || {
            cargo(
                &root,
                &["build", "--release", "-p", "loader", "--bin", "pvkexec"],
            )?;
            let exe = root.join("target/release/pvkexec");
            let (ok, max_rss_kib) = rusage_of(
                Command::new(&exe)
                    .args(["plan", "--mode", "dom0", "--mem-mib", "256", "--kernel"])
                    .arg(&kernel)
                    .stdout(std::process::Stdio::null()),
            )?;
            if !ok {
                bail!("pvkexec plan failed");
            }
            println!(
                "pvkexec plan on {}: peak RSS {:.1} MiB",
                kernel.display(),
                max_rss_kib as f64 / 1024.0
            );
            Ok(())
        },
    )?;
    step("digest verification, SHA-NI when the CPU has it", || {
        cargo(&root, &["bench", "-p", "pvhandoff"])
    })?;
    step("digest verification, software SHA-256", || {
        // A separate target dir: the cfg changes every crate's flags.
        let dir = root.join("target/bench-soft-sha");
        cargo_env(
            &root,
            &["bench", "-p", "pvhandoff"],
            &[
                ("RUSTFLAGS", "--cfg sha2_backend=\"soft\""),
                ("CARGO_TARGET_DIR", dir.to_str().context("target path")?),
            ],
        )
    })?;
    step(
        "Debian Linux 6.1 to init: direct boot by Xen's builder vs kexec (256 MiB, TCG)",
        || {
            guest::build()?;
            let kernel = provision::ensure_debian_linux()?;
            let initrd = harness::initramfs::ensure_initramfs()?;
            let append = "console=hvc0 earlyprintk=xen";
            let image = root.join("target/bench-linux.img");
            let mut b = PvkexecBuild::new(&kernel, 256, BuildMode::Dom0, &image);
            b.initrd = Some(initrd.clone());
            b.append = Some(append.into());
            eprint!("{}", b.run()?.stderr);
            let run = |kernel: PathBuf, module: PathBuf, cmdline: &str| -> Result<f64> {
                let mut cfg = BootConfig::new(kernel);
                cfg.mem_mib = 256;
                cfg.cmdline = cmdline.into();
                cfg.timeout = Duration::from_secs(240);
                cfg.modules.push(Module {
                    path: module,
                    args: String::new(),
                });
                cfg.stop_after = Some(harness::initramfs::DONE_MARKER.into());
                let r = harness::boot(&cfg)?;
                if r.verdict != harness::Verdict::Stopped {
                    bail!("the run ended {:?}", r.verdict);
                }
                Ok(r.wall.as_secs_f64())
            };
            let direct = run(kernel.clone(), initrd.clone(), append)?;
            let kexec = run(guest::binary("kexecold")?, image, "")?;
            println!(
                "to init: direct boot {direct:.2} s, old kernel + kexec {kexec:.2} s ({:.2}x)",
                kexec / direct
            );
            Ok(())
        },
    )?;
    step(
        "guest: the purgatory's digest verification on 1, 2 and 4 VCPUs (32 MiB initrd, TCG)",
        || {
            guest::build()?;
            let initrd = harness::tools::test_file(32 << 20)?;
            for vcpus in [1u32, 2, 4] {
                let image = root.join(format!("target/bench-kexec-{vcpus}.img"));
                let probe = guest::binary("probe")?;
                let mut b = PvkexecBuild::new(&probe, 512, BuildMode::Dom0, &image);
                b.initrd = Some(initrd.clone());
                b.append = Some("mem_mib=512".into());
                b.old_vcpus = Some(vcpus);
                eprint!("{}", b.run()?.stderr);
                let mut cfg = BootConfig::new(guest::binary("kexecold")?);
                cfg.mem_mib = 512;
                cfg.vcpus = vcpus;
                cfg.modules.push(Module {
                    path: image,
                    args: String::new(),
                });
                cfg.stop_after = Some("purgatory: digests verified".into());
                let r = harness::boot(&cfg)?;
                let line = r
                    .lines_with("purgatory: digests verified")
                    .next()
                    .context("no verification line")?
                    .to_string();
                println!("{vcpus} VCPU(s): {}", line.trim());
            }
            Ok(())
        },
    )?;
    Ok(())
}

/// Runs `cmd` and returns whether it succeeded and its own peak resident set size in KiB
/// (`wait4` on its pid, so earlier children such as cargo do not count).
fn rusage_of(cmd: &mut Command) -> Result<(bool, i64)> {
    let child = cmd.spawn().context("starting the measured command")?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 on our own child's pid writes the status and one rusage into the zeroed
    // locals; the Child handle is not waited on again.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::wait4(pid, &mut status, 0, &mut usage) != pid {
            bail!("wait4 failed");
        }
        usage
    };
    Ok((
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        usage.ru_maxrss,
    ))
}

/// Runs per side of `cargo xtask bench --reboot`: a chain of `RUNS + 1` generations.
const RUNS: usize = 5;
const REBOOT_MEM_MIB: u64 = 512;
const REBOOT_VCPUS: u32 = 2;
const REBOOT_APPEND: &str = "console=hvc0 loglevel=4";
const BENCH_TAG: &str = "PVKEXEC-BENCH";

/// The bench domUs' `/init` (after the shared preamble). Its first line, printed before
/// anything else, is the end mark of both measurements, with the kernel's own uptime. The
/// mode comes from the command line (`pvkexec.bench=kexec|reboot`); so does a kexec
/// generation (`pvkexec.gen=N`, as tests/linux_after_linux.rs's chain), while a reboot keeps
/// xl's command line, so that generation is counted in sector 8 of the disk, which the loop
/// device in dom0 keeps across xl's restarts. Every generation reads the disk's marker
/// through blkfront; the last one powers off. Kernel messages go to the console (printk 7) in
/// both modes, so the module's exec lines can be timed and both shutdowns print alike.
const BENCH_INIT: &str = r#"read -r up _ </proc/uptime
echo "PVKEXEC-BENCH init kernel-uptime=$up"
mode=$(sed -n 's/.*pvkexec\.bench=\([a-z]*\).*/\1/p' /proc/cmdline)
echo 7 > /proc/sys/kernel/printk
insmod /lib/modules/xen-blkfront.ko || echo "PVKEXEC-BENCH blkfront insmod failed"
n=0; while [ ! -b /dev/xvda ] && [ $n -lt 100 ]; do usleep 100000; n=$((n+1)); done
if [ "$mode" = reboot ]; then
  last=$(dd if=/dev/xvda bs=512 skip=8 count=1 2>/dev/null | head -n 1 | tr -cd 0-9)
  gen=$(( ${last:-0} + 1 ))
  printf '%s\n' "$gen" | dd of=/dev/xvda bs=512 seek=8 count=1 conv=sync,notrunc 2>/dev/null
  sync
else
  gen=$(sed -n 's/.*pvkexec\.gen=\([0-9]*\).*/\1/p' /proc/cmdline)
  [ -n "$gen" ] || gen=1
fi
say() { echo "PVKEXEC-BENCH gen=$gen $*"; }
say "mode=$mode nproc=$(nproc) uname-r=$(uname -r) xvda=$(head -n 1 /dev/xvda)"
if [ "$gen" -ge @LAST@ ]; then
  say "BENCH-DONE"
  poweroff -f
fi
if [ "$mode" = reboot ]; then
  say "reboot"
  reboot -f
  say "reboot failed rc=$?"
  poweroff -f
fi
insmod /lib/modules/pvkexec.ko || say "insmod failed"
repack_self
pvkexec load --kernel /boot/new --initrd /tmp/self.cpio.gz --append "@APPEND@ pvkexec.bench=kexec pvkexec.gen=$((gen+1))" 2>&1 && say "exec" && pvkexec exec 2>&1
say "exec failed rc=$?"
poweroff -f
"#;

/// One step inside a measured window: the first line of `source` containing `needle` after
/// the previous step's line (an empty needle: the next line of that source), or, for a step
/// `from_start`, after the window's start line, without moving the search on: a line from
/// another stream than its neighbours, whose arrival order against them is no given.
struct Stage {
    label: &'static str,
    source: LineSource,
    needle: &'static str,
    from_start: bool,
}

const fn stage(label: &'static str, source: LineSource, needle: &'static str) -> Stage {
    Stage {
        label,
        source,
        needle,
        from_start: false,
    }
}

const fn stage_from_start(label: &'static str, source: LineSource, needle: &'static str) -> Stage {
    Stage {
        from_start: true,
        ..stage(label, source, needle)
    }
}

/// Where the time of a kexec goes: the module, the purgatory, the new kernel.
const KEXEC_STAGES: &[Stage] = &[
    stage(
        "module's first exec line",
        LineSource::Console,
        "pvkexec: exec: image of",
    ),
    stage(
        "module: the disk's backend closed",
        LineSource::Console,
        "pvkexec: exec: device/",
    ),
    stage(
        "module enters the purgatory",
        LineSource::Console,
        "entering the purgatory",
    ),
    stage(
        "purgatory's first line",
        LineSource::Console,
        "purgatory: entered",
    ),
    stage(
        "purgatory: digests verified",
        LineSource::Console,
        "purgatory: digests verified",
    ),
    stage(
        "purgatory: event channels reset (its last line before the switch)",
        LineSource::Console,
        "event channels reset",
    ),
    // The switch line reaches xenconsoled only once the new kernel notifies the console: its
    // arrival is no measure of when it was printed.
    stage(
        "purgatory's switch line arrives (with the new kernel's first output)",
        LineSource::Console,
        harness::PURGATORY_ENTERING,
    ),
    stage("new kernel's first console line", LineSource::Console, ""),
];

/// Where the time of an xl reboot goes: the old kernel's shutdown, xl, the builder, the new
/// kernel.
const REBOOT_STAGES: &[Stage] = &[
    stage(
        "xl: the domain shut down with reason reboot",
        LineSource::Xl,
        "has shut down, reason code 1",
    ),
    stage_from_start(
        "old kernel: Restarting system (arrival)",
        LineSource::Console,
        "reboot: Restarting system",
    ),
    stage(
        "xl: old domain destroyed (block remove included); xl sleeps 2 s",
        LineSource::Xl,
        "Done. Rebooting now",
    ),
    stage(
        "xl: creating the new domain",
        LineSource::Xl,
        "do_domain_create",
    ),
    stage(
        "builder: bzImage unpacked (loader probe OK)",
        LineSource::Xl,
        "loader probe OK",
    ),
    stage("builder done", LineSource::Xl, "xc_dom_release"),
    stage(
        "disk hotplug script (block add) started",
        LineSource::Xl,
        "forking to execute: /etc/xen/scripts/block add",
    ),
    stage("domain unpaused", LineSource::Xl, "libxl_domain_unpause"),
    stage(
        "xl: Waiting for domain (it runs)",
        LineSource::Xl,
        "Waiting for domain",
    ),
];

/// One measured run: host seconds from the start line to the next init's first line.
struct Run {
    secs: f64,
    /// Seconds after the start line at which each stage's line arrived (None: not seen).
    stages: Vec<Option<f64>>,
    /// The new kernel's uptime when its init printed its first line (guest clock).
    kernel_uptime: Option<f64>,
}

/// The runs of one domU: each `start_suffix` console line (`PVKEXEC-BENCH gen=N <suffix>`)
/// to the next init line.
fn runs_of(lines: &[TimedLine], start_suffix: &str, stages: &[Stage]) -> Vec<Run> {
    let is_console = |l: &TimedLine| l.source == LineSource::Console;
    let is_start = |l: &TimedLine| {
        is_console(l)
            && l.text.contains(&format!("{BENCH_TAG} gen="))
            && l.text.ends_with(&format!(" {start_suffix}"))
    };
    let is_init = |l: &TimedLine| is_console(l) && l.text.contains(&format!("{BENCH_TAG} init"));
    let mut runs = Vec::new();
    for (s, start) in lines.iter().enumerate().filter(|(_, l)| is_start(l)) {
        let Some(e) = (s + 1..lines.len()).find(|&i| is_init(&lines[i])) else {
            continue;
        };
        let mut at = s;
        let mut found = Vec::new();
        for st in stages {
            let from = if st.from_start { s } else { at };
            let hit = (from + 1..e)
                .find(|&i| lines[i].source == st.source && lines[i].text.contains(st.needle));
            if let (Some(i), false) = (hit, st.from_start) {
                at = i;
            }
            found.push(hit.map(|i| lines[i].secs - start.secs));
        }
        let kernel_uptime = lines[e]
            .text
            .split("kernel-uptime=")
            .nth(1)
            .and_then(|t| t.trim().parse().ok());
        runs.push(Run {
            secs: lines[e].secs - start.secs,
            stages: found,
            kernel_uptime,
        });
    }
    runs
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Prints one side's runs and the median offset of each stage; returns the median.
fn report(title: &str, runs: &[Run], stages: &[Stage]) -> Option<f64> {
    let each: Vec<String> = runs.iter().map(|r| format!("{:.2}", r.secs)).collect();
    let med = median(runs.iter().map(|r| r.secs).collect());
    println!(
        "{title}: {} run(s): {} s; median {}",
        runs.len(),
        each.join(", "),
        med.map_or("-".into(), |m| format!("{m:.2} s"))
    );
    for (k, st) in stages.iter().enumerate() {
        let seen: Vec<f64> = runs.iter().filter_map(|r| r.stages[k]).collect();
        let m = median(seen.clone());
        println!(
            "    +{:>6} s  {} ({} of {} runs)",
            m.map_or("-".into(), |m| format!("{m:.2}")),
            st.label,
            seen.len(),
            runs.len()
        );
    }
    let up = median(runs.iter().filter_map(|r| r.kernel_uptime).collect());
    // Linux's uptime starts near its entry, so this dates the entry on the host's clock.
    let entered = median(
        runs.iter()
            .filter_map(|r| r.kernel_uptime.map(|u| r.secs - u))
            .collect(),
    );
    println!(
        "    +{:>6} s  new kernel's clock starts (init's line less the uptime it prints; Linux \
         starts its clock a little after its entry)",
        entered.map_or("-".into(), |m| format!("{m:.2}")),
    );
    println!(
        "    +{:>6} s  new init's first line (the kernel's own uptime there: {})",
        med.map_or("-".into(), |m| format!("{m:.2}")),
        up.map_or("-".into(), |u| format!("{u:.2} s"))
    );
    med
}

/// Checks every generation of a side reported 2 CPUs and the disk marker; the problems found.
fn generation_problems(d: &DomuResult, marker: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let gens: Vec<&str> = d.lines_with(" mode=").collect();
    if gens.len() != RUNS + 1 {
        problems.push(format!(
            "{} generation(s) reached init, not {}",
            gens.len(),
            RUNS + 1
        ));
    }
    for g in gens {
        if !g.contains(&format!("nproc={REBOOT_VCPUS} ")) {
            problems.push(format!("not {REBOOT_VCPUS} CPUs online: {}", g.trim()));
        }
        if !g.contains(&format!("xvda={marker}")) {
            problems.push(format!("the disk was not read: {}", g.trim()));
        }
    }
    problems
}

/// The console lines that say why a side stopped early (refusals, failures).
fn failure_lines(d: &DomuResult) -> Vec<String> {
    d.console
        .iter()
        // Debian's kernels taint for any unsigned module: no failure.
        .filter(|l| !l.contains("module verification failed"))
        .filter(|l| {
            l.contains("refused")
                || l.contains(" failed")
                || l.contains("Failed to")
                || l.contains("error")
                || l.contains("panic")
        })
        .take(8)
        .cloned()
        .collect()
}

/// `cargo xtask bench --reboot`: kexec vs xl reboot of one Debian 6.1 domU (2 VCPUs, 512 MiB,
/// a disk read by blkfront each boot) on the patched Xen 4.17, in one dom0 boot.
pub(crate) fn run_reboot() -> Result<()> {
    // The kernel kexecs into itself.
    let bookworm = provision::ensure_linux(DebianLinux::Bookworm)?;
    let (linux, files) = kmod::old_linux_files(DebianLinux::Bookworm, &bookworm, true)?;
    let files = DomuFiles { files };
    let init = format!("{}{BENCH_INIT}", kmod::REPACK_SELF_SH)
        .replace("@LAST@", &(RUNS + 1).to_string())
        .replace("@APPEND@", REBOOT_APPEND);
    let rd = harness::cache_dir().join(format!("bench-reboot-{}.cpio.gz", std::process::id()));
    let mut temp = TempFiles(vec![rd.clone()]);
    kmod::domu_initramfs(&init, &kmod::pvkexec_release()?, &files, &rd)?;
    let mut spec = |mode: &str, marker: &str| -> Result<DomuSpec> {
        let disk = domu::marker_disk(marker, 4)?;
        temp.0.push(disk.clone());
        let mut s = DomuSpec::new(&format!("bench-{mode}"), &linux);
        s.ramdisk = Some(rd.clone());
        s.cmdline = format!("{REBOOT_APPEND} pvkexec.bench={mode}");
        s.mem_mib = REBOOT_MEM_MIB;
        s.vcpus = REBOOT_VCPUS;
        s.disk = Some(disk);
        s.timeout = Duration::from_secs(900);
        Ok(s)
    };
    const REBOOT_MARKER: &str = "PVKEXEC-DISK-MARKER-bench-reboot";
    const KEXEC_MARKER: &str = "PVKEXEC-DISK-MARKER-bench-kexec";
    let mut reboot = spec("reboot", REBOOT_MARKER)?;
    reboot.reboots = RUNS as u32;
    let kexec = spec("kexec", KEXEC_MARKER)?;
    let rig = DomuRig {
        patched_xen: true,
        tag: "bench-reboot".into(),
        host_mem_mib: 2560,
        ..DomuRig::default()
    };
    let run = rig.run(&[reboot, kexec])?;
    drop(temp);

    println!(
        "\nDebian 6.1 domU ({REBOOT_VCPUS} VCPUs, {REBOOT_MEM_MIB} MiB, a disk read by blkfront \
         each boot) on the patched Xen 4.17 under QEMU TCG; host seconds from the serial lines"
    );
    let b = &run.domus[0];
    let a = &run.domus[1];
    let (lines_a, lines_b) = (run.timed_lines(&a.name), run.timed_lines(&b.name));
    let log = harness::workspace_root().join("target/bench-reboot-lines.log");
    write_timed_log(&log, &[(&a.name, &lines_a), (&b.name, &lines_b)])?;
    println!("every line with its host time: {}", log.display());
    let runs_b = runs_of(&lines_b, "reboot", REBOOT_STAGES);
    let runs_a = runs_of(&lines_a, "exec", KEXEC_STAGES);
    let med_a = report(
        "(A) kexec: `pvkexec exec` -> the new kernel's init",
        &runs_a,
        KEXEC_STAGES,
    );
    let med_b = report(
        "(B) xl reboot: `reboot -f` -> xl rebuilds the domain -> the new kernel's init",
        &runs_b,
        REBOOT_STAGES,
    );
    if let (Some(a), Some(b)) = (med_a, med_b) {
        println!("ratio median(A)/median(B) = {:.2} (goal <= 0.5)", a / b);
    }
    let mut problems = Vec::new();
    for (d, marker, runs) in [(a, KEXEC_MARKER, &runs_a), (b, REBOOT_MARKER, &runs_b)] {
        let mut p = generation_problems(d, marker);
        if runs.len() != RUNS {
            p.push(format!("{} of {RUNS} runs measured", runs.len()));
        }
        if !p.is_empty() {
            p.extend(failure_lines(d));
        }
        if d.verdict != DomuVerdict::PoweredOff {
            p.push(format!("ended {:?}, not powered off", d.verdict));
        }
        problems.extend(p.into_iter().map(|p| format!("{}: {p}", d.name)));
    }
    if !problems.is_empty() {
        bail!(
            "the runs did not all do what the benchmark assumes (see {}):\n  {}",
            log.display(),
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// Writes each domU's timed lines (`host seconds, source, text`) to `path`.
fn write_timed_log(path: &std::path::Path, domus: &[(&str, &[TimedLine])]) -> Result<()> {
    let mut out = String::new();
    for (name, lines) in domus {
        out.push_str(&format!("== {name}\n"));
        for l in lines.iter() {
            let src = match l.source {
                LineSource::Console => "console",
                LineSource::Xl => "xl",
                LineSource::Dom0 => "dom0",
            };
            out.push_str(&format!("{:10.3} {src:7} {}\n", l.secs, l.text));
        }
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Files removed when dropped (the bench's initramfs and disks, also on an error).
struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Memory of the domain `bench --dump` dumps.
const DUMP_MEM_MIB: u64 = 1024;

/// `cargo xtask bench --dump`: the capture kernel's dump speed and the dump disk's own write
/// speed, in one run: a Debian 6.1 domU of [`DUMP_MEM_MIB`] panics, the capture kernel writes
/// its vmcore to a host file through blkfront and blkback, then dom0 writes as many MiB of
/// zeros to the same disk with direct I/O (`dd oflag=direct`, 1 MiB blocks).
pub(crate) fn run_dump() -> Result<()> {
    let disk = harness::cache_dir().join(format!("bench-dump-{}.img", std::process::id()));
    let _temp = TempFiles(vec![disk.clone()]);
    let mut k = harness::kdump::Kdump::new(&disk)?;
    k.mem_mib = DUMP_MEM_MIB;
    k.timeout = Duration::from_secs(600);
    let (mut spec, rd) = harness::kdump::spec("bench-dump", &k)?;
    let _rd = TempFiles(vec![rd]);
    spec.disk_speed_mib = DUMP_MEM_MIB;
    let rig = DomuRig {
        tag: "bench-dump".into(),
        host_mem_mib: 2048 + DUMP_MEM_MIB,
        ..Default::default()
    };
    let run = rig.run(&[spec])?;
    let d = &run.domus[0];
    let written = d
        .lines_with("PVKEXEC-INFO capture: vmcore written: ")
        .next()
        .with_context(|| format!("the capture kernel wrote no vmcore:\n{}", d.log()))?
        .to_string();
    // "vmcore written: BYTES bytes in MS ms (KIB KiB/s), ..."
    let nums: Vec<u64> = written
        .split_once("written: ")
        .map(|(_, r)| r)
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (bytes, ms) = match nums.as_slice() {
        [b, m, ..] if *m > 0 => (*b, *m),
        _ => bail!("cannot read the capture kernel's line: {written}"),
    };
    let (mib, secs) = d
        .disk_speed
        .with_context(|| "dom0 reported no disk speed (its dd failed or never ran)")?;
    let dump_mbs = bytes as f64 / 1e6 / (ms as f64 / 1e3);
    let disk_mbs = (mib << 20) as f64 / 1e6 / secs;
    println!("dump: {bytes} bytes in {ms} ms: {dump_mbs:.0} MB/s (capture kernel, blkfront)");
    println!(
        "disk: {} bytes in {secs:.2} s: {disk_mbs:.0} MB/s (dom0, dd oflag=direct bs=1M)",
        mib << 20
    );
    println!(
        "the dump runs at {:.0}% of the disk's own write speed",
        100.0 * dump_mbs / disk_mbs
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(secs: f64, source: LineSource, text: &str) -> TimedLine {
        TimedLine {
            secs,
            source,
            text: text.into(),
        }
    }

    #[test]
    fn runs_pair_each_start_with_the_next_init_and_find_stages() {
        use LineSource::{Console, Xl};
        let lines = vec![
            line(1.0, Console, "PVKEXEC-BENCH init kernel-uptime=3.50"),
            line(2.0, Console, "PVKEXEC-BENCH gen=1 reboot"),
            line(2.5, Console, "[ 4.0] reboot: Restarting system"),
            line(3.0, Xl, "Domain 1 has shut down, reason code 1 0x1"),
            line(5.0, Xl, "Waiting for domain b (domid 2) to die"),
            line(9.0, Console, "PVKEXEC-BENCH init kernel-uptime=3.00"),
            line(10.0, Console, "PVKEXEC-BENCH gen=2 reboot"),
            line(14.0, Console, "PVKEXEC-BENCH init kernel-uptime=bad"),
            // A start without a following init is no run.
            line(15.0, Console, "PVKEXEC-BENCH gen=3 reboot"),
        ];
        let stages = [
            stage("shutdown", Xl, "reason code 1"),
            // Arrived before the previous stage's line; does not move the search on.
            stage_from_start("restarting", Console, "Restarting system"),
            stage("missing", Xl, "never printed"),
            stage("running", Xl, "Waiting for domain"),
        ];
        let runs = runs_of(&lines, "reboot", &stages);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].secs, 7.0);
        assert_eq!(runs[0].stages, vec![Some(1.0), Some(0.5), None, Some(3.0)]);
        assert_eq!(runs[0].kernel_uptime, Some(3.0));
        assert_eq!(runs[1].secs, 4.0);
        assert_eq!(runs[1].stages, vec![None, None, None, None]);
        assert_eq!(runs[1].kernel_uptime, None);
        assert!(runs_of(&lines, "exec", &stages).is_empty());
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
