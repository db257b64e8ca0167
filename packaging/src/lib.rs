//! pvkexec's Debian packages, staged as trees and built with `dpkg-deb` (docs/install.md):
//!
//! - `pvkexec_<version>_amd64.deb`: the CLI (the purgatory is inside it), the capture kernel,
//!   the kdump units and their helper, the system-shutdown hook, `/etc/default/pvkexec-kdump`,
//!   a udev rule, a modules-load.d entry, man pages and shell completions;
//! - `pvkexec-dkms_<version>_all.deb`: the module's source under `/usr/src/pvkexec-<version>`
//!   with a `dkms.conf`, built by DKMS's own postinst;
//! - `pvkexec-kexec_<version>_all.deb`: `/usr/sbin/kexec` as pvkexec's kexec-tools spelling,
//!   in place of kexec-tools (for systemd's `systemctl kexec` and kdump-tools, which run that
//!   path).
//!
//! dpkg-deb, not cargo-deb: the second package holds no Rust at all, and both need
//! maintainer scripts of DKMS's and deb-systemd-helper's conventions that a staged tree
//! states plainly. What debhelper would compute (Installed-Size, md5sums, the shared-library
//! dependencies through dpkg-shlibdeps, stripping, a compressed changelog) is done here.

use anyhow::{bail, Context, Result};
use md5::{Digest, Md5};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the packages are made of, built beforehand by `cargo xtask deb`.
pub struct Inputs {
    /// The Debian version (the workspace's version: the packages are native).
    pub version: String,
    /// The release `pvkexec` binary.
    pub pvkexec: PathBuf,
    /// The capture kernel (guest binary `capture`).
    pub capture: PathBuf,
    /// Man pages (`*.8`) and completions (`pvkexec.bash`, `_pvkexec`, `pvkexec.fish`) generated
    /// from the CLI's clap definitions.
    pub generated: PathBuf,
    /// The repository root (packaging data, `kmod/`, `docs/`).
    pub root: PathBuf,
    /// Where the two `.deb` files go.
    pub out_dir: PathBuf,
}

/// The package files.
#[derive(Clone, Debug)]
pub struct Built {
    pub cli: PathBuf,
    pub dkms: PathBuf,
    pub kexec: PathBuf,
}

impl Built {
    pub fn all(&self) -> [&PathBuf; 3] {
        [&self.cli, &self.dkms, &self.kexec]
    }
}

/// Builds the three packages.
pub fn build(inputs: &Inputs) -> Result<Built> {
    check_version(&inputs.version)?;
    fs::create_dir_all(&inputs.out_dir)
        .with_context(|| format!("creating {}", inputs.out_dir.display()))?;
    let staging = inputs.out_dir.join("staging");
    let _ = fs::remove_dir_all(&staging);
    let cli = build_cli(inputs, &staging.join("pvkexec"))?;
    let dkms = build_dkms(inputs, &staging.join("pvkexec-dkms"))?;
    let kexec = build_kexec(inputs, &staging.join("pvkexec-kexec"))?;
    fs::remove_dir_all(&staging).ok();
    Ok(Built { cli, dkms, kexec })
}

/// A native Debian version: digits, letters, `.`, `+`, `~`, starting with a digit.
fn check_version(v: &str) -> Result<()> {
    let ok = v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~'));
    if !ok {
        bail!("package version {v:?}: not a native Debian version");
    }
    Ok(())
}

