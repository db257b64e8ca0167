//! kdump in toolstack-built domUs (Xen 4.17): Debian's unmodified 6.1 with `pvkexec.ko` loads
//! the capture kernel as its crash kernel (`pvkexec load -p`) and panics
//! (`echo c > /proc/sysrq-trigger`); the crash kernel writes the vmcore to the domU's disk (a
//! host file), `pvkexec vmcore` cuts it out, and crash and makedumpfile open it on the host.
//! One dom0 boot runs:
//! - `kdump-448m`: 448 MiB (3.5 memory sections), 2 VCPUs, CPU 1 spinning with
//!   interrupts off at the panic;
//! - `kdump-balloon`: 320 MiB ballooned down to 256 MiB before the load (P2M holes);
//! - `kdump-197m`: 197 MiB (not even a whole P2M page: the last one half used);
//! - `kdump-6g`: 6 GiB, 2 VCPUs: past the 2 GiB a crash view in one buddy block held, and six
//!   times what the capture kernel's old static table held; its reservation stays the default
//!   20 MiB; the capture kernel finds its six list pages through the crash record's directory;
//! - `kdump-448m-zero`: `kdump-448m` again with `pvkexec.dump_zero=skip`: its runs of zero
//!   frames left out, the vmcore smaller by about the zero frames `kdump-448m`'s holds, and
//!   crash reading a frame left out as zeros;
//! - `kdump-corrupt`: the crash image corrupted after load: the purgatory names it, nothing
//!   boots, the domain crashes as Xen would have made it.
//!
//! makedumpfile translates every PFN of the last memory section (128 MiB), past the domain's
//! end: none of the three sizes is a whole number of sections (docs/vmcore.md).

use harness::domu::{DomuResult, DomuRig, DomuVerdict};
use harness::kdump::{self, Fault, Kdump};
use harness::vmcore_file::VmcoreFile;
use harness::vmcore_tools;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The crash kernel's command line: the dump disk, every frame written.
const FULL: &str = "pvkexec.dump=xvda";
/// The same, runs of zero frames left out.
const ZERO_SKIP: &str = "pvkexec.dump=xvda pvkexec.dump_zero=skip";

/// One dumped domain.
struct Domain {
    name: &'static str,
    mem_mib: u64,
    balloon_to_mib: Option<u64>,
    vcpus: u32,
    /// CPU 1 spins with interrupts off at the panic.
    spin: bool,
    /// The crash kernel's command line.
    append: &'static str,
}

const fn domain(name: &'static str, mem_mib: u64, vcpus: u32) -> Domain {
    Domain {
        name,
        mem_mib,
        balloon_to_mib: None,
        vcpus,
        spin: false,
        append: FULL,
    }
}

/// The dumped domains, one after another.
const DUMPS: [Domain; 5] = [
    Domain {
        spin: true,
        ..domain("kdump-448m", 448, 2)
    },
    Domain {
        balloon_to_mib: Some(256),
        ..domain("kdump-balloon", 320, 1)
    },
    domain("kdump-197m", 197, 1),
    domain("kdump-6g", 6144, 2),
    Domain {
        spin: true,
        append: ZERO_SKIP,
        ..domain("kdump-448m-zero", 448, 2)
    },
];
/// QEMU's memory: the largest domU (they run one after another), dom0's 768 MiB and Xen's.
const HOST_MEM_MIB: u64 = 6144 + 2048;

struct Dumped {
    domu: Result<DomuResult, String>,
    /// The vmcore `pvkexec vmcore` cut from the domU's disk, and its length.
    vmcore: Result<(PathBuf, u64), String>,
}

struct Shared {
    dumps: Vec<Dumped>,
    corrupt: Result<DomuResult, String>,
}

fn disk(name: &str) -> PathBuf {
    let dir = harness::cache_dir().join("kdump");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}-{}.img", std::process::id()))
}

