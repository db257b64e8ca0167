//! kdump in a toolstack-built domU (docs/kdump.md): Debian's unmodified 6.1 with `pvkexec.ko`
//! and the CLI in its initramfs loads a crash kernel (`pvkexec load -p`), attaches its disk
//! through Linux's blkfront (so the backend is connected when it dies), and panics
//! (`echo c > /proc/sysrq-trigger`). The crash kernel writes the vmcore from sector 0 of that
//! disk (`pvkexec.dump=xvda`), a host file ([`crate::domu::DomuSpec::host_disk`]);
//! [`vmcore_from_disk`] cuts the vmcore out of it afterwards with `pvkexec vmcore`.

use crate::domu::DomuSpec;
use crate::kmod::{self, DomuFiles, Headers};
use crate::provision::{self, DebianLinux};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Lines of the old kernel's `/init` start with this.
pub const MARK: &str = "PVKEXEC-KDUMP ";

/// A fault injected before the panic (the module is then loaded with `fault_injection=1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// CPU 1 spins with interrupts off: only the module's NMI stops it.
    SpinningCpu1,
    /// The crash image is corrupted after load: the purgatory must refuse it.
    CorruptImage,
}

/// One kdump run.
#[derive(Clone, Debug)]
pub struct Kdump {
    pub crash_kernel: PathBuf,
    pub crash_initrd: Option<PathBuf>,
    pub crash_append: String,
    pub crash_mib: Option<u64>,
    pub mem_mib: u64,
    /// Linux's balloon driver gives memory back before the load, down to this many MiB (the
    /// P2M keeps its length, with holes).
    pub balloon_to_mib: Option<u64>,
    pub vcpus: u32,
    pub fault: Option<Fault>,
    /// The crash kernel is Linux (on a Xen that resets VCPUs): without `crash_initrd` it
    /// boots [`LINUX_CRASH_INIT`], which copies its `/proc/vmcore` to the dump disk.
    pub linux_crash_kernel: bool,
    /// The dump disk (a host file, created here), at least the domain's size plus headroom.
    pub disk: PathBuf,
    pub timeout: Duration,
}

impl Kdump {
    /// 256 MiB, 1 VCPU, the capture kernel writing to the domU's only disk (xvda), no
    /// fault, 240 s.
    pub fn new(disk: impl Into<PathBuf>) -> Result<Self> {
        Ok(Kdump {
            crash_kernel: crate::guest::binary("capture")?,
            crash_initrd: None,
            crash_append: "pvkexec.dump=xvda".into(),
            crash_mib: None,
            mem_mib: 256,
            balloon_to_mib: None,
            vcpus: 1,
            fault: None,
            linux_crash_kernel: false,
            disk: disk.into(),
            timeout: Duration::from_secs(240),
        })
    }
}

const INIT: &str = r#"say() { echo "PVKEXEC-KDUMP $*"; }
insmod /lib/modules/pvkexec.ko @PARAMS@ || say "insmod failed"
insmod /lib/modules/xen-blkfront.ko || say "insmod xen-blkfront failed"
n=0; while [ ! -b /dev/xvda ] && [ $n -lt 100 ]; do usleep 100000; n=$((n+1)); done
say "xvda $(cat /sys/block/xvda/size 2>/dev/null) sectors"
echo 7 > /proc/sys/kernel/printk
@BALLOON@
pvkexec load -p --kernel /boot/crash @INITRD@ @CRASHMIB@ --append '@APPEND@' 2>&1
say "load rc=$?"
pvkexec status 2>&1 | sed 's/^/PVKEXEC-KDUMP status /'
@FAULT@
say "panic up=$(cut -d' ' -f1 /proc/uptime)"
echo c > /proc/sysrq-trigger
say "still alive after the panic"
poweroff -f
"#;

/// `/init` of a Linux crash kernel's busybox initramfs: its `/proc/vmcore` copied to the
/// dump disk (from sector 0, where [`vmcore_from_disk`] reads it), then power off.
pub const LINUX_CRASH_INIT: &str = r#"say() { echo "PVKEXEC-LINUX $*"; }
say "crash kernel $(uname -r): nproc $(nproc), $(grep MemTotal /proc/meminfo)"
say "cmdline $(cat /proc/cmdline)"
say "vmcore $(ls -l /proc/vmcore 2>&1)"
# The old memory read before and after the crash kernel's own work (blkfront, the copy).
say "vmcore md5 before $(md5sum < /proc/vmcore | cut -d' ' -f1)"
insmod /lib/modules/xen-blkfront.ko || say "insmod xen-blkfront failed"
n=0; while [ ! -b /dev/xvda ] && [ $n -lt 100 ]; do usleep 100000; n=$((n+1)); done
say "xvda $(cat /sys/block/xvda/size 2>/dev/null) sectors"
t0=$(cut -d' ' -f1 /proc/uptime)
dd if=/proc/vmcore of=/dev/xvda bs=1M conv=fsync 2>&1 | tail -1 | sed 's/^/PVKEXEC-LINUX dd /'
say "vmcore copied: $t0 s -> $(cut -d' ' -f1 /proc/uptime) s"
say "vmcore md5 after $(md5sum < /proc/vmcore | cut -d' ' -f1)"
dmesg | grep -iE "vmcore|elfcore|bug|oops|error" | head -20 | sed 's/^/PVKEXEC-LINUX dmesg /'
say "CRASH-DONE"
poweroff -f
"#;

