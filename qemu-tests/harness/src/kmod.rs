//! Builds the kernel module (`kmod/`, `pvkexec.ko`) against Debian's own kernel headers, and
//! the domU initramfs that carries it with the `pvkexec` CLI.
//!
//! Headers come from Debian's packages (`apt-get download` + `dpkg -x` into
//! [`crate::cache_dir`], never installed): `linux-headers-<release>` and what it depends on
//! (`-common`, `linux-kbuild-*`). The `-amd64` Makefile includes the `-common` one by an
//! absolute `/usr/src` path, which is rewritten to the unpacked copy. The compiler is the one
//! the headers package names (bookworm: gcc-12), installed with apt-get when absent.

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::dom0::CpioTree;
use crate::provision::{self, DebianLinux};

/// Which kernel headers to build against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Headers {
    /// The rig's kernel: the release bookworm's `linux-image-amd64` depends on (6.1).
    Bookworm,
    /// bookworm-security's 6.12 (`6.12.N+deb12`, built with gcc-12; the release of
    /// [`DebianLinux::Bookworm612`]'s image): trixie's 6.12 sources, linkable on this host.
    Bookworm612,
    /// trixie's own headers (`6.12.N+deb13`): they name gcc-14 and their kbuild tools need
    /// glibc 2.38, neither of which a bookworm host has; see [`compile_check_trixie`].
    Trixie,
}

impl Headers {
    pub fn name(self) -> &'static str {
        match self {
            Headers::Bookworm => "bookworm",
            Headers::Bookworm612 => "bookworm-6.12",
            Headers::Trixie => "trixie",
        }
    }

    /// The kernel release (`6.1.0-57-amd64`) and the apt configuration to fetch it with.
    fn release(self) -> Result<(String, Option<PathBuf>)> {
        match self {
            Headers::Bookworm => Ok((
                image_release(DebianLinux::Bookworm)?,
                provision::apt_config_for_linux(DebianLinux::Bookworm)?,
            )),
            Headers::Trixie => Ok((
                image_release(DebianLinux::Trixie)?,
                provision::apt_config_for_linux(DebianLinux::Trixie)?,
            )),
            // The headers of exactly the image the rig boots as the 6.12 domU.
            Headers::Bookworm612 => Ok((image_release(DebianLinux::Bookworm612)?, None)),
        }
    }

    /// The headers a module for `linux` (the old kernel of a domU) is built against: the
    /// image's own release, or why no `.ko` can be built for it here.
    pub fn for_linux(linux: DebianLinux) -> Result<Headers> {
        match linux {
            DebianLinux::Bookworm => Ok(Headers::Bookworm),
            DebianLinux::Bookworm612 => Ok(Headers::Bookworm612),
            DebianLinux::Trixie => bail!(
                "no pvkexec.ko for trixie's own 6.12 on this host (its headers name gcc-14 and \
                 their kbuild tools need glibc 2.38): use bookworm's 6.12 build (bookworm-6.12)"
            ),
            DebianLinux::Bullseye => {
                bail!("no pvkexec.ko for bullseye's 5.10: the module needs Linux 5.16 or later")
            }
        }
    }
}

impl std::str::FromStr for Headers {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bookworm" => Ok(Headers::Bookworm),
            "bookworm-6.12" => Ok(Headers::Bookworm612),
            "trixie" => Ok(Headers::Trixie),
            o => bail!("unknown headers {o:?}: bookworm, bookworm-6.12 or trixie"),
        }
    }
}

/// The release of the kernel the rig provisions for `linux` (from its package's file name,
/// `linux-image-<release>-unsigned_<version>_amd64.deb`).
pub fn image_release(linux: DebianLinux) -> Result<String> {
    provision::ensure_linux(linux)?;
    let dir = crate::cache_dir()
        .join(format!("linux-{}", linux.name()))
        .join("deb");
    for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().to_string();
        if let Some(rest) = name.strip_prefix("linux-image-") {
            if let Some((release, _)) = rest.split_once("-unsigned_") {
                return Ok(release.to_string());
            }
        }
    }
    bail!("{} holds no linux-image-*-unsigned .deb", dir.display())
}

