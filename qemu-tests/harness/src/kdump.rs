//! kdump in a toolstack-built domU (docs/kdump.md): Debian's unmodified 6.1 with `pvkexec.ko`
//! and the CLI in its initramfs loads a crash kernel (`pvkexec load -p`), attaches its disk
//! through Linux's blkfront (so the backend is connected when it dies), and panics
//! (`echo c > /proc/sysrq-trigger`). The crash kernel writes the vmcore from sector 0 of that
//! disk, a host file ([`crate::domu::DomuSpec::host_disk`]); [`vmcore_from_disk`] cuts the
//! vmcore out of it afterwards.

use crate::domu::DomuSpec;
use crate::kmod::{self, DomuFiles, Headers};
use crate::provision::{self, DebianLinux};
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
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
    pub vcpus: u32,
    pub fault: Option<Fault>,
    /// The dump disk (a host file, created here), at least the domain's size plus headroom.
    pub disk: PathBuf,
    pub timeout: Duration,
}

impl Kdump {
    /// 256 MiB, 1 VCPU, the capture kernel, no fault, 240 s.
    pub fn new(disk: impl Into<PathBuf>) -> Result<Self> {
        Ok(Kdump {
            crash_kernel: crate::guest::binary("capture")?,
            crash_initrd: None,
            crash_append: String::new(),
            crash_mib: None,
            mem_mib: 256,
            vcpus: 1,
            fault: None,
            disk: disk.into(),
            timeout: Duration::from_secs(240),
        })
    }
}

const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "PVKEXEC-KDUMP $*"; }
insmod /lib/modules/pvkexec.ko @PARAMS@ || say "insmod failed"
insmod /lib/modules/xen-blkfront.ko || say "insmod xen-blkfront failed"
n=0; while [ ! -b /dev/xvda ] && [ $n -lt 100 ]; do usleep 100000; n=$((n+1)); done
say "xvda $(cat /sys/block/xvda/size 2>/dev/null) sectors"
echo 7 > /proc/sys/kernel/printk
pvkexec load -p --kernel /boot/crash @INITRD@ @CRASHMIB@ --append '@APPEND@' 2>&1
say "load rc=$?"
pvkexec status 2>&1 | sed 's/^/PVKEXEC-KDUMP status /'
@FAULT@
say "panic up=$(cut -d' ' -f1 /proc/uptime)"
echo c > /proc/sysrq-trigger
say "still alive after the panic"
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
    if let Some(i) = &k.crash_initrd {
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
    let init = INIT
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
            if k.crash_initrd.is_some() {
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

/// Cuts the ELF vmcore the crash kernel wrote from sector 0 of `disk` into `out`: its length
/// is the end of its last program header's data. Refused by name when the disk holds no
/// ELF core file.
pub fn vmcore_from_disk(disk: &Path, out: &Path) -> Result<u64> {
    let mut f = fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh)
        .with_context(|| format!("{}: reading the ELF header", disk.display()))?;
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || u16::from_le_bytes([eh[16], eh[17]]) != 4 {
        bail!(
            "{}: no ELF64 core file at sector 0 (the crash kernel wrote no vmcore)",
            disk.display()
        );
    }
    let phoff = u64::from_le_bytes(eh[32..40].try_into()?);
    let phentsize = u16::from_le_bytes([eh[54], eh[55]]) as u64;
    let phnum = u16::from_le_bytes([eh[56], eh[57]]) as u64;
    if phentsize != 56 || phnum == 0 {
        bail!(
            "{}: ELF program headers of {phentsize} bytes x {phnum}",
            disk.display()
        );
    }
    let mut ph = vec![0u8; (phentsize * phnum) as usize];
    f.seek(SeekFrom::Start(phoff))?;
    f.read_exact(&mut ph)
        .with_context(|| format!("{}: reading {phnum} program headers", disk.display()))?;
    let end = ph
        .chunks_exact(56)
        .map(|p| {
            let off = u64::from_le_bytes(p[8..16].try_into().unwrap_or_default());
            let filesz = u64::from_le_bytes(p[32..40].try_into().unwrap_or_default());
            off.saturating_add(filesz)
        })
        .max()
        .unwrap_or(0);
    let disk_len = f.metadata()?.len();
    if end > disk_len {
        bail!(
            "{}: the vmcore's program headers reach byte {end}, past the disk's {disk_len}",
            disk.display()
        );
    }
    f.seek(SeekFrom::Start(0))?;
    let mut o = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let copied = std::io::copy(&mut f.take(end), &mut o)?;
    o.flush()?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_without_a_core_file_is_named() {
        let dir = std::env::temp_dir().join(format!("kdump-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("disk");
        fs::write(&disk, vec![0u8; 8192]).unwrap();
        let e = vmcore_from_disk(&disk, &dir.join("out")).unwrap_err();
        assert!(e.to_string().contains("no ELF64 core file"), "{e}");
        // A core header whose data runs past the disk.
        let mut b = vec![0u8; 8192];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[16] = 4;
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54] = 56;
        b[56] = 1;
        b[64 + 8..64 + 16].copy_from_slice(&4096u64.to_le_bytes());
        b[64 + 32..64 + 40].copy_from_slice(&8192u64.to_le_bytes());
        fs::write(&disk, &b).unwrap();
        let e = vmcore_from_disk(&disk, &dir.join("out")).unwrap_err();
        assert!(e.to_string().contains("past the disk"), "{e}");
        b[64 + 32..64 + 40].copy_from_slice(&4096u64.to_le_bytes());
        fs::write(&disk, &b).unwrap();
        assert_eq!(vmcore_from_disk(&disk, &dir.join("out")).unwrap(), 8192);
        fs::remove_dir_all(&dir).unwrap();
    }
}