/// The files of `pvkexec_<v>_amd64.deb`.
fn build_cli(inputs: &Inputs, tree: &Path) -> Result<PathBuf> {
    let p = inputs.root.join("packaging");
    let t = Tree::new(tree)?;
    t.binary(&inputs.pvkexec, "usr/sbin/pvkexec")?;
    // kexec-tools owns /sbin/kexec: the kexec spelling lives beside it (docs/install.md).
    t.symlink("../../../sbin/pvkexec", "usr/lib/pvkexec/bin/kexec")?;
    // A kernel image for Xen, not a program to run: no strip, no execute bit.
    t.file(&inputs.capture, "usr/lib/pvkexec/capture", 0o644)?;
    t.file(
        &p.join("lib/kdump-helper"),
        "usr/lib/pvkexec/kdump-helper",
        0o755,
    )?;
    t.file(
        &p.join("systemd/system-shutdown-pvkexec"),
        "usr/lib/systemd/system-shutdown/pvkexec",
        0o755,
    )?;
    for unit in ["pvkexec-kdump.service", "pvkexec-kdump-collect.service"] {
        t.file(
            &p.join("systemd").join(unit),
            &format!("usr/lib/systemd/system/{unit}"),
            0o644,
        )?;
    }
    t.file(
        &p.join("systemd/modules-load-pvkexec.conf"),
        "usr/lib/modules-load.d/pvkexec.conf",
        0o644,
    )?;
    t.file(
        &p.join("udev/90-pvkexec-kdump.rules"),
        "usr/lib/udev/rules.d/90-pvkexec-kdump.rules",
        0o644,
    )?;
    t.file(
        &p.join("default/pvkexec-kdump"),
        "etc/default/pvkexec-kdump",
        0o644,
    )?;
    t.file(
        &p.join("debian/pvkexec.lintian-overrides"),
        "usr/share/lintian/overrides/pvkexec",
        0o644,
    )?;
    add_generated(&t, &inputs.generated)?;
    t.doc("pvkexec", &p.join("debian"))?;
    t.file(
        &inputs.root.join("docs/install.md"),
        "usr/share/doc/pvkexec/install.md",
        0o644,
    )?;

    let shlibs = shlib_depends(&t.root.join("usr/sbin/pvkexec"))?;
    let control =
        fs::read_to_string(p.join("debian/pvkexec.control"))?.replace("@SHLIBS@", &shlibs);
    t.control(
        &control,
        &inputs.version,
        &[
            ("postinst", &p.join("debian/pvkexec.postinst")),
            ("prerm", &p.join("debian/pvkexec.prerm")),
            ("postrm", &p.join("debian/pvkexec.postrm")),
        ],
        &["/etc/default/pvkexec-kdump"],
    )?;
    t.pack(
        &inputs
            .out_dir
            .join(format!("pvkexec_{}_amd64.deb", inputs.version)),
    )
}

/// The files of `pvkexec-dkms_<v>_all.deb`.
fn build_dkms(inputs: &Inputs, tree: &Path) -> Result<PathBuf> {
    let p = inputs.root.join("packaging");
    let t = Tree::new(tree)?;
    let src = format!("usr/src/pvkexec-{}", inputs.version);
    let kmod = inputs.root.join("kmod");
    let mut names: Vec<String> = fs::read_dir(&kmod)
        .with_context(|| format!("reading {}", kmod.display()))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    for name in names {
        let path = kmod.join(&name);
        if name == "dkms.conf" {
            let conf = fs::read_to_string(&path)?.replace("@VERSION@", &inputs.version);
            t.text(&conf, &format!("{src}/dkms.conf"), 0o644)?;
        } else if name == "Kbuild"
            || name == "Makefile"
            || name.ends_with(".c")
            || name.ends_with(".h")
        {
            t.file(&path, &format!("{src}/{name}"), 0o644)?;
        }
    }
    if !t.root.join(&src).join("dkms.conf").exists() {
        bail!("{}: no dkms.conf", kmod.display());
    }
    t.doc("pvkexec-dkms", &p.join("debian"))?;
    let control = fs::read_to_string(p.join("debian/pvkexec-dkms.control"))?;
    t.control(
        &control,
        &inputs.version,
        &[
            ("postinst", &p.join("debian/pvkexec-dkms.postinst")),
            ("prerm", &p.join("debian/pvkexec-dkms.prerm")),
        ],
        &[],
    )?;
    t.pack(
        &inputs
            .out_dir
            .join(format!("pvkexec-dkms_{}_all.deb", inputs.version)),
    )
}

/// The files of `pvkexec-kexec_<v>_all.deb`: the kexec name kexec-tools would own, pointing
/// at pvkexec (which speaks kexec-tools when called `kexec`), and its man page.
fn build_kexec(inputs: &Inputs, tree: &Path) -> Result<PathBuf> {
    let p = inputs.root.join("packaging");
    let t = Tree::new(tree)?;
    t.symlink("pvkexec", "usr/sbin/kexec")?;
    t.symlink("pvkexec.8.gz", "usr/share/man/man8/kexec.8.gz")?;
    t.doc("pvkexec-kexec", &p.join("debian"))?;
    let control = fs::read_to_string(p.join("debian/pvkexec-kexec.control"))?;
    t.control(&control, &inputs.version, &[], &[])?;
    t.pack(
        &inputs
            .out_dir
            .join(format!("pvkexec-kexec_{}_all.deb", inputs.version)),
    )
}

