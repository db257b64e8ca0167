//! The static part of the domU rig's dom0 initramfs: Xen's toolstack (xl, C xenstored,
//! xenconsoled, xen-init-dom0) with its libraries, bash and flock for the hotplug scripts,
//! busybox, and dom0's Xen modules, all taken from Debian packages (`apt-get download` +
//! `dpkg -x`), so a fresh bookworm machine needs no extra host packages. Built once into the
//! cache as a gzip'd cpio; each run appends its own uncompressed cpio (`/init`, domU files).

use anyhow::{bail, Context, Result};
use cpio::NewcBuilder;
use std::collections::BTreeSet;
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::provision::{self, DebianLinux, XenVersion};

/// Bumped whenever the recipe changes, so a stale cached archive is not reused.
const RECIPE: u32 = 4;

/// The dom0 modules `/init` loads, in load order (xenfs needs privcmd, virtio_blk the virtio
/// core), with their paths under `lib/modules/<version>/kernel/`. The virtio ones serve
/// host-backed domU disks (QEMU's virtio-blk PCI disks); a kernel that has one built in
/// (trixie's 6.12 builds in virtio and virtio_pci) lists it in `modules.builtin`, and dom0's
/// archive then has no `.ko` for it.
pub const DOM0_MODULES: [(&str, &str); 13] = [
    ("xen-evtchn", "drivers/xen/xen-evtchn.ko"),
    ("xen-gntdev", "drivers/xen/xen-gntdev.ko"),
    ("xen-gntalloc", "drivers/xen/xen-gntalloc.ko"),
    ("xen-privcmd", "drivers/xen/xen-privcmd.ko"),
    ("xenfs", "drivers/xen/xenfs/xenfs.ko"),
    ("xen-blkback", "drivers/block/xen-blkback/xen-blkback.ko"),
    ("loop", "drivers/block/loop.ko"),
    ("virtio_ring", "drivers/virtio/virtio_ring.ko"),
    ("virtio", "drivers/virtio/virtio.ko"),
    (
        "virtio_pci_modern_dev",
        "drivers/virtio/virtio_pci_modern_dev.ko",
    ),
    (
        "virtio_pci_legacy_dev",
        "drivers/virtio/virtio_pci_legacy_dev.ko",
    ),
    ("virtio_pci", "drivers/virtio/virtio_pci.ko"),
    ("virtio_blk", "drivers/block/virtio_blk.ko"),
];

/// The toolstack binaries `/init` runs (in the version's `usr/lib/xen-X/bin`).
const XEN_BINARIES: [&str; 6] = [
    "xl",
    "xenstored",
    "xenconsoled",
    "xenconsole",
    "xen-init-dom0",
    "libxl-save-helper",
];

/// The toolstack's Debian release, package names and paths for one Xen version.
pub struct Toolstack {
    pub xen: XenVersion,
    /// The dom0 kernel (its package also gives the modules).
    pub linux: DebianLinux,
}

impl Toolstack {
    pub fn for_xen(xen: XenVersion) -> Self {
        let linux = match xen {
            XenVersion::V4_17 => DebianLinux::Bookworm,
            XenVersion::V4_20 => DebianLinux::Trixie,
        };
        Toolstack { xen, linux }
    }

    /// Where the toolstack binaries live inside the packages.
    pub fn bin_dir(&self) -> String {
        format!("usr/lib/xen-{}/bin", self.xen.name())
    }