/// The vmcores stay in the cache for a look after a run (hundreds of MB each); those of runs
/// over two hours old go.
fn remove_old_vmcores() {
    let dir = harness::cache_dir().join("kdump");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let limit = std::time::Duration::from_secs(2 * 3600);
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > limit);
        if old && e.path().extension().is_some_and(|x| x == "vmcore") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        remove_old_vmcores();
        let mut runs = Vec::new();
        let mut specs = Vec::new();
        let mut initrds = Vec::new();
        for d in &DUMPS {
            let (name, mem) = (d.name, d.mem_mib);
            let mut k = Kdump::new(disk(name)).unwrap();
            k.crash_append = d.append.into();
            k.mem_mib = mem;
            k.balloon_to_mib = d.balloon_to_mib;
            k.vcpus = d.vcpus;
            k.fault = d.spin.then_some(Fault::SpinningCpu1);
            // Booting and dumping 6 GiB under TCG: Linux's memory init, then the whole
            // domain through blkback.
            if mem > 1024 {
                k.timeout = std::time::Duration::from_secs(900);
            }
            let (s, rd) = kdump::spec(name, &k).unwrap();
            specs.push(s);
            initrds.push(rd);
            runs.push(k);
        }
        let mut corrupt = Kdump::new(disk("kdump-corrupt")).unwrap();
        corrupt.fault = Some(Fault::CorruptImage);
        corrupt.mem_mib = 128;
        let (s, rd) = kdump::spec("kdump-corrupt", &corrupt).unwrap();
        specs.push(s);
        initrds.push(rd);
        let rig = DomuRig {
            tag: "kdump".into(),
            host_mem_mib: HOST_MEM_MIB,
            ..DomuRig::default()
        };
        let run = rig.run_for_tests(&specs);
        for rd in initrds {
            let _ = std::fs::remove_file(rd);
        }
        let _ = std::fs::remove_file(&corrupt.disk);
        let domu = |i: usize| match &run {
            Ok(r) => Ok(r.domus[i].clone()),
            Err(e) => Err(e.clone()),
        };
        let dumps = runs
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let out = k.disk.with_extension("vmcore");
                let vmcore = kdump::vmcore_from_disk(&k.disk, &out)
                    .map(|len| (out, len))
                    .map_err(|e| format!("{e:#}"));
                let _ = std::fs::remove_file(&k.disk);
                Dumped {
                    domu: domu(i),
                    vmcore,
                }
            })
            .collect();
        Shared {
            dumps,
            corrupt: domu(DUMPS.len()),
        }
    })
}

fn domu(r: &Result<DomuResult, String>) -> &DomuResult {
    r.as_ref().unwrap_or_else(|e| panic!("the rig failed: {e}"))
}

fn dumped(name: &str) -> &'static Dumped {
    let i = DUMPS.iter().position(|d| d.name == name).unwrap();
    &shared().dumps[i]
}

fn vmcore(name: &str) -> &'static (PathBuf, u64) {
    dumped(name)
        .vmcore
        .as_ref()
        .unwrap_or_else(|e| panic!("{name}: no vmcore: {e}"))
}

/// The domU panicked, the capture kernel wrote the vmcore, `pvkexec vmcore` cut it out (at
/// least `frames_at_least` frames of it).
fn check_written(name: &str, frames_at_least: u64) -> String {
    let d = domu(&dumped(name).domu);
    let log = d.log();
    assert_eq!(d.verdict, DomuVerdict::Pass, "{log}");
    for want in [
        "PVKEXEC-KDUMP load rc=0",
        "sysrq: Trigger a crash",
        "purgatory: entered",
        "PVKEXEC-TEST PASS crash-record",
        "PVKEXEC-TEST PASS old-p2m",
        "PVKEXEC-TEST PASS vmcoreinfo",
        "PVKEXEC-TEST PASS vmcore-written",
        "capture: disk device/vbd/",
        "capture: P2M frame list: ",
    ] {
        assert!(log.contains(want), "{want}: {log}");
    }
    assert!(log.contains(", 0 frames unreadable"), "{log}");
    let (path, len) = vmcore(name);
    assert!(
        *len > frames_at_least * 4096,
        "{name}: a {len}-byte vmcore for {frames_at_least} frames"
    );
    for l in log
        .lines()
        .filter(|l| l.contains("capture: ") || l.contains("balloon current_kb"))
    {
        eprintln!("{name}: {}", l.trim());
    }
    eprintln!("{name}: vmcore {len} bytes at {}", path.display());
    log
}