/// Unpacked headers, ready for `make -C dir M=...`.
#[derive(Clone, Debug)]
pub struct HeaderTree {
    pub release: String,
    /// `.../usr/src/linux-headers-<release>`.
    pub dir: PathBuf,
    /// The compiler the headers package depends on (`gcc-12`, `gcc-14`).
    pub compiler: String,
}

static KMOD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Downloads and unpacks the headers (once) and fixes their absolute include.
pub fn ensure_headers(which: Headers) -> Result<HeaderTree> {
    let (release, apt_config) = which.release()?;
    let _guard = KMOD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let top = crate::cache_dir().join("kmod-headers").join(&release);
    let root = top.join("root");
    let deb_dir = top.join("deb");
    let headers = format!("linux-headers-{release}");
    let main = provision::download_deb_from(&headers, &deb_dir, apt_config.as_deref())?;
    let depends = deb_field(&main, "Depends")?;
    let compiler = compiler_of(&depends)
        .with_context(|| format!("{headers} names no gcc in Depends: {depends}"))?;
    let stamp = top.join(".unpacked");
    if !stamp.exists() {
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root)?;
        let mut debs = vec![main.clone()];
        for dep in package_names(&depends) {
            if dep.starts_with("linux-headers-") || dep.starts_with("linux-kbuild-") {
                debs.push(provision::download_deb_from(
                    &dep,
                    &deb_dir,
                    apt_config.as_deref(),
                )?);
            }
        }
        for deb in &debs {
            provision::dpkg_extract(deb, &root)?;
        }
        fix_absolute_include(&root, &release)?;
        fs::write(&stamp, "")?;
    }
    Ok(HeaderTree {
        release: release.clone(),
        dir: root.join("usr/src").join(&headers),
        compiler,
    })
}

fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let o = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg(field)
        .output()
        .context("running dpkg-deb -f")?;
    if !o.status.success() {
        bail!("dpkg-deb -f {} {field} failed", deb.display());
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Package names of a Depends field (alternatives and version constraints dropped).
fn package_names(depends: &str) -> Vec<String> {
    depends
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// `linux-compiler-gcc-12-x86` (bookworm) or `gcc-14` (trixie) -> the gcc binary name.
fn compiler_of(depends: &str) -> Option<String> {
    package_names(depends).into_iter().find_map(|p| {
        if let Some(rest) = p.strip_prefix("linux-compiler-gcc-") {
            rest.split('-').next().map(|v| format!("gcc-{v}"))
        } else if p.starts_with("gcc-") {
            Some(p)
        } else {
            None
        }
    })
}

/// The `-amd64` Makefile is `include /usr/src/linux-headers-<...>-common/Makefile`: point it
/// at the unpacked tree.
fn fix_absolute_include(root: &Path, release: &str) -> Result<()> {
    let mk = root
        .join("usr/src")
        .join(format!("linux-headers-{release}"))
        .join("Makefile");
    let text = fs::read_to_string(&mk).with_context(|| format!("reading {}", mk.display()))?;
    let prefix = root.join("usr/src");
    let fixed = text.replace(
        "include /usr/src/",
        &format!("include {}/", prefix.display()),
    );
    if fixed == text {
        bail!(
            "{}: no `include /usr/src/...` line to fix: {text:?}",
            mk.display()
        );
    }
    fs::write(&mk, fixed)?;
    Ok(())
}

/// Installs `compiler`, make and pahole (6.12's kbuild runs it for module BTF) with apt-get
/// when absent.
pub fn ensure_compiler(compiler: &str) -> Result<()> {
    let have = |p: &str| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have(compiler) && have("make") && have("pahole") {
        return Ok(());
    }
    eprintln!("provision: installing {compiler} and make with apt-get");
    let installed = provision::apt_install(&[compiler, "make", "libelf1", "libssl3", "dwarves"]);
    if installed.is_err() || !have(compiler) || !have("pahole") {
        bail!(
            "{compiler}, make and pahole (dwarves) are needed to build pvkexec.ko and apt-get \
             cannot install them here"
        );
    }
    Ok(())
}

/// The module sources (`kmod/`).
pub fn source_dir() -> PathBuf {
    crate::workspace_root().join("kmod")
}

/// Whether `name` in `kmod/` is one kbuild reads: `Kbuild` and the C sources and headers it
/// builds `pvkexec.ko` from (every `.c` and `.h`; kbuild's own `pvkexec.mod.c` is not one).
fn is_source(name: &str) -> bool {
    name == "Kbuild" || (name.ends_with(".c") && !name.ends_with(".mod.c")) || name.ends_with(".h")
}

/// The names of the sources in `dir` (`is_source`).
fn source_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().to_string();
        if is_source(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// Copies the sources into a build directory under `target/kmod/<release>` (kbuild writes
/// its objects beside them) and returns it. When the directory holds a source `kmod/` no
/// longer has (renamed or removed), it is emptied first, so nothing is built or included
/// from an old copy.
fn stage_sources(release: &str) -> Result<PathBuf> {
    let dir = crate::workspace_root().join("target/kmod").join(release);
    let names = source_names(&source_dir())?;
    if dir.is_dir() && source_names(&dir)?.iter().any(|n| !names.contains(n)) {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    for name in &names {
        let (src, dest) = (source_dir().join(name), dir.join(name));
        // Unchanged files keep their times, so make rebuilds only what changed.
        if fs::read(&dest).ok() != Some(fs::read(&src)?) {
            fs::copy(&src, &dest)?;
        }
    }
    Ok(dir)
}

/// Builds `pvkexec.ko` for `which` with -Werror and returns its path.
pub fn build(which: Headers) -> Result<PathBuf> {
    if which == Headers::Trixie {
        bail!(
            "trixie's headers name gcc-14 and their kbuild tools need glibc 2.38: build for \
             trixie on a trixie host (here only compile_check_trixie runs)"
        );
    }
    let h = ensure_headers(which)?;
    ensure_compiler(&h.compiler)?;
    // Staged under the lock too: staging may empty the directory another build is using.
    let _guard = KMOD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = stage_sources(&h.release)?;
    let o = Command::new("make")
        .arg("-C")
        .arg(&h.dir)
        .arg(format!("M={}", dir.display()))
        .arg(format!("CC={}", h.compiler))
        .args(["PVKEXEC_WERROR=y", "modules"])
        .output()
        .context("running make for pvkexec.ko")?;
    // Warnings are errors here too: objtool's and modpost's are not compiler warnings.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if o.status.success() && said.contains("warning:") {
        bail!("building pvkexec.ko against {} warned:\n{said}", h.release);
    }
    if !o.status.success() {
        bail!(
            "building pvkexec.ko against {} failed:\n{}{}",
            h.release,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let ko = dir.join("pvkexec.ko");
    if !ko.is_file() {
        bail!("make succeeded but left no {}", ko.display());
    }
    Ok(ko)
}

/// Compiles the module's sources (`pvkexec.o`: every object `Kbuild` lists, linked) against
/// trixie's own 6.12 headers with the host's gcc-12 (-Werror):
/// only the gcc-14 flag `-fmin-function-alignment` is dropped and objtool (a trixie binary
/// needing glibc 2.38) is not run; no `.ko` is linked (modpost needs glibc 2.38 too). Returns
/// the object's path.
pub fn compile_check_trixie() -> Result<PathBuf> {
    let h = ensure_headers(Headers::Trixie)?;
    ensure_compiler("gcc-12")?;
    let _guard = KMOD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = stage_sources(&format!("{}-compile-check", h.release))?;
    let o = Command::new("make")
        .arg("-C")
        .arg(&h.dir)
        .arg(format!("M={}", dir.display()))
        .args([
            "CC=gcc-12",
            "PVKEXEC_WERROR=y",
            "CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT=",
            "objtool=/bin/true",
            "pvkexec.o",
        ])
        .output()
        .context("running make for pvkexec.o")?;
    if !o.status.success() {
        bail!(
            "compiling pvkexec.o against {} failed:\n{}{}",
            h.release,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(dir.join("pvkexec.o"))
}

/// Builds (once per process) the release `pvkexec` CLI, the one domU initramfs images carry
/// (a tenth of the debug binary's size, and fast enough under TCG).
pub fn pvkexec_release() -> Result<PathBuf> {
    static BUILT: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.as_ref() {
        return Ok(p.clone());
    }
    let root = crate::workspace_root();
    let st = crate::cargo_command(&root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "loader",
            "--bin",
            "pvkexec",
        ])
        .status()
        .context("running cargo build --release for pvkexec")?;
    if !st.success() {
        bail!("building the release pvkexec failed");
    }
    let path = root.join("target/release/pvkexec");
    *built = Some(path.clone());
    Ok(path)
}

/// Lines of C in `kmod/` (`.c` and `.h`).
pub fn source_lines() -> Result<usize> {
    let mut n = 0;
    for e in fs::read_dir(source_dir())? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "c" || x == "h") {
            n += fs::read_to_string(&p)?.lines().count();
        }
    }
    Ok(n)
}

/// The shared libraries `ldd` lists for `binary` (absolute paths), the ELF interpreter
/// included.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let o = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    if !o.status.success() {
        bail!("ldd {} failed", binary.display());
    }
    let mut libs: Vec<PathBuf> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once(" => ") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    // glibc loads libgcc_s at run time (unwinding) without ldd seeing it.
    let gcc_s = PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1");
    if gcc_s.exists() && !libs.contains(&gcc_s) {
        libs.push(gcc_s);
    }
    Ok(libs)
}

/// What goes into a domU initramfs besides busybox: `(path in the archive, host file)`.
#[derive(Clone, Debug, Default)]
pub struct DomuFiles {
    pub files: Vec<(String, PathBuf)>,
}

/// What every domU `/init` starts with: the shell, `PATH`, and `/proc`, `/sys` and `/dev`
/// mounted.
const INIT_PREAMBLE: &str = "#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
";

/// A shell function for a domU `/init` that kexecs into itself: `repack_self` writes
/// `/tmp/self.cpio.gz`, the running initramfs repacked from its root, plus `/dev/console`,
/// which lies under the devtmpfs mount (without it the next kernel's init has no console).
pub const REPACK_SELF_SH: &str = r#"repack_self() {
  (cd / && find . -xdev ! -path './tmp/*' ! -path './proc/*' ! -path './sys/*' | cpio -o -H newc 2>/dev/null | gzip > /tmp/self.cpio.gz)
  mkdir -p /tmp/console/dev && mknod /tmp/console/dev/console c 5 1
  (cd /tmp/console && printf 'dev\ndev/console\n' | cpio -o -H newc 2>/dev/null | gzip >> /tmp/self.cpio.gz)
}
"#;

/// A gzip'd initramfs for a domU: busybox with its applets, `/init` ([`INIT_PREAMBLE`], then
/// `init`), the `pvkexec` CLI with its shared libraries (and `/bin/kexec` linking to it), and
/// `extra` files.
pub fn domu_initramfs(init: &str, pvkexec: &Path, extra: &DomuFiles, out: &Path) -> Result<()> {
    let busybox = provision::ensure_busybox()?;
    let mut t = CpioTree::default();
    for d in ["dev", "proc", "sys", "tmp", "run", "lib/modules"] {
        t.dir(d);
    }
    t.char_dev("dev/console", 5, 1);
    t.copy("bin/busybox", &busybox)?;
    let list = Command::new(&busybox)
        .arg("--list")
        .output()
        .context("running busybox --list")?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let a = applet.trim();
        if !a.is_empty() && a != "busybox" {
            t.symlink(&format!("bin/{a}"), "busybox");
        }
    }
    t.file("bin/pvkexec", 0o755, fs::read(pvkexec)?);
    t.symlink("sbin/kexec", "/bin/pvkexec");
    for lib in shared_libraries(pvkexec)? {
        let rel = lib.to_string_lossy().trim_start_matches('/').to_string();
        // Follow symlinks: the archive gets the library's bytes under the name ldd used.
        t.file(&rel, 0o755, fs::read(&lib)?);
    }
    t.file("init", 0o755, format!("{INIT_PREAMBLE}{init}").into_bytes());
    for (path, src) in &extra.files {
        t.file(
            path,
            0o644,
            fs::read(src).with_context(|| src.display().to_string())?,
        );
    }
    let archive = t.finish()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &archive)?;
    fs::write(out, gz.finish()?).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// The release a bzImage reports (`uname -r`): the first word of its setup header's