    /// Every package the initramfs takes files from.
    pub fn packages(&self) -> Vec<String> {
        let v = self.xen.name();
        let mut p: Vec<String> = [
            "xen-utils-common",
            "xenstore-utils",
            "libxenstore4",
            "libxencall1",
            "libxenevtchn1",
            "libxenforeignmemory1",
            "libxengnttab1",
            "libxentoolcore1",
            "libxentoollog1",
            "libxendevicemodel1",
            "libxenhypfs1",
            "libyajl2",
            // glibc, and libgcc_s which glibc loads at run time for pthread_cancel (xl aborts
            // at exit without it; no DT_NEEDED names it).
            "libc6",
            "libgcc-s1",
            // libxenguest's decompressors and libxenlight's uuid.
            "liblzma5",
            "zlib1g",
            "libzstd1",
            "libuuid1",
            // The hotplug script `block` is bash and locks with flock.
            "bash",
            "libtinfo6",
            "util-linux",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        p.push(format!("xen-utils-{v}"));
        p.push(format!("libxenmisc{v}"));
        p
    }
}

/// The cached static archive for `xen`'s toolstack, built when missing.
pub fn ensure_base(xen: XenVersion) -> Result<PathBuf> {
    // Tests may ask from several threads: build once at a time.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let ts = Toolstack::for_xen(xen);
    let dir = crate::cache_dir().join(format!("dom0-{}", xen.name()));
    let out = dir.join(format!("dom0-base-r{RECIPE}.cpio.gz"));
    if out.exists() {
        return Ok(out);
    }
    let root = dir.join("root");
    unpack_packages(&ts, &dir.join("deb"), &root)?;
    let modules = extract_modules(ts.linux, &dir.join("modules"))?;
    let busybox = provision::ensure_busybox()?;
    let archive = base_archive(&ts, &root, &modules, &busybox)?;
    let tmp = out.with_extension("tmp");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&archive)?;
    fs::write(&tmp, gz.finish()?).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &out)?;
    // Archives of older recipes are never read again.
    for e in fs::read_dir(&dir)?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("dom0-base-r") && e.path() != out {
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(out)
}

/// Downloads the missing packages and unpacks all into `root`.
fn unpack_packages(ts: &Toolstack, deb_dir: &Path, root: &Path) -> Result<()> {
    let stamp = root.join(format!(".unpacked-r{RECIPE}"));
    if stamp.exists() {
        return Ok(());
    }
    fs::create_dir_all(deb_dir)?;
    let apt_config = provision::apt_config_for(ts.xen)?;
    let packages = ts.packages();
    let debs = fetch_debs(&packages, deb_dir, |names| {
        apt_download(names, deb_dir, apt_config.as_deref())
    })?;
    let _ = fs::remove_dir_all(root);
    fs::create_dir_all(root)?;
    for deb in &debs {
        provision::dpkg_extract(deb, root)?;
    }
    fs::write(&stamp, "")?;
    Ok(())
}

/// The .deb of every package, downloading what `deb_dir` lacks with `download` (all at once,
/// then one by one so a failure names exactly the packages that are not available).
fn fetch_debs(
    packages: &[String],
    deb_dir: &Path,
    download: impl Fn(&[&str]) -> bool,
) -> Result<Vec<PathBuf>> {
    let missing = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .filter(|p| find_deb(deb_dir, p).is_none())
            .map(|p| p.to_string())
            .collect()
    };
    let all: Vec<&str> = packages.iter().map(String::as_str).collect();
    let first = missing(&all);
    if !first.is_empty() {
        eprintln!(
            "provision: downloading {} Debian packages for dom0",
            first.len()
        );
        let names: Vec<&str> = first.iter().map(String::as_str).collect();
        if !download(&names) {
            for name in &names {
                download(&[name]);
            }
        }
    }
    let still = missing(&all);
    if !still.is_empty() {
        bail!(
            "dom0 provisioning: Debian package(s) {} could not be downloaded (apt-get download)",
            still.join(", ")
        );
    }
    all.iter()
        .map(|p| {
            find_deb(deb_dir, p).with_context(|| format!("no {p}_*.deb in {}", deb_dir.display()))
        })
        .collect()
}

/// `apt-get download NAMES` into `deb_dir` (through another release's apt configuration when
/// given); `apt-get update` once first when the system's lists lack them (a fresh machine).
fn apt_download(names: &[&str], deb_dir: &Path, apt_config: Option<&Path>) -> bool {
    let attempt = || {
        let mut cmd = Command::new("apt-get");
        if let Some(conf) = apt_config {
            // Another release's packages: the system's installed versions must not become
            // the candidates (they are not in that release's archive).
            let empty = deb_dir.join("empty-dpkg-status");
            if fs::write(&empty, "").is_err() {
                return false;
            }
            cmd.env("APT_CONFIG", conf)
                .arg("-o")
                .arg(format!("Dir::State::status={}", empty.display()));
        }
        cmd.args(["download", "-q"])
            .args(names)
            .current_dir(deb_dir);
        cmd.status().map(|s| s.success()).unwrap_or(false)
    };
    if attempt() {
        return true;
    }
    apt_config.is_none() && provision::apt_update().is_ok() && attempt()
}