/// The kernel log ends with the panic: the panic line, then only its trace and pvkexec's
/// crash path, whose last line enters the purgatory.
fn assert_log_ends_with_the_panic(log: &str, what: &str) {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let panic = lines
        .iter()
        .rposition(|l| l.contains("Kernel panic - not syncing: sysrq triggered crash"))
        .unwrap_or_else(|| panic!("{what}: no panic line in the log:\n{log}"));
    assert!(
        lines.len() - panic < 80,
        "{what}: {} lines after the panic:\n{log}",
        lines.len() - panic
    );
    let last = lines.last().copied().unwrap_or("");
    assert!(
        last.contains("pvkexec: crash: ") && last.contains("entering the purgatory"),
        "{what}: the log ends with {last:?}"
    );
}

/// crash opens the vmcore: `bt` of the panicking task shows the sysrq path, `log` ends with
/// the panic, `ps` lists the old kernel's tasks.
fn check_crash_opens(name: &str) {
    check_crash_opens_and(name, &[]);
}

/// As [`check_crash_opens`], `more` commands run in the same session; the report.
fn check_crash_opens_and(name: &str, more: &[&str]) -> vmcore_tools::CrashReport {
    let (path, _) = vmcore(name);
    let vmlinux = vmcore_tools::ensure_debug_vmlinux().unwrap();
    let mut commands = vec!["bt", "log", "ps"];
    commands.extend_from_slice(more);
    let r = vmcore_tools::crash_report(&vmlinux, path, &commands)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let bt = r.output("bt").unwrap();
    let log = r.output("log").unwrap();
    let ps = r.output("ps").unwrap();
    eprintln!(
        "{name}: crash ({:.1} s) bt:\n{bt}\n{name}: crash ps (head):\n{}",
        r.secs,
        ps.lines().take(6).collect::<Vec<_>>().join("\n")
    );
    assert!(bt.contains("sysrq_handle_crash"), "bt: {bt}\n{}", r.raw);
    assert!(log.contains("sysrq: Trigger a crash"), "log: {log}");
    assert_log_ends_with_the_panic(log, name);
    assert!(
        ps.lines().any(|l| l.contains(" init") || l.ends_with("sh")),
        "ps: {ps}"
    );
    r
}

/// `makedumpfile -d 31` filters the vmcore to less than half, and crash opens its output:
/// `bt` and `log` as on the vmcore.
fn check_makedumpfile(name: &str) {
    check_makedumpfile_under(name, vmcore(name).1 / 2, &[]);
}

/// As [`check_makedumpfile`], the output under `limit` bytes, crash run with
/// `crash_options`.
fn check_makedumpfile_under(name: &str, limit: u64, crash_options: &[&str]) {
    let (path, len) = vmcore(name);
    let out = path.with_extension("d31");
    let text =
        vmcore_tools::makedumpfile_d31(path, &out).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let small = std::fs::metadata(&out).unwrap().len();
    eprintln!("{name}: makedumpfile -d 31: {len} -> {small} bytes\n{text}");
    assert!(small < limit, "{name}: {small} of {len}");
    let r = crash_on(name, &out, crash_options);
    let _ = std::fs::remove_file(&out);
    assert!(
        r.output("bt").unwrap().contains("sysrq_handle_crash"),
        "{name}: {}",
        r.raw
    );
    assert_log_ends_with_the_panic(r.output("log").unwrap(), name);
}