/// Writes the man pages (`pvkexec.8` and one page per subcommand, `pvkexec-load.8`, ...) and
/// the bash, zsh and fish completions of `cmd` (the CLI's clap definition,
/// `loader::cli::command()`) into `dir`, created if missing; other files there are left alone.
/// `extra_roff` ends the top page instead of clap_mangen's EXTRA section (the command's
/// after-help, which says the same for `--help`: `loader::cli::man_extra_roff()`). Returns
/// the files written. `cargo xtask man` and the package build both use it.
pub fn generate_docs(cmd: clap::Command, extra_roff: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut built = cmd.clone().disable_help_subcommand(true);
    // Gives each subcommand its display name (pvkexec-load) for its page's file and title.
    built.build();
    let mut written = Vec::new();
    let top = built
        .clone()
        .after_long_help(None::<&str>)
        .after_help(None::<&str>);
    written.push(write_page(&top, extra_roff, dir)?);
    for sub in built.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.push(write_page(sub, "", dir)?);
    }
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let path = clap_complete::generate_to(shell, &mut cmd.clone(), "pvkexec", dir)
            .with_context(|| format!("writing {shell} completions to {}", dir.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// One page in section 8 (system administration), `extra_roff` after clap_mangen's sections.
fn write_page(cmd: &clap::Command, extra_roff: &str, dir: &Path) -> Result<PathBuf> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    let path = dir.join(format!("{name}.8"));
    let mut roff = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .render(&mut roff)
        .with_context(|| format!("rendering {}", path.display()))?;
    roff.extend_from_slice(extra_roff.as_bytes());
    fs::write(&path, roff).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Man pages to section 8, completions where bash-completion, zsh and fish look.
fn add_generated(t: &Tree, dir: &Path) -> Result<()> {
    let mut pages = 0;
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| Ok(e?.path()))
        .collect::<Result<_>>()?;
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{}: not a UTF-8 name", path.display()))?
            .to_string();
        if name.ends_with(".8") {
            t.gzip(&fs::read(&path)?, &format!("usr/share/man/man8/{name}.gz"))?;
            pages += 1;
        }
    }
    if pages == 0 {
        bail!("{}: no man pages (*.8)", dir.display());
    }
    for (file, dest) in [
        (
            "pvkexec.bash",
            "usr/share/bash-completion/completions/pvkexec",
        ),
        ("_pvkexec", "usr/share/zsh/vendor-completions/_pvkexec"),
        (
            "pvkexec.fish",
            "usr/share/fish/vendor_completions.d/pvkexec.fish",
        ),
    ] {
        t.file(&dir.join(file), dest, 0o644)?;
    }
    Ok(())
}

