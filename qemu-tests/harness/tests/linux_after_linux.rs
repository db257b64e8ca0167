//! Linux after Linux on a hypervisor with pvkexec's Xen patches (xen-patches/,
//! docs/patched-xen.md): Debian's unmodified kernels in toolstack-built domUs with 2 VCPUs and
//! a disk kexec, through pvkexec.ko and the CLI, into Debian's unmodified kernels, which reach
//! their init with both CPUs online and read the disk. On stock Xen the same load is refused,
//! naming vcpu_info. One dom0 boot per hypervisor, several domUs in it. In the patched 4.17
//! boot, Debian's 6.1 is also the crash kernel of a 6.1 domU whose CPU 1 spins with interrupts
//! off: its `/proc/vmcore` is the dump.

use harness::domu::{self, DomuResult, DomuRig, DomuSpec, DomuVerdict};
use harness::initramfs::{DISK_MARKER_PREFIX, INIT_MARKER};
use harness::kmod::{self, DomuFiles, OldLinuxKexec};
use harness::provision::{self, DebianLinux, XenVersion};
use std::path::PathBuf;
use std::time::Duration;

const MEM_MIB: u64 = 512;
const APPEND: &str = "console=hvc0 loglevel=4";

/// One old kernel -> new kernel kexec (the old kernel reads the disk first).
struct Hop {
    name: &'static str,
    old: DebianLinux,
    new: DebianLinux,
    marker: String,
    disk: PathBuf,
}

impl Hop {
    fn new(name: &'static str, old: DebianLinux, new: DebianLinux) -> Hop {
        let marker = format!("PVKEXEC-DISK-MARKER-{name}");
        let disk = domu::marker_disk(&marker, 4).unwrap();
        Hop {
            name,
            old,
            new,
            marker,
            disk,
        }
    }

    fn spec(&self) -> (DomuSpec, PathBuf) {
        let req = OldLinuxKexec {
            old: self.old,
            kernel: provision::ensure_linux(self.new).unwrap(),
            initrd: Some(harness::initramfs::ensure_initramfs_blkfront_for(self.new).unwrap()),
            append: APPEND.into(),
            mem_mib: MEM_MIB,
            vcpus: 2,
            disk: Some(self.disk.clone()),
            timeout: Duration::from_secs(300),
        };
        kmod::old_linux_spec(self.name, &req).unwrap()
    }

    /// The new kernel reached its init with both VCPUs online, on its own release, without
    /// `nr_cpus=1`, and read the disk (which pvkexec.ko handed back Initialising/InitWait).
    fn check(&self, d: &DomuResult) {
        let log = d.log();
        let new_release =
            kmod::bzimage_release(&provision::ensure_linux(self.new).unwrap()).unwrap();
        assert!(!log.contains("insmod failed"), "{}: {log}", self.name);
        assert!(
            log.contains(harness::PURGATORY_ENTERING),
            "{}: the purgatory never ran: {log}",
            self.name
        );
        let after = d
            .after_switch()
            .unwrap_or_else(|| panic!("{}: no switch to the new kernel: {log}", self.name));
        assert!(after.contains(INIT_MARKER), "{}: {after}", self.name);
        assert!(
            after.contains(&format!("PVKEXEC-LINUX uname-r={new_release}")),
            "{}: not the new kernel ({new_release}): {after}",
            self.name
        );
        assert!(
            after.contains("PVKEXEC-LINUX nproc=2"),
            "{}: not every VCPU online: {after}",
            self.name
        );
        assert!(!after.contains("nr_cpus=1"), "{}: {after}", self.name);
        assert!(
            after.contains(&format!("{DISK_MARKER_PREFIX}{}", self.marker)),
            "{}: the new kernel did not read its disk: {after}",
            self.name
        );
        assert_eq!(d.verdict, DomuVerdict::PoweredOff, "{}: {log}", self.name);
    }
}

/// `/init` of the chain: generation N (from `pvkexec.gen=` on its command line, 1 without)
/// reports its CPUs and disk, then, below generation 3, loads the module and kexecs into the
/// same kernel with this same initramfs (`kmod::REPACK_SELF_SH`) and `pvkexec.gen=N+1`.
const CHAIN_INIT: &str = r#"gen=$(sed -n 's/.*pvkexec\.gen=\([0-9]*\).*/\1/p' /proc/cmdline)
[ -n "$gen" ] || gen=1
say() { echo "PVKEXEC-CHAIN gen=$gen $*"; }
say "nproc=$(nproc) uname-r=$(uname -r)"
insmod /lib/modules/xen-blkfront.ko || say "blkfront insmod failed"
n=0; while [ ! -b /dev/xvda ] && [ $n -lt 100 ]; do usleep 100000; n=$((n+1)); done
say "xvda=$(head -n 1 /dev/xvda)"
if [ "$gen" -ge 3 ]; then
  say "CHAIN-DONE"
  poweroff -f
