//! Provisioning of QEMU and Xen from Debian's packages, cached in [`crate::cache_dir`].

use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A Xen hypervisor the rig can boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenVersion {
    /// Debian bookworm's `xen-hypervisor-4.17-amd64` (release build).
    V4_17,
    /// Debian trixie's `xen-hypervisor-4.20-amd64`, fetched with a private apt configuration.
    V4_20,
}

impl XenVersion {
    fn package(self) -> &'static str {
        match self {
            XenVersion::V4_17 => "xen-hypervisor-4.17-amd64",
            XenVersion::V4_20 => "xen-hypervisor-4.20-amd64",
        }
    }

    fn image_gz(self) -> &'static str {
        match self {
            XenVersion::V4_17 => "boot/xen-4.17-amd64.gz",
            XenVersion::V4_20 => "boot/xen-4.20-amd64.gz",
        }
    }

    /// Short name, e.g. `4.17`.
    pub fn name(self) -> &'static str {
        match self {
            XenVersion::V4_17 => "4.17",
            XenVersion::V4_20 => "4.20",
        }
    }

    /// The Debian release whose package lists carry this hypervisor (`None`: the system's).
    fn suite(self) -> Option<&'static str> {
        match self {
            XenVersion::V4_17 => None,
            XenVersion::V4_20 => Some("trixie"),
        }
    }
}

impl std::str::FromStr for XenVersion {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "4.17" => Ok(XenVersion::V4_17),
            "4.20" => Ok(XenVersion::V4_20),
            other => bail!("unknown Xen version {other:?}: this rig provisions 4.17 and 4.20"),
        }
    }
}

pub(crate) static PROVISION_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed with {}", cmd, status);
    }
    Ok(())
}

pub(crate) fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs `apt-get update` once per process (fresh machines have no package lists).
pub(crate) fn apt_update() -> Result<()> {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    run(Command::new("apt-get").args(["update", "-q"]))
        .context("apt-get update (provisioning needs Debian's package lists; are you root?)")?;
    let _ = DONE.set(());
    Ok(())
}