/// `kernel_version` string.
pub fn bzimage_release(vmlinuz: &Path) -> Result<String> {
    let b = fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    if b.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        bail!(
            "{} is not a bzImage (no HdrS setup header)",
            vmlinuz.display()
        );
    }
    let off = match b.get(0x20e..0x210) {
        Some(&[lo, hi]) => usize::from(u16::from_le_bytes([lo, hi])) + 0x200,
        _ => bail!("{}: setup header cut short", vmlinuz.display()),
    };
    let text = b
        .get(off..)
        .and_then(|t| t.split(|&c| c == 0).next())
        .with_context(|| format!("{}: kernel_version past the file", vmlinuz.display()))?;
    String::from_utf8_lossy(text)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .with_context(|| format!("{}: empty kernel_version", vmlinuz.display()))
}

/// The release in a module's `vermagic=` (its first word).
pub fn module_release(ko: &Path) -> Result<String> {
    let b = fs::read(ko).with_context(|| format!("reading {}", ko.display()))?;
    let key = b"vermagic=";
    let at = b
        .windows(key.len())
        .position(|w| w == key)
        .with_context(|| format!("{} has no vermagic", ko.display()))?;
    let text = b[at + key.len()..].split(|&c| c == 0).next().unwrap_or(&[]);
    String::from_utf8_lossy(text)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .with_context(|| format!("{}: empty vermagic", ko.display()))
}

