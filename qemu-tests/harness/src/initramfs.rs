//! A small initramfs for Linux new kernels: busybox-static and an `/init` that prints what the
//! tests compare (a marker, `uname -r`, `nproc`, MemTotal, `/proc/cmdline`) and powers off.
//! Written as cpio newc (the `cpio` crate) and gzip (flate2): no `cpio` binary is assumed.

use anyhow::{Context, Result};
use cpio::NewcBuilder;
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

/// The first line `/init` prints.
pub const INIT_MARKER: &str = "PVKEXEC-LINUX-INIT reached";
/// Its last line before the power-off.
pub const DONE_MARKER: &str = "PVKEXEC-LINUX-DONE";

const INIT: &str = r#"#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
echo "PVKEXEC-LINUX-INIT reached"
echo "PVKEXEC-LINUX uname-r=$(/bin/busybox uname -r)"
echo "PVKEXEC-LINUX nproc=$(/bin/busybox nproc)"
echo "PVKEXEC-LINUX $(/bin/busybox grep MemTotal /proc/meminfo)"
echo "PVKEXEC-LINUX cmdline=$(/bin/busybox cat /proc/cmdline)"
echo "PVKEXEC-LINUX-DONE"
/bin/busybox poweroff -f
"#;

/// What a disk-reading `/init` prints before the first line of `/dev/xvda`.
pub const DISK_MARKER_PREFIX: &str = "PVKEXEC-LINUX xvda=";

/// `/init` of the blkfront variant: the same report, then xen-blkfront and the disk's first line.
const INIT_BLKFRONT: &str = r#"#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
echo "PVKEXEC-LINUX-INIT reached"
echo "PVKEXEC-LINUX uname-r=$(/bin/busybox uname -r)"
echo "PVKEXEC-LINUX nproc=$(/bin/busybox nproc)"
echo "PVKEXEC-LINUX $(/bin/busybox grep MemTotal /proc/meminfo)"
echo "PVKEXEC-LINUX cmdline=$(/bin/busybox cat /proc/cmdline)"
if /bin/busybox insmod /lib/modules/xen-blkfront.ko; then
  echo "PVKEXEC-LINUX blkfront=loaded"
  n=0
  while [ ! -b /dev/xvda ] && [ $n -lt 100 ]; do /bin/busybox usleep 100000; n=$((n+1)); done
  if [ -b /dev/xvda ]; then
    echo "PVKEXEC-LINUX xvda=$(/bin/busybox head -n 1 /dev/xvda)"
  else
    echo "PVKEXEC-LINUX xvda=missing"
  fi
else
  echo "PVKEXEC-LINUX blkfront=insmod-failed"
fi
echo "PVKEXEC-LINUX-DONE"
/bin/busybox poweroff -f
"#;

/// The initramfs with `xen-blkfront.ko` from Debian bookworm's kernel package (`=m` there) and
/// an `/init` that loads it and prints the first line of `/dev/xvda` (for domUs with a disk).
pub fn ensure_initramfs_blkfront() -> Result<PathBuf> {
    ensure_initramfs_blkfront_for(crate::provision::DebianLinux::Bookworm)
}

/// [`ensure_initramfs_blkfront`] with the module of `linux`'s kernel package (the domU kernel
/// must be that one).
pub fn ensure_initramfs_blkfront_for(linux: crate::provision::DebianLinux) -> Result<PathBuf> {
    let out = crate::cache_dir().join(format!(
        "initramfs-busybox-blkfront-{}-r1.cpio.gz",
        linux.name()
    ));
    if out.exists() {
        return Ok(out);
    }
    let busybox = crate::provision::ensure_busybox()?;
    let modules = crate::dom0::extract_modules(
        linux,
        &crate::cache_dir().join(format!("modules-{}", linux.name())),
    )?;
    let blkfront = fs::read(modules.join("xen-blkfront.ko"))?;
    let tmp = out.with_extension("tmp");
    build_with(
        &busybox,
        INIT_BLKFRONT,
        &[("lib/modules/xen-blkfront.ko", blkfront)],
        &tmp,
    )?;
    fs::rename(&tmp, &out)?;
    Ok(out)
}