fi
insmod /lib/modules/pvkexec.ko || say "insmod failed"
repack_self
pvkexec load --kernel /boot/new --initrd /tmp/self.cpio.gz --append "console=hvc0 loglevel=4 pvkexec.gen=$((gen+1))" 2>&1 && pvkexec exec 2>&1
say "exec failed rc=$?"
poweroff -f
"#;

const CHAIN_MARKER: &str = "PVKEXEC-DISK-MARKER-chain";

fn chain_spec(disk: &std::path::Path) -> (DomuSpec, PathBuf) {
    // The kernel kexecs into itself.
    let bookworm = provision::ensure_linux(DebianLinux::Bookworm).unwrap();
    let (linux, files) = kmod::old_linux_files(DebianLinux::Bookworm, &bookworm, true).unwrap();
    let files = DomuFiles { files };
    let rd = harness::cache_dir().join(format!("chain-{}.cpio.gz", std::process::id()));
    let init = format!("{}{CHAIN_INIT}", kmod::REPACK_SELF_SH);
    kmod::domu_initramfs(&init, &kmod::pvkexec_release().unwrap(), &files, &rd).unwrap();
    let mut spec = DomuSpec::new("chain", &linux);
    spec.ramdisk = Some(rd.clone());
    spec.cmdline = APPEND.into();
    spec.mem_mib = MEM_MIB;
    spec.vcpus = 2;
    spec.disk = Some(disk.to_path_buf());
    spec.timeout = Duration::from_secs(480);
    (spec, rd)
}

fn patched_rig(xen: XenVersion, tag: &str) -> DomuRig {
    DomuRig {
        xen,
        tag: tag.into(),
        patched_xen: true,
        host_mem_mib: 3584,
        ..DomuRig::default()
    }
}

/// A 512 MiB 6.1 domU with 2 VCPUs loads Debian's 6.1 as its crash kernel
/// (`kdump::LINUX_CRASH_INIT`: /proc/vmcore copied to the dump disk) and panics with CPU 1
/// spinning with interrupts off.
fn linux_crash_spec(disk: &std::path::Path) -> (DomuSpec, PathBuf) {
    let mut k = harness::kdump::Kdump::new(disk).unwrap();
    k.crash_kernel = provision::ensure_linux(DebianLinux::Bookworm).unwrap();
    k.linux_crash_kernel = true;
    k.crash_append = "console=hvc0 loglevel=4".into();
    k.mem_mib = MEM_MIB;
    k.vcpus = 2;
    k.fault = Some(harness::kdump::Fault::SpinningCpu1);
    k.timeout = Duration::from_secs(420);
    harness::kdump::spec("linux-crash", &k).unwrap()
}

/// The Linux crash kernel's dump: read twice in the crash kernel with the same digest (it
/// never wrote the old memory), the same bytes on the host, crash shows the sysrq path, and
/// CPU 1's note has it in the test fault's delay loop (crash does not unwind the other CPUs
/// of a Xen dump itself).
fn check_linux_crash(d: &DomuResult, disk: &std::path::Path) {
    let log = d.log();
    assert!(log.contains("purgatory: ELF core header at PFN"), "{log}");
    assert!(
        log.contains("frontends of the crashed kernel reset"),
        "{log}"
    );
    assert!(log.contains("PVKEXEC-LINUX CRASH-DONE"), "{log}");
    assert!(log.contains("nproc 2"), "the crash kernel's CPUs: {log}");
    let md5 = |when: &str| {
        log.lines()
            .find_map(|l| l.split_once(&format!("PVKEXEC-LINUX vmcore md5 {when} ")))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| panic!("no md5 {when}: {log}"))
    };
    let (before, after) = (md5("before"), md5("after"));
    assert_eq!(before.len(), 32, "{log}");
    assert_eq!(
        before, after,
        "the old memory changed under the crash kernel: {log}"
    );
    let out = disk.with_extension("vmcore");
    harness::kdump::vmcore_from_disk(disk, &out).unwrap();
    let host = std::process::Command::new("md5sum")
        .arg(&out)
        .output()
        .unwrap();
    let host = String::from_utf8_lossy(&host.stdout);
    assert!(host.starts_with(&before), "host md5 {host} vs {before}");
    // Both CPUs' registers: CPU 1 was stopped by the NMI in the test fault's delay loop.
    let regs = harness::vmcore_file::VmcoreFile::open(&out)
        .unwrap()
        .cpu_regs;
    assert_eq!(regs.len(), 2, "{regs:?}");
    let cpu1 = regs[1];
    assert!(
        cpu1.rip >= 0xffff_ffff_8000_0000 && cpu1.rsp != 0,
        "{regs:?}"
    );
    let vmlinux = harness::vmcore_tools::ensure_debug_vmlinux().unwrap();
    let sym = format!("sym {:#x}", cpu1.rip);
    let report = harness::vmcore_tools::crash_report(&vmlinux, &out, &["bt", &sym, "log"]).unwrap();
    let _ = std::fs::remove_file(&out);
    let bt = report.output("bt").unwrap_or_default();
    assert!(bt.contains("sysrq_handle_crash"), "{bt}");
    let at = report.output(&sym).unwrap_or_default();
    assert!(
        ["delay", "park_cpu"].iter().any(|f| at.contains(f)),
        "CPU 1 was not in the test fault's delay loop: {at}"
    );
    let klog = report.output("log").unwrap_or_default();
    assert!(klog.contains("sysrq: Trigger a crash"), "{klog}");
}