fn find_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
}

/// Extracts [`DOM0_MODULES`] and `xen-blkfront.ko` from the dom0 kernel's package (none
/// for a module the kernel has built in).
pub fn extract_modules(linux: DebianLinux, dest: &Path) -> Result<PathBuf> {
    let stamp = dest.join(format!(".extracted-r{RECIPE}"));
    if stamp.exists() {
        return Ok(dest.to_path_buf());
    }
    provision::ensure_linux(linux)?;
    let deb_dir = crate::cache_dir()
        .join(format!("linux-{}", linux.name()))
        .join("deb");
    let deb = fs::read_dir(&deb_dir)
        .with_context(|| format!("reading {}", deb_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("no linux-image .deb in {}", deb_dir.display()))?;
    let tree = dest.join("tree");
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(&tree)?;
    // The package's list first: a module built into this kernel has no file, and tar fails
    // on a name it does not find.
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -t",
            deb.display()
        ))
        .output()
        .context("listing the kernel package")?;
    if !listing.status.success() {
        bail!("listing {} failed ({})", deb.display(), listing.status);
    }
    let wanted: Vec<String> = DOM0_MODULES
        .iter()
        .map(|(_, p)| format!("/kernel/{p}"))
        .chain(["/kernel/drivers/block/xen-blkfront.ko".to_string()])
        .collect();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let names: Vec<&str> = listing
        .lines()
        .filter(|n| n.contains("lib/modules/"))
        .filter(|n| {
            n.ends_with("/modules.builtin")
                || wanted
                    .iter()
                    .any(|w| n.ends_with(w.as_str()) || n.ends_with(&format!("{w}.xz")))
        })
        .collect();
    let list = dest.join("extract.list");
    fs::write(&list, names.join("\n") + "\n")?;
    let script = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' -T '{}'",
        deb.display(),
        tree.display(),
        list.display()
    );
    let status = Command::new("sh").arg("-c").arg(&script).status()?;
    if !status.success() {
        bail!(
            "extracting the Xen modules from {} failed ({status})",
            deb.display()
        );
    }
    // bookworm ships /lib/modules, trixie (merged /usr) /usr/lib/modules.
    let version_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .filter_map(|d| fs::read_dir(tree.join(d)).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .next()
        .context("the kernel package holds no lib/modules/<version>")?;
    let builtin = fs::read_to_string(version_dir.join("modules.builtin")).unwrap_or_default();
    for (name, rel) in DOM0_MODULES
        .iter()
        .copied()
        .chain([("xen-blkfront", "drivers/block/xen-blkfront.ko")])
    {
        let src = version_dir.join("kernel").join(rel);
        let xz = version_dir.join("kernel").join(format!("{rel}.xz"));
        let out = dest.join(format!("{name}.ko"));
        let _ = fs::remove_file(&out);
        if src.exists() {
            fs::copy(&src, &out)?;
        } else if xz.exists() {
            // trixie compresses its modules; busybox insmod takes them uncompressed.
            let o = Command::new("xz")
                .arg("-dc")
                .arg(&xz)
                .output()
                .context("running xz -dc (install xz-utils)")?;
            if !o.status.success() {
                bail!(
                    "xz -dc {} failed: {}",
                    xz.display(),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            fs::write(&out, o.stdout)?;
        } else if builtin.lines().any(|l| l.trim() == format!("kernel/{rel}")) {
            // Built into the kernel: nothing to load.
        } else {
            bail!("{} has no {rel} or {rel}.xz", deb.display());
        }
    }
    fs::write(&stamp, "")?;
    Ok(dest.to_path_buf())
}

/// A cpio newc archive under construction: parent directories are added on demand.
#[derive(Default)]
pub struct CpioTree {
    entries: Vec<(NewcBuilder, Vec<u8>)>,
    dirs: BTreeSet<String>,
    names: BTreeSet<String>,
}

impl CpioTree {
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.to_string());
        self.names.insert(path.to_string());
        self.entries
            .push((NewcBuilder::new(path).mode(0o040755).nlink(2), Vec::new()));
    }

    fn parent(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    pub fn contains(&self, path: &str) -> bool {
        self.names.contains(path.trim_matches('/'))
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        let path = path.trim_matches('/');
        self.parent(path);
        self.names.insert(path.to_string());
        self.entries
            .push((NewcBuilder::new(path).mode(0o100000 | mode), data));
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = path.trim_matches('/');
        self.parent(path);
        self.names.insert(path.to_string());
        self.entries.push((
            NewcBuilder::new(path).mode(0o120777),
            target.as_bytes().to_vec(),
        ));
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        let path = path.trim_matches('/');
        self.parent(path);
        self.names.insert(path.to_string());
        self.entries.push((
            NewcBuilder::new(path)
                .mode(0o020600)
                .rdev_major(major)
                .rdev_minor(minor),
            Vec::new(),
        ));
    }

    /// Copies a file or symlink from the host, keeping symlinks as symlinks.
    pub fn copy(&mut self, path: &str, src: &Path) -> Result<()> {
        let meta = fs::symlink_metadata(src).with_context(|| format!("{}", src.display()))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(src)?;
            self.symlink(path, target.to_str().context("non-UTF-8 symlink")?);
        } else {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            let data = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
            self.file(path, mode, data);
        }
        Ok(())
    }

    /// The archive bytes (uncompressed, with the trailer).
    pub fn finish(self) -> Result<Vec<u8>> {
        cpio::write_cpio(
            self.entries
                .into_iter()
                .map(|(b, data)| (b, Cursor::new(data))),
            Vec::new(),
        )
        .context("writing the cpio archive")
    }
}