/// Refuses a module built for another release than `vmlinuz` (Linux would refuse the insmod
/// with "disagrees about version" or an invalid module format).
pub fn check_module_matches(ko: &Path, vmlinuz: &Path) -> Result<()> {
    let (m, k) = (module_release(ko)?, bzimage_release(vmlinuz)?);
    if m != k {
        bail!(
            "{} is built for Linux {m} but the old kernel {} is {k}: insmod would fail",
            ko.display(),
            vmlinuz.display()
        );
    }
    Ok(())
}

/// A kexec from Debian's unmodified Linux as a domU, through `pvkexec.ko` and the CLI.
#[derive(Clone, Debug)]
pub struct OldLinuxKexec {
    /// The old kernel: [`DebianLinux::Bookworm`] (6.1) or [`DebianLinux::Bookworm612`]; the
    /// module is built against that image's own headers ([`Headers::for_linux`]).
    pub old: DebianLinux,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub append: String,
    pub mem_mib: u64,
    pub vcpus: u32,
    /// Attached as xvda; the old kernel loads xen-blkfront and reads it before the kexec.
    pub disk: Option<PathBuf>,
    pub timeout: std::time::Duration,
}

/// The old kernel's `/init`: module, optional disk read, `pvkexec status`, `pvkexec load` and
/// `pvkexec exec`.
const OLD_LINUX_INIT: &str = r#"insmod /lib/modules/pvkexec.ko || echo "PVKEXEC-KMOD insmod failed"
if [ -e /lib/modules/xen-blkfront.ko ]; then
  insmod /lib/modules/xen-blkfront.ko
  n=0; while [ ! -b /dev/xvda ] && [ $n -lt 100 ]; do usleep 100000; n=$((n+1)); done
  echo "PVKEXEC-KMOD xvda=$(head -n 1 /dev/xvda)"
fi
echo 7 > /proc/sys/kernel/printk
pvkexec status 2>&1
pvkexec load --kernel /boot/new @INITRD@ --append '@APPEND@' 2>&1 && pvkexec exec 2>&1
echo "PVKEXEC-KMOD exec failed rc=$?"
poweroff -f
"#;

/// What an old Linux's initramfs carries to kexec: `/lib/modules/pvkexec.ko` built for `old`
/// (checked against its image), `new` as `/boot/new`, and, with `blkfront`, `old`'s
/// `/lib/modules/xen-blkfront.ko`. Returns `old`'s kernel image and the files.
pub fn old_linux_files(
    old: DebianLinux,
    new: &Path,
    blkfront: bool,
) -> Result<(PathBuf, Vec<(String, PathBuf)>)> {
    let linux = provision::ensure_linux(old)?;
    let ko = build(Headers::for_linux(old)?)?;
    check_module_matches(&ko, &linux)?;
    let mut files = vec![
        ("lib/modules/pvkexec.ko".to_string(), ko),
        ("boot/new".to_string(), new.to_path_buf()),
    ];
    if blkfront {
        let modules = crate::dom0::extract_modules(
            old,
            &crate::cache_dir().join(format!("modules-{}", old.name())),
        )?;
        files.push((
            "lib/modules/xen-blkfront.ko".into(),
            modules.join("xen-blkfront.ko"),
        ));
    }
    Ok((linux, files))
}