fn crash_on(name: &str, dump: &Path, options: &[&str]) -> vmcore_tools::CrashReport {
    let vmlinux = vmcore_tools::ensure_debug_vmlinux().unwrap();
    let r = vmcore_tools::crash_report_with(&vmlinux, dump, options, &["bt", "log"])
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    eprintln!(
        "{name}: crash on makedumpfile's output ({:.1} s) bt:\n{}",
        r.secs,
        r.output("bt").unwrap_or("")
    );
    r
}

#[test]
fn a_panicking_448_mib_domu_boots_the_crash_kernel_which_writes_the_vmcore() {
    let log = check_written("kdump-448m", 448 * 256 / 2);
    // CPU 1 spun with interrupts off; the module's NMI stopped it with its registers.
    assert!(!log.contains("stopped from outside"), "{log}");
    assert!(
        log.contains("old P2M of 114688 entries"),
        "448 MiB is 114688 PFNs: {log}"
    );
}

#[test]
fn crash_opens_the_448_mib_vmcore_bt_log_ps() {
    check_crash_opens("kdump-448m");
}

#[test]
fn makedumpfile_d31_filters_the_448_mib_vmcore_and_crash_opens_that() {
    check_makedumpfile("kdump-448m");
}

#[test]
fn a_ballooned_domu_dumps_its_frames_with_p2m_holes() {
    let log = check_written("kdump-balloon", 256 * 256 / 2);
    assert!(
        log.contains("balloon current_kb=262144 target_kb=262144"),
        "the balloon driver did not reach 256 MiB: {log}"
    );
    // The P2M keeps its 320 MiB length; the frames dumped are the 256 MiB left (and the
    // capture kernel's list pages, and the P2M's own pages).
    assert!(log.contains("old P2M of 81920 entries"), "{log}");
    let frames = vmcore_frames(&log);
    assert!(
        (256 * 256..256 * 256 + 512).contains(&frames),
        "{frames} frames dumped for 256 MiB left"
    );
}

#[test]
fn crash_opens_the_ballooned_vmcore_bt_log_ps() {
    check_crash_opens("kdump-balloon");
}

#[test]
fn makedumpfile_d31_filters_the_ballooned_vmcore_and_crash_opens_that() {
    check_makedumpfile("kdump-balloon");
}

#[test]
fn a_197_mib_domu_dumps() {
    let log = check_written("kdump-197m", 197 * 256 / 2);
    // 50432 frames: the P2M is Linux's ALIGN(nr_pages, 512).
    assert!(log.contains("old P2M of 50688 entries"), "{log}");
}

#[test]
fn crash_opens_the_197_mib_vmcore_bt_log_ps() {
    check_crash_opens("kdump-197m");
}

#[test]
fn makedumpfile_d31_filters_the_197_mib_vmcore_and_crash_opens_that() {
    check_makedumpfile("kdump-197m");
}