/// Every file or symlink directly inside `dir` (not in subdirectories), as paths under `root`.
fn top_level(root: &Path, dir: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(root.join(dir)) else {
        return Ok(out);
    };
    for e in rd.flatten() {
        let ft = e.file_type()?;
        if ft.is_file() || ft.is_symlink() {
            out.push(format!("{dir}/{}", e.file_name().to_string_lossy()));
        }
    }
    out.sort();
    Ok(out)
}

fn tree_files(root: &Path, dir: &str, out: &mut Vec<String>) -> Result<()> {
    for e in fs::read_dir(root.join(dir))
        .with_context(|| format!("{}", root.join(dir).display()))?
        .flatten()
    {
        let rel = format!("{dir}/{}", e.file_name().to_string_lossy());
        if e.file_type()?.is_dir() {
            tree_files(root, &rel, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// Every `DT_NEEDED` library of the selected ELF files must be among them (by file name in a
/// library directory), else dom0's toolstack would fail inside QEMU with a loader error.
fn check_libraries(root: &Path, paths: &[String]) -> Result<()> {
    let names: BTreeSet<&str> = paths
        .iter()
        .filter(|p| p.contains("lib"))
        .filter_map(|p| p.rsplit('/').next())
        .collect();
    for p in paths {
        let src = root.join(p);
        if fs::symlink_metadata(&src).is_ok_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        let Ok(bytes) = fs::read(&src) else { continue };
        if !bytes.starts_with(b"\x7fELF") {
            continue;
        }
        let elf = goblin::elf::Elf::parse(&bytes)
            .with_context(|| format!("dom0 initramfs: {p} is not a readable ELF file"))?;
        for lib in &elf.libraries {
            if !names.contains(lib) {
                bail!(
                    "dom0 initramfs: {p} needs {lib}, which none of the packages provides \
                     (add its Debian package to Toolstack::packages)"
                );
            }
        }
    }
    Ok(())
}

/// Lays out the static part: libraries, toolstack, scripts, bash, flock, busybox, modules.
fn base_archive(ts: &Toolstack, root: &Path, modules: &Path, busybox: &Path) -> Result<Vec<u8>> {
    let mut t = CpioTree::default();
    for d in [
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "domu",
        "var/lib/xen",
        "var/log/xen/console",
        "root",
    ] {
        t.dir(d);
    }
    t.char_dev("dev/console", 5, 1);
    // libxl uses /var/run/xen and xl locks /var/lock/xl: both on the tmpfs at /run.
    t.symlink("var/run", "/run");
    t.symlink("var/lock", "/run/lock");
    let mut paths = Vec::new();
    for dir in [
        "lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu",
        "lib64",
        "usr/lib64",
    ] {
        paths.extend(top_level(root, dir)?);
    }
    tree_files(root, "etc/xen", &mut paths)?;
    for b in XEN_BINARIES {
        paths.push(format!("{}/{b}", ts.bin_dir()));
    }
    paths.extend(
        top_level(root, "usr/bin")?
            .into_iter()
            .filter(|p| p.starts_with("usr/bin/xenstore") && !p.ends_with("-control")),
    );
    paths.push("usr/bin/flock".into());
    // The hotplug scripts start with #!/bin/bash; a merged-/usr release ships usr/bin/bash.
    let bash = ["bin/bash", "usr/bin/bash"]
        .iter()
        .find(|p| root.join(p).is_file())
        .with_context(|| format!("no bin/bash in the unpacked packages in {}", root.display()))?;
    let mut checked = paths.clone();
    checked.push(bash.to_string());
    check_libraries(root, &checked)?;
    for p in &paths {
        let src = root.join(p);
        if fs::symlink_metadata(&src).is_err() {
            bail!(
                "dom0 initramfs: {p} is missing from the unpacked packages in {}",
                root.display()
            );
        }
        t.copy(p, &src)?;
    }
    t.copy("bin/bash", &root.join(bash))?;
    // The ELF interpreter is /lib64/ld-linux-x86-64.so.2 in every release.
    if !t.contains("lib64") {
        t.symlink("lib64", "usr/lib64");
    }
    // busybox and its applets, except where a package already provides the command.
    t.copy("bin/busybox", busybox)?;
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .context("running busybox --list")?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let path = format!("bin/{}", applet.trim());
        if !applet.trim().is_empty() && !t.contains(&path) {
            t.symlink(&path, "busybox");
        }
    }
    // A module missing here is built in (extract_modules refused any other).
    for (name, _) in DOM0_MODULES {
        let ko = modules.join(format!("{name}.ko"));
        if ko.exists() {
            t.copy(&format!("lib/modules/{name}.ko"), &ko)?;
        }
    }
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A package the downloader cannot get is named; the others are not.
    #[test]
    fn missing_package_is_named() {
        let dir = std::env::temp_dir().join(format!("pvkexec-dom0-debs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let packages = vec!["libfoo1".to_string(), "xen-utils-9.99".to_string()];
        let fake = |names: &[&str]| {
            for n in names.iter().filter(|n| !n.starts_with("xen-utils")) {
                fs::write(dir.join(format!("{n}_1.0_amd64.deb")), b"").unwrap();
            }
            names.iter().all(|n| !n.starts_with("xen-utils"))
        };
        let err = fetch_debs(&packages, &dir, fake).unwrap_err().to_string();
        assert!(err.contains("xen-utils-9.99"), "{err}");
        assert!(!err.contains("libfoo1"), "{err}");
        let ok = fetch_debs(&packages[..1], &dir, |_| false).unwrap();
        assert_eq!(ok.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A binary whose library is not among the selected files is refused by name.
    #[test]
    fn missing_library_is_named() {
        let root = Path::new("/");
        let err = check_libraries(root, &["bin/true".to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bin/true needs libc.so.6"), "{err}");
        let libc = [
            "lib/x86_64-linux-gnu/libc.so.6",
            "usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .iter()
        .find(|p| root.join(p).exists())
        .unwrap()
        .to_string();
        check_libraries(root, &["bin/true".to_string(), libc]).unwrap_or_else(|e| {
            // libc itself needs the dynamic loader: that one is named next.
            assert!(e.to_string().contains("ld-linux"), "{e}")
        });
    }

    #[test]
    fn tree_adds_parents_once() {
        let mut t = CpioTree::default();
        t.file("a/b/c", 0o644, b"x".to_vec());
        t.symlink("a/b/d", "c");
        assert!(t.contains("a") && t.contains("a/b") && t.contains("a/b/c"));
        let bytes = t.finish().unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(text.matches("a/b\0").count(), 1);
    }
}
