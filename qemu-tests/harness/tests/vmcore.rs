//! The vmcore shape on a real kernel's memory: Debian's 6.1 panics in a toolstack-built domU
//! (`echo c > /proc/sysrq-trigger`), xl dumps its core (xc_core ELF, `on_crash =
//! "coredump-destroy"`) onto a host-backed disk, the host rewrites it with the `vmcore` crate
//! (machine-address PT_LOADs, a synthesized P2M frame list named by the "Xen" CRASH_INFO
//! note, VMCOREINFO, NT_PRSTATUS) and opens it with Debian's `crash` and the kernel's debug
//! vmlinux; `makedumpfile -d 31` filters it and crash opens that output too.

use harness::domu::{DomuRig, DomuSpec, DomuVerdict};
use harness::provision;
use harness::vmcore_tools::{self, PANIC_MARKER};
use harness::xc_core::{self, XcCore};
use std::path::PathBuf;
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
    let _ = std::fs::remove_file(&disk);
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
    let report = vmcore_tools::crash_report(&vmlinux, &out, &["bt", "log", "ps"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    for (c, o) in &report.outputs {
        eprintln!("vmcore: crash> {c}\n{o}");
    }
    eprintln!("vmcore: crash ran {:.1} s", report.secs);
    let _ = std::fs::remove_file(&out);
}
