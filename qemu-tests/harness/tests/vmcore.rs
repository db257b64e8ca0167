//! The vmcore shape on a real kernel's memory: Debian's 6.1 panics in a toolstack-built domU
//! (`echo c > /proc/sysrq-trigger`), xl dumps its core (xc_core ELF, `on_crash =
//! "coredump-destroy"`) onto a host-backed disk, the host rewrites it with the `vmcore` crate
//! (machine-address PT_LOADs, a synthesized P2M frame list named by the "Xen" CRASH_INFO
//! note, VMCOREINFO, NT_PRSTATUS) and opens it with Debian's `crash` and the kernel's debug
//! vmlinux; `makedumpfile -d 31` filters it and crash opens that output too.

use harness::domu::{DomuRig, DomuSpec, DomuVerdict};
use harness::provision;
use harness::vmcore_tools::{self, CrashReport, PANIC_MARKER};
use harness::xc_core::{self, XcCore};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MEM_MIB: u64 = 128;
/// The core is the domain's pages plus a header: leave a few MiB.
const DISK_MIB: u64 = MEM_MIB + 8;

fn host_disk() -> PathBuf {
    let dir = harness::cache_dir().join("domu-disks");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("vmcore-core-{}.img", std::process::id()));
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(DISK_MIB << 20).unwrap();
    path
}

#[test]
fn panicked_debian_61_domu_core_opens_in_crash_in_pvkexec_vmcore_shape() {
    let linux = provision::ensure_debian_linux().unwrap();
    let disk = host_disk();
    let mut spec = DomuSpec::new("vmcore-src", &linux);
    spec.ramdisk = Some(vmcore_tools::ensure_crashing_initramfs().unwrap());
    spec.cmdline = "console=hvc0 loglevel=4".into();
    spec.mem_mib = MEM_MIB;
    spec.host_disk = Some(disk.clone());
    spec.dump_core = true;
    spec.timeout = Duration::from_secs(120);
    let rig = DomuRig {
        tag: "vmcore".into(),
        ..DomuRig::default()
    };
    let run = rig.run_for_tests(&[spec]).unwrap_or_else(|e| panic!("{e}"));
    let d = &run.domus[0];
    assert!(
        d.console.iter().any(|l| l.contains(PANIC_MARKER)),
        "the domU never reached its panic:\n{}",
        d.log()
    );
    assert_eq!(d.verdict, DomuVerdict::Crashed, "{}", d.log());
    let saved = run
        .dom0
        .log
        .lines()
        .find(|l| l.contains("domu vmcore-src core "))
        .unwrap_or("(no core line)");
    eprintln!("vmcore: dom0: {}", saved.trim());
    assert!(saved.contains(" bytes on "), "{saved}");

    let start = Instant::now();
    let core = XcCore::read(&disk).unwrap_or_else(|e| panic!("{e:#}"));
    let out = disk.with_extension("vmcore");
    let conv = xc_core::convert(&core, &out).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "vmcore: converted in {:.1} s: {} frames in {} runs, {} P2M frames synthesized \
         (frame-list-list MFN {:#x}), VMCOREINFO {} bytes, file {} bytes",
        start.elapsed().as_secs_f64(),
        conv.frames,
        conv.runs,
        conv.p2m_frames,
        conv.frame_list_list_mfn,
        conv.vmcoreinfo_len,
        conv.file_len
    );

    let vmlinux = vmcore_tools::ensure_debug_vmlinux().unwrap();
    let report = open_in_crash(&vmlinux, &out, "pvkexec vmcore");
    let filtered = out.with_extension("d31");
    let start = Instant::now();
    let said = vmcore_tools::makedumpfile_d31(&out, &filtered).unwrap_or_else(|e| panic!("{e:#}"));
    let filtered_len = std::fs::metadata(&filtered).unwrap().len();
    eprintln!(
        "vmcore: makedumpfile -d 31 in {:.1} s: {} -> {} bytes\n{}",
        start.elapsed().as_secs_f64(),
        conv.file_len,
        filtered_len,
        said.trim()
    );
    assert!(
        filtered_len < conv.file_len / 2,
        "-d 31 left {filtered_len} bytes"
    );
    let again = open_in_crash(&vmlinux, &filtered, "makedumpfile -d 31 output");
    assert_eq!(report.output("ps"), again.output("ps"));
    no_xen_note_does_not_open(&vmlinux, &out);
    if std::env::var_os("PVKEXEC_KEEP_VMCORE").is_some() {
        eprintln!(
            "vmcore: kept {}, {} and {}",
            disk.display(),
            out.display(),
            filtered.display()
        );
        return;
    }
    for f in [&disk, &out, &filtered] {
        let _ = std::fs::remove_file(f);
    }
}

/// crash's `bt`, `log` and `ps` of the dump, checked against what the kernel printed.
fn open_in_crash(vmlinux: &Path, dump: &Path, what: &str) -> CrashReport {
    let report = vmcore_tools::crash_report(vmlinux, dump, &["bt", "log", "ps"])
        .unwrap_or_else(|e| panic!("{what}: {e:#}"));
    for (c, o) in &report.outputs {
        eprintln!("vmcore: {what}: crash> {c}\n{o}");
    }
    eprintln!("vmcore: {what}: crash ran {:.1} s", report.secs);
    let out = |c: &str| report.output(c).unwrap_or_default();
    let bt = out("bt");
    assert!(
        bt.contains("COMMAND: \"init\"") && bt.contains("sysrq_handle_crash"),
        "{what}: bt is not init's panic in sysrq_handle_crash:\n{bt}"
    );
    assert!(
        out("log").contains("Kernel panic - not syncing: sysrq triggered crash"),
        "{what}: log lacks the panic message"
    );
    assert!(
        out("ps")
            .lines()
            .any(|l| l.starts_with('>') && l.trim_end().ends_with(" init")),
        "{what}: ps lists no active init:\n{}",
        out("ps")
    );
    report
}

/// The same dump with its "Xen" note's type changed: crash no longer translates through the
/// P2M and cannot read the kernel (the test above depends on the note).
fn no_xen_note_does_not_open(vmlinux: &Path, dump: &Path) {
    let mut bytes = std::fs::read(dump).unwrap();
    let mut head = Vec::new();
    for w in [4u32, 80, 0x0100_0001] {
        head.extend_from_slice(&w.to_le_bytes());
    }
    head.extend_from_slice(b"Xen\0");
    let at = bytes
        .windows(head.len())
        .position(|w| w == head.as_slice())
        .expect("the Xen note");
    bytes[at + 8..at + 12].copy_from_slice(&0x1234u32.to_le_bytes());
    let copy = dump.with_extension("no-xen-note");
    std::fs::write(&copy, bytes).unwrap();
    let err = vmcore_tools::crash_report(vmlinux, &copy, &["bt"]).map(|r| r.raw);
    let _ = std::fs::remove_file(&copy);
    let err = format!(
        "{:#}",
        err.expect_err("crash opened a dump without the Xen note")
    );
    eprintln!("vmcore: without the Xen note: {err}");
    assert!(err.contains("crash could not open"), "{err}");
}