/// Patched Xen 4.17: 6.1 -> bookworm's 6.12, 6.12 -> 6.1, and 6.1 -> 6.1 -> 6.1, each with
/// 2 VCPUs and a disk, in one dom0 boot.
#[test]
fn patched_417_stock_linux_kexecs_into_stock_linux_with_every_vcpu() {
    let hops = [
        Hop::new(
            "l61-to-612",
            DebianLinux::Bookworm,
            DebianLinux::Bookworm612,
        ),
        Hop::new(
            "l612-to-61",
            DebianLinux::Bookworm612,
            DebianLinux::Bookworm,
        ),
    ];
    let chain_disk = domu::marker_disk(CHAIN_MARKER, 4).unwrap();
    let mut specs = Vec::new();
    let mut ramdisks = Vec::new();
    for h in &hops {
        let (s, rd) = h.spec();
        specs.push(s);
        ramdisks.push(rd);
    }
    let (s, rd) = chain_spec(&chain_disk);
    specs.push(s);
    ramdisks.push(rd);
    let crash_disk = harness::cache_dir().join(format!("linux-crash-{}.disk", std::process::id()));
    let (s, rd) = linux_crash_spec(&crash_disk);
    specs.push(s);
    ramdisks.push(rd);
    let run = patched_rig(XenVersion::V4_17, "linux-after-linux-417").run_for_tests(&specs);
    for f in ramdisks
        .iter()
        .chain(hops.iter().map(|h| &h.disk))
        .chain([&chain_disk])
    {
        let _ = std::fs::remove_file(f);
    }
    let run = run.unwrap();
    check_linux_crash(&run.domus[3], &crash_disk);
    let _ = std::fs::remove_file(&crash_disk);
    for (h, d) in hops.iter().zip(&run.domus) {
        h.check(d);
    }
    let chain = &run.domus[2];
    let log = chain.log();
    let release =
        kmod::bzimage_release(&provision::ensure_linux(DebianLinux::Bookworm).unwrap()).unwrap();
    for gen in 1..=3 {
        assert!(
            log.contains(&format!(
                "PVKEXEC-CHAIN gen={gen} nproc=2 uname-r={release}"
            )),
            "chain: generation {gen} did not run with 2 CPUs: {log}"
        );
        assert!(
            log.contains(&format!("PVKEXEC-CHAIN gen={gen} xvda={CHAIN_MARKER}")),
            "chain: generation {gen} did not read its disk: {log}"
        );
    }
    assert!(log.contains("PVKEXEC-CHAIN gen=3 CHAIN-DONE"), "{log}");
    // The same kernel registers the xenstore watch tokens the old one did: refused with
    // EEXIST unless the purgatory dropped the old kernel's watches.
    assert!(
        !log.contains("Failed to set") && log.contains("XS_RESET_WATCHES"),
        "chain: the old kernel's xenstore watches were in the way: {log}"
    );
    assert_eq!(
        log.matches(harness::PURGATORY_ENTERING).count(),
        2,
        "chain: two handovers: {log}"
    );
    assert_eq!(chain.verdict, DomuVerdict::PoweredOff, "{log}");
}

/// Patched Xen 4.20: 6.1 -> trixie's 6.12, 2 VCPUs and a disk.
#[test]
fn patched_420_debian_61_kexecs_into_trixie_612() {
    let hop = Hop::new("l61-to-trixie", DebianLinux::Bookworm, DebianLinux::Trixie);
    let (spec, rd) = hop.spec();
    let run = patched_rig(XenVersion::V4_20, "linux-after-linux-420").run_for_tests(&[spec]);
    let _ = std::fs::remove_file(&rd);
    let _ = std::fs::remove_file(&hop.disk);
    hop.check(&run.unwrap().domus[0]);
}

/// Stock Xen 4.17: the same 6.1 -> 6.12 load is refused, naming vcpu_info; nothing is
/// executed.
#[test]
fn stock_417_still_refuses_a_linux_new_kernel() {
    let hop = Hop::new("l61-stock", DebianLinux::Bookworm, DebianLinux::Bookworm612);
    let (spec, rd) = hop.spec();
    let rig = DomuRig {
        tag: "linux-after-linux-stock".into(),
        ..DomuRig::default()
    };
    let run = rig.run_for_tests(&[spec]);
    let _ = std::fs::remove_file(&rd);
    let _ = std::fs::remove_file(&hop.disk);
    let d = &run.unwrap().domus[0];
    let log = d.log();
    assert!(log.contains("placed vcpu_info"), "{log}");
    assert!(log.contains("PVKEXEC-KMOD exec failed rc=1"), "{log}");
    assert!(!log.contains(harness::PURGATORY_ENTERING), "{log}");
}