/// `shlibs:Depends` of a binary, as dpkg-shlibdeps computes it for debhelper.
fn shlib_depends(binary: &Path) -> Result<String> {
    let work = binary
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .context("binary path too short")?
        .with_file_name("shlibdeps");
    fs::create_dir_all(work.join("debian"))?;
    // dpkg-shlibdeps reads the package list from debian/control.
    fs::write(
        work.join("debian/control"),
        "Source: pvkexec\n\nPackage: pvkexec\nArchitecture: amd64\n",
    )?;
    let out = Command::new("dpkg-shlibdeps")
        .current_dir(&work)
        .arg("-O")
        .arg(format!("-e{}", binary.display()))
        .output()
        .context("running dpkg-shlibdeps (package dpkg-dev)")?;
    fs::remove_dir_all(&work).ok();
    if !out.status.success() {
        bail!(
            "dpkg-shlibdeps {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_string)
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {text}"))
}

/// A package's staged file tree.
struct Tree {
    root: PathBuf,
}

impl Tree {
    fn new(root: &Path) -> Result<Self> {
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        Ok(Tree {
            root: root.to_path_buf(),
        })
    }

    fn dest(&self, rel: &str) -> Result<PathBuf> {
        let d = self.root.join(rel);
        let parent = d.parent().context("destination without a parent")?;
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        Ok(d)
    }

    fn text(&self, s: &str, rel: &str, mode: u32) -> Result<()> {
        let d = self.dest(rel)?;
        fs::write(&d, s).with_context(|| format!("writing {}", d.display()))?;
        set_mode(&d, mode)
    }

    fn file(&self, src: &Path, rel: &str, mode: u32) -> Result<()> {
        let d = self.dest(rel)?;
        fs::copy(src, &d)
            .with_context(|| format!("copying {} to {}", src.display(), d.display()))?;
        set_mode(&d, mode)
    }

    fn gzip(&self, bytes: &[u8], rel: &str) -> Result<()> {
        let d = self.dest(rel)?;
        // No file name or time in the header (gzip -9n), so the package is reproducible.
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(fs::File::create(&d)?, flate2::Compression::best());
        gz.write_all(bytes)?;
        gz.finish()?;
        set_mode(&d, 0o644)
    }

    fn symlink(&self, target: &str, rel: &str) -> Result<()> {
        let d = self.dest(rel)?;
        symlink(target, &d).with_context(|| format!("linking {}", d.display()))
    }

    /// An executable, stripped as dh_strip does.
    fn binary(&self, src: &Path, rel: &str) -> Result<()> {
        self.file(src, rel, 0o755)?;
        let d = self.root.join(rel);
        let st = Command::new("strip")
            .args([
                "--remove-section=.comment",
                "--remove-section=.note",
                "--strip-unneeded",
            ])
            .arg(&d)
            .status()
            .context("running strip (package binutils)")?;
        if !st.success() {
            bail!("strip {} failed", d.display());
        }
        Ok(())
    }

    /// copyright and the compressed changelog under `/usr/share/doc/<package>`.
    fn doc(&self, package: &str, debian: &Path) -> Result<()> {
        let doc = format!("usr/share/doc/{package}");
        self.file(
            &debian.join("copyright"),
            &format!("{doc}/copyright"),
            0o644,
        )?;
        let changelog = fs::read(debian.join("changelog"))?;
        self.gzip(&changelog, &format!("{doc}/changelog.gz"))
    }

    /// DEBIAN/: control (version and Installed-Size filled in), md5sums, conffiles, scripts.
    fn control(
        &self,
        template: &str,
        version: &str,
        scripts: &[(&str, &Path)],
        conffiles: &[&str],
    ) -> Result<()> {
        let (kib, md5sums) = self.walk()?;
        let control = template
            .replace("@VERSION@", version)
            .replace("@INSTALLED_SIZE@", &kib.to_string());
        self.text(&control, "DEBIAN/control", 0o644)?;
        self.text(&md5sums, "DEBIAN/md5sums", 0o644)?;
        if !conffiles.is_empty() {
            self.text(&(conffiles.join("\n") + "\n"), "DEBIAN/conffiles", 0o644)?;
        }
        for (name, path) in scripts {
            let s = fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .replace("@VERSION@", version);
            self.text(&s, &format!("DEBIAN/{name}"), 0o755)?;
        }
        Ok(())
    }

    /// Installed-Size in KiB (each file rounded up, as dpkg-gencontrol counts) and the md5sums
    /// of every regular file outside DEBIAN/.
    fn walk(&self) -> Result<(u64, String)> {
        let mut files = Vec::new();
        let mut kib = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir)? {
                let e = e?;
                let path = e.path();
                let ty = e.file_type()?;
                if ty.is_dir() {
                    if path != self.root.join("DEBIAN") {
                        kib += 1;
                        stack.push(path);
                    }
                } else if ty.is_symlink() {
                    kib += 1;
                } else {
                    let bytes = fs::read(&path)?;
                    kib += (bytes.len() as u64).div_ceil(1024);
                    let rel = path
                        .strip_prefix(&self.root)?
                        .to_string_lossy()
                        .into_owned();
                    files.push((rel, hex(&Md5::digest(&bytes))));
                }
            }
        }
        files.sort();
        let md5sums = files
            .iter()
            .map(|(rel, sum)| format!("{sum}  {rel}\n"))
            .collect();
        Ok((kib, md5sums))
    }

    fn pack(&self, out: &Path) -> Result<PathBuf> {
        let st = Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&self.root)
            .arg(out)
            .status()
            .context("running dpkg-deb")?;
        if !st.success() {
            bail!("dpkg-deb --build {} failed", self.root.display());
        }
        Ok(out.to_path_buf())
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_native_debian_versions() {
        assert!(check_version("0.1.0").is_ok());
        assert!(check_version("1.2~rc1+git3").is_ok());
        assert!(check_version("").is_err());
        assert!(check_version("v1").is_err());
        assert!(check_version("1.0-1").is_err());
        assert!(check_version("1 0").is_err());
    }
}