/// The reservation `pvkexec load -p` printed: "set aside N MiB (F frames)".
fn set_aside_mib(log: &str) -> u64 {
    log.lines()
        .find_map(|l| {
            l.split("set aside ")
                .nth(1)?
                .split(" MiB")
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no reservation line: {log}"))
}

#[test]
fn a_6_gib_domu_with_2_vcpus_dumps_with_a_small_reservation() {
    let log = check_written("kdump-6g", 6144 * 256 / 2);
    assert!(log.contains("old P2M of 1572864 entries"), "{log}");
    // The crash record names the list pages through its directory (used for every size).
    assert!(
        log.contains(
            "3072 leaf pages in 6 frame-list pages, the crash record's list pages found \
             through 1 directory page(s)"
        ),
        "{log}"
    );
    let mib = set_aside_mib(&log);
    eprintln!("kdump-6g: pvkexec load -p set aside {mib} MiB");
    assert!(mib < 64, "{mib} MiB set aside for a 6 GiB domain");
    let frames = vmcore_frames(&log);
    // Every frame of the domain, and the P2M's own leaf pages (3072, most of them named
    // by the P2M too).
    assert!(
        (6144 * 256..6144 * 256 + 3072 + 512).contains(&frames),
        "{frames} frames dumped for 6 GiB"
    );
}

#[test]
fn crash_opens_the_6_gib_vmcore_bt_log_ps() {
    check_crash_opens("kdump-6g");
    // 6 GiB is too much to keep in the cache for a look after every run.
    let _ = std::fs::remove_file(&vmcore("kdump-6g").0);
}

#[test]
fn a_crash_image_corrupted_after_load_never_runs() {
    let d = domu(&shared().corrupt);
    let log = d.log();
    assert_eq!(d.verdict, DomuVerdict::Crashed, "{log}");
    assert!(
        log.contains("PVKEXEC-KDUMP test fault corrupt-crash injected"),
        "{log}"
    );
    assert!(log.contains("purgatory: entered"), "{log}");
    assert_eq!(d.shutdown_reason, Some(3), "{log}");
    assert!(
        log.contains("purgatory: segment 2 (kernel): SHA-256 mismatch"),
        "{log}"
    );
    assert!(!log.contains(harness::PURGATORY_ENTERING), "{log}");
    assert!(!log.contains("PVKEXEC-TEST PASS"), "{log}");
}

/// The frames `pvkexec load -p` gave the crash kernel ("it gets N frames").
fn crash_kernel_frames(log: &str) -> u64 {
    log.lines()
        .find_map(|l| l.split("it gets ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no crash kernel frame count: {log}"))
}

/// The frame count of the capture kernel's `vmcore of N frames` line.
fn vmcore_frames(log: &str) -> u64 {
    log.lines()
        .find_map(|l| {
            l.split("capture: vmcore of ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no frame count: {log}"))
}

/// The numbers of the capture kernel's `pvkexec.dump_zero=skip: Z of N frames are zero; L
/// left out in R runs of at least M frames` line: `[Z, N, L, R, M]`.
fn zero_skip_line(log: &str) -> [u64; 5] {
    let line = log
        .lines()
        .find(|l| l.contains("capture: pvkexec.dump_zero=skip: "))
        .unwrap_or_else(|| panic!("no zero-skip line: {log}"));
    let rest = line.split("dump_zero=skip: ").nth(1).unwrap();
    let numbers: Vec<u64> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    numbers[..5].try_into().unwrap()
}

#[test]
fn zero_frames_left_out_make_the_448_mib_vmcore_smaller_by_its_zero_frames() {
    let log = check_written("kdump-448m-zero", 448 * 256 / 16);
    let (path, len) = vmcore("kdump-448m-zero");
    // The same domain dumped whole (kdump-448m, same size, VCPUs and kernel): the zero-skipped
    // vmcore is smaller by about its zero frames in runs of at least the capture kernel's
    // minimum (the boots differ a little).
    let (full_path, full_len) = vmcore("kdump-448m");
    let full_len = *full_len;
    let full = VmcoreFile::open(full_path).unwrap();
    assert_eq!(full.left_out(), 0);
    let full_zero = full.count_zero(vmcore::zero::MIN_ZERO_RUN).unwrap();
    eprintln!(
        "kdump-448m: {full_len} bytes, {full_zero:?}; kdump-448m-zero: {len} bytes, {} MiB less",
        full_len.saturating_sub(*len) >> 20
    );
    let saved = full_len as f64 - *len as f64;
    let expected = (full_zero.in_runs * 4096) as f64;
    assert!(
        (saved - expected).abs() < 0.02 * full_len as f64,
        "the zero-skipped vmcore is {saved} bytes smaller; the full one holds {expected} bytes \
         of zero runs"
    );
    assert!(*len < full_len / 2, "{len} of {full_len}");

    // The capture kernel's count, and the vmcore says what it left out: its PT_LOADs name
    // every frame, those left out in PT_LOADs without file data.
    let [zero, frames, left_out, runs, min] = zero_skip_line(&log);
    eprintln!(
        "kdump-448m-zero: {zero} of {frames} frames zero, {left_out} left out in {runs} runs \
         of at least {min}"
    );
    assert_eq!(frames, vmcore_frames(&log), "{log}");
    assert!(left_out <= zero && runs >= 1, "{log}");
    let core = VmcoreFile::open(path).unwrap();
    assert_eq!(core.frames(), frames);
    assert_eq!(core.left_out(), left_out);
    assert!(core.loads.iter().all(|l| l.data == 0 || l.zeros == 0));
    let data_end = core.loads.iter().map(|l| l.offset + l.data * 4096).max();
    assert_eq!(data_end, Some(*len), "the data ends the file");
    // No zero run the capture kernel should have left out is still in the file.
    let written = core.count_zero(min).unwrap();
    eprintln!("kdump-448m-zero: in the file: {written:?}");
    assert_eq!(written.frames, frames - left_out);
    assert_eq!(
        written.in_runs, 0,
        "zero runs of {min} frames written: {written:?}"
    );
    // Zero frames written and left out are the zero frames the capture kernel counted, but
    // for its own: the frames set aside for it are the old domain's too, so in the dump, and
    // change while it runs (its data pages, stack), between the read and the write.
    let own = crash_kernel_frames(&log);
    assert!(
        (written.zero + left_out).abs_diff(zero) <= own,
        "{} zero frames written or left out, {zero} counted ({own} frames are the capture \
         kernel's)",
        written.zero + left_out
    );
}

#[test]
fn crash_opens_the_zero_skipped_448_mib_vmcore_and_reads_a_frame_left_out_as_zeros() {
    let (path, _) = vmcore("kdump-448m-zero");
    let core = VmcoreFile::open(path).unwrap();
    // The PFN of the frame in the middle of the longest run left out: crash translates it
    // through the P2M to a PT_LOAD with no file data, which it reads as zeros.
    let longest = core.loads.iter().max_by_key(|l| l.zeros).unwrap();
    assert!(longest.zeros > 0 && longest.data == 0, "{longest:?}");
    let middle = longest.mfn + longest.zeros / 2;
    let (pfn, mfn) = core
        .pfn_where(|mfn| mfn == middle)
        .unwrap()
        .unwrap_or_else(|| panic!("no PFN names mfn {middle:#x}, left out"));
    assert_eq!(core.read_mfn(mfn).unwrap(), Some(vec![0; 4096]));
    let rd = format!("rd -p {:#x} 4", pfn << 12);
    let r = check_crash_opens_and("kdump-448m-zero", &[&rd]);
    let out = r.output(&rd).unwrap();
    eprintln!("kdump-448m-zero: pfn {pfn:#x} (mfn {mfn:#x}) left out; crash {rd}: {out}");
    let zero_words = out
        .split_whitespace()
        .filter(|w| *w == "0000000000000000")
        .count();
    assert!(
        !out.contains("read error") && zero_words == 4,
        "{out}\n{}",
        r.raw
    );
}

#[test]
fn makedumpfile_d31_filters_the_zero_skipped_448_mib_vmcore_and_crash_opens_that() {
    // Most of what -d 31 takes out of a full dump (zero pages) is already out. makedumpfile
    // counts the frames left out as no data (exclude_nodata_pages) and leaves them out of
    // its output as excluded pages, which crash reads only with --zero_excluded (the
    // printk ring's unused pages among them: without it, `log` fails with "cannot read
    // prb_desc_ring contents"). Zero pages of a whole vmcore are written as zero pages.
    check_makedumpfile_under(
        "kdump-448m-zero",
        vmcore("kdump-448m-zero").1,
        &["--zero_excluded"],
    );
}