/// The domU (`req.old` with the module, the CLI and the new kernel in its initramfs) and
/// the initramfs file to delete after the run.
pub fn old_linux_spec(name: &str, req: &OldLinuxKexec) -> Result<(crate::domu::DomuSpec, PathBuf)> {
    let (linux, mut files) = old_linux_files(req.old, &req.kernel, req.disk.is_some())?;
    if let Some(i) = &req.initrd {
        files.push(("boot/new-initrd".into(), i.clone()));
    }
    let init = OLD_LINUX_INIT
        .replace(
            "@INITRD@",
            if req.initrd.is_some() {
                "--initrd /boot/new-initrd"
            } else {
                ""
            },
        )
        .replace("@APPEND@", &req.append.replace('\'', "'\\''"));
    let rd = crate::cache_dir().join(format!("{name}-{}.cpio.gz", std::process::id()));
    domu_initramfs(&init, &pvkexec_release()?, &DomuFiles { files }, &rd)?;
    let mut spec = crate::domu::DomuSpec::new(name, &linux);
    spec.ramdisk = Some(rd.clone());
    spec.cmdline = "console=hvc0 loglevel=4".into();
    spec.mem_mib = req.mem_mib;
    spec.vcpus = req.vcpus;
    spec.disk = req.disk.clone();
    spec.timeout = req.timeout;
    Ok((spec, rd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_of_bzimage_and_module_are_compared() {
        let dir = std::env::temp_dir().join(format!("kmod-release-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut bz = vec![0u8; 0x1000];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        let v = b"6.12.117+deb12-amd64 (debian-kernel@lists.debian.org) #1 SMP\0";
        bz[0x300..0x300 + v.len()].copy_from_slice(v);
        let vmlinuz = dir.join("vmlinuz");
        fs::write(&vmlinuz, &bz).unwrap();
        assert_eq!(bzimage_release(&vmlinuz).unwrap(), "6.12.117+deb12-amd64");
        let ko = dir.join("pvkexec.ko");
        fs::write(
            &ko,
            b"\x7fELF\0license=GPL\0vermagic=6.1.0-57-amd64 SMP mod_unload \0",
        )
        .unwrap();
        assert_eq!(module_release(&ko).unwrap(), "6.1.0-57-amd64");
        let e = format!("{:#}", check_module_matches(&ko, &vmlinuz).unwrap_err());
        assert!(
            e.contains("built for Linux 6.1.0-57-amd64")
                && e.contains("is 6.12.117+deb12-amd64: insmod would fail"),
            "{e}"
        );
        // Not a bzImage, no vermagic: refused by name.
        let e = format!("{:#}", bzimage_release(&ko).unwrap_err());
        assert!(e.contains("is not a bzImage"), "{e}");
        let e = format!("{:#}", module_release(&vmlinuz).unwrap_err());
        assert!(e.contains("has no vermagic"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn depends_give_packages_and_compiler() {
        let bookworm = "linux-headers-6.1.0-57-common (= 6.1.192-3), linux-kbuild-6.1 \
                        (>= 6.1.192-3), linux-compiler-gcc-12-x86";
        assert_eq!(
            package_names(bookworm),
            vec![
                "linux-headers-6.1.0-57-common",
                "linux-kbuild-6.1",
                "linux-compiler-gcc-12-x86"
            ]
        );
        assert_eq!(compiler_of(bookworm).as_deref(), Some("gcc-12"));
        let trixie = "linux-base (>= 4.12~), linux-headers-6.12.117+deb13-common (= 6.12.117-1), \
                      linux-image-6.12.117+deb13-amd64 (= 6.12.117-1) | \
                      linux-image-6.12.117+deb13-amd64-unsigned (= 6.12.117-1), \
                      linux-kbuild-6.12.117+deb13, gcc-14";
        assert_eq!(compiler_of(trixie).as_deref(), Some("gcc-14"));
        assert!(package_names(trixie).contains(&"linux-kbuild-6.12.117+deb13".to_string()));
    }
}