/// The domU and the initramfs file to delete after the run. The dump disk is created (zeroed,
/// sparse) at `k.disk`.
pub fn spec(name: &str, k: &Kdump) -> Result<(DomuSpec, PathBuf)> {
    let linux = provision::ensure_linux(DebianLinux::Bookworm)?;
    let modules = crate::dom0::extract_modules(
        DebianLinux::Bookworm,
        &crate::cache_dir().join("dom0-4.17").join("modules"),
    )?;
    let mut files = vec![
        (
            "lib/modules/pvkexec.ko".to_string(),
            kmod::build(Headers::Bookworm)?,
        ),
        (
            "lib/modules/xen-blkfront.ko".into(),
            modules.join("xen-blkfront.ko"),
        ),
        ("boot/crash".to_string(), k.crash_kernel.clone()),
    ];
    let mut crash_initrd = k.crash_initrd.clone();
    if k.linux_crash_kernel && crash_initrd.is_none() {
        // Built once per process, then renamed into place: the rig reads it at boot.
        let rd = crate::cache_dir().join("linux-crash-initrd.cpio.gz");
        let tmp = rd.with_extension(format!("{}.tmp", std::process::id()));
        let blkfront = DomuFiles {
            files: vec![(
                "lib/modules/xen-blkfront.ko".into(),
                modules.join("xen-blkfront.ko"),
            )],
        };
        kmod::domu_initramfs(LINUX_CRASH_INIT, &kmod::pvkexec_release()?, &blkfront, &tmp)?;
        fs::rename(&tmp, &rd).with_context(|| format!("renaming {}", tmp.display()))?;
        crash_initrd = Some(rd);
    }
    if let Some(i) = &crash_initrd {
        files.push(("boot/crash-initrd".into(), i.clone()));
    }
    let fault = match k.fault {
        None => String::new(),
        // The shell moves to CPU 0 first: CPU 1 then spins with interrupts off and nothing
        // this script runs waits for it.
        Some(Fault::SpinningCpu1) => "taskset -p 1 $$ >/dev/null\n\
             pvkexec test-fault park-cpu1 2>&1 | sed 's/^/PVKEXEC-KDUMP /'\nusleep 200000"
            .into(),
        Some(Fault::CorruptImage) => {
            "pvkexec test-fault corrupt-crash 2>&1 | sed 's/^/PVKEXEC-KDUMP /'".into()
        }
    };
    let balloon = match k.balloon_to_mib {
        None => String::new(),
        Some(mib) => format!(
            "b=/sys/devices/system/xen_memory/xen_memory0\n\
             echo {kb} > $b/target_kb\n\
             n=0; until [ \"$(cat $b/info/current_kb)\" -le {kb} ] || [ $n -gt 100 ]; \
             do usleep 100000; n=$((n+1)); done\n\
             say \"balloon current_kb=$(cat $b/info/current_kb) target_kb={kb}\"",
            kb = mib * 1024
        ),
    };
    let init = INIT
        .replace("@BALLOON@", &balloon)
        .replace(
            "@PARAMS@",
            if k.fault.is_some() {
                "fault_injection=1"
            } else {
                ""
            },
        )
        .replace(
            "@INITRD@",
            if crash_initrd.is_some() {
                "--initrd /boot/crash-initrd"
            } else {
                ""
            },
        )
        .replace(
            "@CRASHMIB@",
            &k.crash_mib
                .map(|m| format!("--crash-mib {m}"))
                .unwrap_or_default(),
        )
        .replace("@APPEND@", &k.crash_append.replace('\'', "'\\''"))
        .replace("@FAULT@", &fault);
    let rd = crate::cache_dir().join(format!("{name}-{}.cpio.gz", std::process::id()));
    kmod::domu_initramfs(&init, &kmod::pvkexec_release()?, &DomuFiles { files }, &rd)?;
    let disk_bytes = (k.mem_mib + 64) << 20;
    let f = fs::File::create(&k.disk).with_context(|| format!("creating {}", k.disk.display()))?;
    f.set_len(disk_bytes)
        .with_context(|| format!("sizing {}", k.disk.display()))?;
    let mut s = DomuSpec::new(name, &linux);
    s.ramdisk = Some(rd.clone());
    s.cmdline = "console=hvc0 loglevel=4".into();
    s.mem_mib = k.mem_mib;
    s.vcpus = k.vcpus;
    s.host_disk = Some(k.disk.clone());
    s.timeout = k.timeout;
    Ok((s, rd))
}

/// Cuts the ELF vmcore the crash kernel wrote from sector 0 of `disk` into `out` with the
/// CLI a user runs for it (`pvkexec vmcore --disk DISK -o OUT`); its length.
pub fn vmcore_from_disk(disk: &Path, out: &Path) -> Result<u64> {
    let o = Command::new(crate::tools::pvkexec()?)
        .arg("vmcore")
        .arg("--disk")
        .arg(disk)
        .arg("-o")
        .arg(out)
        .output()
        .context("running pvkexec vmcore")?;
    if !o.status.success() {
        bail!(
            "pvkexec vmcore --disk {} failed ({}): {}",
            disk.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(fs::metadata(out)?.len())
}