/// The cached initramfs (built once from Debian's busybox-static).
pub fn ensure_initramfs() -> Result<PathBuf> {
    let out = crate::cache_dir().join("initramfs-busybox.cpio.gz");
    if out.exists() {
        return Ok(out);
    }
    let busybox = crate::provision::ensure_busybox()?;
    let tmp = out.with_extension("tmp");
    build(&busybox, &tmp)?;
    fs::rename(&tmp, &out)?;
    Ok(out)
}

/// Writes the initramfs with `busybox` as `/bin/busybox` (and `/bin/sh`) to `out`.
pub fn build(busybox: &Path, out: &Path) -> Result<()> {
    build_with(busybox, INIT, &[], out)
}

/// [`build`] with another `/init` and extra files (their directories are created).
pub fn build_with(busybox: &Path, init: &str, extra: &[(&str, Vec<u8>)], out: &Path) -> Result<()> {
    let bb = fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    let dir = |name: &str| (NewcBuilder::new(name).mode(0o040755).nlink(2), Vec::new());
    let mut entries: Vec<(NewcBuilder, Vec<u8>)> = vec![
        dir("bin"),
        dir("dev"),
        dir("proc"),
        dir("sys"),
        // The kernel opens /dev/console for init before anything is mounted.
        (
            NewcBuilder::new("dev/console")
                .mode(0o020600)
                .rdev_major(5)
                .rdev_minor(1),
            Vec::new(),
        ),
        (NewcBuilder::new("bin/busybox").mode(0o100755), bb),
        (
            NewcBuilder::new("bin/sh").mode(0o120777),
            b"busybox".to_vec(),
        ),
        (
            NewcBuilder::new("init").mode(0o100755),
            init.as_bytes().to_vec(),
        ),
    ];
    let mut made: Vec<String> = ["bin", "dev", "proc", "sys"].map(String::from).to_vec();
    for (path, data) in extra {
        let mut parent = String::new();
        for part in path
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            parent = if parent.is_empty() {
                part.to_string()
            } else {
                format!("{parent}/{part}")
            };
            if !made.contains(&parent) {
                entries.push(dir(&parent));
                made.push(parent.clone());
            }
        }
        entries.push((NewcBuilder::new(path).mode(0o100644), data.clone()));
    }
    let archive = cpio::write_cpio(
        entries.into_iter().map(|(b, data)| (b, Cursor::new(data))),
        Vec::new(),
    )
    .context("writing the cpio archive")?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&archive)?;
    fs::write(out, gz.finish()?).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// The `PVKEXEC-LINUX key=value` lines `/init` printed, in order.
pub fn report(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split("PVKEXEC-LINUX ").nth(1))
        .map(|s| s.trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The archive reads back with the cpio reader: names, modes, device numbers, contents.
    #[test]
    fn archive_reads_back() {
        let dir = std::env::temp_dir().join(format!("pvkexec-initramfs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("busybox");
        fs::write(&fake, b"\x7fELF fake busybox").unwrap();
        let out = dir.join("i.cpio.gz");
        build(&fake, &out).unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(fs::File::open(&out).unwrap()),
            &mut raw,
        )
        .unwrap();
        let mut rest: &[u8] = &raw;
        let mut seen = Vec::new();
        loop {
            let r = cpio::NewcReader::new(rest).unwrap();
            let e = r.entry();
            if e.is_trailer() {
                break;
            }
            let (name, mode, rmaj, rmin) = (
                e.name().to_string(),
                e.mode(),
                e.rdev_major(),
                e.rdev_minor(),
            );
            let mut data = Vec::new();
            let mut r = r;
            std::io::Read::read_to_end(&mut r, &mut data).unwrap();
            seen.push((name, mode, rmaj, rmin, data));
            rest = r.finish().unwrap();
        }
        let find = |n: &str| seen.iter().find(|s| s.0 == n).unwrap();
        assert_eq!(find("dev/console").1, 0o020600);
        assert_eq!((find("dev/console").2, find("dev/console").3), (5, 1));
        assert_eq!(find("bin/busybox").4, b"\x7fELF fake busybox");
        assert_eq!(find("bin/sh").4, b"busybox");
        assert!(String::from_utf8_lossy(&find("init").4).contains("PVKEXEC-LINUX-DONE"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