/// `apt-get install` of Debian's `packages` (no recommends, non-interactive), after the
/// process's one `apt-get update`.
pub(crate) fn apt_install(packages: &[&str]) -> Result<()> {
    apt_update()?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Returns the path of `qemu-system-x86_64`, installing Debian's `qemu-system-x86` when absent.
pub fn ensure_qemu() -> Result<PathBuf> {
    let _guard = PROVISION_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !have("qemu-system-x86_64") {
        eprintln!("provision: installing qemu-system-x86 with apt-get");
        apt_install(&["qemu-system-x86"])
            .context("cannot install qemu-system-x86 (apt-get install); install it by hand")?;
    }
    let out = Command::new("sh")
        .args(["-c", "command -v qemu-system-x86_64"])
        .output()
        .context("locating qemu-system-x86_64")?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if path.is_empty() {
        bail!("qemu-system-x86_64 is not on PATH after installing qemu-system-x86");
    }
    Ok(PathBuf::from(path))
}

/// Downloads `package` with `apt-get download` into `dir` (once) and returns the .deb.
pub fn download_deb(package: &str, dir: &Path) -> Result<PathBuf> {
    download_deb_from(package, dir, None)
}

/// A private apt configuration for another Debian suite: its own source list, package lists
/// and cache in the cache directory, so the system's apt setup is never touched.
fn suite_apt_config(suite: &str) -> Result<PathBuf> {
    let dir = crate::cache_dir().join(format!("apt-{suite}"));
    for sub in ["lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    // Written every time: the paths inside must follow the cache if it moved.
    let conf = dir.join("apt.conf");
    let mirror = system_mirror();
    fs::write(
        dir.join("sources.list"),
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} {suite} main\n"
        ),
    )?;
    fs::write(
        &conf,
        format!(
            "Dir::Etc::sourcelist \"{d}/sources.list\";\nDir::Etc::sourceparts \"-\";\n\
             Dir::State::Lists \"{d}/lists\";\nDir::Cache \"{d}/cache\";\n",
            d = dir.display()
        ),
    )?;
    let have_lists = dir.join("lists").read_dir()?.any(|e| {
        e.map(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
            .unwrap_or(false)
    });
    if !have_lists {
        eprintln!("provision: fetching Debian {suite} package lists from {mirror}");
        run(Command::new("apt-get")
            .args(["update", "-q"])
            .env("APT_CONFIG", &conf))
        .with_context(|| format!("apt-get update for Debian {suite}"))?;
    }
    Ok(conf)
}

/// The Debian mirror the system's apt uses (first `URIs:`/`deb` entry), else deb.debian.org.
fn system_mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(t) = fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().ends_with(".sources") {
                texts.push(fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    for text in &texts {
        for line in text.lines() {
            let uri = line.strip_prefix("URIs:").map(str::trim).or_else(|| {
                line.strip_prefix("deb ")
                    .and_then(|r| r.split_whitespace().find(|w| w.starts_with("http")))
            });
            if let Some(uri) = uri.and_then(|u| u.split_whitespace().next()) {
                if uri.ends_with("/debian") {
                    return uri.to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// The private apt configuration for `xen`'s Debian release (`None`: the system's own).
pub(crate) fn apt_config_for(xen: XenVersion) -> Result<Option<PathBuf>> {
    let _guard = PROVISION_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    xen.suite().map(suite_apt_config).transpose()
}

/// [`download_deb`] through an optional private apt configuration.
pub(crate) fn download_deb_from(
    package: &str,
    dir: &Path,
    apt_config: Option<&Path>,
) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(deb) = find_deb(dir, package)? {
        return Ok(deb);
    }
    eprintln!("provision: downloading {package} with apt-get download");
    let attempt = |dir: &Path| {
        let mut cmd = Command::new("apt-get");
        cmd.args(["download", "-q", package]).current_dir(dir);
        if let Some(conf) = apt_config {
            cmd.env("APT_CONFIG", conf);
        }
        cmd.status().map(|s| s.success()).unwrap_or(false)
    };
    if !attempt(dir) {
        apt_update()?;
        if !attempt(dir) {
            bail!("cannot download Debian package {package} (apt-get download failed)");
        }
    }
    find_deb(dir, package)?.with_context(|| {
        format!(
            "apt-get download left no {package}_*.deb in {}",
            dir.display()
        )
    })
}

fn find_deb(dir: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// `dpkg -x` of one package into `root` (created if missing; several packages may share it).
pub fn dpkg_extract(deb: &Path, root: &Path) -> Result<()> {
    fs::create_dir_all(root)?;
    run(Command::new("dpkg").arg("-x").arg(deb).arg(root))
        .with_context(|| format!("unpacking {}", deb.display()))
}

/// Unpacks a .deb with `dpkg -x` into `dest` (once).
pub fn unpack_deb(deb: &Path, dest: &Path) -> Result<()> {
    let stamp = dest.join(".unpacked");
    if stamp.exists() {
        return Ok(());
    }
    let _ = fs::remove_dir_all(dest);
    dpkg_extract(deb, dest)?;
    fs::write(&stamp, deb.display().to_string())?;
    Ok(())
}

/// Returns the path of the uncompressed Xen image for `version`, provisioning it when needed.
pub fn ensure_xen(version: XenVersion) -> Result<PathBuf> {
    // Tests boot in parallel threads: provision once at a time.
    let _guard = PROVISION_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = crate::cache_dir().join(format!("xen-{}", version.name()));
    let image = dir.join("xen");
    if image.exists() {
        return Ok(image);
    }
    let apt_config = version.suite().map(suite_apt_config).transpose()?;
    let deb = download_deb_from(version.package(), &dir.join("deb"), apt_config.as_deref())?;
    let root = dir.join("root");
    unpack_deb(&deb, &root)?;
    let gz_path = root.join(version.image_gz());
    let gz = fs::File::open(&gz_path)
        .with_context(|| format!("{} has no {}", deb.display(), version.image_gz()))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut bytes)
        .with_context(|| format!("gunzip {}", gz_path.display()))?;
    let tmp = dir.join("xen.tmp");
    fs::write(&tmp, &bytes)?;
    fs::rename(&tmp, &image)?;
    Ok(image)
}

/// Debian's PV-capable Linux kernels the rig uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebianLinux {
    /// bookworm's `linux-image-6.1.0-*-amd64-unsigned` (bzImage, xz payload).
    Bookworm,
    /// trixie's `linux-image-6.12.*-amd64-unsigned` (bzImage, zstd payload).
    Trixie,
    /// bookworm-security's 6.12 (`linux-image-6.12.N+deb12-amd64-unsigned`, the package
    /// bookworm's `linux-image-6.12-amd64` depends on): trixie's 6.12 sources built with
    /// gcc-12, so a module for it links on a bookworm host.
    Bookworm612,
    /// bullseye's `linux-image-5.10.0-*-amd64-unsigned` (bzImage, xz payload): a Linux that
    /// asks for a hypercall page and boots after a kernel that placed its `vcpu_info`.
    Bullseye,
}

impl DebianLinux {
    pub fn name(self) -> &'static str {
        match self {
            DebianLinux::Bookworm => "bookworm",
            DebianLinux::Trixie => "trixie",
            DebianLinux::Bullseye => "bullseye",
            DebianLinux::Bookworm612 => "bookworm-6.12",
        }
    }

    /// The meta-package whose dependency names the current image package.
    fn meta_package(self) -> &'static str {
        match self {
            DebianLinux::Bookworm612 => "linux-image-6.12-amd64",
            _ => "linux-image-amd64",
        }
    }

    /// The Debian release to fetch from with a private apt configuration (`None`: the
    /// system's own lists, bookworm).
    fn suite(self) -> Option<&'static str> {
        match self {
            DebianLinux::Bookworm | DebianLinux::Bookworm612 => None,
            DebianLinux::Trixie => Some("trixie"),
            DebianLinux::Bullseye => Some("bullseye"),
        }
    }
}

/// The private apt configuration for `which`'s Debian release (`None`: the system's own).
pub(crate) fn apt_config_for_linux(which: DebianLinux) -> Result<Option<PathBuf>> {
    let _guard = PROVISION_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    which.suite().map(suite_apt_config).transpose()
}

/// bookworm's current Linux (see [`ensure_linux`]).
pub fn ensure_debian_linux() -> Result<PathBuf> {
    ensure_linux(DebianLinux::Bookworm)
}

/// Returns the path of `which`'s `vmlinuz`, extracted once from the package the suite's
/// `linux-image-amd64` (for [`DebianLinux::Bookworm612`]: `linux-image-6.12-amd64`) depends
/// on, without installing it (other suites than the system's through a private apt
/// configuration in the cache).
pub fn ensure_linux(which: DebianLinux) -> Result<PathBuf> {
    let _guard = PROVISION_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = crate::cache_dir().join(format!("linux-{}", which.name()));
    let image = dir.join("vmlinuz");
    if image.exists() {
        return Ok(image);
    }
    let apt_config = which.suite().map(suite_apt_config).transpose()?;
    let package = debian_linux_package(which.meta_package(), apt_config.as_deref())?;
    let deb = download_deb_from(&package, &dir.join("deb"), apt_config.as_deref())?;
    let root = dir.join("root");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)?;
    // Only /boot is needed: extract it from the data archive rather than every module.
    run(Command::new("sh").arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' --wildcards './boot/vmlinuz-*'",
        deb.display(),
        root.display()
    )))
    .with_context(|| format!("extracting vmlinuz from {}", deb.display()))?;
    let boot = root.join("boot");
    let vmlinuz = fs::read_dir(&boot)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{} holds no boot/vmlinuz-*", deb.display()))?;
    fs::copy(&vmlinuz, &image)?;
    Ok(image)
}

/// Debian's `busybox-static`: returns the path of its static `busybox` binary.
pub fn ensure_busybox() -> Result<PathBuf> {
    let _guard = PROVISION_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = crate::cache_dir().join("busybox");
    let binary = dir.join("busybox");
    if binary.exists() {
        return Ok(binary);
    }
    let deb = download_deb("busybox-static", &dir.join("deb"))?;
    let root = dir.join("root");
    let _ = fs::remove_dir_all(&root);
    unpack_deb(&deb, &root)?;
    let found = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.exists())
        .with_context(|| format!("{} holds no bin/busybox", deb.display()))?;
    fs::copy(&found, &binary)?;
    Ok(binary)
}

/// The unsigned image package `meta` (`linux-image-amd64`) currently depends on.
fn debian_linux_package(meta: &str, apt_config: Option<&Path>) -> Result<String> {
    let query = || -> Result<Option<String>> {
        let mut cmd = Command::new("apt-cache");
        cmd.args(["depends", meta]);
        if let Some(c) = apt_config {
            cmd.env("APT_CONFIG", c);
        }
        let out = cmd
            .output()
            .with_context(|| format!("running apt-cache depends {meta}"))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|d| d.starts_with("linux-image-") && d.ends_with("-amd64"))
            .map(|d| format!("{d}-unsigned")))
    };
    if let Some(p) = query()? {
        return Ok(p);
    }
    if apt_config.is_none() {
        apt_update()?;
    }
    query()?
        .with_context(|| format!("apt-cache knows no {meta} dependency (Debian package lists?)"))
}
